"""Confident learning in numpy: cleanlab's ``find_label_issues`` (default ``filter_by=
"prune_by_noise_rate"``) and ``get_label_quality_scores`` (self-confidence), for machines
without cleanlab (the device tool's GPU machine).

A line-by-line port of cleanlab 2.x (``cleanlab.count.compute_confident_joint`` with
calibration, ``filter._keep_at_least_n_per_class``, ``filter._prune_by_count`` and
``count._reduce_issues``); ``tests/test_device_check.py`` checks that the masks are identical
to cleanlab's where cleanlab is installed. Northcutt, Jiang & Chuang, "Confident Learning:
Estimating Uncertainty in Dataset Labels", JAIR 2021.

    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9], [0.95, 0.05]])
    >>> find_label_issues(np.array([0, 0, 1, 1, 1]), p).tolist()
    [False, False, False, False, True]
"""

from __future__ import annotations

import numpy as np

FLOATING_POINT_COMPARISON = 1e-6
CONFIDENT_THRESHOLDS_LOWER_BOUND = 2 * FLOATING_POINT_COMPARISON
TINY_VALUE = 1e-100

__all__ = ["confident_joint", "find_label_issues", "self_confidence"]


def self_confidence(labels, pred_probs) -> np.ndarray:
    """cleanlab's default label quality score: the probability of the given label (lower = worse)."""
    labels = np.asarray(labels)
    return np.asarray(pred_probs)[np.arange(len(labels)), labels]


def _round_preserving_sum(floats) -> np.ndarray:
    floats = np.asarray(floats, dtype=float)
    ints = floats.round()
    orig_sum, int_sum = np.sum(floats).round(), np.sum(ints).round()
    while abs(int_sum - orig_sum) > FLOATING_POINT_COMPARISON:
        diff = np.round(orig_sum - int_sum)
        increment = -1 if int(diff < 0.0) else 1
        changes = min(int(abs(diff)), len(floats))
        for i in np.argsort(floats - ints)[::-increment][:changes]:
            ints[i] = ints[i] + increment
        int_sum = np.sum(ints).round()
    return ints.astype(int)


def _round_rows(m) -> np.ndarray:
    return np.apply_along_axis(_round_preserving_sum, 1, m).astype(int)


def confident_joint(labels, pred_probs, *, calibrate: bool = True) -> np.ndarray:
    """``C[given, true]``: counts of samples confidently assigned to each true class (K x K)."""
    labels, pred_probs = np.asarray(labels), np.asarray(pred_probs)
    k = pred_probs.shape[1]
    counts = np.bincount(labels, minlength=k)
    thresholds = np.array([pred_probs[labels == j, j].mean() if counts[j] else 1e100 for j in range(k)])
    thresholds = np.clip(thresholds, CONFIDENT_THRESHOLDS_LOWER_BOUND, None)
    confident = pred_probs >= thresholds - 1e-6
    n_conf = confident.sum(1)
    guess = np.where(n_conf > 1, pred_probs.argmax(1), confident.argmax(1))
    some = n_conf > 0
    cj = np.zeros((k, k), dtype=np.int64)
    np.add.at(cj, (labels[some], guess[some]), 1)
    np.fill_diagonal(cj, cj.diagonal().clip(min=1))
    if not calibrate:
        return cj
    cal = (cj.T / np.clip(cj.sum(1), TINY_VALUE, None) * counts).T
    cal = cal / np.clip(cal.sum(), TINY_VALUE, None) * counts.sum()
    return _round_rows(cal)


def _keep_at_least_n_per_class(prune, n: int) -> np.ndarray:
    diag = np.diagonal(prune)
    new_diag = np.maximum(diag, n)
    per_col = np.maximum(np.count_nonzero(prune, axis=0) - 1.0, 1.0)
    new = prune - (new_diag - diag) / per_col
    new[new < 0] = 0
    np.fill_diagonal(new, new_diag)
    return _round_rows(new.astype(int))


def find_label_issues(labels, pred_probs, *, min_examples_per_class: int = 1) -> np.ndarray:
    """Boolean mask of label issues, as ``cleanlab.filter.find_label_issues(labels, pred_probs)``.

    For every given class k and true class j != k, the ``C[k, j]`` samples labelled k with the
    largest margin ``p_j - p_k`` are flagged; samples whose argmax is their given label are not.
    """
    labels, pred_probs = np.asarray(labels), np.asarray(pred_probs, dtype=float)
    k = pred_probs.shape[1]
    prune = _keep_at_least_n_per_class(confident_joint(labels, pred_probs).T, min_examples_per_class)
    mask = np.zeros(len(labels), dtype=bool)
    for given in range(k):
        rows = np.flatnonzero(labels == given)
        if len(rows) <= min_examples_per_class:
            continue
        p = pred_probs[rows]
        sub = np.zeros(len(rows), dtype=bool)
        for true in range(k):
            num = prune[true, given]
            if true != given and num > 0:
                sub[np.argsort(-(p[:, true] - p[:, given]))[:num]] = True
        mask[rows] = sub
    bumped = pred_probs.copy()
    bumped[np.arange(len(labels)), labels] += FLOATING_POINT_COMPARISON
    mask[bumped.argmax(1) == labels] = False
    return mask
