"""Audit of Kim (ALC paper, ECCV-W 2022) against its equations, on cases small enough to compute by
hand; and the pieces of the paper's protocol (head, schedule, noise, human cost)."""

import math

import numpy as np
import pytest

from sei.active import KNNGraph, RobustWeights, SelectionContext, make_selector, simulate
from sei.active.simulator import Oracle
from sei.active.weights import mean_pairwise_distance


# ----------------------------------------------------------------------------- Eq. 2
def test_eq2_weighted_gradient_is_alpha_times_each_sample_gradient():
    """W <- W - eta sum_k alpha_k grad l_k: the engine's loss with weights N*alpha over a batch of
    B has gradient (N/B) alpha_k (p_k - onehot_k) per sample. Hand case: zero logits, K=2, so
    p = (1/2, 1/2) and grad l_k = p - onehot(y_k); alpha = (3/4, 1/4), N = B = 2."""
    torch = pytest.importorskip("torch")
    from sei.engine.heads import loss_terms

    logits = torch.zeros(2, 2, requires_grad=True)
    w = RobustWeights(2)
    w.alpha = np.array([0.75, 0.25])
    loss, per = loss_terms(logits, torch.tensor([0, 1]), weights=torch.tensor(w.weights, dtype=torch.float32))
    loss.backward()
    assert np.allclose(per.detach().numpy(), math.log(2))
    assert np.allclose(logits.grad.numpy(), [[-0.375, 0.375], [0.125, -0.125]])  # 0.75*(-1/2, 1/2), 0.25*(1/2, -1/2)


# ----------------------------------------------------------------------------- Eq. 3-4
def test_eq3_eq4_update_by_hand_with_mean_loss_sigma():
    """alpha = 1/4 each, losses (0, 0, 0, 2): sigma = mean^2 = 0.25, g = (1, 1, 1, e^-16);
    alpha' = 0.9/4 + 0.1 g/|g|_1 = (0.2583333, 0.2583333, 0.2583333, 0.225 + ~4e-9)."""
    w = RobustWeights(4)
    w.update(np.array([0.0, 0.0, 0.0, 2.0]))
    assert w.last_sigma == pytest.approx(0.25)
    assert np.allclose(w.alpha, [0.25833333, 0.25833333, 0.25833333, 0.225], atol=1e-8)
    assert w.alpha.sum() == pytest.approx(1.0)


def test_eq4_sigma_pairs_is_the_squared_mean_pairwise_loss_distance():
    """The paper's sigma_alpha, "determined similarly" to sigma_L (the squared mean of pairwise
    distances): losses (0, 0, 0, 2) have pairwise distances 2, 2, 2, 0, 0, 0 -> mean 1, sigma 1;
    g = (1, 1, 1, e^-4), alpha_j' = 0.225 + 0.1 g_j / (3 + e^-4)."""
    assert mean_pairwise_distance([1.0, 2.0, 4.0]) == pytest.approx(2.0)  # (1 + 3 + 2) / 3
    assert mean_pairwise_distance([5.0]) == 0.0
    w = RobustWeights(4, sigma="pairs")
    w.update(np.array([0.0, 0.0, 0.0, 2.0]))
    assert w.last_sigma == pytest.approx(1.0)
    z = 3 + math.exp(-4)
    assert np.allclose(w.alpha, [0.225 + 0.1 / z] * 3 + [0.225 + 0.1 * math.exp(-4) / z])


def test_hard_rule_zeroes_the_high_loss_component():
    w = RobustWeights(6, rule="hard")
    for _ in range(3):
        w.update(np.array([0.1, 0.2, 0.15, 3.0, 3.2, 0.1]))
    assert np.allclose(w.alpha, [0.25, 0.25, 0.25, 0, 0, 0.25])
    with pytest.raises(ValueError, match="rule"):
        RobustWeights(3, rule="soft-ish")


# ----------------------------------------------------------------------------- candidate ranking
def test_candidates_rank_p_s_then_pick_highest_entropy_in_the_pool():
    """p^S_j = (1 - alpha_j) / sum(1 - alpha): the pool of C = 3 holds the lowest alpha (3, 1, 5;
    ties in index order); the first pick is the pool's highest entropy (5), not the highest overall
    (0, outside the pool); the pool is refilled in p^S order (2 joins), so the second pick is 2."""
    alpha = np.array([0.3, 0.1, 0.2, 0.05, 0.25, 0.1])
    p_s = (1 - alpha) / (1 - alpha).sum()
    assert list(np.argsort(-p_s, kind="stable")[:3]) == [3, 1, 5]
    probs = np.array([[0.5, 0.5], [0.9, 0.1], [0.6, 0.4], [0.99, 0.01], [0.55, 0.45], [0.7, 0.3]])
    ctx = SelectionContext(np.zeros(6, int), probs, alpha=alpha)
    picks = make_selector("kim", pool=3, propagate=False).select(ctx, 2)
    assert list(picks) == [5, 2]
    queried = np.zeros(6, bool)
    queried[5] = True  # a queried sample leaves the ranking: the pool becomes 3, 1, 2
    picks = make_selector("kim", pool=3, propagate=False).select(
        SelectionContext(np.zeros(6, int), probs, alpha=alpha, exclude=queried), 1)
    assert list(picks) == [2]


# ----------------------------------------------------------------------------- Eq. 7-8
@pytest.fixture()
def path3():
    """Points 0, 1, 3 on a line, k = 1, sigma_L = 1: edges 0-1 (e^-1) and 1-2 (e^-4)."""
    return KNNGraph(np.array([[0.0], [1.0], [3.0]]), k=1, sigma=1.0)


def test_eq7_gaussian_union_knn_graph_by_hand(path3):
    a = path3.adjacency.toarray()
    e1, e4 = math.exp(-1), math.exp(-4)
    assert np.allclose(a, [[0, e1, 0], [e1, 0, e4], [0, e4, 0]])
    assert np.allclose(path3.laplacian().toarray(),
                       [[1, -1, 0], [-e1 / (e1 + e4), 1, -e4 / (e1 + e4)], [0, -1, 1]])
    simplex = KNNGraph(np.eye(4), k=1)  # sigma "pairs": every pair at distance sqrt(2), so sigma_L = 2
    assert simplex.sigma == pytest.approx(2.0)


def test_eq8_one_euler_step_by_hand(path3):
    e1, e4 = math.exp(-1), math.exp(-4)
    out = path3.diffuse(np.array([1.0, 0.0, 0.0]), steps=1, step_size=0.1)  # e - 0.1 L e
    assert np.allclose(out, [0.9, 0.1 * e1 / (e1 + e4), 0.0])


def test_algorithm1_clamped_diffusion_by_hand(path3):
    """Lines 17-20: repeat {e(x*) = 0; Eq. 8} for the diffusion steps. e = (0.5, 1, 0.2), x* = 1,
    two steps: (0.45, 0.1 (0.5 e^-1 + 0.2 e^-4)/d, 0.18), then (0.405, 0.1 (0.45 e^-1 + 0.18 e^-4)/d, 0.162)."""
    e1, e4 = math.exp(-1), math.exp(-4)
    d = e1 + e4
    e = np.array([0.5, 1.0, 0.2])
    path3.propagate_pick(e, 1, steps=2, step_size=0.1, mode="clamped")
    assert np.allclose(e, [0.405, 0.1 * (0.45 * e1 + 0.18 * e4) / d, 0.162])
    with pytest.raises(ValueError, match="clamped"):
        make_selector("kim", mode="literal")


def test_paper_parameters_are_the_defaults():
    """Sec. 3.3: 10 diffusion steps, delta_L = delta_alpha = 0.1, |N(x)| = 10, sigma_L the squared
    mean pairwise distance; alpha reset to 1/N every round."""
    kim = make_selector("kim")
    assert (kim.steps, kim.step_size, kim.robust_training) == (10, 0.1, True)
    assert RobustWeights(5).step == 0.1
    g = KNNGraph(np.random.default_rng(0).normal(size=(50, 3)))
    assert g.k == 10


# ----------------------------------------------------------------------------- protocol pieces
def test_step10_schedule_and_four_fc_head():
    pytest.importorskip("torch")
    from sei.active import train_linear
    from sei.engine.loop import lr_factor

    assert [lr_factor("step10", e, 30) for e in (0, 9, 10, 19, 20)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = (np.eye(3)[y] * 3 + rng.normal(size=(300, 3))).astype(np.float32)
    model, probs, _ = train_linear(x, y, 3, epochs=12, lr=0.05, batch_size=32, hidden=(16, 16, 16),
                                   lr_schedule="step10")
    linears = [m for m in model.net.modules() if type(m).__name__ == "Linear"]
    assert len(linears) == 4
    assert (model.predict_proba(x).argmax(1) == y).mean() > 0.9
    assert np.allclose(model.predict_proba(x), probs)


def test_paper_noise_replaces_eighty_percent_from_rows_of_t():
    from benchmarks.active import paper_noise

    clean = np.repeat(np.arange(10), 2_000)
    noisy, wrong = paper_noise(clean, "uniform", 10, seed=0)
    assert wrong.mean() == pytest.approx(0.8 * 0.9, abs=0.01)  # a uniform draw keeps the class 1 time in 10
    flipped, _ = paper_noise(clean, "flip", 10, seed=0)
    conf = np.array([[np.mean(flipped[clean == i] == j) for j in range(10)] for i in range(10)])
    assert not np.allclose(conf, conf[0, 0], atol=0.03)  # T's rows differ, not uniform
    assert np.all(np.diag(conf) > 0.2)  # the kept 20 % plus T's own diagonal


def test_oracle_prices_checked_suggestions():
    """Clean (0, 1, 2, 3), suggestions (0, 1, 0, 0) at 1/4 of a relabel: 4 checks + 2 relabels = 3."""
    o = Oracle([0, 1, 2, 3], check_cost=0.25)
    assert list(o.review([0, 1, 2, 3], [0, 1, 0, 0])) == [0, 1, 2, 3]
    assert (o.cost, o.num_accepted, o.num_queries) == (3.0, 2, 4)
    plain = Oracle([0, 1, 2, 3])
    plain.review([0, 1], [0, 0])
    assert plain.cost == 2.0
    with pytest.raises(ValueError, match="check_cost"):
        Oracle([0], check_cost=2.0)


def test_simulator_reports_cost_with_and_without_suggestions():
    pytest.importorskip("torch")
    from sei import symmetric_noise

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    x = (np.eye(3)[y] * 4 + rng.normal(size=(240, 3))).astype(np.float32)
    noisy, _ = symmetric_noise(y, 0.4, num_classes=3, seed=0)
    runs = [simulate(x, noisy, y, "random", budget=60, batch_size=30, epochs=3, check_cost=c) for c in (None, 0.25)]
    assert np.allclose(runs[0]["cost"], runs[0]["labels_queried"])
    assert np.allclose(runs[0]["test_accuracy"], runs[1]["test_accuracy"], equal_nan=True)
    acc = runs[1]["accepted"]
    assert np.allclose(runs[1]["cost"], 0.25 * runs[1]["labels_queried"] + runs[1]["labels_queried"] - acc)
    assert acc[-1] > 0


def test_confirmed_answers_propagate_to_agreeing_unqueried_neighbours():
    """Two clusters; every label in cluster 0 agrees, so one answer there confirms its neighbours
    (never picked afterwards, counted as verified, none wrong)."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    x = (np.eye(2)[y] * 6 + rng.normal(size=(120, 2))).astype(np.float32)
    noisy = y.copy()
    noisy[60:90] = 0  # half of cluster 1 mislabeled
    g = KNNGraph(x, k=5)
    r = simulate(x, noisy, y, "random", budget=40, batch_size=10, epochs=2, graph=g, confirm_neighbours=True)
    assert r["verified"][-1] > 0
    assert len(set(r["picks"].tolist())) == len(r["picks"])
    plain = simulate(x, noisy, y, "random", budget=40, batch_size=10, epochs=2, graph=g)
    assert plain["verified"][-1] == 0
    assert r["verified_wrong"][-1] < r["verified"][-1]


def test_kim_paper_is_a_library_method_with_the_papers_reading():
    sel = make_selector("kim_paper")
    assert sel.name == "kim_paper" and sel.mode == "clamped" and sel.robust_options == {"sigma": "pairs"}
    fast = make_selector("kim")
    assert fast.mode == "change" and fast.robust_options == {}


# ----------------------------------------------------------------------------- beyond the paper
def test_trusted_labels_are_weighted_as_zero_loss_samples():
    """An oracle's label with a large loss is updated as if its loss were 0: losses (0.1, 0.1, 5)
    with the third trusted give the alpha of losses (0.1, 0.1, 0) (sigma from those too); the hard
    rule keeps it; the mask is checked and survives a state round trip."""
    trusted = np.array([False, False, True])
    for sigma in ("mean_sq", "pairs"):
        w, ref = RobustWeights(3, sigma=sigma, trusted=trusted), RobustWeights(3, sigma=sigma)
        w.update(np.array([0.1, 0.1, 5.0]))
        ref.update(np.array([0.1, 0.1, 0.0]))
        assert np.allclose(w.alpha, ref.alpha) and w.last_sigma == pytest.approx(ref.last_sigma)
        assert w.alpha[2] == w.alpha.max()
    plain = RobustWeights(3, sigma="pairs")
    plain.update(np.array([0.1, 0.1, 5.0]))
    assert plain.alpha[2] == plain.alpha.min()
    hard = RobustWeights(6, rule="hard", trusted=np.array([False] * 3 + [True, False, False]))
    for _ in range(3):
        hard.update(np.array([0.1, 0.2, 0.15, 3.0, 3.2, 0.1]))
    assert np.allclose(hard.alpha, [0.2, 0.2, 0.2, 0.2, 0, 0.2])
    again = RobustWeights(3, trusted=trusted).load_state_dict(w.state_dict())
    assert np.array_equal(again.trusted, trusted) and "trusted" not in RobustWeights(3).state_dict()
    with pytest.raises(ValueError, match="trusted must be a boolean mask of shape"):
        RobustWeights(3, trusted=[1, 0, 1])
    with pytest.raises(TypeError, match="trust_queries"):
        make_selector("kim_paper", trust_queries="yes")


def test_a_selector_that_trusts_queries_hands_the_simulator_its_queried_samples():
    """Each round's robust weights get the samples queried so far as ``trusted`` (none before the
    first queries); without ``trust_queries`` none."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    x = (np.eye(3)[y] * 4 + rng.normal(size=(90, 3))).astype(np.float32)
    seen = []

    def train(features, labels, k, *, sample_weights=None, recorder=None, **kw):
        seen.append(None if sample_weights.trusted is None else int(sample_weights.trusted.sum()))
        probs = np.full((len(labels), k), 1.0 / k)
        probs[np.arange(len(labels)), labels] += 0.1
        return None, probs / probs.sum(1, keepdims=True), np.zeros(len(labels))

    g = KNNGraph(x, k=5)
    simulate(x, y, y, make_selector("kim_paper", trust_queries=True), budget=20, batch_size=10, graph=g,
             trainer=train, epochs=1)
    assert seen == [0, 10, 20]
    seen.clear()
    simulate(x, y, y, "kim_paper", budget=20, batch_size=10, graph=g, trainer=train, epochs=1)
    assert seen == [None, None, None]


def test_benchmark_variants_of_kim():
    """``kim_paper_round0`` / ``kim_paper_trusted`` are the paper's Kim with one option changed; ``+fc`` keeps
    its picks and robust weights and trains it as ``sei_fc`` is (forward-corrected loss, T by regression)."""
    from benchmarks.active import bench_selector

    assert bench_selector("kim_paper_round0").robust_training == "round0"
    assert bench_selector("kim_paper_trusted").trust_queries is True
    fc = bench_selector("kim_paper+fc")
    assert fc.name == "kim_paper+fc" and fc.uses_transition_matrix and fc.transition_estimate == "regression"
    assert fc.base.mode == "clamped" and fc.robust_training is True and fc.robust_options == {"sigma": "pairs"}
