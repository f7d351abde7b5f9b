"""Budgeted relabelling for cleanlab workflows: which samples to send to annotators first.

``select_for_relabeling(labels, pred_probs_history, features, *, budget, method=...)``
returns indices in pick order. Default ``method="sei_propagation"``: SEI scores from the
history (lower = more likely mislabeled) turned into suspicion in [0, 1], greedy picks
with local propagation on a kNN graph of ``features`` so that one batch does not
spend the budget on a cluster of near-duplicates. The propagation is the bounded hop push
of :mod:`sei.active.graph` with the bound chosen from the graph (``bound="auto"``: each
pick's propagated change within ``bound * e(x*)`` of exact diffusion in max-norm; exact on
tiny graphs, 1e-4 on 50,000 samples, about 2 ms per pick there; what the pushes leave out is
diffused exactly every few dozen picks). Other methods: see
:data:`sei.active.SELECTORS` (``"sei"`` = SEI ranking without propagation, ``"kim"``,
``"entropy"``, ``"corractive"``, ``"lossent"``, ``"lossent_sum"``, ``"random"``).
numpy in, numpy out; no torch import.
"""

from __future__ import annotations

import numpy as np

from sei.constants import SELECTION_SCORE

__all__ = ["select_for_relabeling"]


def select_for_relabeling(labels, pred_probs_history, features=None, *, budget, method="sei_propagation",
                          graph=None, k=10, score=SELECTION_SCORE, exclude=None, alpha=None, seed=0, **selector_options):
    """Choose ``budget`` samples to relabel, in pick order.

    Parameters
    ----------
    labels : (N,) int
        Given (possibly noisy) labels, K classes.
    pred_probs_history : (T, N, K) array / memmap / torch tensor, (N, K) array (T = 1), or ``sei.SEIRecorder``
        Out-of-sample or training-time probabilities per epoch, validated as by
        :func:`sei_cleanlab.find_label_issues` (an (N, K) matrix is one epoch). With a
        recorder, ``labels`` may differ from the labels trained on only at excluded
        samples for the SEI methods (see :meth:`sei.SEIRecorder.scores`).
    features : (N, D) array, optional
        Embeddings for the kNN graph (needed by propagation methods unless ``graph`` is given).
    budget : int
        Number of samples to pick (at most the number not excluded).
    method : str, default "sei_propagation"
    graph : sei.active.KNNGraph, optional
        Prebuilt graph, reused across calls (building is the expensive part).
    k : int, default 10
        Neighbours when the graph is built here.
    score : str, default ``sei.constants.SELECTION_SCORE`` (``"sei"``)
        Recorder score for the SEI methods: the one every ALC table was measured with (the
        detection default, ``"auto"``, is not measured as a selection guide).
    exclude : (N,) bool, optional
        Samples already relabelled; never picked.
    alpha : (N,) float, optional
        Robust contribution weights (``RobustWeights.alpha``) for ``method="kim"``.
    **selector_options
        Passed to the selector (e.g. ``pool``, ``candidates``, ``bound``: a float for a fixed
        max-norm error bound, 0 for exact propagation; ``tol``: the older pruned Euler push).

    Returns
    -------
    (budget,) int64 indices, first pick first.

    Examples
    --------
    >>> idx = select_for_relabeling(labels, history, features, budget=100)  # doctest: +SKIP
    """
    from sei.active import KNNGraph, SelectionContext, make_selector
    from sei.recorder import SEIRecorder
    from sei.validation import (
        as_float, as_history, check_features, check_int_param, check_labels, check_mask, check_sample_weights,
    )

    # One validation step, shared with find_label_issues, before any work.
    sel = make_selector(method, **selector_options)
    budget = check_int_param(budget, "budget", 0, "the number of samples to pick")
    k = check_int_param(k, "k", 1, "the neighbours of each sample in the kNN graph")
    if isinstance(pred_probs_history, SEIRecorder):
        rec = pred_probs_history
        if rec.num_epochs == 0:
            raise ValueError("The SEIRecorder has no recorded epoch: call end_epoch() after each epoch of updates.")
        n, num_classes = rec.num_samples, rec.num_classes
        history = None
    else:
        history = pred_probs_history
        if isinstance(history, (list, tuple)):
            history = np.asarray(history) if np.ndim(history) == 2 else history
        if len(getattr(history, "shape", ())) == 2:
            history = history[None]  # documented: an (N, K) matrix is one epoch
        raw_history = history
        history, (_, n, num_classes), _eps = as_history(history)
    labels = check_labels(labels, n, num_classes)
    exclude = None if exclude is None else check_mask(exclude, n, "exclude")
    alpha = None if alpha is None else check_sample_weights(alpha, n, "alpha")
    if getattr(sel, "propagate", False) and graph is None:
        if features is None:
            raise ValueError(f"method={method!r} propagates on a kNN graph: pass features=(N, D) or graph=")
        features = check_features(features, n)
    if graph is not None and getattr(graph, "num_samples", None) != n:
        raise ValueError(f"graph has {getattr(graph, 'num_samples', None)} nodes, labels has {n}; build it on "
                         "the same samples")
    if history is not None:
        rec = SEIRecorder.from_history(raw_history, labels)
        last = as_float(np.asarray(history[-1])).astype(np.float64)
    else:
        last = np.asarray(rec.last_probs, dtype=np.float64)
    if getattr(sel, "propagate", False) and graph is None:
        graph = KNNGraph(features, k=k, seed=seed)
    # Excluded samples (already relabelled) are never picked: their recorded scores may
    # stay those of the label trained on. Elsewhere the labels must be the trained ones
    # for scores that cannot be recomputed (SEIRecorder.scores raises otherwise).
    sei_scores = None
    if sel.needs_sei:
        scored = labels if exclude is None else np.where(exclude & (rec.labels >= 0), rec.labels, labels)
        sei_scores = rec.scores(score, labels=scored)
    ctx = SelectionContext(labels, last, exclude=exclude, alpha=alpha, sei_scores=sei_scores, graph=graph,
                           seed=seed)
    return sel.select(ctx, budget)
