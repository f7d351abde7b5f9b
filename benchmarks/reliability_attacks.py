"""Attacks on the FiftyOne write paths, counted: two writers at once and random kills.

    python benchmarks/reliability_attacks.py concurrent --trials 10
    python benchmarks/reliability_attacks.py kills --trials 50

``concurrent``: two ``compute_sei`` processes started together on one dataset, with two
keys and with one key; a trial passes when every run's fields are declared, every value is
readable, each saved view exists once and loads, and no journal is left.

``kills``: a process runs one write path (``compute_sei`` over a previous run, a comparison
with confident learning over a previous one, the review desk's cutoff, deleting a run,
renaming a run) and is killed with SIGKILL at a random moment of its write: uniform between
the moment it takes the dataset's write lease for the write and the end of the path, as
measured on an unkilled run. The next writer's repair runs; a
trial passes when the dataset loads, every saved view loads once, and the path's state is
exactly the old one or the new one (the new one computed beforehand by the same write,
unkilled, on a clone).

Runs against a private mongod (``sei_fiftyone.db.temporary_mongod``). Writes
``benchmarks/results/reliability.md`` (one section per mode, replaced on each run).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "reliability.md"
CLASSES = ("red", "green", "blue")
N = 300


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                FIFTYONE_DO_NOT_TRACK="true")


def make_dataset(name, seed=0):
    """N samples with an 8-d embedding, noisy ``ground_truth`` and ``clean`` labels."""
    import fiftyone as fo

    rng = np.random.default_rng(seed)
    true = np.arange(N) % 3
    given = np.where(rng.random(N) < 0.15, (true + rng.integers(1, 3, N)) % 3, true)
    emb = np.concatenate([np.eye(3)[true] * 3, np.zeros((N, 5))], 1) + rng.normal(0, 0.7, (N, 8))
    ds = fo.Dataset(name)
    ds.persistent = True
    ds.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.jpg", ground_truth=fo.Classification(label=CLASSES[g]),
                              clean=fo.Classification(label=CLASSES[t]), embedding=e.tolist())
                    for i, (g, t, e) in enumerate(zip(given, true, emb))])
    return ds


def consistent(ds):
    """Problems of a dataset after the attack (an empty list when it is sound)."""
    import fiftyone as fo
    import fiftyone.core.odm as foodm
    import sei_fiftyone as sfo

    problems = []
    try:
        ds = fo.load_dataset(ds.name)
        ds.reload()
        names = ds.list_saved_views()
        if len(names) != len(set(names)):
            problems.append(f"saved view named twice: {names}")
        for name in names:
            ds.load_saved_view(name).count()
        schema = ds.get_field_schema()
        raw = foodm.get_db_conn()[ds._sample_collection_name]
        for key in ds.list_brain_runs(type=sfo.SEI):
            for field in sfo.field_names(key):
                if field not in schema and raw.count_documents({field: {"$exists": True}}):
                    problems.append(f"values of undeclared field {field}")
            if not ds.has_saved_view(sfo.saved_view_name(key)):
                problems.append(f"run {key} without its saved view")
        left = [n for n in foodm.get_db_conn().list_collection_names() if n.startswith("tmp.sei_")]
        if left:
            problems.append(f"journals left: {left}")
    except Exception as e:  # a dataset that does not load is the failure counted
        problems.append(f"{type(e).__name__}: {e}")
    return problems


# ------------------------------------------------------------------------------------ concurrent
_WRITER = textwrap.dedent("""
    import sys
    import fiftyone as fo
    import sei_fiftyone as sfo
    name, key, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sfo.compute_sei(fo.load_dataset(name), "ground_truth", brain_key=key, embeddings_field="embedding",
                    epochs=epochs, progress=False)
""")


KEY_SETS = {"two": ("a", "b"), "one": ("sei", "sei")}


def concurrent(trials, which=("two", "one")):
    rows = []
    for keys in (KEY_SETS[w] for w in which):
        ok = 0
        failures = []
        for t in range(trials):
            ds = make_dataset(f"conc-{keys[0]}-{t}", seed=t)
            procs = [subprocess.Popen([sys.executable, "-c", _WRITER, ds.name, k, str(3 + i)], env=_env(),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                     for i, k in enumerate(keys)]
            outs = [p.communicate(timeout=600)[0] for p in procs]
            problems = [f"exit {p.returncode}: {o[-300:]}" for p, o in zip(procs, outs) if p.returncode]
            problems += consistent(ds)
            ds.reload()
            if sorted(ds.list_brain_runs()) != sorted(set(keys)):
                problems.append(f"runs {ds.list_brain_runs()}")
            for k in set(keys):
                if len(ds.exists(k)) != len(ds):
                    problems.append(f"run {k}: {len(ds.exists(k))} of {len(ds)} samples scored")
            ok += not problems
            failures += problems
            ds.delete()
        rows.append((" and ".join(f"'{k}'" for k in keys), trials, ok, "; ".join(failures[:3])))
        print(rows[-1], flush=True)
    lines = ["| keys | trials | nothing lost | failures |", "| --- | ---: | ---: | --- |"]
    lines += [f"| {k} | {n} | {ok} | {f or '-'} |" for k, n, ok, f in rows]
    _write_section("concurrent-" + "-".join(which), "Two `compute_sei` processes started together on one "
                   f"dataset ({N} samples, 8-d embeddings; epochs 3 and 4)", lines)


# ----------------------------------------------------------------------------------------- kills
_KILLED = textwrap.dedent("""
    import os, sys, time
    import fiftyone as fo
    import sei_fiftyone as sfo
    import sei_fiftyone.lease as lease
    from sei_fiftyone import review

    name, path, flag = sys.argv[1:4]
    ds = fo.load_dataset(name)
    orig = lease.Lease.acquire
    taken = [0, 0.0]

    def acquire(self, *a, **k):  # the n-th time this process takes the lease, written to `flag`
        out = orig(self, *a, **k)
        taken[0] += 1
        taken[1] = time.time()
        with open(flag + ".tmp", "w") as f:
            f.write(str(taken[0]))
        os.replace(flag + ".tmp", flag)
        return out
    lease.Lease.acquire = acquire
    PATHS[path](ds)
    print("acquires", taken[0], "duration", time.time() - taken[1], flush=True)
""")

_PATHS = textwrap.dedent("""
    def run(ds):
        sfo.compute_sei(ds, "ground_truth", embeddings_field="embedding", epochs=6, progress=False)

    def compare(ds):
        sfo.compare_with_confident_learning(ds, "sei", folds=4)

    def cutoff(ds):
        review.set_cutoff(ds, "sei", -0.05)

    def delete(ds):
        ds.delete_brain_run("sei")

    def rename(ds):
        ds.rename_brain_run("sei", "moved")

    PATHS = dict(run=run, compare=compare, cutoff=cutoff, delete=delete, rename=rename)
""")


def _prepare(name, seed):
    import sei_fiftyone as sfo

    ds = make_dataset(name, seed)
    sfo.compute_sei(ds, "ground_truth", embeddings_field="embedding", epochs=3, progress=False)
    sfo.compare_with_confident_learning(ds, "sei", folds=3)
    return ds


def state(ds):
    """What the write paths change, as plain values."""
    import fiftyone as fo

    ds = fo.load_dataset(ds.name)
    ds.reload()
    schema = ds.get_field_schema()
    out = {"runs": sorted(ds.list_brain_runs()), "custom": sorted(ds.list_runs()),
           "views": sorted(ds.list_saved_views()), "fields": sorted(f for f in schema if f.startswith(("sei", "moved")))}
    for f in out["fields"]:
        out[f] = ds.values(f + ".label" if f.endswith("_suggestion") else f)
    for key in out["runs"]:
        info = ds.get_brain_info(key)
        res = ds.load_brain_results(key, cache=False)
        out[f"run:{key}"] = (info.config.epochs, res.threshold, res.num_flagged)
    for key in out["custom"]:
        out[f"custom:{key}"] = (ds.get_run_info(key).config.folds, ds.get_run_info(key).config.brain_key)
    position = {_id: i for i, _id in enumerate(ds.values("id"))}  # ids differ between copies
    for v in out["views"]:
        out[f"view:{v}"] = [position[_id] for _id in ds.load_saved_view(v).values("id")]
    return out


def _run_path(ds, path, flag, delay=None, acquires=None):
    """Run a write path in a process; unkilled (``delay`` None): its number of lease acquisitions
    and the seconds from the last one to the end. Else kill it ``delay`` seconds after its
    ``acquires``-th acquisition (the write's own)."""
    cmd = [sys.executable, "-c", _PATHS + _KILLED, ds.name, path, str(flag)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if delay is None:
        out = proc.communicate(timeout=600)[0]
        if proc.returncode:
            raise RuntimeError(out[-2000:])
        tail = out.rsplit("acquires", 1)[1].split()
        return int(tail[0]), float(tail[2])
    deadline = time.time() + 300
    while not (Path(flag).exists() and Path(flag).read_text() == str(acquires)):
        if proc.poll() is not None or time.time() > deadline:
            return "finished before the write"
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return "killed"


def kills(trials, seed=0):
    import sei_fiftyone as sfo

    rng = random.Random(seed)
    paths = ["run", "compare", "cutoff", "delete", "rename"]
    tmp = Path(tempfile.mkdtemp(prefix="sei-kills-"))
    # the new state of each path, and its duration, from one unkilled write on a fresh copy
    reference, durations, acquires = {}, {}, {}
    for path in paths:
        ds = _prepare(f"ref-{path}", 0)
        old = state(ds)
        acquires[path], durations[path] = _run_path(ds, path, tmp / f"ref-{path}")
        reference[path] = (old, state(ds))
        ds.delete()
    counts = {p: [0, 0, 0, 0] for p in paths}  # trials, old, new, broken
    failures = []
    for t in range(trials):
        path = paths[t % len(paths)]
        ds = _prepare(f"kill-{t}", 0)
        old, new = reference[path]
        flag = tmp / f"flag-{t}"
        delay = rng.uniform(0, durations[path])
        _run_path(ds, path, flag, delay, acquires[path])
        repaired = sfo.recover_interrupted_writes(ds, wait=120)
        problems = consistent(ds)
        now = state(ds) if not problems else None
        c = counts[path]
        c[0] += 1
        if now == old:
            c[1] += 1
        elif now == new:
            c[2] += 1
        else:
            c[3] += 1
            diff = [k for k in set(old) | set(new) | set(now or {}) if (now or {}).get(k) not in (old.get(k), new.get(k))]
            failures.append(f"{path} at {delay:.2f}s (repaired {repaired}): {problems or diff[:4]}")
        print(path, f"{delay:.2f}", "old" if now == old else "new" if now == new else f"BROKEN {failures[-1]}",
              flush=True)
        ds.delete()
    lines = ["| write path | write under the lease, unkilled (s) | kills | old state | new state | neither |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {p} | {durations[p]:.2f} | {c[0]} | {c[1]} | {c[2]} | {c[3]} |" for p, c in counts.items()]
    tot = np.sum(list(counts.values()), axis=0)
    lines.append(f"| **all** | | {tot[0]} | {tot[1]} | {tot[2]} | {tot[3]} |")
    if failures:
        lines += ["", "Failures:", ""] + [f"- {f}" for f in failures]
    _write_section("kills", f"SIGKILL at a uniform random moment of each write path's write (under the lease) "
                   f"({N} samples; seed {seed}); then the next writer's repair", lines)


def _write_section(mode, title, lines):
    import platform

    text = RESULTS.read_text() if RESULTS.exists() else (
        "# Reliability attacks\n\nProduced by `benchmarks/reliability_attacks.py` (real MongoDB 6.0.5 on "
        "127.0.0.1, real processes).\n")
    start, end = f"<!-- {mode} -->", f"<!-- /{mode} -->"
    section = "\n".join([start, f"## {mode}: {title}", "",
                         f"{time.strftime('%Y-%m-%d')}, {platform.machine()} {os.cpu_count()} cores.", "",
                         *lines, end])
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["concurrent", "kills"])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keys", choices=["two", "one", "both"], default="both",
                    help="concurrent: two runs with two keys, with one key, or both")
    args = ap.parse_args(argv)
    from sei_fiftyone.db import temporary_mongod

    with temporary_mongod() as uri:
        os.environ["FIFTYONE_DATABASE_URI"] = uri
        os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
        os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
        os.environ["FIFTYONE_SHOW_PROGRESS_BARS"] = "false"
        if args.mode == "concurrent":
            concurrent(args.trials, ("two", "one") if args.keys == "both" else (args.keys,))
        else:
            kills(args.trials, args.seed)


if __name__ == "__main__":
    main()
