"""The cutoffs of issue #22 item 3 for :mod:`benchmarks.peers`: how many of the default's
ranked samples to flag (the rule that picks among them: ``benchmarks/defaults_rule.choose_cutoff``)."""

from __future__ import annotations

import numpy as np

import sei
from benchmarks import harness

#: Cutoffs of the default's ranking measured in every cell (issue #22 item 3); chosen by
#: :func:`benchmarks.defaults_rule.choose_cutoff`.
CUTOFFS = ("zero", "gmm", "cl_count_mean", "cl_count_last", "cl_count_poe")


def cutoff_flags(score, labels, pred_probs_list, how, poe=None):
    """Flags of the default's score under cutoff ``how``: ``"zero"``, ``"gmm"`` (sei's two-component
    mixture), ``"cl_count_mean"`` / ``"cl_count_last"`` (the lowest-scored
    ``cleanlab.count.num_label_issues`` samples, from the run's epoch-mean / last-epoch probabilities:
    rank by our score, count from a confident-joint estimate on our own run); ``"cl_count_poe"``, the
    same count on the product of experts' own probabilities, which is the library's ``"cl_count"``
    (``poe``: ``(mean log-probabilities, labels, neighbours, K)``, counted by
    :func:`sei.neighbors.feature_issue_count`; since issue #22 the library's default with features;
    added after the digits cells and one 10k-subset cell were seen, before the CIFAR-10N Lite0 cells ran)."""
    if how in ("zero", "gmm"):
        return sei.flag_issues(score, sei.compute_threshold(score, how))
    if how == "cl_count_poe":
        from sei.neighbors import feature_issue_count

        dyn, lab, nb, k = poe
        n = feature_issue_count("poe_knn", dyn, lab, neighbors=nb, num_classes=k)
        return sei.flag_issues(score, sei.compute_threshold(score, "cl_count", num_issues=n))
    from cleanlab.count import num_label_issues

    p = np.mean(pred_probs_list, axis=0) if how == "cl_count_mean" else pred_probs_list[-1]
    p = p / p.sum(1, keepdims=True)
    return harness._lowest(score, num_label_issues(np.asarray(labels), p))
