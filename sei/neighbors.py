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

from .constants import FEATURE_SCORES

__all__ = ["FEATURE_SCORES", "knn_indices", "knn_label_margin", "feature_score"]

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


def check_features(features, n=None):
    from ._validation import to_numpy

    x = to_numpy(features, "features")
    if x.dtype.kind not in "fiub":
        raise TypeError(f"features must hold real numbers, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be a (N, D) array with N >= 2, got shape {x.shape}")
    if n is not None and x.shape[0] != n:
        raise ValueError(f"features has {x.shape[0]} rows but there are {n} labels; pass one row per sample")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or inf; impute or drop those rows first")
    return x


def check_neighbors(neighbors, n):
    """(N, k) integer indices in 0..N-1 (as from :func:`knn_indices`), or a clear error.

    Negative indices would silently wrap around to the last samples, so they are refused.
    """
    from ._validation import to_numpy

    neighbors = to_numpy(neighbors, "neighbors")
    if neighbors.ndim != 2 or neighbors.shape[0] != n or neighbors.shape[1] < 1:
        raise ValueError(f"neighbors must be (N, k) = ({n}, k) with k >= 1, one row per sample, "
                         f"got shape {neighbors.shape}; compute them with sei.knn_indices(features, k)")
    if neighbors.dtype.kind not in "iu":
        raise TypeError(f"neighbors must be integer sample indices, got dtype {neighbors.dtype}")
    lo, hi = int(neighbors.min()), int(neighbors.max())
    if lo < 0 or hi >= n:
        raise ValueError(f"neighbors must be sample indices in 0..{n - 1}, got values in {lo}..{hi}; "
                         "compute them with sei.knn_indices(features, k) on the same samples")
    return neighbors.astype(np.int64, copy=False)


def check_k(k, n):
    """``k`` as an int in [1, N-1], or a ValueError naming the bounds."""
    k = int(k)
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {k}")
    return k


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
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    n = labels.shape[0]
    if neighbors is None:
        if features is None:
            raise ValueError("knn_label_margin needs features (N, D) or neighbors (N, k)")
        check_features(features, n)
        neighbors = knn_indices(features, k, **search_kw)
    neighbors = check_neighbors(neighbors, n)
    c = int(num_classes if num_classes is not None else labels.max() + 1)
    if n and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"labels must lie in 0..{c - 1} (num_classes = {c})")
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
    """A score of :data:`FEATURE_SCORES`: ``"knn_margin"`` or ``"aum_prob_knn"``.

    ``dynamics_scores`` is the (N,) ``aum_prob`` score of the same samples (ignored for
    ``"knn_margin"``). NaN there stays NaN.
    """
    if name not in FEATURE_SCORES:
        raise ValueError(f"unknown feature score {name!r}; use one of {FEATURE_SCORES}")
    margin = knn_label_margin(labels, features, neighbors=neighbors, num_classes=num_classes, k=k, **search_kw)
    if name == "knn_margin":
        return margin
    return 0.5 * (np.asarray(dynamics_scores, dtype=np.float64) + margin)
