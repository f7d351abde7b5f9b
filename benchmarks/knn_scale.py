"""k-NN search at scale (issue 20, item 3): build + query time, peak RSS, recall@20 against exact
search and run-to-run determinism of candidate libraries on 64-d features.

Features: a Gaussian mixture with 1,000 clusters in 64-d (float32), a PCA-like spectrum (the
standard deviation of dimension j falls as j^-1/2) and within-cluster spread ``--noise`` times the
spread of the centres; 1 % of the rows are copies of other rows (exact ties). Rows are centred and
L2-normalised as :func:`sei.knn_indices` does, then every method returns 2 (k + 1) = 42 candidates
per row that :func:`sei.neighbors._stable_order` re-ranks exactly (ties by lower index) to the
k + 1 = 21 that ``knn_indices`` uses (itself included).

recall@20: over 1,000 random rows, the share of the 21 returned neighbours whose exact distance is
within the exact 21st-nearest distance (+1e-5: ties count as found), by brute force.
determinism: each (method, N) runs ``--repeats`` times in fresh processes; "rows differing" counts
rows whose final 21 neighbours differ from the first run's.

    python benchmarks/knn_scale.py --n 1e5 --methods all --repeats 2
    python benchmarks/knn_scale.py --n 1e6 --methods faiss_ivf --repeats 2
    python benchmarks/knn_scale.py --report > benchmarks/results/knn_scale.md

Each run is one subprocess (peak RSS from ``getrusage``); results accumulate in
``benchmarks/results/knn_scale.json``. Times are wall and CPU seconds (CPU: both threads together).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("KNN_SCALE_RESULTS", ROOT / "results" / "knn_scale.json"))
CACHE = Path(os.environ.get("KNN_SCALE_CACHE", "/tmp/knn_scale_cache"))
K = 20
M = 2 * (K + 1)
METHODS = ("exact_blas", "hnswlib_1t", "hnswlib_2t", "faiss_hnsw_1t", "faiss_ivf", "faiss_ivf_np32",
           "pynndescent")


def features(n, d=64, clusters=1000, noise=0.7, dup=0.01, seed=0):
    rng = np.random.default_rng(seed)
    spec = (np.arange(1, d + 1) ** -0.5).astype(np.float32)
    centres = rng.standard_normal((clusters, d), dtype=np.float32) * spec
    x = centres[rng.integers(0, clusters, n)]
    x += rng.standard_normal((n, d), dtype=np.float32) * (spec * np.float32(noise))
    nd = int(n * dup)
    x[rng.choice(n, nd, replace=False)] = x[rng.choice(n, nd, replace=False)]
    x -= x.mean(0, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(x)


def cached_features(n, noise):
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"x_{n}_{noise}.npy"
    if not path.exists():
        np.save(path, features(n, noise=noise))
    return np.load(path)


# ------------------------------------------------------------------ methods: (x, seed) -> (N, M) candidates
def exact_blas(x, seed, block=2048):
    n = x.shape[0]
    out = np.empty((n, M), np.int64)
    sq = np.einsum("nd,nd->n", x, x)
    for s in range(0, n, block):
        d2 = sq[s:s + block, None] - 2 * (x[s:s + block] @ x.T) + sq[None, :]
        out[s:s + block] = np.argpartition(d2, M - 1, axis=1)[:, :M]
    return out, {}


def hnswlib_nt(threads):
    def run(x, seed):
        import hnswlib

        n, d = x.shape
        t = time.perf_counter()
        index = hnswlib.Index(space="l2", dim=d)
        index.init_index(max_elements=n, ef_construction=100, M=16, random_seed=seed)
        index.set_num_threads(threads)
        index.add_items(x, np.arange(n))
        build = time.perf_counter() - t
        index.set_num_threads(2)
        index.set_ef(50)
        return index.knn_query(x, k=M)[0].astype(np.int64), {"build_s": build}
    return run


def faiss_hnsw_1t(x, seed):
    import faiss  # the former faiss backend: HNSW32 built on one thread, queried on two

    faiss.omp_set_num_threads(1)
    t = time.perf_counter()
    index = faiss.IndexHNSWFlat(x.shape[1], 16)
    index.add(x)
    build = time.perf_counter() - t
    faiss.omp_set_num_threads(2)
    return index.search(x, M)[1], {"build_s": build}


def faiss_ivf(nprobe):
    def run(x, seed):
        from sei.neighbors import _knn_faiss
        timings = {}
        return _knn_faiss(x, M, seed, 2, nprobe=nprobe, timings=timings), timings
    return run


def pynndescent(x, seed):
    from pynndescent import NNDescent

    nnd = NNDescent(x, n_neighbors=M, random_state=seed, n_jobs=2, low_memory=True)
    return nnd.neighbor_graph[0].astype(np.int64), {}


RUNNERS = {"exact_blas": exact_blas, "hnswlib_1t": hnswlib_nt(1), "hnswlib_2t": hnswlib_nt(2),
           "faiss_hnsw_1t": faiss_hnsw_1t, "faiss_ivf": faiss_ivf(None), "faiss_ivf_np32": faiss_ivf(32),
           "pynndescent": pynndescent}


def recall_at_k(x, idx, queries=1000, seed=5):
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(x.shape[0], min(queries, x.shape[0]), replace=False))
    xq = x[q].astype(np.float64)
    d2 = np.einsum("nd,nd->n", xq, xq)[:, None] - 2 * xq @ x.T.astype(np.float64) \
        + np.einsum("nd,nd->n", x, x)[None, :]
    kth = np.partition(d2, K, axis=1)[:, K]
    got = ((xq[:, None, :] - x[idx[q]].astype(np.float64)) ** 2).sum(-1)
    return float((got <= kth[:, None] + 1e-5).mean())


def one(method, n, noise, rep, seed):
    from threadpoolctl import threadpool_limits

    from sei.neighbors import _stable_order

    x = cached_features(n, noise)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with threadpool_limits(2):
        t0, c0 = time.perf_counter(), time.process_time()
        cand, extra = RUNNERS[method](x, seed)
        t1, c1 = time.perf_counter(), time.process_time()
        _, idx = _stable_order(x, cand, K + 1)
        t2, c2 = time.perf_counter(), time.process_time()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = CACHE / f"idx_{method}_{n}_{noise}_{rep}.npy"
    np.save(out, idx)
    rec = recall_at_k(x, idx)
    return {"method": method, "n": n, "noise": noise, "rep": rep, "search_s": t1 - t0, "search_cpu_s": c1 - c0,
            "rerank_s": t2 - t1, "rerank_cpu_s": c2 - c1, "total_s": t2 - t0, "total_cpu_s": c2 - c0,
            "peak_rss_gb": rss / 2 ** 20, "rss_before_gb": rss0 / 2 ** 20, "recall20": rec, "idx": str(out),
            "load1": os.getloadavg()[0], **extra}


def run_all(ns, methods, repeats, noise, seed):
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    for n in ns:
        cached_features(n, noise)
        for method in methods:
            runs = []
            for rep in range(repeats):
                proc = subprocess.run([sys.executable, __file__, "--one", method, str(n), str(noise), str(rep),
                                       str(seed)], capture_output=True, text=True)
                if proc.returncode:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    break
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                if runs:
                    a, b = np.load(runs[0]["idx"]), np.load(r["idx"])
                    r["rows_differing_from_run0"] = int((a != b).any(1).sum())
                runs.append(r)
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}),
                      flush=True)
            results = [q for q in results if not (q["method"] == method and q["n"] == n and q["noise"] == noise)]
            results += runs
            RESULTS.write_text(json.dumps(results, indent=1))


def report():
    results = json.loads(RESULTS.read_text())
    groups = {}
    for r in results:
        groups.setdefault((r["noise"], r["n"], r["method"]), []).append(r)
    print("| N | method | runs | build s (wall) | search s (wall) | re-rank s (wall) | total s (wall) | "
          "search CPU s | re-rank CPU s | quiet 2-core estimate s | peak RSS GB | recall@20 | "
          "rows differing, run 2 vs 1 | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (noise, n, method), rs in sorted(groups.items()):
        def med(key):
            vals = [r[key] for r in rs if key in r]
            return float(np.median(vals)) if vals else None
        diff = [r["rows_differing_from_run0"] for r in rs if "rows_differing_from_run0" in r]
        build = med("build_s")
        # parallel search on 2 threads + single-threaded re-rank; a one-thread build makes it a lower bound
        est = med("search_cpu_s") / 2 + med("rerank_cpu_s")
        bound = ">= " if method.endswith("_1t") else ""
        print(f"| {n:.0e} | {method} | {len(rs)} | {'-' if build is None else f'{build:.1f}'} | "
              f"{med('search_s'):.1f} | {med('rerank_s'):.1f} | {med('total_s'):.1f} | {med('search_cpu_s'):.1f} | "
              f"{med('rerank_cpu_s'):.1f} | {bound}{est:.0f} | {med('peak_rss_gb'):.2f} | {med('recall20'):.4f} | "
              f"{', '.join(map(str, diff)) or '-'} | {med('load1'):.1f} |")
    print(f"\nMedians over the runs (noise {sorted({g[0] for g in groups})}); wall times under the load shown.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="1e5", help="comma-separated sizes")
    ap.add_argument("--methods", default="all")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--noise", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--one", nargs=5, metavar=("METHOD", "N", "NOISE", "REP", "SEED"))
    a = ap.parse_args()
    if a.one:
        method, n, noise, rep, seed = a.one
        print(json.dumps(one(method, int(n), float(noise), int(rep), int(seed))))
    elif a.report:
        report()
    else:
        methods = METHODS if a.methods == "all" else tuple(a.methods.split(","))
        run_all([int(float(v)) for v in a.n.split(",")], methods, a.repeats, a.noise, a.seed)


if __name__ == "__main__":
    main()
