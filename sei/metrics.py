"""Detection quality against known mislabels, defined once: the comparison with confident
learning (``sei_cleanlab.compare``, ``sei_fiftyone.compare``) and the FiftyOne demo read it."""

from __future__ import annotations

import numpy as np

__all__ = ["detection_metrics"]


def detection_metrics(is_flagged, scores, is_mislabeled) -> dict:
    """Precision, recall, F1 of a mask and AUROC / AUPRC of scores (lower = more suspect).

    ``scores`` may be None (AUROC and AUPRC are then NaN, as when ``is_mislabeled`` holds one
    class only); a NaN score ranks as the least suspect. Precision, recall and F1 are 0 where
    they would be undefined (scikit-learn's ``zero_division=0``).
    """
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

    is_mislabeled = np.asarray(is_mislabeled, dtype=bool)
    is_flagged = np.asarray(is_flagged, dtype=bool)
    p, r, f, _ = precision_recall_fscore_support(is_mislabeled, is_flagged, average="binary", zero_division=0)
    out = {"precision": float(p), "recall": float(r), "f1": float(f), "auroc": np.nan, "auprc": np.nan}
    if scores is not None and 0 < is_mislabeled.sum() < is_mislabeled.size:
        suspicion = -np.nan_to_num(np.asarray(scores, dtype=float), nan=np.nanmax(scores))
        out["auroc"] = float(roc_auc_score(is_mislabeled, suspicion))
        out["auprc"] = float(average_precision_score(is_mislabeled, suspicion))
    return out
