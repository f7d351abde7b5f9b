"""The default propagation path of sei.active: bounded hop push, its error bound, auto bound."""

import numpy as np
import pytest

from sei.active import KNNGraph, SelectionContext, dense_diffusion_reference, make_selector
from sei.active.graph import BOUND_LADDER, diffusion_plan


def _blobs(n=300, d=5, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(4, d)) * 4
    return c[rng.integers(0, 4, n)] + rng.normal(size=(n, d))


@pytest.fixture(scope="module", params=["blobs", "hubs"])
def graph(request):
    # "hubs": random 32-d points, where kNN graphs have hubs of high degree.
    rng = np.random.default_rng(1)
    x = _blobs() if request.param == "blobs" else rng.normal(size=(400, 32))
    return KNNGraph(x, k=10)


_COLUMNS = {}


def _exact_column(graph, node):
    """M^10 1_node, through dense_diffusion_reference (cached per graph: dense powers are slow)."""
    key = id(graph)
    if key not in _COLUMNS:
        n = graph.num_samples
        # the reference returns e + M^10 c with c = -e[j] 1_j: for e = 1_j that is 1_j - M^10 1_j
        _COLUMNS[key] = np.stack([np.eye(n)[j] - dense_diffusion_reference(graph.adjacency, np.eye(n)[j], j)
                                  for j in range(0, n, 23)], 1)
    return _COLUMNS[key][:, node // 23]


@pytest.mark.parametrize("bound", [0.3, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6])
def test_bounded_push_within_its_max_norm_bound(graph, bound):
    e = np.random.default_rng(2).random(graph.num_samples)
    for node in range(0, graph.num_samples, 23):
        ref = e + _exact_column(graph, node) * -e[node]
        got = e.copy()
        graph.propagate_pick(got, node, bound=bound)
        assert np.abs(got - ref).max() <= bound * e[node] + 1e-12
        # pruning only leaves mass out: the propagated change never exceeds the exact one
        assert np.all(got >= ref - 1e-12)


def test_bounded_push_with_zero_bound_is_exact(graph):
    e = np.random.default_rng(3).random(graph.num_samples)
    ref, got = e.copy(), e.copy()
    for node in (3, 50, 4, 120):
        ref = dense_diffusion_reference(graph.adjacency, ref, node)
        graph.propagate_pick(got, node, bound=0.0)
    assert np.abs(got - ref).max() < 1e-12


@pytest.mark.parametrize("bound", [0.0, 1e-6, 1e-4, 1e-2, 0.5])
def test_diffusion_plan_adds_up_to_the_bound(bound):
    b, theta = diffusion_plan(bound)
    full, _ = diffusion_plan(0.0)
    assert np.isclose(full.sum(), 1.0) and len(full) == 11
    tails = np.append(np.cumsum(full[::-1])[::-1], 0.0)
    hops = len(b) - 1
    total = tails[hops + 1] + sum(theta[r] * (tails[r + 1] - tails[hops + 1]) for r in range(1, hops))
    assert total <= bound * (1 + 1e-12)
    assert np.array_equal(b, full[:hops + 1])


def test_bad_bounds_are_refused(graph):
    with pytest.raises(ValueError):
        diffusion_plan(-1e-3)
    with pytest.raises(ValueError):
        diffusion_plan(float("nan"))
    with pytest.raises(ValueError):
        make_selector("kim", bound=1.5)
    with pytest.raises(ValueError):
        make_selector("kim", bound="fast")


def test_auto_bound_is_deterministic_and_within_the_work_budget(graph):
    bound = graph.auto_bound()
    assert bound in BOUND_LADDER
    rng = np.random.default_rng(graph._seed)
    nodes = rng.choice(graph.num_samples, 16, replace=False)
    work = []
    for j in nodes:
        graph.bounded_response(int(j), bound=bound)
        work.append(graph.last_push_work)
    assert np.mean(work) <= 15_000
    # a tighter budget never gives a tighter bound
    assert graph.auto_bound(work_budget=500) >= bound


def test_auto_bound_is_reproducible():
    x = np.random.default_rng(7).normal(size=(500, 16))
    assert KNNGraph(x, k=10).auto_bound(work_budget=3000) == KNNGraph(x, k=10).auto_bound(work_budget=3000)


def test_auto_bound_is_exact_on_tiny_graphs():
    g = KNNGraph(_blobs(60, seed=5), k=5)
    assert g.auto_bound() == 0.0


def _context(graph, seed=0):
    n = graph.num_samples
    p = np.random.default_rng(seed).dirichlet(np.ones(4), n)
    return SelectionContext(np.zeros(n, np.int64), p, graph=graph)


def test_selectors_use_the_bounded_push_by_default(graph, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the default path must not use the Euler push")

    monkeypatch.setattr(graph, "local_response", refuse)
    monkeypatch.setattr(graph, "precompute_responses", refuse)
    sel = make_selector("kim", candidates="all")
    picks = sel.select(_context(graph), 40)
    assert len(np.unique(picks)) == 40
    assert sel.last_bound == graph.auto_bound()


def test_default_picks_match_exact_propagation(graph):
    ctx = _context(graph, seed=4)
    exact = make_selector("kim", candidates="all", bound=0.0).select(ctx, 60)
    default = make_selector("kim", candidates="all").select(ctx, 60)
    assert np.array_equal(default, exact)


def test_select_for_relabeling_default_path(graph):
    from sei_cleanlab.active import select_for_relabeling

    n = graph.num_samples
    rng = np.random.default_rng(0)
    hist = rng.dirichlet(np.ones(4), (3, n))
    labels = rng.integers(0, 4, n)
    idx = select_for_relabeling(labels, hist, graph=graph, budget=30)
    exact = select_for_relabeling(labels, hist, graph=graph, budget=30, bound=0.0)
    assert np.array_equal(idx, exact)


def test_auto_uses_precomputed_columns_when_present():
    g = KNNGraph(_blobs(200, seed=3), k=10).precompute_responses(tol=1e-7)
    sel = make_selector("kim", candidates="all")
    sel.select(_context(g), 10)
    assert sel.last_bound == pytest.approx(1e-6)


def test_flush_makes_the_field_the_exact_diffusion_of_the_changes(graph):
    from sei.active.propagation import BoundedPropagation

    e = np.random.default_rng(5).random(graph.num_samples)
    got = e.copy()
    prop = BoundedPropagation(graph, 1e-2, flush_every=3)
    for node in (3, 69, 4):
        prop.pick(got, node)
    assert prop.flushes == 1
    ref = e.copy()
    deltas = []
    chk = e.copy()
    prop2 = BoundedPropagation(graph, 1e-2, flush_every=3)
    for node in (3, 69, 4):
        deltas.append(-chk[node])
        prop2.pick(chk, node)
    for node, delta in zip((3, 69, 4), deltas):
        unit = np.eye(graph.num_samples)[node]
        ref += (unit - dense_diffusion_reference(graph.adjacency, unit, node)) * delta
    assert np.abs(chk - ref).max() < 1e-12
    assert np.abs(chk - got).max() == 0.0


def test_batch_errors_do_not_pile_up_with_flushes(graph):
    ctx = _context(graph, seed=6)
    sel = make_selector("kim", candidates="all", bound=1e-2, flush_every=5)
    sel.select(ctx, 30)
    assert sel.last_propagation.flushes == 6
    assert make_selector("kim", candidates="all", bound=1e-2, flush_every=0).select(ctx, 30) is not None
