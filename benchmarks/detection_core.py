"""Detection benchmark, part 1: the benchmark-local training loop, models, kNN and the run cache.

Benchmark-local on purpose (not ``sei.train``): the detection tables need the raw (T, N, C)
logits of every sample in every epoch, recorded in train mode on each mini-batch before the
optimiser step, from two models the engine does not train: regime a's prompt head on the
cached 256-d PCA features (same idea as the engine's ``head="prompt"``, but the tables were
produced with this loop and its cached runs), and regime b's small CNN trained from scratch
on 32 px images (not an encoder the engine fine-tunes). The kNN graph here (PCA + cosine,
chunked) is kept for the same reason: it defines the cached ``knn20_*`` neighbour files.
Every score is still computed by the library (:class:`sei.SEIRecorder`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
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


def rank01(x):
    """Ranks scaled to [0, 1] (ties averaged); NaN stays NaN."""
    from scipy.stats import rankdata

    out = np.full(len(x), np.nan)
    ok = np.isfinite(x)
    out[ok] = (rankdata(x[ok]) - 1) / max(ok.sum() - 1, 1)
    return out


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
