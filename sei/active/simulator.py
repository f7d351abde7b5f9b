"""Active label correction simulator: an oracle, rounds of train -> select -> correct.

Protocol (Algorithm 1 of the ALC paper, with batches of ``batch_size`` under ``budget``):
round 0 trains on the noisy labels; each round selects a batch, the :class:`Oracle`
returns the clean labels for it, and the classifier is retrained from scratch (robust
weights reset to uniform). Per round we record test accuracy, labels queried so far,
selection precision (share of the batch, and of all queries, that was mislabeled) and the
number of mislabeled samples left.

The classifier is a softmax-regression head trained with mini-batch SGD on cached
embeddings (``trainer="linear"``, numpy only, fast on a CPU); it honours per-sample
weights (:class:`~sei.active.weights.RobustWeights`), a forward-corrected loss with a
transition matrix (DALC, applied to not-yet-queried samples only, since queried labels are
clean) and feeds an :class:`sei.SEIRecorder` every epoch. Pass ``trainer=callable`` to use
another engine (e.g. a wrapper around ``sei.train(..., mode="embeddings")``).

DALC's transition matrix is estimated from the queried samples (clean vs original noisy
label, add-one smoothing); round 0 has none and trains with plain cross-entropy.
"""

from __future__ import annotations

import numpy as np

from .selectors import SelectionContext, make_selector
from .weights import RobustWeights

__all__ = ["Oracle", "train_linear", "sei_train_trainer", "estimate_transition_matrix", "simulate", "plot_curves", "summarize"]


class Oracle:
    """Returns clean labels for queried indices and counts the queries."""

    def __init__(self, clean_labels):
        self.clean_labels = np.asarray(clean_labels, dtype=np.int64)
        self.num_queries = 0

    def query(self, indices) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        self.num_queries += len(indices)
        return self.clean_labels[indices]


def _softmax(z):
    z = z - z.max(1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(1, keepdims=True)
    return z


class LinearModel:
    def __init__(self, w, b, mean, std):
        self.w, self.b, self.mean, self.std = w, b, mean, std

    def predict_proba(self, x):
        return _softmax(((np.asarray(x, np.float32) - self.mean) / self.std) @ self.w + self.b)


def train_linear(features, labels, num_classes, *, epochs=20, lr=0.1, batch_size=256, weight_decay=1e-4,
                 momentum=0.9, sample_weights=None, transition_matrix=None, correct_mask=None,
                 recorder=None, seed=0):
    """Softmax regression with SGD; returns ``(model, probs (N,K), losses (N,))`` of the last epoch.

    ``sample_weights``: None, (N,) array, or an object with ``.weights`` and ``.update(losses)``.
    ``transition_matrix`` (K, K): forward-corrected CE ``-log (p T)_y`` on ``correct_mask`` samples.
    """
    x = np.asarray(features, np.float32)
    y = np.asarray(labels, np.int64)
    n, d = x.shape
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(d, num_classes)) * 0.01).astype(np.float32)
    b = np.zeros(num_classes, np.float32)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    t = None if transition_matrix is None else np.asarray(transition_matrix, np.float32)
    cm = np.ones(n, bool) if correct_mask is None else np.asarray(correct_mask, bool)
    rows = np.arange(n)
    probs = losses = None
    for epoch in range(epochs):
        sw = sample_weights.weights if hasattr(sample_weights, "weights") else sample_weights
        sw = np.ones(n, np.float32) if sw is None else np.asarray(sw, np.float32)
        lr_e = lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs))
        perm = rng.permutation(n)
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            xb, yb = x[idx], y[idx]
            p = _softmax(xb @ w + b)
            g = p.copy()
            g[np.arange(len(idx)), yb] -= 1.0
            if t is not None:
                c = cm[idx]
                if c.any():
                    pc = p[c]
                    q = pc @ t
                    dq = np.zeros_like(q)
                    dq[np.arange(c.sum()), yb[c]] = -1.0 / np.maximum(q[np.arange(c.sum()), yb[c]], 1e-12)
                    dp = dq @ t.T
                    g[c] = pc * (dp - (dp * pc).sum(1, keepdims=True))
            g *= (sw[idx] / len(idx))[:, None]
            gw = xb.T @ g + weight_decay * w
            gb = g.sum(0)
            vw = momentum * vw - lr_e * gw
            vb = momentum * vb - lr_e * gb
            w += vw
            b += vb
        probs = _softmax(x @ w + b)
        if t is not None:
            pe = np.where(cm[:, None], probs @ t, probs)
        else:
            pe = probs
        losses = -np.log(np.clip(pe[rows, y], 1e-12, 1.0)).astype(np.float64)
        if recorder is not None:
            recorder.update(rows, probs, y)
            recorder.end_epoch()
        if hasattr(sample_weights, "update"):
            sample_weights.update(losses)
    return LinearModel(w, b, mean, std), probs, losses


def sei_train_trainer(**train_kwargs):
    """A ``trainer=`` for :func:`simulate` that runs ``sei.train(mode="embeddings")``.

    Robust weights go through ``sample_weights=`` and DALC's matrix through
    ``transition_matrix=`` (applied to all samples: the engine has no per-sample mask).
    ``sei.train`` exposes no predictor for held-out data, so test accuracy is NaN; use the
    built-in ``"linear"`` trainer for accuracy curves. Imports torch on first call.
    """
    def _train(features, labels, num_classes, *, epochs, sample_weights=None, transition_matrix=None,
               correct_mask=None, recorder=None, seed=0):
        import sei

        kw = dict(mode="embeddings", aux_class=False, progress=False, threshold="zero")
        kw.update(train_kwargs)
        res = sei.train(features, labels, class_names=[f"class {i}" for i in range(num_classes)], epochs=epochs,
                        sample_weights=sample_weights, transition_matrix=transition_matrix, seed=seed, **kw)
        probs = np.asarray(res.pred_probs, dtype=np.float64)
        losses = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))
        return None, probs, losses, res.recorder

    return _train


def estimate_transition_matrix(noisy_labels, clean_labels, queried, num_classes, *, smoothing=1.0):
    """Row-stochastic T[i, j] = P(noisy = j | clean = i) from the queried samples."""
    c = np.full((num_classes, num_classes), float(smoothing))
    np.add.at(c, (clean_labels[queried], noisy_labels[queried]), 1.0)
    return c / c.sum(1, keepdims=True)


def simulate(features, noisy_labels, clean_labels, selector, *, budget, batch_size, num_classes=None,
             test_features=None, test_labels=None, graph=None, epochs=20, seed=0, trainer="linear",
             train_options=None, robust_options=None, score_name="sei"):
    """Run one active-label-correction episode; returns a dict of per-round arrays.

    Parameters
    ----------
    features : (N, D) embeddings;  noisy_labels, clean_labels : (N,) ints
    selector : Selector or method name (see :func:`sei.active.make_selector`)
    budget, batch_size : total labels to query (G) and per round (Q)
    graph : KNNGraph, needed by propagation selectors
    trainer : "linear" or callable ``(features, labels, num_classes, sample_weights=, transition_matrix=,
        correct_mask=, recorder=, seed=, epochs=) -> (model with predict_proba, probs, losses)``

    Returns
    -------
    dict with ``labels_queried``, ``test_accuracy``, ``batch_precision``, ``precision``
    (cumulative), ``remaining_mislabeled``, ``train_label_accuracy`` (one entry per round) and
    ``picks`` (all queried indices in order).
    """
    from ..recorder import SEIRecorder

    sel = make_selector(selector) if isinstance(selector, str) else selector
    noisy = np.asarray(noisy_labels, np.int64)
    clean = np.asarray(clean_labels, np.int64)
    n = len(noisy)
    k = int(num_classes or max(noisy.max(), clean.max()) + 1)
    train_fn = train_linear if trainer == "linear" else trainer
    opts = dict(train_options or {})
    oracle = Oracle(clean)
    labels = noisy.copy()
    queried = np.zeros(n, bool)
    out = {k_: [] for k_ in ("labels_queried", "test_accuracy", "batch_precision", "precision",
                             "remaining_mislabeled", "train_label_accuracy")}
    picks_all = []
    hits = 0
    rnd = 0
    while True:
        weights = RobustWeights(n, **(robust_options or {})) if sel.robust_training else None
        tmat = None
        if sel.uses_transition_matrix and queried.any():
            tmat = estimate_transition_matrix(noisy, clean, queried, k)
        rec = SEIRecorder(n, k)
        trained = train_fn(features, labels, k, epochs=epochs, sample_weights=weights,
                           transition_matrix=tmat, correct_mask=~queried, recorder=rec,
                           seed=seed * 1000 + rnd, **opts)
        model, probs = trained[0], trained[1]
        if len(trained) > 3 and trained[3] is not None:
            rec = trained[3]  # the engine kept its own recorder
        acc = np.nan
        if test_features is not None and hasattr(model, "predict_proba"):
            acc = float(np.mean(model.predict_proba(test_features).argmax(1) == np.asarray(test_labels)))
        out["labels_queried"].append(int(queried.sum()))
        out["test_accuracy"].append(acc)
        out["remaining_mislabeled"].append(int(np.sum(labels != clean)))
        out["train_label_accuracy"].append(float(np.mean(probs.argmax(1) == clean)))
        out["precision"].append(hits / max(queried.sum(), 1) if queried.any() else np.nan)
        if queried.sum() >= budget or queried.all():
            break
        ctx = SelectionContext(labels, probs, exclude=queried,
                               alpha=None if weights is None else weights.alpha,
                               sei_scores=rec.scores(score_name) if sel.needs_sei else None,
                               graph=graph, seed=seed * 1000 + rnd)
        picks = sel.select(ctx, min(batch_size, budget - int(queried.sum())))
        wrong = labels[picks] != clean[picks]
        out["batch_precision"].append(float(wrong.mean()) if len(picks) else np.nan)
        hits += int(wrong.sum())
        labels[picks] = oracle.query(picks)
        queried[picks] = True
        picks_all.append(picks)
        rnd += 1
    res = {k_: np.asarray(v) for k_, v in out.items()}
    res["picks"] = np.concatenate(picks_all) if picks_all else np.zeros(0, np.int64)
    res["selector"] = sel.name
    return res


def summarize(runs, *, target_accuracy=None):
    """Mean/std over seeds of a list of :func:`simulate` results of one selector."""
    acc = np.array([r["test_accuracy"] for r in runs])
    prec = np.array([r["batch_precision"] for r in runs])
    out = {"labels_queried": runs[0]["labels_queried"], "acc_mean": acc.mean(0), "acc_std": acc.std(0),
           "precision_mean": float(np.nanmean(prec)), "remaining_mean": np.mean([r["remaining_mislabeled"] for r in runs], 0)}
    if target_accuracy is not None:
        lq = runs[0]["labels_queried"]
        hit = np.flatnonzero(out["acc_mean"] >= target_accuracy)
        out["labels_to_target"] = int(lq[hit[0]]) if len(hit) else None
    return out


def plot_curves(results, path, *, metric="test_accuracy", title=None, ylabel=None):
    """Mean curve with a ±1 std band per selector; ``results`` maps name -> list of runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, runs in results.items():
        ys = np.array([r[metric] for r in runs], dtype=float)
        x = runs[0]["labels_queried"][: ys.shape[1]] if metric != "batch_precision" else \
            runs[0]["labels_queried"][1: ys.shape[1] + 1]
        m, s = np.nanmean(ys, 0), np.nanstd(ys, 0)
        ax.plot(x, m, label=name, lw=1.6)
        ax.fill_between(x, m - s, m + s, alpha=0.2)
    ax.set_xlabel("labels queried")
    ax.set_ylabel(ylabel or metric)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
