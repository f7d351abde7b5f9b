"""Entropy and signed entropy of predicted class probabilities.

For probabilities p (N examples, K classes) and given labels y:

    H(p)        = -sum_k p_k log p_k      (natural log, 0 log 0 = 0; exactly 0 for a one-hot row)
    sign(p, y)  = +1 if p_y >= max_k p_k else -1            (a tie counts as aligned)
    SE(p, y)    = sign(p, y) * H(p)

:func:`row_entropy` is the one place where entropy is computed (the recorder's statistics,
the active-learning selectors and the functions below call it): ``-p log(p + eps)`` is
negative in float64 for a one-hot row (``log(1 + 1e-8) > 0``), which flipped the sign of
every confident correct sample's signed entropy.

Summed over training epochs, SE gives the Signed Entropy Integral (SEI): samples the
model keeps disagreeing with go strongly negative.
"""

from __future__ import annotations

import numpy as np
from scipy.special import entr

from .validation import check_labels, check_pred_probs, to_numpy


def softmax(logits, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``.

    Examples
    --------
    >>> softmax(np.array([[0.0, 0.0]]))
    array([[0.5, 0.5]])
    """
    logits = np.asarray(to_numpy(logits, "logits"), dtype=np.float64)
    z = logits - logits.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def row_entropy(pred_probs) -> np.ndarray:
    """Entropy of each row of an (..., K) probability array, unchecked (the shared kernel).

    ``-sum_k p_k log p_k`` with ``0 log 0 = 0`` (:func:`scipy.special.entr`), clamped at 0:
    never negative, and exactly 0 for a one-hot row, in every float dtype. float32 input is
    computed in float32, anything else in float64.

    Examples
    --------
    >>> row_entropy(np.array([[1.0, 0.0], [1.0 - 1e-12, 1e-12]])) >= 0
    array([ True,  True])
    """
    p = np.asarray(pred_probs)
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)
    h = entr(p).sum(axis=-1)
    return np.maximum(h, 0.0, out=h) if isinstance(h, np.ndarray) else max(h, 0.0)


#: Magnitude given to a zero entropy in :func:`signed_row_entropy`: the smallest normal
#: float32, so that it survives float32 storage and sums while changing no real entropy.
SIGN_FLOOR = float(np.finfo(np.float32).tiny)


def signed_row_entropy(h: np.ndarray, aligned: np.ndarray) -> np.ndarray:
    """``sign * H`` from row entropies ``h`` (>= 0) and the (N,) bool ``aligned``, the sign
    kept where H = 0: a one-hot row (a float16 history, or probabilities that underflowed)
    scores +SIGN_FLOOR when aligned and -SIGN_FLOOR when not, so that a confident
    disagreement stays negative (the limit of SE as the wrong prediction grows certain)."""
    h = np.maximum(h, SIGN_FLOOR)
    return np.where(aligned, h, -h)


def _aligned(pred_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    given = np.take_along_axis(pred_probs, labels[:, None], axis=1)[:, 0]
    return given >= pred_probs.max(axis=1)


def entropy(pred_probs) -> np.ndarray:
    """Shannon entropy (natural log) of each row of ``pred_probs``.

    Parameters
    ----------
    pred_probs : np.ndarray
        (N, K) predicted probabilities, N examples, K classes; rows sum to 1.

    Returns
    -------
    np.ndarray
        (N,) entropies in [0, log K].

    Examples
    --------
    >>> entropy(np.array([[1.0, 0.0], [0.5, 0.5]])).round(4)
    array([0.    , 0.6931])
    """
    return row_entropy(check_pred_probs(pred_probs))


def signed_entropy(pred_probs, labels) -> np.ndarray:
    """Signed entropy: +H where the given label is the argmax (ties count as
    aligned), -H otherwise.

    Parameters
    ----------
    pred_probs : np.ndarray
        (N, K) predicted probabilities, N examples, K classes.
    labels : np.ndarray
        (N,) given (possibly noisy) integer labels in 0..K-1.

    Returns
    -------
    np.ndarray
        (N,) floats; negative where the model disagrees with the given label.

    Examples
    --------
    >>> p = np.array([[0.9, 0.1], [0.9, 0.1]])
    >>> signed_entropy(p, np.array([0, 1])).round(3)
    array([ 0.325, -0.325])
    """
    pred_probs = check_pred_probs(pred_probs)
    labels = check_labels(labels, pred_probs.shape[0], pred_probs.shape[1])
    return signed_row_entropy(row_entropy(pred_probs), _aligned(pred_probs, labels))
