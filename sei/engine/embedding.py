"""Frozen embeddings of images with an encoder of :mod:`sei.engine.encoders`, cached on disk
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..fingerprint import hasher, update_array
from .encoders import EncoderBundle, check_image_size, load_model, weights_fingerprint

__all__ = ["embed_images", "preprocess_batch"]


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
    from .images import normalize, resize

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


def _data_fingerprint(images) -> str:
    """Cache key of the data: every byte of an array; path, size, mtime_ns, inode and ctime_ns of files.

    Arrays are hashed in full (in 64 MiB slices, no copy when contiguous), so changing any pixel
    changes the key. A file rewritten in place changes its mtime_ns or at least its ctime_ns
    (which cannot be set back), a file replaced by another its inode.
    """
    h = hasher()
    if isinstance(images, np.ndarray):
        update_array(h, images)
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
        When given, features are stored as ``<cache_dir>/emb_<model>_<size>_<hash>.npz``, the
        hash covering every byte of the data and of the image tower's weights
        (:func:`sei.engine.encoders.weights_fingerprint`), and reused on the next call with the same
        model weights, data and preprocessing.
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
    >>> from sei.engine.encoders import load_model
    >>> from sei.engine.embedding import embed_images
    >>> enc = load_model("efficientnet-lite0")
    >>> x = np.zeros((4, 32, 32, 3), np.uint8)
    >>> embed_images(enc, x, image_size=96).shape
    (4, 1280)
    """
    from concurrent.futures import ThreadPoolExecutor

    from .images import ImageStore, is_path_list, normalize, resize

    bundle = load_model(model) if not isinstance(model, EncoderBundle) else model
    size = int(image_size or bundle.image_size)
    check_image_size(bundle, size)
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    cache_path = None
    if cache_dir is not None and (isinstance(images, np.ndarray) or is_path_list(images)):
        safe = bundle.name.replace("/", "_").replace(":", "_")
        key = hasher()
        key.update(f"{_data_fingerprint(images)}:{weights_fingerprint(bundle.visual)}".encode())
        cache_path = Path(cache_dir) / f"emb_{safe}_{size}_{key.hexdigest()[:32]}.npz"
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
