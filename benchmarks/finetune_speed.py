"""Fine-tuning speed of ``sei.train`` (and the engine's frozen embedding) against a minimal reference
loop written here in plain torch: data resident on the device, random resized crop + flip with one
``roi_align`` per batch, channels_last, autocast, SGD. ``benchmarks/train_speed.py --device cpu|cuda``
prints and writes this table; ``benchmarks/finetune_detection.py`` trains its confident-learning folds
with :func:`reference_epoch` (the K-fold baseline needs a held-out prediction per fold, which one
``sei.train`` run does not give: that baseline is benchmark-local for this reason).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np


def _images_for_speed(n, seed=0, pack=None):
    """CIFAR-10N training images (uint8, 32 px) and worse labels when the data is there (or from a
    ``benchmarks/device_pack.py`` pack), else random ones."""
    if pack is not None:
        from benchmarks.device_pack import load_pack

        x, lab, _ = load_pack(pack)
        if len(x) < n:
            raise SystemExit(f"the pack {pack} holds {len(x)} images, fewer than --n {n}")
        return np.ascontiguousarray(x[:n]), lab["worse"][:n], f"CIFAR-10N train from the pack {Path(pack).name}"
    try:
        from benchmarks.cifar10n import load_images, load_labels

        x = load_images("train")[:n]
        y = np.asarray(load_labels()["worse"][:n], dtype=np.int64)
        if len(x) == n:
            return np.ascontiguousarray(x), y, "CIFAR-10N train (32 px JPEGs decoded)"
    except Exception:
        pass
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n), "random uint8"


def reference_epoch(visual, head, opt, x_dev, y_dev, *, size, batch_size, mean, std, gen, amp_dtype):
    """The minimal loop the engine is held to: uint8 images resident on the device, random resized
    crop + flip with one ``roi_align`` per batch, channels_last, autocast, SGD. Written here on
    purpose (not the library's pipeline) so that the comparison is against plain torch."""
    import math

    import torch
    import torch.nn.functional as F
    from torchvision.ops import roi_align

    dev = x_dev.device
    n = x_dev.shape[0]
    perm = torch.randperm(n, generator=gen).to(dev)
    m = torch.tensor(mean, device=dev).view(1, 3, 1, 1)
    s = torch.tensor(std, device=dev).view(1, 3, 1, 1)
    for b in range(0, n, batch_size):
        idx = perm[b:b + batch_size]
        xb = x_dev[idx].float()
        bsz, _, h, w = xb.shape
        area = torch.empty(bsz).uniform_(0.5, 1.0, generator=gen) * h * w
        r = torch.empty(bsz).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen).exp()
        cw, ch = (area * r).sqrt().clamp(max=w), (area / r).sqrt().clamp(max=h)
        x0, y0 = torch.rand(bsz, generator=gen) * (w - cw), torch.rand(bsz, generator=gen) * (h - ch)
        boxes = torch.stack([torch.arange(bsz, dtype=torch.float32), x0, y0, x0 + cw, y0 + ch], 1).to(dev)
        xb = roi_align(xb, boxes, (size, size), 1.0, 2, True)
        flip = (torch.rand(bsz, generator=gen) < 0.5).to(dev)
        xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        xb = ((xb / 255 - m) / s).contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            loss = F.cross_entropy(head(visual(xb).float()), y_dev[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()


def reference_embed(visual, x_dev, *, size, batch_size, mean, std, amp_dtype):
    import torch
    import torch.nn.functional as F

    dev = x_dev.device
    m = torch.tensor(mean, device=dev).view(1, 3, 1, 1)
    s = torch.tensor(std, device=dev).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for b in range(0, x_dev.shape[0], batch_size):
            xb = F.interpolate(x_dev[b:b + batch_size].float(), size=(size, size), mode="bilinear",
                               align_corners=False)
            xb = ((xb / 255 - m) / s).contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                out.append(visual(xb).float())
        f = torch.cat(out).cpu()
    return f


def finetune_table(device, n, size, batch_sizes=(128, 512), epochs=3, deadline=None, pack=None):
    """Seconds per epoch of ``sei.train`` finetune and frozen-embedding images/s against the reference
    loops above, same model (EfficientNet-Lite0), image size, batch size and device, in one process.
    The first epoch of each run is a warm-up and not counted (median of the others)."""
    import torch

    import sei
    from sei.engine.loop import autocast_dtype
    from sei.engine.embedding import embed_images
    from sei.engine.encoders import load_model

    dev = torch.device(device)
    x, y, src = _images_for_speed(n, pack=pack)
    amp_dtype = autocast_dtype(dev, True)
    lines = [f"Fine-tuning speed on {device} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else platform.machine()}, "
             f"{os.cpu_count()} CPU cores, torch {torch.__version__}); {n:,} images ({src}) at {size} px, "
             f"EfficientNet-Lite0, precision {amp_dtype or torch.float32}; median s / epoch after one warm-up epoch.",
             "", "| what | batch | sei s / epoch | reference s / epoch | ratio |", "| --- | ---: | ---: | ---: | ---: |"]
    rows = []
    for bs in batch_sizes:
        if deadline is not None and time.time() > deadline:
            lines.append(f"| (batch {bs} skipped: time guard) | | | | |")
            continue
        times = []
        t_last = [time.time()]

        def tick(epoch, total, metrics):
            now = time.time()
            times.append(now - t_last[0])
            t_last[0] = now

        t_last[0] = time.time()
        sei.train(x, y, class_names=[f"c{i}" for i in range(10)], mode="finetune", epochs=epochs, batch_size=bs,
                  image_size=size, device=device, progress=False, on_epoch_end=tick)
        sei_s = float(np.median(times[1:])) if len(times) > 1 else times[0]
        bundle = load_model("efficientnet-lite0")
        visual = bundle.visual.to(dev).to(memory_format=torch.channels_last).train()
        head = torch.nn.Linear(bundle.embed_dim, 10).to(dev)
        opt = torch.optim.SGD(list(visual.parameters()) + list(head.parameters()), lr=1e-3, momentum=0.9,
                              weight_decay=1e-4)
        x_dev = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(dev)
        y_dev = torch.from_numpy(y).to(dev)
        gen = torch.Generator().manual_seed(0)
        ref = []
        for _ in range(epochs):
            t = time.time()
            reference_epoch(visual, head, opt, x_dev, y_dev, size=size, batch_size=bs, mean=bundle.mean,
                            std=bundle.std, gen=gen, amp_dtype=amp_dtype)
            ref.append(time.time() - t)
        ref_s = float(np.median(ref[1:])) if len(ref) > 1 else ref[0]
        rows.append(("finetune", bs, sei_s, ref_s))
        lines.append(f"| `sei.train` finetune | {bs} | {sei_s:.3f} | {ref_s:.3f} | {sei_s / ref_s:.2f}x |")
        print(lines[-1], flush=True)
    if deadline is None or time.time() < deadline:
        bundle = load_model("efficientnet-lite0")
        embed_images(bundle, x[:512], image_size=size, batch_size=512, device=device)  # warm-up
        t = time.time()
        embed_images(bundle, x, image_size=size, batch_size=512, device=device)
        sei_e = time.time() - t
        visual = bundle.visual.to(dev).to(memory_format=torch.channels_last).eval()
        x_dev = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(dev)
        reference_embed(visual, x_dev[:512], size=size, batch_size=512, mean=bundle.mean, std=bundle.std,
                        amp_dtype=amp_dtype)
        t = time.time()
        reference_embed(visual, x_dev, size=size, batch_size=512, mean=bundle.mean, std=bundle.std,
                        amp_dtype=amp_dtype)
        ref_e = time.time() - t
        lines += ["", "| frozen embedding | batch | sei images / s | reference images / s | ratio (time) |",
                  "| --- | ---: | ---: | ---: | ---: |",
                  f"| `sei.engine.embedding.embed_images` | 512 | {n / sei_e:,.0f} | {n / ref_e:,.0f} | {sei_e / ref_e:.2f}x |"]
        print(lines[-1], flush=True)
    return lines
