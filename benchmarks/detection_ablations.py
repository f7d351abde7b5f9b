"""Detection benchmark, part 4: synthetic noise on the clean labels and the paper's ablations."""

from __future__ import annotations

import numpy as np

import sei
from sei.metrics import detection_metrics
from benchmarks.detection_core import CIFAR_SETS, K, log
from benchmarks.detection_methods import score_run
from benchmarks.detection_regimes import cl_a, labels_all, neighbours_a, neighbours_b, run_a, subset_b


def human_confusion():
    lab = labels_all()
    cm = np.zeros((K, K))
    np.add.at(cm, (lab["train_clean"], lab["random1"]), 1)
    return cm


#: Seed of the synthetic noise, kept distinct from the auxiliary draw's seed. (Found here: before the core
#: gave noise and auxiliary draws separate seed streams, seed 0 for both made the auxiliary set a subset
#: of the flipped samples, leaving 1% noise outside it at rate 0.1.)
NOISE_SEED = 12345


def synthetic_labels(kind, rate, clean, cm):
    if kind == "symmetric":
        return sei.symmetric_noise(clean, rate, num_classes=K, seed=NOISE_SEED)
    return sei.confusion_noise(clean, cm, rate, seed=NOISE_SEED)


def synthetic(rates=(0.1, 0.2, 0.3, 0.4, 0.5)):
    lab = labels_all()
    clean = lab["train_clean"]
    nb = neighbours_a()
    cm = human_confusion()
    out = {}
    for kind in ("symmetric", "confusion"):
        for r in rates:
            noisy, is_mis = synthetic_labels(kind, r, clean, cm)
            tag = f"{kind}{r}_ns{NOISE_SEED}"
            run = run_a(tag, noisy, 0)
            cl = cl_a(tag, noisy, 0)
            res, _, _ = score_run(run, np.asarray(is_mis), neighbours=nb, cl=cl)
            out[tag] = res
            log(f"synthetic {tag}: SEI {res['SEI (zero)']['auroc']:.3f} AUM {res['AUM (aux 99%)']['auroc']:.3f}")
    return out


ABL_METHODS = ["SEI (aux_mean)", "SEI (zero)", "EI (aux_mean)", "AUM (aux 99%)", "signed confidence (zero)",
               "AUM-prob (zero)"]


def _pick(res, methods, metrics=("auroc", "f1")):
    return {m: {k: res[m][k] for k in metrics} for m in methods if m in res}


def ablations(keep_a, keep_b, default_method):
    lab = labels_all()
    meths = list(dict.fromkeys(ABL_METHODS + [default_method]))
    out = {"train_vs_eval": {}, "temperature": {}, "epochs": {}, "aux_count": {}, "two_run": {}}
    # recording in train mode (on the augmented batch, before the step) vs an eval pass after each epoch
    for reg, keep, tags in (("a", keep_a, ("random1", "worse")), ("b", keep_b, ("worse",))):
        for tag in tags:
            if tag not in keep:
                continue
            run, _, is_mis = keep[tag]
            if run.get("eval") is None:
                continue
            nb = neighbours_a() if reg == "a" else neighbours_b(subset_b())
            for hist in ("train", "eval"):
                res, _, _ = score_run(run, is_mis, neighbours=nb, hist=hist)
                out["train_vs_eval"][f"{reg}/{tag}/{hist}"] = _pick(res, meths)
            for tau in (0.5, 2.0, 4.0):
                res, _, _ = score_run(run, is_mis, neighbours=nb, temperature=tau)
                out["temperature"][f"{reg}/{tag}/T={tau}"] = _pick(res, meths)
            res, _, _ = score_run(run, is_mis, neighbours=nb)
            out["temperature"][f"{reg}/{tag}/T=1.0"] = _pick(res, meths)
            T = np.asarray(run["train"]).shape[0]
            for t in sorted({1, 3, 5, 10, 20, T // 2, T}):
                if t > T:
                    continue
                res, _, _ = score_run(run, is_mis, neighbours=nb, epochs=t)
                out["epochs"][f"{reg}/{tag}/{t}"] = _pick(res, meths)
    # N//K (authors' code) vs N//(K+1) (paper) auxiliary samples, and the two-run protocol (regime a)
    n = len(lab["train_clean"])
    for tag in CIFAR_SETS:
        noisy = lab[tag]
        is_mis = noisy != lab["train_clean"]
        nb = neighbours_a()
        run1 = run_a(tag, noisy, 0)
        res1, meth1, _ = score_run(run1, is_mis, neighbours=nb)
        out["aux_count"][f"{tag}/N//(K+1)"] = _pick(res1, meths, ("auroc", "f1", "precision", "recall"))
        runk = run_a(tag, noisy, 0, num_aux=n // K)
        resk, _, _ = score_run(runk, is_mis, neighbours=nb)
        out["aux_count"][f"{tag}/N//K"] = _pick(resk, meths, ("auroc", "f1", "precision", "recall"))
        aux1 = np.asarray(run1["aux"])
        run2 = run_a(tag, noisy, 0, exclude=aux1)
        aux2 = np.asarray(run2["aux"])
        assert not np.intersect1d(aux1, aux2).size
        res2, meth2, _ = score_run(run2, is_mis, neighbours=nb)
        allv = np.ones(n, bool)
        two = {}
        for m in meths:
            s = sei.combine_runs([meth1[m][0], meth2[m][0]], [aux1, aux2])
            # the cutoff: mean of the two runs' cutoffs (each from its own auxiliary samples)
            th = float(np.mean([meth1[m][3], meth2[m][3]]))
            flagged = sei.flag_issues(s, th)
            two[m] = {k: v for k, v in detection_metrics(flagged, s, is_mis, valid=allv).items()
                      if k in ("auroc", "f1", "precision", "recall")}
        out["two_run"][f"{tag}/one run (non-aux 45,455)"] = _pick(res1, meths, ("auroc", "f1", "precision", "recall"))
        out["two_run"][f"{tag}/two runs (all 50,000)"] = two
    return out
