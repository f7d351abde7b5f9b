"""Image folders: the folder-per-class layout read into paths, labels and class names.

Decoding lives in :mod:`sei.engine.images` (a corrupt or unreadable file is reported once,
a warning naming the file, and skipped: its sample keeps a NaN score and is not flagged).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

__all__ = ["scan_image_folder", "IMAGE_EXTENSIONS"]


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
