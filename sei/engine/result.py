"""What a training run returns: :class:`TrainResult`, assembled from the recorder by ``finish``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..constants import EPS
from ..scores import SCORES
from ..recorder import SEIRecorder
from ..thresholds import compute_threshold, flag_issues, needs_count

__all__ = ["TrainResult", "finish", "neighbour_search"]


@dataclass
class TrainResult:
    """What :func:`sei.train` returns.

    Attributes
    ----------
    scores : np.ndarray, shape (N,)
        The chosen score (``score_name``), lower = more likely mislabeled. NaN for samples
        never seen (unreadable images). Auxiliary samples (their real label is not trained)
        are scored by a second run without the pseudo-class
        (:func:`sei.engine.protocols.train_scoring_every_sample`, ``sei.train``'s default), or
        NaN with ``score_aux_samples=False``.
    mislabeled : np.ndarray of bool, shape (N,)
        ``scores < threshold``; False where the score is NaN.
    threshold : float
    score_name : str
    recorder : SEIRecorder
        Over K + 1 columns when the auxiliary class is used; feeds
        ``sei_cleanlab.find_label_issues`` directly.
    aux_indices : np.ndarray of int
        Samples relabelled to the pseudo-class (empty without it).
    pred_probs : np.ndarray, shape (N, K), or None
        Last epoch's probabilities over the K real classes (aux column dropped, renormalised);
        None when the recorder kept only each sample's top probabilities (``top_k="auto"``
        past 2^25 values, :class:`sei.SEIRecorder`).
    predicted_labels : np.ndarray, shape (N,)
        The most probable real class of the last update (-1 where never seen).
    confidence : np.ndarray, shape (N,)
        Its probability (renormalised without the auxiliary class; NaN where never seen).
    train_accuracy, train_loss : list of float
        Per epoch, over the trained (possibly relabelled) labels.
    features : np.ndarray, shape (N, D), or None
        The embeddings trained on (frozen / embeddings modes); in finetune mode None, or
        with ``return_features=True`` the fine-tuned image tower's features after the last
        epoch (one extra pass, no augmentation). NaN rows for unreadable inputs.
    skipped : np.ndarray of int
        Unreadable images (scored NaN, never flagged).
    labels_used : np.ndarray, shape (N,)
        The labels trained on (K at ``aux_indices``).
    class_names : list of str
    config : dict
        The run's options (:meth:`sei.engine.TrainConfig.to_dict`) plus ``num_aux`` and the
        model's name.
    elapsed_s : float
    """

    scores: np.ndarray
    mislabeled: np.ndarray
    threshold: float
    score_name: str
    recorder: SEIRecorder
    aux_indices: np.ndarray
    pred_probs: Optional[np.ndarray]
    predicted_labels: np.ndarray
    train_accuracy: list
    train_loss: list
    features: Optional[np.ndarray]
    skipped: np.ndarray
    labels_used: np.ndarray
    class_names: list
    config: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    confidence: Optional[np.ndarray] = None

    def __repr__(self):
        return (f"TrainResult(N={len(self.scores)}, score={self.score_name!r}, threshold={self.threshold:.4g}, "
                f"flagged={int(self.mislabeled.sum())}, epochs={len(self.train_loss)}, skipped={len(self.skipped)})")


def _scored_rows(features):
    """(N,) the rows a neighbour score reads: those of readable inputs (finite features)."""
    return np.isfinite(features).all(1)


def neighbour_search(cfg, features):
    """The neighbour search of a score that needs features, started on a background thread
    while the epochs train (:class:`sei.neighbors.NeighbourSearch`), or None; over the rows
    ``finish`` scores (:func:`_scored_rows`)."""
    if features is None or not SCORES[cfg.score].needs_features:
        return None
    from ..neighbors import NeighbourSearch

    # one thread: the epochs keep the other core busy
    return NeighbourSearch(features[_scored_rows(features)], num_threads=1)


def finish(rec, cfg, *, k, aux_indices, labels_used, metrics, features, skipped, class_names, t_start, config,
           neighbours=None):
    """Score, threshold and flag from the recorder; last-epoch suggestions over the K real classes.
    ``neighbours``: the :func:`neighbour_search` started on the same ``features``, if any."""
    score = cfg.score
    spec = SCORES[score]
    num_issues = None
    if spec.needs_features:  # neighbour labels in the features trained on (never with aux samples)
        from ..neighbors import feature_issue_count, feature_score, knn_indices

        raw = np.full(rec.num_samples, np.nan)
        ok = _scored_rows(features)
        dyn = rec.fusion_input(score)
        dyn = None if dyn is None else dyn[ok]
        nb = knn_indices(features[ok]) if neighbours is None else neighbours.result()
        raw[ok] = feature_score(score, dyn, labels_used[ok], neighbors=nb, num_classes=rec.num_classes)
        if needs_count(cfg.threshold, score):  # counted on the scored samples that are not auxiliary
            counted = np.ones(rec.num_samples, bool)
            counted[aux_indices] = False
            num_issues = feature_issue_count(score, dyn, labels_used[ok], neighbors=nb, num_classes=rec.num_classes,
                                             rows=counted[ok])
    else:
        raw = rec.scores(score)
    scores = raw.copy()
    scores[aux_indices] = np.nan
    # the count cutoff ranks the scored samples that are not auxiliary (the others are never flagged)
    th = compute_threshold(scores if num_issues is not None else raw, cfg.threshold,
                           aux_indices=aux_indices if aux_indices.size else None, score_name=score,
                           num_issues=num_issues)
    mislabeled = flag_issues(scores, th)
    probs, pred, conf = _predictions(rec, k)
    return TrainResult(scores=scores, mislabeled=mislabeled, threshold=float(th), score_name=score, recorder=rec,
                       aux_indices=aux_indices, pred_probs=probs, predicted_labels=pred, confidence=conf,
                       train_accuracy=list(metrics["train_accuracy"]), train_loss=list(metrics["train_loss"]),
                       features=features, skipped=skipped, labels_used=labels_used, class_names=class_names,
                       config=config, elapsed_s=time.time() - t_start)


def _predictions(rec, k):
    """``(pred_probs or None, predicted_labels, confidence)`` over the K real classes from the
    recorder's latest probabilities (its column K, the auxiliary class, dropped and the rest
    renormalised; with the top few kept only, the auxiliary probability is known where it is
    among them and taken as 0 elsewhere)."""
    if rec.top_k >= rec.num_classes:
        probs = rec.last_probs[:, :k].astype(np.float64)
        probs /= np.maximum(probs.sum(1, keepdims=True), EPS)
        seen = np.isfinite(probs).all(1)
        pred = np.where(seen, np.nan_to_num(probs).argmax(1), -1)
        conf = np.where(seen, np.take_along_axis(np.nan_to_num(probs), np.maximum(pred, 0)[:, None], 1)[:, 0], np.nan)
        return probs.astype(np.float32), pred, conf.astype(np.float32)
    classes, top = rec.latest_top()
    real = (classes >= 0) & (classes < k)
    first = real.argmax(axis=1)[:, None]  # the most probable real class among those kept
    rows_ok = real.any(axis=1)
    pred = np.where(rows_ok, np.take_along_axis(classes, first, 1)[:, 0], -1)
    aux_p = np.where(classes == k, np.nan_to_num(top), 0.0).sum(axis=1)
    conf = np.where(rows_ok, np.take_along_axis(top, first, 1)[:, 0] / np.maximum(1.0 - aux_p, EPS), np.nan)
    return None, pred.astype(np.int64), conf.astype(np.float32)
