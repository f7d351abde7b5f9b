"""Training-engine speed: embeddings-mode epochs over 50,000 x 1280 features, fine-tune images/s.

Prints a markdown table (also written to ``benchmarks/results/train_speed.md`` with ``--write``):

* ``sei.train`` in mode ``embeddings`` (the frozen mode's training stage), 150 epochs,
  batch 128, K = 10 (+1 auxiliary class), N = 50,000 features of width 1280 (the
  CIFAR-10N EfficientNet-Lite0 features when ``benchmarks/.cache`` holds them, else
  synthetic ones of the same shape: the speed does not depend on the values);
* a naive per-batch ``DataLoader`` loop, timed over a few epochs and extrapolated to 150;
* fine-tune images/s for a small model (EfficientNet-Lite0 at 64 px) on this CPU;
* ``--device cpu|cuda``: seconds per epoch of ``sei.train`` finetune and frozen-embedding
  images/s against a minimal reference loop (``benchmarks/finetune_speed.py``: data resident,
  augmentation on the device), at batch 128 and 512, with the ratios.

Benchmark-local on purpose: the naive loop and the reference loop are what the engine is timed
against; every other row trains through ``sei.train``. Metrics come from
:func:`sei.metrics.detection_metrics`.

Usage::

    nice -n 10 python benchmarks/train_speed.py [--epochs 150] [--write]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.finetune_speed import (finetune_table, reference_embed, reference_epoch,  # noqa: E402,F401
                                       tiny_proxy_table)
from benchmarks.harness import write_table  # noqa: E402
from sei.metrics import detection_metrics  # noqa: E402


FEATURES_CACHE = ROOT / "benchmarks" / ".cache" / "cifar10n_train_efficientnet-lite0_96.npy"


def _labels_file():
    from benchmarks.cifar10n import data_dir

    return data_dir() / "labels.npz"


def _cifar10n(table):
    """(features, labels npz, class names) of the cached CIFAR-10N embeddings, or a skip note."""
    if not FEATURES_CACHE.exists():
        return f"({table} table skipped: run `python benchmarks/cifar10n.py --embeddings` first)"
    z = np.load(_labels_file())
    return np.load(FEATURES_CACHE), z, [str(c) for c in z["class_names"]]


def _features(n, d, seed=0):
    if FEATURES_CACHE.exists():
        x = np.load(FEATURES_CACHE)
        if x.shape == (n, d):
            return x, "CIFAR-10N EfficientNet-Lite0 @96px"
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), "synthetic N(0,1)"


def _labels(n, k, seed=0):
    try:  # CIFAR-10N "worse" labels when the shared data is there
        z = np.load(_labels_file())
        if len(z["worse"]) == n:
            return np.asarray(z["worse"], dtype=np.int64)
    except Exception:
        pass
    return np.random.default_rng(seed).integers(0, k, n)


def naive_loop_epoch(x, y, k, batch_size=128, seed=0):
    """Per-batch DataLoader + nn.Linear + autograd, the loop the issue calls naive."""
    import torch

    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True,
                                     generator=torch.Generator().manual_seed(seed))
    head = torch.nn.Linear(x.shape[1], k + 1)
    opt = torch.optim.SGD(head.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    t = time.time()
    for xb, yb in dl:
        loss = torch.nn.functional.cross_entropy(head(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.time() - t


def finetune_images_per_s(n=256, size=64, epochs=1):
    import torch

    from sei.engine.training import train

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, size=(n, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 4, n)
    t = time.time()
    train(imgs, y, class_names=list("abcd"), model="efficientnet-lite0", mode="finetune", epochs=epochs,
          batch_size=64, image_size=size, progress=False, aux_class=False, num_threads=torch.get_num_threads())
    return n * epochs / (time.time() - t)


def protocol_table(epochs=30):
    """Detection quality of the engine's protocol switches on CIFAR-10N (cached features).

    AUROC of the SEI ranking against the clean labels and F1 of the zero / aux-mean cutoffs.
    """
    from sei.engine.training import train

    data = _cifar10n("protocol")
    if isinstance(data, str):
        return [data]
    x, z, names = data
    variants = [
        ("lr 1e-3, lr_schedule='step' (paper), learned scale, record train, no aux", dict(lr_schedule="step")),
        ("lr_schedule='none' (authors' code; now the default)", dict(lr_schedule="none")),
        ("step + logit_scale='raw' (authors' code)", dict(lr_schedule="step", logit_scale="raw")),
        ("step + logit_scale=30 (fixed)", dict(lr_schedule="step", logit_scale=30.0)),
        ("step + record='eval'", dict(lr_schedule="step", record="eval")),
        ("step + lr 1e-2", dict(lr_schedule="step", lr=1e-2)),
        ("step + aux class N//(K+1), threshold aux_mean (paper)", dict(lr_schedule="step", threshold="aux_mean")),
        ("step + aux class N//K, threshold aux_mean (authors' code)",
         dict(lr_schedule="step", threshold="aux_mean", num_aux="code")),
    ]
    lines = [f"Protocol switches, {epochs} epochs, `mode='embeddings'` on the CIFAR-10N EfficientNet-Lite0 @96px "
             "features; AUROC of the SEI ranking (mislabeled = given label != clean label), F1 of the cutoff used.",
             "", "| labels | variant | AUROC SEI | AUROC AUM | F1 (cutoff) | train acc |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for lab in ("worse", "aggre"):
        y = np.asarray(z[lab], dtype=np.int64)
        bad = y != np.asarray(z["train_clean"])
        for name, kw in variants:
            # one run, as measured: the auxiliary samples unscored (not the second run of sei.engine.protocols)
            r = train(x, y, class_names=names, epochs=epochs, progress=False, score_aux_samples=False, **kw)
            m = np.isfinite(r.scores)
            q = detection_metrics(r.mislabeled, r.scores, bad, valid=m)
            auc, f1 = q["auroc"], q["f1"]
            aum = detection_metrics(None, r.recorder.scores("aum"), bad, valid=m)["auroc"]
            cut = kw.get("threshold", "zero")
            lines.append(f"| {lab} | {name} | {auc:.4f} | {aum:.4f} | {f1:.4f} ({cut}) | {r.train_accuracy[-1]:.3f} |")
            print(lines[-1], flush=True)
    return lines


#: The heads compared by ``heads_table``. The linear head's lr (0.002) and 10 epochs were
#: chosen on CIFAR-10N ``random1`` only (lr 0.001 / 0.002 / 0.005 and 10 / 30 epochs gave AUROC
#: 0.921 / 0.921 / 0.919 and 0.919); ``aggre`` and ``worse`` are reported unchanged.
HEAD_VARIANTS = [
    ("linear, lr 0.002, 10 epochs (compute_sei's default)", dict(head="linear", lr=0.002, epochs=10)),
    ("prompt, lr 1e-3, 10 epochs", dict(head="prompt", epochs=10)),
    ("prompt, lr 1e-3, 30 epochs", dict(head="prompt", epochs=30)),
    ("prompt, lr 1e-3, 150 epochs (the paper's length)", dict(head="prompt", epochs=150)),
]


def heads_table(seeds=(0, 1, 2)):
    """Linear vs prompt head on the CIFAR-10N features: AUROC and zero-cutoff F1 of the default
    score (``sei.DEFAULT_SCORE``) and of the library's neighbour-label fusion ``aum_prob_knn``
    (k = 20 on the same features), mean over seeds, and seconds per run."""
    import sei
    from sei.engine.training import train

    data = _cifar10n("heads")
    if isinstance(data, str):
        return [data]
    x, z, names = data
    t = time.time()
    neighbors = sei.knn_indices(x, 20)
    t_knn = time.time() - t
    lines = [f"Heads of `sei.train` (`mode='embeddings'`, CIFAR-10N EfficientNet-Lite0 @96px features, "
             f"50,000 images, zero cutoff; mean ± std over seeds {list(seeds)}). The linear head's lr and "
             "epochs were chosen on `random1` only. `aum_prob_knn` = `sei_cleanlab` score of the same run "
             f"with `features=` (20 neighbours; the neighbour search took {t_knn:.0f} s, once).", "",
             "| labels | head | aum_prob AUROC | aum_prob F1 | aum_prob_knn AUROC | aum_prob_knn F1 | s / run |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for lab in ("aggre", "random1", "worse"):
        y = np.asarray(z[lab], dtype=np.int64)
        bad = y != np.asarray(z["train_clean"])
        for name, kw in HEAD_VARIANTS:
            cells, secs = {"aum_prob": ([], []), "aum_prob_knn": ([], [])}, []
            for seed in seeds:
                t = time.time()
                r = train(x, y, class_names=names, progress=False, seed=seed, score="aum_prob", **kw)
                secs.append(time.time() - t)
                fused = sei.feature_score("aum_prob_knn", r.scores, y, neighbors=neighbors, num_classes=10)
                for key, sc in (("aum_prob", r.scores), ("aum_prob_knn", fused)):
                    q = detection_metrics(sc < 0, sc, bad)
                    cells[key][0].append(q["auroc"])
                    cells[key][1].append(q["f1"])
            row = " | ".join(f"{np.mean(v):.4f} ± {np.std(v):.4f}" for key in cells for v in cells[key])
            lines.append(f"| {lab} | {name} | {row} | {np.mean(secs):.1f} |")
            print(lines[-1], flush=True)
    return lines
def _parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--probe-epochs", type=int, default=3, help="epochs timed for the slower variants")
    ap.add_argument("--write", action="store_true", help="write benchmarks/results/train_speed.md")
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument("--protocol", action="store_true", help="also the protocol-switch quality table (CIFAR-10N)")
    ap.add_argument("--protocol-epochs", type=int, default=30)
    ap.add_argument("--heads", action="store_true",
                    help="only the linear-vs-prompt head table; --write puts it in benchmarks/results/heads.md")
    ap.add_argument("--device", choices=["cpu", "cuda"],
                    help="only the fine-tune / embedding table against the reference loop on this device; "
                    "--write puts it in benchmarks/results/train_speed_<device>.md")
    ap.add_argument("--tiny-proxy", nargs="?", const="tiny", choices=["tiny", "lite0"], default=None,
                    help="only the CPU proxy of the engine's overhead (a tiny CNN, or EfficientNet-Lite0, at 48 px "
                    "against a plain loop, both memory layouts, 3 rounds); --write puts it in "
                    "benchmarks/results/train_speed_cpu_proxy[_lite0].md")
    ap.add_argument("--size", type=int, help="image size for --device (default 96 on cuda, 64 on cpu)")
    ap.add_argument("--time-limit", type=float, default=None, help="seconds; later rows are skipped past it")
    ap.add_argument("--pack", type=Path, default=None,
                    help="with --device: images and labels from a benchmarks/device_pack.py pack (the GPU machine)")
    return ap


def _write(name, title, lines, reproduce):
    """One results file: title, the table lines, and the command that reproduces it."""
    write_table(ROOT / "benchmarks" / "results" / name,
                f"# {title}\n\n" + "\n".join(lines) + f"\n\nReproduce: {reproduce}\n")


def _device_run(a):
    """The fine-tune / embedding table against the reference loop on one device."""
    n = a.n if a.n != 50_000 or a.device == "cuda" else 512
    size = a.size or (96 if a.device == "cuda" else 64)
    deadline = time.time() + a.time_limit if a.time_limit else None
    lines = finetune_table(a.device, n, size, epochs=max(2, min(a.probe_epochs, 5)), deadline=deadline, pack=a.pack)
    if a.write:
        _write(f"train_speed_{a.device}.md", f"Fine-tuning speed ({a.device})", lines,
               f"`python benchmarks/train_speed.py --device {a.device} --n {n} --size {size} --write` "
               f"(measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).")
    return lines


def _proxy_run(a):
    """The CPU proxy: sei.train on a tiny CNN at 48 px (or EfficientNet-Lite0, fewer images) against the
    plain loop, both memory layouts, 3 rounds."""
    lite = a.tiny_proxy == "lite0"
    n = a.n if a.n != 50_000 else (384 if lite else 2048)
    size = a.size or 48
    lines = tiny_proxy_table(n=n, size=size, model="efficientnet-lite0" if lite else "tiny",
                             epochs=3 if lite else 4)
    print("\n".join(lines))
    if a.write:
        name = "train_speed_cpu_proxy" + ("_lite0" if lite else "") + ".md"
        _write(name, "Engine overhead on CPU: " + ("EfficientNet-Lite0" if lite else "tiny model") + f", {size} px",
               lines, f"`python benchmarks/train_speed.py --tiny-proxy{' lite0' if lite else ''} --n {n} --size {size} "
               f"--write` (measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).")
    return lines


def _heads_run(a):
    lines = heads_table()
    if a.write:
        _write("heads.md", "Classifier heads of sei.train", lines,
               "`nice -n 10 python benchmarks/train_speed.py --heads --write` (measured "
               + time.strftime("%Y-%m-%d") + f" on a shared {os.cpu_count()}-core CPU).")
    return lines


def _embeddings_rows(a, k=10):
    """sei.train in embeddings mode against a naive DataLoader loop on the same features."""
    from sei.engine.training import train

    x, src = _features(a.n, a.dim)
    y = _labels(a.n, k)
    t = time.time()
    res = train(x, y, class_names=[f"class {i}" for i in range(k)], mode="embeddings", epochs=a.epochs,
                progress=False, lr=1e-3, aux_class=True, score_aux_samples=False)  # one run, as measured
    total = time.time() - t
    per = np.mean([naive_loop_epoch(x, y, k, seed=s) for s in range(a.probe_epochs)])
    rows = [("sei.train embeddings, prompt head, 1 thread", a.epochs, total, total / a.epochs),
            (f"naive DataLoader + nn.Linear, 2 threads (x{a.probe_epochs} epochs, extrapolated)",
             a.epochs, per * a.epochs, per)]
    return rows, src, res.train_accuracy[-1]


def _engine_run(a, k=10):
    """The default table: embeddings-mode speed, optionally fine-tuning and the protocol table."""
    import torch

    torch.set_num_threads(2)
    load0 = os.getloadavg()[0]
    rows, src, acc = _embeddings_rows(a, k)
    lines = [
        f"Training-engine speed on {platform.machine()} CPU ({os.cpu_count()} cores, shared), torch "
        f"{torch.__version__}; N = {a.n:,} x {a.dim} features ({src}), K = {k} + 1 auxiliary, batch 128; "
        f"load average at start {load0:.1f} (other jobs share the 2 cores).",
        "",
        "| variant | epochs | total s | s / epoch |",
        "| --- | ---: | ---: | ---: |",
    ] + [f"| {name} | {ep} | {tot:.1f} | {pe:.3f} |" for name, ep, tot, pe in rows]
    if not a.skip_finetune:
        ips = finetune_images_per_s()
        lines += ["", "| fine-tune | images / s |", "| --- | ---: |",
                  f"| EfficientNet-Lite0 @64px, batch 64, CPU {torch.get_num_threads()} threads, record=train | {ips:.1f} |"]
    lines += ["", f"Final-epoch train accuracy of the timed {a.epochs}-epoch run: {acc:.3f}."]
    if a.protocol:
        lines += [""] + protocol_table(a.protocol_epochs)
    print("\n".join(lines))
    if a.write:
        _write("train_speed.md", "Training speed", lines, "`nice -n 10 python benchmarks/train_speed.py --write`")
    return rows


def main(argv=None):
    a = _parser().parse_args(argv)
    if a.tiny_proxy:
        return _proxy_run(a)
    if a.device:
        return _device_run(a)
    if a.heads:
        return _heads_run(a)
    return _engine_run(a)


if __name__ == "__main__":
    main()
