"""Label quality scores in [0, 1] from training dynamics (higher = cleaner), like
:func:`cleanlab.rank.get_label_quality_scores`.

Each raw score (lower = more likely mislabeled) is mapped monotonically onto [0, 1]
by its natural bound (``sei.scores.SCORES[name].quality``), so the ranking is exactly the
raw score's:

- signed entropy scores: divided by (epochs x) log K, then (x + 1) / 2;
- ``"ei"``: divided by epochs x log K, then x + 1;
- margins, signed confidence: (x + 1) / 2; ``"agreement"``, ``"mistakenness"``: as is;
- ``"loss"`` (minus the mean cross-entropy): exp(x); ``"aum"`` (logit margins): sigmoid(x).
"""

from __future__ import annotations

from sei import scores
from sei.constants import AUTO_SCORE
from sei.scores import resolve_score
from sei.neighbors import DEFAULT_KNN_K

from ._common import Scorer, as_recorder


def get_label_quality_scores(labels, pred_probs_history, *, method=AUTO_SCORE, from_logits=False,
                             features=None, knn_k=DEFAULT_KNN_K, neighbors=None):
    """Score each example's label quality from training dynamics.

    Parameters
    ----------
    labels : np.ndarray
        (N,) given labels, integers in 0..K-1.
    pred_probs_history : np.ndarray, np.memmap, torch.Tensor or sei.SEIRecorder
        (T, N, K) per-epoch predicted probabilities, or a filled recorder. With a
        recorder, labels other than those trained on raise a ValueError for scores that
        cannot be recomputed for them (see :func:`sei_cleanlab.find_label_issues`).
    method : str, default "auto"
        A score name of :data:`sei.scores.SCORES`, or ``"auto"``: ``"poe_knn"`` with ``features``
        / ``neighbors``, else ``"aum_prob"`` (see :func:`sei_cleanlab.find_label_issues`).
    from_logits : bool
        Whether a (T, N, K) history holds logits.
    features : np.ndarray, optional
        (N, D) embeddings, for ``"knn_margin"`` and ``"aum_prob_knn"``.
    knn_k : int
        Neighbours per example for those scores.
    neighbors : np.ndarray, optional
        (N, k) precomputed neighbour indices in place of ``features``.

    Returns
    -------
    np.ndarray
        (N,) scores in [0, 1]; lower = more likely mislabeled, higher = cleaner.

    Examples
    --------
    >>> H = np.tile(np.array([[[.9, .1], [.2, .8]]]), (3, 1, 1))
    >>> get_label_quality_scores(np.array([0, 0]), H).round(3)
    array([0.9, 0.2])
    """
    if method != AUTO_SCORE:
        scores.get(method, what="method")
    labels, rec = as_recorder(labels, pred_probs_history, from_logits=from_logits)
    method = resolve_score(method, features is not None or neighbors is not None, recorder=rec,
                           num_samples=rec.num_samples)
    score = scores.get(method, what="method")
    raw = Scorer(rec, labels, features, knn_k, neighbors)(method)
    return score.quality(raw, rec.epochs_seen, rec.num_classes)
