"""Recorder update with logits on the GPU: summarised where they live vs. copied to the host per batch.

    python benchmarks/recorder_device_speed.py --device cuda            # 1.28e6 x 1,000, one epoch each
    python benchmarks/recorder_device_speed.py --device cpu --n 20000   # CPU rehearsal

Per epoch of N samples in batches of B logits (random, already on the device, so no model
step is timed), three loops: ``torch.logsumexp`` of every batch (the yardstick: one pass over
the logits, no synchronisation), ``SEIRecorder.update`` with the torch logits (summarised on the
device, :mod:`sei._device`), and the same update with ``logits.cpu()`` (what a loop that hands
numpy to the recorder pays: a copy and a synchronisation per batch). Each loop ends with
``end_epoch`` and a device synchronisation, inside the timing. Prints a markdown table; ``--out``
writes it (and stops early, keeping the rows measured, past ``--time-limit`` seconds).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None):
    import numpy as np
    import torch

    from sei import SEIRecorder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=1_280_000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--top-k", type=int, default=None, help="default: the recorder's top_k='auto'")
    ap.add_argument("--time-limit", type=float, default=90)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    gen = torch.Generator(device=dev).manual_seed(0)
    pool = [torch.randn(a.batch, a.k, device=dev, generator=gen) * 3 for _ in range(8)]
    labels = np.random.default_rng(0).integers(0, a.k, a.n)
    labels_dev = torch.from_numpy(labels).to(dev)
    batches = [np.arange(s, min(s + a.batch, a.n)) for s in range(0, a.n, a.batch)]
    t_start = time.time()
    rows = []

    def timed(name, step, finish=None):
        if time.time() - t_start > a.time_limit:
            rows.append((name, float("nan")))
            return
        sync()
        t0 = time.perf_counter()
        for i, ids in enumerate(batches):
            step(i, ids)
        if finish:
            finish()
        sync()
        rows.append((name, time.perf_counter() - t0))

    timed("torch.logsumexp of every batch (yardstick)",
          lambda i, ids: pool[i % 8][: len(ids)].logsumexp(dim=1))
    kw = {} if a.top_k is None else {"top_k": a.top_k}
    rec = SEIRecorder(a.n, a.k, **kw)
    timed(f"SEIRecorder.update, torch logits on {dev.type} (top_k={rec.top_k})",
          lambda i, ids: rec.update(ids, pool[i % 8][: len(ids)], labels_dev[ids[0]:ids[-1] + 1],
                                    from_logits=True), rec.end_epoch)
    rec2 = SEIRecorder(a.n, a.k, **kw)
    timed("SEIRecorder.update, logits.cpu() per batch",
          lambda i, ids: rec2.update(ids, pool[i % 8][: len(ids)].cpu(), labels[ids], from_logits=True),
          rec2.end_epoch)
    base = rows[0][1]
    lines = [f"# Recorder update, logits on {dev.type} ({torch.cuda.get_device_name() if dev.type == 'cuda' else 'CPU'})",
             "", f"N = {a.n:,}, K = {a.k:,}, batch {a.batch}, one epoch per row; torch {torch.__version__}.", "",
             "| loop | seconds per epoch | x yardstick |", "|---|---:|---:|"]
    lines += [f"| {name} | {s:.2f} | {s / base:.2f}x |" for name, s in rows]
    if rec.num_epochs and rec2.num_epochs:
        same = np.allclose(rec.scores("aum"), rec2.scores("aum"), rtol=1e-4, atol=1e-4)
        lines += ["", f"Both recorders give the same `aum` scores (rtol 1e-4): {same}."]
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
