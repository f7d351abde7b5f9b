"""What input sizes an image tower can take: checked before any image is decoded.

Fixed-size towers (a ViT's positional grid, an RN50-style attention pool) fail deep inside
with a shape error when given another size; :func:`check_image_size` says which sizes work
at ``load_model`` / ``sei.train`` / ``embed_images`` time instead.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["image_size_range", "check_image_size"]


def _image_tower(bundle) -> nn.Module:
    if bundle.clip is not None and getattr(bundle.clip, "visual", None) is not None:
        return bundle.clip.visual
    return bundle.visual


def image_size_range(bundle) -> Optional[tuple]:
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


def check_image_size(bundle, size: int) -> None:
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
