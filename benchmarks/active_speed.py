"""Speed of entropy propagation (sei.active): the default path of ``select_for_relabeling``
(1,000 picks of 50,000, bounded hop push with the bound chosen from the graph) against exact
propagation, plus the earlier per-pick rows (N=50,000 pruned/precomputed, N=1e6 batches).

    nice -n 10 python benchmarks/active_speed.py [--sections default,50k,1m] [--out ...md]

Default-path data: CIFAR-10 train images (EfficientNet-Lite0 96 px embeddings, PCA-64, the
CIFAR-10N "worse" labels) when ``benchmarks/cifar10n.py`` has cached the embeddings, and
random Gaussian 32-d and 64-d features (random labels) in any case. The history is 8 epochs
of ``sei.active.train_linear`` recorded by an ``SEIRecorder``. "Exact" picks run the same
selector with the change diffused exactly (10 sparse mat-vecs over the whole graph per pick).
Sections not named in ``--sections`` keep their rows from the JSON beside the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sei.active import KNNGraph, SelectionContext, make_selector  # noqa: E402

PICKS = 1000


def synthetic(n, d, intrinsic=8, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, intrinsic)).astype(np.float32)
    return (np.tanh(z @ rng.normal(size=(intrinsic, d)).astype(np.float32)) +
            0.05 * rng.normal(size=(n, d)).astype(np.float32)).astype(np.float32)


def cifar_features():
    """(PCA-64 features, CIFAR-10N "worse" labels), or None when the embeddings are not cached."""
    cache = Path(__file__).resolve().parent / ".cache" / "cifar10n_train_efficientnet-lite0_96.npy"
    if not cache.exists():
        return None
    from sklearn.decomposition import PCA

    from benchmarks.cifar10n import load_labels

    x = np.load(cache)
    return PCA(64, random_state=0).fit_transform(x).astype(np.float32), load_labels()["worse"]


def recorded_history(x, labels, epochs=8):
    from sei import SEIRecorder
    from sei.active import train_linear

    rec = SEIRecorder(len(x), int(labels.max()) + 1)
    train_linear(x, labels, int(labels.max()) + 1, epochs=epochs, recorder=rec, seed=0)
    return rec


class ExactChange:
    """Graph stand-in whose ``propagate_pick`` adds ``M^steps c`` computed over the whole graph."""

    def __init__(self, graph):
        self.graph, self.num_samples = graph, graph.num_samples
        self.p = graph.transition_matrix()

    def propagate_pick(self, values, node, *, steps=10, step_size=0.1, **_):
        v = np.zeros(self.num_samples)
        v[node] = -values[node]
        for _ in range(steps):
            v = (1 - step_size) * v + step_size * (self.p @ v)
        values += v
        return np.flatnonzero(v)


def _timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def default_path(name, x, labels, old_tol=True, sweep=((1e-3, None), (1e-4, 0), (1e-4, None), (1e-5, None))):
    """One row of the default-path table: timings and agreement with exact picks."""
    import sei.active.graph as graph_module
    from sei.neighbors import search
    from sei_cleanlab.active import select_for_relabeling

    rec = recorded_history(x, labels)
    found, t_search = _timed(search, x, 10)
    real = graph_module._knn_search
    graph_module._knn_search = lambda *a, **k: found  # time the set-up beyond the search
    try:
        g, t_setup = _timed(KNNGraph, x, k=10)
    finally:
        graph_module._knn_search = real
    bound, t_probe = _timed(g.auto_bound)
    picks, t_sel = _timed(select_for_relabeling, labels, rec, graph=g, budget=PICKS)
    exact, t_exact = _timed(select_for_relabeling, labels, rec, graph=ExactChange(g), budget=PICKS, bound=0.0)
    same = int(np.sum(picks == exact))
    first = int(np.argmin(picks == exact)) if same < PICKS else PICKS
    row = {"data": name, "n": len(x), "backend": found[2], "search_s": t_search, "setup_s": t_setup,
           "bound": bound, "probe_s": t_probe, "select_s": t_sel, "per_pick_ms": t_sel / PICKS * 1e3,
           "total_s": t_setup + t_probe + t_sel, "exact_per_pick_ms": t_exact / PICKS * 1e3,
           "same_position": same, "same_set": len(np.intersect1d(picks, exact)), "first_diff": first,
           "max_degree": int(np.diff(g.adjacency.indptr).max()), "date": datetime.date.today().isoformat(),
           "flush_every": max(10, -(-g.adjacency.nnz // 15_000))}
    row["sweep"] = []
    for b, every in sweep:  # fixed bounds, with and without flushes: speed against agreement
        fixed, t_b = _timed(select_for_relabeling, labels, rec, graph=g, budget=PICKS, bound=b, flush_every=every)
        row["sweep"].append([b, "never" if every == 0 else "default", t_b / PICKS * 1e3,
                             int(np.sum(fixed == exact)), len(np.intersect1d(fixed, exact))])
    if old_tol:  # the previous default: pruned Euler push, tol=1e-6
        _, t_old = _timed(select_for_relabeling, labels, rec, graph=g, budget=PICKS, tol=1e-6)
        row["old_per_pick_ms"] = t_old / PICKS * 1e3
    print(row, flush=True)
    return row


DATA = {"cifar": "CIFAR-10N train, EfficientNet-Lite0 PCA-64, 'worse' labels",
        "rand32": "random Gaussian 32-d, random labels", "rand64": "random Gaussian 64-d, random labels"}


def default_rows(n, which):
    rows = []
    for key in which:
        if key == "cifar":
            cifar = cifar_features() if n == 50_000 else None
            if cifar is None:
                print("[active_speed] CIFAR-10 embeddings not cached: skipped", flush=True)
                continue
            rows.append(default_path(DATA[key], *cifar))
        else:
            d = int(key[4:])
            rng = np.random.default_rng(d)
            x = rng.normal(size=(n, d)).astype(np.float32)
            rows.append(default_path(DATA[key], x, rng.integers(0, 10, n)))
    return rows


def time_picks(g, e, nodes, **kw):
    t = time.perf_counter()
    for j in nodes:
        g.propagate_pick(e, int(j), **kw)
    return (time.perf_counter() - t) / len(nodes) * 1e3


def per_pick_rows(n):
    """Earlier N=50,000 rows: exact, pruned and precomputed pushes on a synthetic set."""
    rng = np.random.default_rng(0)
    x = synthetic(n, 64)
    src = "synthetic 64-d (8-d intrinsic)"
    g, build = _timed(KNNGraph, x, k=10)
    rows = [(f"N={n:,} graph build ({g.backend}, k=10)", src, f"{build:.1f} s")]
    e = rng.random(n)
    nodes = rng.choice(n, 300, replace=False)
    ms = time_picks(g, e.copy(), nodes[:5], tol=0.0)
    sup = len(g.local_response(int(nodes[0]), 1.0, tol=0.0)[0])
    rows.append((f"N={n:,} per pick, exact local push (tol=0)", f"support {sup:,} nodes", f"{ms:.2f} ms"))
    for tol in (1e-6, 1e-4):
        ms = time_picks(g, e.copy(), nodes, tol=tol)
        sup = len(g.local_response(int(nodes[0]), 1.0, tol=tol)[0])
        rows.append((f"N={n:,} per pick, pruned push (tol={tol:g})", f"support {sup:,}", f"{ms:.3f} ms"))
    for bound in (1e-5, 1e-4):
        ms = time_picks(g, e.copy(), nodes, bound=bound)
        sup = len(g.bounded_response(int(nodes[0]), 1.0, bound=bound)[0])
        rows.append((f"N={n:,} per pick, bounded hop push (bound={bound:g})", f"support {sup:,}", f"{ms:.3f} ms"))
    _, pre = _timed(g.precompute_responses, tol=1e-6)
    nnz = g._responses[1].size
    rows.append((f"N={n:,} precompute pruned M^10 columns (tol=1e-06)",
                 f"{nnz / n:.0f} entries/column, {nnz * 16 / 2**20:.0f} MiB", f"{pre:.1f} s"))
    ms = time_picks(g, e.copy(), nodes, tol=1e-6)
    rows.append((f"N={n:,} per pick, precomputed columns (tol=1e-06)", "max-norm error <= 1e-5 e(x*)", f"{ms:.4f} ms"))
    return rows


def large_rows(n):
    """The N = 1e6 case: graph build, then batches of 1,000 picks at three pruning levels."""
    rows = []
    x = synthetic(n, 16, seed=1)
    g, build = _timed(KNNGraph, x, k=10)
    rows.append((f"N={n:,} graph build ({g.backend}, k=10, 2 threads)", "synthetic 16-d (8-d intrinsic)", f"{build:.1f} s"))
    ent = np.random.default_rng(0).random(n)
    ctx = SelectionContext(np.zeros(n, np.int64), np.stack([1 - ent / 2, ent / 2], 1), graph=g)
    for tol in (1e-6, 1e-5, 1e-4):
        picks, dt = _timed(make_selector("kim", candidates="all", tol=tol).select, ctx, PICKS)
        rows.append((f"N={n:,} batch of 1,000 picks, on-the-fly push (tol={tol:g})",
                     f"{len(np.unique(picks))} distinct picks", f"{dt:.2f} s"))
    sel = make_selector("kim", candidates="all")
    picks, dt = _timed(sel.select, ctx, PICKS)
    rows.append((f"N={n:,} batch of 1,000 picks, default bounded push (bound={sel.last_bound:g}, auto)",
                 f"{len(np.unique(picks))} distinct picks", f"{dt:.2f} s"))
    return rows


def render(data):
    lines = ["# Active label correction: propagation speed", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs (nice 10), "
             f"numpy {np.__version__}. 10 Euler steps, step 0.1, k=10.", "",
             "## Default path: `select_for_relabeling(labels, recorder, graph=KNNGraph(x, k=10), budget=1000)`", "",
             "Method `sei_propagation`, all samples candidates, bounded hop push with the bound from "
             "`KNNGraph.auto_bound()` (max-norm error of each pick's propagation <= bound * e(x*)); "
             "what the pushes leave out is diffused exactly every `flush_every` picks (column bound: flushes every). "
             "Set-up = `KNNGraph` minus its kNN search; total = set-up + bound probe + 1,000 picks "
             "(SEI scores and validation included). Exact = the same picks with exact propagation.", "",
             "| data | date | kNN search | set-up | bound (probe) | 1,000 picks | per pick | "
             "total | exact per pick | old default tol=1e-6 per pick | same position / same set "
             "(first difference) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data.get("default", []):
        old = f"{r['old_per_pick_ms']:.1f} ms" if "old_per_pick_ms" in r else ""
        lines.append(f"| {r['data']}, N={r['n']:,} (max degree {r['max_degree']}) | {r['date']} | {r['search_s']:.1f} s "
                     f"({r['backend']}) | {r['setup_s']:.2f} s | {r['bound']:g} ({r['probe_s'] * 1e3:.0f} ms), flushes every {r.get('flush_every', '-')} | "
                     f"{r['select_s']:.2f} s | {r['per_pick_ms']:.2f} ms | {r['total_s']:.2f} s | "
                     f"{r['exact_per_pick_ms']:.1f} ms | {old} | {r['same_position']} / {r['same_set']} "
                     f"of {PICKS} ({'none' if r['first_diff'] >= PICKS else 'pick ' + str(r['first_diff'] + 1)}) |")
    sweeps = [r for r in data.get("default", []) if r.get("sweep")]
    if sweeps:
        lines += ["", "Fixed bounds instead of auto (same data, same 1,000 picks; agreement with exact picks):", "",
                  "| data | bound | flushes | per pick | same position | same set |", "|---|---|---|---|---|---|"]
        for r in sweeps:
            lines += [f"| {r['data']} | {b:g} | {ev} | {ms:.2f} ms | {same} | {inter} |"
                      for b, ev, ms, same, inter in r["sweep"]]
    lines += ["", "## Per-pick and large-N rows", "", "| case | data / detail | time |", "|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} |" for r in data.get("rows", [])]
    notes = data.get("notes", "")
    return "\n".join(lines) + "\n" + (f"\n{notes}\n" if notes else "")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--n-large", type=int, default=1_000_000)
    ap.add_argument("--sections", default="default", help="default,50k,1m: which to (re)run; others keep their rows")
    ap.add_argument("--data", default="cifar,rand32,rand64", help="default-path data sets to (re)run")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "active_speed.md"))
    a = ap.parse_args(argv)
    sections = a.sections.split(",")
    json_path = Path(a.out).with_suffix(".json")
    data = json.loads(json_path.read_text()) if json_path.exists() else {}
    if isinstance(data, list):  # the earlier format: rows only
        data = {"rows": data}
    rows = data.get("rows", [])
    if "default" in sections:
        new = default_rows(a.n, a.data.split(","))
        done = {(r["data"], r["n"]) for r in new}
        data["default"] = [r for r in data.get("default", []) if (r["data"], r["n"]) not in done] + new
    if "50k" in sections:
        rows = [r for r in rows if not r[0].startswith(f"N={a.n:,} ")] + [list(r) for r in per_pick_rows(a.n)]
    if "1m" in sections:
        rows = [r for r in rows if not r[0].startswith(f"N={a.n_large:,} ")] + [list(r) for r in large_rows(a.n_large)]
    data["rows"] = rows
    json_path.write_text(json.dumps(data, indent=1))
    text = render(data)
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
