"""Checkpoints that load without unpickling code.

A checkpoint is a dict of tensors, numbers, strings, None and containers of them; numpy
arrays travel as their raw bytes with dtype and shape. It loads with
``torch.load(..., weights_only=True)``, so a crafted ``checkpoint.pt`` cannot run code,
and anything else (corrupt, truncated, foreign) raises a ValueError naming the file and
the fix. Writes go to ``checkpoint.pt.<pid>.tmp`` and are renamed into place; stale tmp
files of dead runs are removed when a run starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..fingerprint import array_fingerprint, hasher, update_array
from ..process import pid_alive

__all__ = ["CKPT_NAME", "save_checkpoint", "load_checkpoint", "clean_stale_tmp", "run_fingerprint",
           "check_same_run"]

CKPT_NAME = "checkpoint.pt"
_CKPT_FORMAT = "sei-checkpoint"
_CKPT_VERSION = 2
_ND = "__ndarray__"


def _pack(obj, where="state"):
    """Checkpoint state -> tensors, numbers, strings, None and dicts/lists/tuples of them.

    numpy arrays become ``{"__ndarray__": uint8 tensor of their bytes, "dtype", "shape"}``
    (exact for every dtype), numpy scalars Python numbers. Anything else is refused, so
    that every checkpoint loads with ``torch.load(..., weights_only=True)``.
    """
    if isinstance(obj, torch.Tensor) or obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError(f"checkpoint {where} holds an object array; only numeric arrays can be saved")
        a = np.ascontiguousarray(obj).reshape(-1)
        raw = a.view(np.uint8) if a.size else np.zeros(0, np.uint8)
        raw = raw if raw.flags.writeable else raw.copy()  # shared, not copied: saved at once
        return {_ND: torch.from_numpy(raw), "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _pack(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [_pack(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(out) if isinstance(obj, tuple) else out
    raise TypeError(f"checkpoint {where} holds a {type(obj).__name__}; store it as arrays, numbers or strings")


def _unpack(obj):
    """Inverse of :func:`_pack`."""
    if isinstance(obj, dict):
        if _ND in obj:
            raw = obj[_ND].cpu().numpy()
            return np.frombuffer(raw.tobytes(), dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
        return {k: _unpack(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_unpack(v) for v in obj)
    return obj


def save_checkpoint(path, state):
    tmp = Path(str(path) + f".{os.getpid()}.tmp")
    torch.save(_pack(dict(state, format=_CKPT_FORMAT, version=_CKPT_VERSION)), tmp)
    os.replace(tmp, path)


_CKPT_KEYS = ("epoch", "n", "c", "labels_used", "model", "optimizer", "recorder", "metrics")


def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint` without unpickling code.

    ``weights_only=True``: only tensors, numbers, strings and containers are rebuilt, so
    a crafted file cannot run code. Anything unreadable raises a ValueError naming the file.
    """
    fix = f"delete {path} (or pass resume=False, or another checkpoint_dir) to train from scratch"
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (forbidden globals), EOFError, RuntimeError (zip), ...
        raise ValueError(f"cannot resume from {path}: it is not a readable sei checkpoint (corrupt, truncated, "
                         f"written by an older sei, or not a checkpoint: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); {fix}") from None
    if not isinstance(st, dict) or st.get("format") != _CKPT_FORMAT or any(k not in st for k in _CKPT_KEYS):
        raise ValueError(f"cannot resume from {path}: it is not a sei checkpoint (format "
                         f"{st.get('format') if isinstance(st, dict) else type(st).__name__!r}); {fix}")
    return _unpack(st)


def clean_stale_tmp(ckpt_path):
    """Remove ``checkpoint.pt.<pid>.tmp`` left by killed runs (their process is gone, or it is us)."""
    for f in ckpt_path.parent.glob(ckpt_path.name + ".*.tmp"):
        pid = f.name[len(ckpt_path.name) + 1:-len(".tmp")]
        if not pid.isdigit() or (int(pid) != os.getpid() and pid_alive(int(pid))):
            continue
        try:
            f.unlink()
        except OSError:
            pass


# ----------------------------------------------------------------------------- resume checks
def _state_fingerprint(obj) -> str:
    """Hash of an object option (sample weights like :class:`sei.active.RobustWeights`): its
    type and its ``state_dict()`` (settings and initial state) or else its ``weights``."""
    h = hasher()
    h.update(type(obj).__name__.encode())
    state = obj.state_dict() if hasattr(obj, "state_dict") else {"weights": getattr(obj, "weights", None)}
    for k in sorted(state):
        v = state[k]
        h.update(f";{k}=".encode())
        if isinstance(v, (np.ndarray, torch.Tensor, list)):
            update_array(h, v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v)
        else:
            h.update(repr(v).encode())
    return h.hexdigest()[:32]


def _option_fingerprint(value) -> str:
    """An array option (transition matrix or mask, sample weights) by content; an object by state."""
    if value is None:
        return "none"
    if hasattr(value, "weights"):
        return _state_fingerprint(value)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return array_fingerprint(np.asarray(value))


def run_fingerprint(cfg, inputs: str, model_weights: str = "none") -> dict:
    """What a run trains with, option by option: ``cfg.training_options()`` (as ``repr``), the
    array options by content hash, the inputs' hash ``inputs`` (the features trained on, or
    the images) and the encoder's ``model_weights``. A checkpoint stores it; :func:`check_same_run`
    compares it on resume."""
    out = {k: repr(v) for k, v in cfg.training_options().items()}
    for name in ("sample_weights", "transition_matrix", "transition_mask"):
        out[name] = _option_fingerprint(getattr(cfg, name))
    out["inputs"], out["model weights"] = inputs, model_weights
    return out


_HASHED = ("sample_weights", "transition_matrix", "transition_mask", "inputs", "model weights")


def check_same_run(path, checkpoint: dict, now: dict) -> None:
    """ValueError naming every option or input of ``now`` (:func:`run_fingerprint`) that differs
    from the fingerprint stored in ``checkpoint``, and the fix. A checkpoint written before
    fingerprints were stored is compared on its plain options (``config``) only."""
    saved = checkpoint.get("fingerprint")
    if saved is None:
        config = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
        saved = {k: repr(v) for k, v in config.items() if k in now and k not in _HASHED}
        now = {k: v for k, v in now.items() if k in saved}
    changed = []
    for k in sorted(set(saved) | set(now)):
        old, new = saved.get(k), now.get(k)
        if old != new:
            changed.append(f"{k} changed" if k in _HASHED else f"{k}: {old} -> {new}")
    if changed:
        raise ValueError(f"cannot resume from {path}: it was trained with other options or inputs "
                         f"({'; '.join(changed)}); pass resume=False (or another checkpoint_dir) to train "
                         "from scratch, or the checkpoint's options to continue it")
