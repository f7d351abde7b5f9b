"""CIFAR-10N loader shared by the benchmarks and the active-learning experiments.

Data: ``../shared/data/cifar10n/`` (``images.zip`` + ``labels.npz``), overridable with
the ``SEI_CIFAR10N_DIR`` environment variable. Decoded images and embeddings are cached
as ``.npy`` files under ``benchmarks/.cache/`` (git-ignored; ``SEI_BENCH_CACHE`` overrides).

Labels: CIFAR-10N, "Learning with Noisy Labels Revisited: A Study Using Real-World Human
Annotations" (Wei et al., ICLR 2022), CC BY-NC 4.0. Images: CIFAR-10 (Krizhevsky, 2009).

    >>> from benchmarks.cifar10n import load_labels, load_images, load_embeddings
    >>> lab = load_labels()              # dict: class_names, train_clean, aggre, random1..3, worse, test
    >>> x = load_images("train")         # (50000, 32, 32, 3) uint8
    >>> f = load_embeddings("train")     # (50000, D) float32, frozen EfficientNet-Lite0 at 96 px
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent

#: Noisy label sets shipped with CIFAR-10N and their measured noise rates.
LABEL_SETS = ("aggre", "random1", "random2", "random3", "worse")
SPLIT_SIZES = {"train": 50_000, "test": 10_000}

CITATION = (
    "CIFAR-10N labels: J. Wei, Z. Zhu, H. Cheng, T. Liu, G. Niu, Y. Liu, \"Learning with Noisy "
    "Labels Revisited: A Study Using Real-World Human Annotations\", ICLR 2022 (CC BY-NC 4.0). "
    "Images: CIFAR-10 (Krizhevsky, 2009)."
)


def data_dir() -> Path:
    env = os.environ.get("SEI_CIFAR10N_DIR")
    if env:
        return Path(env)
    for cand in (_REPO.parent / "shared" / "data" / "cifar10n", Path("/work/shared/data/cifar10n")):
        if (cand / "labels.npz").exists():
            return cand
    return _REPO.parent / "shared" / "data" / "cifar10n"


def cache_dir() -> Path:
    d = Path(os.environ.get("SEI_BENCH_CACHE", _HERE / ".cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _check_split(split: str) -> None:
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def load_labels() -> dict:
    """All label arrays of CIFAR-10N as a dict of numpy arrays.

    Keys: ``class_names`` (10 str), ``train_clean``, ``aggre``, ``random1``, ``random2``,
    ``random3``, ``worse`` (50,000 int64 each) and ``test`` (10,000 int64).
    """
    path = data_dir() / "labels.npz"
    if not path.exists():
        raise FileNotFoundError(f"CIFAR-10N labels not found at {path}; set SEI_CIFAR10N_DIR")
    with np.load(path, allow_pickle=False) as z:
        out = {}
        for k in z.files:
            v = z[k]
            out[k] = [str(s) for s in v] if k == "class_names" else v.astype(np.int64)
    return out


def noisy_labels(label_set: str) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy_labels, is_mislabeled)`` for one CIFAR-10N training label set."""
    lab = load_labels()
    if label_set not in LABEL_SETS:
        raise ValueError(f"label_set must be one of {LABEL_SETS}, got {label_set!r}")
    noisy = lab[label_set]
    return noisy, noisy != lab["train_clean"]


def load_images(split: str = "train") -> np.ndarray:
    """Decoded images of one split, ``(n, 32, 32, 3)`` uint8, canonical CIFAR-10 order.

    The first call decodes the JPEGs from ``images.zip`` (about a minute for the train
    split) and caches the array as ``benchmarks/.cache/cifar10n_<split>_images.npy``.
    """
    _check_split(split)
    cache = cache_dir() / f"cifar10n_{split}_images.npy"
    if cache.exists():
        return np.load(cache, mmap_mode=None)
    from PIL import Image

    n = SPLIT_SIZES[split]
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    with zipfile.ZipFile(data_dir() / "images.zip") as z:
        for i in range(n):
            with Image.open(io.BytesIO(z.read(f"{split}/{i:05d}.jpg"))) as im:
                out[i] = np.asarray(im.convert("RGB"), dtype=np.uint8)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, cache)
    return out


def load_embeddings(
    split: str = "train",
    model: str = "efficientnet-lite0",
    size: int = 96,
    *,
    batch_size: int = 256,
    device: str = "cpu",
    verbose: bool = True,
) -> np.ndarray:
    """Frozen-encoder embeddings of one split, ``(n, D)`` float32, cached.

    Computed with :func:`sei.engine.encoders.load_model` / :func:`sei.engine.embedding.embed_images` on the
    images resized to ``size`` px, and cached as
    ``benchmarks/.cache/cifar10n_<split>_<model>_<size>.npy``.
    """
    _check_split(split)
    safe = str(model).replace("/", "_").replace(":", "_")
    cache = cache_dir() / f"cifar10n_{split}_{safe}_{size}.npy"
    if cache.exists():
        return np.load(cache)
    images = load_images(split)
    t0 = time.time()
    feats = _embed(images, model=model, size=size, batch_size=batch_size, device=device)
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    if verbose:
        print(f"[cifar10n] embedded {split} ({len(feats)}x{feats.shape[1]}) with {model}@{size}px "
              f"in {time.time() - t0:.0f}s -> {cache}")
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, feats)
    os.replace(tmp, cache)
    return feats


def _embed(images: np.ndarray, *, model: str, size: int, batch_size: int, device: str) -> np.ndarray:
    """Frozen features through the library's own encoder loading and embedding
    (:func:`sei.engine.encoders.load_model`, :func:`sei.engine.embedding.embed_images`)."""
    from sei.engine.embedding import embed_images
    from sei.engine.encoders import load_model

    return np.asarray(embed_images(load_model(model), images, image_size=size, batch_size=batch_size,
                                   device=device, progress=False))


if __name__ == "__main__":  # python benchmarks/cifar10n.py  -> warm the caches
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embeddings", action="store_true", help="also compute embeddings")
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--size", type=int, default=96)
    a = ap.parse_args()
    lab = load_labels()
    for s in LABEL_SETS:
        print(f"{s:8s} noise rate {np.mean(lab[s] != lab['train_clean']):.4f}")
    for split in ("train", "test"):
        t = time.time()
        x = load_images(split)
        print(f"{split}: images {x.shape} {x.dtype} ({time.time() - t:.1f}s)")
        if a.embeddings:
            f = load_embeddings(split, a.model, a.size)
            print(f"{split}: embeddings {f.shape}")
    print(CITATION)
