"""Budgeted relabelling for cleanlab workflows: which samples to send to annotators first.

``select_for_relabeling(labels, pred_probs_history, features, *, budget, method=...)``
returns indices in pick order. Default ``method="sei_propagation"``: SEI scores from the
history (lower = more likely mislabeled) turned into suspicion in [0, 1], greedy picks
with exact local propagation on a kNN graph of ``features`` so that one batch does not
spend the budget on a cluster of near-duplicates. Other methods: see
:data:`sei.active.SELECTORS` (``"sei"`` = SEI ranking without propagation, ``"kim"``,
``"entropy"``, ``"corractive"``, ``"lossent"``, ``"lossent_sum"``, ``"random"``).
numpy in, numpy out; no torch import.
"""

from __future__ import annotations

import numpy as np

__all__ = ["select_for_relabeling"]


def select_for_relabeling(labels, pred_probs_history, features=None, *, budget, method="sei_propagation",
                          graph=None, k=10, score="sei", exclude=None, alpha=None, seed=0, **selector_options):
    """Choose ``budget`` samples to relabel, in pick order.

    Parameters
    ----------
    labels : (N,) int
        Given (possibly noisy) labels, K classes.
    pred_probs_history : (T, N, K) array / memmap, (N, K) array (T = 1), or ``sei.SEIRecorder``
        Out-of-sample or training-time probabilities per epoch.
    features : (N, D) array, optional
        Embeddings for the kNN graph (needed by propagation methods unless ``graph`` is given).
    budget : int
        Number of samples to pick (at most the number not excluded).
    method : str, default "sei_propagation"
    graph : sei.active.KNNGraph, optional
        Prebuilt graph, reused across calls (building is the expensive part).
    k : int, default 10
        Neighbours when the graph is built here.
    score : str, default "sei"
        Recorder score for the SEI methods.
    exclude : (N,) bool, optional
        Samples already relabelled.
    alpha : (N,) float, optional
        Robust contribution weights (``RobustWeights.alpha``) for ``method="kim"``.
    **selector_options
        Passed to the selector (e.g. ``pool``, ``tol``, ``candidates``).

    Returns
    -------
    (budget,) int64 indices, first pick first.

    Examples
    --------
    >>> idx = select_for_relabeling(labels, history, features, budget=100)  # doctest: +SKIP
    """
    from sei.active import KNNGraph, SelectionContext, make_selector
    from sei.recorder import SEIRecorder

    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be a 1-D integer array, got dtype {labels.dtype} and shape {labels.shape}")
    n = labels.shape[0]
    if int(budget) < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if isinstance(pred_probs_history, SEIRecorder):
        rec = pred_probs_history
        if rec.num_samples != n:
            raise ValueError("recorder and labels disagree on the number of samples")
        last = np.asarray(rec.last_probs, dtype=np.float64)
    else:
        h = pred_probs_history
        if getattr(h, "ndim", None) == 2:
            h = np.asarray(h)[None]
        if getattr(h, "ndim", None) != 3 or h.shape[1] != n:
            raise ValueError(f"pred_probs_history must be (T, N, K) with N = len(labels) = {n}, "
                             f"got shape {getattr(h, 'shape', None)}")
        rec = SEIRecorder.from_history(h, labels)
        last = np.asarray(h[-1], dtype=np.float64)
    sel = make_selector(method, **selector_options)
    if getattr(sel, "propagate", False) and graph is None:
        if features is None:
            raise ValueError(f"method={method!r} propagates on a kNN graph: pass features=(N, D) or graph=")
        features = np.asarray(features)
        if features.shape[0] != n:
            raise ValueError(f"features has {features.shape[0]} rows, labels has {n}")
        graph = KNNGraph(features, k=k, seed=seed)
    if graph is not None and graph.num_samples != n:
        raise ValueError(f"graph has {graph.num_samples} nodes, labels has {n}")
    ctx = SelectionContext(labels.astype(np.int64), last, exclude=exclude, alpha=alpha,
                           sei_scores=rec.scores(score) if sel.needs_sei else None, graph=graph, seed=seed)
    return sel.select(ctx, int(budget))
