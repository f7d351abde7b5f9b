"""Defaults benchmark (issue #12): measure every candidate (head, score, threshold) in every cell,
then pick the library's defaults with the rule fixed in :mod:`benchmarks.defaults_rule`.

    nice -n 10 python benchmarks/defaults.py --time-limit 3600     # measure (cached per cell), then report
    python benchmarks/defaults.py --report                          # only the tables, from defaults_cells.json

A cell is (regime, data set, label set, seed); seeds 0, 1, 2 change the training (and the
auxiliary draw, and on the added sets the noise draw).

* Regime a: the data set's frozen EfficientNet-Lite0 96 px features, trained by :func:`sei.train`
  (``mode="embeddings"``) with each head at its own settings (``HEADS``), once without the
  auxiliary class (what the defaults run: thresholds ``auto`` and ``gmm``, neighbour scores and
  the product of experts) and once with it (thresholds ``aux_quantile``, ``aux_mean``).
* Regime b: the benchmark's small CNN from scratch on the images (:mod:`benchmarks.detection_core`,
  always with the auxiliary class, every threshold on that run; the head does not apply). For
  CIFAR-10N the cells are ``detection.md``'s own runs (:func:`detection_b_cells`): retraining them
  does not fit the shared CPU; ``--only b/cifar10n`` measures them here at ``B_SIZE`` / ``B_EPOCHS``.

References per cell: confident learning (5-fold out-of-sample probabilities, cleanlab's
``find_label_issues``; regime a: the detection benchmark's prompt head on the 256-d PCA of the
features, for CIFAR-10N ``detection.md``'s (:func:`detection_cl`); regime b: the same CNN) and AUM
(the logit margin; its best AUROC over the cell's runs).
Evaluation leaves out the auxiliary samples of the cell's runs, for every candidate alike. The
rule is applied to the CIFAR-10N cells only; the added sets (:mod:`benchmarks.defaults_data`)
check it. Every cell is written to ``benchmarks/results/defaults_cells.json`` as soon as it is
measured, behind a time guard (``--time-limit``), so a cut run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sei  # noqa: E402
from benchmarks import defaults_data as data  # noqa: E402
from benchmarks.defaults_data import B_CL_EPOCHS, B_SGD, B_SIZE, regime_b_run  # noqa: E402
from benchmarks.detection_core import log  # noqa: E402
from benchmarks.detection_core import margin  # noqa: E402
from benchmarks.detection_methods import poe_score  # noqa: E402
from benchmarks.harness import TimeGuard  # noqa: E402
from sei.metrics import detection_metrics  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CELLS_JSON = RESULTS / "defaults_cells.json"
#: Each head at its own settings: the prompt head at the detection benchmark's 30 epochs (sei.train's
#: default is 150; heads.md measured 30 as good or better), the linear head at compute_sei's 10 epochs, lr 0.002.
HEADS = {"prompt": dict(head="prompt", lr=1e-3, epochs=30), "linear": dict(head="linear", lr=0.002, epochs=10)}
PLAIN = sei.scores.names(needs_features=False)
FEATURE = ("aum_prob_knn", "knn_margin", "poe")
NO_AUX, AUX = ("auto", "gmm"), ("aux_quantile", "aux_mean")
SEEDS = (0, 1, 2)
#: Regime b, scaled to the shared 2-core CPU (the detection benchmark uses 10,000 images, 40 epochs).


def candidates(heads=tuple(HEADS)):
    """Every (head, score, threshold) that competes, in registry order."""
    out = [(h, s, t) for h in heads for s in PLAIN for t in NO_AUX + AUX]
    return out + [(h, s, t) for h in heads for s in FEATURE for t in NO_AUX]


def _key(cand):
    return "|".join("-" if c is None else str(c) for c in cand)


def _score_all(rec, labels, thresholds, aux, neighbours=None, mean_logp=None):
    """{(score, threshold): (score array, flags)} of one run."""
    out = {}
    k = rec.num_classes
    # per-class scores (mean_logp): the run's epoch-averaged log-probabilities (sei.train(extra_scores=...))
    raws = {s: (margin(mean_logp, labels) if getattr(sei.scores.SCORES[s], "per_class", False) else rec.scores(s))
            for s in PLAIN}
    if neighbours is not None:  # the benchmark's product of experts "poe" (the registry's poe_knn, its own code)
        for s in ("aum_prob_knn", "knn_margin"):
            raws[s] = sei.feature_score(s, raws["aum_prob"], labels, neighbors=neighbours, num_classes=k)
        raws["poe"] = poe_score(mean_logp, labels, neighbours)
    for s, raw in raws.items():
        for t in thresholds:
            if t in AUX and s in FEATURE:
                continue
            # "poe" is not in the registry; like aum_prob it is a signed margin (zero = the cutoff)
            th = sei.compute_threshold(raw, t, aux_indices=aux if t in AUX else None,
                                       score_name=s if s in sei.scores.SCORES else "aum_prob")
            out[(s, t)] = (raw, sei.flag_issues(raw, th))
    return out


def _metrics(scored, is_mis, valid, head, into):
    for (s, t), (raw, flags) in scored.items():
        m = detection_metrics(flags, raw, is_mis, valid=valid)
        into[_key((head, s, t))] = {"auroc": m["auroc"], "f1": m["f1"]}


def cell_a(x, y, is_mis, seed, neighbours, names):
    """Regime a: sei.train with each head, with and without the auxiliary class."""
    cands, aum, secs, runs = {}, [], {}, {}
    for head, kw in HEADS.items():
        for aux_on in (True, False):
            t = time.time()
            # one run each (score_aux_samples=False): the cells read the recorder, and the times are one run's
            r = sei.train(x, y, class_names=names, progress=False, seed=seed, aux_class=aux_on, score="aum_prob",
                          score_aux_samples=False,
                          threshold="aux_quantile" if aux_on else "auto", extra_scores="mean_logp", **kw)
            secs[f"{head}{'_aux' if aux_on else ''}"] = time.time() - t
            runs[(head, aux_on)] = r
    valid = np.ones(len(y), bool)
    for (head, aux_on), r in runs.items():
        valid[r.aux_indices] = False
    for (head, aux_on), r in runs.items():
        lab = np.asarray(r.labels_used)
        aux = np.asarray(r.aux_indices)
        scored = _score_all(r.recorder, lab, AUX if aux_on else NO_AUX, aux, None if aux_on else neighbours,
                            r.recorder.fusion_input("poe_knn"))
        _metrics(scored, is_mis, valid, head, cands)
        aum.append(cands[_key((head, "aum", AUX[0] if aux_on else "auto"))]["auroc"])
    return cands, float(max(aum)), secs, valid


# ----------------------------------------------------------------------------- references
def _pca(x, dim=256):
    """Centred PCA of the features to ``dim`` columns (no labels), as the detection benchmark's regime a."""
    from benchmarks.detection_core import _torch

    torch = _torch()
    t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    t = t - t.mean(0, keepdim=True)
    torch.manual_seed(0)
    _, _, v = torch.pca_lowrank(t, q=min(dim, *t.shape), center=False, niter=4)
    return (t @ v).numpy().astype(np.float32)


def cl_a(name, tag, y, seed, pca):
    """Confident learning, regime a: the detection benchmark's 5-fold prompt head on the PCA features."""
    from benchmarks import detection_regimes as dr
    from benchmarks.detection_core import make_prompt_head

    if name == "cifar10n":
        return dr.cl_a(tag, y, seed)
    k = int(y.max()) + 1
    return dr.confident_learning(f"dflt_a_{name}_{tag}_s{seed}", lambda f: make_prompt_head(pca.shape[1], k, seed * 10 + f),
                                 pca, np.asarray(y), seed=seed, epochs=dr.A_EPOCHS, lr=1e-3, optim="adam")


# ----------------------------------------------------------------------------- regime b
def subset(n):
    return np.arange(n) if n <= B_SIZE else np.sort(np.random.default_rng(0).choice(n, B_SIZE, replace=False))


def cell_b(name, tag, images, y, is_mis, seed, neighbours):
    """Regime b: the small CNN from scratch with the auxiliary class; 5-fold CL with the same CNN."""
    from benchmarks import detection_regimes as dr
    from benchmarks.detection_core import make_small_cnn
    from benchmarks.detection_methods import mean_log_probs

    k = int(y.max()) + 1
    run, h, lab, aux = regime_b_run(name, tag, images, y, seed)
    rec = sei.SEIRecorder.from_history(h, lab, from_logits=True)
    valid = np.ones(len(y), bool)
    valid[aux] = False
    cands = {}
    _metrics(_score_all(rec, lab, NO_AUX + AUX, aux, neighbours, mean_log_probs(h)), is_mis, valid, None, cands)
    cl = dr.confident_learning(f"dflt_b_{name}_{tag}_s{seed}_n{len(y)}_e{B_CL_EPOCHS}",
                               lambda f: make_small_cnn(k, seed * 10 + f), images, np.asarray(y), seed=seed,
                               epochs=B_CL_EPOCHS, **B_SGD)
    aum = cands[_key((None, "aum", "aux_quantile"))]["auroc"]
    return cands, aum, {"train": run["seconds"], "cl": cl[2]}, valid, cl


# ----------------------------------------------------------------------------- regime b of detection.md
#: detection.md's method names as (score, threshold) candidates ("auto" = zero for signed scores, gmm otherwise).
DETECTION_METHODS = {
    "SEI (aux_mean)": [("sei", "aux_mean")], "SEI (aux_quantile)": [("sei", "aux_quantile")],
    "SEI (zero)": [("sei", "auto")], "SEI (gmm)": [("sei", "gmm")], "SEI mean (zero)": [("sei_mean", "auto")],
    "EI (aux_mean)": [("ei", "aux_mean")], "EI (gmm)": [("ei", "auto"), ("ei", "gmm")],
    "SE@T (aux_mean)": [("se_last", "aux_mean")], "SE@T (zero)": [("se_last", "auto")],
    "SE@T/2 (aux_mean)": [("se_mid", "aux_mean")], "SE@T/2 (zero)": [("se_mid", "auto")],
    "AUM (aux 99%)": [("aum", "aux_quantile")], "AUM (zero)": [("aum", "auto")],
    "small-loss GMM": [("loss", "auto"), ("loss", "gmm")],
    "AUM-prob (zero)": [("aum_prob", "auto")], "AUM-prob (aux 99%)": [("aum_prob", "aux_quantile")],
    "signed confidence (zero)": [("signed_confidence", "auto")], "kNN label margin (zero)": [("knn_margin", "auto")],
    "AUM-prob + kNN margin (zero)": [("aum_prob_knn", "auto")], "PoE: log-probs + kNN (zero)": [("poe", "auto")],
}


def detection_b_cells(path=RESULTS / "detection.json"):
    """Regime b cells of the detection benchmark (10,000 images, 40 epochs; its cached runs are not
    kept, and retraining them does not fit this CPU budget): those with a confident-learning
    reference (seed 0 of each label set), their methods mapped to candidates (head None)."""
    if not Path(path).exists():
        return {}
    from benchmarks.cifar10n import load_labels
    from benchmarks.detection_regimes import subset_b

    res = json.loads(Path(path).read_text())["results"].get("b", {})
    lab, sub, out = load_labels(), subset_b(), {}
    for tag, per_seed in res.items():
        for seed, r in per_seed.items():
            if "confident learning" not in r:
                continue
            cands = {_key((None, s, t)): {"auroc": r[m]["auroc"], "f1": r[m]["f1"]}
                     for m, pairs in DETECTION_METHODS.items() if m in r for s, t in pairs}
            noise = float(np.mean(lab[tag][sub] != lab["train_clean"][sub]))  # on the 10,000-image subset
            out[f"b/cifar10n/{tag}/{seed}"] = {
                "regime": "b", "data": "cifar10n", "labels": tag, "seed": int(seed), "source": "detection.json",
                "noise": noise,
                "cl_auroc": r["confident learning"]["auroc"], "cl_f1": r["confident learning"]["f1"],
                "aum_auroc": r["AUM (aux 99%)"]["auroc"], "candidates": cands}
    return out


# ----------------------------------------------------------------------------- driver
#: (regime, data set) in the order measured, seed by seed (so a cut run has every set at seed 0).
ORDER = (("a", "cifar10n"), ("a", "digits"), ("a", "mnist5k"), ("b", "digits"), ("b", "cifar10n"), ("b", "mnist5k"))


class _Data:
    """One data set's images, clean labels, features, kNN graphs and PCA, loaded once."""

    def __init__(self, name):
        self.name = name
        self.images, self.clean, self.names = data.images_and_labels(name)
        self.x = np.asarray(data.features(name), dtype=np.float32)
        self.sub = subset(len(self.clean))
        self._nb, self._pca = {}, None

    def neighbours(self, regime):
        if regime not in self._nb:
            p = data.cache_dir() / f"defaults_knn20_{self.name}_{regime}.npy"
            if not p.exists():
                np.save(p, sei.knn_indices(self.x if regime == "a" else self.x[self.sub], 20))
            self._nb[regime] = np.load(p)
        return self._nb[regime]

    def pca(self):
        if self._pca is None:
            if self.name == "cifar10n":
                from benchmarks.detection_regimes import _features

                self._pca = _features()
            else:
                self._pca = _pca(self.x)
        return self._pca


def measure_cell(d, regime, tag, y, is_mis, seed):
    """One cell's record (json-ready)."""
    t0 = time.time()
    if regime == "a":
        cands, aum, secs, valid = cell_a(d.x, y, is_mis, seed, d.neighbours("a"), d.names)
        if d.name == "cifar10n":  # detection.md's CL, same protocol and seed (see detection_cl)
            return {**_record("a", d.name, tag, seed, valid, is_mis, aum, cands, secs, t0), **detection_cl(tag, seed)}
        cl = cl_a(d.name, tag, y, seed, d.pca())
    else:
        s = d.sub
        imgs = np.ascontiguousarray(d.images[s])
        cands, aum, secs, valid, cl = cell_b(d.name, tag, imgs, y[s], is_mis[s], seed, d.neighbours("b"))
        is_mis = is_mis[s]
    m = detection_metrics(cl[1], cl[0], is_mis, valid=valid)
    return {**_record(regime, d.name, tag, seed, valid, is_mis, aum, cands, secs, t0),
            "cl_auroc": m["auroc"], "cl_f1": m["f1"]}


def _record(regime, name, tag, seed, valid, is_mis, aum, cands, secs, t0):
    return {"regime": regime, "data": name, "labels": tag, "seed": seed, "n": int(valid.sum()),
            "noise": float(is_mis[valid].mean()), "aum_auroc": aum, "candidates": cands,
            "seconds": {**secs, "cell": time.time() - t0}}


def detection_cl(tag, seed, path=RESULTS / "detection.json"):
    """CIFAR-10N regime a's confident learning as ``benchmarks/detection.py`` measured it (5-fold prompt head
    on the 256-d PCA features, 30 epochs, the same seed; evaluated on that run's non-auxiliary samples, a
    different random 9 % left out than here). Not recomputed: its cached probabilities were not kept, and
    9 x 5 folds do not fit the shared CPU next to the candidates' runs."""
    r = json.loads(Path(path).read_text())["results"]["a"][tag][str(seed)]["confident learning"]
    return {"cl_auroc": r["auroc"], "cl_f1": r["f1"], "cl_source": "detection.json"}


def _load_cells():
    return json.loads(CELLS_JSON.read_text()) if CELLS_JSON.exists() else {}


def measure(guard, seeds=SEEDS, order=ORDER):
    """Measure every missing cell while the guard allows; returns the cells (also in CELLS_JSON)."""
    cells, loaded, est = _load_cells(), {}, {}
    for seed in seeds:
        for regime, name in order:
            if not data.available(name):
                log(f"defaults: {name} not installed, skipped")
                continue
            if name not in loaded:
                loaded[name] = _Data(name)
            d = loaded[name]
            for tag, (y, is_mis) in data.label_sets(name, seed, d.images, d.clean).items():
                key = f"{regime}/{name}/{tag}/{seed}"
                if key in cells:
                    continue
                if not guard.allows(est.get((regime, name), 0.0)):
                    log(f"defaults: time limit, {key} and later cells not measured")
                    return cells
                cells[key] = measure_cell(d, regime, tag, y, is_mis, seed)
                est[(regime, name)] = cells[key]["seconds"]["cell"]
                RESULTS.mkdir(parents=True, exist_ok=True)
                CELLS_JSON.write_text(json.dumps(cells, indent=1))
                c = cells[key]
                log(f"defaults: {key} in {est[(regime, name)]:.0f}s; CL {c['cl_auroc']:.3f}/{c['cl_f1']:.3f} "
                    f"AUM {c['aum_auroc']:.3f}")
    return cells


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-limit", type=float, default=None, help="seconds; cells not started by then are left out")
    ap.add_argument("--report", action="store_true", help="only write the tables from the measured cells")
    ap.add_argument("--only", nargs="*", default=None, help="regime/data pairs to measure, e.g. a/digits")
    ap.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    a = ap.parse_args(argv)
    if not a.report:
        order = ORDER if a.only is None else tuple(tuple(o.split("/")) for o in a.only)
        measure(TimeGuard(a.time_limit), seeds=a.seeds, order=order)
    from benchmarks.defaults_report import write_report

    write_report({**detection_b_cells(), **_load_cells()})


if __name__ == "__main__":
    main()
