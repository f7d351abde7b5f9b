"""Find label issues from training dynamics (masks and ranked indices), cleanlab-style.

Like :func:`cleanlab.filter.find_label_issues`, but instead of one matrix of
out-of-sample probabilities it reads the *history* of per-epoch probabilities that a
model produced while it trained, and scores each sample with the Signed Entropy
Integral (or a peer score computed from the same dynamics).
"""

from __future__ import annotations

import numpy as np

from sei import compute_threshold, flag_issues, scores
from sei.constants import AUTO_SCORE, DEFAULT_THRESHOLD
from sei.scores import resolve_score
from sei.thresholds import check_count_score, needs_count
from sei.neighbors import DEFAULT_KNN_K
from sei.validation import check_indices

from ._common import Scorer, as_recorder, ranked


def find_label_issues(
    labels,
    pred_probs_history,
    *,
    score=AUTO_SCORE,
    threshold=DEFAULT_THRESHOLD,
    threshold_samples=None,
    return_indices_ranked_by=None,
    from_logits=False,
    features=None,
    knn_k=DEFAULT_KNN_K,
    neighbors=None,
):
    """Flag likely mislabeled examples from a model's training dynamics.

    Parameters
    ----------
    labels : np.ndarray
        (N,) given labels, integers in 0..K-1.
    pred_probs_history : np.ndarray, np.memmap, torch.Tensor or sei.SEIRecorder
        (T, N, K) predicted probabilities of every example at each of T epochs (K columns,
        K + 1 when an auxiliary pseudo-class was trained), or a recorder filled during training.
        A memmap is processed in chunks along T, never loaded whole; float16 / bfloat16
        values are computed in float32.

        With a recorder, ``labels`` are the labels scored: where they equal the labels
        trained on (``recorder.labels``) the recorded dynamics are used as they are. Where
        they differ (e.g. corrected labels), the scores that depend on every epoch's
        agreement with the label (all but ``"ei"``, ``"mistakenness"`` and
        ``"knn_margin"``) cannot be recomputed from the recorder's running sums and a
        ValueError says so: pass the (T, N, K) history instead (``history_path=`` records
        it) or retrain. Samples in ``threshold_samples`` keep the label trained on (the
        auxiliary pseudo-class), so passing the original labels there is fine.
    score : str, default "auto"
        ``"auto"`` (:func:`sei.scores.resolve_score`): ``"poe_knn"`` with ``features`` /
        ``neighbors`` (the product of experts of the training log-probabilities and the
        neighbours' labels), else ``"aum_prob"``; chosen by a fixed rule on CIFAR-10N
        (``benchmarks/results/defaults.md``, which lists the cells each won and lost). Or
        which score of :data:`sei.scores.SCORES` ranks examples: ``"sei"`` (the paper), ``"sei_mean"``, ``"ei"``,
        ``"se_last"``, ``"se_mid"``, ``"aum"``, ``"aum_prob"``, ``"signed_confidence"``,
        ``"loss"``, ``"agreement"``, ``"mistakenness"``; with ``features``, also
        ``"knn_margin"`` (neighbour label agreement alone) and ``"aum_prob_knn"``
        (``aum_prob`` averaged with it, see :mod:`sei.neighbors`).
    threshold : str or float
        ``"auto"`` (default; no auxiliary samples needed: ``"cl_count"`` for ``"poe_knn"``, else
        ``"zero"`` for signed scores, see :func:`sei.thresholds.resolve_threshold`),
        ``"aux_mean"``, ``"aux_quantile"``, ``"zero"``, ``"gmm"``, ``"cl_count"`` (flag as many
        of the lowest-scored examples as confident learning counts on the score's own class
        probabilities; ``"poe_knn"`` only) or a number: examples scoring strictly below it are
        flagged.
    threshold_samples : array-like of int, optional
        Indices of auxiliary samples (trained with the pseudo-class label), needed by the
        ``"aux_*"`` thresholds. They are never flagged themselves.
    return_indices_ranked_by : str, optional
        A score name: return the flagged indices sorted most-likely-mislabeled first by
        that score instead of a mask.
    from_logits : bool
        Whether a (T, N, K) history holds logits (enables ``score="aum"``).
    features : np.ndarray, optional
        (N, D) embeddings of the examples (e.g. the frozen features the model was trained
        on), for the neighbour-label scores.
    knn_k : int
        Neighbours per example for those scores.
    neighbors : np.ndarray, optional
        (N, k) precomputed neighbour indices (:func:`sei.knn_indices`) in place of
        ``features``, so several calls share one neighbour search.

    Returns
    -------
    np.ndarray
        (N,) boolean mask, True = likely label issue; or, when
        ``return_indices_ranked_by`` is set, the flagged indices, most likely first.

    Examples
    --------
    >>> H = np.tile(np.array([[[.9, .1], [.2, .8], [.7, .3]]]), (4, 1, 1))
    >>> find_label_issues(np.array([0, 0, 0]), H)
    array([False,  True, False])
    >>> find_label_issues(np.array([0, 0, 0]), H, return_indices_ranked_by="sei")
    array([1])
    """
    if score != AUTO_SCORE:
        scores.get(score)
    if return_indices_ranked_by is not None and return_indices_ranked_by not in scores.SCORES:
        raise ValueError(
            f"return_indices_ranked_by must be None or a score name ({', '.join(scores.names())}), "
            f"got {return_indices_ranked_by!r}."
        )
    labels, rec = as_recorder(labels, pred_probs_history, from_logits=from_logits)
    score = resolve_score(score, features is not None or neighbors is not None, threshold, rec, rec.num_samples)
    check_count_score(threshold, score)
    aux = None if threshold_samples is None else check_indices(threshold_samples, rec.num_samples, "threshold_samples")
    scorer = Scorer(rec, labels, features, knn_k, neighbors, trained_at=aux)
    raw = scorer(score)
    num_issues = None
    if needs_count(threshold, score):  # counted and ranked over the samples that are not auxiliary
        counted = np.ones(rec.num_samples, bool)
        if aux is not None:
            counted[aux] = False
        num_issues = scorer.issue_count(score, rows=counted)
        raw = np.where(counted, raw, np.nan)
    cutoff = compute_threshold(raw, threshold, aux_indices=aux, score_name=score, num_issues=num_issues)
    mask = flag_issues(raw, cutoff)
    if aux is not None:
        mask[aux] = False
    if return_indices_ranked_by is None:
        return mask
    rank_scores = raw if return_indices_ranked_by == score else scorer(return_indices_ranked_by)
    return ranked(np.flatnonzero(mask), rank_scores)
