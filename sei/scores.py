"""Every score, defined once: the table that the recorder, the cleanlab functions, Datalab,
the training result and the FiftyOne App read (cleanlab's ``rank.scoring_funcs`` is the model).

A score is one float per sample, lower = more likely mislabeled. Each entry of
:data:`SCORES` says what :class:`sei.SEIRecorder` accumulates per update (a per-sample
:class:`Statistic` of one batch of probabilities, or logits), how that reduces over
epochs, whether the score's sign carries meaning (so ``threshold="zero"`` is a cutoff),
how it maps onto [0, 1] for :func:`sei_cleanlab.get_label_quality_scores`, and whether it
needs logits or features. Per sample i and epoch t (an epoch's value is the mean over that
sample's updates in it; ``sign_t = +1`` if ``p_t[y] >= max_k p_t[k]`` else -1)::

    SE_t   = sign_t * H(p_t)
    SEI    = sum_t SE_t                      "sei"        (the paper)
    mean_t SE_t                              "sei_mean"   (the authors' code stores this)
    -sum_t H(p_t)                            "ei"         (unsigned entropy integral, negated)
    SE_T, SE_{T/2}                           "se_last", "se_mid"  (single-epoch slices)
    mean_t (z_y - max_{k!=y} z_k)            "aum"        (AUM, logits needed)
    mean_t (p_y - max_{k!=y} p_k)            "aum_prob"   (AUM on probabilities)
    mean_t sign_t * (1 - H(p_t) / log K)     "signed_confidence"
    -mean_t CE(p_t, y)                       "loss"       (small-loss criterion)
    mean_t 1[sign_t > 0]                     "agreement"
    1 - mistakenness(p_T, y)                 "mistakenness" (FiftyOne Brain's formula, last epoch)
    q(y) - max_{c!=y} q(c)                   "knn_margin" (neighbours' labels, see sei.neighbors)
    (aum_prob + knn_margin) / 2              "aum_prob_knn"
    m(y) - max_{k!=y} m(k), m = mean_t log p_t          "mean_logp"  (per-class sums: O(N K) on request, or
                                                                      a top-k sketch of bounds, sei._logp_top)
    r(y) - max_{c!=y} r(c), r = m + log q~              "poe_knn"    (product of experts; q~: neighbours'
                                                                      label shares, add-one smoothed)

Adding a score is one :class:`Score` entry here (plus its tests); see :func:`register_score`.

Examples
--------
>>> from sei.scores import SCORES, names
>>> SCORES["sei"].signed, SCORES["aum"].needs_logits, names(needs_features=True)
(True, True, ('aum_prob_knn', 'knn_margin', 'poe_knn'))
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Optional

import numpy as np

from .constants import (AUTO_SCORE, DEFAULT_FEATURE_SCORE, DEFAULT_STREAMING_FEATURE_SCORE, EPS,
                        MIN_SAMPLES_FOR_NEIGHBOURS, default_score, is_aux_threshold)
from ._latest import largest
from ._logp_top import LogProbMeans, SparseRows
from .entropy import row_entropy, signed_row_entropy

__all__ = ["Batch", "REDUCTIONS", "SCORES", "Score", "Statistic", "get", "names", "register_score", "resolve_score",
           "signed_names"]

#: How a score turns its per-update statistic into one value per sample. The per-epoch value
#: is the mean of the sample's updates in that epoch. "sum" / "mean": over the epochs that
#: saw the sample; "last": the last such epoch; "middle": epoch ``mid_epoch`` (default
#: ``T // 2 - 1``); "last_probs": the statistic of each sample's latest probabilities, read
#: at scoring time (so it can be computed for other labels); "neighbors": from the labels
#: of each sample's nearest neighbours in feature space (no statistic is recorded).
REDUCTIONS = ("sum", "mean", "last", "middle", "last_probs", "neighbors")


# Above this many classes a row's two largest entries come from numpy's reductions (argmax,
# then the max with that entry masked); below it a loop over the K columns is faster.
_COLUMN_LOOP_MAX_K = 32


def _top2(x: np.ndarray, scratch: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Largest and second-largest entry of each row of an (B, K) array.

    For small K, loops over the K columns, vectorised over rows: numpy's ``max(axis=1)`` is
    several times slower there. For large K, two row reductions: the largest entry masked in a
    (B, K) copy, or in ``x`` itself and restored after with ``scratch=True`` (an array the
    caller owns).
    """
    if x.shape[1] > _COLUMN_LOOP_MAX_K:
        rows = np.arange(x.shape[0])
        top = x.argmax(axis=1)
        first = x[rows, top]
        masked = x if scratch else x.copy()
        masked[rows, top] = -np.inf
        second = masked.max(axis=1)
        if scratch:
            x[rows, top] = first
        return first, second
    cols = np.ascontiguousarray(x.T)
    first = cols[0].copy()
    second = np.full_like(first, -np.inf)
    for c in cols[1:]:
        np.maximum(second, np.minimum(first, c), out=second)
        np.maximum(first, c, out=first)
    return first, second


def _row_max(x: np.ndarray) -> np.ndarray:
    """(B, 1) largest entry of each row; for small K a loop over the K columns, as in :func:`_top2`."""
    if x.shape[1] > _COLUMN_LOOP_MAX_K:
        return x.max(axis=1, keepdims=True)
    out = x[:, 0].copy()
    for c in range(1, x.shape[1]):
        np.maximum(out, x[:, c], out=out)
    return out[:, None]


def _margin(x: np.ndarray, given: np.ndarray, top2=None) -> np.ndarray:
    """x_y - max_{k != y} x_k per row, from the given entries ``given`` = x[rows, y] (and the
    rows' two largest entries ``top2`` when known)."""
    first, second = _top2(x) if top2 is None else top2
    return given - np.where(given >= first, second, first)


class Batch:
    """One update: (B, K) probabilities (softmax of the logits when ``from_logits``) and
    (B,) labels, with the quantities several statistics share computed once, on first use.

    Values are computed in float32 or wider (``log(p + 1e-8)`` is ``log(0)`` in float16):
    the caller passes float32 / float64 arrays.
    """

    def __init__(self, values: np.ndarray, labels: np.ndarray, from_logits: bool = False):
        self.labels = labels
        self.rows = np.arange(values.shape[0])
        self.num_classes = values.shape[1]
        self.from_logits = from_logits
        self.logits = values if from_logits else None
        if from_logits:
            # One pass for the two largest logits (softmax keeps their order, so they give
            # the probabilities' too), the shifted logits z - max kept for the entropy.
            peak = _row_max(values)
            z = values - peak
            second = _top2(z, scratch=True)[1]  # second largest logit minus the largest, <= 0
            p = np.exp(z)
            total = p.sum(axis=1, keepdims=True)
            p /= total
            self._shifted, self._log_total = z, np.log(total[:, 0])
            self._logit_top2 = (peak[:, 0], peak[:, 0] + second)
            self._prob_top2 = (1.0 / total[:, 0], np.exp(second) / total[:, 0])
        else:
            p = values
            self._shifted = self._logit_top2 = self._prob_top2 = None
        self.probs = p

    @classmethod
    def from_summary(cls, labels: np.ndarray, summary: np.ndarray, num_classes: int) -> "Batch":
        """A batch known only by its row summary (:func:`sei._device.summarise_logits`, computed
        where the logits live): every statistic that reads the entropy, the label's probability
        and the two largest logits / probabilities (all but the per-class ones)."""
        b = cls.__new__(cls)
        b.labels, b.rows, b.num_classes, b.from_logits = labels, np.arange(len(labels)), num_classes, True
        b.logits = b.probs = b._shifted = None
        h, zy, lse, top = summary[:, 0], summary[:, 1], summary[:, 2], summary[:, 3:5]
        b.entropy = h
        b.label_prob = np.exp(zy - lse)
        b._prob_top2 = (np.exp(top[:, 0] - lse), np.exp(top[:, 1] - lse))
        b.margin = _margin(None, b.label_prob, b._prob_top2)
        b.logit_margin = _margin(None, zy, (top[:, 0], top[:, 1]))
        return b

    @cached_property
    def label_prob(self) -> np.ndarray:
        """p_y."""
        return self.probs[self.rows, self.labels]

    @cached_property
    def log_softmax(self) -> np.ndarray:
        """Log-probabilities: exact from logits, ``log(p + EPS)`` from probabilities."""
        if self.logits is None:
            return np.log(self.probs + EPS)
        z = self.logits - _row_max(self.logits)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def top_log_probs(self, j: int):
        """``(classes, logp, tau, label_logp)``: the ``j`` largest log-probabilities of each row
        (as :attr:`log_softmax` gives them, largest first) with their classes, the next largest
        ``tau`` (-inf when K <= j) and the label's; O(B K) without a (B, K) logarithm (what
        :mod:`sei._logp_top` adds per update). :attr:`top_probs` then holds the probabilities
        at those classes."""
        rows = self.rows
        if self.logits is not None:  # z' - log sum exp(z'), z' the logits shifted by their max
            base, offset = self._shifted, self._log_total
        else:  # log(p + EPS), monotone in p
            base, offset = self.probs, None
        take = min(j + 1, self.num_classes)
        top, vals = largest(base, take)
        at_label = base[rows, self.labels]
        if offset is None:
            vals, at_label = np.log(vals + EPS), np.log(at_label + EPS)
        else:
            vals, at_label = vals - offset[:, None], at_label - offset
        tau = vals[:, j] if take > j else np.full(len(rows), -np.inf)
        self.top_probs = np.take_along_axis(self.probs, top[:, :j], axis=1)
        return top[:, :j], vals[:, :j], tau, at_label

    @cached_property
    def margin(self) -> np.ndarray:
        """p_y - max_{k!=y} p_k."""
        return _margin(self.probs, self.label_prob, self._prob_top2)

    @cached_property
    def logit_margin(self) -> np.ndarray:
        """z_y - max_{k!=y} z_k (logits only)."""
        return _margin(self.logits, self.logits[self.rows, self.labels], self._logit_top2)

    @cached_property
    def aligned(self) -> np.ndarray:
        """Whether the label is (one of) the most probable classes."""
        return self.margin >= 0

    @cached_property
    def sign(self) -> np.ndarray:
        return np.where(self.aligned, 1.0, -1.0)

    @cached_property
    def entropy(self) -> np.ndarray:
        """H(p) >= 0, exactly 0 for a one-hot row (:func:`sei.entropy.row_entropy`); from
        logits, log sum exp(z') - sum p z' with z' = z - max z (no logarithm per class),
        clamped at 0 likewise."""
        if self._shifted is None:
            return row_entropy(self.probs)
        h = self._log_total - np.einsum("ij,ij->i", self.probs, self._shifted)
        return np.maximum(h, 0.0, out=h)

    @cached_property
    def signed_entropy(self) -> np.ndarray:
        return signed_row_entropy(self.entropy, self.aligned)


@dataclass(frozen=True)
class Statistic:
    """A per-sample value of one update, accumulated by the recorder.

    ``name`` names its accumulator column and its entries in a saved recorder; scores that
    reduce the same statistic differently share one :class:`Statistic` object.
    ``uses_label=False`` marks a statistic that does not depend on the label, so its
    scores can be computed for labels other than those trained on. ``per_class=True``
    marks a (B, K) statistic: the recorder keeps an (N, K) sum of it (O(N K) memory), only
    when a score that reads it is asked for (``SEIRecorder(extra_scores=...)``).
    """

    name: str
    compute: Callable[[Batch], np.ndarray]
    uses_label: bool = True
    per_class: bool = False


def _mistakenness(b: Batch) -> np.ndarray:
    # FiftyOne Brain: m = (s * exp(-H) + 1) / 2 with s = +1 when the prediction disagrees
    # with the label; 1 - m so that lower = suspicious.
    s = np.where(b.aligned, -1.0, 1.0)
    return 1.0 - (s * np.exp(-b.entropy) + 1.0) / 2.0


SIGNED_ENTROPY = Statistic("se", lambda b: b.signed_entropy)
ENTROPY = Statistic("h", lambda b: b.entropy, uses_label=False)
AGREEMENT = Statistic("aligned", lambda b: b.aligned.astype(np.float64))
PROB_MARGIN = Statistic("margin", lambda b: b.margin)
CROSS_ENTROPY = Statistic("loss", lambda b: -np.log(b.label_prob + EPS))
SIGNED_CONFIDENCE = Statistic("sc", lambda b: b.sign * (1.0 - b.entropy / np.log(b.num_classes)))
LOGIT_MARGIN = Statistic("aum", lambda b: b.logit_margin)
MISTAKENNESS = Statistic("mistakenness", _mistakenness)
LOG_PROBS = Statistic("logp", lambda b: b.log_softmax, uses_label=False, per_class=True)


def label_margin(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """x[i, y_i] - max_{k != y_i} x[i, k] per row of an (N, K) array; NaN rows stay NaN."""
    return _margin(x, x[np.arange(x.shape[0]), labels])


# [0, 1] maps: (raw, epochs seen per sample, log K) -> monotone in raw, clipped afterwards.
def _signed_entropy_sum_unit(raw, epochs, log_k):
    return (raw / (np.maximum(epochs, 1) * log_k) + 1) / 2


def _signed_entropy_unit(raw, epochs, log_k):
    return (raw / log_k + 1) / 2


def _entropy_sum_unit(raw, epochs, log_k):
    return raw / (np.maximum(epochs, 1) * log_k) + 1


def _margin_unit(raw, epochs, log_k):
    return (raw + 1) / 2


def _exp_unit(raw, epochs, log_k):
    return np.exp(raw)


def _sigmoid_unit(raw, epochs, log_k):
    return 1 / (1 + np.exp(-raw))


def _identity_unit(raw, epochs, log_k):
    return raw


@dataclass(frozen=True)
class Score:
    """One score: how it is recorded, reduced, thresholded and mapped onto [0, 1].

    Attributes
    ----------
    name, description : str
        The name users pass (``score=``, ``method=``) and a one-line description.
    statistic : Statistic or None
        What the recorder accumulates per update (None for neighbour scores).
    reduce : str
        One of :data:`REDUCTIONS`.
    signed : bool
        Negative = the model disagrees with the label, so ``threshold="zero"`` (and
        ``"auto"``) cuts at 0; otherwise ``"auto"`` fits a two-component mixture.
    unit_map : callable
        ``(raw, epochs, log K) -> array``, monotone in ``raw``; :meth:`quality` clips it to [0, 1].
    negate : bool
        The reduced statistic is negated (so that lower = more likely mislabeled).
    needs_logits, needs_features : bool
        Recorded only from logits (``from_logits=True``); computed from neighbours in
        feature space (``features=`` or ``neighbors=``).
    combine : callable, optional
        Neighbour scores: ``(dynamics score, neighbour label margin) -> raw``; None = the margin.
    fuses_with : str, optional
        Neighbour scores: the recorder score passed to ``combine`` (its (N,) scores, or its
        reduced (N, K) statistic when that is per class).
    readout : callable, optional
        Per-class statistics: ``(reduced (N, K), labels) -> raw (N,)``.
    knn_smoothing : float
        Neighbour scores: pseudo-count added to each class's neighbour count before the
        shares are taken (:func:`sei.neighbors.knn_label_frequencies`).
    class_log_probs : callable, optional
        Neighbour scores whose margin is read from class log-probabilities: ``(dynamics, shares,
        rows slice) ->`` the unnormalised log-probabilities of those rows, (n, K) or a
        :class:`sei._logp_top.SparseRows` (from a top-k recorder's sketch), the score's own
        class probabilities after a softmax (what the ``"cl_count"`` cutoff counts on).
    """

    name: str
    description: str
    statistic: Optional[Statistic]
    reduce: str
    signed: bool
    unit_map: Callable[[np.ndarray, np.ndarray, float], np.ndarray]
    negate: bool = False
    needs_logits: bool = False
    needs_features: bool = False
    combine: Optional[Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = None
    fuses_with: Optional[str] = None
    readout: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None
    knn_smoothing: float = 0.0
    class_log_probs: Optional[Callable] = None

    def __post_init__(self):
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"score {self.name!r}: reduce must be one of {REDUCTIONS}, got {self.reduce!r}")
        if (self.reduce == "neighbors") != self.needs_features or (self.statistic is None) != self.needs_features:
            raise ValueError(f"score {self.name!r}: a neighbour score (needs_features=True, reduce='neighbors') "
                             "has no statistic; every other score has one")
        if self.statistic is not None and self.statistic.per_class != (self.readout is not None):
            raise ValueError(f"score {self.name!r}: a per-class statistic needs a readout ((N, K), labels -> (N,)); "
                             "a per-sample statistic has none")
        if self.statistic is not None and self.statistic.per_class and (
                self.needs_logits or self.reduce not in ("sum", "mean")):
            raise ValueError(f"score {self.name!r}: a per-class statistic is recorded from every update and "
                             "reduced by 'sum' or 'mean'")

    @property
    def relabelable(self) -> bool:
        """Whether a recorder can compute it for labels other than those trained on."""
        return self.reduce == "last_probs" or (self.statistic is not None and not self.statistic.uses_label)

    def quality(self, raw, epochs, num_classes: int) -> np.ndarray:
        """Raw scores mapped monotonically onto [0, 1] (higher = cleaner); NaN stays NaN.

        ``epochs`` is the (N,) number of epochs each sample was seen
        (:attr:`sei.SEIRecorder.epochs_seen`), used by the "sum" scores' bound.
        """
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            out = self.unit_map(np.asarray(raw), np.asarray(epochs), np.log(num_classes))
        return np.clip(out, 0.0, 1.0)

    @property
    def per_class(self) -> bool:
        """Whether the recorder keeps an (N, K) sum for it (recorded only on request)."""
        return self.statistic is not None and self.statistic.per_class

    def fuse(self, dynamics, shares, labels: np.ndarray) -> np.ndarray:
        """A neighbour score from the neighbour label shares (:class:`sei.neighbors.NeighbourShares`,
        smoothed by ``knn_smoothing``) and ``fuses_with``'s output ``dynamics``; None = the
        label margin of the shares alone."""
        if self.combine is None:
            return shares.margin(labels)
        return self.combine(dynamics, shares, labels)


def _fuse_mean(dynamics_scores, shares, labels):
    return 0.5 * (np.asarray(dynamics_scores, dtype=np.float64) + shares.margin(labels))


def _product_of_experts(mean_log_probs, shares, labels):
    if isinstance(mean_log_probs, LogProbMeans):  # a top-k recorder's bounds (sei._logp_top)
        return mean_log_probs.margin(labels, shares)[0]
    # In row chunks: the (n, C) shares and sums exist for one chunk at a time.
    out = np.empty(labels.shape[0])
    for start in range(0, labels.shape[0], _FUSE_ROWS):
        sl = slice(start, start + _FUSE_ROWS)
        out[sl] = label_margin(_poe_rows(mean_log_probs, shares, sl), labels[sl])
    return out


def _poe_rows(mean_log_probs, shares, sl):
    """Log-probabilities of the product of experts for the rows ``sl``: the mean log-probabilities
    plus the log of the neighbours' smoothed label shares; (n, K), or from a top-k recorder's
    bounds (:meth:`sei._logp_top.LogProbMeans.sparse_rows`) a :class:`sei._logp_top.SparseRows`
    listing the tracked classes, the label and the neighbours' labels (O(n (j + k)), never (n, K))."""
    if not isinstance(mean_log_probs, LogProbMeans):
        return np.asarray(mean_log_probs[sl], dtype=np.float64) + np.log(shares.rows(sl))
    m = mean_log_probs.sparse_rows(sl)
    nl = shares.neighbour_labels[sl]
    n, j = m.classes.shape
    width = j + nl.shape[1]
    # Each row's listed classes (tracked, label, neighbours' labels) sorted, then one segment per
    # class: its neighbour count and its mean (the rest's where the sketch does not list it).
    cls = np.concatenate([m.classes, nl], axis=1)
    order = np.argsort(cls, axis=1, kind="stable")
    cls = np.take_along_axis(cls, order, axis=1).ravel()
    from_m = (order < j).ravel()
    val = np.take_along_axis(np.concatenate([m.values, np.zeros(nl.shape)], axis=1), order, axis=1).ravel()
    pos = np.arange(cls.size)
    starts = np.flatnonzero((pos % width == 0) | (cls != np.roll(cls, 1)))
    seg_cls, seg_row = cls[starts], starts // width
    keep = seg_cls >= 0
    has_m = np.add.reduceat(from_m.astype(np.int64), starts)
    mean = np.maximum.reduceat(np.where(from_m, val, -np.inf), starts)
    count = np.add.reduceat((~from_m).astype(np.int64), starts)
    seg_cls, seg_row, has_m, mean, count = seg_cls[keep], seg_row[keep], has_m[keep], mean[keep], count[keep]
    first = np.r_[True, seg_row[1:] != seg_row[:-1]]
    idx = np.arange(seg_row.size)
    rank = idx - np.maximum.accumulate(np.where(first, idx, 0))
    log_d = np.log(shares.denominator)
    with np.errstate(divide="ignore"):
        log_q = np.log(count + shares.smoothing) - log_d
        rest = m.rest + np.log(shares.smoothing) - log_d
    used = int(rank.max()) + 1 if rank.size else 1  # the most classes any row of the block lists
    classes = np.full((n, used), -1, np.int64)
    values = np.full((n, used), -np.inf)
    classes[seg_row, rank] = seg_cls
    values[seg_row, rank] = np.where(has_m > 0, mean, m.rest[seg_row]) + log_q
    return SparseRows(classes, values, rest, m.num_classes)


_FUSE_ROWS = 8192


#: name -> :class:`Score`, in the order users see them (the recorder's scores first).
SCORES: dict[str, Score] = {}


def register_score(score: Score) -> Score:
    """Add ``score`` to :data:`SCORES` (for extensions and tests); returns it.

    A recorder created afterwards records its statistic; scores that share a statistic
    name must share the :class:`Statistic` itself.
    """
    if score.name in SCORES:
        raise ValueError(f"score {score.name!r} is already registered")
    for other in SCORES.values():
        s, o = score.statistic, other.statistic
        if s is not None and o is not None and s.name == o.name and (s is not o or score.needs_logits
                                                                       != other.needs_logits):
            raise ValueError(f"score {score.name!r}: statistic {s.name!r} is already defined by score "
                             f"{other.name!r}; reuse that Statistic object or choose another name")
    SCORES[score.name] = score
    return score


for _score in (
    Score("sei", "Signed Entropy Integral: signed entropy summed over epochs (the paper)",
          SIGNED_ENTROPY, "sum", True, _signed_entropy_sum_unit),
    Score("sei_mean", "signed entropy averaged over epochs (the authors' code)",
          SIGNED_ENTROPY, "mean", True, _signed_entropy_unit),
    Score("ei", "entropy integral, negated: unsigned, label-free",
          ENTROPY, "sum", False, _entropy_sum_unit, negate=True),
    Score("se_last", "signed entropy of the last epoch", SIGNED_ENTROPY, "last", True, _signed_entropy_unit),
    Score("se_mid", "signed entropy of the middle epoch", SIGNED_ENTROPY, "middle", True, _signed_entropy_unit),
    Score("aum", "Area Under the Margin: mean logit margin z_y - max_{k!=y} z_k (logits needed)",
          LOGIT_MARGIN, "mean", True, _sigmoid_unit, needs_logits=True),
    Score("aum_prob", "mean probability margin p_y - max_{k!=y} p_k (AUM on probabilities)",
          PROB_MARGIN, "mean", True, _margin_unit),
    Score("signed_confidence", "mean signed confidence sign * (1 - H / log K)",
          SIGNED_CONFIDENCE, "mean", True, _margin_unit),
    Score("loss", "mean cross-entropy, negated (small-loss criterion)",
          CROSS_ENTROPY, "mean", False, _exp_unit, negate=True),
    Score("agreement", "share of epochs whose prediction agrees with the label",
          AGREEMENT, "mean", False, _identity_unit),
    Score("mistakenness", "1 - FiftyOne Brain's mistakenness of the last epoch's probabilities",
          MISTAKENNESS, "last_probs", False, _identity_unit),
    Score("mean_logp", "margin of the epoch-averaged log-probabilities (geometric-mean AUM; O(N K) state)",
          LOG_PROBS, "mean", True, _sigmoid_unit, readout=label_margin),
    Score("aum_prob_knn", "aum_prob averaged with the neighbours' label margin (features needed)",
          None, "neighbors", True, _margin_unit, needs_features=True, combine=_fuse_mean, fuses_with="aum_prob"),
    Score("knn_margin", "the neighbours' label margin q(y) - max_{c!=y} q(c) alone (features needed)",
          None, "neighbors", True, _margin_unit, needs_features=True),
    Score("poe_knn", "product of experts: mean_logp's log-probabilities plus the log of the neighbours' "
          "add-one smoothed label shares, margin at the label (features needed)",
          None, "neighbors", True, _sigmoid_unit, needs_features=True, combine=_product_of_experts,
          fuses_with="mean_logp", knn_smoothing=1.0, class_log_probs=_poe_rows),
):
    register_score(_score)
del _score


def names(needs_features: Optional[bool] = None) -> tuple[str, ...]:
    """Registered score names, in order; only those that need (True) or do not need
    (False) features when ``needs_features`` is given.

    >>> names(needs_features=False)[:3]
    ('sei', 'sei_mean', 'ei')
    """
    return tuple(n for n, s in SCORES.items() if needs_features is None or s.needs_features == needs_features)


def get(name, *, needs_features: Optional[bool] = None, what: str = "score") -> Score:
    """The :class:`Score` called ``name``, or a ValueError listing the valid names.

    ``needs_features`` restricts the choice as in :func:`names`; ``what`` names the
    parameter in the message (e.g. ``"method"``).
    """
    valid = names(needs_features)
    if not isinstance(name, str) or name not in valid:
        kind = {True: "feature ", False: "", None: ""}[needs_features]
        raise ValueError(f"Unknown {kind}{what} {name!r}; choose one of {', '.join(valid)}.")
    return SCORES[name]


def signed_names() -> frozenset:
    """Names of the scores whose sign carries meaning (``threshold="zero"``)."""
    return frozenset(n for n, s in SCORES.items() if s.signed)


def resolve_score(score, has_features: bool, threshold=None, recorder=None, num_samples=None):
    """``score`` as an entry point uses it: ``"auto"`` becomes :func:`default_score`, any other
    value is returned as it is (and checked by the caller against the registry).

    With a ``threshold`` computed from the auxiliary samples (``"aux_mean"``, ``"aux_quantile"``),
    ``"auto"`` keeps to the scores of the dynamics alone: the auxiliary samples do not calibrate
    the neighbours' labels. With a ``recorder`` that did not keep what the default needs (the
    per-class log-probabilities of ``"poe_knn"``), ``"auto"`` with features is
    :data:`sei.constants.DEFAULT_STREAMING_FEATURE_SCORE` (the features are still read) and a
    UserWarning says how to get the default; with fewer than 21 samples (``num_samples``: too
    few for 20 neighbours) it is :data:`sei.constants.DEFAULT_SCORE`.
    """
    if not (isinstance(score, str) and score == AUTO_SCORE):
        return score
    aux = is_aux_threshold(threshold)
    few = num_samples is not None and num_samples < MIN_SAMPLES_FOR_NEIGHBOURS
    name = default_score(has_features and not aux and not few)
    if recorder is not None and not _keeps(recorder, name):
        if name != DEFAULT_FEATURE_SCORE:
            return default_score(False)
        warnings.warn(
            f"score='auto' with features is {DEFAULT_FEATURE_SCORE!r}, which needs the per-class log-probability "
            f"sums this recorder did not keep; scoring with {DEFAULT_STREAMING_FEATURE_SCORE!r} (per-sample sums "
            f"and the features' neighbours) instead. For {DEFAULT_FEATURE_SCORE!r}, create the recorder with "
            f"SEIRecorder(..., extra_scores='{DEFAULT_FEATURE_SCORE}') (8 bytes per sample and class), or pass "
            f"score='{DEFAULT_STREAMING_FEATURE_SCORE}' to silence this.", UserWarning, stacklevel=3)
        return DEFAULT_STREAMING_FEATURE_SCORE
    return name


def _keeps(recorder, name) -> bool:
    """Whether ``recorder`` can compute score ``name`` (and the score it fuses with)."""
    spec = SCORES[name]
    spec = SCORES[spec.fuses_with] if spec.fuses_with else spec
    check = getattr(recorder, "_check_recorded", None)
    try:
        if check is not None:
            check(spec)
    except ValueError:
        return False
    return True


# Derived from the registry, read when first asked for (a score registered later is in them):
#: SCORE_NAMES: every score a :class:`sei.SEIRecorder` can produce (lower = more likely mislabeled);
#: FEATURE_SCORES: scores that also need the samples' features (see :mod:`sei.neighbors`);
#: SIGNED_SCORES: scores whose sign carries meaning (negative = the model disagrees with the
#: label), so that ``threshold="zero"`` is a principled cutoff for them.
_FROM_REGISTRY = ("SCORE_NAMES", "FEATURE_SCORES", "SIGNED_SCORES")


def __getattr__(name):
    if name in _FROM_REGISTRY:
        if name == "SIGNED_SCORES":
            return signed_names()
        return names(needs_features=name == "FEATURE_SCORES")
    raise AttributeError(f"module 'sei.scores' has no attribute {name!r}")
