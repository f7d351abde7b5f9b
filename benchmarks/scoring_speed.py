"""Scoring speed of the core and the cleanlab adapter; prints a markdown table.

    python benchmarks/scoring_speed.py [--n-score 1000000] [--t 150 --n 100000 --k 10]

(a) scoring N samples from a filled recorder (scores + threshold + flags);
(b) find_label_issues on a (T, N, K) float32 history memmapped from disk, against a plain
    numpy streaming pass that computes signed entropy over the same file, with peak RSS;
(c) recorder overhead per training step of a small torch CNN (batch 128, 32x32 images): the
    mean cost of ``update`` right after a step (caches cold, as in a training loop), over
    enough steps to include the buffer's flushes (one per ~25 updates at K = 10);
(c') the same update cost without the CNN: after a 32 MB pass that evicts the caches, each
    update an epoch's next batch (seconds, not minutes: usable on a busy machine);
(d) cleanlab's own find_label_issues at N = 1e5 and the scoring N, for reference.
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_recorder_scoring(n):
    import sei

    rng = np.random.default_rng(0)
    k = 10
    labels = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), size=n).astype(np.float32)
    rec = sei.SEIRecorder(n, k)
    rec.update(np.arange(n), probs, labels)
    rec.end_epoch()

    def score():
        s = rec.scores("sei")
        sei.flag_issues(s, sei.compute_threshold(s, "auto", score_name="sei"))

    return best_of(score)


_CHILD = r"""
import json, resource, sys, time
import numpy as np
mode, path, labels_path = sys.argv[1:4]
mm = np.load(path, mmap_mode="r")
labels = np.load(labels_path)
t0 = time.perf_counter()
if mode == "sei":
    from sei_cleanlab import find_label_issues
    find_label_issues(labels, mm)
else:  # plain numpy streaming pass: signed entropy summed over epochs
    acc = np.zeros(mm.shape[1])
    rows = np.arange(mm.shape[1])
    for t in range(mm.shape[0]):
        p = np.asarray(mm[t])
        h = -(p * np.log(p + 1e-8)).sum(1)
        acc += np.where(p[rows, labels] >= p.max(1), h, -h)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def bench_memmap(t, n, k, tmpdir):
    rng = np.random.default_rng(0)
    path = os.path.join(tmpdir, "history.npy")
    labels_path = os.path.join(tmpdir, "labels.npy")
    labels = rng.integers(0, k, n)
    np.save(labels_path, labels)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(t, n, k))
    for i in range(t):
        mm[i] = rng.dirichlet(np.ones(k), size=n).astype(np.float32)
    mm.flush()
    del mm
    out = {}
    for mode in ("numpy", "sei", "numpy", "sei"):  # second round with a warm page cache for both
        res = subprocess.run([sys.executable, "-c", _CHILD, mode, path, labels_path],
                             capture_output=True, text=True, check=True)
        out[mode] = json.loads(res.stdout)
    return out


def bench_training_overhead(steps=200):
    import torch
    from torch import nn

    import sei

    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    n = 50_000
    x = torch.randn(128, 3, 32, 32)
    y = torch.randint(0, 10, (128,))
    order = torch.randperm(n)
    batches = itertools.cycle([order[i:i + 128] for i in range(0, n - 127, 128)])  # an epoch's batches
    rec = sei.SEIRecorder(n, 10)

    def step(record):
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        if record:
            rec.update(next(batches), logits.detach(), y, from_logits=True)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(5):
        step(True)
    base, with_rec, upd = [], [], []
    for _ in range(steps):  # interleave to cancel drift
        t0 = time.perf_counter(); step(False); base.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); step(True); with_rec.append(time.perf_counter() - t0)
        logits = torch.randn(128, 10)
        ids = next(batches)
        t0 = time.perf_counter(); rec.update(ids, logits, y, from_logits=True); upd.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    getattr(rec, "_flush", lambda: None)()  # the rows still buffered count too (recorders without a buffer: none)
    rest = time.perf_counter() - t0
    step_s = float(np.median(base))
    upd_s = (float(np.sum(upd)) + rest) / steps  # the mean: a median would hide the flushes
    return step_s, upd_s, float(np.median(with_rec))


def bench_update_cold(steps=600):
    """Mean ``update`` cost (torch logits, batch 128, K = 10, N = 50,000) after a 32 MB pass
    standing in for a training step; the rows still buffered at the end count too."""
    import torch

    import sei

    torch.set_num_threads(2)
    n, b = 50_000, 128
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=g)
    y = torch.randint(0, 10, (b,), generator=g)
    z = [torch.randn(b, 10, generator=g) for _ in range(8)]
    rec, big, times = sei.SEIRecorder(n, 10), np.ones(4_000_000), []
    for i in range(steps + 20):
        big += 1.0
        start = (i * b) % (n - b)
        t0 = time.perf_counter()
        rec.update(order[start:start + b], z[i % 8], y, from_logits=True)
        if i >= 20:
            times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    getattr(rec, "_flush", lambda: None)()
    return (float(np.sum(times)) + time.perf_counter() - t0) / steps


def bench_cleanlab(n):
    from cleanlab.filter import find_label_issues

    rng = np.random.default_rng(0)
    k = 10
    probs = rng.dirichlet(np.ones(k) * 0.3, size=n)
    labels = rng.integers(0, k, n)
    return best_of(lambda: find_label_issues(labels, probs), repeat=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-score", type=int, default=1_000_000)
    ap.add_argument("--t", type=int, default=150)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--steps", type=int, default=200, help="training steps timed in (c)")
    args = ap.parse_args()

    rows = []
    s = bench_recorder_scoring(args.n_score)
    rows.append((f"(a) score + threshold + flag, N = {args.n_score:,}, from a recorder", f"{s:.3f} s", "< 0.2 s"))
    with tempfile.TemporaryDirectory() as tmp:
        m = bench_memmap(args.t, args.n, args.k, tmp)
    ratio = m["sei"]["seconds"] / m["numpy"]["seconds"]
    rows.append((f"(b) find_label_issues on a ({args.t}, {args.n:,}, {args.k}) float32 memmap",
                 f"{m['sei']['seconds']:.2f} s, peak RSS {m['sei']['max_rss_mb']:.0f} MB", "RSS < 1 GB"))
    rows.append(("(b) plain numpy streaming signed-entropy pass, same file",
                 f"{m['numpy']['seconds']:.2f} s, peak RSS {m['numpy']['max_rss_mb']:.0f} MB", ""))
    rows.append(("(b) ratio sei / plain numpy", f"{ratio:.2f}x", "< 2x"))
    if not args.skip_torch:
        step_s, upd_s, with_s = bench_training_overhead(args.steps)
        rows.append(("(c) small CNN training step, batch 128, CPU", f"{step_s * 1e3:.1f} ms", ""))
        rows.append((f"(c) recorder.update per step (logits, batch 128, mean of {args.steps})",
                     f"{upd_s * 1e3:.3f} ms = {100 * upd_s / step_s:.2f} % of a step", "< 1 %"))
    if not args.skip_torch:
        cold = bench_update_cold()
        rows.append(("(c') recorder.update after a 32 MB cache-evicting pass (mean of 600, no CNN)",
                     f"{cold * 1e3:.3f} ms", ""))
    for n in sorted({100_000, args.n_score}):
        c = bench_cleanlab(n)
        rows.append((f"(d) cleanlab.filter.find_label_issues, N = {n:,} (reference)", f"{c:.2f} s", ""))

    print("| benchmark | measured | goal |")
    print("| --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
