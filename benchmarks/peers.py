"""Peers benchmark (issue #22): the library's default against every detector a user would run
instead, on the same features and the same training run, cell by cell.

    nice -n 10 python benchmarks/peers.py --time-limit 3000          # measure (cells cached), then report
    python benchmarks/peers.py --report                               # only the tables, from peers_cells.json

A cell is (regime, data set, label set, encoder, seed), as in :mod:`benchmarks.defaults`:

* Regime a: frozen ImageNet features (``--encoder``, default EfficientNet-Lite0 at 96 px), trained by
  :func:`sei.train` with every default (linear head, 10 epochs, ``score="auto"`` = ``poe_knn``,
  zero cutoff), its per-epoch probabilities kept (``history_path``). A second run of the same
  settings with the auxiliary class gives AUM its paper's cutoff (99th percentile of the auxiliary
  samples); both runs' auxiliary samples are left out of every method's evaluation.
* Regime b: the small CNN from scratch of the defaults benchmark on the images (with the
  auxiliary class, as there), for the added data sets that fit the shared CPU.

The default and the run-based peers (cleanlab's ensemble of per-epoch ``pred_probs``, wrong-event
count, FiftyOne's mistakenness, AUM) read that run; the feature-based peers (Deep k-NN, SimiFeat,
Datalab) read the same features; confident learning trains its own K-fold models on the same
features (``sei.cross_validation.kfold_probs``, 5 folds; regime a: the default's linear head at its
settings, :func:`linear_fit_predict`; regime b: the same CNN). Deep k-NN's k is picked as its paper does, on a held-out set with clean labels
(``D_clean``: 5 % of the samples, seeded), which is then left out of every method's evaluation.

Every peer is one function of :mod:`benchmarks.harness`. Cells go to
``benchmarks/results/peers_cells.json`` as soon as measured (behind ``--time-limit``); the tables to
``benchmarks/results/peers.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sei  # noqa: E402
from benchmarks import harness  # noqa: E402
from benchmarks.detection_core import log  # noqa: E402
from benchmarks.peers_cutoffs import CUTOFFS, cutoff_flags  # noqa: E402  (CUTOFFS: read by peers_report)
from benchmarks.peers_data import (_cache, _cached, class_names, clean_split, evaluated,  # noqa: E402
                                   features, label_sets)
from sei.metrics import detection_metrics  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CELLS_JSON = RESULTS / "peers_cells.json"
SEEDS = (0, 1, 2)
#: Neighbours searched once per feature set for Deep k-NN (the largest k of its grid).
KNN_MAX = max(harness.DEEP_KNN_GRID)

#: The library's default (``sei.train`` / ``find_label_issues`` with every default): ``poe_knn`` ranked, the
#: ``"cl_count"`` cutoff since issue #22 (before it, the zero cutoff: :data:`OLD_DEFAULT`).
DEFAULT = "SEI default (poe_knn, cl_count)"
OLD_DEFAULT = "SEI default (poe_knn, zero)"
PEERS = ("AUM (aux 99%)", "AUM (zero, same run)", "CL (5-fold)", "Deep k-NN (majority vote)",
         "SimiFeat vote (k=10)", "SimiFeat rank (k=10, HOC)", "cleanlab ensemble, accuracy weights (in-sample)",
         "cleanlab ensemble, uniform (in-sample)", "wrong events (> T/2)", "FiftyOne mistakenness (last epoch)",
         "Datalab label issues (features)")


def aux_run(x, y, names, seed):
    """A regime a cell's second run: the default's settings with the auxiliary class, AUM's 99 % cutoff."""
    return sei.train(x, y, class_names=names, progress=False, seed=seed, aux_class=True, score="aum",
                     threshold="aux_quantile")


# ----------------------------------------------------------------------------- cutoffs of the default's ranking
# ----------------------------------------------------------------------------- one cell
def _metrics(flags, score, is_mis, valid):
    m = detection_metrics(flags, score, is_mis, valid=valid)
    return {k: float(m[k]) for k in ("auroc", "auprc", "f1", "precision", "recall", "flagged")}


def feature_peers(key, x, y, k, seed, nb, clean_idx, is_mis):
    """{method: (score, flags)} of the feature-only peers, and Deep k-NN's k (cached per labels)."""
    out = {}
    dk = harness.deep_knn_choose_k(y, nb, is_mis, clean_idx, num_classes=k)
    out["Deep k-NN (majority vote)"] = harness.deep_knn(y, nb, dk, k)
    # HOC's estimate is a statistic of the label set: estimated once (seed 0) and shared by the seeds
    t, p = _cached(f"hoc_{key}", lambda: harness.hoc_transition(x, y, k, seed=0))
    sims = _cached(f"simifeat_nb10_{key.split('/')[0]}", lambda: harness.simifeat_neighbours(x))
    out["SimiFeat vote (k=10)"] = harness.simifeat(x, y, k, method="vote", neighbours=sims)
    out["SimiFeat rank (k=10, HOC)"] = harness.simifeat(x, y, k, method="rank", seed=seed, transition=(t, p),
                                                        neighbours=sims)
    out["Datalab label issues (features)"] = _cached(f"datalab_{key}", lambda: harness.datalab_label_issues(x, y))
    return out, dk


def run_peers(probs_list, y, rec):
    """{method: (score, flags)} of the peers that read the run: ``probs_list`` the per-epoch (N, K)
    probabilities, ``rec`` the run's recorder (logit margins for AUM)."""
    out = {}
    for w, name in (("accuracy", "cleanlab ensemble, accuracy weights (in-sample)"),
                    ("uniform", "cleanlab ensemble, uniform (in-sample)")):
        out[name] = harness.cleanlab_ensemble(y, probs_list, weighting=w)
    out["wrong events (> T/2)"] = harness.wrong_events(probs_list, y)
    out["FiftyOne mistakenness (last epoch)"] = harness.fiftyone_mistakenness(np.log(probs_list[-1] + 1e-12), y)
    aum = rec.scores("aum")
    out["AUM (zero, same run)"] = (aum, aum < 0)
    return out


def cell_a(name, tag, encoder, x, y, is_mis, seed, names, nb):
    """Regime a: sei.train's defaults (and one run with the auxiliary class, for AUM's cutoff)."""
    from sei_cleanlab import get_pred_probs_list

    t0 = time.time()
    k = int(y.max()) + 1
    n = len(y)
    with tempfile.TemporaryDirectory() as tmp:
        r = sei.train(x, y, class_names=names, progress=False, seed=seed, aux_class=False,
                      history_path=os.path.join(tmp, "h.npy"))
        probs = get_pred_probs_list(r.recorder)
    t_run = time.time() - t0
    r_aux = aux_run(x, y, names, seed)
    clean_idx = clean_split(n, seed)
    valid = evaluated(n, seed, r_aux.aux_indices)
    methods = {DEFAULT: (np.asarray(r.scores), np.asarray(r.mislabeled)),
               "AUM (aux 99%)": (np.asarray(r_aux.scores), np.asarray(r_aux.mislabeled))}
    methods.update(run_peers(probs, y, r.recorder))
    fp, dk = feature_peers(f"{name}_{encoder}/{tag}", x, y, k, seed, nb, clean_idx, is_mis)
    methods.update(fp)
    # CL's 5 folds trained once per label set (seed 0) and shared by the seeds: 5 more runs per cell do
    # not fit the shared CPU
    cl_probs = _cached(cl_cache_key(name, encoder, tag), lambda: _kfold(y, x, k, 0))
    methods["CL (5-fold)"] = harness.confident_learning(y, cl_probs)
    res = {m: _metrics(f, s, is_mis, valid) for m, (s, f) in methods.items()}
    poe = (r.recorder.fusion_input("poe_knn"), y, nb[:, :20], k)
    cuts = {c: _metrics(cutoff_flags(np.asarray(r.scores), y, probs, c, poe), np.asarray(r.scores), is_mis, valid)
            for c in CUTOFFS}
    return {"regime": "a", "data": name, "labels": tag, "encoder": encoder, "seed": seed, "n": int(valid.sum()),
            "noise": float(is_mis[valid].mean()), "score": r.score_name, "deep_knn_k": int(dk),
            "methods": res, "cutoffs": cuts, "cl": "fit_head", "seconds": {"run": t_run, "cell": time.time() - t0}}


def cl_cache_key(name, encoder, tag):
    """Cache name of CL's 5-fold probabilities in regime a (folds by ``fit_head``; seed 0 per label set)."""
    return f"cl_kfold_fit_head_{name}_{encoder}_{tag}"


def cell_b(name, tag, encoder, images, x, y, is_mis, seed):
    """Regime b: the defaults benchmark's small CNN from scratch (with the auxiliary class, its cached
    run); the default as ``sei_cleanlab`` computes it on that run with the features."""
    from benchmarks import detection_regimes as dr
    from benchmarks.defaults_data import B_CL_EPOCHS, B_SGD, regime_b_run
    from benchmarks.detection_core import make_small_cnn
    from sei_cleanlab import find_label_issues, get_pred_probs_list
    from sei_cleanlab._common import Scorer

    t0 = time.time()
    k, n = int(y.max()) + 1, len(y)
    run, h, lab, aux = regime_b_run(name, tag, images, y, seed)
    rec = sei.SEIRecorder.from_history(h, lab, from_logits=True)
    nb20 = sei.knn_indices(x, 20)
    raw = Scorer(rec, lab, neighbors=nb20)("poe_knn")
    flags = find_label_issues(lab, rec, neighbors=nb20, threshold_samples=aux)
    probs = get_pred_probs_list(h, from_logits=True, num_classes=k)
    clean_idx = clean_split(n, seed)
    valid = evaluated(n, seed, aux)
    aum = rec.scores("aum")
    methods = {DEFAULT: (raw, flags),
               "AUM (aux 99%)": (aum, sei.flag_issues(aum, sei.compute_threshold(aum, "aux_quantile", aux_indices=aux)))}
    methods.update(run_peers(probs, y, rec))
    nb = _cached(f"knn{KNN_MAX}_{name}_{encoder}", lambda: sei.knn_indices(x, min(KNN_MAX, n - 1)))
    fp, dk = feature_peers(f"{name}_{encoder}/{tag}", x, y, k, seed, nb, clean_idx, is_mis)
    methods.update(fp)
    cl = dr.confident_learning(f"dflt_b_{name}_{tag}_s{seed}_n{n}_e{B_CL_EPOCHS}",
                               lambda f: make_small_cnn(k, seed * 10 + f), images, y, seed=seed, epochs=B_CL_EPOCHS, **B_SGD)
    methods["CL (5-fold)"] = (cl[0], cl[1])
    res = {m: _metrics(f, s, is_mis, valid) for m, (s, f) in methods.items()}
    poe = (rec.fusion_input("poe_knn"), lab, nb20, k + 1)
    cuts = {c: _metrics(cutoff_flags(raw, y, probs, c, poe), raw, is_mis, valid) for c in CUTOFFS}
    return {"regime": "b", "data": name, "labels": tag, "encoder": encoder, "seed": seed, "n": int(valid.sum()),
            "noise": float(is_mis[valid].mean()), "score": "poe_knn", "deep_knn_k": int(dk),
            "methods": res, "cutoffs": cuts, "seconds": {"run": run["seconds"], "cell": time.time() - t0}}


def _kfold(y, x, k, seed):
    """5-fold out-of-sample probabilities of the default's own model (:func:`linear_fit_predict`)."""
    from sei.cross_validation import kfold_probs

    return kfold_probs(y, linear_fit_predict(x, y, k, seed), num_classes=k, seed=seed)


def linear_fit_predict(x, y, k, seed, *, epochs=10, lr=0.002, batch_size=128):
    """``kfold_probs``' model for confident learning in regime a: the default's linear head,
    trained by the engine's own :func:`sei.engine.protocols.fit_head` (features standardised
    over the training fold, SGD momentum 0.9, weight decay 1e-4, batch 128, 10 epochs at lr 0.002)."""
    from sei.engine import TrainConfig
    from sei.engine.protocols import fit_head

    def fit_predict(fold, tr, te):
        cfg = TrainConfig(head="linear", mode="embeddings", epochs=epochs, lr=lr, batch_size=batch_size,
                          seed=seed * 10 + fold, progress=False)
        return fit_head(x[tr], y[tr], cfg, num_classes=k).predict_proba(x[te])

    return fit_predict


# ----------------------------------------------------------------------------- driver
def _load():
    return json.loads(CELLS_JSON.read_text()) if CELLS_JSON.exists() else {}


def _save(cells, key):
    """Add ``cells[key]`` to the file, merged with what other runs wrote meanwhile (under a lock)."""
    import fcntl

    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(_cache() / "cells.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = _load()
        merged[key] = cells[key]
        tmp = CELLS_JSON.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(merged, indent=1))
        os.replace(tmp, CELLS_JSON)


def _measure(cells, key, cell):
    """Measure one cell, save it with the others and log it; its seconds (the next cell's estimate)."""
    t = time.time()
    cells[key] = cell()
    est = time.time() - t
    _save(cells, key)
    m = cells[key]["methods"]
    log(f"peers: {key} in {est:.0f}s; default {m[DEFAULT]['auroc']:.3f}/{m[DEFAULT]['f1']:.3f}; "
        + ", ".join(f"{p} {m[p]['auroc']:.3f}/{m[p]['f1']:.3f}" for p in PEERS if p in m))
    return est


def measure_a(guard, name, encoder, size, seeds, only=None):
    cells = _load()
    x = features(name, encoder, size)
    names = class_names(name)
    nb = _cached(f"knn{KNN_MAX}_{name}_{encoder}_{size}", lambda: sei.knn_indices(x, KNN_MAX))
    est = 0.0
    for seed in seeds:
        for tag, (y, is_mis) in label_sets(name, seed).items():
            if only and tag not in only:
                continue
            key = f"a/{name}/{tag}/{encoder}_{size}/{seed}"
            if key in cells or key in _load():  # measured here or by another run meanwhile
                continue
            if not guard.allows(est):
                log(f"peers: time limit, {key} and later cells not measured")
                return cells
            est = _measure(cells, key, lambda: cell_a(name, tag, f"{encoder}_{size}", x, np.asarray(y),
                                                      np.asarray(is_mis), seed, names, nb))
    return cells


def measure_b(guard, name, encoder, size, seeds):
    from benchmarks import defaults_data as data

    cells = _load()
    images, clean, _ = data.images_and_labels(name)
    if len(clean) > data.B_SIZE:
        raise ValueError(f"regime b runs on sets of at most {data.B_SIZE} images here; {name} has {len(clean)}")
    x = features(name, encoder, size)
    est = 0.0
    for seed in seeds:
        for tag, (y, is_mis) in data.label_sets(name, seed, images, clean).items():
            key = f"b/{name}/{tag}/{encoder}_{size}/{seed}"
            if key in cells:
                continue
            if not guard.allows(est):
                log(f"peers: time limit, {key} and later cells not measured")
                return cells
            est = _measure(cells, key, lambda: cell_b(name, tag, f"{encoder}_{size}", images, x, np.asarray(y),
                                                      np.asarray(is_mis), seed))
    return cells


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-limit", type=float, default=None)
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--data", nargs="*", default=["cifar10n"])
    ap.add_argument("--regime", choices=("a", "b"), default="a")
    ap.add_argument("--labels", nargs="*", default=None, help="only these label sets (default: all)")
    ap.add_argument("--encoder", default="efficientnet-lite0")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    a = ap.parse_args(argv)
    if not a.report:
        guard = harness.TimeGuard(a.time_limit)
        for name in a.data:
            if a.regime == "a":
                measure_a(guard, name, a.encoder, a.size, a.seeds, a.labels)
            else:
                measure_b(guard, name, a.encoder, a.size, a.seeds)
    from benchmarks.peers_report import write_report

    write_report(_load())


if __name__ == "__main__":
    main()
