"""A Datalab issue type ``"sei"``, registered when :mod:`sei_cleanlab` is imported.

>>> from cleanlab import Datalab                                    # doctest: +SKIP
>>> lab = Datalab(data={"y": labels}, label_name="y")                # doctest: +SKIP
>>> lab.find_issues(issue_types={"sei": {"pred_probs_history": H}})  # doctest: +SKIP
>>> lab.get_issues("sei")  # columns is_sei_issue, sei_score        # doctest: +SKIP
>>> lab.find_issues(issue_types={"sei": {"pred_probs_history": H, "features": X,  # doctest: +SKIP
...                                      "score": "aum_prob_knn"}})

The history's class columns must follow Datalab's class order (sorted class names,
i.e. ``lab.class_names``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
from cleanlab.datalab.internal.issue_manager import IssueManager
from cleanlab.datalab.internal.issue_manager_factory import REGISTRY, register
from cleanlab.datalab.internal.task import Task

from sei.constants import DEFAULT_SCORE, DEFAULT_THRESHOLD, FEATURE_SCORES
from sei.neighbors import DEFAULT_KNN_K, knn_indices

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
        "Examples whose training dynamics (the Signed Entropy Integral, or the chosen score) "
        "show the model persistently disagreeing with the given label."
    )
    issue_name: ClassVar[str] = "sei"
    verbosity_levels = {0: [], 1: ["threshold", "score"], 2: ["num_label_issues"], 3: []}

    def __init__(self, datalab, pred_probs_history=None, score=DEFAULT_SCORE, threshold=DEFAULT_THRESHOLD,
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
        labels = np.asarray(self.datalab.labels)
        _, rec = as_recorder(labels, history)  # stream a memmap once, reuse for both calls
        feats = self.features if self.features is not None else kwargs.get("features")
        # One neighbour search for both calls below.
        nb = knn_indices(feats, self.knn_k) if feats is not None and self.score in FEATURE_SCORES else None
        is_issue = find_label_issues(labels, rec, score=self.score, threshold=self.threshold,
                                     threshold_samples=self.threshold_samples, features=feats, neighbors=nb)
        quality = get_label_quality_scores(labels, rec, method=self.score, features=feats, neighbors=nb)
        self.issues = pd.DataFrame({f"is_{self.issue_name}_issue": is_issue, self.issue_score_key: quality})
        self.summary = self.make_summary(score=float(np.nanmean(quality)))
        self.info = {
            "score": self.score,
            "threshold": self.threshold,
            "num_label_issues": int(is_issue.sum()),
            "num_epochs": rec.num_epochs,
            "predicted_label": rec.predicted_labels(),
        }


if "sei" not in REGISTRY[Task.CLASSIFICATION]:
    register(SEIIssueManager, task="classification")
