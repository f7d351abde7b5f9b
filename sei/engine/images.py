"""Device-native image pipeline: uint8 from the source to the device, every transform batched there.

The host does per-image work only to decode files (a thread pool: PIL releases the GIL
while decoding) and to slice arrays. Everything else runs on whole batches on the training device::

    source (paths | uint8 array | float array | Dataset)
        -> ImageStore: uint8 (N, 3, H, W), decoded once per run,
           resident on the device when it fits, else pinned host memory + async copies
        -> batch(idx): uint8 (B, 3, H, W) on the device
        -> random_resized_crop_flip (one roi_align: crop and resize together) | resize
        -> normalize (x / 255 - mean) / std, in the device's layout (:func:`channels_last`)

Files are stored at their own size when every file has the same size no larger than the
model's input (CIFAR's 32 px: 150 MB for 50,000 images, so the whole set lives on a GPU);
larger or mixed sizes are resized to the input size once, while decoding.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import PLACEMENTS

__all__ = ["ImageStore", "decode_files", "random_resized_crop_flip", "resize", "normalize", "is_path_list",
           "DEVICE_FRACTION", "channels_last", "CHANNELS_LAST"]

#: Memory layout of the image batches and of the fine-tuned encoder, by device type: the one home of
#: the choice (:func:`channels_last`; autocast is chosen by device in :func:`sei.engine.loop.autocast_dtype`:
#: CUDA only). CUDA: channels_last (tensor-core convolutions read NHWC). CPU: channels_last as well,
#: measured: contiguous batches and encoder make ``sei.train`` slower on CPU although they save the
#: layout conversion of each batch (oneDNN's convolutions prefer NHWC): 1.26x the CPU time per epoch
#: for a tiny CNN, 2.0x for EfficientNet-Lite0 at 48 px (``benchmarks/results/train_speed_cpu_proxy*.md``,
#: ``python benchmarks/train_speed.py --tiny-proxy [lite0]``). Other device types (MPS, XPU):
#: channels_last, as before (not measured).
CHANNELS_LAST = {"cuda": True, "cpu": True}

# Resident on an accelerator when the uint8 store takes at most this share of its free memory.
DEVICE_FRACTION = 0.25


def is_path_list(inputs) -> bool:
    """A non-empty list or tuple of str / os.PathLike (image files)."""
    return isinstance(inputs, (list, tuple)) and len(inputs) > 0 and isinstance(inputs[0], (str, os.PathLike))


# ----------------------------------------------------------------------------- decoding
def _decode_one(path, size: int):
    """One file -> uint8 (3, h, w) tensor, shrunk to (size, size) when larger; None if unreadable.

    PIL decodes (releasing the GIL, so a thread pool scales); JPEGs larger than twice the
    size are decoded at a reduced scale (``Image.draft``) before the resize.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format == "JPEG" and min(im.size) >= 2 * size:
                im.draft("RGB", (size, size))
            im = im.convert("RGB")
            if im.size[0] > size or im.size[1] > size:
                im = im.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
            a = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # PIL raises many types on truncated / corrupt data
        warnings.warn(f"skipping unreadable image {path}: {type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)
        return None
    return torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous()


def decode_files(paths: Sequence, size: int, *, num_threads: Optional[int] = None, progress: bool = False):
    """Decode image files to one uint8 ``(N, 3, H, W)`` tensor and an ok mask ``(N,)``.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
    size : int
        The model's input side. Files larger than it are shrunk to ``size x size`` while
        decoding; if the decoded files still differ in size, all are resized to ``size``.
    num_threads : int, optional
        Decoding threads (default: one per CPU core, at most 32).
    progress : bool, default False

    Returns
    -------
    images : torch.Tensor, uint8, shape (N, 3, H, W)
        Unreadable files are zeros.
    ok : np.ndarray of bool, shape (N,)
    """
    n = len(paths)
    threads = int(num_threads) if num_threads else min(32, os.cpu_count() or 1)
    out: list = [None] * n
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        it = pool.map(lambda p: _decode_one(p, size), paths, chunksize=64)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, total=n, desc="decode", unit="img")
        for i, x in enumerate(it):
            out[i] = x
    return _stack(out, size)


def _stack(items: list, size: int):
    ok = np.array([x is not None for x in items], dtype=bool)
    shapes = {tuple(x.shape) for x in items if x is not None}
    if not shapes:
        return torch.zeros((len(items), 3, size, size), dtype=torch.uint8), ok
    if len(shapes) > 1:
        items = [None if x is None else (x if tuple(x.shape[1:]) == (size, size) else resize(x[None], size)[0])
                 for x in items]
        shape = (3, size, size)
    else:
        shape = shapes.pop()
    out = torch.zeros((len(items),) + tuple(shape), dtype=torch.uint8)
    for i, x in enumerate(items):
        if x is not None:
            out[i] = x
    return out, ok


def _item_to_chw_uint8(item):
    """A Dataset item (PIL, uint8 HWC array, float CHW tensor in [0, 1], or ``(image, label)``) -> uint8 CHW."""
    if isinstance(item, (tuple, list)):
        item = item[0]
    if item is None:
        return None
    if hasattr(item, "convert") and not isinstance(item, (np.ndarray, torch.Tensor)):  # PIL
        item = np.array(item.convert("RGB"), dtype=np.uint8)
    t = torch.as_tensor(np.asarray(item) if not isinstance(item, torch.Tensor) else item)
    if t.ndim == 2:
        t = t.unsqueeze(0).expand(3, *t.shape)
    elif t.ndim == 3 and t.shape[0] not in (1, 3) and t.shape[-1] in (1, 3):
        t = t.permute(2, 0, 1)
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"an image item must be HWC, CHW or HW, got shape {tuple(t.shape)}")
    if t.shape[0] == 1:
        t = t.expand(3, *t.shape[1:])
    return _to_uint8(t).contiguous()


def _to_uint8(t: torch.Tensor) -> torch.Tensor:
    if t.dtype == torch.uint8:
        return t
    if t.dtype.is_floating_point:
        return t.float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    raise TypeError(f"images must be uint8 (0..255) or float (0..1), got dtype {t.dtype}")


def _dataset_items(dataset, size: int, num_workers: int):
    """Materialise a torch Dataset's images once (DataLoader workers), as decode_files does for files."""

    def collate(batch):
        out = []
        for item in batch:
            try:
                x = _item_to_chw_uint8(item)
                if x is not None and (x.shape[1] > size or x.shape[2] > size):
                    x = resize(x[None], size)[0]
                out.append(x)
            except (TypeError, ValueError) as e:
                warnings.warn(f"skipping dataset item: {e}", RuntimeWarning, stacklevel=2)
                out.append(None)
        return out

    loader = torch.utils.data.DataLoader(dataset, batch_size=256, shuffle=False, num_workers=num_workers,
                                         collate_fn=collate)
    items: list = []
    for b in loader:
        items.extend(b)
    return _stack(items, size)


def _array_to_nchw_uint8(a) -> torch.Tensor:
    """uint8 (N, H, W, 3) / (N, H, W) / (N, 3, H, W), or float in [0, 1] -> uint8 (N, 3, H, W) (view when possible)."""
    t = torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a.detach().cpu()
    if t.ndim == 3:
        t = t.unsqueeze(-1).expand(*t.shape, 3)
    if t.ndim != 4:
        raise ValueError(f"an image array must be (N, H, W, 3), (N, H, W) or (N, 3, H, W), got shape {tuple(t.shape)}")
    if t.shape[1] != 3 and t.shape[-1] == 3:
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] != 3:
        raise ValueError(f"an image array needs 3 colour channels, got shape {tuple(t.shape)}")
    if t.dtype != torch.uint8:  # floats in [0, 1]: quantised once, in chunks (no full float copy)
        out = torch.empty(t.shape, dtype=torch.uint8)
        for s in range(0, t.shape[0], 4096):
            out[s:s + 4096] = _to_uint8(t[s:s + 4096])
        return out
    return t


# ----------------------------------------------------------------------------- store
class ImageStore:
    """N images as uint8 ``(N, 3, H, W)``, decoded once, handed out as device batches.

    Parameters
    ----------
    inputs : list of paths, np.ndarray, torch.Tensor or torch.utils.data.Dataset
        Image files; an ``(N, H, W, 3)`` / ``(N, 3, H, W)`` uint8 array (or float in [0, 1]);
        or a Dataset of images / ``(image, label)`` pairs.
    size : int
        The model's input side (files larger than it are shrunk to it when decoded).
    device : torch.device
    placement : {"auto", "device", "host"}, default "auto"
        "device": the whole store on ``device``; "host": host memory (pinned when the device
        is a GPU) and a copy of each batch, overlapping compute; "auto": "device" when the
        store takes at most ``DEVICE_FRACTION`` of the device's free memory (always on CPU).
    num_workers : int, default 0
        Decoding threads for files (0: one per core) / DataLoader workers for a Dataset.

    Attributes
    ----------
    data : torch.Tensor, uint8 (N, 3, H, W)
    ok : np.ndarray of bool, shape (N,)
        False for unreadable files (their rows are zeros and must not be trained on).
    resident : bool
        Whether ``data`` lives on ``device``.
    """

    def __init__(self, inputs, size: int, device, *, placement: str = "auto", num_workers: int = 0,
                 progress: bool = False):
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(map(repr, PLACEMENTS))}, got {placement!r}")
        self.size = int(size)
        self.device = torch.device(device)
        if is_path_list(inputs):
            data, ok = decode_files(inputs, self.size, num_threads=num_workers or None, progress=progress)
        elif isinstance(inputs, (np.ndarray, torch.Tensor)):
            data, ok = _array_to_nchw_uint8(inputs), np.ones(len(inputs), dtype=bool)
        elif isinstance(inputs, torch.utils.data.Dataset) or hasattr(inputs, "__getitem__"):
            data, ok = _dataset_items(inputs, self.size, int(num_workers))
        else:
            raise TypeError(f"images must be file paths, an image array or a torch Dataset, got {type(inputs).__name__}")
        self.ok = ok
        on_accel = self.device.type != "cpu"
        if placement == "auto":
            placement = "device" if (not on_accel or data.numel() <= DEVICE_FRACTION * _free_bytes(self.device)) \
                else "host"
        self.resident = placement == "device" or not on_accel
        if self.resident:
            self.data = data.to(self.device)
        else:
            self.data = data.contiguous().pin_memory() if torch.cuda.is_available() else data.contiguous()
        self._stream = torch.cuda.Stream(self.device) if (not self.resident and self.device.type == "cuda") else None

    def __len__(self):
        return self.data.shape[0]

    @property
    def nbytes(self) -> int:
        return self.data.numel()

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` on the device for the sample indices ``idx``."""
        if self.resident:
            return self.data.index_select(0, idx.to(self.data.device))
        return self.data[idx.cpu()].pin_memory().to(self.device, non_blocking=True) \
            if self.device.type == "cuda" else self.data[idx.cpu()]

    def batches(self, order: torch.Tensor, batch_size: int):
        """Yield ``(positions, uint8 batch)`` over ``order``; host stores copy batch b + 1 while b computes."""
        nb = int(math.ceil(order.numel() / batch_size))
        if self._stream is None:
            for b in range(nb):
                sl = slice(b * batch_size, (b + 1) * batch_size)
                yield sl, self.batch(order[sl])
            return
        order_cpu = order.cpu()
        cur = torch.cuda.current_stream(self.device)

        def fetch(b):
            with torch.cuda.stream(self._stream):
                x = self.data[order_cpu[b * batch_size:(b + 1) * batch_size]].pin_memory()
                return x.to(self.device, non_blocking=True)

        nxt = fetch(0) if nb else None
        for b in range(nb):
            cur.wait_stream(self._stream)
            x = nxt
            x.record_stream(cur)
            if b + 1 < nb:
                nxt = fetch(b + 1)
            yield slice(b * batch_size, (b + 1) * batch_size), x


def _free_bytes(device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return 1 << 62


# ----------------------------------------------------------------------------- batched transforms
def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of a batch to ``size x size`` (antialiased when shrinking); keeps uint8 as uint8."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    dt = x.dtype
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=bool(x.shape[-1] > size or x.shape[-2] > size))
    return y.round_().clamp_(0, 255).to(dt) if dt == torch.uint8 else y


def random_resized_crop_flip(x: torch.Tensor, size: int, generator: torch.Generator, *,
                             scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """Random resized crop to ``size x size`` plus a random horizontal flip, for a whole batch.

    One ``torchvision.ops.roi_align`` call crops and resizes every image (bilinear); the crop
    boxes and flips are drawn from ``generator`` on the host (5 numbers per image), so a seed
    gives the same augmentation on every device. Returns float32 on the 0..255 scale.
    """
    from torchvision.ops import roi_align

    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(*scale, generator=generator) * h * w
    r = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator).exp()
    cw = (area * r).sqrt().clamp(max=w)
    ch = (area / r).sqrt().clamp(max=h)
    x0 = torch.rand(b, generator=generator) * (w - cw)
    y0 = torch.rand(b, generator=generator) * (h - ch)
    flip = torch.rand(b, generator=generator) < 0.5
    # A flipped crop is the same box read right to left: swap x0 and x1 (roi_align samples
    # at x0 + (j + 0.5) * (x1 - x0) / size, so a negative width mirrors the crop).
    left = torch.where(flip, x0 + cw, x0)
    right = torch.where(flip, x0, x0 + cw)
    boxes = torch.stack([torch.arange(b, dtype=torch.float32), left, y0, right, y0 + ch], 1)
    return roi_align(x.float(), boxes.to(x.device, non_blocking=True), output_size=(size, size),
                     spatial_scale=1.0, sampling_ratio=2, aligned=True)


def channels_last(device) -> bool:
    """Whether the engine lays image batches and the fine-tuned encoder out ``channels_last`` on
    ``device`` (:data:`CHANNELS_LAST`; device types it does not name: channels_last)."""
    return bool(CHANNELS_LAST.get(torch.device(device).type, True))


def normalize(x: torch.Tensor, mean, std, *, channels_last: Optional[bool] = None) -> torch.Tensor:
    """``(x / 255 - mean) / std`` for a uint8 or 0..255 float batch, as one fused multiply-add, in
    ``channels_last`` layout or contiguous (None: the layout of ``x``'s device, :func:`channels_last`)."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    y = torch.addcmul(-m / s, x.float(), 1.0 / (255.0 * s))
    if channels_last is None:
        channels_last = _device_channels_last(x.device)
    return y.contiguous(memory_format=torch.channels_last) if channels_last else y


_device_channels_last = channels_last  # normalize's keyword shadows the function's name
