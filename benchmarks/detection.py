"""Mislabeled-image detection benchmark on CIFAR-10N (real human noise) and synthetic noise.

Reproduce everything (tables + plots under ``benchmarks/results/``)::

    nice -n 10 python benchmarks/detection.py --all

Stages (each cached under ``benchmarks/.cache/detection/``; re-running only re-scores):

* ``--regime a``  frozen EfficientNet-Lite0 features (96 px, ``benchmarks/cifar10n.py``) and a
  prompt-style cosine head with an auxiliary pseudo-class (learnable class "prompt" vectors,
  CLIP-like learnable temperature), on all 50,000 training images; 3 seeds per label set.
* ``--regime b``  a small CNN trained from scratch on a fixed 10,000-image subset, where the
  network memorises noisy labels (the regime training-dynamics methods are made for).
* ``--synthetic`` symmetric and confusion-calibrated noise at 0.1-0.5 on the clean labels (regime a).
* ``--ablations`` the paper's ablations on the same harness.

Every method is computed from the same recorded dynamics (the (T, N, C) logits of one
training run, recorded in train mode on each mini-batch before the optimiser step, as the
authors' code does), through :class:`sei.SEIRecorder`. Confident learning uses cleanlab's
``find_label_issues`` on 5-fold cross-validated probabilities from the same features/model.

Labels: CIFAR-10N (Wei et al., "Learning with Noisy Labels Revisited: A Study Using
Real-World Human Annotations", ICLR 2022), CC BY-NC 4.0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sei  # noqa: E402
from sei import SEIRecorder, compute_threshold  # noqa: E402

RESULTS = HERE / "results"
CACHE = Path(os.environ.get("SEI_BENCH_CACHE", HERE / ".cache")) / "detection"
K = 10
CIFAR_SETS = ("aggre", "random1", "worse")


# ----------------------------------------------------------------------------- torch bits
def _torch():
    import torch

    torch.set_num_threads(int(os.environ.get("SEI_BENCH_THREADS", "2")))
    return torch


def make_prompt_head(dim, num_outputs, seed):
    """Cosine 'prompt' head: logits = exp(s) * <x/|x|, w_k/|w_k|>, s learnable (CLIP-like)."""
    torch = _torch()
    nn = torch.nn

    class PromptHead(nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.prompts = nn.Parameter(torch.randn(num_outputs, dim, generator=g) * dim ** -0.5)
            self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

        def forward(self, x):
            x = nn.functional.normalize(x, dim=1)
            w = nn.functional.normalize(self.prompts, dim=1)
            return self.logit_scale.exp().clamp(max=100.0) * x @ w.T

    return PromptHead()


def make_small_cnn(num_outputs, seed, width=32):
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(seed)

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                             nn.MaxPool2d(2))

    return nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16 * width, num_outputs))


_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


def _image_batch(torch, x_uint8, augment, gen):
    x = torch.from_numpy(x_uint8).float().div_(255.0)
    x = (x - torch.from_numpy(_MEAN)) / torch.from_numpy(_STD)
    x = x.permute(0, 3, 1, 2).contiguous()
    if augment:
        flip = torch.rand(x.shape[0], generator=gen) < 0.5
        x[flip] = x[flip].flip(3)
    return x


def train_record(model, inputs, labels, *, epochs, batch_size=128, lr=1e-3, optim="adam", weight_decay=0.0,
                 seed=0, images=False, augment=False, record_eval=False, momentum=0.9, log=None):
    """Train ``model`` with cross-entropy, recording every sample's logits each epoch.

    Returns dict(train=(T, N, C) float32 logits recorded in train mode on each mini-batch
    before the optimiser step, eval=(T, N, C) logits of an eval-mode pass after each epoch
    (or None), acc=[train accuracy per epoch on the given labels], seconds=float).
    """
    torch = _torch()
    n = len(labels)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    xs = inputs if images else torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    if optim == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    c = None
    hist_train = hist_eval = None
    accs = []
    t0 = time.time()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        correct = 0
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            xb = _image_batch(torch, xs[idx.numpy()], augment, gen) if images else xs[idx]
            out = model(xb)
            if hist_train is None:
                c = out.shape[1]
                hist_train = np.zeros((epochs, n, c), dtype=np.float32)
                if record_eval:
                    hist_eval = np.zeros((epochs, n, c), dtype=np.float32)
            hist_train[ep, idx.numpy()] = out.detach().numpy()
            loss = torch.nn.functional.cross_entropy(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct += int((out.argmax(1) == y[idx]).sum())
        accs.append(correct / n)
        if record_eval:
            hist_eval[ep] = predict(model, xs, images=images, batch_size=512)
        if log:
            log(f"epoch {ep + 1}/{epochs} acc {accs[-1]:.3f} ({time.time() - t0:.0f}s)")
    return {"train": hist_train, "eval": hist_eval, "acc": accs, "seconds": time.time() - t0}


def predict(model, inputs, *, images=False, batch_size=1024):
    torch = _torch()
    model.eval()
    outs = []
    with torch.no_grad():
        for s in range(0, len(inputs), batch_size):
            xb = _image_batch(torch, inputs[s:s + batch_size], False, None) if images else \
                torch.as_tensor(np.asarray(inputs[s:s + batch_size]), dtype=torch.float32)
            outs.append(model(xb).numpy())
    model.train()
    return np.concatenate(outs).astype(np.float32)


def softmax(z, temperature=1.0):
    z = np.asarray(z, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- kNN labels
def knn_indices(features, k=20, *, chunk=2048, pca_dim=256, seed=0):
    """(N, k) indices of each sample's k nearest neighbours by cosine similarity (self excluded)."""
    torch = _torch()
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    x = x - x.mean(0, keepdim=True)
    if pca_dim and x.shape[1] > pca_dim:
        torch.manual_seed(seed)
        _, _, v = torch.pca_lowrank(x, q=pca_dim, center=False)
        x = x @ v
    x = torch.nn.functional.normalize(x, dim=1)
    out = np.empty((x.shape[0], k), dtype=np.int64)
    for s in range(0, x.shape[0], chunk):
        sim = x[s:s + chunk] @ x.T
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + s] = -2.0
        out[s:s + chunk] = sim.topk(k, dim=1).indices.numpy()
    return out


def knn_label_distribution(neighbours, labels, num_classes):
    """(N, K) share of each sample's neighbours carrying each (given) label."""
    lab = np.asarray(labels)[neighbours]
    q = np.zeros((len(neighbours), num_classes))
    for c in range(num_classes):
        q[:, c] = (lab == c).mean(axis=1)
    return q


def margin(p, labels):
    """p_y - max_{k != y} p_k per row."""
    rows = np.arange(len(labels))
    py = p[rows, labels]
    q = p.copy()
    q[rows, labels] = -np.inf
    return py - q.max(axis=1)


# ----------------------------------------------------------------------------- metrics
def metrics(score, flagged, is_mis, valid):
    from sklearn.metrics import average_precision_score, roc_auc_score

    s, f, m = score[valid], flagged[valid], is_mis[valid]
    ok = np.isfinite(s)
    tp = int(np.sum(f & m))
    prec = tp / max(int(f.sum()), 1)
    rec = tp / max(int(m.sum()), 1)
    f1 = 2 * prec * rec / max(prec + rec, 1e-12)
    return {
        "precision": prec, "recall": rec, "f1": f1,
        "auroc": float(roc_auc_score(m[ok], -s[ok])),
        "auprc": float(average_precision_score(m[ok], -s[ok])),
        "flagged": float(f.mean()),
    }


def rank01(x):
    """Ranks scaled to [0, 1] (ties averaged); NaN stays NaN."""
    from scipy.stats import rankdata

    out = np.full(len(x), np.nan)
    ok = np.isfinite(x)
    out[ok] = (rankdata(x[ok]) - 1) / max(ok.sum() - 1, 1)
    return out


# ----------------------------------------------------------------------------- methods
def method_table(hist_logits, labels_run, aux, *, neighbours=None, cl=None, temperature=1.0):
    """All methods from one recorded run. Returns {method: (score, flagged, seconds, threshold)}.

    ``hist_logits`` (T, N, C) with C = K+1 when ``aux`` is not empty; ``labels_run`` holds the
    pseudo-class K at ``aux``. ``neighbours`` (N, k) enables the kNN candidates; ``cl`` is a
    (score, flagged, seconds) triple from confident learning.
    """
    out = {}
    t0 = time.time()
    h = hist_logits if temperature == 1.0 else hist_logits / temperature
    rec = SEIRecorder.from_history(h, labels_run, from_logits=True)
    t_rec = time.time() - t0
    aux = np.asarray(aux, dtype=np.int64)
    has_aux = aux.size > 0

    def add(name, score_name, thr, score=None, extra=0.0):
        t = time.time()
        s = rec.scores(score_name) if score is None else score
        if isinstance(thr, str) and thr.startswith("aux") and not has_aux:
            return
        if isinstance(thr, str) and thr.startswith("aux_q"):
            th = compute_threshold(s, "aux_quantile", aux_indices=aux, quantile=0.99)
        elif isinstance(thr, str):
            th = compute_threshold(s, thr, aux_indices=aux if has_aux else None)
        else:
            th = float(thr)
        out[name] = (s, sei.flag_issues(s, th), t_rec + extra + time.time() - t, th)

    for thr in ("aux_mean", "aux_quantile", "zero", "gmm"):
        add(f"SEI ({thr})", "sei", thr)
    add("SEI mean (zero)", "sei_mean", "zero")
    add("EI (aux_mean)", "ei", "aux_mean")
    add("EI (gmm)", "ei", "gmm")
    add("SE@T (aux_mean)", "se_last", "aux_mean")
    add("SE@T (zero)", "se_last", "zero")
    add("SE@T/2 (aux_mean)", "se_mid", "aux_mean")
    add("SE@T/2 (zero)", "se_mid", "zero")
    add("AUM (aux 99%)", "aum", "aux_quantile")
    add("AUM (zero)", "aum", "zero")
    add("mistakenness (0.5)", "mistakenness", 0.5)
    add("small-loss GMM", "loss", "gmm")
    # candidates for a better default
    add("AUM-prob (zero)", "aum_prob", "zero")
    add("AUM-prob (aux 99%)", "aum_prob", "aux_quantile")
    add("signed confidence (zero)", "signed_confidence", "zero")
    add("agreement (0.5)", "agreement", 0.5)
    if cl is not None:
        out["confident learning"] = (*cl, None)
    if neighbours is not None:
        t = time.time()
        lab = np.asarray(labels_run)
        q = knn_label_distribution(neighbours, lab, hist_logits.shape[2])
        km = margin(q, lab)
        t_knn = time.time() - t
        out["kNN label margin (zero)"] = (km, km < 0, t_knn, 0.0)
        ap = rec.scores("aum_prob")
        fused = 0.5 * (ap + km)
        out["AUM-prob + kNN margin (zero)"] = (fused, fused < 0, t_rec + t_knn, 0.0)
        sc = rec.scores("signed_confidence")
        fused2 = 0.5 * (sc + km)
        out["signed conf. + kNN margin (zero)"] = (fused2, fused2 < 0, t_rec + t_knn, 0.0)
        # product of experts: the model's epoch-averaged log-probabilities plus the log of the neighbours'
        # label distribution (Laplace-smoothed: (count + 1) / (k + C)); score = margin of the sum at the
        # given label. Zero = the two sources of evidence together favour another class.
        t = time.time()
        C = hist_logits.shape[2]
        logp = np.zeros((hist_logits.shape[1], C))
        for tt in range(h.shape[0]):
            z = np.asarray(h[tt], dtype=np.float64)
            z = z - z.max(1, keepdims=True)
            logp += z - np.log(np.exp(z).sum(1, keepdims=True))
        logp /= h.shape[0]
        kq = neighbours.shape[1]
        poe = margin(logp + np.log((q * kq + 1.0) / (kq + C)), lab)
        t_poe = time.time() - t
        out["PoE: log-probs + kNN (zero)"] = (poe, poe < 0, t_rec + t_knn + t_poe, 0.0)
        th = compute_threshold(poe, "aux_quantile", aux_indices=aux, quantile=0.99) if has_aux else 0.0
        out["PoE: log-probs + kNN (aux 99%)"] = (poe, sei.flag_issues(poe, th), t_rec + t_knn + t_poe, th)
        aum = rec.scores("aum")
        rf = 0.5 * (rank01(aum) + rank01(km))
        th = compute_threshold(rf, "aux_quantile", aux_indices=aux, quantile=0.99) if has_aux else \
            compute_threshold(rf, "gmm")
        out["rank fusion AUM + kNN (aux 99%)"] = (rf, sei.flag_issues(rf, th), t_rec + t_knn, th)
    return out, rec


# ----------------------------------------------------------------------------- caching helpers
def _cache_path(key, ext):
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE / f"{key}.{ext}"


def cached_run(key, fn):
    """Run ``fn() -> dict(train, eval, acc, seconds, ...)`` once; arrays kept as .npy in the cache."""
    meta_p = _cache_path(key, "json")
    if meta_p.exists():
        meta = json.loads(meta_p.read_text())
        out = dict(meta)
        for name in meta.get("_arrays", []):
            out[name] = np.load(_cache_path(f"{key}.{name}", "npy"), mmap_mode="r")
        return out
    res = fn()
    arrays = [k for k, v in res.items() if isinstance(v, np.ndarray)]
    for name in arrays:
        np.save(_cache_path(f"{key}.{name}", "npy"), res[name])
    meta = {k: v for k, v in res.items() if k not in arrays and v is not None}
    meta["_arrays"] = arrays
    meta_p.write_text(json.dumps(meta))
    return cached_run(key, lambda: None)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


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
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(labels), K))
    for f, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)):
        m = make_model(f)
        train_record(m, inputs[tr], labels[tr], seed=seed + f, images=images, **train_kw)
        probs[te] = softmax(predict(m, inputs[te], images=images))
    return probs


def confident_learning(key, make_model, inputs, labels, **kw):
    """cleanlab.filter.find_label_issues on 5-fold cross-validated probabilities (cached)."""
    def fn():
        t = time.time()
        log(f"confident learning: {key}")
        probs = _cv_probs(make_model, inputs, labels, **kw)
        return {"probs": probs, "seconds": time.time() - t}

    r = cached_run(f"cl_{key}", fn)
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    t = time.time()
    probs = np.asarray(r["probs"])
    mask = find_label_issues(np.asarray(labels), probs)
    score = get_label_quality_scores(np.asarray(labels), probs)
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


def score_run(run, is_mis, *, neighbours=None, cl=None, hist="train", temperature=1.0, epochs=None, valid=None):
    """Metrics of every method on one recorded run; evaluation excludes auxiliary samples."""
    h = np.asarray(run[hist])
    if epochs is not None:
        h = h[:epochs]
    lab = np.asarray(run["labels_run"])
    aux = np.asarray(run["aux"])
    if valid is None:
        valid = np.ones(len(lab), bool)
        valid[aux] = False
    meth, rec = method_table(h, lab, aux, neighbours=neighbours, cl=cl, temperature=temperature)
    res = {}
    for name, (s, f, sec, _th) in meth.items():
        res[name] = {**metrics(np.asarray(s, float), np.asarray(f, bool), is_mis, valid), "seconds": sec}
    return res, meth, rec


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


# ----------------------------------------------------------------------------- aggregation / tables
PEERS = ["SEI (aux_mean)", "SEI (aux_quantile)", "SEI (zero)", "SEI (gmm)", "SEI mean (zero)", "EI (aux_mean)",
         "EI (gmm)", "SE@T (aux_mean)", "SE@T (zero)", "SE@T/2 (aux_mean)", "SE@T/2 (zero)", "AUM (aux 99%)",
         "AUM (zero)", "mistakenness (0.5)", "small-loss GMM", "confident learning"]
CANDIDATES = ["AUM-prob (zero)", "AUM-prob (aux 99%)", "signed confidence (zero)", "agreement (0.5)",
              "kNN label margin (zero)", "AUM-prob + kNN margin (zero)", "signed conf. + kNN margin (zero)",
              "rank fusion AUM + kNN (aux 99%)", "PoE: log-probs + kNN (zero)", "PoE: log-probs + kNN (aux 99%)"]
#: Selection protocol for the better default (fixed before looking at the other sets):
SELECT_ON = ("a", "random1", 0)
METRICS = ("precision", "recall", "f1", "auroc", "auprc")


def _agg(per_seed, method, metric):
    vals = [r[method][metric] for r in per_seed if method in r]
    if not vals:
        return None
    return float(np.mean(vals)), float(np.std(vals)), len(vals)


def _fmt(a, pct=True):
    if a is None:
        return "–"
    m, s, n = a
    f = 100.0 if pct else 1.0
    return f"{m * f:.1f} ± {s * f:.1f}" if n > 1 else f"{m * f:.1f}"


def full_table(per_seed, methods, train_seconds=None):
    rows = ["| method | precision | recall | F1 | AUROC | AUPRC | flagged % | score time (s) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in methods:
        if not any(m in r for r in per_seed):
            continue
        cells = [_fmt(_agg(per_seed, m, k)) for k in METRICS]
        cells.append(_fmt(_agg(per_seed, m, "flagged")))
        t = _agg(per_seed, m, "seconds")
        cells.append(f"{t[0]:.2f}" if t else "–")
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    if train_seconds:
        rows.append(f"\nTraining (shared by every method except CL, whose time includes its own 5-fold training): "
                    f"{np.mean(train_seconds):.0f} s per run.")
    return "\n".join(rows)


def headline_table(results, regime, methods):
    sets = [s for s in CIFAR_SETS if s in results.get(regime, {})]
    head = "| method | " + " | ".join(f"{s} AUROC | {s} F1" for s in sets) + " |"
    rows = [head, "| --- |" + " --- | --- |" * len(sets)]
    for m in methods:
        cells = []
        for s in sets:
            per = list(results[regime][s].values())
            cells += [_fmt(_agg(per, m, "auroc")), _fmt(_agg(per, m, "f1"))]
        if all(c == "–" for c in cells):
            continue
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def best_peer(per_seed, metric, exclude=None):
    best = None
    for m in PEERS:
        if m == exclude:
            continue
        a = _agg(per_seed, m, metric)
        if a and (best is None or a[0] > best[1][0]):
            best = (m, a)
    return best


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
            two[m] = {k: v for k, v in metrics(s, flagged, is_mis, allv).items() if k in ("auroc", "f1", "precision", "recall")}
        out["two_run"][f"{tag}/one run (non-aux 45,455)"] = _pick(res1, meths, ("auroc", "f1", "precision", "recall"))
        out["two_run"][f"{tag}/two runs (all 50,000)"] = two
    return out


# ----------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def per_epoch_curves(hist_logits, labels_run):
    """(T, N) signed entropy and (T, N) probability margin per epoch."""
    T, N, _ = hist_logits.shape
    se = np.empty((T, N), np.float32)
    mg = np.empty((T, N), np.float32)
    for t in range(T):
        p = softmax(hist_logits[t])
        h = -(p * np.log(p + 1e-8)).sum(1)
        m = margin(p, labels_run)
        se[t] = np.where(m >= 0, h, -h)
        mg[t] = m
    return se, mg


def plot_histograms(keep, regime, methods, path):
    plt = _plt()
    sets = [s for s in CIFAR_SETS if s in keep]
    fig, axes = plt.subplots(len(sets), len(methods), figsize=(3.6 * len(methods), 2.6 * len(sets)), squeeze=False)
    for i, tag in enumerate(sets):
        run, meth, is_mis = keep[tag]
        valid = np.ones(len(is_mis), bool)
        valid[np.asarray(run["aux"])] = False
        for j, m in enumerate(methods):
            ax = axes[i, j]
            if m not in meth:
                ax.axis("off")
                continue
            s, _, _, th = meth[m]
            s = np.asarray(s, float)
            ok = valid & np.isfinite(s)
            bins = np.linspace(np.nanpercentile(s[ok], 0.5), np.nanpercentile(s[ok], 99.5), 60)
            ax.hist(s[ok & ~is_mis], bins=bins, alpha=0.6, density=True, label="clean")
            ax.hist(s[ok & is_mis], bins=bins, alpha=0.6, density=True, label="mislabeled")
            if th is not None and np.isfinite(th):
                ax.axvline(th, color="k", ls="--", lw=1, label="cutoff")
            ax.set_title(f"{tag}: {m}", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.suptitle(f"Regime {regime}: scores of clean vs mislabeled samples (seed 0, lower = more suspicious)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_trajectories(keep, regime, path):
    plt = _plt()
    sets = [s for s in CIFAR_SETS if s in keep]
    fig, axes = plt.subplots(2, len(sets), figsize=(4.2 * len(sets), 6), squeeze=False)
    for j, tag in enumerate(sets):
        run, _, is_mis = keep[tag]
        lab = np.asarray(run["labels_run"])
        h = np.asarray(run["train"])
        se, mg = per_epoch_curves(h, lab)
        aligned = mg >= 0
        aux = np.zeros(len(lab), bool)
        aux[np.asarray(run["aux"])] = True
        clean = ~is_mis & ~aux
        q = max(1, len(h) // 4)
        groups = {
            "easy clean": clean & aligned.all(0),
            "hard clean": clean & (~aligned[:q]).mean(0).astype(bool) & ((~aligned[:q]).mean(0) > 0.5) & aligned[-1],
            "mislabeled": is_mis & ~aux,
            "auxiliary": aux,
        }
        x = np.arange(1, len(h) + 1)
        for r, (curve, name) in enumerate(((se, "signed entropy"), (mg, "p_y - max other p"))):
            ax = axes[r, j]
            for g, mask in groups.items():
                if mask.sum() == 0:
                    continue
                c = curve[:, mask]
                ax.plot(x, np.median(c, 1), label=f"{g} (n={mask.sum()})")
                ax.fill_between(x, np.percentile(c, 25, 1), np.percentile(c, 75, 1), alpha=0.2)
            ax.axhline(0, color="k", lw=0.5)
            ax.set_title(f"{tag}: per-epoch {name}", fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.tick_params(labelsize=7)
            if r == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.suptitle(f"Regime {regime}: training dynamics (median, 25-75% band), seed 0", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(results, methods, path):
    plt = _plt()
    regs = [r for r in ("a", "b") if r in results]
    fig, axes = plt.subplots(len(regs), 2, figsize=(13, 3.6 * len(regs)), squeeze=False)
    for i, reg in enumerate(regs):
        sets = [s for s in CIFAR_SETS if results[reg].get(s)]
        for j, metric in enumerate(("auroc", "f1")):
            ax = axes[i, j]
            w = 0.8 / max(len(methods), 1)
            for k, m in enumerate(methods):
                vals, errs = [], []
                for s in sets:
                    a = _agg(list(results[reg][s].values()), m, metric)
                    vals.append(a[0] if a else np.nan)
                    errs.append(a[1] if a else 0)
                ax.bar(np.arange(len(sets)) + k * w, vals, w, yerr=errs, label=m)
            ax.set_xticks(np.arange(len(sets)) + 0.4 - w / 2)
            ax.set_xticklabels(sets)
            ax.set_ylim(0.3 if metric == "f1" else 0.5, 1.0)
            ax.set_title(f"regime {reg}: {metric.upper()}", fontsize=9)
            if i == 0 and j == 1:
                ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_epochs(abl, path):
    plt = _plt()
    ep = abl["epochs"]
    keys = sorted({k.rsplit("/", 1)[0] for k in ep})
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for j, rk in enumerate(keys):
        ts = sorted(int(k.rsplit("/", 1)[1]) for k in ep if k.rsplit("/", 1)[0] == rk)
        ax = axes[0, j]
        for m in ep[f"{rk}/{ts[0]}"]:
            ax.plot(ts, [ep[f"{rk}/{t}"][m]["auroc"] for t in ts], marker="o", ms=3, label=m)
        ax.set_title(f"{rk}: AUROC vs epochs integrated", fontsize=9)
        ax.set_xlabel("epochs", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- report
HEADLINE = ["SEI (aux_mean)", "SEI (zero)", "EI (aux_mean)", "SE@T (aux_mean)", "SE@T/2 (aux_mean)", "AUM (aux 99%)",
            "mistakenness (0.5)", "small-loss GMM", "confident learning", "AUM-prob (zero)", "signed confidence (zero)",
            "kNN label margin (zero)", "AUM-prob + kNN margin (zero)", "rank fusion AUM + kNN (aux 99%)",
            "PoE: log-probs + kNN (aux 99%)"]
RECORDER_ONLY = ["AUM (aux 99%)", "AUM-prob (zero)", "AUM-prob (aux 99%)", "signed confidence (zero)", "agreement (0.5)"]


def select_default(results, candidates):
    reg, tag, seed = SELECT_ON
    r = results[reg][tag][seed]
    return max((m for m in candidates if m in r), key=lambda m: r[m]["auroc"] + r[m]["f1"])


def _mean(results, reg, tag, m, k):
    a = _agg(list(results[reg][tag].values()), m, k)
    return a[0] if a else np.nan


def beats_table(results, method):
    rows = ["| regime | set | AUROC: this | best peer (AUROC) | F1: this | best peer (F1) | beats all peers? |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    allwin = True
    for reg in ("a", "b"):
        for tag in CIFAR_SETS:
            per = list(results.get(reg, {}).get(tag, {}).values())
            if not per or not any(method in r for r in per):
                continue
            ba, bf = best_peer(per, "auroc", method), best_peer(per, "f1", method)
            ta, tf = _agg(per, method, "auroc"), _agg(per, method, "f1")
            win = ta[0] > ba[1][0] and tf[0] > bf[1][0]
            allwin &= win
            rows.append(f"| {reg} | {tag} | {_fmt(ta)} | {_fmt(ba[1])} ({ba[0]}) | {_fmt(tf)} | {_fmt(bf[1])} ({bf[0]}) | "
                        f"{'yes' if win else 'no'} |")
    return "\n".join(rows), allwin


def claims_table(results, syn):
    rows = ["| paper claim | regime | numbers (F1 / AUROC, %, CIFAR-10N aggre, random1, worse) | verdict |",
            "| --- | --- | --- | --- |"]

    def nums(reg, m, k="f1"):
        return [_mean(results, reg, t, m, k) for t in CIFAR_SETS if results.get(reg, {}).get(t)]

    def f(v):
        return "/".join(f"{100 * x:.1f}" for x in v)

    for reg in ("a", "b"):
        if not results.get(reg):
            continue
        sei_f, sei_a = nums(reg, "SEI (aux_mean)"), nums(reg, "SEI (aux_mean)", "auroc")
        aum_f, aum_a = nums(reg, "AUM (aux 99%)"), nums(reg, "AUM (aux 99%)", "auroc")
        cl_f, cl_a = nums(reg, "confident learning"), nums(reg, "confident learning", "auroc")
        ok = all(s > a for s, a in zip(sei_f, aum_f)) and all(s > c for s, c in zip(sei_f, cl_f) if np.isfinite(c))
        rows.append(f"| SEI (aux-mean cutoff) beats AUM and CL in F1 | {reg} | SEI {f(sei_f)} / {f(sei_a)}; "
                    f"AUM {f(aum_f)} / {f(aum_a)}; CL {f(cl_f)} / {f(cl_a)} | {'holds' if ok else 'does not hold'} |")
        ei_f = nums(reg, "EI (aux_mean)")
        d = [s - e for s, e in zip(sei_f, ei_f)]
        v = "holds" if all(x >= 0.10 for x in d) else ("direction holds, size does not" if all(x > 0 for x in d) else "does not hold")
        rows.append(f"| sign matters: SEI beats unsigned EI by 10+ F1 | {reg} | SEI {f(sei_f)}; EI {f(ei_f)} "
                    f"(AUROC {f(nums(reg, 'EI (aux_mean)', 'auroc'))}) | {v} |")
        for sl in ("SE@T", "SE@T/2"):
            x_f = nums(reg, f"{sl} (aux_mean)")
            d = [s - e for s, e in zip(sei_f, x_f)]
            v = "holds" if all(x >= 0.08 for x in d) else ("direction holds, size does not" if all(x > 0 for x in d) else "does not hold")
            rows.append(f"| integral matters: SEI beats {sl} by 8-15 F1 | {reg} | SEI {f(sei_f)}; {sl} {f(x_f)} "
                        f"(AUROC {f(nums(reg, f'{sl} (aux_mean)', 'auroc'))}) | {v} |")
        z_f, g_f = nums(reg, "SEI (zero)"), nums(reg, "SEI (gmm)")
        ok = all(s >= max(z, g) for s, z, g in zip(sei_f, z_f, g_f))
        rows.append(f"| auxiliary-mean cutoff is the right cutoff for SEI | {reg} | aux_mean {f(sei_f)}; zero {f(z_f)}; "
                    f"gmm {f(g_f)}; aux 99% {f(nums(reg, 'SEI (aux_quantile)'))} | {'holds' if ok else 'does not hold'} |")
    if syn:
        gaps = {}
        for kind in ("symmetric", "confusion"):
            gaps[kind] = [syn[t]["SEI (aux_mean)"]["f1"] - syn[t]["AUM (aux 99%)"]["f1"] for t in syn if t.startswith(kind)]
        ok = np.mean(gaps["confusion"]) > np.mean(gaps["symmetric"]) and np.mean(gaps["confusion"]) > 0
        rows.append(f"| SEI's lead over AUM is larger under confusion noise | a (synthetic, 0.1-0.5) | F1 gap SEI-AUM: "
                    f"symmetric {f(gaps['symmetric'])}, confusion {f(gaps['confusion'])} | {'holds' if ok else 'does not hold'} |")
    return "\n".join(rows)


def ablation_tables(abl):
    out = []
    for name, title in (("train_vs_eval", "Recording in train mode (mini-batch, before the step) vs an eval pass after each epoch"),
                        ("temperature", "Temperature applied to the recorded logits before the softmax"),
                        ("epochs", "Number of epochs integrated (first t epochs; constant learning rate, so = early stopping at t)"),
                        ("aux_count", "Auxiliary samples: N//(K+1) (paper) vs N//K (authors' code), regime a, seed 0"),
                        ("two_run", "Two-run protocol (disjoint auxiliary sets, scores averaged where not auxiliary), regime a, seed 0")):
        d = abl.get(name, {})
        if not d:
            continue
        meths = list(next(iter(d.values())).keys())
        ks = list(next(iter(next(iter(d.values())).values())).keys())
        out.append(f"\n### {title}\n")
        out.append("| setting | " + " | ".join(f"{m} {k.upper() if k != 'f1' else 'F1'}" for m in meths for k in ks) + " |")
        out.append("| --- |" + " --- |" * (len(meths) * len(ks)))
        for key, v in d.items():
            out.append(f"| {key} | " + " | ".join(f"{100 * v[m][k]:.1f}" if m in v else "–" for m in meths for k in ks) + " |")
    return "\n".join(out)


def synthetic_table(syn, methods):
    rows = ["| noise | " + " | ".join(f"{m} AUROC / F1" for m in methods) + " |", "| --- |" + " --- |" * len(methods)]
    for t, r in syn.items():
        rows.append(f"| {t} | " + " | ".join(f"{100 * r[m]['auroc']:.1f} / {100 * r[m]['f1']:.1f}" if m in r else "–"
                                           for m in methods) + " |")
    return "\n".join(rows)


def write_report(results, syn, abl, default_rec, default_all, keep_a, keep_b):
    from benchmarks.cifar10n import CITATION

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "detection.json").write_text(json.dumps(
        {"results": {r: {t: {str(s): v for s, v in d.items()} for t, d in res.items()} for r, res in results.items()},
         "synthetic": syn, "ablations": abl, "default_recorder_only": default_rec, "default_with_features": default_all,
         "selection": list(SELECT_ON)}, indent=1))
    show = [m for m in HEADLINE if m not in (default_rec, default_all)] + [default_rec, default_all]
    plot_methods = list(dict.fromkeys(["SEI (zero)", "AUM (aux 99%)", "confident learning", "signed confidence (zero)",
                                       default_rec, default_all]))
    plot_bars(results, plot_methods, RESULTS / "detection_bars.png")
    for reg, keep in (("a", keep_a), ("b", keep_b)):
        if keep:
            plot_histograms(keep, reg, list(dict.fromkeys(["SEI (aux_mean)", "AUM (aux 99%)", "signed confidence (zero)",
                                                           default_rec, default_all])),
                            RESULTS / f"detection_hist_{reg}.png")
            plot_trajectories(keep, reg, RESULTS / f"detection_trajectories_{reg}.png")
    if abl.get("epochs"):
        plot_epochs(abl, RESULTS / "detection_epochs.png")

    L = ["# Mislabeled-image detection on CIFAR-10N: benchmark and reproduction report", "",
         "Generated by `nice -n 10 python benchmarks/detection.py --all` (the tables below are rewritten on every run;",
         "training runs are cached under `benchmarks/.cache/detection/`). Numbers are percentages.", "",
         f"Data: {CITATION}", "",
         "## Setup", "",
         f"* **Regime a** (frozen encoder): EfficientNet-Lite0 ImageNet features at 96 px (`benchmarks/cifar10n.py`), centred and reduced to 256-d by PCA (no labels; keeps the CPU budget), a "
         f"prompt-style cosine head (a learnable \"prompt\" vector per class plus one for the auxiliary pseudo-class, CLIP-like "
         f"learnable temperature), Adam lr 1e-3, batch 128, {A_EPOCHS} epochs, all 50,000 training images, "
         f"N//(K+1) = 4,545 auxiliary samples; 3 seeds (seed changes the auxiliary draw, init and batch order).",
         f"* **Regime b** (memorisation): a 3-block CNN (32-64-128 channels, BatchNorm, about 0.3 M parameters) trained "
         f"from scratch on a fixed random subset of {B_SUBSET:,} training images, SGD lr 0.05, momentum 0.9, weight decay 5e-4, "
         f"random horizontal flips, {B_EPOCHS} epochs, 909 auxiliary samples. CPU only: 1 seed for aggre and random1, "
         f"3 seeds for worse where time allowed; CL there uses 5-fold CV with 10 epochs per fold.",
         "* **Regime c** (GPU, full size): not run. No GPU was lent to this session (the device tool reports this task was not "
         "drawn for one). The paper's exact CLIP RN50 run also needs CLIP weights, which need a networked machine.",
         "* Every method is computed from the same recorded dynamics: the logits of every sample in every epoch, recorded "
         "in train mode on each mini-batch before the optimiser step (the authors' protocol), folded through "
         "`sei.SEIRecorder.from_history`. Auxiliary samples are excluded from evaluation. Confident learning = "
         "`cleanlab.filter.find_label_issues` on 5-fold cross-validated probabilities from the same features and head "
         "(ranked by cleanlab's self-confidence for AUROC/AUPRC). The kNN scores use the frozen EfficientNet-Lite0 features "
         "(k = 20 cosine neighbours in the 256-d PCA space) in both regimes.",
         "* Thresholds: `aux_mean` = mean score of the auxiliary samples (the paper), `aux 99%` = 99th percentile of "
         "auxiliary scores (AUM), `zero`, `gmm` = two-component Gaussian mixture on the score, mistakenness 0.5 = the "
         "prediction disagrees with the label.", ""]
    L += ["## Headline", "", "### Regime a: frozen EfficientNet-Lite0 + prompt head (AUROC / F1, mean ± std over 3 seeds)", "",
          headline_table(results, "a", show), ""]
    if results.get("b"):
        L += ["### Regime b: small CNN from scratch, 10,000 images (AUROC / F1)", "",
              headline_table(results, "b", show), ""]
    # winners
    L += ["### Which method wins where", ""]
    for reg in ("a", "b"):
        for tag in CIFAR_SETS:
            per = list(results.get(reg, {}).get(tag, {}).values())
            if not per:
                continue
            allm = {m for r in per for m in r}
            ba = max(allm, key=lambda m: _agg(per, m, "auroc")[0])
            bf = max(allm, key=lambda m: _agg(per, m, "f1")[0])
            bp = best_peer(per, "auroc")
            bpf = best_peer(per, "f1")
            L.append(f"* regime {reg}, {tag}: best AUROC {ba} ({_fmt(_agg(per, ba, 'auroc'))}), best F1 {bf} "
                     f"({_fmt(_agg(per, bf, 'f1'))}); best established method: AUROC {bp[0]} ({_fmt(bp[1])}), "
                     f"F1 {bpf[0]} ({_fmt(bpf[1])}).")
    L += ["", "## A better default", "",
          f"Selection protocol, fixed in the code (`SELECT_ON = {SELECT_ON}`): among the candidates, take the one with the "
          f"highest AUROC + F1 on regime a, `random1`, seed 0 only; then report it everywhere else unchanged. Two selections: "
          f"one among scores the recorder computes from the dynamics alone (usable by `sei_cleanlab.find_label_issues` and "
          f"`sei.train` without extra inputs), one also allowing the features' kNN label distribution.", "",
          f"* recorder-only winner: **{default_rec}**", f"* with features: **{default_all}**", ""]
    for m in (default_rec, default_all):
        tab, win = beats_table(results, m)
        L += [f"### {m} against every established method (SEI variants, EI, SE slices, AUM, mistakenness, small-loss, CL)", "",
              tab, "", f"Beats every peer on AUROC and F1 on every set and regime: **{'yes' if win else 'no'}**.", ""]
    L += ["## Paper claims on this data", "",
          "Verdicts are computed from the tables by fixed rules (all three sets must agree). Note the integral's "
          "AUROC gain is large in regime b (SEI vs SE@T) even where the F1 rule fails; see the headline tables.", "",
          claims_table(results, syn), "",
          "## Reading the results", "",
          "* SEI's ranking is hurt by the entropy magnitude, not helped by it: an easy clean sample (confident, aligned) "
          "gets a *small* positive signed entropy while an uncertain aligned one gets a large one, and a confidently "
          "mislabeled sample gets a value near zero (see `detection_trajectories_*.png`). Scores that keep the sign but "
          "use confidence or margin instead of entropy (signed confidence, AUM, AUM on probabilities) rank better in both "
          "regimes, and flattening the probabilities (temperature > 1 on the recorded logits) raises SEI's AUROC "
          "(temperature table).",
          "* With a frozen encoder (regime a) the prompt head never fits the noisy labels, so one epoch's slice ranks "
          "almost as well as the integral; in the memorising regime (b) single-epoch slices collapse, as the paper says.",
          "* The auxiliary-mean cutoff sits far below the bulk of mislabeled scores and loses recall everywhere; the "
          "zero cutoff (the sign itself), the GMM or AUM's 99th percentile give SEI a higher F1 everywhere except regime b "
          "`aggre` (9 % noise), the one place where the aux-mean cutoff's precision pays off.",
          ""]
    if syn:
        L += ["## Synthetic noise on the clean CIFAR-10 labels (regime a, seed 0)", "",
              "Confusion-calibrated noise draws each flip from the off-diagonal of the CIFAR-10N `random1` human confusion "
              "matrix (rows = true class), i.e. flips go where people confuse classes.", "",
              synthetic_table(syn, ["SEI (aux_mean)", "SEI (zero)", "EI (aux_mean)", "AUM (aux 99%)", "confident learning",
                                    "small-loss GMM", default_rec, default_all]), ""]
    L += ["## Ablations", "", "Values: AUROC and F1 (%), seed 0.", ablation_tables(abl), ""]
    L += ["## Full tables", ""]
    for reg in ("a", "b"):
        for tag in CIFAR_SETS:
            per = list(results.get(reg, {}).get(tag, {}).values())
            if not per:
                continue
            extra = ""
            if reg == "b":
                accs = [r[next(iter(r))].get("final_train_acc") for r in per]
                extra = f" (final train accuracy on the given labels: {', '.join(f'{a:.3f}' for a in accs if a)})"
            L += [f"### regime {reg}, {tag}, {len(per)} seed(s){extra}", "",
                  full_table(per, PEERS + [m for m in CANDIDATES if m not in PEERS],
                             [r[next(iter(r))]["train_seconds"] for r in per]), ""]
    L += ["## Plots", "",
          "* `detection_bars.png`: AUROC and F1 per method and set, both regimes.",
          "* `detection_hist_a.png`, `detection_hist_b.png`: score histograms, clean vs mislabeled, with the cutoff.",
          "* `detection_trajectories_a.png`, `detection_trajectories_b.png`: per-epoch signed entropy and probability "
          "margin of easy clean, hard clean, mislabeled and auxiliary samples (as in the paper's figures).",
          "* `detection_epochs.png`: AUROC against the number of epochs integrated.", ""]
    (RESULTS / "detection.md").write_text("\n".join(L))
    log(f"wrote {RESULTS / 'detection.md'}")


def main(argv=None):
    ap = argparse.ArgumentParser(description="Mislabeled-image detection benchmark (CIFAR-10N + synthetic noise).")
    ap.add_argument("--all", action="store_true", help="every stage below, then the report")
    ap.add_argument("--regime", choices=["a", "b"], action="append", help="run (or load) this regime")
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--train-b", action="store_true", help="only train the regime-b runs (slow, CPU)")
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args(argv)
    if a.train_b:
        train_stage_b(tuple(range(a.seeds)))
        return
    regimes = ["a", "b"] if a.all else (a.regime or ["a"])
    if a.all and not _cache_path(f"b_worse_s0_e{B_EPOCHS}_eval", "json").exists():
        train_stage_b(tuple(range(a.seeds)))
    results, keep_a, keep_b = {}, {}, {}
    if "a" in regimes:
        results["a"], keep_a = regime_a(tuple(range(a.seeds)))
    if "b" in regimes:
        results["b"], keep_b = regime_b(tuple(range(a.seeds)))
    default_rec = select_default(results, RECORDER_ONLY)
    default_all = select_default(results, CANDIDATES)
    log(f"selected: recorder-only {default_rec}; with features {default_all}")
    syn = synthetic() if (a.all or a.synthetic) else {}
    abl = ablations(keep_a, keep_b, default_rec) if (a.all or a.ablations) else {}
    write_report(results, syn, abl, default_rec, default_all, keep_a, keep_b)


if __name__ == "__main__":
    main()
