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

Neighbours come from scikit-learn (exact) up to ``exact_max`` samples and from hnswlib
(``pip install sei-labels[active]``) or faiss approximate search beyond; without either,
scikit-learn's exact search is used with a warning (O(N^2) time, chunked memory).
"""

from __future__ import annotations

import numpy as np

from . import scores as _scores
from .validation import check_features, check_k, check_labels, check_neighbors

__all__ = ["FEATURE_SCORES", "check_features", "check_k", "check_neighbors", "feature_score", "knn_indices",
           "knn_label_margin"]



def __getattr__(name):
    if name == "FEATURE_SCORES":  # the registry's neighbour scores
        return _scores.names(needs_features=True)
    raise AttributeError(f"module 'sei.neighbors' has no attribute {name!r}")


#: Neighbours used by the neighbour-label scores (the benchmark's value).
DEFAULT_KNN_K = 20


def _knn_sklearn(x, k):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
    dist, idx = nn.kneighbors(x)
    return dist, idx


def _knn_hnswlib(x, k, seed, num_threads):
    import hnswlib

    n, d = x.shape
    index = hnswlib.Index(space="l2", dim=d)
    index.init_index(max_elements=n, ef_construction=100, M=16, random_seed=seed)
    index.set_num_threads(num_threads)
    index.add_items(x, np.arange(n))
    index.set_ef(max(2 * (k + 1), 50))
    idx, d2 = index.knn_query(x, k=k + 1)
    return np.sqrt(np.maximum(d2, 0)), idx.astype(np.int64)


def _knn_faiss(x, k):
    import faiss

    index = faiss.IndexHNSWFlat(x.shape[1], 16)
    index.add(x)
    d2, idx = index.search(x, k + 1)
    return np.sqrt(np.maximum(d2, 0)), idx.astype(np.int64)


def _approximate_backend():
    import importlib.util
    import warnings

    for name in ("hnswlib", "faiss"):
        if importlib.util.find_spec(name) is not None:
            return name
    warnings.warn("neither hnswlib nor faiss is installed: exact scikit-learn neighbour search, "
                  "O(N^2) time; `pip install hnswlib` (or sei-labels[active]) for large N",
                  RuntimeWarning, stacklevel=3)
    return "sklearn"


def search(x, k, *, backend="auto", exact_max=20_000, seed=0, num_threads=2):
    """``(dist, idx, backend)``: each row's k + 1 nearest rows of ``x`` (itself included)."""
    n = x.shape[0]
    if backend == "auto":
        backend = "sklearn" if n <= exact_max else _approximate_backend()
    if backend == "sklearn":
        dist, idx = _knn_sklearn(x, k)
    elif backend == "hnswlib":
        dist, idx = _knn_hnswlib(x, k, seed, num_threads)
    elif backend == "faiss":
        dist, idx = _knn_faiss(x, k)
    else:
        raise ValueError(f"backend must be 'auto', 'sklearn', 'hnswlib' or 'faiss', got {backend!r}")
    return dist, idx, backend


def knn_indices(features, k=DEFAULT_KNN_K, *, backend="auto", exact_max=20_000, seed=0, num_threads=2):
    """(N, k) indices of each sample's k nearest neighbours by cosine similarity, self excluded.

    Features are centred and L2-normalised first (Euclidean order on the unit sphere is the
    cosine order).
    """
    x = check_features(features)
    n = x.shape[0]
    k = check_k(k, n)
    x = x - x.mean(0, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    _, idx, _ = search(np.ascontiguousarray(x), k, backend=backend, exact_max=exact_max, seed=seed,
                       num_threads=num_threads)
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


def knn_label_margin(labels, features=None, *, neighbors=None, num_classes=None, k=DEFAULT_KNN_K, **search_kw):
    """Neighbour label margin q(y) - max_{c != y} q(c) per sample, in [-1, 1]; lower = more suspect.

    Pass ``features`` (N, D) or precomputed ``neighbors`` (N, k) indices.
    """
    labels = check_labels(labels)
    n = labels.shape[0]
    if neighbors is None:
        if features is None:
            raise ValueError("knn_label_margin needs features (N, D) or neighbors (N, k)")
        check_features(features, n)
        neighbors = knn_indices(features, k, **search_kw)
    neighbors = check_neighbors(neighbors, n)
    c = int(num_classes if num_classes is not None else labels.max() + 1)
    check_labels(labels, num_classes=c)
    nl = labels[neighbors]
    counts = np.zeros((n, c))
    for j in range(nl.shape[1]):
        np.add.at(counts, (np.arange(n), nl[:, j]), 1.0)
    q = counts / nl.shape[1]
    rows = np.arange(n)
    own = q[rows, labels]
    q[rows, labels] = -np.inf
    return own - q.max(1)


def feature_score(name, dynamics_scores, labels, features=None, *, neighbors=None, num_classes=None,
                  k=DEFAULT_KNN_K, **search_kw):
    """A neighbour score of the registry (:func:`sei.scores.names` with ``needs_features=True``:
    ``"knn_margin"``, ``"aum_prob_knn"``).

    ``dynamics_scores`` is the (N,) recorder score the neighbour score fuses with
    (``SCORES[name].fuses_with``: ``aum_prob`` for ``"aum_prob_knn"``; ignored for
    ``"knn_margin"``). NaN there stays NaN.
    """
    score = _scores.get(name, needs_features=True)
    margin = knn_label_margin(labels, features, neighbors=neighbors, num_classes=num_classes, k=k, **search_kw)
    return score.fuse(dynamics_scores, margin)
