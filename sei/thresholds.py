"""Cutoffs that turn scores into mislabeled flags, and the auxiliary pseudo-class.

A sample is flagged when its score (lower = more likely mislabeled) is strictly below
the threshold. Methods:

- ``"aux_mean"``: the mean score of the auxiliary samples (the SEI paper's cutoff).
- ``"aux_quantile"``: the 99th percentile of the auxiliary samples' scores (AUM's cutoff).
- ``"zero"``: 0, for signed scores where a negative value means the model disagrees.
- ``"gmm"``: a two-component Gaussian mixture on the scores; flag where the lower
  component is the more probable one.
- ``"auto"`` (default, needs no auxiliary samples): ``"zero"`` for signed scores,
  ``"gmm"`` otherwise.
- a float: used as is.

Auxiliary samples are real samples relabelled to a pseudo-class K that does not exist,
so they are known to be mislabeled and calibrate the cutoff.
"""

from __future__ import annotations

import numbers
from functools import partial

import numpy as np

from . import scores as _scores
from .constants import AUX_QUANTILE, is_aux_threshold
from .validation import check_indices, check_labels, check_num_classes, check_scores, check_threshold, \
    check_threshold_value


def compute_threshold(scores, method="auto", *, aux_indices=None, quantile=AUX_QUANTILE, score_name=None, seed=0) -> float:
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
        Name of the score, so ``"auto"`` can pick ``"zero"`` for signed scores.

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
    method = check_threshold(method)
    if isinstance(method, float):
        return method
    if method == "auto":
        method = "zero" if (score_name is None or score_name in _scores.signed_names()) else "gmm"
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
