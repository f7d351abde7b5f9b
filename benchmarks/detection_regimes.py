"""Detection benchmark, part 3: the regime a / b runs (cached), confident learning, neighbours, scoring."""

from __future__ import annotations

import json
import os
import time

import numpy as np

import sei
from benchmarks import harness
from benchmarks.detection_core import (CIFAR_SETS, K, _cache_path, _torch, cached_run, knn_indices, log,
                                       make_prompt_head, make_small_cnn, predict, softmax, train_record)
from benchmarks.detection_methods import score_run
from sei.cross_validation import kfold_probs

# ----------------------------------------------------------------------------- regime a
A_EPOCHS = 30
B_EPOCHS = 40
B_SUBSET = 10_000


FEATURE_DIM = 256
_FEATS = {}


def _features():
    """Frozen EfficientNet-Lite0 (96 px) train features, centred and PCA-reduced to 256-d (no labels used).

    The reduction keeps the CPU budget (the head trains ~3x faster) and is shared by the kNN scores.
    """
    if "a" not in _FEATS:
        p = _cache_path(f"feats_pca{FEATURE_DIM}", "npy")
        if not p.exists():
            from benchmarks.cifar10n import load_embeddings

            torch = _torch()
            x = torch.as_tensor(load_embeddings("train", "efficientnet-lite0", 96), dtype=torch.float32)
            x = x - x.mean(0, keepdim=True)
            torch.manual_seed(0)
            _, sv, v = torch.pca_lowrank(x, q=FEATURE_DIM, center=False, niter=4)
            np.save(p, (x @ v).numpy().astype(np.float32))
        _FEATS["a"] = np.load(p)
    return _FEATS["a"]


def run_a(tag, noisy, seed, *, num_aux=None, exclude=None, epochs=A_EPOCHS):
    """One regime-a run: prompt head on frozen features with an auxiliary pseudo-class."""
    key = f"a_{tag}_s{seed}_e{epochs}" + (f"_aux{num_aux}" if num_aux else "") + ("_run2" if exclude is not None else "")

    def fn():
        feats = _features()
        lab_run, aux = sei.draw_auxiliary(noisy, K, num_aux=num_aux, seed=seed + (1 if exclude is not None else 0),
                                          exclude=exclude)
        head = make_prompt_head(feats.shape[1], K + 1, seed)
        log(f"regime a: training {key}")
        r = train_record(head, feats, lab_run, epochs=epochs, lr=1e-3, optim="adam", seed=seed, record_eval=True)
        log(f"regime a: {key} done in {r['seconds']:.0f}s, final acc {r['acc'][-1]:.3f}")
        return {**r, "labels_run": np.asarray(lab_run), "aux": np.asarray(aux)}

    return cached_run(key, fn)



def _cv_probs(make_model, inputs, labels, *, folds=5, seed=0, images=False, **train_kw):
    def fit_predict(f, tr, te):
        m = make_model(f)
        train_record(m, inputs[tr], labels[tr], seed=seed + f, images=images, **train_kw)
        return softmax(predict(m, inputs[te], images=images))

    return kfold_probs(labels, fit_predict, folds=folds, seed=seed, num_classes=K)


def confident_learning(key, make_model, inputs, labels, **kw):
    """Confident learning (:func:`benchmarks.harness.confident_learning`: cleanlab's ``find_label_issues``
    and self-confidence) on 5-fold cross-validated probabilities (cached)."""
    def fn():
        t = time.time()
        log(f"confident learning: {key}")
        probs = _cv_probs(make_model, inputs, labels, **kw)
        return {"probs": probs, "seconds": time.time() - t}

    r = cached_run(f"cl_{key}", fn)
    t = time.time()
    probs = np.asarray(r["probs"])
    score, mask = harness.confident_learning(np.asarray(labels), probs)
    return score, mask, r["seconds"] + time.time() - t


def cl_a(tag, noisy, seed, epochs=A_EPOCHS):
    feats = _features()
    return confident_learning(f"a_{tag}_s{seed}_e{epochs}", lambda f: make_prompt_head(feats.shape[1], K, seed * 10 + f),
                              feats, np.asarray(noisy), seed=seed, epochs=epochs, lr=1e-3, optim="adam")


_NEIGHBOURS = {}


def neighbours_a():
    if "a" not in _NEIGHBOURS:
        p = _cache_path("knn20_train", "npy")
        if not p.exists():
            t = time.time()
            np.save(p, knn_indices(_features(), 20, pca_dim=0))
            log(f"kNN graph (50k, k=20) in {time.time() - t:.0f}s")
        _NEIGHBOURS["a"] = np.load(p)
    return _NEIGHBOURS["a"]


def neighbours_b(subset):
    if "b" not in _NEIGHBOURS:
        p = _cache_path(f"knn20_sub{len(subset)}", "npy")
        if not p.exists():
            np.save(p, knn_indices(_features()[subset], 20, pca_dim=0))
        _NEIGHBOURS["b"] = np.load(p)
    return _NEIGHBOURS["b"]


# ----------------------------------------------------------------------------- regime b
def subset_b():
    return np.sort(np.random.default_rng(0).choice(50_000, B_SUBSET, replace=False))


def run_b(tag, noisy_sub, seed, *, record_eval=False, epochs=B_EPOCHS):
    key = f"b_{tag}_s{seed}_e{epochs}" + ("_eval" if record_eval else "")

    def fn():
        from benchmarks.cifar10n import load_images

        x = np.ascontiguousarray(load_images("train")[subset_b()])
        lab_run, aux = sei.draw_auxiliary(noisy_sub, K, seed=seed)
        model = make_small_cnn(K + 1, seed)
        log(f"regime b: training {key}")
        r = train_record(model, x, lab_run, epochs=epochs, lr=0.05, optim="sgd", weight_decay=5e-4, seed=seed,
                         images=True, augment=True, record_eval=record_eval,
                         log=lambda m: log(f"  {key} {m}") if os.environ.get("SEI_BENCH_VERBOSE") else None)
        log(f"regime b: {key} done in {r['seconds']:.0f}s, final acc {r['acc'][-1]:.3f}")
        return {**r, "labels_run": np.asarray(lab_run), "aux": np.asarray(aux)}

    return cached_run(key, fn)


def cl_b(tag, noisy_sub, seed, epochs=10):
    from benchmarks.cifar10n import load_images

    x = np.ascontiguousarray(load_images("train")[subset_b()])
    return confident_learning(f"b_{tag}_s{seed}_e{epochs}", lambda f: make_small_cnn(K, seed * 10 + f), x,
                              np.asarray(noisy_sub), seed=seed, images=True, augment=True, epochs=epochs, lr=0.05,
                              optim="sgd", weight_decay=5e-4)


# ----------------------------------------------------------------------------- stages
def labels_all():
    from benchmarks.cifar10n import load_labels

    return load_labels()


def train_stage_b(seeds_worse=(0, 1, 2), cl=True):
    lab = labels_all()
    sub = subset_b()
    for tag in CIFAR_SETS:
        noisy = lab[tag][sub]
        run_b(tag, noisy, 0, record_eval=(tag == "worse"))
        if cl:
            cl_b(tag, noisy, 0)
    for s in seeds_worse:
        if s:
            run_b("worse", lab["worse"][sub], s)


# ----------------------------------------------------------------------------- experiments
def _res_cache(key, fn):
    p = _cache_path(f"res_{key}", "json")
    if p.exists():
        return json.loads(p.read_text())
    r = fn()
    p.write_text(json.dumps(r))
    return r


def regime_a(seeds=(0, 1, 2)):
    lab = labels_all()
    nb = neighbours_a()
    out, keep = {}, {}
    for tag in CIFAR_SETS:
        noisy = lab[tag]
        is_mis = noisy != lab["train_clean"]
        out[tag] = {}
        for seed in seeds:
            run = run_a(tag, noisy, seed)
            cl = cl_a(tag, noisy, seed)
            res, meth, rec = score_run(run, is_mis, neighbours=nb, cl=cl)
            for m in res:
                res[m]["train_seconds"] = run["seconds"]
            out[tag][seed] = res
            if seed == 0:
                keep[tag] = (run, meth, is_mis)
            log(f"regime a {tag} seed {seed}: SEI {res['SEI (zero)']['auroc']:.3f} AUM {res['AUM (aux 99%)']['auroc']:.3f} "
                f"CL {res['confident learning']['auroc']:.3f} SC {res['signed confidence (zero)']['auroc']:.3f} "
                f"AUMp+kNN {res['AUM-prob + kNN margin (zero)']['auroc']:.3f}")
    return out, keep


def regime_b(seeds_worse=(0, 1, 2)):
    lab = labels_all()
    sub = subset_b()
    nb = neighbours_b(sub)
    out, keep = {}, {}
    for tag in CIFAR_SETS:
        noisy = lab[tag][sub]
        is_mis = noisy != lab["train_clean"][sub]
        out[tag] = {}
        for seed in (seeds_worse if tag == "worse" else (0,)):
            key = f"b_{tag}_s{seed}_e{B_EPOCHS}" + ("_eval" if (tag == "worse" and seed == 0) else "")
            if not _cache_path(key, "json").exists():
                log(f"regime b: {key} not trained yet, skipped")
                continue
            run = run_b(tag, noisy, seed, record_eval=(tag == "worse" and seed == 0))
            cl = None
            if seed == 0 and _cache_path(f"cl_b_{tag}_s0_e10", "json").exists():
                cl = cl_b(tag, noisy, 0)
            res, meth, rec = score_run(run, is_mis, neighbours=nb, cl=cl)
            for m in res:
                res[m]["train_seconds"] = run["seconds"]
                res[m]["final_train_acc"] = run["acc"][-1]
            out[tag][seed] = res
            if seed == 0:
                keep[tag] = (run, meth, is_mis)
            log(f"regime b {tag} seed {seed}: acc {run['acc'][-1]:.3f} SEI {res['SEI (zero)']['auroc']:.3f} "
                f"AUM {res['AUM (aux 99%)']['auroc']:.3f} SC {res['signed confidence (zero)']['auroc']:.3f}")
    return out, keep
