"""Specification of the score registry (sei/scores.py): one place defines every score."""

import numpy as np
import pytest

import sei
from sei import SEIRecorder
from sei.scores import FEATURE_SCORES, SCORE_NAMES, SIGNED_SCORES
from sei.scores import SCORES, Score, Statistic, names

import score_golden


@pytest.fixture(scope="module")
def golden():
    with np.load(score_golden.GOLDEN_PATH) as data:
        return {k: data[k] for k in data.files}


def test_every_score_reproduces_the_outputs_recorded_before_the_registry(golden):
    # tests/data/scores_golden.npz was written by tests/score_golden.py before the registry
    # replaced the recorder's and the adapter's if-chains: recorder scores (streamed with
    # repeats and unseen samples, from a history, float16), relabelled scores, quality
    # scores, masks for every threshold and ranked indices, probabilities and logits,
    # with and without auxiliary samples.
    now = score_golden.compute_outputs()
    assert sorted(now) == sorted(golden)
    for key, expected in golden.items():
        np.testing.assert_allclose(now[key], expected, rtol=1e-12, atol=1e-12, equal_nan=True, err_msg=key)


def test_constants_are_derived_from_the_registry():
    assert SCORE_NAMES == names(needs_features=False) == sei.SCORE_NAMES
    assert FEATURE_SCORES == names(needs_features=True) == sei.FEATURE_SCORES
    assert FEATURE_SCORES == ("aum_prob_knn", "knn_margin", "poe_knn")
    assert SIGNED_SCORES == {n for n, s in SCORES.items() if s.signed}
    assert names() == SCORE_NAMES + FEATURE_SCORES


def test_every_score_has_a_description_and_a_quality_map_onto_the_unit_interval():
    raw = np.array([-50.0, -1.0, 0.0, 1.0, 50.0, np.nan])
    for name, score in SCORES.items():
        assert score.name == name and score.description
        q = score.quality(raw, np.full(raw.shape, 3.0), 4)
        assert np.all((q[:-1] >= 0) & (q[:-1] <= 1)) and np.isnan(q[-1]), name
        assert np.all(np.diff(q[:-1]) >= 0), f"{name}: the [0, 1] map must keep the ranking"


def test_only_aum_needs_logits_and_only_neighbour_scores_need_features():
    assert [n for n, s in SCORES.items() if s.needs_logits] == ["aum"]
    assert [n for n, s in SCORES.items() if s.needs_features] == ["aum_prob_knn", "knn_margin", "poe_knn"]


def test_a_neighbour_score_without_statistic_is_the_only_kind_allowed_none():
    with pytest.raises(ValueError, match="neighbour score"):
        Score("bad", "no statistic", None, "mean", False, lambda r, e, k: r)
    with pytest.raises(ValueError, match="reduce"):
        Score("bad", "unknown reduction", Statistic("x", lambda b: b.margin), "median", False, lambda r, e, k: r)


# --------------------------------------------------------------------------- a toy score
def _mean_given_probability():
    return Score("toy_given_prob", "mean probability of the given label (test only)",
                 Statistic("given_prob", lambda b: b.probs[b.rows, b.labels]), "mean", False,
                 lambda raw, epochs, log_k: raw)


@pytest.fixture
def toy(monkeypatch):
    """A score registered in one place, on a copy of the registry that the test restores."""
    monkeypatch.setattr(sei.scores, "SCORES", dict(sei.scores.SCORES))
    return sei.scores.register_score(_mean_given_probability())


def _toy_history():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 30)
    z = rng.normal(size=(4, 30, 3)) + 2.0 * np.eye(3)[labels]
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return p, labels


def test_a_registered_score_is_recorded_and_read_by_the_recorder(toy):
    hist, labels = _toy_history()
    rec = SEIRecorder(30, 3)
    for epoch in hist:
        for batch in np.array_split(np.arange(30), 3):
            rec.update(batch, epoch[batch], labels[batch])
        rec.end_epoch()
    expected = hist[:, np.arange(30), labels].mean(0)
    np.testing.assert_allclose(rec.scores("toy_given_prob"), expected)
    np.testing.assert_allclose(SEIRecorder.from_history(hist, labels).scores("toy_given_prob"), expected)
    assert "toy_given_prob" in sei.SCORE_NAMES and "toy_given_prob" not in sei.FEATURE_SCORES


def test_a_registered_score_goes_through_find_label_issues_and_quality_scores(toy):
    from sei_cleanlab import find_label_issues, get_label_quality_scores

    hist, labels = _toy_history()
    labels[:4] = (labels[:4] + 1) % 3  # four planted errors
    expected = hist[:, np.arange(30), labels].mean(0)
    np.testing.assert_allclose(get_label_quality_scores(labels, hist, method="toy_given_prob"), expected)
    mask = find_label_issues(labels, hist, score="toy_given_prob", threshold=0.3)
    np.testing.assert_array_equal(mask, expected < 0.3)
    ranked = find_label_issues(labels, hist, score="sei", return_indices_ranked_by="toy_given_prob")
    assert list(ranked) == sorted(ranked, key=lambda i: expected[i])
    # unsigned: "auto" fits a mixture instead of cutting at zero
    assert find_label_issues(labels, hist, score="toy_given_prob").sum() > 0


def test_a_recorder_saved_before_a_score_was_added_reads_nan_for_it(tmp_path, monkeypatch):
    hist, labels = _toy_history()
    before = SEIRecorder.from_history(hist, labels)
    before.save(tmp_path / "rec.npz")
    monkeypatch.setattr(sei.scores, "SCORES", dict(sei.scores.SCORES))
    sei.scores.register_score(_mean_given_probability())
    after = SEIRecorder.load(tmp_path / "rec.npz")
    assert np.isnan(after.scores("toy_given_prob")).all()
    for name in SCORE_NAMES:
        if name != "aum":  # recorded from probabilities: no logits
            np.testing.assert_array_equal(after.scores(name), before.scores(name))


def test_a_state_saved_with_the_first_column_layout_loads_by_name():
    # Recorders saved before the layout was stored with them (epoch_fields) used this order.
    hist, labels = _toy_history()
    legacy = ("count", "se", "h", "aligned", "margin", "loss", "sc", "aum", "aum_count")
    rec = SEIRecorder(30, 3)
    rec.update(np.arange(30), hist[0], labels)
    rec.end_epoch()
    rec.update(np.arange(15), hist[1, :15], labels[:15])  # mid-epoch: the accumulator holds data
    state = rec.state_dict()
    fields = state.pop("epoch_fields").split(",")
    acc = state["epoch_acc"]
    state["epoch_acc"] = np.concatenate([acc[:, [fields.index(f) for f in legacy]], acc[:, len(fields):]], 1)
    restored = SEIRecorder(30, 3).load_state_dict(state)
    rec.end_epoch()
    restored.end_epoch()
    for name in SCORE_NAMES:
        if name != "aum" and not SCORES[name].per_class:  # no logits; per-class sums not asked for
            np.testing.assert_array_equal(restored.scores(name), rec.scores(name))


def test_recorder_exposes_the_epochs_each_sample_was_seen():
    hist, labels = _toy_history()
    rec = SEIRecorder(30, 3)
    for epoch in hist:
        rec.update(np.arange(10), epoch[:10], labels[:10])
        rec.end_epoch()
    np.testing.assert_array_equal(rec.epochs_seen, np.r_[np.full(10, 4.0), np.zeros(20)])


# --------------------------------------------------------------------------- per-class scores
def _direct_mean_logp(hist, ids_per_epoch, from_logits):
    """mean over the epochs that saw a sample of (mean over its updates in that epoch of
    log p), in numpy: exact log-softmax from logits, log(p + 1e-8) from probabilities."""
    t_, n, k = hist.shape
    total, epochs = np.zeros((n, k)), np.zeros(n)
    for t, batches in enumerate(ids_per_epoch):
        z = hist[t].astype(np.float64)
        logp = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) \
            if from_logits else np.log(z + 1e-8)
        s, c = np.zeros((n, k)), np.zeros(n)
        for ids in batches:
            for i in ids:
                s[i] += logp[i]
                c[i] += 1
        total += np.where(c[:, None] > 0, s / np.maximum(c, 1)[:, None], 0.0)
        epochs += c > 0
    return np.where(epochs[:, None] > 0, total / np.maximum(epochs, 1)[:, None], np.nan)


def _direct_margin(x, labels):
    out = np.full(len(labels), np.nan)
    for i, y in enumerate(labels):
        if np.isfinite(x[i]).all():
            out[i] = x[i, y] - max(x[i, c] for c in range(x.shape[1]) if c != y)
    return out


def _streamed_with(extra, hist, labels, from_logits, seed=0):
    """Shuffled batches with repeats; sample 0 never seen, sample 1 twice per epoch."""
    rng = np.random.default_rng(seed)
    rec = SEIRecorder(hist.shape[1], hist.shape[2], extra_scores=extra)
    fed = []
    for t in range(hist.shape[0]):
        ids = np.r_[rng.permutation(np.arange(1, hist.shape[1])), 1]
        batches = np.array_split(ids, 4)
        for b in batches:
            rec.update(b, hist[t, b], labels[b], from_logits=from_logits)
        rec.end_epoch()
        fed.append(batches)
    return rec, fed


@pytest.mark.parametrize("from_logits", [False, True])
def test_mean_logp_and_poe_knn_match_a_direct_numpy_computation(from_logits):
    hist, labels = _toy_history()
    hist = np.log(hist).astype(np.float32) * 3.0 if from_logits else hist.astype(np.float32)
    rec, fed = _streamed_with(("poe_knn",), hist, labels, from_logits)
    m = _direct_mean_logp(hist, fed, from_logits)
    np.testing.assert_allclose(rec.fusion_input("poe_knn"), m, rtol=1e-6, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(rec.scores("mean_logp"), _direct_margin(m, labels), rtol=1e-6, atol=1e-6,
                               equal_nan=True)
    neighbors = np.random.default_rng(1).integers(0, 30, (30, 5))
    counts = np.zeros((30, 3))
    for i in range(30):
        for j in neighbors[i]:
            counts[i, labels[j]] += 1
    expected = _direct_margin(m + np.log((counts + 1) / (5 + 3)), labels)
    got = sei.feature_score("poe_knn", rec.fusion_input("poe_knn"), labels, neighbors=neighbors)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, equal_nan=True)
    assert np.isnan(got[0]) and np.isfinite(got[1:]).all()  # sample 0 was never seen


def test_per_class_scores_go_through_the_cleanlab_functions():
    from sei_cleanlab import find_label_issues, get_label_quality_scores

    hist, labels = _toy_history()
    labels[:4] = (labels[:4] + 1) % 3
    neighbors = np.random.default_rng(2).integers(0, 30, (30, 6))
    m = np.log(hist + 1e-8).mean(0)
    raw = _direct_margin(m, labels)
    np.testing.assert_allclose(get_label_quality_scores(labels, hist, method="mean_logp"), 1 / (1 + np.exp(-raw)))
    np.testing.assert_array_equal(find_label_issues(labels, hist, score="mean_logp", threshold="zero"), raw < 0)
    poe = sei.feature_score("poe_knn", m, labels, neighbors=neighbors)
    np.testing.assert_array_equal(find_label_issues(labels, hist, score="poe_knn", threshold="zero",
                                                    neighbors=neighbors), poe < 0)
    # mean_logp is label-free: a recorder recomputes it for corrected labels
    rec = SEIRecorder.from_history(hist, labels)
    fixed = labels.copy()
    fixed[:4] = (fixed[:4] + 2) % 3
    np.testing.assert_allclose(rec.scores("mean_logp", labels=fixed), _direct_margin(m, fixed))


def test_a_recorder_not_asked_for_per_class_scores_keeps_no_log_prob_sums():
    hist, labels = _toy_history()
    plain = SEIRecorder(30, 3)
    asked = SEIRecorder(30, 3, extra_scores="mean_logp")
    for rec in (plain, asked):
        rec.update(np.arange(30), hist[0], labels)
        rec.end_epoch()
    state, asked_state = plain.state_dict(), asked.state_dict()
    assert "total_logp" not in state and "logp" not in state["epoch_fields"]
    assert asked_state["total_logp"].shape == (30, 3)
    assert asked_state["epoch_acc"].shape[1] == state["epoch_acc"].shape[1] + 3
    with pytest.raises(ValueError, match=r"extra_scores=\('mean_logp',\)"):
        plain.scores("mean_logp")
    with pytest.raises(ValueError, match="extra_scores"):
        plain.fusion_input("poe_knn")
    with pytest.raises(ValueError, match="extra_scores entry"):
        SEIRecorder(30, 3, extra_scores=("no_such_score",))
    # a history keeps them by default (every score can be read from it), unless told not to
    assert "total_logp" in SEIRecorder.from_history(hist, labels).state_dict()
    assert "total_logp" not in SEIRecorder.from_history(hist, labels, extra_scores=()).state_dict()
    assert "total_logp" in SEIRecorder(30, 3, extra_scores="all").state_dict()


def test_per_class_sums_take_o_nk_memory_whatever_the_number_of_epochs():
    hist, labels = _toy_history()
    sizes = []
    for epochs in (2, 8):
        rec = SEIRecorder(30, 3, extra_scores="poe_knn", max_epochs=epochs)
        for t in range(epochs):
            rec.update(np.arange(30), hist[t % 4], labels)
            rec.end_epoch()
        sizes.append(sum(np.asarray(v).nbytes for v in rec.state_dict().values()))
    assert sizes[0] == sizes[1]


def test_per_class_sums_survive_save_load_mid_epoch_and_match_from_history(tmp_path):
    hist, labels = _toy_history()
    rec = SEIRecorder(30, 3, extra_scores=("mean_logp",))
    for t in range(3):
        for b in np.array_split(np.arange(30), 3):
            rec.update(b, hist[t, b], labels[b])
        rec.end_epoch()
    rec.update(np.arange(12), hist[3, :12], labels[:12])  # mid-epoch: buffered, then saved
    rec.save(tmp_path / "rec.npz")
    loaded = SEIRecorder.load(tmp_path / "rec.npz")
    restored = SEIRecorder(30, 3, extra_scores="poe_knn").load_state_dict(rec.state_dict())
    for r in (rec, loaded, restored):
        r.update(np.arange(12, 30), hist[3, 12:], labels[12:])
        r.end_epoch()
    ref = SEIRecorder.from_history(hist, labels)
    for r in (rec, loaded, restored):
        np.testing.assert_allclose(r.scores("mean_logp"), ref.scores("mean_logp"), rtol=1e-12)
        np.testing.assert_allclose(r.fusion_input("poe_knn"), ref.fusion_input("poe_knn"), rtol=1e-12)
        np.testing.assert_allclose(r.scores("sei"), ref.scores("sei"), rtol=1e-12)


def _mixed_feed(rec, hist, labels):
    """Each epoch: float64 probabilities, float32 logits and float32 probabilities in
    batches of 4 to 11 rows, with repeats (the buffer flushes on each change)."""
    for t in range(hist.shape[0]):
        ids = np.r_[np.random.default_rng(t).permutation(30), 3, 3]
        for j, b in enumerate(np.split(ids, [4, 15, 20, 26])):
            if j % 3 == 1:
                rec.update(b, np.log(hist[t, b]).astype(np.float32), labels[b], from_logits=True)
            else:
                rec.update(b, hist[t, b].astype(np.float64 if j % 3 == 0 else np.float32), labels[b])
        rec.end_epoch()
    return rec


@pytest.mark.parametrize("buffer_values", [1, 24, 1 << 15])
def test_buffered_updates_give_the_scores_of_one_scatter_per_update(monkeypatch, buffer_values):
    import sei._recorder_layout as layout

    hist, labels = _toy_history()
    ref = _mixed_feed(SEIRecorder(30, 3, extra_scores="mean_logp"), hist, labels)  # default buffer
    monkeypatch.setattr(layout, "BUFFER_VALUES", buffer_values)  # 1: every update of > 1 row scatters at once
    rec = _mixed_feed(SEIRecorder(30, 3, extra_scores="mean_logp"), hist, labels)
    for name in SCORE_NAMES:
        np.testing.assert_allclose(rec.scores(name), ref.scores(name), rtol=1e-12, atol=1e-15, err_msg=name)
    np.testing.assert_array_equal(rec.last_probs, ref.last_probs)
    np.testing.assert_array_equal(rec.epochs_seen, np.full(30, 4.0))


@pytest.mark.parametrize("score", ["mean_logp", "poe_knn"])
def test_sei_train_records_and_returns_the_per_class_scores(score):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    x = (rng.normal(size=(3, 8))[y] * 3 + rng.normal(size=(240, 8))).astype(np.float32)
    noisy, bad = sei.symmetric_noise(y, 0.2, num_classes=3, seed=0)
    res = sei.train(x, noisy, class_names=["a", "b", "c"], epochs=6, lr=0.05, batch_size=64, progress=False,
                    score=score)
    if score == "mean_logp":
        expected = res.recorder.scores("mean_logp")
    else:
        expected = sei.feature_score("poe_knn", res.recorder.fusion_input("poe_knn"), noisy, x, num_classes=3)
    np.testing.assert_allclose(res.scores, expected)
    assert np.mean(res.scores[bad] < 0) > 0.5
    if score == "mean_logp":
        assert res.threshold == 0.0  # "auto" on a signed score
    else:  # "auto" for poe_knn: as many as cleanlab counts on the product of experts' probabilities
        from cleanlab.count import num_label_issues
        from scipy.special import softmax

        from sei.neighbors import knn_label_frequencies

        q = knn_label_frequencies(noisy, sei.knn_indices(x, 20), 3, smoothing=1.0)
        probs = softmax(res.recorder.fusion_input("poe_knn") + np.log(q), axis=1)
        assert res.mislabeled.sum() == num_label_issues(noisy, probs) > 0
        assert res.scores[res.mislabeled].max() < res.threshold <= res.scores[~res.mislabeled].min()


@pytest.mark.parametrize("k", [4, 100])  # the column loop and the row reductions
def test_batch_from_logits_shares_one_top2_pass_and_matches_the_definitions(k):
    from scipy.special import entr, softmax

    from sei.scores import Batch

    rng = np.random.default_rng(0)
    z = rng.normal(size=(64, k)) * 4
    z[0, :2] = 7.0  # a tie at the top
    z[1, 3] = 300.0  # every other probability underflows: the logit margin stays exact
    labels = rng.integers(0, k, 64)
    labels[1] = 0
    b = Batch(z.copy(), labels, from_logits=True)
    p = softmax(z, axis=1)
    rows = np.arange(64)
    masked = lambda x: np.where(np.eye(k, dtype=bool)[labels], -np.inf, x).max(1)  # noqa: E731
    np.testing.assert_allclose(b.probs, p, rtol=1e-12)
    np.testing.assert_allclose(b.entropy, np.maximum(entr(p).sum(1), 0), atol=1e-12)
    np.testing.assert_allclose(b.margin, p[rows, labels] - masked(p), atol=1e-15)
    np.testing.assert_allclose(b.logit_margin, z[rows, labels] - masked(z), rtol=1e-12)
    assert b.logit_margin[1] == z[1, 0] - 300.0
