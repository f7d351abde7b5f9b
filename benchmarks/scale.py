"""The default path at scale: an SEIRecorder fed logits for N samples x K classes, then scored
with 64-d features (the neighbour score), in a fresh interpreter per size.

    nice python benchmarks/scale.py                          # 1.28e6 x 1,000 (ImageNet), 3 epochs
    nice python benchmarks/scale.py --n 100000 --k 1000 --epochs 2    # quick
    nice python benchmarks/scale.py --out benchmarks/results/scale.md

What is timed, per epoch: ``update`` of every batch (B x K float32 logits, ``from_logits=True``)
plus ``end_epoch``, against one pass of ``scipy.special.logsumexp`` over the same batches,
interleaved batch by batch so both see the same load on a shared machine (the issue's
yardstick: the update within 2x of it). Then ``sei_cleanlab.find_label_issues(labels, rec,
features=X)``: the default score with features, k-NN search included. Peak RSS (VmHWM) is
reset before each phase; "beyond features" subtracts the (N, 64) float32 features.

Data are synthetic and shaped like a classification run: 64-d features around one centre per
class, 20 % of labels flipped to another class, logits leaning to the true class (so the
neighbour and dynamics scores have something to find). Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent

_CHILD = r"""
import json, sys, time, warnings
import numpy as np
from scipy.special import logsumexp

def rss(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

n, k, epochs, batch, dim, seed, dense, iid = (int(a) for a in sys.argv[1:9])
import sei
from sei import SEIRecorder
from sei_cleanlab import find_label_issues

rng = np.random.default_rng(seed)
true = rng.integers(0, k, n)
flip = rng.random(n) < 0.2
labels = np.where(flip, (true + rng.integers(1, k, n)) % k, true)
centres = rng.normal(size=(k, dim)).astype(np.float32)
features = centres[true] + rng.normal(scale=1.0, size=(n, dim)).astype(np.float32)
pool = [rng.normal(scale=2.0, size=(batch, k)).astype(np.float32) for _ in range(8)]
pool_flat = np.concatenate(pool)
out = {"n": n, "k": k, "epochs": epochs, "batch": batch, "dim": dim, "features_bytes": features.nbytes,
       "baseline_rss": rss("VmRSS"), "epoch": []}

reset_peak()
rec = SEIRecorder(n, k, top_k=sei.constants.DEFAULT_TOP_K if dense else "auto")  # the sketch at any N with --dense-check
out["top_k"] = rec.top_k
sketch = [] if rec._logp_total is None else [*rec._logp_total.arrays.values(), *rec._logp_epoch.arrays.values()]
arrays = [rec._acc, rec.labels, rec.last_losses, *rec._latest.arrays.values(), *rec._total.values(),
          *rec._last.values(), *rec._mid.values(), rec._marker, *sketch]
out["recorder_bytes"] = int(sum(a.nbytes for a in arrays))
out["sketch_bytes"] = int(sum(a.nbytes for a in sketch))
# --dense-check: a recorder with the exact (N, K) sums beside it (poe_knn exact), same updates, untimed
ref = SEIRecorder(n, k, top_k=None, extra_scores="poe_knn") if dense else None
for e in range(epochs):
    reset_peak()
    order = rng.permutation(n)
    t_lse = t_up = 0.0
    for i, start in enumerate(range(0, n, batch)):
        ids = order[start:start + batch]
        # persistent: each sample keeps its own base logits (pool row ids % 8 B) from epoch to epoch, as a
        # model's view of a sample does; iid: a fresh pool row every epoch (no class but the true one recurs)
        z = pool[i % 8][: len(ids)].copy() if iid else pool_flat[ids % pool_flat.shape[0]]
        z[np.arange(len(ids)), true[ids]] += 6.0 + 1.0 * e  # learns the true class (its top class from about epoch 1)
        t0 = time.perf_counter()
        logsumexp(z, axis=1)
        t1 = time.perf_counter()
        rec.update(ids, z, labels[ids], from_logits=True)
        t2 = time.perf_counter()
        if ref is not None:
            ref.update(ids, z, labels[ids], from_logits=True)
        t_lse += t1 - t0
        t_up += t2 - t1
    t0 = time.perf_counter()
    rec.end_epoch()
    t_end = time.perf_counter() - t0
    if ref is not None:
        ref.end_epoch()
    out["epoch"].append({"update_s": t_up, "end_epoch_s": t_end, "logsumexp_s": t_lse, "peak": rss("VmHWM")})
reset_peak()
import sei.thresholds as _th  # the cl_count cutoff's count, timed where the default's scoring calls it
_count = _th.estimate_num_issues


def _timed_count(*a, **kw):
    t = time.perf_counter()
    got = _count(*a, **kw)
    out["count_s"] = time.perf_counter() - t
    return got


_th.estimate_num_issues = _timed_count
t0 = time.perf_counter()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    issues = find_label_issues(labels, rec, features=features)
    out["score"] = sei.scores.resolve_score("auto", True, recorder=rec, num_samples=n)
out["score_s"] = time.perf_counter() - t0
out["score_peak"] = rss("VmHWM")
out["warnings"] = sorted({str(w.message)[:160] for w in caught})
from sei.metrics import detection_metrics
out["flagged"] = int(issues.sum())
m = detection_metrics(issues, None, flip)
out["precision"], out["recall"], out["f1"] = m["precision"], m["recall"], m["f1"]
if ref is not None:  # the sketch's poe_knn against the exact one, on the same neighbours
    from sei.neighbors import _shares, feature_score, knn_indices
    nb = knn_indices(features, 20)
    exact = feature_score("poe_knn", ref.fusion_input("poe_knn"), labels, neighbors=nb, num_classes=k)
    low, is_exact, _ = rec._logp_means().margin(labels, _shares(labels, nb, k, 1.0))
    me, ms = detection_metrics(exact < 0, exact, flip), detection_metrics(low < 0, low, flip)
    out["dense"] = {"auroc_exact": me["auroc"], "auroc_sketch": ms["auroc"], "f1_exact": me["f1"], "f1_sketch": ms["f1"],
                    "exact_share": float(is_exact.mean()), "max_gap": float(np.max(exact - low))}
    from sei.neighbors import feature_issue_count  # the cl_count cutoff's count, exact and from the sketch
    out["dense"]["count_exact"] = feature_issue_count("poe_knn", ref.fusion_input("poe_knn"), labels, neighbors=nb,
                                                      num_classes=k)
    out["dense"]["count_sketch"] = feature_issue_count("poe_knn", rec.fusion_input("poe_knn"), labels, neighbors=nb,
                                                       num_classes=k)
    out["dense"]["flipped"] = int(flip.sum())
print("RESULT " + json.dumps(out))
"""


def run_one(n, k, epochs, batch, dim, seed=0, src=None, dense=False, iid=False):
    env = dict(os.environ, PYTHONPATH=str(src or _HERE.parent))
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(k), str(epochs), str(batch), str(dim), str(seed),
                           str(int(dense)), str(int(iid))],
                          capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def report(rows) -> str:
    gb = 1e9
    lines = ["| N x K | top_k kept | recorder arrays (of which the log-probability sketch) | epoch: update + end_epoch | "
             "logsumexp pass | ratio | peak RSS while recording (beyond features) | default score with 64-d features | "
             "scoring (k-NN incl.) | peak RSS scoring (beyond features) | P / R / F1 |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in rows:
        ep = r["epoch"]
        up = sum(e["update_s"] + e["end_epoch_s"] for e in ep) / len(ep)
        lse = sum(e["logsumexp_s"] for e in ep) / len(ep)
        peak = max(e["peak"] for e in ep) - r["features_bytes"]
        lines.append(
            f"| {r['n']:,} x {r['k']:,} | {r['top_k']} | {r['recorder_bytes'] / gb:.2f} GB "
            f"({r.get('sketch_bytes', 0) / gb:.2f} GB) | {up:.1f} s | {lse:.1f} s | {up / lse:.2f}x | {peak / gb:.2f} GB | "
            f"`{r.get('score', 'aum_prob_knn')}` | {r['score_s']:.0f} s"
            + (f" (count {r['count_s']:.0f} s)" if "count_s" in r else "") + " | "
            f"{(r['score_peak'] - r['features_bytes']) / gb:.2f} GB | "
            f"{r['precision']:.2f} / {r['recall']:.2f} / {r['f1']:.2f} |")
    dense = [r for r in rows if "dense" in r]
    if dense:
        lines += ["", "The sketch's `poe_knn` against the exact one (`--dense-check`: a recorder with the (N, K) sums "
                  "fed the same updates, the same neighbours):", "",
                  "| N x K, dynamics | AUROC exact | AUROC from the sketch | F1 exact (cutoff 0) | F1 from the sketch | "
                  "samples marked exact | largest score gap | `cl_count` count exact / from the sketch / flipped |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in dense:
            d = r["dense"]
            lines.append(f"| {r['n']:,} x {r['k']:,}, {r.get('dynamics', 'persistent')} | {100 * d['auroc_exact']:.2f} | {100 * d['auroc_sketch']:.2f} | "
                         f"{100 * d['f1_exact']:.2f} | {100 * d['f1_sketch']:.2f} | {d['exact_share']:.3f} | "
                         f"{d['max_gap']:.3f} | " + (f"{d['count_exact']:,} / {d['count_sketch']:,} / {d['flipped']:,} |"
                                                     if "count_exact" in d else "- |"))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1_280_000])
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--dense-check", action="store_true",
                    help="also record the exact (N, K) sums and compare poe_knn (8 bytes per sample and class more)")
    ap.add_argument("--dynamics", choices=("persistent", "iid"), default="persistent",
                    help="each sample's logits: its own from epoch to epoch (default), or drawn afresh every epoch")
    ap.add_argument("--out", default=None, help="write the table (and the raw JSON beside it)")
    a = ap.parse_args(argv)
    rows = []
    for n in a.n:
        t0 = time.time()
        rows.append(run_one(n, a.k, a.epochs, a.batch, a.dim, dense=a.dense_check, iid=a.dynamics == "iid"))
        rows[-1]["dynamics"] = a.dynamics
        print(f"[scale] N={n:,} K={a.k:,}: {time.time() - t0:.0f} s", file=sys.stderr)
    table = report(rows)
    print(table)
    for r in rows:
        for w in r["warnings"]:
            print(f"- N={r['n']:,}: warning: {w}")
    if a.out:
        Path(a.out).with_suffix(".json").write_text(json.dumps(rows, indent=1))
        notes = "\n".join(f"- N={r['n']:,}: warning: {w}" for r in rows for w in r["warnings"])
        Path(a.out).write_text(f"# The default path at scale\n\nMeasured with `{' '.join(['python', 'benchmarks/scale.py', *(argv or sys.argv[1:])])}` "
                               f"on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end (seconds "
                               "are upper bounds on a shared machine; the ratio is measured batch by batch, "
                               "so both sides see the same load).\n\n" + table + "\n\n" + notes + "\n")
    return rows


if __name__ == "__main__":
    main()
