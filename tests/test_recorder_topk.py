"""The recorder's latest probabilities kept as the top k (sei._latest): what is exact, what
raises, and that saving, merging and the training result keep it."""

import numpy as np
import pytest

import sei
from sei import SEIRecorder
from sei._latest import LatestProbs, resolve_top_k
from sei.constants import DEFAULT_TOP_K, FULL_PROBS_MAX_VALUES
from sei.entropy import softmax

N, K, T = 300, 12, 4


def _run(top_k, seed=0, repeats=False):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, N)
    full = SEIRecorder(N, K, top_k=None, extra_scores="all")
    top = SEIRecorder(N, K, top_k=top_k, extra_scores="all")
    for _ in range(T):
        order = rng.permutation(N)
        if repeats:  # augmented views: some samples twice in an epoch
            order = np.concatenate([order, order[:50]])
        for ids in np.array_split(order, 7):
            logits = rng.normal(size=(len(ids), K)) * 3
            for rec in (full, top):
                rec.update(ids, logits, labels[ids], from_logits=True)
        for rec in (full, top):
            rec.end_epoch()
    return labels, full, top


def test_auto_keeps_all_classes_while_small_and_the_top_few_beyond():
    assert resolve_top_k("auto", 1000, 10) == 10
    assert resolve_top_k("auto", FULL_PROBS_MAX_VALUES // 1000 + 1, 1000) == DEFAULT_TOP_K
    assert resolve_top_k(None, 5, 7) == 7 and resolve_top_k(3, 5, 7) == 3 and resolve_top_k(30, 5, 7) == 7
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        SEIRecorder(4, 3, top_k=0)
    with pytest.raises(TypeError, match="top_k must be"):
        SEIRecorder(4, 3, top_k=2.5)
    with pytest.raises(ValueError, match="top_k must be 'auto'"):
        SEIRecorder(4, 3, top_k="some")


def test_top_k_state_is_per_sample_only():
    rec = SEIRecorder(1000, 1000, top_k=5)
    assert rec._latest.nbytes == 1000 * (5 * 2 + 5 * 4 + 4)  # int16 classes, float32 probs, float32 entropy
    assert rec.top_k == 5


@pytest.mark.parametrize("repeats", [False, True])
def test_top_k_reads_exactly_what_all_classes_give(repeats):
    labels, full, top = _run(3, repeats=repeats)
    last = full.last_probs
    np.testing.assert_array_equal(top.predicted_labels(), full.predicted_labels())
    classes, probs = top.latest_top()
    ref_classes = np.argsort(-last, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(classes, ref_classes)
    np.testing.assert_array_equal(probs, np.take_along_axis(last, ref_classes, 1))
    fc, fp = full.latest_top(3)
    np.testing.assert_array_equal(fc, classes)
    np.testing.assert_array_equal(fp, probs)
    for name in sei.SCORE_NAMES:  # every score, mistakenness (read from the latest update) included
        if name == "mean_logp":  # per-class sums kept as a top-k sketch: bounds (tests/test_logp_top.py)
            low, high = top.scores(name), top._logp_means().margin(labels)[2]
            assert np.all(low <= full.scores(name) + 1e-9) and np.all(full.scores(name) <= high + 1e-9)
            continue
        np.testing.assert_allclose(top.scores(name), full.scores(name), rtol=1e-6, atol=1e-6, err_msg=name)
    # recomputed for other labels: exact, since mistakenness reads the entropy and the argmax only
    other = (labels + 1) % K
    np.testing.assert_allclose(top.scores("mistakenness", labels=other), full.scores("mistakenness", labels=other),
                               rtol=1e-6, atol=1e-6)


def test_what_needs_every_class_says_so():
    labels, _, top = _run(2)
    with pytest.raises(ValueError, match="kept the top 2 of 12 per sample.*top_k=None"):
        top.last_probs
    from sei_cleanlab import compare_with_confident_learning, select_for_relabeling

    with pytest.raises(ValueError, match="top_k=None"), pytest.warns(UserWarning):
        compare_with_confident_learning(labels, top)
    with pytest.raises(ValueError, match="top_k=None"):
        select_for_relabeling(labels, top, budget=5, method="entropy")


def test_dense_rows_spread_the_rest_evenly():
    lp = LatestProbs(2, 4, 2)
    p = np.array([[0.5, 0.3, 0.15, 0.05]])
    lp.write(np.array([0]), p)
    np.testing.assert_allclose(lp.dense(slice(None))[0], [0.5, 0.3, 0.1, 0.1])
    assert np.isnan(lp.dense(slice(None))[1]).all()
    np.testing.assert_array_equal(lp.predicted(), [0, -1])


def test_save_load_merge_keep_the_top_k(tmp_path):
    labels, _, top = _run(4)
    top.save(tmp_path / "r.npz")
    back = SEIRecorder.load(tmp_path / "r.npz")
    assert back.top_k == 4
    for a, b in zip(back.latest_top(), top.latest_top()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(back.scores("mistakenness"), top.scores("mistakenness"))
    # shards: each records half of the samples
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(T, N, K))
    half = np.arange(N) < N // 2
    shards = [SEIRecorder(N, K, top_k=4) for _ in range(2)]
    one = SEIRecorder(N, K, top_k=4)
    for t in range(T):
        for rec, rows in ((shards[0], np.flatnonzero(half)), (shards[1], np.flatnonzero(~half)),
                          (one, np.arange(N))):
            rec.update(rows, logits[t, rows], labels[rows], from_logits=True)
            rec.end_epoch()
    merged = SEIRecorder.merge(shards)
    for a, b in zip(merged.latest_top(), one.latest_top()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(merged.scores("mistakenness"), one.scores("mistakenness"))
    with pytest.raises(ValueError, match="top_k"):
        SEIRecorder.merge([shards[0], SEIRecorder(N, K, top_k=3)])


def test_old_states_with_all_classes_load(tmp_path):
    _, full, _ = _run(None)
    state = full.state_dict()
    assert "last_probs" in state and "last_top_probs" not in state
    back = SEIRecorder(N, K, top_k=3).load_state_dict(state)  # the state's layout wins
    np.testing.assert_array_equal(back.last_probs, full.last_probs)


def test_train_result_with_top_k_has_labels_and_confidence(monkeypatch):
    import sei._latest as latest

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0) + 4 * (x[:, 2] > 0)  # 8 classes > DEFAULT_TOP_K
    ref = sei.train(x, y, mode="embeddings", head="linear", epochs=2, batch_size=32, seed=0,
                    score_aux_samples=False)
    monkeypatch.setattr(latest, "FULL_PROBS_MAX_VALUES", 10)  # as if N x K were large
    res = sei.train(x, y, mode="embeddings", head="linear", epochs=2, batch_size=32, seed=0,
                    score_aux_samples=False)
    assert res.pred_probs is None and res.recorder.top_k == DEFAULT_TOP_K
    np.testing.assert_array_equal(res.predicted_labels, ref.predicted_labels)
    np.testing.assert_allclose(res.confidence, ref.confidence, rtol=1e-5)
    np.testing.assert_allclose(ref.confidence, ref.pred_probs.max(1), rtol=1e-6)
    np.testing.assert_allclose(res.scores, ref.scores, rtol=1e-6, equal_nan=True)


def test_softmax_reference_is_consistent():
    # the top k of logits equal the top k of their softmax (what update stores from logits)
    z = np.random.default_rng(1).normal(size=(5, K))
    rec = SEIRecorder(5, K, top_k=2)
    rec.update(np.arange(5), z, np.zeros(5, int), from_logits=True)
    rec.end_epoch()
    c, p = rec.latest_top()
    np.testing.assert_array_equal(c, np.argsort(-z, axis=1)[:, :2])
    np.testing.assert_allclose(p, np.sort(softmax(z), axis=1)[:, ::-1][:, :2], rtol=1e-6)


def test_torch_logits_are_summarised_where_they_live_and_match_numpy():
    torch = pytest.importorskip("torch")
    import sei.recorder as recorder_mod

    rng = np.random.default_rng(5)
    labels = rng.integers(0, K, N)
    ref, dev = SEIRecorder(N, K, top_k=3), SEIRecorder(N, K, top_k=3)
    calls = []
    real = recorder_mod.summarise_logits
    recorder_mod_summarise = lambda *a: calls.append(1) or real(*a)  # noqa: E731
    try:
        recorder_mod.summarise_logits = recorder_mod_summarise
        for t in range(T):
            order = np.concatenate([rng.permutation(N), np.arange(20)])  # repeats within an epoch
            for j, ids in enumerate(np.array_split(order, 6)):
                z = (rng.normal(size=(len(ids), K)) * 3).astype(np.float32)
                ref.update(ids, z, labels[ids], from_logits=True)
                if j == 2:  # a numpy update between tensor ones: the order of updates is kept
                    dev.update(ids, z, labels[ids], from_logits=True)
                else:  # ids as a tensor on the device, labels as numpy
                    dev.update(torch.from_numpy(ids), torch.from_numpy(z), labels[ids], from_logits=True)
            ref.end_epoch()
            dev.end_epoch()
    finally:
        recorder_mod.summarise_logits = real
    assert len(calls) == T * 5
    for name in sei.SCORE_NAMES:
        if name == "mean_logp":
            continue
        np.testing.assert_allclose(dev.scores(name), ref.scores(name), rtol=2e-5, atol=2e-5, err_msg=name)
    np.testing.assert_array_equal(dev.predicted_labels(), ref.predicted_labels())
    for a, b in zip(dev.latest_top(), ref.latest_top()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_summarised_updates_check_their_values_when_they_reach_the_host():
    torch = pytest.importorskip("torch")
    rec = SEIRecorder(10, K, top_k=2)
    z = torch.zeros(4, K)
    z[1, 0] = float("nan")
    rec.update(np.arange(4), z, np.zeros(4, int), from_logits=True)  # no check here: no sync
    with pytest.raises(ValueError, match="NaN or inf.*none of them"):
        rec.end_epoch()
    with pytest.raises(ValueError, match="labels must lie in 0..11"):
        rec.update(np.arange(4), torch.zeros(4, K), torch.full((4,), 99), from_logits=True)
        rec.end_epoch()
    with pytest.raises(ValueError, match="sample_ids must lie in 0..9"):  # a host input is checked at once
        rec.update(np.arange(8, 12), torch.zeros(4, K), np.zeros(4, int), from_logits=True)
    rec.update(np.arange(4), torch.zeros(4, K), np.zeros(4, int), from_logits=True)
    rec.end_epoch()  # the failed updates left nothing behind
    assert rec.epochs_seen.sum() == 4


def test_sei_train_takes_top_k_and_scores_poe_knn_from_the_sketch():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0) + 4 * (x[:, 2] > 0)  # 8 classes
    full = sei.train(x, y, mode="embeddings", head="linear", epochs=3, batch_size=32, seed=0, score="poe_knn",
                     score_aux_samples=False)
    top = sei.train(x, y, mode="embeddings", head="linear", epochs=3, batch_size=32, seed=0, score="poe_knn",
                    score_aux_samples=False, top_k=3)
    assert full.recorder.top_k == 8 and top.recorder.top_k == 3 and top.pred_probs is None
    assert top.recorder._logp_total is not None
    ok = np.isfinite(full.scores)  # (auxiliary samples, if any, are NaN in both)
    np.testing.assert_array_equal(ok, np.isfinite(top.scores))
    assert np.all(top.scores[ok] <= full.scores[ok] + 1e-9)  # the sketch's score is a lower bound (sei._logp_top)
    np.testing.assert_array_equal(top.predicted_labels, full.predicted_labels)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        sei.train(x, y, mode="embeddings", head="linear", epochs=1, top_k=0)


def test_largest_by_argmax_passes_and_by_partition_agree():
    """sei._latest.largest: the m largest entries of each row, largest first, by argmax passes
    (ties: the lower column first) or by a partition (m > 8, m > K / 4, or rows with -inf)."""
    from sei._latest import largest

    rng = np.random.default_rng(4)
    x = rng.integers(0, 6, size=(500, 40)).astype(np.float32)  # many ties
    for m in (1, 5, 8, 9, 20):
        cols, vals = largest(x, m)
        ref = np.lexsort((np.broadcast_to(np.arange(40), x.shape), -x), axis=1)[:, :m]
        np.testing.assert_array_equal(vals, np.take_along_axis(x, ref, 1))  # the same values
        np.testing.assert_array_equal(np.take_along_axis(x, cols, 1), vals)
        assert (np.sort(cols, 1)[:, 1:] != np.sort(cols, 1)[:, :-1]).all()  # distinct columns
        if m <= 8:
            np.testing.assert_array_equal(cols, ref)  # ties: lower column first
    y = x.copy()
    y[0, 3:] = -np.inf  # row 0 has 3 finite entries: the partition path, no column twice
    cols, vals = largest(y, 5)
    assert len(set(cols[0])) == 5 and np.isneginf(vals[0, 3:]).all()
