"""sei_cleanlab.get_pred_probs_list: the per-epoch pred_probs that cleanlab's ensemble scorer takes."""

import numpy as np
import pytest

import sei
from sei_cleanlab import get_pred_probs_list

from dynamics import planted_history

cleanlab_rank = pytest.importorskip("cleanlab.rank")


def _recorded(hist, labels, path):
    """A recorder fed the history epoch by epoch, keeping its history file at ``path``."""
    t, n, k = hist.shape
    rec = sei.SEIRecorder(n, k, max_epochs=t, history_path=str(path))
    for e in range(t):
        rec.update(np.arange(n), hist[e], labels)
        rec.end_epoch()
    return rec


def test_recorder_and_history_hand_cleanlab_the_same_epochs(tmp_path):
    hist, labels, _, _ = planted_history()
    rec = _recorded(hist, labels, tmp_path / "h.npy")
    from_rec, from_arr = get_pred_probs_list(rec), get_pred_probs_list(hist)
    assert len(from_rec) == len(from_arr) == hist.shape[0]
    for a, b, h in zip(from_rec, from_arr, hist):
        np.testing.assert_allclose(a, h, atol=1e-6)
        np.testing.assert_allclose(b, h, atol=1e-6)
    for weight in ("accuracy", "uniform", "log_loss_search"):
        ours = cleanlab_rank.get_label_quality_ensemble_scores(labels, from_rec, weight_ensemble_members_by=weight,
                                                               verbose=False)
        theirs = cleanlab_rank.get_label_quality_ensemble_scores(labels, [np.asarray(h, np.float32) for h in hist],
                                                                 weight_ensemble_members_by=weight, verbose=False)
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_logits_are_softmaxed_and_aux_column_dropped():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 40, 4))
    out = get_pred_probs_list(logits, from_logits=True, num_classes=3)
    e = np.exp(logits - logits.max(2, keepdims=True))
    p = e / e.sum(2, keepdims=True)
    want = p[..., :3] / p[..., :3].sum(2, keepdims=True)
    for a, b in zip(out, want):
        assert a.shape == (40, 3) and a.dtype == np.float32
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_recorder_without_history_or_with_unseen_samples_raises(tmp_path):
    hist, labels, _, _ = planted_history()
    rec = sei.SEIRecorder.from_history(hist, labels)
    with pytest.raises(ValueError, match="history_path"):
        get_pred_probs_list(rec)
    t, n, k = hist.shape
    rec = sei.SEIRecorder(n, k, max_epochs=t, history_path=str(tmp_path / "h.npy"))
    rec.update(np.arange(n - 1), hist[0, : n - 1], labels[: n - 1])
    rec.end_epoch()
    with pytest.raises(ValueError, match="not seen"):
        get_pred_probs_list(rec)
