"""Cutoffs that turn scores into mislabeled flags, and the auxiliary pseudo-class.

A sample is flagged when its score (lower = more likely mislabeled) is strictly below
the threshold. Methods:

- ``"aux_mean"``: the mean score of the auxiliary samples (the SEI paper's cutoff).
- ``"aux_quantile"``: the 99th percentile of the auxiliary samples' scores (AUM's cutoff).
- ``"zero"``: 0, for signed scores where a negative value means the model disagrees.
- ``"gmm"``: a two-component Gaussian mixture on the scores; flag where the lower
  component is the more probable one.
- ``"cl_count"``: flag the ``n`` lowest-scored samples, ``n`` being confident learning's count of
  label issues (``cleanlab.count.num_label_issues``, its default ``"off_diagonal"`` estimate) on
  the score's own class probabilities (:func:`estimate_num_issues`): the score ranks, confident
  learning says how many. For scores that define class probabilities (``"poe_knn"``).
- ``"auto"`` (default, needs no auxiliary samples): ``"cl_count"`` for ``"poe_knn"`` (the default
  with features; :data:`sei.constants.AUTO_THRESHOLDS`), ``"zero"`` for other signed scores,
  ``"gmm"`` otherwise (:func:`resolve_threshold`).
- a float: used as is.

Auxiliary samples are real samples relabelled to a pseudo-class K that does not exist,
so they are known to be mislabeled and calibrate the cutoff.
"""

from __future__ import annotations

import numbers
from functools import partial

import numpy as np

from . import scores as _scores
from .constants import AUTO_THRESHOLDS, AUX_QUANTILE, COUNT_THRESHOLDS, is_aux_threshold
from .validation import check_indices, check_labels, check_num_classes, check_scores, check_threshold, \
    check_threshold_value


def resolve_threshold(method="auto", score_name=None):
    """``method`` as :func:`compute_threshold` applies it: ``"auto"`` becomes the method of
    :data:`sei.constants.AUTO_THRESHOLDS` for ``score_name``, else ``"zero"`` for signed scores (or
    no name) and ``"gmm"`` otherwise; any other method is returned checked, a number as float.

    >>> resolve_threshold("auto", "poe_knn"), resolve_threshold("auto", "sei"), resolve_threshold("auto", "loss")
    ('cl_count', 'zero', 'gmm')
    """
    method = check_threshold(method)
    if not (isinstance(method, str) and method == "auto"):
        return method
    if score_name in AUTO_THRESHOLDS:
        return AUTO_THRESHOLDS[score_name]
    return "zero" if (score_name is None or score_name in _scores.signed_names()) else "gmm"


def needs_count(method, score_name=None) -> bool:
    """Whether ``method`` (as :func:`resolve_threshold` resolves it) needs ``num_issues``."""
    method = resolve_threshold(method, score_name)
    return isinstance(method, str) and method in COUNT_THRESHOLDS


def check_count_score(method, score_name) -> None:
    """A ValueError when ``method`` (as :func:`resolve_threshold` resolves it for ``score_name``) is a
    count cutoff and the score has no class probabilities of its own to count on: the one home of
    that rule (``TrainConfig``, ``sei_cleanlab``, :func:`sei.neighbors.feature_issue_count`)."""
    if needs_count(method, score_name) and _scores.get(score_name).class_log_probs is None:
        have = " or ".join(repr(n) for n, s in _scores.SCORES.items() if s.class_log_probs is not None)
        raise ValueError(f"threshold={method!r} counts on a score's own class probabilities, which score "
                         f"{score_name!r} does not have: use score={have} (or 'auto') with features, or threshold "
                         "'zero', 'gmm' or a number.")


def compute_threshold(scores, method="auto", *, aux_indices=None, quantile=AUX_QUANTILE, score_name=None, seed=0,
                      num_issues=None) -> float:
    """Cutoff below which a score flags a sample as mislabeled.

    Parameters
    ----------
    scores : np.ndarray
        (N,) scores, lower = more likely mislabeled (NaN entries are ignored).
    method : str or float
        One of ``"auto"``, ``"aux_mean"``, ``"aux_quantile"``, ``"zero"``, ``"gmm"``, or a number.
    aux_indices : array-like of int, optional
        Positions of the auxiliary (known-mislabeled) samples; needed by the ``aux_*`` methods.
    quantile : float
        Quantile of auxiliary scores for ``"aux_quantile"`` (AUM uses 0.99).
    score_name : str, optional
        Name of the score, so ``"auto"`` can pick its method (:func:`resolve_threshold`).
    num_issues : int, optional
        For ``"cl_count"``: how many of the lowest-scored samples to flag
        (:func:`estimate_num_issues` on the score's class probabilities).

    Returns
    -------
    float

    Examples
    --------
    >>> compute_threshold(np.array([-3.0, 2.0, 4.0]), "zero")
    0.0
    >>> compute_threshold(np.array([-3.0, -1.0, 2.0, 4.0]), "aux_mean", aux_indices=[0, 1])
    -2.0
    """
    scores = check_scores(scores)
    method = resolve_threshold(method, score_name)
    if isinstance(method, float):
        return method
    if method in COUNT_THRESHOLDS:
        if num_issues is None:
            raise ValueError(
                f"threshold={method!r} (what 'auto' is for {score_name!r}) flags as many samples as confident "
                "learning counts: pass num_issues=sei.thresholds.estimate_num_issues(labels, class_log_probs), or "
                "use threshold='zero' or 'gmm'." if score_name in AUTO_THRESHOLDS else
                f"threshold={method!r} flags as many samples as confident learning counts: pass "
                "num_issues=sei.thresholds.estimate_num_issues(labels, class_log_probs).")
        return count_threshold(scores, num_issues)
    if method == "zero":
        return 0.0
    if method == "gmm":
        return _gmm_threshold(scores, seed=seed)
    if aux_indices is None:
        raise ValueError(
            f"threshold={method!r} needs auxiliary samples: pass aux_indices (threshold_samples), "
            "or use threshold='zero', 'gmm' or 'auto'."
        )
    aux = check_indices(aux_indices, scores.shape[0])
    aux_scores = scores[aux]
    aux_scores = aux_scores[np.isfinite(aux_scores)]
    if aux_scores.size == 0:
        raise ValueError("No auxiliary sample has a finite score; record them during training.")
    if not (method == "aux_mean" or 0 < quantile < 1):
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}.")
    return _finite_statistic(aux_scores, np.mean if method == "aux_mean" else partial(np.quantile, q=quantile))


def _finite_statistic(x: np.ndarray, stat) -> float:
    """``stat(x)`` of finite float64 ``x`` (mean, quantile), finite even where the sum or the
    interpolation overflows (scores near the float64 range): then computed on ``x`` divided
    by its largest magnitude, and scaled back."""
    with np.errstate(over="ignore", invalid="ignore"):
        value = float(stat(x))
    if np.isfinite(value):
        return value
    scale = float(np.abs(x).max())
    return float(np.clip(stat(x / scale) * scale, x.min(), x.max()))


def _gmm_threshold(scores: np.ndarray, seed: int = 0) -> float:
    from sklearn.mixture import GaussianMixture

    x = scores[np.isfinite(scores)]
    if x.size == 0:
        raise ValueError("threshold='gmm' needs finite scores, but every score is NaN or infinite (samples never "
                         "recorded?): record the samples during training, or score a history that holds them.")
    if x.size < 4 or np.ptp(x) == 0:
        return float(np.min(x))  # nothing to separate: flag nothing
    gmm = GaussianMixture(2, random_state=seed, reg_covar=1e-6 * max(np.var(x), 1e-12)).fit(x[:, None])
    low = int(np.argmin(gmm.means_[:, 0]))
    grid = np.linspace(x.min(), x.max(), 2048)
    post = gmm.predict_proba(grid[:, None])[:, low]
    above = np.flatnonzero(post < 0.5)
    # first grid point, scanning up from the low mean, where the low component stops winning
    start = np.searchsorted(grid, gmm.means_[low, 0])
    above = above[above >= start]
    return float(grid[above[0]]) if above.size else float(x.max())


def count_threshold(scores, num_issues) -> float:
    """The cutoff that flags the ``num_issues`` lowest finite ``scores`` (NaN and infinite scores
    are never flagged, as in :func:`flag_issues`): halfway between the ``num_issues``-th lowest
    score and the next, or just above it where there is no next or it is equal (samples tied at
    the boundary are flagged together); the lowest score for 0 (nothing is below it).

    >>> count_threshold(np.array([3.0, -1.0, np.nan, 1.0]), 2)
    2.0
    """
    scores = check_scores(scores)
    if isinstance(num_issues, (bool, np.bool_)) or not isinstance(num_issues, numbers.Integral) or num_issues < 0:
        raise ValueError(f"num_issues must be an integer >= 0, got {num_issues!r}.")
    x = np.sort(scores[np.isfinite(scores)])
    n = min(int(num_issues), x.size)
    if n == 0:
        return float(x[0]) if x.size else 0.0
    lo = x[n - 1]
    if n < x.size and x[n] > lo and np.isfinite(mid := lo + (x[n] - lo) / 2):
        return float(mid)
    return float(np.nextafter(lo, np.inf))


#: Rows per step of :func:`estimate_num_issues` (an (n, K) float64 block each).
_COUNT_ROWS = 8192


def estimate_num_issues(labels, class_log_probs, *, num_samples=None, rows=None) -> int:
    """Confident learning's count of label issues, ``cleanlab.count.num_label_issues(labels,
    pred_probs)`` with its default ``"off_diagonal"`` estimate and ``pred_probs`` the softmax of
    ``class_log_probs``, computed over blocks of rows: O(K) memory beyond one block, so it runs
    where the (N, K) probabilities never exist at once (1e6 samples x 1,000 classes).

    Parameters
    ----------
    labels : array-like of int, shape (N,)
    class_log_probs : np.ndarray or callable
        (N, K) unnormalised log-probabilities, or ``f(slice) -> (n, K)`` for a block of rows (with
        ``num_samples``); the block may be a :class:`sei._logp_top.SparseRows` (a few listed
        classes per row, one value for the rest: O(n s), never (n, K)). NaN rows (samples never
        seen) are left out.
    rows : array-like of bool, shape (N,), optional
        Count these rows only (e.g. not the auxiliary samples).

    Returns
    -------
    int

    Notes
    -----
    Two passes over the rows. First the per-class thresholds: the mean probability of class k
    among the samples labelled k (2 for a class nobody carries, clipped below as cleanlab does).
    Then cleanlab's rule per row, in closed form: with ``n`` classes at or above their threshold
    (within 1e-6), a row is an issue when ``n >= 1``, some other class beats the label by more than
    1e-6 (``_reduce_issues``), and either ``n > 1`` (the guess is the argmax) or the label is not
    among them (the guess is the one confident class). Tests check the count equal to cleanlab's.
    """
    from cleanlab.internal.constants import CONFIDENT_THRESHOLDS_LOWER_BOUND, FLOATING_POINT_COMPARISON

    labels = check_labels(labels)
    if callable(class_log_probs):
        if num_samples is None:
            raise ValueError("Pass num_samples= with a callable class_log_probs (rows of a slice).")
        block = class_log_probs
    else:
        arr = np.asarray(class_log_probs)
        if arr.ndim != 2 or arr.shape[0] != labels.shape[0]:
            raise ValueError(f"class_log_probs must be (N, K) with N = {labels.shape[0]} labels, got {arr.shape}.")
        num_samples, block = arr.shape[0], (lambda sl: arr[sl])
    if labels.shape[0] != num_samples:
        raise ValueError(f"labels has {labels.shape[0]} entries for {num_samples} samples.")
    use = np.ones(num_samples, bool) if rows is None else np.asarray(rows, bool)
    if use.shape != (num_samples,):
        raise ValueError(f"rows must be a boolean mask of {num_samples} samples, got shape {use.shape}.")

    def blocks():
        for start in range(0, num_samples, _COUNT_ROWS):
            sl = slice(start, start + _COUNT_ROWS)
            got = _Probs(block(sl), labels[sl], use[sl])
            if got.n:
                yield got

    sums = counts = None
    for b in blocks():
        if sums is None:
            k = b.num_classes
            check_labels(labels[use], num_classes=k)
            sums, counts = np.zeros(k), np.zeros(k)
        sums += np.bincount(b.y, weights=b.p_label, minlength=k)
        counts += np.bincount(b.y, minlength=k)
    if sums is None:
        return 0
    thresholds = np.where(counts > 0, sums / np.maximum(counts, 1), 2.0)
    thresholds = np.clip(thresholds, CONFIDENT_THRESHOLDS_LOWER_BOUND, None)
    total = 0
    for b in blocks():
        n_conf, label_conf = b.confident(thresholds - 1e-6)
        beaten = b.other_max > b.p_label + FLOATING_POINT_COMPARISON
        total += int(np.count_nonzero((n_conf >= 1) & beaten & ((n_conf > 1) | ~label_conf)))
    return total


class _Probs:
    """One block of :func:`estimate_num_issues`: the softmax of dense (n, K) or
    :class:`~sei._logp_top.SparseRows` log-probabilities over the rows kept (``use``, not NaN)."""

    def __init__(self, lp, y, use):
        from ._logp_top import SparseRows

        self.sparse = isinstance(lp, SparseRows)
        if self.sparse:
            self.num_classes = lp.num_classes
            ok = use & ~np.isnan(lp.rest) & ~np.isnan(np.where(lp.classes >= 0, lp.values, 0.0)).any(axis=1)
            cls, rest, y = lp.classes[ok], lp.rest[ok], y[ok]
            vals = np.where(cls >= 0, lp.values[ok], -np.inf)
            n_rest = self.num_classes - (cls >= 0).sum(axis=1)
            with np.errstate(divide="ignore"):
                rest_lse = np.where(n_rest > 0, np.log(np.maximum(n_rest, 1)) + rest, -np.inf)
            top = np.maximum(vals.max(axis=1, initial=-np.inf), rest_lse)
            log_z = top + np.log(np.exp(vals - top[:, None]).sum(axis=1) + np.exp(rest_lse - top))
            self.cls, self.p = cls, np.where(cls >= 0, np.exp(vals - log_z[:, None]), 0.0)
            self.p_rest = np.where(n_rest > 0, np.exp(rest - log_z), 0.0)
            self.n_rest = n_rest
            at = cls == y[:, None]
            listed = at.any(axis=1)
            self.p_label = np.where(listed, np.where(at, self.p, 0.0).sum(axis=1), self.p_rest)
            self._at, self._listed = at, listed
        else:
            lp = np.asarray(lp, dtype=np.float64)
            self.num_classes = lp.shape[1]
            ok = use & ~np.isnan(lp).any(axis=1) & np.isfinite(lp).any(axis=1)
            from .entropy import softmax

            self.p, y = softmax(lp[ok], axis=1), y[ok]
            self.p_label = self.p[np.arange(y.size), y]
        self.y, self.n = y, y.size

    @property
    def other_max(self):
        """Per row, the largest probability of a class other than the label (the second pass only)."""
        if not self.sparse:
            others = self.p.copy()
            others[np.arange(self.n), self.y] = -np.inf
            return others.max(axis=1, initial=-np.inf)
        others = np.where(self._at | (self.cls < 0), -np.inf, self.p).max(axis=1, initial=-np.inf)
        return np.maximum(others, np.where(self.n_rest - ~self._listed > 0, self.p_rest, -np.inf))

    def confident(self, floor):
        """(number of classes with p >= floor[class], whether the label is one of them) per row."""
        if not self.sparse:
            conf = self.p >= floor
            return conf.sum(axis=1), conf[np.arange(self.n), self.y]
        listed = (self.cls >= 0) & (self.p >= floor[np.maximum(self.cls, 0)])
        # classes not listed, at the row's rest value: all classes under it minus the listed ones
        order = np.sort(floor)
        under = np.searchsorted(order, self.p_rest, side="right")
        under_listed = ((self.cls >= 0) & (floor[np.maximum(self.cls, 0)] <= self.p_rest[:, None])).sum(axis=1)
        rest_conf = np.where(self.n_rest > 0, under - under_listed, 0)
        label_conf = np.where(self._listed, (listed & self._at).any(axis=1), floor[self.y] <= self.p_rest)
        return listed.sum(axis=1) + rest_conf, label_conf


def flag_issues(scores, threshold) -> np.ndarray:
    """Boolean mask: ``scores < threshold``; NaN scores are never flagged. ``threshold`` must be
    a finite number (a NaN cutoff would silently flag nothing): ValueError otherwise.

    Examples
    --------
    >>> flag_issues(np.array([-1.0, 0.5, np.nan]), 0.0)
    array([ True, False, False])
    """
    scores = check_scores(scores)
    with np.errstate(invalid="ignore"):
        return np.asarray(scores < check_threshold_value(threshold)) & np.isfinite(scores)


def draw_auxiliary(labels, num_classes, *, num_aux=None, seed=0, exclude=None):
    """Relabel a random subset to the pseudo-class ``num_classes`` (K).

    Parameters
    ----------
    labels : np.ndarray
        (N,) integer labels in 0..K-1.
    num_classes : int
        K, the number of real classes; auxiliary samples get label K.
    num_aux : int, optional
        How many auxiliary samples; default ``N // (K + 1)`` (the paper; the authors'
        code uses ``N // K``).
    seed : int
        Seed of the draw.
    exclude : array-like of int, optional
        Samples never drawn (e.g. the other run's auxiliary set).

    Returns
    -------
    new_labels : np.ndarray
        (N,) labels with K at the auxiliary positions.
    aux_indices : np.ndarray
        Sorted positions of the auxiliary samples.

    Examples
    --------
    >>> new, aux = draw_auxiliary(np.zeros(11, int), 2, seed=0)
    >>> len(aux), new[aux].tolist()
    (3, [2, 2, 2])
    """
    num_classes = check_num_classes(num_classes)
    labels = check_labels(labels, num_classes=num_classes)
    n = labels.shape[0]
    if num_aux is None:
        num_aux = n // (num_classes + 1)
    if isinstance(num_aux, bool) or not isinstance(num_aux, numbers.Integral) or num_aux < 0:
        raise ValueError(f"num_aux must be a non-negative int, got {num_aux!r}.")
    pool = np.arange(n)
    if exclude is not None:
        pool = np.setdiff1d(pool, check_indices(exclude, n, "exclude"))
    if num_aux > pool.size:
        raise ValueError(f"Cannot draw {num_aux} auxiliary samples from {pool.size} eligible samples; lower num_aux.")
    rng = np.random.default_rng([0xA0C, int(seed)])  # a stream apart from the noise generators
    aux = np.sort(rng.choice(pool, size=int(num_aux), replace=False))
    new_labels = labels.copy()
    new_labels[aux] = num_classes
    return new_labels, aux


def two_run_auxiliary(labels, num_classes, *, num_aux=None, seed=0):
    """The authors' two-run protocol: two disjoint auxiliary sets.

    Returns ``[(labels_run1, aux1), (labels_run2, aux2)]``; train once per pair and
    combine the scores with :func:`combine_runs`.
    """
    first = draw_auxiliary(labels, num_classes, num_aux=num_aux, seed=seed)
    second = draw_auxiliary(labels, num_classes, num_aux=num_aux, seed=seed + 1, exclude=first[1])
    return [first, second]


def combine_runs(scores_per_run, aux_per_run) -> np.ndarray:
    """Average each sample's score over the runs where it was not auxiliary.

    Parameters
    ----------
    scores_per_run : sequence of (N,) arrays
    aux_per_run : sequence of index arrays, one per run

    Returns
    -------
    np.ndarray
        (N,) combined scores (NaN where a sample was auxiliary in every run).
    """
    if len(scores_per_run) != len(aux_per_run) or len(scores_per_run) == 0:
        raise ValueError("Pass one auxiliary index array per run, and at least one run.")
    stacked = np.stack([check_scores(s) for s in scores_per_run])
    n = stacked.shape[1]
    use = np.ones_like(stacked, dtype=bool)
    for r, aux in enumerate(aux_per_run):
        use[r, check_indices(aux, n)] = False
    use &= np.isfinite(stacked)
    count = use.sum(axis=0)
    total = np.where(use, stacked, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# The auxiliary class: every sample scored ---------------------------------------------------
#
# A run with the auxiliary pseudo-class leaves its auxiliary samples unscored (their own label
# was never trained). The engine's protocol (sei.engine.protocols.train_scoring_every_sample,
# what sei.train runs) trains a second run WITHOUT the pseudo-class and takes only the auxiliary
# samples' values from it (fill_auxiliary); the cutoff stays the first run's (flag_issues with
# the first run's threshold). The two helpers below are its numpy part.


def uses_auxiliary(threshold, aux_class="auto") -> bool:
    """Whether a run trains the auxiliary pseudo-class.

    ``aux_class="auto"`` (``sei.train``'s default) trains it only when the threshold is
    computed from the auxiliary samples (``"aux_mean"``, ``"aux_quantile"``).

    Examples
    --------
    >>> uses_auxiliary("aux_mean"), uses_auxiliary("auto"), uses_auxiliary("zero", True)
    (True, False, True)
    """
    if aux_class == "auto":
        return is_aux_threshold(threshold)
    return bool(aux_class)


def fill_auxiliary(first, second, aux_indices) -> np.ndarray:
    """Per-sample values of a run with the auxiliary class, completed by a run without it.

    Parameters
    ----------
    first, second : array-like, shape (N, ...)
        The same per-sample quantity (scores, pred_probs, predicted labels) from the run
        with the auxiliary pseudo-class and from the run without it.
    aux_indices : array-like of int
        The first run's auxiliary samples.

    Returns
    -------
    np.ndarray
        A copy of ``first`` whose rows at ``aux_indices`` come from ``second``; flag with
        ``flag_issues(filled_scores, first_threshold)`` (the cutoff stays the first run's).

    Examples
    --------
    >>> fill_auxiliary([0.5, np.nan, -1.0], [0.4, 0.2, 0.3], [1]).tolist()
    [0.5, 0.2, -1.0]
    """
    first = np.array(first, copy=True)
    second = np.asarray(second)
    if first.shape != second.shape:
        raise ValueError(f"first and second must have the same shape, got {first.shape} and {second.shape}.")
    aux = check_indices(aux_indices, first.shape[0])
    first[aux] = second[aux]
    return first
