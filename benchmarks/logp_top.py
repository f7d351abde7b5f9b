"""The per-class log-probability sums of ``"poe_knn"`` kept as a top-k sketch (``sei._logp_top``,
what a recorder with ``top_k`` below K keeps) against the exact (N, K) sums, on real training runs.

    nice python benchmarks/logp_top.py                      # CIFAR-10N aggre / random1 / worse, seeds 0-2
    nice python benchmarks/logp_top.py --sets worse --seeds 0 --tops 2 5
    python benchmarks/logp_top.py --out benchmarks/results/logp_top.md

Each cell is one :func:`sei.train` run (regime a of ``defaults.md``: the linear head on the frozen
EfficientNet-Lite0 96 px features, 10 epochs at lr 0.002, no auxiliary class); every epoch's logits
(``on_record``) also feed one recorder that keeps the exact sums (``top_k=None``) and one per
sketch size j (``top_k=j``, K = 10). ``poe_knn`` and ``mean_logp`` are then read from each, with the
same 20 neighbours in the features, and compared with the planted truth (CIFAR-10N's human labels
against the clean ones): AUROC, AUPRC, F1 at the default cutoff, and against the exact score: the
share of samples the sketch marks exact, and the largest gap. CPU only; about a minute per cell.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sei  # noqa: E402
from benchmarks.cifar10n import load_embeddings, noisy_labels  # noqa: E402
from sei.metrics import detection_metrics  # noqa: E402
from sei.neighbors import _shares, feature_score, knn_indices  # noqa: E402
from sei.thresholds import compute_threshold, flag_issues  # noqa: E402


def cell(x, neighbours, label_set, seed, tops, epochs=10):
    y, is_mis = noisy_labels(label_set)
    n, k = len(y), int(y.max()) + 1
    recs = {"exact": sei.SEIRecorder(n, k, top_k=None, extra_scores="mean_logp")}
    recs.update({f"top {j}": sei.SEIRecorder(n, k, top_k=j) for j in tops})

    def on_record(epoch, ids, logits, labels):  # a block of the epoch's logits
        for r in recs.values():
            r.update(ids, logits, labels, from_logits=True)

    def on_epoch_end(epoch, epochs, metrics):
        for r in recs.values():
            r.end_epoch()

    t0 = time.time()
    sei.train(x, y, mode="embeddings", head="linear", lr=0.002, epochs=epochs, seed=seed, aux_class=False,
              score="aum_prob", progress=False, on_record=on_record, on_epoch_end=on_epoch_end)
    secs = time.time() - t0
    shares = _shares(y, neighbours, k, sei.scores.SCORES["poe_knn"].knn_smoothing)
    exact = {}
    rows = []
    for name, rec in recs.items():
        for score in ("poe_knn", "mean_logp"):
            if score == "poe_knn":
                raw = feature_score(score, rec.fusion_input(score), y, neighbors=neighbours, num_classes=k)
            else:
                raw = rec.scores(score)
            flags = flag_issues(raw, compute_threshold(raw, "auto", score_name=score))
            m = detection_metrics(flags, raw, is_mis)
            row = {"set": label_set, "seed": seed, "recorder": name, "score": score, "auroc": m["auroc"],
                   "auprc": m["auprc"], "f1": m["f1"], "flagged": int(flags.sum())}
            if name == "exact":
                exact[score] = raw
                row.update(exact_share=1.0, max_gap=0.0)
            else:
                _, is_exact, _ = rec._logp_means().margin(y, shares if score == "poe_knn" else None)
                row.update(exact_share=float(is_exact.mean()), max_gap=float(np.max(exact[score] - raw)),
                           spearman=float(_spearman(raw, exact[score])),
                           auroc_gap=m["auroc"] - next(r["auroc"] for r in rows
                                                      if r["recorder"] == "exact" and r["score"] == score))
            rows.append(row)
    state = {name: int(rec._logp_total.nbytes + rec._logp_epoch.nbytes) if rec._logp_total is not None
             else int(rec._total["logp"].nbytes + rec._epoch["logp"].nbytes) for name, rec in recs.items()}
    return rows, secs, state


def _spearman(a, b):
    from scipy.stats import spearmanr

    return spearmanr(a, b).statistic


def report(rows) -> str:
    lines = ["| label set | seed | score | recorder | AUROC | gap to exact | AUPRC | F1 | flagged | exact share | "
             "largest score gap | Spearman to exact |", "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['set']} | {r['seed']} | `{r['score']}` | {r['recorder']} | {100 * r['auroc']:.2f} | "
                     f"{100 * r.get('auroc_gap', 0.0):+.3f} | {100 * r['auprc']:.2f} | {100 * r['f1']:.2f} | "
                     f"{r['flagged']:,} | {r['exact_share']:.3f} | {r['max_gap']:.3f} | "
                     f"{r.get('spearman', 1.0):.4f} |")
    return "\n".join(lines)


def summary(rows, cells) -> str:
    """Per (score, sketch size): the largest AUROC and F1 gaps to the exact score over the cells, the
    share of samples marked exact, and the recorders' per-class state."""
    exact = {(r["set"], r["seed"], r["score"]): r for r in rows if r["recorder"] == "exact"}
    groups = {}
    for r in rows:
        if r["recorder"] != "exact":
            groups.setdefault((r["score"], r["recorder"]), []).append(r)
    lines = ["| score | recorder | cells | largest AUROC gap to exact (pts) | F1 gap to exact, range (pts) | "
             "samples marked exact, range | per-class state |", "|---|---|---:|---:|---|---|---:|"]
    for (score, name), rs in groups.items():
        f1 = [100 * (r["f1"] - exact[(r["set"], r["seed"], score)]["f1"]) for r in rs]
        share = [r["exact_share"] for r in rs]
        state = cells[0]["state_bytes"][name]
        lines.append(f"| `{score}` | {name} | {len(rs)} | {max(100 * abs(r['auroc_gap']) for r in rs):.4f} | "
                     f"{min(f1):+.3f} .. {max(f1):+.3f} | {min(share):.3f} .. {max(share):.3f} | "
                     f"{state / 1e6:.1f} MB (exact: {cells[0]['state_bytes']['exact'] / 1e6:.1f} MB) |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["aggre", "random1", "worse"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--tops", nargs="+", type=int, default=[2, 3, 5])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", default=None, help="write the table (and the raw JSON beside it)")
    a = ap.parse_args(argv)
    x = load_embeddings("train", "efficientnet-lite0", 96)
    neighbours = knn_indices(x, 20)
    rows, info = [], []
    for label_set in a.sets:
        for seed in a.seeds:
            r, secs, state = cell(x, neighbours, label_set, seed, a.tops, a.epochs)
            rows += r
            info.append({"set": label_set, "seed": seed, "seconds": secs, "state_bytes": state})
            print(f"[logp_top] {label_set} seed {seed}: {secs:.0f} s", file=sys.stderr)
    table = summary(rows, info) + "\n\nEvery cell:\n\n" + report(rows)
    print(table)
    if a.out:
        Path(a.out).with_suffix(".json").write_text(json.dumps({"rows": rows, "cells": info}, indent=1))
        command = " ".join(["python", "benchmarks/logp_top.py", *(argv if argv is not None else sys.argv[1:])])
        Path(a.out).write_text(f"# Per-class log-probability sums as a top-k sketch, against the exact sums\n\n"
                               f"Measured with `{command}` ({os.cpu_count()} cores). {_PROTOCOL}\n\n{table}\n")
    return rows


#: What the results file says about the protocol (the module docstring in short).
_PROTOCOL = ("Each cell is one `sei.train` run on CIFAR-10N (regime a: the linear head on frozen EfficientNet-Lite0 "
             "96 px features, 10 epochs, lr 0.002, no auxiliary class); every epoch's logits also feed a recorder "
             "with the exact (N, K) sums and one per sketch size (`top_k=j`, K = 10). Scores are read from each "
             "with the same 20 neighbours; gaps are the sketch's minus the exact score's, in percentage points. "
             "The sketch's score is a lower bound of the exact one (`sei/_logp_top.py`); 'marked exact' is the "
             "share of samples where it is provably equal.")


if __name__ == "__main__":
    main()
