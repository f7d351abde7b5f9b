"""Neighbour-label evidence in feature space, and its fusion with a training-dynamics score.

A label that disagrees with the labels of the sample's nearest neighbours in a good
feature space is suspect whatever the classifier did (SimiFeat-like). On CIFAR-10N
(``benchmarks/results/detection.md``) the neighbour label margin alone ranks mislabeled
images at AUROC 0.87-0.89, and averaged with ``aum_prob`` it ranks better than
``aum_prob`` alone in 5 of 6 cells and ties in the sixth (most in the memorising
regime: +2.5 to +3.7 AUROC points), at a small F1 cost (<= 0.6 points) with frozen
features::

    q_i(c)          = share of the k nearest neighbours of i (cosine, self excluded) labelled c
    knn_margin_i    = q_i(y_i) - max_{c != y_i} q_i(c)                in [-1, 1]
    aum_prob_knn_i  = (aum_prob_i + knn_margin_i) / 2                 in [-1, 1], zero = cutoff
    poe_knn_i       = r_i(y_i) - max_{c != y_i} r_i(c),   r_i = m_i + log((k q_i + 1) / (k + C))
                      (product of experts: m_i = mean over epochs of log p_t, from the recorder)

Neighbours come from scikit-learn (exact) up to ``exact_max`` samples and from faiss (an
inverted-file index, IVF-Flat, ``faiss-cpu``) beyond, or hnswlib (``pip install
sei-labels[active]``) where faiss is missing; without either, scikit-learn's exact search is used
with a warning (O(N^2) time, chunked memory). ``benchmarks/results/knn_scale.md`` compares them.

Every backend gives the same neighbours on every run: the IVF index is trained by a seeded
k-means on a seeded sample and each row scans its nearest lists exactly, all deterministic for a
fixed ``num_threads``; the hnswlib graph is built on one thread (a multithreaded build makes the
graph, and so the neighbours, depend on thread timing); and the candidates of each row are ranked
by their exact squared distance, ties broken by the lower index (:func:`_stable_order`), so that
duplicated rows never swap.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from . import scores as _scores
from ._logp_top import LogProbMeans
from .validation import check_features, check_k, check_labels, check_neighbors

__all__ = ["FEATURE_SCORES", "NeighbourSearch", "NeighbourShares", "SearchCancelled", "check_features", "check_k",
           "check_neighbors", "feature_score", "knn_indices", "knn_label_frequencies", "knn_label_margin"]



def __getattr__(name):
    if name == "FEATURE_SCORES":  # the registry's neighbour scores
        return _scores.names(needs_features=True)
    raise AttributeError(f"module 'sei.neighbors' has no attribute {name!r}")


#: Neighbours used by the neighbour-label scores (the benchmark's value).
DEFAULT_KNN_K = 20


# Values (rows x candidates x D) of one step of the exact re-ranking (16 MiB in float32).
_RERANK_VALUES = 1 << 22


def _knn_sklearn(x, m):
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=m).fit(x).kneighbors(x, return_distance=False)


def _knn_hnswlib(x, m, seed, num_threads):
    import hnswlib

    n, d = x.shape
    index = hnswlib.Index(space="l2", dim=d)
    index.init_index(max_elements=n, ef_construction=100, M=16, random_seed=seed)
    index.set_num_threads(1)  # a deterministic graph; queries do not change it
    index.add_items(x, np.arange(n))
    index.set_num_threads(num_threads)
    index.set_ef(max(m, 50))
    idx, _ = index.knn_query(x, k=m)
    return idx


#: IVF search (backend "faiss"): about ``_IVF_LIST_SIZE``-sample lists when N is small, 4 sqrt(N)
#: lists beyond, and ``_IVF_NPROBE`` lists scanned per query (recall in benchmarks/results/knn_scale.md).
_IVF_LISTS_PER_SQRT_N = 4
_IVF_LIST_SIZE = 64
_IVF_NPROBE = 16
_IVF_TRAIN_PER_LIST = 40
_IVF_KMEANS_ITER = 10


# Query rows per faiss search call: each row is answered on its own, so the blocks give the
# rows of one call; between blocks a background search (NeighbourSearch) can be cancelled.
_SEARCH_ROWS = 1 << 16


class SearchCancelled(Exception):
    """A :class:`NeighbourSearch` was cancelled before it finished."""


class _Control:
    """A background search's controls: ``cancel`` (stop at the next block) and ``hurry``
    (someone waits for the result: search the remaining blocks on ``hurry_threads``)."""

    def __init__(self, hurry_threads):
        self.cancel, self.hurry, self.hurry_threads = threading.Event(), threading.Event(), hurry_threads


def _check_cancel(control):
    if control is not None and control.cancel.is_set():
        raise SearchCancelled("the neighbour search was cancelled")


def _knn_faiss(x, m, seed, num_threads, nprobe=None, timings=None, control=None, each_block=None):
    """Candidates from a faiss inverted-file index (IVF-Flat): seeded k-means on a seeded
    sample, then each row scans its ``nprobe`` nearest lists exactly. No step depends on
    thread timing (k-means and the list assignment are BLAS products, each query is answered
    on its own), so, unlike a multithreaded graph build, it may use every core: two runs gave
    identical neighbours at 1e6 rows, and 1 thread the same as 2 in the tests (a different BLAS
    thread count could in principle move an exact near-tie of the assignment; keep it fixed).
    Returns the (N, m) candidates, or hands each block of them to ``each_block(rows, block)``
    as it is searched (``block[i]``: the candidates of row ``rows[i]``; returning None)."""
    import faiss

    start = time.perf_counter()
    n, d = x.shape
    nlist = int(max(1, min(_IVF_LISTS_PER_SQRT_N * np.sqrt(n), n // _IVF_LIST_SIZE)))
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, int(num_threads)))
    try:
        quantizer = faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist)
        index.cp.seed = int(seed)
        index.cp.niter = _IVF_KMEANS_ITER
        index.cp.max_points_per_centroid = _IVF_TRAIN_PER_LIST
        train = min(n, _IVF_TRAIN_PER_LIST * nlist)
        rows = np.sort(np.random.default_rng(seed).choice(n, train, replace=False)) if train < n else slice(None)
        index.train(np.ascontiguousarray(x[rows]))
        _check_cancel(control)
        index.add(x)
        if timings is not None:
            timings["build_s"] = time.perf_counter() - start
        index.nprobe = int(min(nlist, nprobe or _IVF_NPROBE))
        # Queries in the order of the lists they fall in: neighbouring queries probe mostly the
        # same lists, which then stay in cache (in row order each query reads its lists from
        # memory). Each query is answered on its own, so only the order of the answers changes.
        order = _list_order(index, nlist)
        idx = np.empty((n, m), dtype=np.int64) if each_block is None else None
        for s in range(0, n, _SEARCH_ROWS):
            _check_cancel(control)
            if control is not None and control.hurry.is_set():  # each row is answered on its own
                faiss.omp_set_num_threads(max(1, int(control.hurry_threads)))
            rows = order[s:s + _SEARCH_ROWS]
            block = index.search(x[rows], m)[1]
            if each_block is None:
                idx[rows] = block
            else:
                each_block(rows, block)
        return idx
    finally:
        faiss.omp_set_num_threads(threads)


def _list_order(index, nlist) -> np.ndarray:
    """The rows of an IVF index, list by list (each list in the order its rows were added)."""
    import faiss

    lists = index.invlists
    parts = []
    for lst in range(nlist):
        size = lists.list_size(lst)
        if size:
            parts.append(faiss.rev_swig_ptr(lists.get_ids(lst), size).astype(np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _stable_order(x, idx, keep, control=None, rows=None):
    """``(dist, idx)`` of each row's ``keep`` nearest candidates among ``idx`` (N, m), ranked by
    the exact squared distance (computed as ``sum (x_i - x_j)^2``, so that equal
    rows tie exactly, at 0 from the row itself), ties by the lower index; -1 (missing) last.
    Row i of ``idx`` is row ``rows[i]`` of ``x`` (default: row i). Ranked in blocks of rows:
    nothing of size (N, m) besides ``idx`` is held."""
    idx = np.asarray(idx, dtype=np.int64)
    n, m = idx.shape
    dist = np.empty((n, keep))
    out = np.empty((n, keep), dtype=np.int64)
    step = max(1, _RERANK_VALUES // max(1, m * x.shape[1]))
    for s in range(0, n, step):
        _check_cancel(control)
        cand = idx[s:s + step]
        own = x[s:s + len(cand)] if rows is None else x[rows[s:s + len(cand)]]
        diff = own[:, None, :] - x[np.maximum(cand, 0)]
        d2 = np.einsum("nmd,nmd->nm", diff, diff)
        d2[cand < 0] = np.inf
        order = np.lexsort((cand, d2), axis=-1)[:, :keep]
        dist[s:s + step] = np.sqrt(np.take_along_axis(d2, order, 1), dtype=np.float64)
        out[s:s + step] = np.take_along_axis(cand, order, 1)
    return dist, out


def _approximate_backend():
    import importlib.util
    import warnings

    for name in ("faiss", "hnswlib"):
        if importlib.util.find_spec(name) is not None:
            return name
    warnings.warn("neither faiss nor hnswlib is installed: exact scikit-learn neighbour search, "
                  "O(N^2) time; `pip install faiss-cpu` for large N",
                  RuntimeWarning, stacklevel=3)
    return "sklearn"


def search(x, k, *, backend="auto", exact_max=20_000, seed=0, num_threads=2, control=None):
    """``(dist, idx, backend)``: each row's k + 1 nearest rows of ``x`` (itself included, or a
    duplicate of it of lower index), the same on every run: 2 (k + 1) candidates from the
    backend, re-ranked by exact distance with ties broken by index (:func:`_stable_order`)."""
    n = x.shape[0]
    m = min(n, 2 * (k + 1))
    if backend == "auto":
        backend = "sklearn" if n <= exact_max else _approximate_backend()
    if backend == "sklearn":
        idx = _knn_sklearn(x, m)
    elif backend == "hnswlib":
        idx = _knn_hnswlib(x, m, seed, num_threads)
    elif backend == "faiss":  # each block re-ranked as soon as it is searched
        dist, idx = np.empty((n, k + 1)), np.empty((n, k + 1), dtype=np.int64)

        def rank(rows, cand):
            dist[rows], idx[rows] = _stable_order(x, cand, k + 1, control, rows=rows)

        _knn_faiss(x, m, seed, num_threads, control=control, each_block=rank)
        return dist, idx, backend
    else:
        raise ValueError(f"backend must be 'auto', 'sklearn', 'hnswlib' or 'faiss', got {backend!r}")
    dist, idx = _stable_order(x, idx, k + 1, control)
    return dist, idx, backend


def knn_indices(features, k=DEFAULT_KNN_K, *, backend="auto", exact_max=20_000, seed=0, num_threads=2):
    """(N, k) indices of each sample's k nearest neighbours by cosine similarity, self excluded.

    Features are centred and L2-normalised first (Euclidean order on the unit sphere is the
    cosine order).
    """
    return _knn_indices(features, k, backend=backend, exact_max=exact_max, seed=seed, num_threads=num_threads)


def _knn_indices(features, k, *, control=None, **search_kw):
    x = check_features(features)
    n = x.shape[0]
    k = check_k(k, n)
    x = x - x.mean(0, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    _, idx, _ = search(np.ascontiguousarray(x), k, control=control, **search_kw)
    # Drop the self match wherever the search put it (duplicates may tie with it); rows
    # without one lose their farthest neighbour instead.
    rows = np.arange(n)[:, None]
    is_self = idx == rows
    drop = np.where(is_self.any(1), is_self.argmax(1), k)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    out = idx[keep].reshape(n, k)
    if (out < 0).any():
        raise RuntimeError("the approximate neighbour search returned too few neighbours; use backend='sklearn'")
    return out


class NeighbourSearch:
    """:func:`knn_indices` of ``features`` on a background thread, started at construction.

    The search needs only the features, so it can run while a classifier trains on them:
    training a small head on fixed features keeps about one core busy, and faiss's search
    releases the interpreter lock (at 1e6 x 64-d it is about as long as ten epochs of the
    head). It searches on ``num_threads`` threads until ``result()`` is called, then on
    ``result_threads`` (faiss answers each row on its own, so the neighbours are those
    :func:`knn_indices` gives with ``num_threads``). ``cancel()`` stops the search at its
    next block (a training run that fails does not leave it running); ``result()`` then
    raises :class:`SearchCancelled`. The search reads ``features`` as they are: do not
    change them before ``result()``.
    """

    def __init__(self, features, k=DEFAULT_KNN_K, *, num_threads=1, result_threads=2, **search_kw):
        from concurrent.futures import ThreadPoolExecutor

        self._control = _Control(result_threads)
        pool = ThreadPoolExecutor(1, thread_name_prefix="sei-neighbours")
        self._future = pool.submit(_knn_indices, features, k, control=self._control, num_threads=num_threads,
                                   **search_kw)
        pool.shutdown(wait=False)

    def result(self) -> np.ndarray:
        self._control.hurry.set()
        return self._future.result()

    def cancel(self) -> None:
        self._control.cancel.set()

    def done(self) -> bool:
        return self._future.done()


def knn_label_frequencies(labels, neighbors, num_classes=None, *, smoothing=0.0):
    """(N, C) share of each sample's neighbours carrying each label, with ``smoothing``
    pseudo-counts per class: ``(count_c + smoothing) / (k + smoothing * C)``.

    ``smoothing=0`` gives the shares q of ``"knn_margin"`` and ``"aum_prob_knn"``, ``smoothing=1``
    (Laplace) the strictly positive shares whose log ``"poe_knn"`` adds to the mean
    log-probabilities. The whole (N, C) table of :class:`NeighbourShares` (which the scores
    use without building it).
    """
    return _shares(labels, neighbors, num_classes, smoothing).rows(slice(None))


# Rows per step where a per-class (n, C) table is built from the neighbours' labels.
_SHARE_ROWS = 16384


class NeighbourShares:
    """Each sample's neighbour label shares ``q_c = (count_c + s) / (k + s C)``, kept as its
    neighbours' labels (N, k): O(N k) memory, never the (N, C) table at once.

    :meth:`margin` is ``q(y) - max_{c != y} q(c)`` in O(N k) (the scores that read the margin,
    ``"knn_margin"`` and ``"aum_prob_knn"``, cost nothing per class); :meth:`rows` builds the
    table for a slice of rows (``"poe_knn"`` adds its log to per-class log-probabilities).
    """

    def __init__(self, neighbour_labels: np.ndarray, num_classes: int, smoothing: float = 0.0):
        smoothing = float(smoothing)
        if not np.isfinite(smoothing) or smoothing < 0:
            raise ValueError(f"smoothing must be a finite pseudo-count >= 0, got {smoothing}.")
        self.neighbour_labels = np.asarray(neighbour_labels, dtype=np.int64)
        self.num_samples, self.k = self.neighbour_labels.shape
        self.num_classes, self.smoothing = int(num_classes), smoothing

    @property
    def denominator(self) -> float:
        return self.k + self.smoothing * self.num_classes

    def rows(self, sl) -> np.ndarray:
        """(n, C) float64 shares of the rows ``sl`` (a slice)."""
        lab = self.neighbour_labels[sl]
        n, c = lab.shape[0], self.num_classes
        counts = np.bincount((np.arange(n)[:, None] * c + lab).ravel(), minlength=n * c).reshape(n, c)
        return (counts + self.smoothing) / self.denominator

    def margin(self, labels: np.ndarray) -> np.ndarray:
        """(N,) ``q(y) - max_{c != y} q(c)`` at ``labels``: the label's count minus the most
        frequent other label's count (0 when none: with C >= 2 some class is absent), over the
        denominator; equal to :func:`sei.scores.label_margin` of the table."""
        out = np.empty(self.num_samples)
        for start in range(0, self.num_samples, _SHARE_ROWS):
            sl = slice(start, start + _SHARE_ROWS)
            lab, y = self.neighbour_labels[sl], labels[sl, None]
            own = (lab == y).sum(axis=1)
            others = np.sort(np.where(lab == y, -1, lab), axis=1)  # -1 (the label itself) first
            best = np.zeros(lab.shape[0], np.int64)
            run = np.zeros(lab.shape[0], np.int64)
            prev = np.full(lab.shape[0], -1)
            for j in range(self.k):  # the longest run of one other label in each sorted row
                col = others[:, j]
                run = np.where((col == prev) & (col >= 0), run + 1, 1)
                best = np.where(col >= 0, np.maximum(best, run), best)
                prev = col
            if self.num_classes == 1:
                out[sl] = np.inf  # no other class: as label_margin of a one-column table
            else:
                out[sl] = ((own + self.smoothing) - (best + self.smoothing)) / self.denominator
        return out


def _neighbor_graph(labels, features, neighbors, k, search_kw, who):
    if neighbors is not None:
        return neighbors
    if features is None:
        raise ValueError(f"{who} needs features (N, D) or neighbors (N, k)")
    check_features(features, check_labels(labels).shape[0])
    return knn_indices(features, k, **search_kw)


def knn_label_margin(labels, features=None, *, neighbors=None, num_classes=None, k=DEFAULT_KNN_K, **search_kw):
    """Neighbour label margin q(y) - max_{c != y} q(c) per sample, in [-1, 1]; lower = more suspect.

    Pass ``features`` (N, D) or precomputed ``neighbors`` (N, k) indices.
    """
    neighbors = _neighbor_graph(labels, features, neighbors, k, search_kw, "knn_label_margin")
    return _shares(labels, neighbors, num_classes, 0.0).margin(check_labels(labels))


def feature_score(name, dynamics_scores, labels, features=None, *, neighbors=None, num_classes=None,
                  k=DEFAULT_KNN_K, **search_kw):
    """A neighbour score of the registry (:func:`sei.scores.names` with ``needs_features=True``:
    ``"knn_margin"``, ``"aum_prob_knn"``, ``"poe_knn"``).

    ``dynamics_scores`` is what the neighbour score fuses with (``SCORES[name].fuses_with``,
    :meth:`sei.SEIRecorder.fusion_input`): the (N,) ``aum_prob`` scores for
    ``"aum_prob_knn"``, the (N, K) mean log-probabilities for ``"poe_knn"``; ignored for
    ``"knn_margin"``. NaN there stays NaN.
    """
    score = _scores.get(name, needs_features=True)
    neighbors = _neighbor_graph(labels, features, neighbors, k, search_kw, "feature_score")
    labels = check_labels(labels)
    if score.fuses_with is not None:
        dynamics_scores = _check_dynamics(name, score, dynamics_scores, labels.shape[0])
        if len(dynamics_scores.shape) == 2 and num_classes is None:
            num_classes = dynamics_scores.shape[1]
    shares = _shares(labels, neighbors, num_classes, score.knn_smoothing)
    if (score.fuses_with is not None and len(dynamics_scores.shape) == 2
            and dynamics_scores.shape[1] != shares.num_classes):
        raise ValueError(f"{name}: dynamics_scores has {dynamics_scores.shape[1]} class columns but "
                         f"num_classes is {shares.num_classes}; pass the recorder's num_classes.")
    return score.fuse(dynamics_scores, shares, labels)


def feature_issue_count(name, dynamics_scores, labels, *, neighbors, num_classes=None, rows=None) -> int:
    """Confident learning's count of label issues on neighbour score ``name``'s own class
    probabilities (:attr:`sei.scores.Score.class_log_probs`: for ``"poe_knn"`` the softmax of the
    mean log-probabilities plus the log of the neighbours' shares), over ``rows`` (a boolean mask;
    default all): the ``num_issues`` of the ``"cl_count"`` cutoff
    (:func:`sei.thresholds.estimate_num_issues`). Arguments as :func:`feature_score`."""
    from .thresholds import check_count_score, estimate_num_issues

    check_count_score("cl_count", name)
    score = _scores.get(name, needs_features=True)
    labels = check_labels(labels)
    dynamics_scores = _check_dynamics(name, score, dynamics_scores, labels.shape[0])
    if num_classes is None and len(dynamics_scores.shape) == 2:
        num_classes = dynamics_scores.shape[1]
    shares = _shares(labels, neighbors, num_classes, score.knn_smoothing)
    return estimate_num_issues(labels, lambda sl: score.class_log_probs(dynamics_scores, shares, sl),
                               num_samples=labels.shape[0], rows=rows)


def _shares(labels, neighbors, num_classes, smoothing) -> NeighbourShares:
    """The checked :class:`NeighbourShares` of ``labels`` over ``neighbors``."""
    labels = check_labels(labels)
    neighbors = check_neighbors(neighbors, labels.shape[0])
    c = int(num_classes if num_classes is not None else labels.max() + 1)
    check_labels(labels, num_classes=c)
    return NeighbourShares(labels[neighbors], c, smoothing)


def _check_dynamics(name, score, dynamics, n):
    per_class = _scores.SCORES[score.fuses_with].per_class
    want = f"(N, K) per-class {score.fuses_with}" if per_class else f"(N,) {score.fuses_with} scores"
    if dynamics is None:
        raise ValueError(f"{name} fuses the neighbours' labels with {want}: pass "
                         f"recorder.fusion_input({name!r}) as dynamics_scores.")
    if per_class and isinstance(dynamics, LogProbMeans):  # a top-k recorder's bounds (sei._logp_top)
        if len(dynamics) != n:
            raise ValueError(f"{name}: dynamics_scores covers {len(dynamics)} samples, expected {n}; pass "
                             f"recorder.fusion_input({name!r}).")
        return dynamics
    arr = np.asarray(dynamics, dtype=np.float64)
    if arr.ndim != (2 if per_class else 1) or arr.shape[0] != n:
        raise ValueError(f"{name}: dynamics_scores must be the {want} for the {n} labelled samples, "
                         f"got shape {arr.shape}; pass recorder.fusion_input({name!r}).")
    return arr
