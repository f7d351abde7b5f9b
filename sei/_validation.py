"""One vectorised validation step per public entry point.

Every check raises :class:`ValueError` or :class:`TypeError` with a message that
says what was wrong and how to fix it. Nothing here loops over samples in Python.
"""

from __future__ import annotations

import numbers

import numpy as np

from .constants import ROW_SUM_ATOL


def to_numpy(x, name: str = "array") -> np.ndarray:
    """Return ``x`` as a numpy array; torch tensors are detached and moved to CPU
    without importing torch."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (str, bytes, dict, set)) or x is None:
        raise TypeError(f"{name} must be an array-like of numbers, got {type(x).__name__}.")
    try:
        arr = np.asarray(x)
    except Exception as e:  # ragged lists and the like
        raise TypeError(f"{name} could not be converted to a numpy array ({e}).") from None
    if arr.dtype == object:
        raise TypeError(f"{name} must be a rectangular array of numbers, got a ragged or object array.")
    return arr


def _check_int(value, name: str, minimum: int, why: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}: {why}.")
    return int(value)


def check_num_classes(num_classes) -> int:
    return _check_int(num_classes, "num_classes", 2, "mislabel detection needs two classes or more")


def check_num_samples(num_samples) -> int:
    return _check_int(num_samples, "num_samples", 1, "pass at least one sample")


def check_labels(labels, num_samples: int | None = None, num_classes: int | None = None, name: str = "labels") -> np.ndarray:
    """Validate integer labels of shape (N,) in 0..K-1 and return them as int64."""
    labels = to_numpy(labels, name)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D of shape (N,), got shape {labels.shape}; pass one integer label per sample.")
    if labels.size == 0:
        raise ValueError(f"{name} is empty: pass at least one sample.")
    if labels.dtype.kind == "b" or labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
            raise TypeError(
                f"{name} must have an integer dtype, got {labels.dtype}; convert with labels.astype(int)."
            )
        raise TypeError(
            f"{name} must be integer class indices 0..K-1, got dtype {labels.dtype}; "
            "map class names to indices first (e.g. with np.unique(..., return_inverse=True))."
        )
    if num_samples is not None and labels.shape[0] != num_samples:
        raise ValueError(
            f"{name} has {labels.shape[0]} entries but the predictions cover {num_samples} samples; "
            "pass one label per sample, in the same order."
        )
    if num_classes is not None:
        lo, hi = labels.min(), labels.max()
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name} must lie in 0..{num_classes - 1} (the predictions have {num_classes} columns), "
                f"got values in {lo}..{hi}; pass probabilities with one column per class."
            )
    return labels.astype(np.int64, copy=False)


def check_pred_probs(pred_probs, name: str = "pred_probs", *, from_logits: bool = False) -> np.ndarray:
    """Validate an (N, K) matrix of probabilities (or logits when ``from_logits``)."""
    pred_probs = to_numpy(pred_probs, name)
    if pred_probs.ndim != 2:
        raise ValueError(f"{name} must be 2-D of shape (N, K), got shape {pred_probs.shape}.")
    if pred_probs.shape[0] == 0:
        raise ValueError(f"{name} is empty: pass at least one sample.")
    if pred_probs.dtype.kind not in "fiu" or pred_probs.dtype.kind == "b":
        raise TypeError(f"{name} must hold real numbers, got dtype {pred_probs.dtype}.")
    if pred_probs.shape[1] < 2:
        raise ValueError(f"{name} has {pred_probs.shape[1]} column(s); at least 2 classes are needed.")
    check_probability_values(pred_probs, name, from_logits=from_logits)
    return pred_probs


def check_probability_values(arr: np.ndarray, name: str, *, from_logits: bool = False) -> None:
    """Finite values; unless logits, in [0, 1] with rows (last axis) summing to 1."""
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; check the model outputs (e.g. for a diverged run).")
    if from_logits:
        return
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(
            f"{name} has values outside [0, 1]: these look like logits; "
            "apply a softmax first or pass from_logits=True."
        )
    sums = arr.sum(axis=-1)
    if not np.allclose(sums, 1.0, atol=ROW_SUM_ATOL):
        bad = float(np.abs(sums - 1).max())
        raise ValueError(
            f"{name} rows must sum to 1 (largest deviation {bad:.3g}); pass softmax probabilities, "
            "or logits with from_logits=True."
        )


def check_history_shape(history, name: str = "pred_probs_history") -> tuple[int, int, int]:
    shape = getattr(history, "shape", None)
    if shape is None:
        raise TypeError(
            f"{name} must be a (T, N, K) array, an np.memmap or an SEIRecorder, got {type(history).__name__}."
        )
    if len(shape) != 3:
        raise ValueError(
            f"{name} must be 3-D of shape (T epochs, N samples, K classes), got shape {tuple(shape)}; "
            "stack one (N, K) probability matrix per epoch."
        )
    T, N, K = (int(s) for s in shape)
    if T == 0 or N == 0:
        raise ValueError(f"{name} is empty (shape {tuple(shape)}): record at least one epoch and one sample.")
    if K < 2:
        raise ValueError(f"{name} has {K} class column(s); at least 2 classes are needed.")
    dtype = getattr(history, "dtype", None)
    if dtype is None or dtype.kind not in "fiu" or dtype.kind == "b":
        raise TypeError(f"{name} must hold real numbers, got dtype {dtype}.")
    return T, N, K


def check_indices(indices, num_samples: int, name: str = "aux_indices") -> np.ndarray:
    indices = to_numpy(indices, name)
    if indices.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {indices.shape}.")
    if indices.size == 0:
        return indices.astype(np.int64)
    if indices.dtype.kind == "b":
        if indices.shape[0] != num_samples:
            raise ValueError(f"{name} as a boolean mask must have length {num_samples}, got {indices.shape[0]}.")
        return np.flatnonzero(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer sample indices, got dtype {indices.dtype}.")
    if indices.min() < 0 or indices.max() >= num_samples:
        raise ValueError(
            f"{name} must lie in 0..{num_samples - 1}, got values in {indices.min()}..{indices.max()}; "
            "pass positions of samples in the data."
        )
    return indices.astype(np.int64, copy=False)
