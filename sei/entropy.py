"""Entropy and signed entropy of predicted class probabilities.

For probabilities p (N examples, K classes) and given labels y:

    H(p)        = -sum_k p_k log(p_k + eps)                 (natural log, eps = 1e-8)
    sign(p, y)  = +1 if p_y >= max_k p_k else -1            (a tie counts as aligned)
    SE(p, y)    = sign(p, y) * H(p)

Summed over training epochs, SE gives the Signed Entropy Integral (SEI): samples the
model keeps disagreeing with go strongly negative.
"""

from __future__ import annotations

import numpy as np

from .validation import check_labels, check_pred_probs, to_numpy
from .constants import EPS


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


def _entropy(pred_probs: np.ndarray) -> np.ndarray:
    p = np.asarray(pred_probs, dtype=np.float64)
    return -(p * np.log(p + EPS)).sum(axis=-1)


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
    array([-0.    ,  0.6931])
    """
    return _entropy(check_pred_probs(pred_probs))


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
    h = _entropy(pred_probs)
    return np.where(_aligned(pred_probs, labels), h, -h)
