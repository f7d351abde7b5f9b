"""The peers of issue #22 in benchmarks/harness.py, each checked against its reference or a known answer."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from benchmarks import harness


def _clusters(n_per=300, k=3, noise=0.2, seed=0):
    """Well separated Gaussian clusters (the true class), labels flipped uniformly at rate ``noise``."""
    rng = np.random.default_rng(seed)
    centres = np.eye(k, 16) * 10.0
    true = np.repeat(np.arange(k), n_per)
    x = centres[true] + rng.normal(size=(len(true), 16))
    flip = rng.random(len(true)) < noise
    given = np.where(flip, (true + rng.integers(1, k, len(true))) % k, true)
    return x.astype(np.float32), given, given != true, true


def test_mistakenness_is_fiftyone_brains_formula():
    fo = pytest.importorskip("fiftyone.brain.internal.core.mistakenness")
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3, size=(50, 5))
    labels = rng.integers(0, 5, 50)
    score, flags = harness.fiftyone_mistakenness(logits, labels)
    theirs = np.array([fo._compute_mistakenness_class(list(l), float(l.argmax() == y)) for l, y in zip(logits, labels)])
    np.testing.assert_allclose(1.0 - score, theirs, atol=1e-12)
    np.testing.assert_array_equal(flags, logits.argmax(1) != labels)


def test_deep_knn_shares_and_majority_vote():
    labels = np.array([0, 0, 1, 1, 0])
    nb = np.array([[1, 4, 2], [0, 4, 3], [3, 0, 1], [2, 0, 1], [0, 1, 2]])
    score, flags = harness.deep_knn(labels, nb, 3)
    np.testing.assert_allclose(score, [2 / 3, 2 / 3, 1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_array_equal(flags, [False, False, True, True, False])
    score1, _ = harness.deep_knn(labels, nb, 1)
    np.testing.assert_allclose(score1, [1, 1, 1, 1, 1])


def test_deep_knn_k_is_chosen_on_the_clean_split_only():
    x, given, is_mis, _ = _clusters()
    from sei.neighbors import knn_indices

    nb = knn_indices(x, 50)
    clean = np.arange(0, len(given), 10)
    k = harness.deep_knn_choose_k(given, nb, is_mis, clean)
    assert k in harness.DEEP_KNN_GRID and k >= 5  # one neighbour is as noisy as the labels
    poisoned = is_mis.copy()
    poisoned[np.setdiff1d(np.arange(len(given)), clean)] = ~poisoned[np.setdiff1d(np.arange(len(given)), clean)]
    assert harness.deep_knn_choose_k(given, nb, poisoned, clean) == k


def test_hoc_recovers_a_known_transition_and_simifeat_finds_the_flips():
    x, given, is_mis, true = _clusters(n_per=1000, noise=0.2)
    t, p = harness.hoc_transition(x, given, 3, rounds=3, per_round=2000, seed=0)
    np.testing.assert_allclose(np.diag(t), 0.8, atol=0.05)
    np.testing.assert_allclose(p, 1 / 3, atol=0.05)
    for method in ("vote", "rank"):
        score, flags = harness.simifeat(x, given, 3, method=method, transition=(t, p))
        assert (flags == is_mis).mean() > 0.95
        assert roc_auc_score(is_mis, -score) > 0.97


def test_cleanlab_ensemble_is_cleanlabs_function_with_its_count():
    rank = pytest.importorskip("cleanlab.rank")
    from cleanlab.count import num_label_issues

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 200)
    probs = [rng.dirichlet(np.ones(3), 200) for _ in range(4)]
    for w in ("accuracy", "uniform"):
        score, flags = harness.cleanlab_ensemble(labels, probs, weighting=w)
        np.testing.assert_allclose(score, rank.get_label_quality_ensemble_scores(
            labels, probs, weight_ensemble_members_by=w, verbose=False))
        assert flags.sum() == num_label_issues(labels, np.mean(probs, 0))
        assert score[flags].max() <= score[~flags].min()


def test_wrong_events_count_disagreeing_epochs():
    labels = np.array([0, 1])
    eye = np.eye(2)
    probs = [eye[[0, 0]], eye[[0, 0]], eye[[0, 1]]]
    score, flags = harness.wrong_events(probs, labels)
    np.testing.assert_array_equal(score, [0, -2])
    np.testing.assert_array_equal(flags, [False, True])
