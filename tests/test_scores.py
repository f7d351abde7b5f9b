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
