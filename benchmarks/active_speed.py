"""Speed of entropy propagation (sei.active): per-pick cost at N=50,000, a batch of 1,000
picks at N=1,000,000, graph build reported separately.

    nice -n 10 python benchmarks/active_speed.py [--n-large 1000000] [--out benchmarks/results/active_speed.md]

Features: CIFAR-10 EfficientNet-Lite0 embeddings (PCA 64) for N=50,000 when cached by
benchmarks/cifar10n.py, else a synthetic 64-d set with 8-d intrinsic structure; the 1e6 case
always uses a cheap synthetic 16-d set (8-d intrinsic), said so in the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sei.active import KNNGraph, SelectionContext, make_selector  # noqa: E402


def synthetic(n, d, intrinsic=8, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, intrinsic)).astype(np.float32)
    return (np.tanh(z @ rng.normal(size=(intrinsic, d)).astype(np.float32)) +
            0.05 * rng.normal(size=(n, d)).astype(np.float32)).astype(np.float32)


def cifar_features():
    cache = Path(__file__).resolve().parent / ".cache" / "cifar10n_train_efficientnet-lite0_96.npy"
    if not cache.exists():
        return None
    from sklearn.decomposition import PCA

    x = np.load(cache)
    return PCA(64, random_state=0).fit_transform(x).astype(np.float32)


def time_picks(g, e, nodes, **kw):
    t = time.perf_counter()
    for j in nodes:
        g.propagate_pick(e, int(j), **kw)
    return (time.perf_counter() - t) / len(nodes) * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--n-large", type=int, default=1_000_000)
    ap.add_argument("--sections", default="50k,1m", help="which cases to (re)run; others keep their rows")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "active_speed.md"))
    a = ap.parse_args(argv)
    rows = []
    rng = np.random.default_rng(0)

    sections = a.sections.split(",")
    rows_path = Path(a.out).with_suffix(".json")
    import json

    old = json.loads(rows_path.read_text()) if rows_path.exists() else []
    if "50k" not in sections:
        rows += [tuple(r) for r in old if r[0].startswith(f"N={a.n:,} ")]
        return _finish(a, rows, rows_path, large=True)
    x = cifar_features() if a.n == 50_000 else None
    src = "CIFAR-10 EfficientNet-Lite0 embeddings, PCA-64" if x is not None else "synthetic 64-d (8-d intrinsic)"
    if x is None:
        x = synthetic(a.n, 64)
    t = time.perf_counter()
    g = KNNGraph(x, k=10)
    build = time.perf_counter() - t
    rows.append((f"N={a.n:,} graph build ({g.backend}, k=10)", src, f"{build:.1f} s"))
    e = rng.random(a.n)
    nodes = rng.choice(a.n, 300, replace=False)
    ex = e.copy()
    ms = time_picks(g, ex, nodes[:5], tol=0.0)
    sup = len(g.local_response(int(nodes[0]), 1.0, tol=0.0)[0])
    rows.append((f"N={a.n:,} per pick, exact local push (tol=0)", f"support {sup:,} nodes", f"{ms:.2f} ms"))
    for tol in (1e-6, 1e-4):
        e1 = e.copy()
        ms = time_picks(g, e1, nodes, tol=tol)
        sup = len(g.local_response(int(nodes[0]), 1.0, tol=tol)[0])
        rows.append((f"N={a.n:,} per pick, pruned push (tol={tol:g})", f"support {sup:,}", f"{ms:.3f} ms"))
    for tol in (1e-6,):
        t = time.perf_counter()
        g.precompute_responses(tol=tol)
        pre = time.perf_counter() - t
        nnz = g._responses[1].size
        rows.append((f"N={a.n:,} precompute pruned M^10 columns (tol={tol:g})",
                     f"{nnz / a.n:.0f} entries/column, {nnz * 16 / 2**20:.0f} MiB", f"{pre:.1f} s"))
        e1, e2 = e.copy(), e.copy()
        ms = time_picks(g, e1, nodes, tol=tol)
        rows.append((f"N={a.n:,} per pick, precomputed columns (tol={tol:g})", "max-norm error <= 1e-5 e(x*)",
                     f"{ms:.4f} ms"))
    # error check of pruned vs exact on a few picks
    e_ex, e_pr = e.copy(), e.copy()
    g._responses = None
    for j in nodes[:3]:
        g.propagate_pick(e_ex, int(j), tol=0.0)
        g.propagate_pick(e_pr, int(j), tol=1e-6)
    rows.append((f"N={a.n:,} measured error tol=1e-6 vs exact (3 picks)", "", f"{np.abs(e_ex - e_pr).max():.1e}"))
    del g
    if "1m" not in sections:
        rows += [tuple(r) for r in old if r[0].startswith(f"N={a.n_large:,} ")]
        return _finish(a, rows, rows_path, large=False)
    return _finish(a, rows, rows_path, large=True)


def _large(a, rng):
    """The N = 1e6 case: graph build, then batches of 1,000 picks at three pruning levels."""
    rows = []
    n = a.n_large
    x = synthetic(n, 16, seed=1)
    t = time.perf_counter()
    g = KNNGraph(x, k=10)
    build = time.perf_counter() - t
    rows.append((f"N={n:,} graph build ({g.backend}, k=10, 2 threads)", "synthetic 16-d (8-d intrinsic)", f"{build:.1f} s"))
    ent = rng.random(n)
    p = np.stack([1 - ent / 2, ent / 2], 1)
    ctx = SelectionContext(np.zeros(n, np.int64), p, graph=g)
    for tol in (1e-6, 1e-5, 1e-4):
        sel = make_selector("kim", candidates="all", tol=tol)
        t = time.perf_counter()
        picks = sel.select(ctx, 1000)
        dt = time.perf_counter() - t
        rows.append((f"N={n:,} batch of 1,000 picks, on-the-fly push (tol={tol:g})",
                     f"{len(np.unique(picks))} distinct picks", f"{dt:.2f} s"))
    return rows


def _finish(a, rows, rows_path, large):
    import json

    if large:
        rows += _large(a, np.random.default_rng(0))
    rows_path.write_text(json.dumps([list(r) for r in rows], indent=1))
    lines = ["# Active label correction: propagation speed", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs (nice 10), "
             f"numpy {np.__version__}. 10 Euler steps, step 0.1, k=10.", "",
             "| case | data / detail | time |", "|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
