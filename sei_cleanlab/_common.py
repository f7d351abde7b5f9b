"""Shared input handling for the cleanlab-style entry points."""

from __future__ import annotations

import numpy as np

from sei import SEIRecorder
from sei._validation import check_history_shape, check_labels


def as_recorder(labels, pred_probs_history, *, from_logits=False):
    """Validate ``labels`` and turn ``pred_probs_history`` into an :class:`SEIRecorder`.

    ``pred_probs_history`` is a (T, N, K) array (an ``np.memmap`` is streamed along T, in
    chunks) or an already filled recorder. Returns ``(labels, recorder)``.
    """
    if isinstance(pred_probs_history, SEIRecorder):
        rec = pred_probs_history
        if rec.num_epochs == 0:
            raise ValueError("The SEIRecorder has no recorded epoch: call end_epoch() after each epoch of updates.")
        labels = check_labels(labels, rec.num_samples, rec.num_classes)
        return labels, rec
    _, n, k = check_history_shape(pred_probs_history)
    labels = check_labels(labels, n, k)
    return labels, SEIRecorder.from_history(pred_probs_history, labels, from_logits=from_logits)


def ranked(indices: np.ndarray, rank_scores: np.ndarray) -> np.ndarray:
    """Indices sorted most-likely-mislabeled (lowest score) first; stable, NaN last."""
    order = np.argsort(np.nan_to_num(rank_scores[indices], nan=np.inf), kind="stable")
    return indices[order]
