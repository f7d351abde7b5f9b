"""Regime c: detection from one fine-tuning run of ``sei.train`` vs K-fold confident learning with
the same backbone, on all 50,000 CIFAR-10N training images (issue 12 item 2, issue 10 item 4).

Cells, in this order, for each label set (default ``worse``, ``aggre``, ``random1``):

1. ``sei``: one ``sei.train(x, y, mode="finetune", model="efficientnet-lite0", image_size=96,
   epochs=12, batch_size=512, lr=4e-3)`` (the linear scaling rule from the paper's 1e-3 at 128;
   no auxiliary class, so every sample is scored); AUROC (mislabeled = given label != clean
   label) of every recorder score (``res.recorder.scores(name)`` for ``sei.SCORE_NAMES``, AUM on
   logits included) and F1 of the zero cutoff for the signed scores;
2. ``cl``: confident learning on K-fold out-of-sample probabilities (default K = 3): per fold the
   same EfficientNet-Lite0, image size, epochs, batch size, lr, SGD (momentum 0.9, weight decay
   1e-4) and device augmentation (random resized crop + flip) as the reference loop of
   ``benchmarks/train_speed.py``, with a linear head and cross-entropy; then cleanlab's
   ``find_label_issues`` (prune_by_noise_rate) for F1 and self-confidence for AUROC, computed
   by :func:`benchmarks.harness.confident_learning` (cleanlab where installed, else the numpy
   port :mod:`benchmarks.confident_learning`: cleanlab is not on the GPU machine; identical masks).
   The folds train with the reference loop of ``benchmarks/finetune_speed.py``, not
   ``sei.train``: each fold needs a model that predicts its held-out images, which one
   ``sei.train`` run does not return, so this baseline is benchmark-local.

The fine-tuned tower's features of each ``sei`` cell are kept for the active-label-correction
benchmark in the fine-tuned regime (issue 14 item 3): reduced by PCA to 64 dims (fitted on all
images, as ``benchmarks/active.py`` reduces the frozen ones) and saved as float16 to
``<out>/finetuned_features_<labels>.npy`` (6.4 MB for 50,000 images; copied to ``--mirror``).
Back here: ``python benchmarks/active.py --features .../finetuned_features_worse.npy``.

Seconds are wall-clock GPU seconds of each cell (model loading and data upload included).
Results are written after every finished cell to ``<out>/finetune_detection.{md,json}`` (and
copied to ``--mirror``, e.g. the device tool's ``$OUT``); ``--time-limit`` seconds is a guard:
a cell whose estimated duration (from the throughput of the cells already run) would end past
it is skipped, and the table says so.

Estimate on one H100 (issue 10: 2.6 s / epoch for the minimal loop at batch 512, 96 px, 7.7 s
at batch 128): a ``sei`` cell 12 x 2.6-3.2 s + ~10 s = 40-50 s, a 3-fold ``cl`` cell
3 x 12 x 2/3 x 2.6 s + ~10 s = about 75 s; three label sets about 6 minutes.

Usage::

    python benchmarks/device_pack.py                         # here: the pack (images, labels, weights)
    bash benchmarks/device_check.sh                          # there, via the device tool (see its header)
    python benchmarks/finetune_detection.py --pack benchmarks/.device --device cuda --time-limit 360
    python benchmarks/finetune_detection.py --tiny --pack /tmp/pack --out /tmp/res   # CPU rehearsal
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

from benchmarks import harness  # noqa: E402
from sei.cross_validation import kfold_probs  # noqa: E402
from sei.metrics import detection_metrics  # noqa: E402

LABEL_SETS = ("worse", "aggre", "random1")
K = 10


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", type=Path, default=ROOT / "benchmarks" / ".device")
    ap.add_argument("--labels", default=",".join(LABEL_SETS), help="comma-separated CIFAR-10N label sets")
    ap.add_argument("--n", type=int, default=None, help="first n images only (default: all in the pack)")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--time-limit", type=float, default=None, help="seconds from the start; see the guard above")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--mirror", type=Path, default=None, help="also copy the tables here after every cell")
    ap.add_argument("--no-cl", action="store_true", help="only the sei.train cells")
    ap.add_argument("--tiny", action="store_true",
                    help="CPU rehearsal: 512 images, 32 px, 2 epochs, batch 64, 2 folds, two label sets")
    a = ap.parse_args(argv)
    if a.tiny:
        a.n, a.size, a.epochs, a.batch_size, a.folds = a.n or 512, 32, 2, 64, 2
        a.lr = 4e-3 * a.batch_size / 512
        if a.labels == ",".join(LABEL_SETS):
            a.labels = "worse,aggre"
    if a.device == "auto":
        import torch

        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    return a


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _none(v):
    return None if v is None or not np.isfinite(v) else float(v)


def metrics(bad, score, signed, flagged=None):
    """AUROC of ``-score`` (lower = more likely mislabeled) and F1 of ``flagged`` (default ``score < 0``
    for signed scores), over the samples with a finite score (:func:`sei.metrics.detection_metrics`);
    None where undefined."""
    score = np.asarray(score, dtype=float)
    if flagged is None and signed:
        flagged = score < 0
    m = detection_metrics(flagged, score, bad, valid=np.isfinite(score))
    return {"auroc": _none(m["auroc"]), "f1": _none(m["f1"]) if flagged is not None else None}


def sei_cell(x, y, bad, names, a, labels="worse"):
    """One ``sei.train`` finetune run: every recorder score; saves the tower's features (PCA-64)."""
    import sei
    import sei.scores

    signed = set(sei.scores.signed_names())
    last = [time.time()]

    def tick(epoch, total, m):
        now = time.time()
        print(f"    epoch {epoch + 1}/{total} {now - last[0]:.1f} s", flush=True)
        last[0] = now

    _sync(a.device)
    t = time.time()
    res = sei.train(x, y, class_names=names, mode="finetune", model="efficientnet-lite0", image_size=a.size,
                    epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, device=a.device, seed=a.seed,
                    progress=False, on_epoch_end=tick, return_features=True, extra_scores="all")
    _sync(a.device)
    secs = time.time() - t
    scores = {}
    for name in sei.SCORE_NAMES:
        try:
            scores[name] = metrics(bad, res.recorder.scores(name), name in signed)
        except Exception as e:  # a score that needs what this run does not record
            scores[name] = {"error": f"{type(e).__name__}: {e}"}
    save_features(res.features, a, labels)
    nbrs = knn_on_device(res.features, 20, a.device)  # neighbour scores on the fine-tuned features
    for name in sei.FEATURE_SCORES:
        sc = sei.feature_score(name, res.recorder.fusion_input(name, y), y, neighbors=nbrs, num_classes=K)
        scores[f"{name} (fine-tuned features)"] = metrics(bad, sc, True)
    return {"seconds": secs, "scores": scores, "train_accuracy": float(res.train_accuracy[-1]),
            "default_score": res.score_name}


def save_features(features, a, labels):
    """``<out>/finetuned_features_<labels>.npy``: the features reduced to 64 dims by PCA, float16."""
    from sklearn.decomposition import PCA

    x = np.nan_to_num(np.asarray(features, np.float32))
    dims = min(64, x.shape[0], x.shape[1])
    path = Path(a.out) / f"finetuned_features_{labels}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, PCA(dims, random_state=0).fit_transform(x).astype(np.float16))
    harness.copy_to_mirror([path], a.mirror)
    return path


def knn_on_device(features, k, device, chunk=4096):
    """(N, k) cosine nearest neighbours (self excluded) by chunked matrix products on the device."""
    import torch

    f = torch.nn.functional.normalize(torch.from_numpy(np.nan_to_num(features)).to(device), dim=1)
    out = []
    for s in range(0, f.shape[0], chunk):
        sim = f[s:s + chunk] @ f.T
        sim[torch.arange(sim.shape[0]), torch.arange(s, s + sim.shape[0])] = -2.0
        out.append(sim.topk(k, dim=1).indices.cpu())
    return torch.cat(out).numpy()


def _fold_probs(x_dev, y_dev, tr, te, a, seed):
    """Train Lite0 + a linear head on ``tr`` with the reference loop; softmax on ``te`` (eval mode)."""
    import torch

    from benchmarks.finetune_speed import reference_embed, reference_epoch
    from sei.engine.loop import autocast_dtype
    from sei.engine.encoders import load_model

    dev = x_dev.device
    torch.manual_seed(seed)
    bundle = load_model("efficientnet-lite0")
    visual = bundle.visual.to(dev).to(memory_format=torch.channels_last).train()
    head = torch.nn.Linear(bundle.embed_dim, K).to(dev)
    opt = torch.optim.SGD(list(visual.parameters()) + list(head.parameters()), lr=a.lr, momentum=0.9,
                          weight_decay=1e-4)
    amp = autocast_dtype(dev, True)
    tr_d, te_d = torch.from_numpy(tr).to(dev), torch.from_numpy(te).to(dev)
    xt, yt = x_dev[tr_d], y_dev[tr_d]
    gen = torch.Generator().manual_seed(seed)
    for _ in range(a.epochs):
        reference_epoch(visual, head, opt, xt, yt, size=a.size, batch_size=a.batch_size, mean=bundle.mean,
                        std=bundle.std, gen=gen, amp_dtype=amp)
    visual.eval()
    feats = reference_embed(visual, x_dev[te_d], size=a.size, batch_size=2 * a.batch_size, mean=bundle.mean,
                            std=bundle.std, amp_dtype=amp)
    with torch.no_grad():
        return torch.softmax(head(feats.to(dev)).float(), 1).cpu().numpy()


def cl_cell(x, y, bad, a):
    """K-fold cross-validated confident learning with the same backbone."""
    import torch

    dev = torch.device(a.device)
    _sync(a.device)
    t = time.time()
    x_dev = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(dev)
    y_dev = torch.from_numpy(y).to(dev)
    probs = kfold_probs(
        y, lambda f, tr, te: _fold_probs(x_dev, y_dev, tr, te, a, seed=a.seed * 100 + f), folds=a.folds,
        seed=a.seed, num_classes=K,
        on_fold=lambda f: print(f"    fold {f + 1}/{a.folds} done at {time.time() - t:.0f} s", flush=True))
    _sync(a.device)
    secs = time.time() - t
    quality, mask = harness.confident_learning(y, probs)
    m = metrics(bad, quality, False, flagged=mask)
    return {"seconds": secs, "scores": {"confident_learning": m}, "flagged": int(mask.sum()),
            "heldout_accuracy": float((probs.argmax(1) == y).mean())}


def estimate(kind, rates, a, n):
    """Seconds a cell should take from the image-epochs per second of the cells already run."""
    work = n * a.epochs * (1.0 if kind == "sei" else (a.folds - 1))
    rate = rates.get(kind) or next(iter(rates.values()), None)
    return None if rate is None else work / rate + 10.0 + (5.0 * a.folds if kind == "cl" else 0.0)


def table(results, a, meta):
    lines = [f"# Regime c: one fine-tuning run vs {a.folds}-fold confident learning (same backbone)", "",
             f"{meta['n']:,} CIFAR-10N training images, EfficientNet-Lite0 at {a.size} px, {a.epochs} epochs, "
             f"batch {a.batch_size}, lr {a.lr:g}, seed {a.seed}; {meta['device']}, torch {meta['torch']}. "
             f"`sei`: one `sei.train(mode='finetune')` run, every recorder score (AUROC of the ranking "
             f"against the clean labels, F1 of the zero cutoff for signed scores; the `(fine-tuned features)` rows: "
             f"the neighbour-label scores on the trained tower's features, 20 cosine neighbours). "
             f"`confident learning`: "
             f"{a.folds}-fold cross-validated probabilities ({a.folds} fine-tuned models, {a.epochs} epochs each on "
             f"{a.folds - 1}/{a.folds} of the data, linear head), `find_label_issues` (prune_by_noise_rate) for "
             "F1, self-confidence for AUROC. Seconds: wall-clock GPU seconds of the whole cell.", "",
             "| labels | method | score | AUROC | F1 at zero | GPU s |", "| --- | --- | --- | ---: | ---: | ---: |"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for r in results:
        if r.get("skipped"):
            lines.append(f"| {r['labels']} | {r['method']} | (skipped: {r['skipped']}) | | | |")
            continue
        for name, m in r["scores"].items():
            if "error" in m:
                lines.append(f"| {r['labels']} | {r['method']} | `{name}` | ({m['error'][:60]}) | | |")
                continue
            lines.append(f"| {r['labels']} | {r['method']} | `{name}` | {fmt(m['auroc'])} | {fmt(m['f1'])} | "
                         f"{r['seconds']:.1f} |")
    lines += ["", f"Measured {meta['date']}. Reproduce: `bash benchmarks/device_check.sh` on the GPU machine "
              "(see its header)."]
    return "\n".join(lines) + "\n"


def write(results, a, meta):
    harness.write_table(a.out / "finetune_detection.md", table(results, a, meta), {"meta": meta, "cells": results},
                        mirror=a.mirror)


def main(argv=None):
    t0 = time.time()
    a = parse(argv)
    import torch

    from benchmarks.device_pack import load_pack

    guard = harness.TimeGuard(a.time_limit, start=t0)
    x, lab, names = load_pack(a.pack)
    n = min(a.n or len(x), len(x))
    x = np.ascontiguousarray(x[:n])
    dev = torch.device(a.device)
    meta = {"n": n, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else
            f"CPU ({platform.machine()}, {os.cpu_count()} cores)", "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "args": {k: str(v) for k, v in vars(a).items()}}
    print(f"[finetune_detection] {n} images decoded in {time.time() - t0:.1f} s; {meta['device']}", flush=True)
    results, rates = [], {}
    for labels in a.labels.split(","):
        y = lab[labels][:n]
        bad = y != lab["train_clean"][:n]
        for kind in ("sei",) + (() if a.no_cl else ("cl",)):
            cell = {"labels": labels, "method": "sei" if kind == "sei" else "confident learning",
                    "epochs": a.epochs, "folds": a.folds if kind == "cl" else 1}
            est = estimate(kind, rates, a, n)
            if not guard.allows(est):
                need = "?" if est is None else f"~{est:.0f}"
                cell["skipped"] = f"time guard: {need} s needed, {guard.left():.0f} s left"
                print(f"[finetune_detection] {labels} {kind}: {cell['skipped']}", flush=True)
            else:
                print(f"[finetune_detection] {labels} {kind} (estimate {est and round(est)} s)", flush=True)
                out = sei_cell(x, y, bad, names, a, labels) if kind == "sei" else cl_cell(x, y, bad, a)
                cell.update(out)
                rates[kind] = n * a.epochs * (1.0 if kind == "sei" else a.folds - 1) / max(out["seconds"] - 10, 1e-3)
                best = {k: v.get("auroc") for k, v in out["scores"].items()}
                print(f"[finetune_detection] {labels} {kind}: {out['seconds']:.1f} s, AUROC {best}", flush=True)
            results.append(cell)
            write(results, a, meta)
    print(f"[finetune_detection] done in {time.time() - t0:.0f} s -> {a.out / 'finetune_detection.md'}", flush=True)
    return results


if __name__ == "__main__":
    main()
