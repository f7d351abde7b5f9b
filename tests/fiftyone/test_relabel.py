"""suggest_relabels picks with sei.active from what the run stored: its scores and the vectors
of its embeddings field. The picks are compared with sei.active called on the same data."""

import numpy as np
import pytest

import sei_fiftyone as sfo
from sei.active import KNNGraph, SelectionContext, make_selector


def _stored(view, key="sei", field="embedding"):
    scores = np.asarray(view.values(key), dtype=np.float64)
    vectors = np.stack([np.asarray(v, dtype=np.float32) for v in view.values(field)])
    return scores, vectors


def _sei_active(view, method, budget, graph=None):
    """sei.active on the run's stored scores; the labels and probabilities are placeholders:
    SEI-guided selectors rank by the scores alone."""
    scores = np.asarray(view.values("sei"), dtype=np.float64)
    n = len(scores)
    ctx = SelectionContext(np.zeros(n, dtype=np.int64), np.full((n, 3), 1 / 3), sei_scores=scores, graph=graph)
    picks = make_selector(method).select(ctx, budget)
    return np.asarray(view.values("id"))[picks].tolist()


@pytest.mark.parametrize("flagged_only", [False, True])
def test_the_picks_are_sei_propagation_on_the_stored_scores_and_vectors(dataset, flagged_only):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=5)
    view = dataset.exists("sei")
    if flagged_only:
        view = view.match({"sei_mislabeled": True})
    budget = min(7, len(view))
    graph = KNNGraph(_stored(view)[1], k=10, seed=0)
    expected = _sei_active(view, "sei_propagation", budget, graph)
    chosen = sfo.suggest_relabels(dataset, budget=budget, tag="fixme", flagged_only=flagged_only)
    assert chosen == expected
    assert sorted(dataset.match_tags("fixme").values("id")) == sorted(expected)


def test_propagation_changes_the_order_of_the_plain_ranking(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=5)
    chosen = sfo.suggest_relabels(dataset, budget=20, tag="fixme")
    lowest = sfo.suggest_relabels(dataset, budget=20, tag="low", method="lowest_score")
    assert lowest == sfo.sorted_view(dataset, flagged_only=False).limit(20).values("id")
    assert chosen == _sei_active(dataset.exists("sei"), "sei_propagation", 20,
                                 KNNGraph(_stored(dataset)[1], k=10, seed=0))
    assert chosen[0] == lowest[0]  # the most suspicious sample is picked first either way
    assert chosen != lowest  # a pick lowers its neighbours' suspicion: not the plain ranking


def test_a_run_without_stored_vectors_takes_the_lowest_scores(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=5)
    dataset.delete_sample_field("embedding")  # as for a run on the images
    chosen = sfo.suggest_relabels(dataset, budget=6, tag="low")
    assert chosen == _sei_active(dataset.exists("sei"), "sei", 6)
    assert chosen == sfo.sorted_view(dataset, flagged_only=False).limit(6).values("id")
    with pytest.raises(ValueError, match="needs the vectors"):
        sfo.suggest_relabels(dataset, budget=6, method="sei_propagation")


def test_errors_of_the_selection_surface(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=3)
    dataset.set_values("embedding", [[float("nan")] * 8] * len(dataset))  # unusable for a kNN graph
    with pytest.raises(ValueError):
        sfo.suggest_relabels(dataset, budget=5, tag="fixme")
    assert len(dataset.match_tags("fixme")) == 0
    with pytest.raises(ValueError, match="method must be one of"):
        sfo.suggest_relabels(dataset, budget=5, method="entropy")
