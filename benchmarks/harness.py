"""What every benchmark shares besides the library: the confident-learning baseline, plotting and
the small CLI bits (a time guard, writing a table and its json).

The library's parts are used as they are: :func:`sei.metrics.detection_metrics` turns a flag mask
and a score (lower = more likely mislabeled) into precision / recall / F1 / AUROC / AUPRC against
the truth (``valid=`` leaves out e.g. a run's auxiliary samples), and
:func:`sei.cross_validation.kfold_probs` gives K-fold out-of-sample probabilities.

* :func:`confident_learning`: the confident-learning baseline on out-of-sample probabilities,
  cleanlab's ``find_label_issues`` (prune_by_noise_rate) and self-confidence, through cleanlab
  when it is installed, else through the numpy port :mod:`benchmarks.confident_learning`
  (identical masks; the GPU machine has no cleanlab).
* The peers a user would run instead of us (issue #22), each as its authors or documentation
  compute it, on the same features and the same training run: :func:`deep_knn`, :func:`simifeat`
  (with :func:`hoc_transition`), :func:`cleanlab_ensemble`, :func:`wrong_events`,
  :func:`fiftyone_mistakenness`, :func:`datalab_label_issues` (:mod:`benchmarks.peers` runs them on
  every cell). Every peer returns ``(score, flags)``, score lower = more suspect.
* :func:`plt`, :class:`TimeGuard`, :func:`write_table`.

Loaders stay where they were: :mod:`benchmarks.cifar10n` (CIFAR-10N images, labels, cached
embeddings) and :mod:`benchmarks.device_pack` (the GPU machine's pack).

Heavy imports (sklearn, cleanlab, matplotlib) are made inside the functions, so importing this
module costs nothing and works on the GPU machine.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

__all__ = ["DEEP_KNN_GRID", "TimeGuard", "cleanlab_ensemble", "confident_learning", "datalab_label_issues", "deep_knn",
           "fiftyone_mistakenness", "hoc_transition", "plt", "simifeat", "simifeat_neighbours", "wrong_events", "write_table"]


# ----------------------------------------------------------------------------- confident learning
def confident_learning(labels, pred_probs, *, backend="auto"):
    """``(quality, mask)``: cleanlab's self-confidence (lower = worse) and ``find_label_issues`` mask
    (prune_by_noise_rate) of out-of-sample ``pred_probs``. ``backend``: ``"cleanlab"``, ``"numpy"``
    (:mod:`benchmarks.confident_learning`) or ``"auto"`` (cleanlab when installed)."""
    labels, pred_probs = np.asarray(labels), np.asarray(pred_probs)
    if backend == "auto":
        try:
            import cleanlab  # noqa: F401  (only whether it is installed)

            backend = "cleanlab"
        except ImportError:
            backend = "numpy"
    if backend == "cleanlab":
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        return get_label_quality_scores(labels, pred_probs), find_label_issues(labels, pred_probs)
    from benchmarks import confident_learning as cl

    return cl.self_confidence(labels, pred_probs), cl.find_label_issues(labels, pred_probs)


# ----------------------------------------------------------------------------- peers (issue #22)
#: Deep k-NN's k, chosen as its paper does (Bahri, Jiang, Gupta, ICML 2020): among a grid, the k
#: whose filter does best on a small held-out set with clean labels ("D_clean"); here by F1 of the
#: flags on that set, which is then left out of every method's evaluation.
DEEP_KNN_GRID = (1, 2, 3, 5, 10, 20, 50, 100)


def deep_knn(labels, neighbors, k, num_classes=None):
    """Deep k-NN filter: score = share of the k nearest neighbours carrying the sample's label
    (lower = more suspect); flags = the neighbours' majority vote disagrees (the label's share is
    below the largest share). ``neighbors``: (N, >= k) indices, nearest first."""
    from sei.neighbors import knn_label_frequencies

    labels = np.asarray(labels)
    q = knn_label_frequencies(labels, np.ascontiguousarray(neighbors[:, :k]), num_classes)
    own = q[np.arange(len(labels)), labels]
    return own, own < q.max(1)


def deep_knn_choose_k(labels, neighbors, is_mislabeled, clean_idx, grid=DEEP_KNN_GRID, num_classes=None):
    """The k of :data:`DEEP_KNN_GRID` whose flags have the best F1 on ``clean_idx`` (the paper's
    D_clean, whose true labels are known); ties to the smaller k."""
    from sei.metrics import detection_metrics

    valid = np.zeros(len(labels), bool)
    valid[clean_idx] = True
    best = None
    for k in grid:
        if k > neighbors.shape[1]:
            break
        score, flags = deep_knn(labels, neighbors, k, num_classes)
        f1 = detection_metrics(flags, score, is_mislabeled, valid=valid)["f1"]
        if best is None or f1 > best[1]:
            best = (k, f1)
    return best[0]


def simifeat_neighbours(features, k=10):
    """SimiFeat's neighbourhoods (``hoc.count_knn_distribution``): the k nearest by cosine distance
    d, exact, *the sample itself first* (its d replaced by 2 d_1 - d_2, as the code does).
    ``(d, idx)``, each (N, k)."""
    import faiss

    x = np.ascontiguousarray(features, dtype=np.float32).copy()
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    sim, idx = index.search(x, k)
    d = (1.0 - sim).astype(np.float64)
    d[:, 0] = 2.0 * d[:, 1] - d[:, 2]
    idx[:, 0] = np.arange(len(x))
    return d, idx


def _simifeat_votes(labels, d, idx, num_classes):
    """Each vote weighted by 1 - d, the (N, K) vector l2-normalised."""
    lab = np.asarray(labels)[idx]
    cnt = np.zeros((len(lab), num_classes))
    for c in range(num_classes):
        cnt[:, c] = ((1.0 - d) * (lab == c)).sum(1)
    return cnt / np.maximum(np.linalg.norm(cnt, axis=1, keepdims=True), 1e-12)


def hoc_transition(features, labels, num_classes, *, rounds=10, per_round=15000, steps=400, lr=0.1, seed=0):
    """HOC's estimate (Zhu, Song, Liu, ICML 2021; SimiFeat's ``get_T_global_min_new``) of the noise
    transition T (true -> given) and the true-class prior p from the labels of each sample and of
    its two nearest neighbours (cosine): first-, second- and third-order consensus frequencies over
    ``rounds`` random subsets of ``per_round`` samples, matched by Adam on softmax-parametrised T and
    p (init 5 I - 1 and 1/K + U(0, 0.1)); the best loss after step 5 is kept. ``(T, p)``."""
    import torch

    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    n, kk = len(labels), num_classes
    e1, e2, e3 = np.zeros(kk), np.zeros((kk, kk)), np.zeros((kk, kk, kk))
    for _ in range(rounds):
        s = rng.choice(n, min(per_round, n), replace=False)
        _, nb = simifeat_neighbours(np.asarray(features)[s], 3)  # self first, then the two nearest (cosine)
        y0, y1, y2 = labels[s], labels[s][nb[:, 1]], labels[s][nb[:, 2]]
        e1 += np.bincount(y0, minlength=kk) / len(s)
        e2 += np.bincount(y0 * kk + y1, minlength=kk * kk).reshape(kk, kk) / len(s)
        e3 += np.bincount((y0 * kk + y1) * kk + y2, minlength=kk ** 3).reshape(kk, kk, kk) / len(s)
    est = [torch.tensor(e / rounds, dtype=torch.float64) for e in (e1, e2, e3)]
    g = torch.Generator().manual_seed(seed)
    t_raw = (5 * torch.eye(kk) - torch.ones(kk, kk)).double().requires_grad_(True)
    p_raw = (torch.ones(kk) / kk + torch.rand(kk, generator=g) * 0.1).double().requires_grad_(True)
    opt = torch.optim.Adam([t_raw, p_raw], lr=lr)
    best = (np.inf, None, None)
    for step in range(steps):
        opt.zero_grad()
        t, p = torch.softmax(t_raw, 1), torch.softmax(p_raw, 0)
        model = (p @ t, torch.einsum("i,ia,ib->ab", p, t, t), torch.einsum("i,ia,ib,ic->abc", p, t, t, t))
        loss = sum(torch.linalg.norm(a - b) for a, b in zip(est, model))
        if step > 5 and loss.item() < best[0]:
            best = (loss.item(), t.detach().numpy().copy(), p.detach().numpy().copy())
        loss.backward()
        opt.step()
    return best[1], best[2]


def simifeat(features, labels, num_classes, *, method="rank", k=10, seed=0, transition=None, neighbours=None):
    """SimiFeat (Zhu, Dong, Liu, ICML 2022; ``UCSC-REAL/SimiFeat`` ``main_fast.py``, one feature
    extraction, no augmentation rounds): score = log of the soft neighbour vote for the given label
    (the code's ``get_score(..., method="ce")`` negated, lower = more suspect). Flags: ``"vote"``,
    the vote's argmax differs from the label (``--method mv``); ``"rank"`` (``rank1``), within each
    given class c the share 1 - P(true = c | given = c) of HOC's estimate (clipped to [0.05, 0.95],
    with the code's +-0.05 jitter of the diagonal, seeded) of highest-loss samples. ``neighbours``:
    :func:`simifeat_neighbours` computed once (label-free)."""
    labels = np.asarray(labels)
    d, idx = neighbours if neighbours is not None else simifeat_neighbours(features, k)
    q = _simifeat_votes(labels, d[:, :k], idx[:, :k], num_classes)
    score = np.log(q[np.arange(len(labels)), labels] + 1e-8)
    if method == "vote":
        return score, q.argmax(1) != labels
    if method != "rank":
        raise ValueError(f"method must be 'vote' or 'rank', got {method!r}")
    t, p = transition if transition is not None else hoc_transition(features, labels, num_classes, seed=seed)
    prior = np.bincount(labels, minlength=num_classes) / len(labels)
    given = t * p[:, None] / np.maximum(prior[None, :], 1e-12)  # the code's T * p / noisy_prior, diagonal read
    rng = np.random.default_rng(seed)
    flags = np.zeros(len(labels), bool)
    for c in range(num_classes):
        rate = 1.0 - min(given[c, c] + rng.uniform(-0.05, 0.05), 1.0)
        rate = 0.95 if rate >= 1.0 else 0.05 if rate <= 0.0 else rate
        sel = labels == c
        if sel.any():
            cut = np.percentile(-score[sel], 100 * (1 - rate))
            flags |= sel & (-score >= cut)
    return score, flags


def cleanlab_ensemble(labels, pred_probs_list, *, weighting="accuracy"):
    """cleanlab's ensemble of per-epoch ``pred_probs`` (``cleanlab.rank.get_label_quality_ensemble_scores``,
    ``weight_ensemble_members_by=weighting``; its default ``"accuracy"``, or ``"uniform"``). In-sample:
    each epoch's predictions of samples it trained on. Flags: the ``cleanlab.count.num_label_issues``
    lowest scores on the epochs' mean probabilities (cleanlab's documented way to turn a ranking into
    a count)."""
    from cleanlab.count import num_label_issues
    from cleanlab.rank import get_label_quality_ensemble_scores

    labels = np.asarray(labels)
    score = get_label_quality_ensemble_scores(labels, pred_probs_list, weight_ensemble_members_by=weighting,
                                              verbose=False)
    mean = np.mean(pred_probs_list, axis=0)
    mean /= mean.sum(1, keepdims=True)
    return score, _lowest(score, num_label_issues(labels, mean))


def _lowest(score, count):
    flags = np.zeros(len(score), bool)
    flags[np.argsort(score, kind="stable")[: int(count)]] = True
    return flags


def wrong_events(pred_probs_list, labels):
    """Number of epochs whose prediction disagrees with the given label (the sign of SEI alone),
    negated so lower = more suspect; flags: wrong in more than half of the epochs."""
    labels = np.asarray(labels)
    wrong = np.sum([np.argmax(p, 1) != labels for p in pred_probs_list], axis=0)
    return -wrong.astype(float), wrong > len(pred_probs_list) / 2


def fiftyone_mistakenness(logits, labels):
    """FiftyOne Brain's ``compute_mistakenness`` of classifications with logits
    (``fiftyone.brain.internal.core.mistakenness._compute_mistakenness_class``):
    m = (s exp(-H(softmax(logits))) + 1) / 2, s = +1 where the prediction differs from the label,
    -1 where it agrees. Returns ``(1 - m, m > 0.5)`` (lower = more suspect; flagged = wrong prediction)."""
    from sei.entropy import softmax

    p = softmax(np.asarray(logits, dtype=np.float64), axis=1)
    h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
    s = np.where(p.argmax(1) == np.asarray(labels), -1.0, 1.0)
    m = (s * np.exp(-h) + 1.0) / 2.0
    return 1.0 - m, m > 0.5


def datalab_label_issues(features, labels):
    """cleanlab Datalab's label issues from ``features`` alone (no ``pred_probs``): its k-NN
    (k = 10, Euclidean) pred_probs made out-of-sample, then ``find_label_issues``. ``(label_score,
    is_label_issue)``."""
    from cleanlab import Datalab

    lab = Datalab(data={"label": np.asarray(labels)}, label_name="label", verbosity=0)
    lab.find_issues(features=np.asarray(features, dtype=np.float32), issue_types={"label": {}})
    got = lab.get_issues("label")
    return got["label_score"].to_numpy(), got["is_label_issue"].to_numpy()


# ----------------------------------------------------------------------------- plotting / CLI
def plt():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


class TimeGuard:
    """``--time-limit`` seconds from ``start``: ``left()`` seconds, ``allows(seconds)`` whether work of
    that (estimated) length still ends in time. No limit: always allows."""

    def __init__(self, limit=None, start=None):
        self.start = time.time() if start is None else start
        self.deadline = None if limit is None else self.start + limit

    def left(self):
        return float("inf") if self.deadline is None else max(0.0, self.deadline - time.time())

    def allows(self, seconds=0.0):
        return self.deadline is None or time.time() + (seconds or 0.0) <= self.deadline

    @property
    def expired(self):
        return not self.allows(0.0)


def write_table(md_path, text, json_obj=None, *, json_path=None, mirror=None):
    """Write ``text`` to ``md_path`` (and ``json_obj`` to ``json_path``, default the same name with
    ``.json``), creating the folder; copy both to ``mirror`` (a folder) when given."""
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(text)
    written = [md_path]
    if json_obj is not None:
        jp = Path(json_path) if json_path is not None else md_path.with_suffix(".json")
        jp.write_text(json.dumps(json_obj, indent=1))
        written.insert(0, jp)
    copy_to_mirror(written, mirror)
    return written


def copy_to_mirror(paths, mirror):
    """Copy ``paths`` into the folder ``mirror`` (e.g. the device tool's ``$OUT``), creating it; None: nothing."""
    if mirror is None:
        return
    mirror = Path(mirror)
    mirror.mkdir(parents=True, exist_ok=True)
    for p in paths:
        shutil.copy(p, mirror / Path(p).name)
