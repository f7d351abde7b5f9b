"""Specification of the score registry (sei/scores.py): one place defines every score."""

import numpy as np
import pytest

import sei
from sei import SEIRecorder
from sei.constants import FEATURE_SCORES, SCORE_NAMES, SIGNED_SCORES
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
    assert FEATURE_SCORES == names(needs_features=True) == sei.FEATURE_SCORES == ("aum_prob_knn", "knn_margin")
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
    assert [n for n, s in SCORES.items() if s.needs_features] == ["aum_prob_knn", "knn_margin"]


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
        if name != "aum":
            np.testing.assert_array_equal(restored.scores(name), rec.scores(name))


def test_recorder_exposes_the_epochs_each_sample_was_seen():
    hist, labels = _toy_history()
    rec = SEIRecorder(30, 3)
    for epoch in hist:
        rec.update(np.arange(10), epoch[:10], labels[:10])
        rec.end_epoch()
    np.testing.assert_array_equal(rec.epochs_seen, np.r_[np.full(10, 4.0), np.zeros(20)])
