"""The cutoffs of issue #22 item 3 for :mod:`benchmarks.peers`: how many of the default's
ranked samples to flag (the rule that picks among them: ``benchmarks/defaults_rule.choose_cutoff``)."""

from __future__ import annotations

import numpy as np

import sei
from benchmarks import harness

#: Cutoffs of the default's ranking measured in every cell (issue #22 item 3); chosen by
#: :func:`benchmarks.defaults_rule.choose_cutoff`.
CUTOFFS = ("zero", "gmm", "cl_count_mean", "cl_count_last", "cl_count_poe")


def poe_probs(mean_logp, labels, neighbours, num_classes):
    """The default's own class probabilities: softmax of the product of experts that ``poe_knn`` takes
    its margin of (mean log-probabilities + log of the neighbours' add-one smoothed label shares)."""
    from sei.entropy import softmax
    from sei.neighbors import knn_label_frequencies

    q = knn_label_frequencies(labels, neighbours, num_classes, smoothing=1.0)
    return softmax(np.asarray(mean_logp, dtype=np.float64) + np.log(q), axis=1)


def cutoff_flags(score, labels, pred_probs_list, how, poe=None):
    """Flags of the default's score under cutoff ``how``: ``"zero"`` (the library's), ``"gmm"``
    (sei's two-component mixture), ``"cl_count_mean"`` / ``"cl_count_last"`` (the lowest-scored
    ``cleanlab.count.num_label_issues`` samples, from the run's epoch-mean / last-epoch probabilities:
    rank by our score, count from a confident-joint estimate on our own run); ``"cl_count_poe"``, the
    same count on the product of experts' probabilities (``poe``: ``(labels, probs)`` of :func:`poe_probs`;
    added after the digits cells and one 10k-subset cell were seen, before the CIFAR-10N Lite0 cells ran)."""
    if how in ("zero", "gmm"):
        th = sei.compute_threshold(score, "auto" if how == "zero" else "gmm", score_name="poe_knn")
        return sei.flag_issues(score, th)
    from cleanlab.count import num_label_issues

    if how == "cl_count_poe":
        return harness._lowest(score, num_label_issues(np.asarray(poe[0]), poe[1]))
    p = np.mean(pred_probs_list, axis=0) if how == "cl_count_mean" else pred_probs_list[-1]
    p = p / p.sum(1, keepdims=True)
    return harness._lowest(score, num_label_issues(np.asarray(labels), p))
