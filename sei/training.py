"""The SEI training engine: a CLIP-style prompt classifier whose training dynamics are recorded.

Class names become prompts (``"a photo of a {}."``); an auxiliary pseudo-class prompt
(``"a photo of something else."``) receives randomly relabelled samples; the model's
p(y = k | x) is the softmax of scaled cosine similarities between an image embedding and
the K (+1) class embeddings. Every epoch the predictions are fed to a
:class:`sei.SEIRecorder`, whose Signed Entropy Integral ranks the samples (lower = more
likely mislabeled)::

    logits_k = s * <f(x) / |f(x)|, t_k / |t_k|>        s = min(exp(logit_scale), 100)   ("learned")
    loss     = mean_i w_i * CE(softmax(logits_i), y_i)   (forward-corrected: CE(softmax(logits) @ T, y))

Modes
-----
``embeddings``  an (N, D) feature array; a light head (optional projection plus class
                embeddings) is trained on tensors held on the device, one ``randperm`` per
                epoch and slicing (no per-batch DataLoader).
``frozen``      the encoder embeds the images once (cached on disk keyed by model, data and
                preprocessing), then as ``embeddings``; class embeddings start from the text
                tower's prompt features when the model has one.
``finetune``    the image tower is trained (random resized crop + flip, the model's own
                normalisation); the text tower stays frozen, prompt features computed once.

Protocol switches (defaults first, the paper's / authors' values one argument away):
``logit_scale`` "learned" | "raw" (authors: raw parameter times unnormalised features) | float;
``lr_schedule`` "none" (authors' code) | "step" (/10 at 50 % and 77 % of the epochs, the paper);
``record`` "train" (in the loop, augmented batch, before the optimizer step: authors' code) |
"eval" (a separate pass after each epoch); ``aux_class`` on/off; ``num_aux`` "paper"
(N // (K+1)) | "code" (N // K) | int.

torch and open_clip are imported here only; ``import sei`` stays light.
"""

from __future__ import annotations

import math
import numbers
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._validation import check_int_param, check_labels, check_real_param, to_numpy
from .constants import DEFAULT_SCORE, DEFAULT_THRESHOLD, EPS, FEATURE_SCORES, HEADS, SCORE_NAMES, THRESHOLD_METHODS
from .recorder import SEIRecorder
from .thresholds import compute_threshold, draw_auxiliary, flag_issues

__all__ = ["train", "TrainResult", "PromptHead", "LinearHead", "DEFAULT_PROMPT_TEMPLATE", "DEFAULT_AUX_PROMPT"]

DEFAULT_PROMPT_TEMPLATE = "a photo of a {}."
DEFAULT_AUX_PROMPT = "a photo of something else."
MAX_LOGIT_SCALE = 100.0
_MODES = ("embeddings", "frozen", "finetune")
_CKPT_NAME = "checkpoint.pt"


# ----------------------------------------------------------------------------- result
@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    scores : np.ndarray, shape (N,)
        The chosen score (``score_name``), lower = more likely mislabeled. NaN for samples
        never seen (unreadable images) and for auxiliary samples (their real label was not
        trained; score them with a second run, see :func:`sei.two_run_auxiliary`).
    mislabeled : np.ndarray of bool, shape (N,)
        ``scores < threshold``; False where the score is NaN.
    threshold : float
    score_name : str
    recorder : SEIRecorder
        Over K + 1 columns when the auxiliary class is used; feeds
        ``sei_cleanlab.find_label_issues`` directly.
    aux_indices : np.ndarray of int
        Samples relabelled to the pseudo-class (empty without it).
    pred_probs : np.ndarray, shape (N, K)
        Last epoch's probabilities over the K real classes (aux column dropped, renormalised).
    predicted_labels : np.ndarray, shape (N,)
    train_accuracy, train_loss : list of float
        Per epoch, over the trained (possibly relabelled) labels.
    features : np.ndarray, shape (N, D), or None
        The embeddings used (frozen / embeddings modes).
    skipped : np.ndarray of int
        Unreadable images (scored NaN, never flagged).
    labels_used : np.ndarray, shape (N,)
        The labels trained on (K at ``aux_indices``).
    """

    scores: np.ndarray
    mislabeled: np.ndarray
    threshold: float
    score_name: str
    recorder: SEIRecorder
    aux_indices: np.ndarray
    pred_probs: np.ndarray
    predicted_labels: np.ndarray
    train_accuracy: list
    train_loss: list
    features: Optional[np.ndarray]
    skipped: np.ndarray
    labels_used: np.ndarray
    class_names: list
    config: dict = field(default_factory=dict)
    elapsed_s: float = 0.0

    def __repr__(self):
        return (f"TrainResult(N={len(self.scores)}, score={self.score_name!r}, threshold={self.threshold:.4g}, "
                f"flagged={int(self.mislabeled.sum())}, epochs={len(self.train_loss)}, skipped={len(self.skipped)})")


# ----------------------------------------------------------------------------- model
class PromptHead(nn.Module):
    """Cosine (or raw) prompt classifier over fixed-size features.

    ``logits = scale * normalize(proj(x)) @ normalize(class_emb).T``

    Parameters
    ----------
    in_dim : int
        D, the feature width.
    num_outputs : int
        C = K (+1 with the auxiliary class).
    class_init : torch.Tensor, shape (C, E), optional
        Initial class embeddings (text-tower prompt features); random otherwise.
    proj_dim : int or None
        E. None: no projection when ``class_init`` matches D (CLIP space) or no init is given.
    logit_scale : "learned" | "raw" | float
    init_logit_scale : float
        log of the initial scale for "learned" (CLIP's 1/0.07 by default); raw value for "raw".
    """

    def __init__(self, in_dim, num_outputs, *, class_init=None, proj_dim=None, logit_scale="learned",
                 init_logit_scale=math.log(1 / 0.07), learn_class_emb=True):
        super().__init__()
        emb_dim = proj_dim or (class_init.shape[1] if class_init is not None else in_dim)
        if proj_dim is None and emb_dim != in_dim:
            proj_dim = emb_dim
        self.proj = None
        if proj_dim is not None:
            self.proj = nn.Linear(in_dim, emb_dim, bias=False)
            if emb_dim == in_dim:
                nn.init.eye_(self.proj.weight)
        if class_init is None:
            class_init = torch.randn(num_outputs, emb_dim) / math.sqrt(emb_dim)
        self.class_emb = nn.Parameter(class_init.detach().clone().float(), requires_grad=learn_class_emb)
        self.mode = logit_scale
        if logit_scale == "learned" or logit_scale == "raw":
            self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        else:
            self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))

    def scale(self):
        if self.mode == "learned":
            return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        return self.logit_scale

    def forward(self, x, *, normalized_input=False):
        if self.proj is not None:
            x = self.proj(x)
            normalized_input = False
        t = self.class_emb
        if self.mode == "raw":  # authors' code: raw parameter, unnormalised features
            return self.logit_scale * x @ t.t()
        if not normalized_input:
            x = F.normalize(x, dim=-1)
        return self.scale() * (x @ F.normalize(t, dim=-1).t())


class LinearHead(nn.Module):
    """Softmax regression on standardised features: ``logits = x @ W.T + b``, zero init.

    The light head of ``head="linear"`` (frozen / embeddings modes): features are
    standardised once per run (mean 0, unit variance per dimension over the readable
    samples), no prompts, no temperature. On the bundled CIFAR-10N sample it ranks
    mislabeled images better than the cosine prompt head at 10 epochs (see README).
    """

    proj = None
    mode = "linear"

    def __init__(self, in_dim, num_outputs):
        super().__init__()
        self.fc = nn.Linear(in_dim, num_outputs)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x, *, normalized_input=False):
        return self.fc(x)


class _FinetuneNet(nn.Module):
    def __init__(self, visual, head):
        super().__init__()
        self.visual = visual
        self.head = head

    def forward(self, x):
        return self.head(self.visual(x).float())


# ----------------------------------------------------------------------------- helpers
def _resolve_device(device):
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _dist_info():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _num_aux(num_aux, n, k):
    if num_aux is None or num_aux == "paper":
        return n // (k + 1)
    if num_aux == "code":
        return n // k
    if isinstance(num_aux, float) and 0 < num_aux < 1:
        return int(round(num_aux * n))
    return int(num_aux)


def _lr_factor(schedule, epoch, epochs):
    if schedule in (None, "none"):
        return 1.0
    if schedule == "step":
        m1, m2 = int(round(0.5 * epochs)), int(round(epochs * 115 / 150))
        return 0.1 ** ((epoch >= m1) + (epoch >= m2))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
    raise ValueError(f"lr_schedule must be 'step', 'none' or 'cosine', got {schedule!r}")


def _forward_corrected_nll(logits, targets, T):
    p = torch.softmax(logits, dim=-1) @ T
    return F.nll_loss(torch.log(p.clamp_min(EPS)), targets, reduction="none")


def _extend_transition(T, c):
    T = torch.as_tensor(np.asarray(T, dtype=np.float32))
    k = T.shape[0]
    if T.ndim != 2 or T.shape[1] != k:
        raise ValueError(f"transition_matrix must be square (K, K), got {tuple(T.shape)}")
    if not torch.allclose(T.sum(1), torch.ones(k), atol=1e-3) or (T < 0).any():
        raise ValueError("transition_matrix must be row-stochastic (non-negative rows summing to 1)")
    if c > k:
        E = torch.eye(c)
        E[:k, :k] = T
        T = E
    return T


def _check_transition(T, k):
    T = np.asarray(to_numpy(T, "transition_matrix"), dtype=np.float64)
    if T.shape != (k, k):
        raise ValueError(f"transition_matrix must have shape (K, K) = ({k}, {k}) for the {k} classes, got "
                         f"{T.shape}; row i is p(given label | true class i)")
    if not np.isfinite(T).all():
        raise ValueError("transition_matrix contains NaN or inf")
    _extend_transition(T, k)  # row-stochastic check


class _Weights:
    """Adapter over sample_weights: None, an (N,) array, or an object with .weights/.update."""

    def __init__(self, sw, n, device):
        self.obj = sw if (sw is not None and hasattr(sw, "weights")) else None
        self.device = device
        if sw is None:
            self.t = None
        else:
            self.refresh(sw if self.obj is None else self.obj.weights, n)

    def refresh(self, w, n):
        w = np.asarray(w, dtype=np.float32)
        if w.shape != (n,):
            raise ValueError(f"sample_weights must have shape ({n},), got {w.shape}")
        if not np.all(np.isfinite(w)) or (w < 0).any():
            raise ValueError("sample_weights must be finite and non-negative")
        self.t = torch.from_numpy(w).to(self.device)

    def after_epoch(self, losses, n):
        if self.obj is not None:
            self.obj.update(losses)
            self.refresh(self.obj.weights, n)


def _prompts(class_names, template, aux_prompt, use_aux):
    ps = [template.format(c) for c in class_names]
    if use_aux:
        ps.append(aux_prompt)
    return ps


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


def _save_checkpoint(path, state):
    tmp = Path(str(path) + f".{os.getpid()}.tmp")
    torch.save(_pack(dict(state, format=_CKPT_FORMAT, version=_CKPT_VERSION)), tmp)
    os.replace(tmp, path)


_CKPT_KEYS = ("epoch", "n", "c", "labels_used", "model", "optimizer", "recorder", "metrics")


def _load_checkpoint(path):
    """Read a checkpoint written by :func:`_save_checkpoint` without unpickling code.

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


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _clean_stale_tmp(ckpt_path):
    """Remove ``checkpoint.pt.<pid>.tmp`` left by killed runs (their process is gone, or it is us)."""
    for f in ckpt_path.parent.glob(ckpt_path.name + ".*.tmp"):
        pid = f.name[len(ckpt_path.name) + 1:-len(".tmp")]
        if not pid.isdigit() or (int(pid) != os.getpid() and _pid_alive(int(pid))):
            continue
        try:
            f.unlink()
        except OSError:
            pass


def _rng_seed(seed, epoch):
    return int(seed) * 100003 + int(epoch) * 7919 + 17


# ----------------------------------------------------------------------------- images
def _to_chw_float(item, size):
    """One dataset item (PIL, uint8 HWC array, float CHW tensor, or None) -> (3, size, size) float in [0,1]."""
    if item is None:
        return None
    if isinstance(item, (tuple, list)):
        item = item[0]
    if hasattr(item, "convert") and not isinstance(item, (np.ndarray, torch.Tensor)):  # PIL
        from PIL import Image

        im = item.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        item = np.array(im, dtype=np.uint8)
    t = torch.as_tensor(item)
    if t.dtype == torch.uint8:
        if t.ndim == 2:
            t = t.unsqueeze(-1).expand(*t.shape, 3)
        t = t.permute(2, 0, 1).float() / 255.0
    else:
        t = t.float()
        if t.ndim == 3 and t.shape[0] != 3 and t.shape[-1] == 3:
            t = t.permute(2, 0, 1)
    if t.shape[-1] != size or t.shape[-2] != size:
        t = F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return t


class _ImageSource(torch.utils.data.Dataset):
    """Uniform view over paths / uint8 arrays / user datasets: item i -> (tensor or None, i)."""

    def __init__(self, inputs, size):
        self.inputs, self.size = inputs, int(size)
        self.is_paths = isinstance(inputs, (list, tuple)) and len(inputs) > 0 and isinstance(inputs[0], (str, os.PathLike))

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, i):
        if self.is_paths:
            from .data import read_image

            a = read_image(self.inputs[i], self.size)
            return (None if a is None else _to_chw_float(a, self.size)), i
        try:
            return _to_chw_float(self.inputs[i], self.size), i
        except Exception as e:  # a user dataset failing on one item: report and skip
            warnings.warn(f"skipping item {i}: {type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)
            return None, i


def _collate(batch):
    """Drop unreadable items; items are (x, id) or (x, id, position)."""
    ok = [b for b in batch if b[0] is not None]
    bad = [b[1] for b in batch if b[0] is None]
    if ok:
        xs = torch.stack([b[0] for b in ok])
        ids = torch.tensor([b[1] for b in ok], dtype=torch.long)
        pos = torch.tensor([b[2] if len(b) > 2 else -1 for b in ok], dtype=torch.long)
    else:
        xs, ids, pos = None, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return xs, ids, pos, torch.tensor(bad, dtype=torch.long)


class _Ordered(torch.utils.data.Dataset):
    """Item p -> (image, order[p], p): the epoch's order with positions (to skip padded repeats)."""

    def __init__(self, src, order):
        self.src, self.order = src, order

    def __len__(self):
        return len(self.order)

    def __getitem__(self, p):
        x, i = self.src[self.order[p]]
        return x, i, p


def _augment(x, gen, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)):
    """Batched random resized crop + horizontal flip with ``roi_align`` (one call per batch)."""
    from torchvision.ops import roi_align

    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(*scale, generator=gen) * h * w
    logr = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = logr.exp()
    cw = (area * r).sqrt().clamp(max=w)
    ch = (area / r).sqrt().clamp(max=h)
    x0 = torch.rand(b, generator=gen) * (w - cw)
    y0 = torch.rand(b, generator=gen) * (h - ch)
    boxes = torch.stack([torch.arange(b, dtype=torch.float32), x0, y0, x0 + cw, y0 + ch], 1).to(x.device)
    out = roi_align(x, boxes, output_size=(h, w), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def _embed_dataset(bundle, inputs, size, batch_size, device, num_workers, cache_dir, progress):
    """Frozen features for paths / arrays (cached via sei.models.embed_images) or a Dataset."""
    from .models import embed_images

    if isinstance(inputs, np.ndarray) or (isinstance(inputs, (list, tuple)) and inputs
                                          and isinstance(inputs[0], (str, os.PathLike))):
        feats, skipped = embed_images(bundle, inputs if isinstance(inputs, np.ndarray) else list(map(str, inputs)),
                                      image_size=size, batch_size=batch_size, device=device, cache_dir=cache_dir,
                                      progress=progress, return_skipped=True)
        return feats, skipped
    src = _ImageSource(inputs, size)
    loader = torch.utils.data.DataLoader(src, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=_collate)
    n = len(src)
    feats = np.full((n, bundle.embed_dim), np.nan, dtype=np.float32)
    skipped = []
    visual = bundle.visual.to(device).eval()
    mean = torch.tensor(bundle.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std, device=device).view(1, 3, 1, 1)
    with torch.inference_mode():
        for xs, ids, _, bad in loader:
            skipped.extend(bad.tolist())
            if xs is None:
                continue
            f = visual(((xs.to(device) - mean) / std))
            feats[ids.numpy()] = f.float().cpu().numpy()
    return feats, np.asarray(sorted(skipped), dtype=np.int64)


# ----------------------------------------------------------------------------- inputs
_INPUTS_HELP = ("pass (N, D) float embeddings, N image paths, (N, H, W, 3) uint8 / (N, 3, H, W) float images, "
                "or a Dataset of images")


def _resolve_inputs(inputs, mode, n):
    """Check ``inputs`` against ``mode`` before anything is loaded or trained; returns (inputs, mode).

    torch tensors are taken as numpy arrays (2-D float: embeddings; 3-/4-D: images), a list
    of numbers as an array (then refused if 1-D). Embeddings without one finite row and
    path lists where no file exists raise ValueError.
    """
    if mode is not None and mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if isinstance(inputs, torch.Tensor):
        inputs = to_numpy(inputs, "inputs")
    elif isinstance(inputs, (list, tuple)) and len(inputs) and isinstance(inputs[0], (numbers.Number, np.generic)):
        inputs = to_numpy(inputs, "inputs")
    if inputs is None or isinstance(inputs, (str, bytes, os.PathLike, dict, set, numbers.Number)):
        hint = " (one path? pass a list of paths, e.g. from sei.data.scan_image_folder)" \
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


def _no_readable_input(inputs, n):
    ex = ""
    if isinstance(inputs, (list, tuple)) and n and isinstance(inputs[0], (str, os.PathLike)):
        ex = f" (e.g. {os.fspath(inputs[0])!r})"
    return ValueError(f"none of the {n} inputs could be read{ex}: nothing to train on; check the files or the "
                      "dataset's items")


# ----------------------------------------------------------------------------- train
def train(inputs, labels, *, class_names=None, model="efficientnet-lite0", pretrained=None, tokenizer=None,
          arch=None, mode=None, epochs=150, batch_size=128, lr=1e-3, momentum=0.9, weight_decay=1e-4,
          lr_schedule="none", logit_scale="learned", record="train", aux_class="auto", num_aux="paper",
          prompt_template=DEFAULT_PROMPT_TEMPLATE, aux_prompt=DEFAULT_AUX_PROMPT, proj_dim=None,
          center_features="auto", learn_class_emb=True, head="prompt", score=DEFAULT_SCORE, threshold=DEFAULT_THRESHOLD,
          sample_weights=None, transition_matrix=None, checkpoint_dir=None, resume=False, device="auto",
          image_size=None, num_workers=0, cache_dir=None, seed=0, on_epoch_end=None, on_record=None,
          history_path=None, progress=True, amp=True, num_threads="auto", force_autograd=False):
    """Train a prompt classifier and score every sample with its training dynamics.

    Parameters
    ----------
    inputs : np.ndarray or list of str or torch.utils.data.Dataset
        ``(N, D)`` float embeddings (mode ``"embeddings"``); N image file paths; an
        ``(N, H, W, 3)`` uint8 image array; or a Dataset whose items are images or
        ``(image, label)`` pairs (PIL, uint8 HWC, or float CHW in [0, 1]).
    labels : array-like of int, shape (N,)
        Given (possibly noisy) labels in 0..K-1.
    class_names : list of str, optional
        K names used in the prompts; default ``["class 0", ...]``.
    model : str or torch.nn.Module, default "efficientnet-lite0"
        See :func:`sei.models.load_model`; unused in mode ``"embeddings"``.
    pretrained, tokenizer, arch : optional
        open_clip pretrained tag or checkpoint path; tokenizer of a model object;
        architecture of a checkpoint path.
    mode : {"embeddings", "frozen", "finetune"}, optional
        Default: ``"embeddings"`` for a float (N, D) array, else ``"frozen"``.
    epochs : int, default 150
    batch_size : int, default 128
    lr, momentum, weight_decay : float, default 1e-3, 0.9, 1e-4
        SGD, as the paper.
    lr_schedule : {"none", "step", "cosine"}, default "none"
        "none": constant lr (the authors' code; on CIFAR-10N it ranks better than "step":
        AUROC 0.838 vs 0.823 on the worse labels, 0.793 vs 0.780 on aggre, 30 epochs);
        "step": /10 at 50 % and 77 % of the epochs (epochs 75 and 115 of 150, the paper).
    logit_scale : "learned" | "raw" | float, default "learned"
        "learned": exp(parameter) clamped at 100 on cosine similarities (CLIP);
        "raw": the parameter itself times unnormalised features (the authors' code);
        a float: fixed scale on cosine similarities.
    record : {"train", "eval"}, default "train"
        "train": the batch's predictions inside the loop, before the optimizer step (the
        authors' code); "eval": a separate pass over all samples after each epoch.
    aux_class : "auto" | bool, default "auto"
        Relabel ``num_aux`` random samples to a pseudo-class prompted by ``aux_prompt``.
        "auto": only when the threshold uses them (``"aux_mean"``, ``"aux_quantile"``), so
        that by default every sample is scored (auxiliary samples are not: their own label
        is never trained). On CIFAR-10N the aux class barely changes the ranking (AUROC
        0.836 vs 0.830, 30 epochs) and its mean-SEI cutoff is too strict (F1 0.59 vs 0.79
        for the zero cutoff), see ``benchmarks/results/train_speed.md``.
    num_aux : "paper" | "code" | int | float in (0, 1), default "paper"
        "paper": N // (K + 1); "code": N // K (the authors' code).
    prompt_template, aux_prompt : str
    proj_dim : int, optional
        Width of a learned projection before the class embeddings (frozen/embeddings
        modes). Default: none when the features live in the text space, else none either
        (the head is then a cosine classifier on the features).
    center_features : "auto" | bool
        Subtract the feature mean before the cosine (default: when there is no text init).
    head : {"prompt", "linear"}, default "prompt"
        "prompt": the paper's cosine prompt classifier (class embeddings, initialised from
        the text tower's prompts when the model has one). "linear": softmax regression on
        standardised features (:class:`LinearHead`; frozen / embeddings modes only; the
        prompt, scale and projection options do not apply). ``sei_fiftyone.compute_sei``
        uses "linear" by default.
    score : str, default DEFAULT_SCORE
        Recorder score returned in ``result.scores`` (see ``sei.SCORE_NAMES``), or a
        neighbour-label score (``sei.FEATURE_SCORES``; frozen / embeddings modes, computed
        on the features trained on; not with an auxiliary threshold).
    threshold : "auto" | str | float
        Passed to :func:`sei.compute_threshold` ("auto": zero for signed scores such as
        SEI, a two-component GMM otherwise); "aux_mean" is the paper's cutoff (the mean
        score of the auxiliary samples), "aux_quantile" AUM's.
    sample_weights : None | array (N,) | object with ``.weights`` and ``.update(losses)``
        Per-sample loss weights; an object is updated after every epoch with that
        epoch's (N,) per-sample losses.
    transition_matrix : array (K, K), optional
        Row-stochastic noise transition T; the loss becomes forward-corrected CE,
        ``-log (softmax(logits) @ T)[y]``.
    checkpoint_dir : path, optional
        Write ``checkpoint.pt`` (model, optimizer, recorder, RNG and metrics) every epoch.
    resume : bool, default False
        Continue from ``checkpoint_dir``; gives the same scores as an uninterrupted run.
    device : str, default "auto"
        CUDA (with AMP in finetune mode) when present, else CPU.
    image_size : int, optional
        Input size for images (default the model's).
    num_workers : int, default 0
        DataLoader workers for image decoding.
    cache_dir : path, optional
        Where frozen embeddings are cached (default ``checkpoint_dir/embeddings`` when given).
    seed : int, default 0
    on_epoch_end : callable(epoch, epochs, metrics), optional
    on_record : callable(epoch, sample_ids, logits, labels), optional
        Sees exactly what is fed to the recorder (numpy), e.g. to log or audit.
    history_path : path, optional
        Spill the (epochs, N, C) probability history to a memmap (``SEIRecorder``).
    progress : bool, default True
        tqdm bar over epochs with loss and accuracy.
    amp : bool, default True
        Mixed precision on CUDA in finetune mode.
    num_threads : "auto" | int | None
        torch CPU threads while training. "auto": 1 in the frozen/embeddings modes (the
        head's small matrix products are dominated by thread synchronisation, badly so on
        a shared machine; the frozen mode's encoder pass keeps torch's setting), torch's
        setting otherwise. Restored on return.
    force_autograd : bool, default False
        Train the cosine head with autograd instead of its closed-form gradients (same
        numbers up to float rounding; for testing).

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> import numpy as np, sei
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 300)
    >>> x = np.eye(3)[y] * 3 + rng.normal(size=(300, 3))
    >>> noisy, is_bad = sei.symmetric_noise(y, 0.2, num_classes=3)
    >>> res = sei.train(x.astype("float32"), noisy, class_names=["a", "b", "c"],
    ...                 epochs=20, lr=0.05, progress=False)
    >>> res.scores.shape, res.pred_probs.shape
    ((300,), (300, 3))
    """
    t_start = time.time()
    labels = check_labels(labels)
    n = labels.shape[0]
    if class_names is None:
        k = int(labels.max()) + 1 if n else 0
        class_names = [f"class {i}" for i in range(k)]
    elif isinstance(class_names, str) or not hasattr(class_names, "__len__"):
        raise TypeError(f"class_names must be a list of K names, got {type(class_names).__name__}")
    class_names = [str(c) for c in class_names]
    k = len(class_names)
    if k < 2:
        raise ValueError(f"need at least 2 classes, got {k}: pass class_names with one name per class")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1} (len(class_names) = {k}), got values in "
                         f"{labels.min()}..{labels.max()}; pass one name per class in class_names")
    epochs = check_int_param(epochs, "epochs", 1, "train at least one epoch")
    batch_size = check_int_param(batch_size, "batch_size", 1, "pass a batch size of one or more samples")
    num_workers = check_int_param(num_workers, "num_workers", 0, "0 decodes images in the main process")
    if image_size is not None:
        image_size = check_int_param(image_size, "image_size", 1, "pass a size in pixels or None")
    lr = check_real_param(lr, "lr")
    momentum = check_real_param(momentum, "momentum")
    weight_decay = check_real_param(weight_decay, "weight_decay")
    if not isinstance(score, str) or score not in SCORE_NAMES + FEATURE_SCORES:
        raise ValueError(f"unknown score {score!r}; use one of {SCORE_NAMES + FEATURE_SCORES}")
    if isinstance(threshold, numbers.Real) and not isinstance(threshold, bool):
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
    elif not isinstance(threshold, str) or threshold not in THRESHOLD_METHODS:
        raise ValueError(f"unknown threshold {threshold!r}; use a number or one of {', '.join(THRESHOLD_METHODS)}")
    if isinstance(threshold, str) and threshold.startswith("aux") and aux_class is False:
        raise ValueError(f"threshold={threshold!r} is computed from the auxiliary samples: use aux_class='auto' "
                         "(or True), or another threshold ('auto', 'zero', 'gmm' or a number)")
    if transition_matrix is not None:
        _check_transition(transition_matrix, k)
    if sample_weights is not None:
        if hasattr(sample_weights, "weights") and not callable(getattr(sample_weights, "update", None)):
            raise TypeError("sample_weights objects need .weights and .update(losses) (see sei.RobustWeights)")
        _Weights(sample_weights, n, torch.device("cpu"))  # shape / finiteness, before any training
    if score in FEATURE_SCORES and isinstance(threshold, str) and threshold.startswith("aux"):
        raise ValueError(f"score={score!r} mixes in the neighbours' labels, which the auxiliary samples do not "
                         "calibrate: use threshold 'auto', 'zero', 'gmm' or a number")
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if record not in ("train", "eval"):
        raise ValueError(f"record must be 'train' or 'eval', got {record!r}")
    if not (logit_scale in ("learned", "raw") or isinstance(logit_scale, (int, float))):
        raise ValueError(f"logit_scale must be 'learned', 'raw' or a number, got {logit_scale!r}")
    _lr_factor(lr_schedule, 0, epochs)
    if score in FEATURE_SCORES and mode == "finetune":
        raise ValueError(f"score={score!r} compares labels in a fixed feature space: use mode 'frozen' or "
                         "'embeddings'")
    if head == "linear" and mode == "finetune":
        raise ValueError("head='linear' trains on fixed features: use mode='frozen' or 'embeddings', "
                         "or head='prompt' to fine-tune the image tower")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    inputs, mode = _resolve_inputs(inputs, mode, n)

    rank, world = _dist_info()
    dev = _resolve_device(device)
    old_threads = torch.get_num_threads()
    if num_threads == "auto":
        num_threads = 1 if (mode != "finetune" and dev.type == "cpu") else None
    if num_threads and mode != "frozen":  # frozen: set after the encoder has embedded the images
        torch.set_num_threads(int(num_threads))
    try:
        return _train(**{k_: v_ for k_, v_ in locals().items() if k_ not in ("old_threads",)})
    finally:
        torch.set_num_threads(old_threads)


def _train(*, inputs, labels, class_names, model, pretrained, tokenizer, arch, mode, epochs, batch_size, lr,
           momentum, weight_decay, lr_schedule, logit_scale, record, aux_class, num_aux, prompt_template,
           aux_prompt, proj_dim, center_features, learn_class_emb, head, score, threshold, sample_weights,
           transition_matrix, checkpoint_dir, resume, device, image_size, num_workers, cache_dir, seed,
           on_epoch_end, on_record, history_path, progress, amp, num_threads, force_autograd, t_start, n, k,
           rank, world, dev):
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    torch.manual_seed(seed)

    # ---- auxiliary class
    if aux_class == "auto":
        aux_class = isinstance(threshold, str) and threshold.startswith("aux")
    aux_indices = np.zeros(0, dtype=np.int64)
    labels_used = labels.copy()
    if aux_class:
        # A seed derived from ``seed``: with the raw seed, draw_auxiliary would pick exactly the
        # positions that sei.symmetric_noise(..., seed=seed) flips (same generator, same draw).
        aux_seed = int(np.random.SeedSequence([int(seed), 0xA5C1]).generate_state(1)[0])
        labels_used, aux_indices = draw_auxiliary(labels, k, num_aux=_num_aux(num_aux, n, k), seed=aux_seed)
    c = k + 1 if aux_class else k

    # ---- model / features
    bundle = None
    features = None
    skipped = np.zeros(0, dtype=np.int64)
    class_init = None
    if mode != "embeddings":
        from .models import encode_text, load_model

        bundle = load_model(model, pretrained=pretrained, tokenizer=tokenizer, arch=arch, image_size=image_size)
        size = int(image_size or bundle.image_size)
        class_init = encode_text(bundle, _prompts(class_names, prompt_template, aux_prompt, aux_class), device="cpu")
    if mode == "embeddings":
        features = np.asarray(inputs, dtype=np.float32)
        if features.ndim != 2:
            raise ValueError(f"mode='embeddings' needs an (N, D) array, got shape {features.shape}")
        bad = ~np.isfinite(features).all(1)
        skipped = np.flatnonzero(bad)
    elif mode == "frozen":
        cdir = cache_dir if cache_dir is not None else (Path(checkpoint_dir) / "embeddings" if checkpoint_dir else None)
        features, skipped = _embed_dataset(bundle, inputs, size, 256, dev, num_workers, cdir, progress and rank == 0)
    valid = np.ones(n, dtype=bool)
    valid[skipped] = False
    if not valid.any():
        raise _no_readable_input(inputs, n)
    if num_threads and mode == "frozen":
        torch.set_num_threads(int(num_threads))

    if mode in ("embeddings", "frozen"):
        if head == "linear":
            net = LinearHead(features.shape[1], c).to(dev)
        else:
            net = _build_head(features, c, class_init, proj_dim, logit_scale, center_features, learn_class_emb,
                              bundle).to(dev)
    else:
        net = _build_finetune(bundle, c, class_init, logit_scale, learn_class_emb).to(dev)

    weights = _Weights(sample_weights, n, dev)
    T = _extend_transition(transition_matrix, c).to(dev) if transition_matrix is not None else None
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    ddp_net = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp_net = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)

    rec = SEIRecorder(n, c, max_epochs=epochs, history_path=history_path)
    metrics_hist = {"train_accuracy": [], "train_loss": []}
    start_epoch = 0
    st = None
    ckpt_path = Path(checkpoint_dir) / _CKPT_NAME if checkpoint_dir else None
    if ckpt_path is not None and rank == 0:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale_tmp(ckpt_path)
    if resume and ckpt_path is not None and ckpt_path.exists():
        st = _load_checkpoint(ckpt_path)
        if st["n"] != n or st["c"] != c or not np.array_equal(st["labels_used"], labels_used):
            raise ValueError(f"checkpoint {ckpt_path} was written for other data (N, classes or labels differ)")
        done = int(st["epoch"]) + 1
        if done > epochs:
            raise ValueError(f"checkpoint {ckpt_path} has {done} epochs trained but epochs={epochs}: pass "
                             f"epochs>={done} to continue it, or resume=False (or another checkpoint_dir) to train "
                             f"{epochs} epochs from scratch")
        net.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        rec.load_state_dict(st["recorder"])
        metrics_hist = {k_: list(v_) for k_, v_ in st["metrics"].items()}
        start_epoch = done
        if st.get("weights") is not None:
            weights.refresh(st["weights"], n)
        if weights.obj is not None:
            if st.get("weights_obj") is not None and hasattr(weights.obj, "load_state_dict"):
                weights.obj.load_state_dict(st["weights_obj"])
                weights.refresh(weights.obj.weights, n)
            else:
                warnings.warn(f"sample_weights ({type(weights.obj).__name__}) has no state_dict/load_state_dict: "
                              "its state is not restored, so the resumed scores can differ from an uninterrupted "
                              "run", RuntimeWarning, stacklevel=3)

    y_t = torch.from_numpy(labels_used).to(dev)
    ctx = dict(force_autograd=force_autograd, net=ddp_net, opt=opt, y=y_t, weights=weights, T=T, dev=dev, rank=rank, world=world,
               batch_size=batch_size, rec=rec, record=record, on_record=on_record, c=c, n=n, seed=seed)
    if mode in ("embeddings", "frozen"):
        ctx["X"] = _prepare_features(features, valid, net, dev)
        ctx["valid_idx"] = torch.from_numpy(np.flatnonzero(valid)).to(dev)
        run_epoch = _run_epoch_features
    else:
        ctx["src"] = _ImageSource(inputs, size)
        ctx["mean"] = torch.tensor(bundle.mean, device=dev).view(1, 3, 1, 1)
        ctx["std"] = torch.tensor(bundle.std, device=dev).view(1, 3, 1, 1)
        ctx["num_workers"] = num_workers
        ctx["amp"] = bool(amp and dev.type == "cuda")
        ctx["scaler"] = torch.amp.GradScaler("cuda") if ctx["amp"] else None
        ctx["skipped"] = set(skipped.tolist())
        if st is not None:
            ctx["skipped"] |= set(st.get("skipped", []))
            if ctx["scaler"] is not None and st.get("scaler") is not None:
                ctx["scaler"].load_state_dict(st["scaler"])
        run_epoch = _run_epoch_images

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start_epoch, desc=f"sei.train[{mode}]", unit="epoch")
    for epoch in range(start_epoch, epochs):
        for g in opt.param_groups:
            g["lr"] = lr * _lr_factor(lr_schedule, epoch, epochs)
        torch.manual_seed(_rng_seed(seed, epoch))
        loss, acc = run_epoch(ctx, epoch)
        if "skipped" in ctx and len(ctx["skipped"]) >= n:  # finetune: every item failed to load
            raise _no_readable_input(inputs, n)
        rec.end_epoch()
        metrics_hist["train_loss"].append(loss)
        metrics_hist["train_accuracy"].append(acc)
        weights.after_epoch(np.nan_to_num(rec.last_losses, nan=0.0), n)
        if ckpt_path is not None and rank == 0:
            _save_checkpoint(ckpt_path, {
                "epoch": epoch, "n": n, "c": c, "labels_used": labels_used, "model": net.state_dict(),
                "optimizer": opt.state_dict(), "recorder": rec.state_dict(), "metrics": metrics_hist,
                "weights": None if weights.t is None else weights.t.cpu().numpy(),
                "weights_obj": weights.obj.state_dict() if hasattr(weights.obj, "state_dict") else None,
                "torch_rng": torch.get_rng_state(), "numpy_rng": list(np.random.get_state()),
                "skipped": sorted(ctx.get("skipped", ())),
                "scaler": ctx["scaler"].state_dict() if ctx.get("scaler") is not None else None,
            })
        m = {"loss": loss, "accuracy": acc, "lr": opt.param_groups[0]["lr"], "epoch": epoch}
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}")
            bar.update(1)
        if on_epoch_end is not None:
            on_epoch_end(epoch, epochs, m)
    if bar is not None:
        bar.close()
    if "skipped" in ctx:
        skipped = np.asarray(sorted(ctx["skipped"]), dtype=np.int64)
    if skipped.size and rank == 0:
        warnings.warn(f"{skipped.size} unreadable input(s) skipped (scored NaN): indices {skipped[:10].tolist()}"
                      + ("..." if skipped.size > 10 else ""), RuntimeWarning, stacklevel=2)

    return _finish(rec, score, threshold, aux_indices, k, labels_used, metrics_hist, features, skipped,
                   class_names, t_start, dict(mode=mode, epochs=epochs, lr=lr, lr_schedule=lr_schedule,
                                              logit_scale=logit_scale, head=head, record=record, aux_class=aux_class,
                                              num_aux=len(aux_indices), seed=seed, batch_size=batch_size,
                                              model=getattr(bundle, "name", None) if bundle else "embeddings"))


def _finish(rec, score, threshold, aux_indices, k, labels_used, metrics_hist, features, skipped, class_names,
            t_start, config):
    if score in FEATURE_SCORES:  # neighbour labels in the features trained on (never with aux samples)
        from .neighbors import feature_score

        raw = np.full(rec.num_samples, np.nan)
        ok = np.isfinite(features).all(1)
        raw[ok] = feature_score(score, rec.scores("aum_prob")[ok], labels_used[ok], features[ok],
                                num_classes=rec.num_classes)
    else:
        raw = rec.scores(score)
    scores = raw.copy()
    scores[aux_indices] = np.nan
    th = compute_threshold(raw, threshold, aux_indices=aux_indices if aux_indices.size else None, score_name=score)
    mislabeled = flag_issues(scores, th)
    probs = rec.last_probs[:, :k].astype(np.float64)
    probs /= np.maximum(probs.sum(1, keepdims=True), EPS)
    pred = np.where(np.isfinite(probs).all(1), np.nan_to_num(probs).argmax(1), -1)
    return TrainResult(scores=scores, mislabeled=mislabeled, threshold=float(th), score_name=score, recorder=rec,
                       aux_indices=aux_indices, pred_probs=probs.astype(np.float32), predicted_labels=pred,
                       train_accuracy=list(metrics_hist["train_accuracy"]),
                       train_loss=list(metrics_hist["train_loss"]), features=features, skipped=skipped,
                       labels_used=labels_used, class_names=class_names, config=config,
                       elapsed_s=time.time() - t_start)


def _build_head(features, c, class_init, proj_dim, logit_scale, center_features, learn_class_emb, bundle):
    d = features.shape[1]
    if class_init is not None and class_init.shape[1] != d and proj_dim is None:
        proj_dim = class_init.shape[1]
    init_scale = math.log(1 / 0.07)
    if bundle is not None and bundle.clip is not None and hasattr(bundle.clip, "logit_scale"):
        init_scale = float(bundle.clip.logit_scale.detach().reshape(-1)[0])
    if logit_scale == "raw":
        init_scale = init_scale  # the raw parameter value (4.6052 for OpenAI CLIP)
    head = PromptHead(d, c, class_init=class_init, proj_dim=proj_dim, logit_scale=logit_scale,
                      init_logit_scale=init_scale, learn_class_emb=learn_class_emb)
    head.center = bool(class_init is None) if center_features == "auto" else bool(center_features)
    return head


def _build_finetune(bundle, c, class_init, logit_scale, learn_class_emb):
    init_scale = math.log(1 / 0.07)
    if bundle.clip is not None and hasattr(bundle.clip, "logit_scale"):
        init_scale = float(bundle.clip.logit_scale.detach().reshape(-1)[0])
    if bundle.clip is not None:  # freeze the text tower; only the image tower trains
        for p in bundle.clip.parameters():
            p.requires_grad_(False)
        for p in bundle.visual.parameters():
            p.requires_grad_(True)
    head = PromptHead(bundle.embed_dim, c, class_init=class_init, logit_scale=logit_scale,
                      init_logit_scale=init_scale, learn_class_emb=learn_class_emb if class_init is None else False)
    visual = bundle.visual.clip.visual if bundle.clip is not None else bundle.visual
    return _FinetuneNet(visual, head)


def _prepare_features(features, valid, head, dev):
    x = torch.from_numpy(np.nan_to_num(features, nan=0.0)).to(dev)
    if isinstance(head, LinearHead):  # standardise over the readable samples
        ok = x[torch.from_numpy(valid).to(dev)]
        x = (x - ok.mean(0, keepdim=True)) / (ok.std(0, unbiased=False, keepdim=True) + 1e-6)
        head.pre_normalized = False
        return x.contiguous()
    if getattr(head, "center", False):
        x = x - x[torch.from_numpy(valid).to(dev)].mean(0, keepdim=True)
    if head.proj is None and head.mode != "raw":
        x = F.normalize(x, dim=-1)  # fixed features: normalise once, not every step
        head.pre_normalized = True
    else:
        head.pre_normalized = False
    return x.contiguous()


def _shard(perm, rank, world):
    """DistributedSampler semantics: pad to a multiple of world by wrapping, take rank::world.

    Returns the shard and a mask of the padded (repeated) entries, which are trained on
    but not recorded, so that every sample is recorded exactly once per epoch.
    """
    n = perm.numel()
    total = int(math.ceil(n / world)) * world
    pad = total - n
    full = torch.cat([perm, perm[:pad]]) if pad else perm
    is_pad = torch.zeros(total, dtype=torch.bool, device=perm.device)
    if pad:
        is_pad[n:] = True
    return full[rank::world], is_pad[rank::world]


def _step_loss(ctx, logits, idx):
    y = ctx["y"][idx]
    if ctx["T"] is not None:
        per = _forward_corrected_nll(logits.float(), y, ctx["T"])
    else:
        per = F.cross_entropy(logits.float(), y, reduction="none")
    w = ctx["weights"].t
    loss = (per * w[idx]).mean() if w is not None else per.mean()
    return loss, per, y


def _emit_record(ctx, epoch, ids, logits):
    ids_np = ids.cpu().numpy()
    lg = logits.detach().float().cpu().numpy()
    lab = ctx["y"][ids].cpu().numpy()
    ctx["rec"].update(ids_np, lg, lab, from_logits=True)
    if ctx["on_record"] is not None:
        ctx["on_record"](epoch, ids_np, lg, lab)


def _fast_path_ok(ctx, head):
    """Closed-form gradients apply: cosine head on pre-normalised features, one process, plain CE."""
    return (ctx["world"] == 1 and head.proj is None and head.mode != "raw" and ctx["T"] is None
            and head.pre_normalized and not ctx.get("force_autograd", False))


def _fast_step(ctx, head, xb, idx, lr_now, state):
    """One SGD step of the cosine prompt head with hand-written gradients (no autograd graph).

    logits = s * xb @ Wn.T,  Wn = W / |W|,  G = dL/dlogits = w * (softmax - onehot) / B
    dL/dW = (s G.T xb - Wn * rowsum(s G.T xb * Wn)) / |W|,  dL/dlog s = s * sum(G * cos)
    then torch.optim.SGD's update (weight decay, momentum buffers kept in the optimizer state).
    """
    W = head.class_emb
    y = ctx["y"][idx]
    norm = W.norm(dim=1, keepdim=True).clamp_min(EPS)
    Wn = W / norm
    cos = xb @ Wn.t()
    learned = head.mode == "learned"
    sc = head.scale()
    logits = cos * sc
    logp = torch.log_softmax(logits, 1)
    per = -logp.gather(1, y[:, None]).squeeze(1)
    G = logp.exp_()
    G[state["ar"][: idx.numel()], y] -= 1.0
    w = ctx["weights"].t
    if w is not None:
        G *= w[idx][:, None]
    G /= idx.numel()
    wd, mom = state["wd"], state["mom"]
    if W.requires_grad:
        dWn = (G.t() @ xb).mul_(sc)
        dW = (dWn - Wn * (dWn * Wn).sum(1, keepdim=True)).div_(norm)
        _sgd_update(W, dW, state["opt"], lr_now, wd, mom)
    if learned:
        raw = head.logit_scale
        ds = (G * cos).sum() * sc if float(raw) < math.log(MAX_LOGIT_SCALE) else torch.zeros((), device=xb.device)
        _sgd_update(raw, ds.reshape(raw.shape), state["opt"], lr_now, wd, mom)
    return logits, per, y


def _sgd_update(p, g, opt, lr_now, wd, mom):
    """torch.optim.SGD (no dampening, no nesterov) on one tensor, sharing its state."""
    if wd:
        g = g.add(p.detach(), alpha=wd)
    st = opt.state[p]
    buf = st.get("momentum_buffer")
    if mom:
        if buf is None:
            buf = st["momentum_buffer"] = g.detach().clone()
        else:
            buf.mul_(mom).add_(g)
        g = buf
    p.data.add_(g, alpha=-lr_now)


def _run_epoch_features(ctx, epoch):
    net, opt, X, dev = ctx["net"], ctx["opt"], ctx["X"], ctx["dev"]
    head = net.module if hasattr(net, "module") else net
    pre = head.pre_normalized
    g = torch.Generator().manual_seed(_rng_seed(ctx["seed"], epoch))
    vidx = ctx["valid_idx"]
    perm = vidx[torch.randperm(vidx.numel(), generator=g).to(dev)]
    shard, is_pad = _shard(perm, ctx["rank"], ctx["world"])
    bs = ctx["batch_size"]
    record_train = ctx["record"] == "train"
    nb = int(math.ceil(shard.numel() / bs))
    all_logits = torch.empty(shard.numel(), ctx["c"], device=dev) if record_train else None
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev)
    net.train()
    fast = _fast_path_ok(ctx, head)
    if fast:
        grp = opt.param_groups[0]
        state = {"opt": opt, "wd": grp["weight_decay"], "mom": grp["momentum"],
                 "ar": torch.arange(bs, device=dev)}
        lr_now = grp["lr"]
        with torch.no_grad():
            for b in range(nb):
                idx = shard[b * bs:(b + 1) * bs]
                logits, per, y = _fast_step(ctx, head, X[idx], idx, lr_now, state)
                if record_train:
                    all_logits[b * bs:(b + 1) * bs] = logits
                loss_sum += per.sum()
                correct += (logits.argmax(1) == y).sum()
    else:
        for b in range(nb):
            idx = shard[b * bs:(b + 1) * bs]
            logits = net(X[idx], normalized_input=pre)
            loss, per, y = _step_loss(ctx, logits, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                if record_train:
                    all_logits[b * bs:(b + 1) * bs] = logits.detach()
                loss_sum += per.detach().sum()
                correct += (logits.detach().argmax(1) == y).sum()
    keep = ~is_pad
    if record_train:
        _emit_record(ctx, epoch, shard[keep], all_logits[keep])
    else:
        mine = shard[keep]
        net.eval()
        with torch.no_grad():
            out = torch.cat([head(X[mine[s:s + 8192]], normalized_input=pre) for s in range(0, mine.numel(), 8192)]) \
                if mine.numel() else torch.empty(0, ctx["c"], device=dev)
        _emit_record(ctx, epoch, mine, out)
    return _reduce_metrics(ctx, loss_sum, correct, shard.numel())


def _reduce_metrics(ctx, loss_sum, correct, count):
    t = torch.stack([loss_sum.double().cpu(), correct.double().cpu(), torch.tensor(float(count), dtype=torch.float64)])
    if ctx["world"] > 1:
        import torch.distributed as dist

        if ctx["dev"].type == "cuda":
            t = t.to(ctx["dev"])
        dist.all_reduce(t)
        t = t.cpu()
    cnt = max(float(t[2]), 1.0)
    return float(t[0]) / cnt, float(t[1]) / cnt


def _run_epoch_images(ctx, epoch):
    net, opt, dev = ctx["net"], ctx["opt"], ctx["dev"]
    n = ctx["n"]
    g = torch.Generator().manual_seed(_rng_seed(ctx["seed"], epoch))
    ok = torch.ones(n, dtype=torch.bool)
    if ctx["skipped"]:
        ok[sorted(ctx["skipped"])] = False
    valid = torch.nonzero(ok).flatten()
    perm = valid[torch.randperm(valid.numel(), generator=g)]
    shard, is_pad = _shard(perm, ctx["rank"], ctx["world"])
    n_real = int((~is_pad).sum())  # padded repeats sit at the end of a shard
    loader = torch.utils.data.DataLoader(_Ordered(ctx["src"], shard.tolist()), batch_size=ctx["batch_size"],
                                         shuffle=False, num_workers=ctx["num_workers"], collate_fn=_collate)
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev)
    count = 0
    record_train = ctx["record"] == "train"
    net.train()
    for xs, ids, pos, bad in loader:
        _note_bad(ctx, bad)
        if xs is None:
            continue
        xs = _augment(xs.to(dev, non_blocking=True), g)
        xs = (xs - ctx["mean"]) / ctx["std"]
        ids = ids.to(dev)
        with torch.autocast("cuda", enabled=ctx["amp"]):
            logits = net(xs)
        loss, per, y = _step_loss(ctx, logits, ids)
        if record_train:
            keep = (pos < n_real).to(dev)
            _emit_record(ctx, epoch, ids[keep], logits.detach()[keep])
        opt.zero_grad(set_to_none=True)
        if ctx["scaler"] is not None:
            ctx["scaler"].scale(loss).backward()
            ctx["scaler"].step(opt)
            ctx["scaler"].update()
        else:
            loss.backward()
            opt.step()
        loss_sum += per.detach().sum()
        correct += (logits.detach().argmax(1) == y).sum()
        count += ids.numel()
    if not record_train:
        _eval_pass_images(ctx, epoch, shard[~is_pad].tolist())
    return _reduce_metrics(ctx, loss_sum, correct, count)


def _note_bad(ctx, bad):
    for i in bad.tolist():
        if i not in ctx["skipped"]:
            ctx["skipped"].add(i)
            warnings.warn(f"skipping unreadable input {i}", RuntimeWarning, stacklevel=3)


def _eval_pass_images(ctx, epoch, order):
    net, dev = ctx["net"], ctx["dev"]
    base = net.module if hasattr(net, "module") else net
    base.eval()
    loader = torch.utils.data.DataLoader(_Ordered(ctx["src"], order), batch_size=ctx["batch_size"] * 2,
                                         shuffle=False, num_workers=ctx["num_workers"], collate_fn=_collate)
    with torch.no_grad():
        for xs, ids, _, bad in loader:
            _note_bad(ctx, bad)
            if xs is None:
                continue
            xs = (xs.to(dev) - ctx["mean"]) / ctx["std"]
            with torch.autocast("cuda", enabled=ctx["amp"]):
                logits = base(xs)
            _emit_record(ctx, epoch, ids.to(dev), logits)
    base.train()
