"""Shared input handling for the cleanlab-style entry points."""

from __future__ import annotations

import numpy as np

from sei import SEIRecorder
from sei._validation import as_history, check_labels
from sei.constants import FEATURE_SCORES, SCORE_NAMES
from sei.neighbors import DEFAULT_KNN_K, feature_score, knn_indices

ALL_SCORES = SCORE_NAMES + FEATURE_SCORES


class Scorer:
    """Scores of one recorder by name, recorder scores and feature scores alike.

    The neighbour search behind the feature scores runs once, on first use, unless
    ``neighbors`` ((N, k) indices, e.g. from :func:`sei.knn_indices`) are given.

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
        if features is not None:
            f = np.asarray(features)
            if f.ndim != 2 or f.shape[0] != rec.num_samples:
                raise ValueError(f"features must be ({rec.num_samples}, D), one row per sample; got shape {f.shape}")

    def __call__(self, name):
        if name not in ALL_SCORES:
            raise ValueError(f"Unknown score {name!r}; choose one of {', '.join(ALL_SCORES)}.")
        if name not in FEATURE_SCORES:
            return self.rec.scores(name, labels=self._dyn_labels)
        if self.features is None and self._neighbors is None:
            raise ValueError(f"score {name!r} compares each label with its neighbours' labels: pass "
                             "features=(N, D) embeddings of the samples, or use a score of the dynamics alone "
                             f"({', '.join(SCORE_NAMES)})")
        if self._neighbors is None:
            self._neighbors = knn_indices(self.features, self.knn_k)
        aum_prob = self.rec.scores("aum_prob", labels=self._dyn_labels) if name == "aum_prob_knn" else None
        return feature_score(name, aum_prob, self.labels, neighbors=self._neighbors,
                             num_classes=self.rec.num_classes)


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
    pred_probs_history, (_, n, k), eps = as_history(pred_probs_history)
    labels = check_labels(labels, n, k)
    return labels, SEIRecorder._from_checked_history(pred_probs_history, eps, labels, from_logits=from_logits)


def ranked(indices: np.ndarray, rank_scores: np.ndarray) -> np.ndarray:
    """Indices sorted most-likely-mislabeled (lowest score) first; stable, NaN last."""
    order = np.argsort(np.nan_to_num(rank_scores[indices], nan=np.inf), kind="stable")
    return indices[order]
