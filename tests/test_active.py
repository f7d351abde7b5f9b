"""Specification of sei.active: weights, exact local propagation, selectors, simulator, adapter."""

import subprocess
import sys

import numpy as np
import pytest

from sei.active import (
    SELECTORS, KNNGraph, RobustWeights, SelectionContext, dense_diffusion_reference, make_selector, simulate,
)


def _blobs(n=400, k=4, d=8, seed=0, spread=4.0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(k, d)) * spread
    y = rng.integers(0, k, n)
    return c[y] + rng.normal(size=(n, d)), y


@pytest.fixture(scope="module")
def graph():
    x, _ = _blobs(300, d=5)
    return KNNGraph(x, k=10)


def test_import_does_not_pull_torch_or_ann_libraries():
    code = ("import sys, sei.active; "
            "bad=[m for m in ('torch','hnswlib','faiss','cleanlab','fiftyone') if m in sys.modules]; "
            "assert not bad, bad; import sei_cleanlab.active; "
            "bad=[m for m in ('torch','hnswlib','faiss','fiftyone') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_robust_weights_start_uniform_and_sum_to_one():
    w = RobustWeights(5)
    assert np.allclose(w.alpha, 0.2) and np.allclose(w.weights, 1.0)
    w.update(np.array([0.1, 0.2, 0.1, 3.0, 0.3]))
    assert np.isclose(w.alpha.sum(), 1.0)


def test_robust_weights_follow_eq3():
    losses = np.array([0.5, 1.0, 2.0, 4.0])
    w = RobustWeights(4, step=0.1)
    w.update(losses)
    sigma = losses.mean() ** 2
    g = np.exp(-losses ** 2 / sigma)
    expect = 0.9 * 0.25 + 0.1 * g / g.sum()
    assert np.allclose(w.alpha, expect / expect.sum())
    assert w.last_sigma == pytest.approx(sigma)


def test_robust_weights_suppress_consistently_high_loss():
    w = RobustWeights(3)
    for _ in range(20):
        w.update(np.array([0.1, 0.2, 5.0]))
    assert w.alpha[2] < w.alpha[0] / 5
    assert list(w.candidate_order()[:1]) == [2]


def test_graph_is_symmetric_with_gaussian_weights(graph):
    a = graph.adjacency
    assert abs(a - a.T).max() < 1e-12
    assert (a.data > 0).all() and (a.data <= 1).all()
    assert np.all(np.diff(a.indptr) >= graph.k)
    lap = graph.laplacian()
    assert np.allclose(lap @ np.ones(graph.num_samples), 0)


@pytest.mark.parametrize("node", [0, 17, 299])
def test_local_propagation_matches_dense_diffusion(graph, node):
    e = np.random.default_rng(node).random(graph.num_samples)
    ref = dense_diffusion_reference(graph.adjacency, e, node)
    got = e.copy()
    graph.propagate_pick(got, node, tol=0.0)
    assert np.abs(got - ref).max() < 1e-6


def test_sequence_of_picks_matches_dense_diffusion(graph):
    e = np.random.default_rng(1).random(graph.num_samples)
    ref, got = e.copy(), e.copy()
    for node in (3, 50, 4, 120):
        ref = dense_diffusion_reference(graph.adjacency, ref, node)
        graph.propagate_pick(got, node, tol=0.0)
    assert np.abs(got - ref).max() < 1e-6


def test_pruned_propagation_within_its_error_bound(graph):
    e = np.random.default_rng(2).random(graph.num_samples)
    ref = dense_diffusion_reference(graph.adjacency, e, 5)
    got = e.copy()
    graph.propagate_pick(got, 5, tol=1e-7)
    assert np.abs(got - ref).max() <= 10 * 1e-7 * e[5] + 1e-12


def test_precomputed_responses_match_dense_diffusion():
    x, _ = _blobs(200, d=5, seed=3)
    g = KNNGraph(x, k=10).precompute_responses(tol=0.0)
    e = np.random.default_rng(3).random(200)
    ref = dense_diffusion_reference(g.adjacency, e, 9)
    got = e.copy()
    g.propagate_pick(got, 9, tol=0.0)
    assert np.abs(got - ref).max() < 1e-6


def test_full_mode_diffuses_the_whole_field(graph):
    e = np.random.default_rng(4).random(graph.num_samples)
    got = e.copy()
    graph.propagate_pick(got, 0, mode="full")
    e0 = e.copy()
    e0[0] = 0
    assert np.allclose(got, graph.diffuse(e0))


def test_propagation_suppresses_neighbours_most(graph):
    e = np.ones(graph.num_samples)
    graph.propagate_pick(e, 0, tol=0.0)
    nbrs = graph.adjacency[0].indices
    far = np.setdiff1d(np.arange(graph.num_samples), np.append(nbrs, 0))
    assert e[nbrs].mean() < e[far].mean() <= 1.0


def test_hnswlib_backend_builds_same_kind_of_graph():
    pytest.importorskip("hnswlib")
    x, _ = _blobs(500, d=6)
    g = KNNGraph(x, k=10, backend="hnswlib")
    assert g.backend == "hnswlib" and abs(g.adjacency - g.adjacency.T).max() < 1e-12


def test_graph_rejects_bad_input():
    with pytest.raises(ValueError):
        KNNGraph(np.zeros((5, 2)) + np.nan, k=2)
    with pytest.raises(ValueError):
        KNNGraph(np.random.default_rng(0).normal(size=(5, 2)), k=5)


def _context(n=300, k=4, seed=0, graph=None):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(k), n)
    labels = rng.integers(0, k, n)
    alpha = rng.random(n)
    exclude = np.zeros(n, bool)
    exclude[:30] = True
    sei = rng.normal(size=n)
    return SelectionContext(labels, p, exclude=exclude, alpha=alpha / alpha.sum(), sei_scores=sei, graph=graph)


@pytest.mark.parametrize("method", sorted(SELECTORS))
def test_every_selector_returns_distinct_unqueried_indices(method, graph):
    ctx = _context(graph=graph)
    picks = make_selector(method).select(ctx, 25)
    assert picks.dtype == np.int64 and len(picks) == 25 == len(np.unique(picks))
    assert not ctx.exclude[picks].any()


def test_selectors_cap_at_available_samples(graph):
    ctx = _context(graph=graph)
    ctx.exclude[:] = True
    ctx.exclude[:3] = False
    for method in SELECTORS:
        assert sorted(make_selector(method).select(ctx, 10)) == [0, 1, 2]


def test_entropy_and_corractive_rank_by_their_criterion():
    p = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    ctx = SelectionContext(np.array([0, 0, 0]), p)
    assert list(make_selector("entropy").select(ctx, 3)) == [1, 2, 0]
    assert list(make_selector("corractive").select(ctx, 3)) == [2, 1, 0]


def test_lossent_variants():
    p = np.array([[0.5, 0.5], [0.05, 0.95]])
    ctx = SelectionContext(np.array([0, 0]), p)
    be = make_selector("lossent").priority(ctx)
    ce, h = -np.log([0.5, 0.05]), -(p * np.log(p)).sum(1)
    assert np.allclose(be, ce / np.log(2) - np.maximum(h / np.log(2) - 0.3, 0))
    assert np.allclose(make_selector("lossent_sum").priority(ctx), ce + h)


def test_sei_selector_without_propagation_ranks_lowest_sei_first():
    ctx = SelectionContext(np.zeros(4, int), np.full((4, 2), 0.5), sei_scores=np.array([3.0, -2.0, 0.0, -5.0]))
    assert list(make_selector("sei").select(ctx, 4)) == [3, 1, 2, 0]


def test_propagation_diversifies_a_cluster_of_duplicates():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(10, 2)) * 0.01, rng.normal(size=(90, 2)) * 3 + 10])
    g = KNNGraph(x, k=5, sigma="knn")
    ent = np.full(100, 0.5)
    ent[:10] = 1.0  # the duplicate cluster is the most uncertain
    p = np.stack([1 - ent / 2, ent / 2], 1)
    ctx = SelectionContext(np.zeros(100, int), p, graph=g)
    plain = make_selector("sei", candidates="all").select(
        SelectionContext(np.zeros(100, int), p, sei_scores=-ent), 5)
    prop = make_selector("kim", candidates="all").select(ctx, 5)
    assert (plain < 10).sum() == 5
    assert (prop < 10).sum() < 5


def test_kim_draws_candidates_from_lowest_alpha():
    n = 100
    p = np.full((n, 2), 0.5)
    p[:50] = [0.5, 0.5]
    p[50:] = [0.51, 0.49]
    alpha = np.ones(n)
    alpha[50:] = 0.1  # low alpha -> high p^S
    x = np.random.default_rng(0).normal(size=(n, 3))
    ctx = SelectionContext(np.zeros(n, int), p, alpha=alpha / alpha.sum(), graph=KNNGraph(x, k=5))
    picks = make_selector("kim", pool=10, propagate=False).select(ctx, 5)
    assert (picks >= 50).all()


def test_simulator_improves_accuracy_and_records_metrics():
    from sei import symmetric_noise

    x, y = _blobs(600, k=4, seed=1, spread=2.0)
    xt, yt = _blobs(300, k=4, seed=1, spread=2.0)
    noisy, mis = symmetric_noise(y, 0.5, num_classes=4, seed=0)
    g = KNNGraph(x, k=10)
    res = simulate(x, noisy, y, "sei_propagation", budget=200, batch_size=100, test_features=xt, test_labels=yt,
                   graph=g, epochs=5)
    assert list(res["labels_queried"]) == [0, 100, 200]
    assert len(res["batch_precision"]) == 2 and len(res["picks"]) == 200 == len(np.unique(res["picks"]))
    assert res["remaining_mislabeled"][0] == mis.sum()
    assert res["remaining_mislabeled"][-1] == mis.sum() - round(res["batch_precision"].sum() * 100)
    assert res["batch_precision"].mean() > 0.7


def test_simulator_dalc_and_random_run():
    from sei import symmetric_noise

    x, y = _blobs(300, k=3, seed=2)
    noisy, _ = symmetric_noise(y, 0.4, num_classes=3, seed=0)
    for m in ("dalc", "random"):
        res = simulate(x, noisy, y, m, budget=60, batch_size=30, epochs=3)
        assert len(res["test_accuracy"]) == 3


def test_plot_curves_writes_png(tmp_path):
    from sei.active import plot_curves

    runs = [{"labels_queried": np.array([0, 1, 2]), "test_accuracy": np.array([0.1, 0.5, 0.7])}] * 2
    plot_curves({"a": runs}, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_select_for_relabeling_from_history_and_prebuilt_graph():
    from sei_cleanlab.active import select_for_relabeling

    x, y = _blobs(200, k=3, seed=4)
    rng = np.random.default_rng(0)
    hist = rng.dirichlet(np.ones(3), (4, 200))
    idx = select_for_relabeling(y, hist, x, budget=20)
    assert len(np.unique(idx)) == 20
    g = KNNGraph(x, k=10)
    assert np.array_equal(select_for_relabeling(y, hist, budget=20, graph=g), idx)
    assert len(select_for_relabeling(y, hist, budget=7, method="entropy")) == 7


def test_select_for_relabeling_rejects_bad_input():
    from sei_cleanlab.active import select_for_relabeling

    with pytest.raises(ValueError, match="features"):
        select_for_relabeling(np.zeros(5, int), np.full((2, 5, 2), 0.5), budget=2)
    with pytest.raises(TypeError):
        select_for_relabeling(np.zeros(5), np.full((2, 5, 2), 0.5), budget=2, method="entropy")
    with pytest.raises(ValueError):
        select_for_relabeling(np.zeros(5, int), np.full((2, 4, 2), 0.5), budget=2, method="entropy")
