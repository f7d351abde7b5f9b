"""A Datalab issue type ``"sei"``, registered when :mod:`sei_cleanlab` is imported.

>>> from cleanlab import Datalab                                    # doctest: +SKIP
>>> lab = Datalab(data={"y": labels}, label_name="y")                # doctest: +SKIP
>>> lab.find_issues(issue_types={"sei": {"pred_probs_history": H}})  # doctest: +SKIP
>>> lab.get_issues("sei")  # columns is_sei_issue, sei_score        # doctest: +SKIP
>>> lab.find_issues(issue_types={"sei": {"pred_probs_history": H, "features": X,  # doctest: +SKIP
...                                      "score": "aum_prob_knn"}})

Class columns: with integer labels 0..K-1, column k is class k, whether or not every
class occurs in the labels (Datalab itself renumbers the classes present to
0..len(class_names)-1, which would shift the columns after an absent class). With other
labels (strings, or integers outside 0..K-1) the columns must follow Datalab's class
order (sorted class names, ``lab.class_names``), one column per class; a history with
more columns than that cannot be matched and raises a ValueError.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
from cleanlab.datalab.internal.issue_manager import IssueManager
from cleanlab.datalab.internal.issue_manager_factory import REGISTRY, register
from cleanlab.datalab.internal.task import Task

from sei import SEIRecorder, scores
from sei.constants import AUTO_SCORE, DEFAULT_THRESHOLD
from sei.scores import resolve_score
from sei.neighbors import DEFAULT_KNN_K, knn_indices
from sei.validation import check_history_shape

from .filter import find_label_issues
from .rank import get_label_quality_scores
from ._common import as_recorder


class SEIIssueManager(IssueManager):
    """Flags label issues from the history of per-epoch predicted probabilities.

    Parameters
    ----------
    datalab : cleanlab.Datalab
    pred_probs_history : np.ndarray, np.memmap or sei.SEIRecorder
        (T, N, K) per-epoch probabilities (or a filled recorder).
    score, threshold, threshold_samples, features, knn_k :
        As in :func:`sei_cleanlab.find_label_issues` (``features`` for the neighbour-label
        scores ``"knn_margin"`` and ``"aum_prob_knn"``).
    """

    description: ClassVar[str] = (
        "Examples whose training dynamics (the chosen score: by default aum_prob, or poe_knn with "
        "features; 'sei' is the Signed Entropy Integral) show the model persistently disagreeing with "
        "the given label."
    )
    issue_name: ClassVar[str] = "sei"
    verbosity_levels = {0: [], 1: ["threshold", "score"], 2: ["num_label_issues"], 3: []}

    def __init__(self, datalab, pred_probs_history=None, score=AUTO_SCORE, threshold=DEFAULT_THRESHOLD,
                 threshold_samples=None, features=None, knn_k=DEFAULT_KNN_K, **_):
        super().__init__(datalab)
        self.pred_probs_history = pred_probs_history
        self.features = features
        self.knn_k = knn_k
        self.score = score
        self.threshold = threshold
        self.threshold_samples = threshold_samples

    def find_issues(self, pred_probs_history=None, **kwargs) -> None:
        history = self.pred_probs_history if pred_probs_history is None else pred_probs_history
        if history is None:
            raise ValueError(
                'The "sei" issue type needs the training history: '
                'lab.find_issues(issue_types={"sei": {"pred_probs_history": H}}).'
            )
        if not isinstance(history, SEIRecorder):
            _, _, num_columns = check_history_shape(history)
        else:
            num_columns = history.num_classes
        labels = _history_labels(self.datalab, num_columns)
        _, rec = as_recorder(labels, history)  # stream a memmap once, reuse for both calls
        feats = self.features if self.features is not None else kwargs.get("features")
        # One neighbour search for both calls below.
        score = resolve_score(self.score, feats is not None, self.threshold, rec, rec.num_samples)
        needs_features = scores.get(score).needs_features
        nb = knn_indices(feats, self.knn_k) if feats is not None and needs_features else None
        is_issue = find_label_issues(labels, rec, score=score, threshold=self.threshold,
                                     threshold_samples=self.threshold_samples, features=feats, neighbors=nb)
        quality = get_label_quality_scores(labels, rec, method=score, features=feats, neighbors=nb)
        self.issues = pd.DataFrame({f"is_{self.issue_name}_issue": is_issue, self.issue_score_key: quality})
        self.summary = self.make_summary(score=float(np.nanmean(quality)))
        self.info = {
            "score": score,
            "threshold": self.threshold,
            "num_label_issues": int(is_issue.sum()),
            "num_epochs": rec.num_epochs,
            "predicted_label": rec.predicted_labels(),
        }


def _history_labels(datalab, num_columns: int) -> np.ndarray:
    """Datalab's labels as column indices of a history with ``num_columns`` columns.

    Datalab maps the classes present in the labels, sorted, to 0..M-1
    (``datalab._label_map`` maps them back). Integer labels that are valid column indices
    are used as they are, so an absent class does not shift the later columns; otherwise
    Datalab's numbering is used when it has one class per column.
    """
    labels = np.asarray(datalab.labels)
    label_map = dict(getattr(datalab, "_label_map", None) or {})
    if not label_map:
        return labels
    original = [label_map[i] for i in range(len(label_map))]
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and 0 <= v < num_columns
           for v in original):
        return np.asarray(original, dtype=np.int64)[labels]
    if len(original) == num_columns:
        return labels
    shown = ", ".join(str(v) for v in original[:5]) + (", ..." if len(original) > 5 else "")
    raise ValueError(
        f'The "sei" issue type: pred_probs_history has {num_columns} class columns but the labels hold '
        f"{len(original)} classes ({shown}), so the columns cannot be matched to classes. Use integer labels "
        f"0..{num_columns - 1} (column k = class k), or a history with one column per class of lab.class_names, "
        "in that order."
    )


if "sei" not in REGISTRY[Task.CLASSIFICATION]:
    register(SEIIssueManager, task="classification")
