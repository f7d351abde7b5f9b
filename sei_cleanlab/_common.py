"""Shared input handling for the cleanlab-style entry points."""

from __future__ import annotations

import numpy as np

from sei import SEIRecorder, scores
from sei.neighbors import DEFAULT_KNN_K, feature_issue_count, feature_score, knn_indices
from sei.validation import check_features, check_labels


class Scorer:
    """Scores of one recorder by name (any score of :data:`sei.scores.SCORES`), recorder
    scores and neighbour scores alike.

    The neighbour search behind the feature scores runs once, on first use, unless
    ``neighbors`` ((N, k) indices, e.g. from :func:`sei.knn_indices`) are given.
    ``features`` are validated when a neighbour score first needs them.

    The recorder's scores are computed for ``labels`` (see :meth:`sei.SEIRecorder.scores`:
    a label other than the one trained on raises for scores that cannot be recomputed),
    except at ``trained_at`` (indices, e.g. auxiliary samples), where the label trained on
    is kept.
    """

    def __init__(self, rec, labels, features=None, knn_k=DEFAULT_KNN_K, neighbors=None, trained_at=None):
        self.rec, self.labels, self.features, self.knn_k = rec, labels, features, knn_k
        self._dyn_labels = labels
        if trained_at is not None and len(trained_at):
            self._dyn_labels = labels.copy()
            self._dyn_labels[trained_at] = np.where(rec.labels[trained_at] >= 0, rec.labels[trained_at],
                                                    labels[trained_at])
        self._neighbors = neighbors

    def __call__(self, name):
        score = scores.get(name)
        if not score.needs_features:
            return self.rec.scores(name, labels=self._dyn_labels)
        fused = self.rec.fusion_input(name, labels=self._dyn_labels)
        return feature_score(name, fused, self.labels, neighbors=self.neighbors(name),
                             num_classes=self.rec.num_classes)

    def neighbors(self, name):
        """The (N, k) neighbour indices of feature score ``name`` (searched once, on first use)."""
        if self.features is None and self._neighbors is None:
            raise ValueError(f"score {name!r} compares each label with its neighbours' labels: pass "
                             "features=(N, D) embeddings of the samples, or use a score of the dynamics alone "
                             f"({', '.join(scores.names(needs_features=False))})")
        if self._neighbors is None:
            self.features = check_features(self.features, self.rec.num_samples)
            self._neighbors = knn_indices(self.features, self.knn_k)
        return self._neighbors

    def issue_count(self, name, rows=None):
        """Confident learning's count of label issues on score ``name``'s class probabilities over
        ``rows`` (a boolean mask): the ``"cl_count"`` cutoff's ``num_issues``
        (:func:`sei.neighbors.feature_issue_count`)."""
        fused = self.rec.fusion_input(name, labels=self._dyn_labels)
        return feature_issue_count(name, fused, self.labels, neighbors=self.neighbors(name),
                                   num_classes=self.rec.num_classes, rows=rows)


def as_recorder(labels, pred_probs_history, *, from_logits=False):
    """Validate ``labels`` and turn ``pred_probs_history`` into an :class:`SEIRecorder`.

    ``pred_probs_history`` is a (T, N, K) array (an ``np.memmap`` is streamed along T, in
    chunks; a torch tensor of any float dtype, on any device, is converted to float32
    numpy) or an already filled recorder. Returns ``(labels, recorder)``.
    """
    if isinstance(pred_probs_history, SEIRecorder):
        rec = pred_probs_history
        if rec.num_epochs == 0:
            raise ValueError("The SEIRecorder has no recorded epoch: call end_epoch() after each epoch of updates.")
        labels = check_labels(labels, rec.num_samples, rec.num_classes)
        return labels, rec
    rec = SEIRecorder.from_history(pred_probs_history, labels, from_logits=from_logits)  # validates both
    return rec.labels.copy(), rec


def ranked(indices: np.ndarray, rank_scores: np.ndarray) -> np.ndarray:
    """Indices sorted most-likely-mislabeled (lowest score) first; stable, NaN last."""
    order = np.argsort(np.nan_to_num(rank_scores[indices], nan=np.inf), kind="stable")
    return indices[order]
