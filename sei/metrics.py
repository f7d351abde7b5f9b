"""Detection quality against known mislabels, defined once: the comparison with confident
learning (``sei_cleanlab.compare``, ``sei_fiftyone.compare``), the FiftyOne demo and every
benchmark (``benchmarks/``) read it."""

from __future__ import annotations

import numpy as np

__all__ = ["detection_metrics"]


def detection_metrics(is_flagged, scores, is_mislabeled, *, valid=None) -> dict:
    """Precision, recall, F1 of a mask and AUROC / AUPRC of scores (lower = more suspect).

    Parameters
    ----------
    is_flagged : array-like of bool, shape (N,), or None
        The flagged samples. None: precision, recall, F1 and ``flagged`` are NaN.
    scores : array-like of float, shape (N,), or None
        Lower = more likely mislabeled. None: AUROC and AUPRC are NaN (as when the counted
        samples hold one class only). A NaN score ranks as the least suspect.
    is_mislabeled : array-like of bool, shape (N,)
    valid : array-like of bool, shape (N,), optional
        Only these samples count (e.g. leave out a run's auxiliary samples); default all.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1``, ``auroc``, ``auprc`` and ``flagged`` (the share of
        the counted samples that are flagged), floats. Precision, recall and F1 are 0 where they
        would be undefined (nothing flagged, nothing mislabeled: scikit-learn's ``zero_division=0``).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    is_mislabeled = np.asarray(is_mislabeled, dtype=bool)
    keep = slice(None) if valid is None else np.asarray(valid, dtype=bool)
    truth = is_mislabeled[keep]
    out = {"precision": np.nan, "recall": np.nan, "f1": np.nan, "auroc": np.nan, "auprc": np.nan, "flagged": np.nan}
    if is_flagged is not None:
        flagged = np.asarray(is_flagged, dtype=bool)[keep]
        tp = int(np.sum(flagged & truth))
        p = tp / max(int(flagged.sum()), 1)
        r = tp / max(int(truth.sum()), 1)
        out.update(precision=float(p), recall=float(r), f1=float(2 * p * r / max(p + r, 1e-12)),
                   flagged=float(flagged.mean()) if flagged.size else np.nan)
    if scores is not None and 0 < truth.sum() < truth.size:
        s = np.asarray(scores, dtype=float)[keep]
        suspicion = -np.nan_to_num(s, nan=np.nanmax(s))
        out["auroc"] = float(roc_auc_score(truth, suspicion))
        out["auprc"] = float(average_precision_score(truth, suspicion))
    return out
