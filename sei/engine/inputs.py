"""What :func:`sei.train` is given: labels, class names and inputs, checked against the mode.

Everything here runs before a model is loaded or an image decoded, so bad data fails at
once with a ValueError / TypeError that names the problem and the fix.
"""

from __future__ import annotations

import numbers
import os

import numpy as np
import torch

from ..validation import check_labels, to_numpy
from .config import MODES

__all__ = ["check_data", "resolve_inputs", "no_readable_input"]



def check_data(inputs, labels, cfg):
    """``(inputs, labels (N,) int64, class_names, K, mode)`` for a :class:`TrainConfig`."""
    labels = check_labels(labels)
    n = labels.shape[0]
    class_names = cfg.class_names
    if class_names is None:
        class_names = [f"class {i}" for i in range(int(labels.max()) + 1)]
    k = len(class_names)
    if k < 2:
        raise ValueError(f"need at least 2 classes, got {k}: pass class_names with one name per class")
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must lie in 0..{k - 1} (len(class_names) = {k}), got values in "
                         f"{labels.min()}..{labels.max()}; pass one name per class in class_names")
    inputs, mode = resolve_inputs(inputs, cfg.mode, n)
    cfg.check_mode(mode)  # the mode's rules now; score='auto' is resolved once the readable inputs are known
    return inputs, labels, list(class_names), k, mode


_INPUTS_HELP = ("pass (N, D) float embeddings, N image paths, (N, H, W, 3) uint8 / (N, 3, H, W) float images, "
                "or a Dataset of images")


def resolve_inputs(inputs, mode, n):
    """Check ``inputs`` against ``mode`` before anything is loaded or trained; returns (inputs, mode).

    torch tensors are taken as numpy arrays (2-D float: embeddings; 3-/4-D: images), a list
    of numbers as an array (then refused if 1-D). Embeddings without one finite row and
    path lists where no file exists raise ValueError.
    """
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(inputs, torch.Tensor):
        inputs = to_numpy(inputs, "inputs")
    elif isinstance(inputs, (list, tuple)) and len(inputs) and isinstance(inputs[0], (numbers.Number, np.generic)):
        inputs = to_numpy(inputs, "inputs")
    if inputs is None or isinstance(inputs, (str, bytes, os.PathLike, dict, set, numbers.Number)):
        hint = " (one path? pass a list of paths, e.g. from sei.engine.data.scan_image_folder)" \
            if isinstance(inputs, (str, os.PathLike)) else ""
        raise TypeError(f"inputs must hold N samples, got {type(inputs).__name__}{hint}; {_INPUTS_HELP}")
    if not hasattr(inputs, "__len__") or not hasattr(inputs, "__getitem__"):
        raise TypeError(f"inputs must be an array, a list or a Dataset with __len__/__getitem__, got "
                        f"{type(inputs).__name__}; {_INPUTS_HELP}")
    if len(inputs) != n:
        raise ValueError(f"inputs ({len(inputs)}) and labels ({n}) must have the same length")
    if isinstance(inputs, np.ndarray):
        kind, shape = inputs.dtype.kind, inputs.shape
        if kind not in "fiu" or kind == "b":
            raise TypeError(f"inputs must hold numbers, got dtype {inputs.dtype}; {_INPUTS_HELP}")
        if inputs.ndim < 2 or inputs.ndim > 4:
            raise ValueError(f"inputs has shape {shape}: {_INPUTS_HELP}"
                             + ("; for one feature per sample use inputs.reshape(-1, 1)" if inputs.ndim == 1 else ""))
        if inputs.ndim == 2:
            if mode is None:
                mode = "embeddings"
            elif mode != "embeddings":
                raise ValueError(f"mode={mode!r} needs images but inputs is an (N, D) array of shape {shape}: "
                                 "use mode='embeddings' (or mode=None) for features")
            finite = np.isfinite(inputs).all(1)
            if not finite.any():
                raise ValueError(f"none of the {n} rows of inputs is finite (NaN or inf in every row): "
                                 "check the embeddings")
        else:
            if mode == "embeddings":
                raise ValueError(f"mode='embeddings' needs an (N, D) array, got shape {shape}; use mode='frozen' "
                                 "or 'finetune' for images")
            ok = (inputs.ndim == 3 and kind == "u") or (inputs.ndim == 4 and shape[-1] == 3) or \
                (inputs.ndim == 4 and kind == "f" and shape[1] == 3)
            if not ok or (kind != "f" and inputs.dtype != np.uint8):
                raise ValueError(f"image arrays must be (N, H, W, 3) or (N, H, W) uint8, or (N, 3, H, W) / "
                                 f"(N, H, W, 3) float in [0, 1]; got shape {shape} dtype {inputs.dtype}")
    elif isinstance(inputs, (list, tuple)) and n and isinstance(inputs[0], (str, os.PathLike)):
        if mode == "embeddings":
            raise ValueError("mode='embeddings' needs an (N, D) array, got image paths; use mode='frozen' or "
                             "'finetune'")
        if not all(isinstance(p, (str, os.PathLike)) for p in inputs):
            raise TypeError("inputs mixes paths with other items: pass a list of image paths only")
        if not any(os.path.exists(p) for p in inputs):
            raise ValueError(f"none of the {n} image paths exists (e.g. {os.fspath(inputs[0])!r}, relative to "
                             f"{os.getcwd()!r}): check the paths or the working directory")
    elif mode == "embeddings":
        raise ValueError(f"mode='embeddings' needs an (N, D) array, got {type(inputs).__name__}")
    return inputs, (mode or "frozen")


def no_readable_input(inputs, n):
    ex = ""
    if isinstance(inputs, (list, tuple)) and n and isinstance(inputs[0], (str, os.PathLike)):
        ex = f" (e.g. {os.fspath(inputs[0])!r})"
    return ValueError(f"none of the {n} inputs could be read{ex}: nothing to train on; check the files or the "
                      "dataset's items")
