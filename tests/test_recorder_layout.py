"""The recorder's memory layout (issue 20): no (N, K) float64 block on the default path; a
sample updated several times in an epoch has its statistics averaged exactly and keeps the
probabilities of its last update; states saved by earlier versions (with the epoch's K
probability columns) load."""

import numpy as np
import pytest

import sei
from sei.scores import Batch, SIGNED_ENTROPY


def _probs(rng, n, k):
    p = rng.random((n, k)) + 0.05
    return p / p.sum(1, keepdims=True)


def test_the_default_recorder_keeps_per_sample_sums_and_float32_last_probabilities(tmp_path):
    n, k = 1000, 50
    rec = sei.SEIRecorder(n, k)
    fields = len(rec._layout.fields)
    assert rec._acc.shape == (n, fields) and rec._epoch_probs is None
    per_class = [a for a in (rec._acc, *rec._total.values(), *rec._last.values(), *rec._mid.values())
                 if a.ndim == 2 and a.shape[1] >= k]
    assert per_class == [] and rec.last_probs.dtype == np.float32
    # with history_path the epoch's probabilities are summed too (their mean is the history row)
    assert sei.SEIRecorder(n, k, max_epochs=2, history_path=tmp_path / "h.npy")._acc.shape == (n, fields + k)


def test_a_sample_updated_twice_in_an_epoch_averages_its_statistics_and_keeps_the_last_update(tmp_path):
    rng = np.random.default_rng(0)
    n, k, epochs = 6, 4, 3
    labels = np.arange(n) % k
    rec = sei.SEIRecorder(n, k, max_epochs=epochs, history_path=tmp_path / "h.npy")
    expected_sei = np.zeros(n)
    for _ in range(epochs):
        a, b = _probs(rng, n, k), _probs(rng, n, k)
        rec.update(np.arange(n), a, labels)
        rec.update(np.r_[0, 2, 4], b[[0, 2, 4]], labels[[0, 2, 4]])  # a second view of three samples
        se_a = SIGNED_ENTROPY.compute(Batch(a, labels))
        se_b = SIGNED_ENTROPY.compute(Batch(b, labels))
        twice = np.isin(np.arange(n), [0, 2, 4])
        expected_sei += np.where(twice, (se_a + se_b) / 2, se_a)
        rec.end_epoch()
        last = np.where(twice[:, None], b, a)
        mean = np.where(twice[:, None], (a + b) / 2, a)
    np.testing.assert_allclose(rec.scores("sei"), expected_sei, rtol=1e-12)
    np.testing.assert_allclose(rec.last_probs, last.astype(np.float32))
    np.testing.assert_allclose(np.load(tmp_path / "h.npy")[-1], mean.astype(np.float32), rtol=1e-6)


def test_repeated_ids_inside_one_update_keep_the_last_row():
    rec = sei.SEIRecorder(3, 2)
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    rec.update([0, 1, 0, 2], p, [0, 0, 0, 1])
    rec.end_epoch()
    np.testing.assert_allclose(rec.last_probs, np.float32([[0.6, 0.4], [0.2, 0.8], [0.3, 0.7]]))
    assert rec.epochs_seen.tolist() == [1.0, 1.0, 1.0]


def test_a_state_saved_with_the_epochs_probability_columns_loads():
    rng = np.random.default_rng(1)
    n, k = 20, 3
    rec = sei.SEIRecorder(n, k, max_epochs=4)
    labels = rng.integers(0, k, n)
    for _ in range(4):
        rec.update(np.arange(n), _probs(rng, n, k), labels)
        rec.end_epoch()
    state = rec.state_dict()
    state["epoch_acc"] = np.concatenate([state["epoch_acc"], np.zeros((n, k))], 1)  # the earlier layout
    back = sei.SEIRecorder(n, k, max_epochs=4).load_state_dict(state)
    for name in ("sei", "aum_prob", "mistakenness", "se_mid"):
        np.testing.assert_array_equal(back.scores(name), rec.scores(name))
    state["epoch_acc"] = np.zeros((n, len(rec._layout.fields) + 1))
    try:
        sei.SEIRecorder(n, k, max_epochs=4).load_state_dict(state)
    except ValueError as e:
        assert "damaged" in str(e)
    else:
        raise AssertionError("a damaged accumulator was accepted")


def test_features_with_a_recorder_of_per_sample_sums_are_read_and_the_fallback_said():
    import warnings

    import pytest
    from sei_cleanlab import find_label_issues, get_label_quality_scores

    rng = np.random.default_rng(3)
    n, k = 300, 3
    labels = rng.integers(0, k, n)
    feats = np.eye(k)[labels] * 3 + rng.normal(0, 1, (n, k))
    rec = sei.SEIRecorder(n, k)
    for _ in range(3):
        rec.update(np.arange(n), _probs(rng, n, k), labels)
        rec.end_epoch()
    with pytest.warns(UserWarning, match="extra_scores='poe_knn'"):
        auto = get_label_quality_scores(labels, rec, features=feats)
    with pytest.warns(UserWarning, match="extra_scores='poe_knn'"):
        find_label_issues(labels, rec, features=feats)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = get_label_quality_scores(labels, rec, method="aum_prob_knn", features=feats)
        dynamics_only = get_label_quality_scores(labels, rec, method="aum_prob")
    np.testing.assert_array_equal(auto, same)
    assert not np.allclose(auto, dynamics_only)  # the features were read
    full = sei.SEIRecorder(n, k, extra_scores="poe_knn")
    full.update(np.arange(n), _probs(rng, n, k), labels)
    full.end_epoch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        find_label_issues(labels, full, features=feats)


def _shards(parts, n=90, k=4, epochs=3, seed=5, **kw):
    """Shards recording ``parts`` of the samples, and one recorder of all of them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    hist = np.stack([_probs(rng, n, k) for _ in range(epochs)])
    single = sei.SEIRecorder(n, k, max_epochs=epochs, **kw)
    shards = [sei.SEIRecorder(n, k, max_epochs=epochs, **kw) for _ in parts]
    for t in range(epochs):
        for rec, part in zip(shards, parts):
            rec.update(part, hist[t, part], labels[part])
            rec.end_epoch()
        single.update(np.concatenate(parts), hist[t, np.concatenate(parts)], labels[np.concatenate(parts)])
        single.end_epoch()
    return shards, single


def test_merging_shards_of_disjoint_samples_equals_one_recorder(tmp_path):
    parts = [np.arange(0, 90, 3), np.arange(1, 90, 3), np.arange(2, 90, 3)]
    shards, single = _shards(parts, extra_scores="mean_logp")
    for i, s in enumerate(shards):
        s.save(tmp_path / f"{i}.npz")
    merged = sei.SEIRecorder.merge([sei.SEIRecorder.load(tmp_path / f"{i}.npz") for i in range(3)])
    for name in ("sei", "sei_mean", "se_last", "se_mid", "aum_prob", "mistakenness", "mean_logp"):
        np.testing.assert_allclose(merged.scores(name), single.scores(name), rtol=1e-12, err_msg=name)
    np.testing.assert_array_equal(merged.predicted_labels(), single.predicted_labels())


def test_merge_refuses_overlapping_mismatched_or_unended_shards():
    import pytest

    shards, _ = _shards([np.arange(0, 50), np.arange(40, 90)])
    with pytest.raises(ValueError, match="10 sample\\(s\\) were recorded by more than one shard"):
        sei.SEIRecorder.merge(shards)
    a, b = _shards([np.arange(0, 45), np.arange(45, 90)])[0]
    with pytest.raises(ValueError, match="same"):
        sei.SEIRecorder.merge([a, sei.SEIRecorder(90, 5)])
    b.update([50], _probs(np.random.default_rng(0), 1, 4), [1])
    with pytest.raises(ValueError, match="did not end"):
        sei.SEIRecorder.merge([a, b])
    with pytest.raises(TypeError, match="non-empty list"):
        sei.SEIRecorder.merge([])


@pytest.mark.parametrize("top_k", [None, 2])  # all K, and the top k with the log-probability sketch
def test_a_large_update_is_folded_in_steps_with_the_same_result(monkeypatch, top_k):
    import sei._recorder_layout as recorder_layout
    import sei.recorder as recorder_module

    rng = np.random.default_rng(0)
    n, k = 60, 5
    labels = rng.integers(0, k, n)
    ids = np.concatenate([rng.permutation(n), rng.permutation(n)[:25]])  # repeats in other steps
    logits = rng.normal(size=(len(ids), k)) * 2
    whole = sei.SEIRecorder(n, k, top_k=top_k, extra_scores="all")
    whole.update(ids, logits, labels[ids], from_logits=True)
    whole.end_epoch()
    monkeypatch.setattr(recorder_layout, "BUFFER_VALUES", 2 * k)  # a buffer of 2 rows: the update is a large one
    monkeypatch.setattr(recorder_module, "_SCATTER_VALUES", 3 * k)  # folded 3 rows at a time
    steps = sei.SEIRecorder(n, k, top_k=top_k, extra_scores="all")
    steps.update(ids, logits, labels[ids], from_logits=True)
    steps.end_epoch()
    for name in sei.SCORE_NAMES:
        np.testing.assert_allclose(steps.scores(name), whole.scores(name), atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(steps.predicted_labels(), whole.predicted_labels())
