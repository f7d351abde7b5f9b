"""The transition estimates for forward-corrected training and the uniform-share selector (sei_fc)."""

import numpy as np
import pytest

from sei.active import (
    SelectionContext, UniformShareSelector, design_transition_matrix, estimate_transition_matrix, make_selector,
    regression_transition_matrix, simulate,
)


def _biased_queries(n=20_000, k=5, rate=0.6, rounds=4, batch=1_000, share=0.1, precision=0.97, seed=0):
    """Symmetric noise; each round queries mostly mislabeled samples (a high-precision selector)
    plus a uniform draw of ``share`` of the batch from the rest. Returns what the estimators need
    and the true T among the samples left unqueried."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, k, n)
    flip = rng.random(n) < rate
    noisy = np.where(flip, (clean + rng.integers(1, k, n)) % k, clean)
    qr, draws = np.full(n, -1), []
    for r in range(rounds):
        free = qr < 0
        m = int(share * batch)
        n_wrong = int(round(precision * (batch - m)))
        wrong = rng.choice(np.flatnonzero(free & (noisy != clean)), n_wrong, replace=False)
        right = rng.choice(np.flatnonzero(free & (noisy == clean)), batch - m - n_wrong, replace=False)
        top = np.concatenate([wrong, right])
        qr[top] = r
        rest = np.flatnonzero(qr < 0)
        d = rng.choice(rest, m, replace=False)
        qr[d] = r
        draws.append((r, d, len(rest)))
    left = qr < 0
    true = np.zeros((k, k))
    np.add.at(true, (clean[left], noisy[left]), 1.0)
    return noisy, clean, qr, draws, k, true / true.sum(1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_design_estimate_is_closer_to_the_true_transition_than_counting_queries(seed):
    noisy, clean, qr, draws, k, true = _biased_queries(seed=seed)
    naive = estimate_transition_matrix(noisy, clean, qr >= 0, k)
    design = design_transition_matrix(noisy, clean, qr, draws, k)
    np.testing.assert_allclose(design.sum(1), 1.0)
    assert (design >= 0).all()
    # counting high-precision queries says ~97 % noise; the samples left have ~55 %
    assert np.diag(naive).mean() < 0.1
    assert abs(np.diag(design).mean() - np.diag(true).mean()) < 0.05
    assert np.abs(design - true).max() < 0.5 * np.abs(naive - true).max()


def test_design_estimate_without_draws_is_the_counted_one():
    noisy, clean, qr, _, k, _ = _biased_queries(rounds=1)
    np.testing.assert_allclose(design_transition_matrix(noisy, clean, qr, [], k),
                               estimate_transition_matrix(noisy, clean, qr >= 0, k))


def test_design_estimate_on_clean_labels_is_near_identity():
    noisy, clean, qr, draws, k, _ = _biased_queries(rate=0.0, precision=0.0)
    t = design_transition_matrix(noisy, clean, qr, draws, k)
    assert np.diag(t).min() > 0.99


def test_uniform_share_selector_draws_its_share_outside_the_top_picks():
    rng = np.random.default_rng(0)
    n = 500
    p = rng.dirichlet(np.ones(3), n)
    exclude = np.zeros(n, bool)
    exclude[:50] = True
    sel = UniformShareSelector(make_selector("entropy"), share=0.2)
    ctx = SelectionContext(np.zeros(n, int), p, exclude=exclude, seed=3)
    picks = sel.select(ctx, 100)
    drawn, size = sel.last_draw
    assert len(picks) == 100 == len(np.unique(picks)) and not exclude[picks].any()
    assert len(drawn) == 20 and size == n - 50 - 80
    top = make_selector("entropy").select(ctx, 80)
    assert np.array_equal(picks[:80], top) and not np.isin(drawn, top).any()
    with pytest.raises(ValueError, match="share"):
        UniformShareSelector(make_selector("entropy"), share=1.0)


def _queries_by_features(n=8_000, k=4, rate=0.5, queries=1_500, share=0.1, seed=0):
    """Clean classes as Gaussian blobs, symmetric noise, and queries decided from the features and
    the given label only (as a selector does): the samples whose given label's centre is farthest
    from them, plus a uniform ``share``. Returns the features, labels, queried mask and true T left."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, 6)) * 2.5
    clean = rng.integers(0, k, n)
    x = centres[clean] + rng.normal(size=(n, 6))
    flip = rng.random(n) < rate
    noisy = np.where(flip, (clean + rng.integers(1, k, n)) % k, clean)
    d = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    doubt = d[np.arange(n), noisy] - d.min(1)
    m = int(share * queries)
    top = np.argsort(-doubt)[: queries - m]
    rest = np.setdiff1d(np.arange(n), top)
    q = np.zeros(n, bool)
    q[top] = True
    q[rng.choice(rest, m, replace=False)] = True
    true = np.zeros((k, k))
    np.add.at(true, (clean[~q], noisy[~q]), 1.0)
    return x, noisy, clean, q, k, true / true.sum(1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_estimate_is_closer_to_the_true_transition_than_counting_queries(seed):
    x, noisy, clean, q, k, true = _queries_by_features(seed=seed)
    naive = estimate_transition_matrix(noisy, clean, q, k)
    reg = regression_transition_matrix(x, noisy, clean, q, k)
    np.testing.assert_allclose(reg.sum(1), 1.0)
    assert (reg >= 0).all()
    assert (noisy[q] != clean[q]).mean() > 0.85 > 0.55 > (noisy[~q] != clean[~q]).mean()  # biased queries
    assert np.diag(naive).mean() < 0.15
    assert abs(np.diag(reg).mean() - np.diag(true).mean()) < 0.05
    assert np.abs(reg - true).max() < 0.25 * np.abs(naive - true).max()


def test_regression_estimate_falls_back_to_counting_with_one_clean_class_queried():
    x, noisy, clean, q, k, _ = _queries_by_features(n=400, queries=50)
    q1 = q & (clean == clean[np.flatnonzero(q)[0]])
    np.testing.assert_allclose(regression_transition_matrix(x, noisy, clean, q1, k),
                               estimate_transition_matrix(noisy, clean, q1, k))


def test_transition_estimate_names_are_checked():
    from sei.active.transition import transition_estimate

    with pytest.raises(ValueError, match="counted, design, regression"):
        make_selector("dalc", transition_estimate="oracle")
    with pytest.raises(ValueError, match="transition_estimate"):
        make_selector("sei_fc", transition_estimate="counts")
    with pytest.raises(ValueError, match="transition_estimate"):
        transition_estimate("x", features=None, noisy_labels=[0], clean_labels=[0], query_round=[0], draws=[],
                            num_classes=2)
    assert make_selector("dalc", transition_estimate="regression").transition_estimate == "regression"
    assert make_selector("sei_fc", transition_estimate="design").transition_estimate == "design"


@pytest.mark.parametrize("estimate", ["regression", "design"])
def test_sei_fc_runs_in_the_simulator(estimate):
    from sei import symmetric_noise
    from sei.active import KNNGraph

    rng = np.random.default_rng(1)
    c = rng.normal(size=(4, 8)) * 2
    y = rng.integers(0, 4, 800)
    x = c[y] + rng.normal(size=(800, 8))
    noisy, mis = symmetric_noise(y, 0.6, num_classes=4, seed=0)
    sel = make_selector("sei_fc", **({} if estimate == "regression" else {"transition_estimate": estimate}))
    assert sel.uses_transition_matrix and sel.transition_estimate == estimate and sel.robust_training == "round0"
    res = simulate(x, noisy, y, sel, budget=300, batch_size=100, test_features=x, test_labels=y,
                   graph=KNNGraph(x, k=10), epochs=3)
    assert list(res["labels_queried"]) == [0, 100, 200, 300]
    assert len(np.unique(res["picks"])) == 300
    err = res["transition_error"]  # round 0 trains without T; then a row-stochastic T
    assert np.isnan(err[0]) and np.isfinite(err[1:]).all() and (err[1:] < 2.0).all()
    assert res["batch_precision"].mean() > mis.mean()  # the SEI-alpha part finds mislabeled samples


def test_train_linear_applies_the_transition_only_where_the_mask_says():
    from sei.active import train_linear

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = np.eye(3)[y] * 2 + rng.normal(size=(300, 3))
    t = np.full((3, 3), 0.25) + np.eye(3) * 0.25
    plain = train_linear(x, y, 3, epochs=3)[1]
    masked_off = train_linear(x, y, 3, epochs=3, transition_matrix=t, correct_mask=np.zeros(300, bool))[1]
    corrected = train_linear(x, y, 3, epochs=3, transition_matrix=t)[1]
    np.testing.assert_allclose(masked_off, plain, atol=1e-6)  # the engine's loss: T nowhere = plain CE
    assert np.abs(corrected - plain).max() > 1e-3


def test_sei_train_applies_the_transition_only_where_transition_mask_says():
    import sei

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    x = (np.eye(3)[y] * 2 + rng.normal(size=(120, 3))).astype(np.float32)
    t = np.full((3, 3), 0.25) + np.eye(3) * 0.25
    kw = dict(mode="embeddings", class_names=["a", "b", "c"], epochs=3, progress=False, aux_class=False)
    plain = sei.train(x, y, **kw).pred_probs
    masked_off = sei.train(x, y, transition_matrix=t, transition_mask=np.zeros(120, bool), **kw).pred_probs
    corrected = sei.train(x, y, transition_matrix=t, transition_mask=np.ones(120, bool), **kw).pred_probs
    np.testing.assert_allclose(masked_off, plain, atol=1e-6)
    assert np.abs(corrected - plain).max() > 1e-3
    with pytest.raises(ValueError, match="transition_mask must be an \\(N,\\) boolean mask"):
        sei.train(x, y, transition_matrix=t, transition_mask=np.ones(7, bool), **kw)
    with pytest.raises(ValueError, match="pass transition_matrix too"):
        sei.train(x, y, transition_mask=np.ones(120, bool), **kw)


def test_select_for_relabeling_with_sei_fc_draws_the_uniform_share():
    from sei.active import KNNGraph
    from sei_cleanlab import select_for_relabeling

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = np.eye(3)[y] * 3 + rng.normal(size=(300, 3))
    hist = rng.dirichlet(np.ones(3), size=(4, 300))
    done = np.zeros(300, bool)
    done[:20] = True
    picks = select_for_relabeling(y, hist, budget=50, method="sei_fc", graph=KNNGraph(x, k=5), exclude=done)
    assert len(picks) == 50 == len(np.unique(picks)) and not done[picks].any()


def test_regression_estimate_checks_its_inputs():
    x, noisy, clean, q, k, _ = _queries_by_features(n=300, queries=60)
    with pytest.raises(ValueError, match="features has 299 rows"):
        regression_transition_matrix(x[:-1], noisy, clean, q, k)
    with pytest.raises(ValueError, match="clean_labels must have one entry per sample"):
        regression_transition_matrix(x, noisy, clean[q], q, k)
    with pytest.raises(ValueError, match="queried must be an"):
        regression_transition_matrix(x, noisy, clean, q[:10], k)
    with pytest.raises(ValueError, match="noisy_labels must lie in 0..2"):
        regression_transition_matrix(x, noisy, clean, q, 3)
    unknown = np.where(q, clean, -1)  # labels not yet known may hold anything
    np.testing.assert_allclose(regression_transition_matrix(x, noisy, unknown, q, k),
                               regression_transition_matrix(x, noisy, clean, q, k))


def test_round0_robust_training_weights_only_the_run_before_any_query(monkeypatch):
    import sei.active.simulator as simulator

    seen = []
    real = simulator.train_linear

    def spy(*args, sample_weights=None, transition_matrix=None, **kw):
        seen.append((sample_weights is not None, transition_matrix is not None))
        return real(*args, sample_weights=sample_weights, transition_matrix=transition_matrix, **kw)

    monkeypatch.setattr(simulator, "train_linear", spy)
    from sei.active import KNNGraph

    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    x = np.eye(3)[y] * 2 + rng.normal(size=(300, 3))
    noisy = np.where(rng.random(300) < 0.4, rng.integers(0, 3, 300), y)
    simulate(x, noisy, y, make_selector("sei_fc"), budget=60, batch_size=30, graph=KNNGraph(x, k=5), epochs=2)
    assert seen == [(True, False), (False, True), (False, True)]  # never both together
    with pytest.raises(ValueError, match="robust_training must be True, False or 'round0'"):
        make_selector("sei_fc", robust_training="always")


def test_sei_train_trainer_passes_the_mask_of_the_samples_not_yet_queried(monkeypatch):
    import sei
    from sei.active import KNNGraph, sei_train_trainer

    calls = []
    real = sei.train

    def spy(*args, **kw):
        calls.append({k: kw.get(k) for k in ("sample_weights", "transition_matrix", "transition_mask")})
        return real(*args, **kw)

    monkeypatch.setattr(sei, "train", spy)
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    x = (np.eye(3)[y] * 2 + rng.normal(size=(200, 3))).astype(np.float32)
    noisy = np.where(rng.random(200) < 0.4, rng.integers(0, 3, 200), y)
    res = simulate(x, noisy, y, make_selector("sei_fc"), budget=40, batch_size=20, graph=KNNGraph(x, k=5), epochs=2,
                   trainer=sei_train_trainer(head="linear", lr=0.05))
    assert len(calls) == 3 and np.isnan(res["test_accuracy"]).all()  # sei.train predicts no held-out data
    assert calls[0]["sample_weights"] is not None and calls[0]["transition_matrix"] is None  # round 0: robust
    for c, queried in zip(calls[1:], (20, 40)):
        assert c["sample_weights"] is None and c["transition_matrix"] is not None
        assert (~c["transition_mask"]).sum() == queried
