"""Side-by-side comparison of SEI with cleanlab's confident learning."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from sei.validation import check_labels, check_pred_probs
from sei.constants import DEFAULT_SCORE, DEFAULT_THRESHOLD
from sei.metrics import detection_metrics

from ._common import as_recorder
from .filter import find_label_issues
from .rank import get_label_quality_scores


def compare_with_confident_learning(labels, pred_probs_history, pred_probs=None, *, true_labels=None,
                                    score=DEFAULT_SCORE, threshold=DEFAULT_THRESHOLD, threshold_samples=None):
    """Run cleanlab's ``find_label_issues`` next to SEI on the same data.

    Parameters
    ----------
    labels : np.ndarray
        (N,) given labels in 0..K-1.
    pred_probs_history : np.ndarray, np.memmap or sei.SEIRecorder
        (T, N, K) per-epoch probabilities, or a filled recorder.
    pred_probs : np.ndarray, optional
        (N, K) *out-of-sample* probabilities (e.g. cross-validated) for confident learning.
        When omitted the last epoch's in-sample probabilities are used, with a warning:
        confident learning is then optimistic about memorised labels.
    true_labels : np.ndarray, optional
        (N,) clean labels; adds per-method precision, recall, F1, AUROC and AUPRC.

    Returns
    -------
    pandas.DataFrame
        One row per example: ``sei_score`` (in [0, 1], higher = cleaner), ``sei_issue``,
        ``cl_score``, ``cl_issue``, ``agree``; plus ``is_mislabeled`` when ``true_labels`` are
        given. ``df.attrs["metrics"]`` holds a DataFrame of metrics per method (when
        ``true_labels`` are given) and ``df.attrs["agreement"]`` the share of equal flags.
    """
    from cleanlab.filter import find_label_issues as cl_find_label_issues
    from cleanlab.rank import get_label_quality_scores as cl_quality

    labels, rec = as_recorder(labels, pred_probs_history)
    if pred_probs is None:
        warnings.warn(
            "No out-of-sample pred_probs given: confident learning runs on the last epoch's in-sample "
            "probabilities, which understate memorised label errors. Pass cross-validated pred_probs.",
            UserWarning,
            stacklevel=2,
        )
        pred_probs = rec.last_probs.astype(np.float64)
        pred_probs = pred_probs / pred_probs.sum(axis=1, keepdims=True)
    pred_probs = check_pred_probs(pred_probs)
    check_labels(labels, pred_probs.shape[0], pred_probs.shape[1])
    sei_issue = find_label_issues(labels, rec, score=score, threshold=threshold, threshold_samples=threshold_samples)
    sei_score = get_label_quality_scores(labels, rec, method=score)
    cl_issue = cl_find_label_issues(labels, pred_probs)
    cl_score = cl_quality(labels, pred_probs)
    df = pd.DataFrame({"sei_score": sei_score, "sei_issue": sei_issue, "cl_score": cl_score,
                       "cl_issue": cl_issue, "agree": sei_issue == cl_issue})
    df.attrs["agreement"] = float(df["agree"].mean())
    if true_labels is not None:
        truth = check_labels(true_labels, labels.shape[0], name="true_labels") != labels
        df["is_mislabeled"] = truth
        df.attrs["metrics"] = pd.DataFrame({
            f"sei ({score})": detection_metrics(sei_issue, sei_score, truth),
            "confident_learning": detection_metrics(cl_issue, cl_score, truth),
        }).T
    return df
