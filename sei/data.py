"""Image loading for the SEI training engine: files, folders, and corrupt-file skipping.

A corrupt or unreadable file is reported once (a warning naming the file) and skipped,
never fatal: its sample keeps a NaN score and is not flagged.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

__all__ = ["read_image", "load_image_batch", "scan_image_folder", "ImagePathDataset", "IMAGE_EXTENSIONS"]


def read_image(path, size=None) -> np.ndarray | None:
    """Decode one image to ``(H, W, 3)`` uint8 (resized to ``size`` x ``size`` when given); None if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.array(im, dtype=np.uint8)
    except Exception as e:  # PIL raises many types on truncated/corrupt data
        warnings.warn(f"skipping unreadable image {path}: {type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)
        return None


def load_image_batch(paths: Sequence, *, size: int):
    """Decode files to ``(B, size, size, 3)`` uint8 and an ok mask ``(B,)`` (False = unreadable)."""
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        a = read_image(p, size)
        if a is not None:
            out[i] = a
            ok[i] = True
    return out, ok


def scan_image_folder(root) -> tuple[list[str], np.ndarray, list[str]]:
    """Folder-per-class layout ``root/<class>/<image>`` -> (paths, labels (N,), class_names).

    Examples
    --------
    >>> paths, labels, names = scan_image_folder("data/train")  # doctest: +SKIP
    """
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{root} has no class sub-folders (expected root/<class>/<image>)")
    paths, labels = [], []
    for k, c in enumerate(classes):
        for dirpath, _, files in os.walk(root / c):
            for f in sorted(files):
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(str(Path(dirpath) / f))
                    labels.append(k)
    return paths, np.asarray(labels, dtype=np.int64), classes


class ImagePathDataset:
    """torch-style Dataset over image paths returning ``(uint8 (H, W, 3) or None, index)``.

    ``None`` marks an unreadable file; the engine's collate function drops it and
    records the index in ``result.skipped``.
    """

    def __init__(self, paths: Sequence, size: int):
        self.paths = list(map(str, paths))
        self.size = int(size)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return read_image(self.paths[i], self.size), i
