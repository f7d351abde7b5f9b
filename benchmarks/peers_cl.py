"""Confident learning's rows of measured regime a peers cells, refit through the engine's ``fit_head``.

    nice -n 10 python benchmarks/peers_cl.py --time-limit 1800

The regime a cells of ``peers_cells.json`` measured before CL's folds trained through
:func:`sei.engine.protocols.fit_head` (``benchmarks/peers.py``'s :func:`~benchmarks.peers.linear_fit_predict`)
carry CL rows from a hand-written copy of that loop. This refits the 5 folds the way
:func:`benchmarks.peers.cell_a` does today (seed 0 per label set, shared by the seeds), evaluates them
on the cell's own samples (the clean split and the auxiliary run's samples left out, as there: the
auxiliary run is trained again with the cell's seed) and replaces the row, marking the cell
``"cl": "fit_head"``. Nothing else in the cell changes. Then the report is rewritten.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import harness  # noqa: E402
from benchmarks import peers as pb  # noqa: E402
from benchmarks import peers_data as pdata  # noqa: E402
from benchmarks.detection_core import log  # noqa: E402

CL = "CL (5-fold)"


def refit(cell, x, y, is_mis, names):
    """The cell's CL row from folds trained by ``fit_head`` (cached per label set)."""
    n, k = len(y), int(y.max()) + 1
    seed = cell["seed"]
    valid = pdata.evaluated(n, seed, pb.aux_run(x, y, names, seed).aux_indices)
    probs = pdata._cached(pb.cl_cache_key(cell["data"], cell["encoder"], cell["labels"]), lambda: pb._kfold(y, x, k, 0))
    score, flags = harness.confident_learning(y, probs)
    if int(valid.sum()) != cell["n"]:
        raise RuntimeError(f"the cell's samples differ from the ones measured ({int(valid.sum())} vs {cell['n']})")
    return pb._metrics(flags, score, is_mis, valid)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-limit", type=float, default=None)
    a = ap.parse_args(argv)
    guard = harness.TimeGuard(a.time_limit)
    cells = pb._load()
    est = 0.0
    for key, cell in sorted(cells.items()):
        if cell["regime"] != "a" or cell.get("cl") == "fit_head":
            continue
        if not guard.allows(est):
            log(f"peers_cl: time limit, {key} and later cells not refit")
            break
        t0 = time.time()
        name, tag, seed = cell["data"], cell["labels"], cell["seed"]
        enc, size = cell["encoder"].rsplit("_", 1)
        x = pdata.features(name, enc, int(size))
        y, is_mis = (np.asarray(v) for v in pdata.label_sets(name, seed)[tag])
        old = cell["methods"][CL]
        cell["methods"][CL] = refit(cell, x, y, is_mis, pdata.class_names(name))
        cell["cl"] = "fit_head"
        pb._save(cells, key)
        est = time.time() - t0
        log(f"peers_cl: {key} in {est:.0f}s; CL AUROC/F1 {old['auroc']:.3f}/{old['f1']:.3f} -> "
            f"{cell['methods'][CL]['auroc']:.3f}/{cell['methods'][CL]['f1']:.3f}")
    from benchmarks.peers_report import write_report

    write_report(pb._load())


if __name__ == "__main__":
    main()
