"""Batch selectors for active label correction, all behind one interface.

``selector.select(context, batch_size) -> (Q,) int indices in pick order`` where
``context`` is a :class:`SelectionContext` (labels, pred_probs, and optionally alpha,
SEI scores, a :class:`~sei.active.graph.KNNGraph`, and the already-queried mask).

=================  ==========================================================================
Random             uniform over not-yet-queried samples
Entropy            highest predictive entropy (Rebbapragada et al.)
CorrActive         highest cross-entropy loss w.r.t. the current label (Nallapati et al.)
LossEnt            ``variant="bernhardt"``: CE/logK - max(H/logK - 0.3, 0) (active label
                   cleaning); ``variant="sum"``: CE + H (what the ALC paper ran)
DALC               entropy selection; the simulator trains it with a transition-matrix
                   corrected loss (``uses_transition_matrix``; T counted over the queries,
                   ``transition_estimate=`` picks another estimate)
Kim                robust weights alpha + candidates ranked by p^S ∝ 1 - alpha + entropy
                   propagation on the kNN graph (the ALC paper)
SEI                SEI-guided: suspicion from the recorder's scores (lower SEI = more
                   suspicious) in place of entropy, with the same propagation
                   (``"sei_propagation"``: all samples are candidates; ``"sei_alpha"``:
                   candidates ranked by p^S as in Kim; ``"sei"``: no propagation)
SEI-FC             ``"sei_fc"``: SEI-guided picks plus a uniform 10 % of each batch, trained
                   with DALC's forward-corrected loss and a transition matrix estimated
                   by regression on every query (:mod:`sei.active.transition`;
                   ``transition_estimate="design"``: the uniform draws' unbiased one),
                   and with the robust weights before the first queries
=================  ==========================================================================

Choices where the paper is vague (options of :class:`PropagationSelector`):
``pool`` is the candidate set size C (a fraction of the not-yet-queried samples, or an
int), drawn by ranking p^S (lowest alpha first) as in the paper's experiments; the pool is
refilled in rank order as picks leave it. ``candidates="all"`` skips the alpha ranking.
SEI suspicion is ``(max - s) / (max - min)`` in [0, 1] (``transform="minmax"``) or the
rank in [0, 1] (``"rank"``), so that a picked, now-known label propagates "0 = resolved".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from ..entropy import row_entropy
from ..validation import check_count_or_fraction, check_int_param, check_real_param
from .propagation import BoundedPropagation

__all__ = [
    "SelectionContext", "Selector", "RandomSelector", "EntropySelector", "CorrActiveSelector",
    "LossEntSelector", "DALCSelector", "PropagationSelector", "KimSelector", "SEISelector",
    "make_selector", "SELECTORS",
]

_EPS = 1e-12


@dataclass
class SelectionContext:
    """What a selector may look at. Shapes: N samples, K classes."""

    labels: np.ndarray                 # (N,) current (partly corrected) labels
    pred_probs: np.ndarray             # (N, K) model probabilities
    exclude: np.ndarray | None = None  # (N,) bool, already queried
    alpha: np.ndarray | None = None    # (N,) robust contribution weights (sum 1)
    sei_scores: np.ndarray | None = None  # (N,) lower = more likely mislabeled
    graph: object | None = None        # KNNGraph
    seed: int = 0

    def __post_init__(self):
        # Lengths checked here so that every selector sees one entry per sample: a
        # shorter alpha used to empty the candidate pool and repeat picks.
        n = len(self.labels)
        for name in ("exclude", "alpha", "sei_scores"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != (n,):
                raise ValueError(f"{name} must have one entry per sample, shape ({n},), got shape {np.shape(value)}.")
        if np.ndim(self.pred_probs) != 2 or np.shape(self.pred_probs)[0] != n:
            raise ValueError(f"pred_probs must be (N, K) with N = len(labels) = {n}, got shape {np.shape(self.pred_probs)}.")

    def available(self) -> np.ndarray:
        n = len(self.labels)
        return np.ones(n, bool) if self.exclude is None else ~np.asarray(self.exclude, bool)

    def picks(self, batch_size) -> int:
        """Picks to make: ``batch_size`` (an int >= 0; ``2.5`` is refused, not truncated), at
        most the samples not yet queried."""
        return min(check_int_param(batch_size, "batch_size", 0, "the number of samples to pick"),
                   int(self.available().sum()))


def _ce(p, y):
    return -np.log(np.clip(np.asarray(p[np.arange(len(y)), y], dtype=np.float64), _EPS, 1.0))


class Selector:
    """Base class: override :meth:`priority` (higher = pick first) or :meth:`select`."""

    name = "base"
    uses_graph = False
    uses_transition_matrix = False
    transition_estimate = "counted"  # which T the simulator trains with, when uses_transition_matrix
    robust_training = False  # True: robust weights every round; "round0": only before any query
    robust_options: dict = {}  # options of the RobustWeights it trains with (sigma=, rule=, step=)
    trust_queries = False  # True: the robust weights never suppress a label an oracle gave (RobustWeights trusted=)
    needs_sei = False

    def priority(self, ctx: SelectionContext) -> np.ndarray:
        raise NotImplementedError

    def select(self, ctx: SelectionContext, batch_size: int) -> np.ndarray:
        avail = ctx.available()
        q = ctx.picks(batch_size)
        pr = np.where(avail, self.priority(ctx).astype(np.float64), -np.inf)
        if q <= 0:
            return np.zeros(0, dtype=np.int64)
        top = np.argpartition(-pr, q - 1)[:q]
        return top[np.argsort(-pr[top], kind="stable")].astype(np.int64)

    def __repr__(self):
        return f"{type(self).__name__}()"


class RandomSelector(Selector):
    name = "random"

    def select(self, ctx, batch_size):
        idx = np.flatnonzero(ctx.available())
        rng = np.random.default_rng(ctx.seed)
        return rng.permutation(idx)[: ctx.picks(batch_size)].astype(np.int64)


class EntropySelector(Selector):
    name = "entropy"

    def priority(self, ctx):
        return row_entropy(ctx.pred_probs)


class CorrActiveSelector(Selector):
    name = "corractive"

    def priority(self, ctx):
        return _ce(ctx.pred_probs, ctx.labels)


class LossEntSelector(Selector):
    """``variant="bernhardt"`` (default) or ``"sum"`` (the ALC paper's loss + entropy)."""

    def __init__(self, variant: str = "bernhardt", margin: float = 0.3):
        if variant not in ("bernhardt", "sum"):
            raise ValueError(f"variant must be 'bernhardt' or 'sum', got {variant!r}")
        self.variant, self.margin = variant, check_real_param(margin, "margin", 0.0)
        self.name = "lossent" if variant == "bernhardt" else "lossent_sum"

    def priority(self, ctx):
        ce, h = _ce(ctx.pred_probs, ctx.labels), row_entropy(ctx.pred_probs)
        if self.variant == "sum":
            return ce + h
        logk = np.log(ctx.pred_probs.shape[1])
        return ce / logk - np.maximum(h / logk - self.margin, 0.0)


class DALCSelector(EntropySelector):
    """Entropy picks, forward-corrected training; ``transition_estimate``: one of
    :data:`~sei.active.transition.TRANSITION_ESTIMATES` (DALC's own: ``"counted"``)."""

    name = "dalc"
    uses_transition_matrix = True

    def __init__(self, transition_estimate="counted", name=None):
        from .transition import check_transition_estimate

        self.transition_estimate = check_transition_estimate(transition_estimate)
        self.name = name or "dalc"


class PropagationSelector(Selector):
    """Greedy picks of the highest priority in a candidate pool, propagating each pick.

    Parameters
    ----------
    priority : {"entropy", "sei"}
    candidates : {"alpha", "all"}
        "alpha": pool ranked by p^S ∝ 1 - alpha (needs ``ctx.alpha``; falls back to "all").
    pool : float or int, default 0.25
        Candidate pool size (fraction of not-yet-queried samples if float).
    steps, step_size, mode : passed to :meth:`KNNGraph.propagate_pick`.
    bound : float or "auto", default "auto"
        Max-norm error of each pick's propagation, relative to the picked value (the
        bounded hop push, see :mod:`sei.active.graph`). ``"auto"``: chosen from the graph
        by :meth:`KNNGraph.auto_bound` (exact on tiny graphs, 1e-4 on 50,000-node kNN graphs;
        1-2 ms per pick there), or the precomputed columns if the graph has them.
        The bound used is kept in ``last_bound``. What each push leaves out is diffused
        exactly every ``flush_every`` picks (:mod:`sei.active.propagation`; default from the
        graph's size, ``0``: never), so that errors do not pile up over a batch.
    tol : float, optional
        Instead of ``bound``: the pruned Euler push (error <= ``steps * tol``; ``tol=0``
        exact) or the matching precomputed columns.
    mode : {"change", "full", "clamped"}
        How a pick diffuses (:meth:`KNNGraph.propagate_pick`); ``"clamped"`` is Algorithm 1 as written.
    propagate : bool, default True
    robust_options : dict, optional
        Options of the :class:`~sei.active.weights.RobustWeights` the simulator trains with
        (e.g. ``sigma="pairs"``, ``rule="hard"``).
    trust_queries : bool, default False
        The simulator's robust weights treat every label an oracle gave as a zero-loss sample
        (``RobustWeights(trusted=)``), so they never suppress a correction (not in the paper).
    """

    uses_graph = True

    def __init__(self, priority="entropy", *, candidates="alpha", pool=0.25, steps=10, step_size=0.1,
                 bound="auto", tol=None, flush_every=None, mode="change", propagate=True, transform="minmax",
                 robust_training=True, robust_options=None, trust_queries=False, name=None):
        if priority not in ("entropy", "sei"):
            raise ValueError(f"priority must be 'entropy' or 'sei', got {priority!r}")
        if candidates not in ("alpha", "all"):
            raise ValueError(f"candidates must be 'alpha' or 'all', got {candidates!r}")
        self.priority_name, self.candidates = priority, candidates
        self.pool = check_count_or_fraction(pool, "pool")
        if not (bound == "auto" or (isinstance(bound, (int, float)) and not isinstance(bound, bool)
                                    and 0 <= bound < 1)):
            raise ValueError(f"bound must be 'auto' or a float in [0, 1), got {bound!r}")
        self.steps = check_int_param(steps, "steps", 1, "the propagation's number of steps")
        self.step_size = check_real_param(step_size, "step_size", 0.0, strict=True)
        self.tol = None if tol is None else check_real_param(tol, "tol", 0.0)
        flush_every = None if flush_every is None else check_int_param(flush_every, "flush_every", 0)
        if mode not in ("change", "full", "clamped"):
            raise ValueError(f"mode must be 'change', 'full' or 'clamped', got {mode!r}")
        self.mode = mode
        self.bound, self.flush_every, self.last_bound, self.last_propagation = bound, flush_every, None, None
        self.propagate, self.transform = propagate, transform
        if robust_training not in (True, False, "round0"):
            raise ValueError(f"robust_training must be True, False or 'round0' (robust weights before the first "
                             f"queries only), got {robust_training!r}")
        self.robust_training = robust_training
        self.robust_options = dict(robust_options or {})
        if not isinstance(trust_queries, bool):
            raise TypeError(f"trust_queries must be True or False, got {trust_queries!r}")
        self.trust_queries = trust_queries
        self.needs_sei = priority == "sei"
        self.name = name or ("kim" if priority == "entropy" else "sei_propagation")

    def priority(self, ctx):
        if self.priority_name == "entropy":
            return row_entropy(ctx.pred_probs)
        if ctx.sei_scores is None:
            raise ValueError("SEI-guided selection needs ctx.sei_scores (e.g. SEIRecorder.scores('sei'))")
        s = np.asarray(ctx.sei_scores, dtype=np.float64)
        ok = np.isfinite(s)
        u = np.zeros_like(s)
        if ok.any():
            if self.transform == "rank":
                r = np.empty(ok.sum())
                r[np.argsort(-s[ok], kind="stable")] = np.arange(ok.sum())
                u[ok] = r / max(ok.sum() - 1, 1)
            else:
                lo, hi = s[ok].min(), s[ok].max()
                u[ok] = (hi - s[ok]) / max(hi - lo, _EPS)
        return u

    def select(self, ctx, batch_size):
        avail = ctx.available()
        n = len(avail)
        q = ctx.picks(batch_size)
        if q <= 0:
            return np.zeros(0, dtype=np.int64)
        e = self.priority(ctx).astype(np.float64).copy()
        if self.propagate and ctx.graph is None:
            raise ValueError(f"{self.name} needs a KNNGraph in ctx.graph (or propagate=False)")
        if self.candidates == "alpha" and ctx.alpha is not None:
            order = np.argsort(np.asarray(ctx.alpha), kind="stable")
            order = order[avail[order]]
            size = self.pool if isinstance(self.pool, (int, np.integer)) else int(np.ceil(self.pool * len(order)))
            size = int(min(max(size, q), len(order)))
        else:
            order = np.flatnonzero(avail)
            size = len(order)
        in_pool = np.zeros(n, bool)
        in_pool[order[:size]] = True
        nxt = size
        score = np.where(in_pool, e, -np.inf)
        picks = np.empty(q, dtype=np.int64)
        propagate = self._propagator(ctx.graph, q) if self.propagate else None
        for t in range(q):
            j = int(np.argmax(score))
            picks[t] = j
            in_pool[j] = False
            if propagate is not None:
                touched = propagate(e, j)
                score[touched] = np.where(in_pool[touched], e[touched], -np.inf)
            score[j] = -np.inf
            if nxt < len(order):  # refill the pool in p^S rank order
                m = order[nxt]
                nxt += 1
                in_pool[m] = True
                score[m] = e[m]
        return picks


    def _propagator(self, graph, picks):
        """``f(values, node) -> touched``: the bounded propagation with its residual flushes
        (:class:`~sei.active.propagation.BoundedPropagation`), or ``graph.propagate_pick``
        with ``tol`` (given, or that of precomputed columns) or ``mode="full"``."""
        opts = dict(steps=self.steps, step_size=self.step_size, mode=self.mode)
        self.last_propagation = None
        if self.mode in ("full", "clamped"):
            self.last_bound = 0.0
            return partial(graph.propagate_pick, **opts)
        tol = self.tol
        cache = getattr(graph, "_responses", None)
        if tol is None and self.bound == "auto" and cache is not None and cache[3:5] == (self.steps, self.step_size):
            tol = cache[5]
        if tol is not None:
            self.last_bound = self.steps * tol
            return partial(graph.propagate_pick, tol=tol, **opts)
        bound = self.bound
        if bound == "auto":
            bound = graph.auto_bound(steps=self.steps, step_size=self.step_size)
        self.last_bound = bound
        if not hasattr(graph, "bounded_response"):  # a stand-in graph (e.g. a reference implementation)
            return partial(graph.propagate_pick, bound=bound, **opts)
        self.last_propagation = BoundedPropagation(graph, bound, steps=self.steps, step_size=self.step_size,
                                                   flush_every=self.flush_every, picks=picks)
        return self.last_propagation.pick


def KimSelector(**kw) -> PropagationSelector:
    """The ALC paper's method, the library's fast reading: robust weights (sigma_alpha from the
    mean loss), p^S candidates, and each pick's entropy change diffused once by the bounded push
    (``mode="change"``, O(touched edges) per pick). ``"kim_paper"`` is the paper as written."""
    return PropagationSelector("entropy", **kw)


def KimPaperSelector(**kw) -> PropagationSelector:
    """The ALC paper as written (audited equation by equation in ``tests/test_active_paper.py``):
    sigma_alpha set like sigma_L (the squared mean pairwise loss distance) and Algorithm 1's
    diffusion (the pick's entropy clamped to zero before each of the steps, on the whole field:
    O(steps x edges) per pick, so slower than ``"kim"`` on large graphs). In the paper's protocol
    it beat ``"kim"`` (65.7 % vs 63.7 % at the budget, seed 0; ``benchmarks/results/active_paper.md``)."""
    kw.setdefault("mode", "clamped")
    kw.setdefault("robust_options", {"sigma": "pairs"})
    kw.setdefault("name", "kim_paper")
    return PropagationSelector("entropy", **kw)


def SEISelector(**kw) -> PropagationSelector:
    """SEI-guided: recorder scores in place of entropy, with propagation."""
    kw.setdefault("candidates", "all")
    return PropagationSelector("sei", **kw)


SELECTORS = {
    "random": RandomSelector,
    "entropy": EntropySelector,
    "corractive": CorrActiveSelector,
    "lossent": lambda **kw: LossEntSelector("bernhardt", **kw),
    "lossent_sum": lambda **kw: LossEntSelector("sum", **kw),
    "dalc": DALCSelector,
    "kim": KimSelector,
    "kim_paper": KimPaperSelector,
    "sei_propagation": SEISelector,
    "sei": lambda **kw: SEISelector(propagate=False, **dict({"name": "sei"}, **kw)),
    "sei_alpha": lambda **kw: SEISelector(candidates="alpha", name="sei_alpha", **kw),
    "sei_fc": lambda **kw: _sei_fc(**kw),
}


def _sei_fc(share=0.1, transition_estimate="regression", name="sei_fc", **kw):
    """SEI-guided picks with propagation (all samples candidates) plus a uniform ``share`` of
    each batch, trained with the forward-corrected loss and the regression estimate of the
    transition matrix (:mod:`sei.active.transition`) once there are queries, and with the
    robust weights before them (``robust_training="round0"``; never both together)."""
    from .transition import UniformShareSelector

    kw.setdefault("candidates", "all")
    kw.setdefault("robust_training", "round0")
    return UniformShareSelector(SEISelector(name="sei_propagation", **kw), share=share,
                                transition_estimate=transition_estimate, name=name)


def make_selector(method: str, **options) -> Selector:
    """Selector by name: one of ``SELECTORS`` (``"sei"`` is SEI ranking without propagation)."""
    if method not in SELECTORS:
        raise ValueError(f"method must be one of {sorted(SELECTORS)}, got {method!r}")
    return SELECTORS[method](**options)
