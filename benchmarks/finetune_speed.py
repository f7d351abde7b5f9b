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


def reference_epoch(visual, head, opt, x_dev, y_dev, *, size, batch_size, mean, std, gen, amp_dtype,
                    channels_last=True):
    """The minimal loop the engine is held to: uint8 images resident on the device, random resized
    crop + flip with one ``roi_align`` per batch, channels_last (``channels_last=False``: torch's
    default contiguous layout, the plain CPU loop), autocast, SGD. Written here on purpose (not the
    library's pipeline) so that the comparison is against plain torch."""
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
        xb = (xb / 255 - m) / s
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
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


def tiny_model(width=16):
    """The CPU proxy's encoder: three strided 3x3 convolutions (BatchNorm, ReLU) and global average
    pooling, ``4 * width`` features. Small enough that the data path (crop, resize, flip, normalise)
    weighs as much as the network, which is where the engine's own overhead shows."""
    import torch.nn as nn

    layers, c_in = [], 3
    for c_out in (width, 2 * width, 4 * width):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        c_in = c_out
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.embed_dim = c_in
    return net


def tiny_proxy_table(n=2048, size=48, batch_size=128, epochs=4, repeats=3, threads=1, model="tiny"):
    """The CPU proxy of the engine's overhead: seconds per epoch of ``sei.train`` (``mode="finetune"``)
    on :func:`tiny_model` (``model="efficientnet-lite0"``: that encoder) at ``size`` px against a plain
    loop doing the same batched random resized crop + flip (one ``roi_align``), normalisation and SGD,
    on CPU. Both run in both memory layouts: the engine with its CPU layout
    (:data:`sei.engine.images.CHANNELS_LAST`) set to channels_last and to contiguous, the plain loop
    in torch's default (contiguous) layout and in channels_last (model and batches). Each of
    ``repeats`` rounds runs the four (``epochs`` each, the first a warm-up not counted, median of the
    others), timed by the wall clock and by this process's CPU time (with one thread the CPU time
    barely grows when other jobs share the cores; the wall time does). Returns the table's lines."""
    import torch

    import sei
    from sei.engine import images
    from sei.engine.encoders import load_model

    torch.set_num_threads(threads)
    x, y, src = _images_for_speed(n)
    names = [f"c{i}" for i in range(10)]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def encoder():
        return tiny_model() if model == "tiny" else load_model(model).visual.train()

    def clocks():
        return np.array([time.perf_counter(), time.process_time()])

    load0 = os.getloadavg()[0]
    engine_cpu = images.CHANNELS_LAST["cpu"]
    rounds = []
    for r in range(repeats):
        row = {}
        for cl in (True, False) if r % 2 == 0 else (False, True):
            times, last = [], [None]

            def tick(epoch, total, metrics):
                now = clocks()
                times.append(now - last[0])
                last[0] = now

            images.CHANNELS_LAST["cpu"] = cl
            try:
                torch.manual_seed(r)
                last[0] = clocks()
                sei.train(x, y, class_names=names, model=encoder(), mode="finetune", epochs=epochs,
                          batch_size=batch_size, image_size=size, device="cpu", progress=False, on_epoch_end=tick,
                          num_threads=threads, seed=r)
            finally:
                images.CHANNELS_LAST["cpu"] = engine_cpu
            row[("sei", cl)] = np.median(times[1:], axis=0)
        for cl in (False, True) if r % 2 == 0 else (True, False):
            torch.manual_seed(r)
            visual = encoder()
            if cl:
                visual = visual.to(memory_format=torch.channels_last)
            dim = getattr(visual, "embed_dim", None) or int(visual(torch.zeros(2, 3, size, size)).shape[-1])
            head = torch.nn.Linear(dim, 10)
            opt = torch.optim.SGD(list(visual.parameters()) + list(head.parameters()), lr=1e-3, momentum=0.9,
                                  weight_decay=1e-4)
            x_t = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
            y_t = torch.from_numpy(np.asarray(y, dtype=np.int64))
            gen = torch.Generator().manual_seed(r)
            ref = []
            for _ in range(epochs):
                t = clocks()
                reference_epoch(visual, head, opt, x_t, y_t, size=size, batch_size=batch_size, mean=mean, std=std,
                                gen=gen, amp_dtype=None, channels_last=cl)
                ref.append(clocks() - t)
            row[("plain", cl)] = np.median(ref[1:], axis=0)
        rounds.append(row)
        print(f"round {r}: " + ", ".join(f"{k[0]} {'channels_last' if k[1] else 'contiguous'} {v[0]:.3f} s wall / "
                                          f"{v[1]:.3f} s CPU" for k, v in row.items()), flush=True)
    order = [("sei", engine_cpu), ("sei", not engine_cpu), ("plain", False), ("plain", True)]
    med = {k: np.median([row[k] for row in rounds], axis=0) for k in order}
    what = {("sei", True): "`sei.train`, engine layout on CPU channels_last",
            ("sei", False): "`sei.train`, engine layout on CPU contiguous",
            ("plain", False): "plain loop, contiguous (torch's default)", ("plain", True): "plain loop, channels_last"}
    enc = ("a tiny CNN (`benchmarks.finetune_speed.tiny_model`: 3 strided convolutions, 64 features)"
           if model == "tiny" else f"`{model}`")
    lines = [f"CPU proxy of the engine's overhead: `sei.train(mode=\"finetune\")` on {enc} against a plain torch "
             f"loop doing the same batched random resized crop + flip (one `roi_align`), normalisation and SGD; "
             f"{n:,} images ({src}) at {size} px, batch {batch_size}, {platform.machine()} CPU, {threads} thread(s), "
             f"torch {torch.__version__}; the library's CPU layout is "
             f"{'channels_last' if engine_cpu else 'contiguous'} (`sei.engine.images.CHANNELS_LAST`). Seconds per "
             f"epoch = median of epochs 2..{epochs} of a run, wall clock and process CPU time; {repeats} rounds, the "
             f"variants interleaved; load average at start {load0:.1f} on {os.cpu_count()} cores (other jobs share "
             f"them: compare CPU times). Ratios are to the plain contiguous loop of the same round.", "",
             "| round | what | wall s / epoch | CPU s / epoch | ratio (wall / CPU) |",
             "| --- | --- | ---: | ---: | ---: |"]
    for i, row in enumerate(rounds + [med]):
        name = "**median**" if i == len(rounds) else str(i)
        base = row[("plain", False)]
        for k in order:
            v = row[k]
            lines.append(f"| {name} | {what[k]} | {v[0]:.3f} | {v[1]:.3f} | {v[0] / base[0]:.2f}x / {v[1] / base[1]:.2f}x |")
    return lines
