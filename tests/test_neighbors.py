"""Neighbour-label scores: kNN search, the label margin, and their use in the cleanlab API."""

import numpy as np
import pytest

import sei
from sei_cleanlab import find_label_issues, get_label_quality_scores


def _clusters(n_per=40, k=3, d=8, seed=0, flip=0.15):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 6
    y = np.repeat(np.arange(k), n_per)
    x = centres[y] + rng.normal(size=(len(y), d))
    noisy, bad = sei.symmetric_noise(y, flip, num_classes=k, seed=seed)
    return x.astype(np.float32), y, noisy, bad


def _history_with_fitted_noise(labels, k, epochs=6):
    """Dynamics of a model that memorises every label (mislabeled ones look clean): only the
    neighbours can tell them apart."""
    h = np.full((epochs, len(labels), k), 0.1 / (k - 1))
    h[:, np.arange(len(labels)), labels] = 0.9
    return h


def test_knn_indices_match_brute_force_cosine_and_exclude_self():
    x, *_ = _clusters()
    nb = sei.knn_indices(x, 5)
    z = x - x.mean(0)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    brute = np.argsort(-sim, axis=1)[:, :5]
    assert nb.shape == (len(x), 5)
    assert not (nb == np.arange(len(x))[:, None]).any()
    np.testing.assert_array_equal(np.sort(nb, 1), np.sort(brute, 1))


def test_knn_indices_handle_duplicate_rows():
    x = np.repeat(np.eye(4, dtype=np.float32), 3, axis=0)  # every row has two exact copies
    nb = sei.knn_indices(x, 2)
    assert not (nb == np.arange(len(x))[:, None]).any()
    assert (x[nb[:, 0]] == x).all() and (x[nb[:, 1]] == x).all()


def test_label_margin_by_hand():
    labels = np.array([0, 0, 1, 1])
    neighbors = np.array([[1, 2], [0, 2], [3, 0], [2, 1]])
    # shares: s0 {0: .5, 1: .5} -> 0; s1 same -> 0; s2 {1: .5, 0: .5} -> 0; s3 {1: .5, 0: .5} -> 0
    np.testing.assert_allclose(sei.knn_label_margin(labels, neighbors=neighbors), 0.0)
    labels = np.array([0, 0, 0, 1])
    neighbors = np.array([[1, 2], [0, 2], [0, 1], [0, 1]])
    np.testing.assert_allclose(sei.knn_label_margin(labels, neighbors=neighbors), [1, 1, 1, -1])


def test_label_frequencies_by_hand_with_and_without_smoothing():
    labels = np.array([0, 0, 1, 2])
    neighbors = np.array([[1, 2], [0, 3], [0, 1], [2, 2]])
    np.testing.assert_allclose(sei.neighbors.knn_label_frequencies(labels, neighbors, 3),
                               [[.5, .5, 0], [.5, 0, .5], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_allclose(sei.neighbors.knn_label_frequencies(labels, neighbors, 3, smoothing=1.0),
                               [[.4, .4, .2], [.4, .2, .4], [.6, .2, .2], [.2, .6, .2]])  # (count + 1) / (2 + 3)
    with pytest.raises(ValueError, match="smoothing"):
        sei.neighbors.knn_label_frequencies(labels, neighbors, 3, smoothing=-1)


def test_poe_knn_says_what_it_fuses_with():
    labels = np.array([0, 0, 1, 1])
    neighbors = np.array([[1, 2], [0, 2], [3, 0], [2, 1]])
    with pytest.raises(ValueError, match=r"fusion_input\('poe_knn'\)"):
        sei.feature_score("poe_knn", None, labels, neighbors=neighbors)
    with pytest.raises(ValueError, match=r"\(N, K\) per-class mean_logp"):
        sei.feature_score("poe_knn", np.zeros(4), labels, neighbors=neighbors)
    with pytest.raises(ValueError, match="class columns"):
        sei.feature_score("poe_knn", np.zeros((4, 2)), labels, neighbors=neighbors, num_classes=3)
    # equal log-probabilities: the neighbours alone decide, add-one smoothed: (2 + 1) / 4 vs (0 + 1) / 4
    agreeing = np.array([[1, 1], [0, 0], [3, 3], [0, 0]])  # sample 3 (label 1) sits among label 0
    np.testing.assert_allclose(sei.feature_score("poe_knn", np.zeros((4, 2)), labels, neighbors=agreeing),
                               np.log(3.0) * np.array([1, 1, 1, -1]))
    # and log-probabilities shift the margin one for one
    logp = np.log(np.array([[.5, .5], [.5, .5], [.5, .5], [.1, .9]]))
    np.testing.assert_allclose(sei.feature_score("poe_knn", logp, labels, neighbors=agreeing)[3],
                               np.log(.9 / .1) - np.log(3.0))


def test_neighbours_find_errors_the_dynamics_cannot():
    from sklearn.metrics import roc_auc_score

    x, _, noisy, bad = _clusters()
    h = _history_with_fitted_noise(noisy, 3)
    dyn = get_label_quality_scores(noisy, h, method="aum_prob")
    assert np.ptp(dyn) == 0  # memorised: the dynamics see nothing
    fused = get_label_quality_scores(noisy, h, method="aum_prob_knn", features=x, knn_k=10)
    assert ((fused >= 0) & (fused <= 1)).all()
    assert roc_auc_score(bad, -fused) > 0.95
    mask = find_label_issues(noisy, h, score="knn_margin", features=x, knn_k=10)
    assert bad[mask].mean() > 0.9 and mask[bad].mean() > 0.8
    ranked = find_label_issues(noisy, h, score="knn_margin", features=x, knn_k=10,
                               return_indices_ranked_by="aum_prob_knn")
    assert set(ranked) == set(np.flatnonzero(mask))


def test_feature_scores_explain_what_is_missing():
    x, _, noisy, bad = _clusters()
    h = _history_with_fitted_noise(noisy, 3)
    with pytest.raises(ValueError, match="pass features"):
        find_label_issues(noisy, h, score="aum_prob_knn")
    with pytest.raises(ValueError, match="one row per sample"):
        find_label_issues(noisy, h, score="aum_prob_knn", features=x[:-1])
    bad_x = x.copy()
    bad_x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        find_label_issues(noisy, h, score="aum_prob_knn", features=bad_x)


def test_datalab_issue_type_takes_features():
    from cleanlab import Datalab

    x, _, noisy, bad = _clusters()
    h = _history_with_fitted_noise(noisy, 3)
    lab = Datalab(data={"y": noisy}, label_name="y", verbosity=0)
    lab.find_issues(issue_types={"sei": {"pred_probs_history": h, "features": x, "score": "knn_margin",
                                         "knn_k": 10}})
    flagged = lab.get_issues("sei")["is_sei_issue"].to_numpy()
    assert bad[flagged].mean() > 0.9


def test_auto_backend_falls_back_to_exact_search_with_a_warning(monkeypatch):
    import importlib.util

    from sei import neighbors

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("hnswlib", "faiss") else real(name, *a))
    x, *_ = _clusters()
    with pytest.warns(RuntimeWarning, match="hnswlib"):
        _, idx, backend = neighbors.search(x, 3, exact_max=10)
    assert backend == "sklearn" and idx.shape == (len(x), 4)


@pytest.mark.parametrize("backend", ["hnswlib", "faiss"])
def test_approximate_backends_agree_with_exact_search(backend):
    pytest.importorskip(backend)
    x, *_ = _clusters()
    nb = sei.knn_indices(x, 5, backend=backend)
    exact = sei.knn_indices(x, 5)
    assert (np.sort(nb, 1) == np.sort(exact, 1)).mean() > 0.95


def test_auto_backend_prefers_faiss_then_hnswlib_beyond_exact_max(monkeypatch):
    import importlib.util

    from sei import neighbors

    x, *_ = _clusters()
    if importlib.util.find_spec("faiss") is not None:
        assert neighbors.search(x, 3, exact_max=10)[2] == "faiss"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else real(name, *a))
    if real("hnswlib") is not None:
        assert neighbors.search(x, 3, exact_max=10)[2] == "hnswlib"


def test_faiss_ivf_gives_identical_neighbours_on_duplicated_rows_run_to_run():
    """The IVF backend at a size where it has many lists and scans a few of them: two calls (and
    a call on 1 thread vs 2) give the same neighbours, duplicated rows included."""
    pytest.importorskip("faiss")
    from sei import neighbors

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 16)) * 3
    x = (centres[rng.integers(0, 40, 6000)] + rng.normal(size=(6000, 16))).astype(np.float32)
    x[rng.choice(6000, 600, replace=False)] = x[rng.choice(6000, 600, replace=False)]  # exact ties
    x[:50] = x[50]  # a group of 51 copies: more than k + 1
    runs = [neighbors.knn_indices(x, 20, backend="faiss", num_threads=t) for t in (2, 2, 1)]
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])
    # the copies of row 50 take the lowest-index copies as neighbours
    np.testing.assert_array_equal(runs[0][50], np.arange(20))
    np.testing.assert_array_equal(runs[0][0], np.arange(1, 21))
    exact = neighbors.knn_indices(x, 20, backend="sklearn")
    assert (np.sort(runs[0], 1) == np.sort(exact, 1)).mean() > 0.9


def test_faiss_queries_in_list_order_answer_as_in_row_order(monkeypatch):
    """The IVF search asks its queries list by list (for the cache); each query is answered on its
    own, so the neighbours equal those of queries asked in row order, in blocks or not."""
    pytest.importorskip("faiss")
    from sei import neighbors

    rng = np.random.default_rng(11)
    x = (rng.normal(size=(50, 12))[rng.integers(0, 50, 5000)] * 2 + rng.normal(size=(5000, 12))).astype(np.float32)
    listed = neighbors.knn_indices(x, 15, backend="faiss", num_threads=1)
    calls = []
    real = neighbors._list_order

    def row_order(index, nlist):
        order = real(index, nlist)
        calls.append(order)
        return np.arange(order.size)

    monkeypatch.setattr(neighbors, "_list_order", row_order)
    monkeypatch.setattr(neighbors, "_SEARCH_ROWS", 700)
    in_rows = neighbors.knn_indices(x, 15, backend="faiss", num_threads=1)
    np.testing.assert_array_equal(in_rows, listed)
    order = calls[0]
    np.testing.assert_array_equal(np.sort(order), np.arange(5000))  # every row once
    assert not np.array_equal(order, np.arange(5000))  # and not in row order


def test_background_search_gives_knn_indices_and_can_be_cancelled(monkeypatch):
    """NeighbourSearch (what sei.train starts while the epochs run) gives knn_indices's
    neighbours, blocks of rows and a thread count raised half-way included; cancel() stops it."""
    pytest.importorskip("faiss")
    import threading

    from sei import neighbors

    rng = np.random.default_rng(5)
    x = (rng.normal(size=(30, 8))[rng.integers(0, 30, 3000)] * 3 + rng.normal(size=(3000, 8))).astype(np.float32)
    expected = neighbors.knn_indices(x, 10, backend="faiss", num_threads=1)
    monkeypatch.setattr(neighbors, "_SEARCH_ROWS", 256)  # 12 blocks; result() asks for 2 threads
    search = neighbors.NeighbourSearch(x, 10, backend="faiss", num_threads=1, result_threads=2)
    np.testing.assert_array_equal(search.result(), expected)
    assert search.done()
    # cancelled before its first block: the k-means runs, no row is searched
    started, release = threading.Event(), threading.Event()
    real_stable = neighbors._stable_order

    def slow_order(*a, **kw):
        started.set()
        release.wait(10)
        return real_stable(*a, **kw)

    monkeypatch.setattr(neighbors, "_stable_order", slow_order)
    search = neighbors.NeighbourSearch(x, 10, backend="faiss")
    assert started.wait(30)
    search.cancel()
    release.set()
    with pytest.raises(neighbors.SearchCancelled, match="cancelled"):
        search.result()


def test_label_margin_rejects_labels_outside_num_classes():
    with pytest.raises(ValueError, match="labels must lie"):
        sei.knn_label_margin(np.array([0, 3]), neighbors=np.array([[1], [0]]), num_classes=2)


def test_precomputed_neighbors_give_the_same_scores_as_features():
    x, _, noisy, _ = _clusters()
    h = _history_with_fitted_noise(noisy, 3)
    nb = sei.knn_indices(x, 10)
    for score in ("knn_margin", "aum_prob_knn"):
        np.testing.assert_array_equal(
            get_label_quality_scores(noisy, h, method=score, neighbors=nb),
            get_label_quality_scores(noisy, h, method=score, features=x, knn_k=10))
        np.testing.assert_array_equal(find_label_issues(noisy, h, score=score, neighbors=nb),
                                      find_label_issues(noisy, h, score=score, features=x, knn_k=10))


def test_shares_margin_without_the_table_equals_the_table_margin():
    from sei.neighbors import NeighbourShares
    from sei.scores import label_margin

    rng = np.random.default_rng(0)
    for c, k, smoothing in ((3, 5, 0.0), (10, 20, 1.0), (50, 7, 0.0), (2, 1, 1.0)):
        lab = rng.integers(0, c, (500, k))
        lab[:50] = lab[:50, :1]  # rows whose neighbours all share one label
        y = rng.integers(0, c, 500)
        y[:25] = lab[:25, 0]
        shares = NeighbourShares(lab, c, smoothing)
        dense = shares.rows(slice(None))
        np.testing.assert_allclose(dense.sum(1), 1.0)
        np.testing.assert_allclose(shares.margin(y), label_margin(dense, y), atol=1e-12)


def test_neighbour_scores_allocate_nothing_per_class():
    import tracemalloc

    n, c = 20_000, 1000
    rng = np.random.default_rng(1)
    labels = rng.integers(0, c, n)
    neighbors = rng.integers(0, n, (n, 20))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        sei.neighbors.knn_label_margin(labels, neighbors=neighbors, num_classes=c)
        sei.neighbors.feature_score("aum_prob_knn", np.zeros(n), labels, neighbors=neighbors, num_classes=c)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 0.1 * n * c * 8, peak  # the (N, C) float64 table would be 160 MB
