"""One vectorised validation step per public entry point, for the core and both adapters.

Every check raises :class:`ValueError` or :class:`TypeError` with a message that
says what was wrong and how to fix it. Nothing here loops over samples in Python.
Public entries (``sei.*``, ``sei_cleanlab.*``, ``sei_fiftyone.*``) validate here once;
the private ``_compute`` helpers behind them skip it.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

from .constants import ROW_SUM_ATOL


def _is_tensor(x) -> bool:
    return hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy")


def _is_low_float(dtype) -> bool:
    """float16, bfloat16 (``ml_dtypes``) and narrower floats: computed in float32."""
    dtype = np.dtype(dtype)
    if dtype.itemsize >= 4:  # the common case, without numpy's slow dtype.name
        return False
    return dtype.kind == "f" or dtype.name in ("bfloat16",) or dtype.name.startswith("float8")


def input_eps(x) -> float:
    """Machine epsilon of ``x``'s dtype *before* any conversion (0.0 for integers).

    A torch ``bfloat16`` tensor gives 2**-7, ``float16`` 2**-10, so that checks on values
    rounded at that precision (e.g. probability rows summing to one) can allow for it.
    """
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return 0.0
    if _is_tensor(x):
        if not getattr(dtype, "is_floating_point", False):
            return 0.0
        import torch  # only reached with a torch tensor in hand

        return float(torch.finfo(dtype).eps)
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        return 0.0
    if dtype.name == "bfloat16":
        return 2.0 ** -7
    return float(np.finfo(dtype).eps) if dtype.kind == "f" else 0.0


def row_sum_tolerance(eps: float = 0.0) -> float:
    """Allowed deviation of a probability row's sum from 1 for inputs of precision ``eps``.

    :data:`~sei.constants.ROW_SUM_ATOL` for float32 and wider; two units of the input's
    precision for narrower floats (a bfloat16 softmax row is off by up to ~0.004, a
    float16 one by up to ~0.001, from rounding each entry).
    """
    return max(ROW_SUM_ATOL, 2.0 * float(eps))


def as_float(arr: np.ndarray) -> np.ndarray:
    """``arr`` in the precision computations use: float16 / bfloat16 -> float32,
    integers and booleans -> float64, float32 and float64 as they are."""
    if _is_low_float(arr.dtype):
        return arr.astype(np.float32)
    if arr.dtype.kind != "f":
        return arr.astype(np.float64)
    return arr


def to_numpy(x, name: str = "array") -> np.ndarray:
    """Return ``x`` as a numpy array, the one place inputs are converted.

    torch tensors (CPU or CUDA, with or without grad) are detached and moved to CPU
    without importing torch; float16, bfloat16 and narrower floats (torch or numpy)
    become float32, so that no computation runs in half precision (``log(p + 1e-8)``
    rounds to ``log(0)`` in float16).
    """
    if _is_tensor(x):
        x = x.detach().cpu()
        if getattr(x.dtype, "is_floating_point", False) and x.element_size() < 4:
            x = x.float()
        try:
            x = x.numpy()
        except TypeError as e:  # dtypes numpy has no equivalent for
            raise TypeError(f"{name} has torch dtype {x.dtype}, which has no numpy equivalent ({e}).") from None
    if isinstance(x, np.ndarray):
        return as_float(x) if x.dtype.kind not in "iub" and _is_low_float(x.dtype) else x
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
    """Validate an (N, K) matrix of probabilities (or logits when ``from_logits``).

    Returns a float array: float16 / bfloat16 inputs come back as float32.
    """
    eps = input_eps(pred_probs)
    pred_probs = to_numpy(pred_probs, name)
    if pred_probs.ndim != 2:
        raise ValueError(f"{name} must be 2-D of shape (N, K), got shape {pred_probs.shape}.")
    if pred_probs.shape[0] == 0:
        raise ValueError(f"{name} is empty: pass at least one sample.")
    if pred_probs.dtype.kind not in "fiu" or pred_probs.dtype.kind == "b":
        raise TypeError(f"{name} must hold real numbers, got dtype {pred_probs.dtype}.")
    if pred_probs.shape[1] < 2:
        raise ValueError(f"{name} has {pred_probs.shape[1]} column(s); at least 2 classes are needed.")
    check_probability_values(pred_probs, name, from_logits=from_logits, eps=eps)
    return as_float(pred_probs)


def check_probability_values(arr: np.ndarray, name: str, *, from_logits: bool = False, eps: float | None = None) -> None:
    """Finite values; unless logits, in [0, 1] with rows (last axis) summing to 1.

    ``eps`` is the precision the values were produced in (:func:`input_eps` of the
    original input; default: ``arr``'s own dtype): the row-sum tolerance grows with it.
    """
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; check the model outputs (e.g. for a diverged run).")
    if from_logits:
        return
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(
            f"{name} has values outside [0, 1]: these look like logits; "
            "apply a softmax first or pass from_logits=True."
        )
    if eps is None:
        eps = input_eps(arr)
    sums = arr.sum(axis=-1, dtype=np.float64)
    tol = row_sum_tolerance(eps)
    if not np.allclose(sums, 1.0, rtol=0.0, atol=tol):
        bad = float(np.abs(sums - 1).max())
        raise ValueError(
            f"{name} rows must sum to 1 (largest deviation {bad:.3g}, allowed {tol:.3g} at this precision); "
            "pass softmax probabilities, or logits with from_logits=True."
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
    if _is_tensor(history):
        ok = dtype.is_floating_point or not (dtype.is_complex or str(dtype) == "torch.bool")
    else:
        try:
            dtype = np.dtype(dtype) if dtype is not None else None
        except TypeError:
            dtype = None
        ok = dtype is not None and (_is_low_float(dtype) or (dtype.kind in "fiu" and dtype.kind != "b"))
    if not ok:
        raise TypeError(f"{name} must hold real numbers, got dtype {getattr(history, 'dtype', None)}.")
    return T, N, K


def as_history(history, name: str = "pred_probs_history"):
    """Validate a (T, N, K) history; return ``(history, (T, N, K), eps)``.

    torch tensors and nested lists are converted with :func:`to_numpy` (float32 for
    half-precision tensors); numpy arrays and ``np.memmap`` (and other array-likes with
    ``shape`` and ``dtype``, e.g. h5py datasets) are returned as they are, to be read in
    chunks. ``eps`` is the input's precision (:func:`input_eps`), for the row-sum check.
    """
    eps = input_eps(history)
    if getattr(history, "shape", None) is None and isinstance(history, (list, tuple)):
        history = to_numpy(history, name)
    shape = check_history_shape(history, name)
    if _is_tensor(history):
        history = to_numpy(history, name)
    return history, shape, eps


def check_mask(mask, num_samples: int, name: str) -> np.ndarray:
    """An (N,) boolean mask (or 0/1 integers) with one entry per sample."""
    mask = to_numpy(mask, name)
    if mask.ndim != 1 or mask.shape[0] != num_samples:
        raise ValueError(
            f"{name} must be an (N,) boolean mask with one entry per sample (N = {num_samples}), "
            f"got shape {mask.shape}."
        )
    if mask.dtype.kind != "b":
        if mask.dtype.kind not in "iu" or not np.all((mask == 0) | (mask == 1)):
            raise TypeError(f"{name} must be a boolean mask, got dtype {mask.dtype}; pass a bool array.")
    return mask.astype(bool, copy=False)


def check_sample_weights(weights, num_samples: int, name: str) -> np.ndarray:
    """(N,) finite non-negative floats, one per sample."""
    weights = to_numpy(weights, name)
    if weights.ndim != 1 or weights.shape[0] != num_samples:
        raise ValueError(
            f"{name} must have one value per sample, shape ({num_samples},), got shape {weights.shape}."
        )
    if weights.dtype.kind not in "fiu" or weights.dtype.kind == "b":
        raise TypeError(f"{name} must hold real numbers, got dtype {weights.dtype}.")
    weights = as_float(weights)
    if not np.all(np.isfinite(weights)) or weights.min() < 0:
        raise ValueError(f"{name} must be finite and non-negative.")
    if num_samples and not weights.any():
        raise ValueError(f"{name} are all zero, so no sample would count: give the samples to use a positive "
                         f"weight (or pass {name}=None for equal weights).")
    return weights


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


def check_int_param(value, name: str, minimum: int = 1, why: str = "") -> int:
    """An integer parameter (``epochs``, ``batch_size``, ...) of at least ``minimum``.

    bools and floats (even integral ones such as ``5.0``) are refused with a TypeError,
    values below ``minimum`` with a ValueError; both messages name the parameter.
    """
    return _check_int(value, name, minimum, why or f"pass a whole number >= {minimum}")


def check_real_param(value, name: str, minimum: float = 0.0, *, strict: bool = False) -> float:
    """A finite real parameter (``lr``, ``momentum``, ...) of at least ``minimum`` (above it
    with ``strict=True``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
    value = float(value)
    if not np.isfinite(value) or value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {minimum}, got {value}.")
    return value


def check_threshold_value(value, name: str = "threshold") -> float:
    """A numeric cutoff: a finite real number (NaN would flag nothing, +-inf everything or nothing)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"A numeric {name} must be a real number, got {type(value).__name__}.")
    if not np.isfinite(value):
        raise ValueError(f"A numeric {name} must be finite, got {value}: pass a finite cutoff, or a method "
                         "name such as 'auto'.")
    return float(value)


def check_threshold(value, name: str = "threshold"):
    """A threshold: a method name of :data:`sei.constants.THRESHOLD_METHODS` (returned as is) or a
    finite real number (returned as float); the one check of :func:`sei.compute_threshold` and
    :class:`sei.engine.TrainConfig`. ValueError otherwise."""
    from .constants import THRESHOLD_METHODS

    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return check_threshold_value(value, name)
    if isinstance(value, str) and value in THRESHOLD_METHODS:
        return value
    raise ValueError(f"Unknown {name} {value!r}; use a number or one of {', '.join(THRESHOLD_METHODS)}.")


def check_count_or_fraction(value, name: str) -> float | int:
    """A size given as a count (int >= 1) or as a fraction of a set (float in (0, 1]); ``2.5``
    is refused, not truncated."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an int (a count) or a float in (0, 1] (a fraction), "
                        f"got {type(value).__name__}.")
    if isinstance(value, numbers.Integral):
        return check_int_param(value, name, 1, "pass a count of at least 1, or a fraction in (0, 1]")
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be an int >= 1 (a count) or a float in (0, 1] (a fraction), got {value!r}; "
                         "write a count as an int.")
    return float(value)


def check_history_path(path) -> str:
    """``history_path`` must name a file in an existing, writable folder (checked before
    any training, not when the first epoch is written)."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"history_path must be a path, got {type(path).__name__}.") from None
    if os.path.isdir(path):
        raise ValueError(f"history_path {path!r} is a folder; pass a file path such as "
                         f"{os.path.join(path, 'history.npy')!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"history_path {path!r}: folder {folder!r} does not exist; create it first.")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"history_path {path!r}: folder {folder!r} is not writable.")
    return path


def check_history_file(path: str, shape: tuple, num_epochs: int) -> None:
    """A resumed run's history file must exist with this run's shape and dtype."""
    fix = ("resume with the history file of the same run, pass history_path=None, or start a fresh run "
           "(a fresh recorder replaces the file)")
    if not os.path.exists(path):
        raise ValueError(f"history_path {path!r} does not exist, but the restored recorder has already written "
                         f"{num_epochs} epoch(s) to it; {fix}.")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            file_shape, fortran, dtype = read_header(f)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"history_path {path!r} is not a .npy history file ({e}); {fix}.") from None
    if tuple(file_shape) != tuple(shape) or dtype != np.float32 or fortran:
        raise ValueError(f"history_path {path!r} holds a {tuple(file_shape)} {dtype} array, but this run records "
                         f"{tuple(shape)} float32 (max_epochs, N, K): it belongs to another run; {fix}.")


def check_scores(scores, name: str = "scores") -> np.ndarray:
    """(N,) real scores as float64 (NaN allowed: never flagged)."""
    scores = to_numpy(scores, name)
    if scores.ndim != 1:
        raise ValueError(f"{name} must be 1-D of shape (N,), got shape {scores.shape}.")
    if scores.size == 0:
        raise ValueError(f"{name} is empty: pass at least one sample.")
    if scores.dtype.kind not in "fiu" or scores.dtype.kind == "b":
        raise TypeError(f"{name} must be real numbers, got dtype {scores.dtype}.")
    return scores.astype(np.float64, copy=False)


def check_features(features, n=None) -> np.ndarray:
    """(N, D) finite real features as float32, N >= 2 (and N = ``n`` when given)."""
    x = to_numpy(features, "features")
    if x.dtype.kind not in "fiub":
        raise TypeError(f"features must hold real numbers, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be a (N, D) array with N >= 2, got shape {x.shape}")
    if n is not None and x.shape[0] != n:
        raise ValueError(f"features has {x.shape[0]} rows but there are {n} labels; pass one row per sample")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or inf; impute or drop those rows first")
    return x


def check_neighbors(neighbors, n):
    """(N, k) integer indices in 0..N-1 (as from :func:`knn_indices`), or a clear error.

    Negative indices would silently wrap around to the last samples, so they are refused.
    """
    neighbors = to_numpy(neighbors, "neighbors")
    if neighbors.ndim != 2 or neighbors.shape[0] != n or neighbors.shape[1] < 1:
        raise ValueError(f"neighbors must be (N, k) = ({n}, k) with k >= 1, one row per sample, "
                         f"got shape {neighbors.shape}; compute them with sei.knn_indices(features, k)")
    if neighbors.dtype.kind not in "iu":
        raise TypeError(f"neighbors must be integer sample indices, got dtype {neighbors.dtype}")
    lo, hi = int(neighbors.min()), int(neighbors.max())
    if lo < 0 or hi >= n:
        raise ValueError(f"neighbors must be sample indices in 0..{n - 1}, got values in {lo}..{hi}; "
                         "compute them with sei.knn_indices(features, k) on the same samples")
    return neighbors.astype(np.int64, copy=False)


def check_k(k, n):
    """``k`` as an int in [1, N-1], or a ValueError naming the bounds."""
    k = int(k)
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {k}")
    return k
