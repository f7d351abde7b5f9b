"""Seeded label-noise generators for benchmarks and tests.

Every generator returns ``(noisy_labels, is_mislabeled)`` where ``is_mislabeled`` is
``noisy_labels != labels``. Symmetric, pair and confusion-calibrated noise flip exactly
``round(noise_rate * N)`` samples chosen uniformly at random; transition-matrix noise
draws each sample's noisy label from a row of a (K, K) matrix P(noisy = k | true = j).
"""

from __future__ import annotations

import numpy as np

from .validation import check_labels, check_num_classes, to_numpy


def _prepare(labels, num_classes, noise_rate):
    labels = check_labels(labels)
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    num_classes = check_num_classes(num_classes)
    labels = check_labels(labels, num_classes=num_classes)
    if not (isinstance(noise_rate, (int, float, np.floating)) and 0 <= noise_rate <= 1):
        raise ValueError(f"noise_rate must be a number in [0, 1], got {noise_rate!r}.")
    return labels, num_classes


# Each generator draws from its own stream of the seed: with a bare default_rng(seed),
# choice(N, m, replace=False) picks a prefix of the same permutation, so noise and
# auxiliary samples drawn with equal seeds would coincide.
_NOISE_STREAM = 0x5E1
_MATRIX_STREAM = 0x5E2
_TRANSITION_STREAM = 0x5E3


def _rng(seed, stream):
    return np.random.default_rng([stream, int(seed)])


def _flip_positions(n, noise_rate, rng):
    return rng.choice(n, size=int(round(noise_rate * n)), replace=False)


def symmetric_noise(labels, noise_rate, *, num_classes=None, seed=0):
    """Flip ``noise_rate`` of the labels to a uniformly drawn *different* class.

    Examples
    --------
    >>> noisy, mask = symmetric_noise(np.arange(10) % 2, 0.2, seed=0)
    >>> int(mask.sum())
    2
    """
    labels, k = _prepare(labels, num_classes, noise_rate)
    rng = _rng(seed, _NOISE_STREAM)
    idx = _flip_positions(labels.size, noise_rate, rng)
    noisy = labels.copy()
    noisy[idx] = (labels[idx] + rng.integers(1, k, size=idx.size)) % k
    return noisy, noisy != labels


def pair_noise(labels, noise_rate, *, num_classes=None, seed=0):
    """Flip ``noise_rate`` of the labels to the next class, ``(y + 1) % K``."""
    labels, k = _prepare(labels, num_classes, noise_rate)
    rng = _rng(seed, _NOISE_STREAM)
    idx = _flip_positions(labels.size, noise_rate, rng)
    noisy = labels.copy()
    noisy[idx] = (labels[idx] + 1) % k
    return noisy, noisy != labels


def _sample_rows(rows: np.ndarray, rng) -> np.ndarray:
    """Draw one column index per row of a row-stochastic matrix (vectorised)."""
    cdf = np.cumsum(rows, axis=1)
    cdf /= cdf[:, -1:]
    u = rng.random(rows.shape[0])[:, None]
    return np.minimum((u > cdf).sum(axis=1), rows.shape[1] - 1)


def confusion_noise(labels, confusion_matrix, noise_rate, *, seed=0):
    """Confusion-calibrated noise: flip ``noise_rate`` of the labels, each to a class drawn
    from the off-diagonal of its true class's row of ``confusion_matrix``.

    Use e.g. a model's cross-validated confusion matrix, so that flips go where a model
    (or a person) confuses classes. Rows without off-diagonal mass flip uniformly.

    Parameters
    ----------
    labels : np.ndarray
        (N,) true labels in 0..K-1.
    confusion_matrix : np.ndarray
        (K, K) non-negative counts or rates, rows = true class.
    noise_rate : float
        Share of samples to flip.
    """
    cm = np.asarray(to_numpy(confusion_matrix, "confusion_matrix"), dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion_matrix must be square (K, K), got shape {cm.shape}.")
    if not np.all(np.isfinite(cm)) or cm.min() < 0:
        raise ValueError("confusion_matrix must hold finite, non-negative counts or rates.")
    labels, k = _prepare(labels, cm.shape[0], noise_rate)
    off = cm.copy()
    np.fill_diagonal(off, 0.0)
    empty = off.sum(axis=1) == 0
    off[empty] = 1.0
    np.fill_diagonal(off, 0.0)
    rng = _rng(seed, _NOISE_STREAM)
    idx = _flip_positions(labels.size, noise_rate, rng)
    noisy = labels.copy()
    noisy[idx] = _sample_rows(off[labels[idx]], rng)
    return noisy, noisy != labels


def random_transition_matrix(num_classes, noise_rate, *, seed=0):
    """A random row-stochastic (K, K) matrix with ``1 - noise_rate`` on the diagonal and
    the rest spread over the off-diagonal with random (Dirichlet) weights."""
    k = check_num_classes(num_classes)
    rng = _rng(seed, _MATRIX_STREAM)
    off = rng.dirichlet(np.ones(k - 1), size=k) * noise_rate
    T = np.zeros((k, k))
    for j in range(k):  # K rows only
        T[j, np.arange(k) != j] = off[j]
        T[j, j] = 1.0 - noise_rate
    return T


def transition_matrix_noise(labels, noise_rate=None, *, transition_matrix=None, num_classes=None, seed=0):
    """Class-transition noise (the active-label-correction paper's): each label is
    redrawn from its row of a row-normalised transition matrix.

    Pass ``transition_matrix`` (K, K), or ``noise_rate`` to draw a random one with
    :func:`random_transition_matrix`. Returns ``(noisy_labels, is_mislabeled)``.
    """
    if transition_matrix is None:
        if noise_rate is None:
            raise ValueError("Pass noise_rate= or transition_matrix=.")
        labels, k = _prepare(labels, num_classes, noise_rate)
        transition_matrix = random_transition_matrix(k, noise_rate, seed=seed)
    T = np.asarray(to_numpy(transition_matrix, "transition_matrix"), dtype=np.float64)
    if T.ndim != 2 or T.shape[0] != T.shape[1] or not np.all(np.isfinite(T)) or T.min() < 0:
        raise ValueError("transition_matrix must be a square (K, K) matrix of non-negative numbers.")
    if not np.allclose(T.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("transition_matrix rows must sum to 1 (P(noisy = k | true = j) per row j).")
    labels = check_labels(labels, num_classes=T.shape[0])
    rng = _rng(seed, _TRANSITION_STREAM)
    noisy = _sample_rows(T[labels], rng)
    return noisy, noisy != labels
