"""Peak memory (RSS) of an SEIRecorder against the bytes of its own arrays.

    nice python benchmarks/recorder_memory.py                       # N = 1e6, K = 100 (a few GB)
    nice python benchmarks/recorder_memory.py --n 100000 --k 100    # quick
    nice python benchmarks/recorder_memory.py --src /path/to/other/checkout   # compare a version
    nice python benchmarks/recorder_memory.py --extra-scores poe_knn    # with the (N, K) log-prob sums

Each measurement runs in a fresh interpreter. The peak resident set (VmHWM) is reset
before each phase (``/proc/self/clear_refs``), so every row is that phase's own peak;
"baseline" is the interpreter with numpy and sei imported. The batch of probabilities fed
to ``update`` is one (batch, K) float32 array reused for every batch, so the input does
not count. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_CHILD = r"""
import json, os, sys, time
import numpy as np

def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)

def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False

import sei
from sei import SEIRecorder

n, k, batch, epochs = (int(a) for a in sys.argv[1:5])
extra = [s for s in sys.argv[5].split(",") if s] if len(sys.argv) > 5 else []
kw = {"extra_scores": extra} if extra else {}
baseline = _status("VmRSS")
rows = []

def phase(name, fn):
    resettable = _reset_peak()
    t0 = time.perf_counter()
    out = fn()
    rows.append({"phase": name, "peak": _status("VmHWM"), "rss_after": _status("VmRSS"),
                 "seconds": time.perf_counter() - t0, "reset": resettable})
    return out

rng = np.random.default_rng(0)
probs = rng.dirichlet(np.ones(k), size=batch).astype(np.float32)
labels = rng.integers(0, k, n)
rec = phase("construct", lambda: SEIRecorder(n, k, max_epochs=epochs, **kw))

def arrays_bytes(r):
    seen, total = set(), 0
    def add(a):
        nonlocal total
        if isinstance(a, np.ndarray):
            base = a if a.base is None else a.base
            if id(base) not in seen:
                seen.add(id(base)); total += base.nbytes
    for v in vars(r).values():
        if isinstance(v, dict):
            for x in v.values(): add(x)
        elif isinstance(v, list):
            for x in v: add(x)
        else:
            add(v)
    return total

def one_epoch():
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        rec.update(np.arange(start, stop), probs[: stop - start], labels[start:stop])

for e in range(epochs):
    phase(f"update, epoch {e + 1}", one_epoch)
    phase(f"end_epoch {e + 1}", rec.end_epoch)
for name in ("sei", "aum_prob", "se_mid", "mistakenness") + (("mean_logp",) if extra else ()):
    phase(f"scores('{name}')", lambda: rec.scores(name))
if "poe_knn" in extra:
    phase("fusion_input('poe_knn')", lambda: rec.fusion_input("poe_knn"))
phase("predicted_labels", rec.predicted_labels)
print(json.dumps({"n": n, "k": k, "batch": batch, "epochs": epochs, "baseline": baseline,
                  "array_bytes": arrays_bytes(rec), "rows": rows, "numpy": np.__version__,
                  "sei_file": sei.__file__}))
"""


def measure(n, k, batch, epochs, src=None, extra=""):
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.path.abspath(src) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(k), str(batch), str(epochs), extra],
                         check=True, capture_output=True, text=True, env=env, cwd=src or None)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(res, title):
    gb = 1e9
    arr = res["array_bytes"]
    lines = [f"### {title}", "",
             f"N = {res['n']:,}, K = {res['k']}, batch = {res['batch']}, epochs = {res['epochs']}"
             f"{'; extra_scores = ' + res['extra'] if res.get('extra') else ''}; "
             f"recorder arrays {arr / gb:.2f} GB; baseline RSS (python + numpy + sei) {res['baseline'] / gb:.2f} GB",
             "", "| phase | peak RSS (GB) | peak / arrays | peak above baseline / arrays | seconds |",
             "|---|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['phase']} | {r['peak'] / gb:.2f} | {r['peak'] / arr:.2f}x | "
                     f"{(r['peak'] - res['baseline']) / arr:.2f}x | {r['seconds']:.1f} |")
    worst = max(r["peak"] for r in res["rows"])
    lines += ["", f"Overall peak: {worst / gb:.2f} GB = {worst / arr:.2f}x the recorder's arrays "
                  f"({(worst - res['baseline']) / arr:.2f}x above the baseline)."]
    if not all(r["reset"] for r in res["rows"]):
        lines.append("(peak could not be reset between phases: each row is the peak so far)")
    return "\n".join(lines), worst / arr


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--src", action="append", default=[],
                    help="checkout(s) to measure instead of the installed sei (repeatable; label=path allowed)")
    ap.add_argument("--json", help="also write the raw measurements here")
    ap.add_argument("--extra-scores", default="", help="comma-separated SEIRecorder(extra_scores=...), e.g. poe_knn")
    args = ap.parse_args(argv)
    sources = args.src or [""]
    results = {}
    for spec in sources:
        label, _, path = spec.rpartition("=") if "=" in spec else (spec or "this checkout", "", spec)
        res = measure(args.n, args.k, args.batch, args.epochs, path or None, args.extra_scores)
        res["extra"] = args.extra_scores
        text, ratio = table(res, label)
        print(text, "\n", flush=True)
        results[label] = res
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
