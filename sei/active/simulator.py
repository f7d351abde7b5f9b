"""Active label correction simulator: an oracle, rounds of train -> select -> correct.

Protocol (Algorithm 1 of the ALC paper, with batches of ``batch_size`` under ``budget``):
round 0 trains on the noisy labels; each round selects a batch, the :class:`Oracle`
returns the clean labels for it, and the classifier is retrained from scratch (robust
weights reset to uniform). Per round we record test accuracy, labels queried so far,
selection precision (share of the batch, and of all queries, that was mislabeled) and the
number of mislabeled samples left.

The classifier is the training engine's softmax-regression head (``trainer="linear"``,
:func:`train_linear` through the engine's public :func:`sei.engine.fit_head`:
:class:`~sei.engine.heads.LinearHead`, the engine's one loss and epoch runner, SGD on cached
embeddings, one torch thread); it honours per-sample weights (:class:`~sei.active.weights.RobustWeights`),
a forward-corrected loss with a transition matrix (DALC, applied to not-yet-queried samples
only, since queried labels are clean) and feeds an :class:`sei.SEIRecorder` every epoch.
Pass ``trainer=callable`` to use another one (e.g. :func:`sei_train_trainer`).

A selector with ``uses_transition_matrix`` trains with the forward-corrected loss and the
transition estimate its ``transition_estimate`` names (:mod:`sei.active.transition`):
DALC's ``"counted"`` (clean vs original noisy label over the queries, add-one smoothing),
``"design"`` or ``"regression"`` (``sei_fc``'s). Round 0 has no T: it trains with plain
cross-entropy, or with the robust weights for a selector whose ``robust_training`` is True
(every round) or ``"round0"`` (``sei_fc``: before the first queries only).
"""

from __future__ import annotations

import numpy as np

from ..constants import SELECTION_SCORE
from ..validation import check_int_param
from .selectors import SelectionContext, make_selector
from .transition import _pairs, transition_estimate
from .weights import RobustWeights

__all__ = ["Oracle", "train_linear", "sei_train_trainer", "simulate", "plot_curves", "summarize"]


class Oracle:
    """Returns clean labels for queried indices and counts the queries and their human cost.

    ``check_cost``: the price of a checked suggestion (accept or reject the model's label) in
    units of one full relabel (``None``: no suggestions, every query is a relabel at cost 1).
    With it, :meth:`review` shows the suggestion first: accepted (it is the clean label) costs
    ``check_cost``; rejected costs ``check_cost`` and then a relabel (1).
    """

    def __init__(self, clean_labels, check_cost=None):
        self.clean_labels = np.asarray(clean_labels, dtype=np.int64)
        if check_cost is not None and not 0 <= float(check_cost) <= 1:
            raise ValueError(f"check_cost must be in [0, 1] (a share of one relabel) or None, got {check_cost!r}")
        self.check_cost = None if check_cost is None else float(check_cost)
        self.num_queries = self.num_accepted = 0
        self.cost = 0.0

    def query(self, indices) -> np.ndarray:
        """Full relabels of ``indices`` (cost 1 each)."""
        indices = np.asarray(indices, dtype=np.int64)
        self.num_queries += len(indices)
        self.cost += len(indices)
        return self.clean_labels[indices]

    def review(self, indices, suggestions) -> np.ndarray:
        """Clean labels of ``indices``, each first shown with its suggested label (a relabel
        where there is no ``check_cost``)."""
        if self.check_cost is None:
            return self.query(indices)
        indices = np.asarray(indices, dtype=np.int64)
        accepted = np.asarray(suggestions, dtype=np.int64) == self.clean_labels[indices]
        self.num_queries += len(indices)
        self.num_accepted += int(accepted.sum())
        self.cost += self.check_cost * len(indices) + float((~accepted).sum())
        return self.clean_labels[indices]


def train_linear(features, labels, num_classes, *, epochs=20, lr=0.1, batch_size=256, weight_decay=1e-4,
                 momentum=0.9, sample_weights=None, transition_matrix=None, correct_mask=None,
                 recorder=None, seed=0, device="cpu", hidden=(), lr_schedule="cosine"):
    """Softmax regression through the training engine; returns ``(model, probs (N,K), losses (N,))``.

    :func:`sei.engine.fit_head`: the engine's :class:`~sei.engine.heads.LinearHead` on
    standardised features, its one loss (:func:`~sei.engine.heads.loss_terms`), its epoch runner
    and SGD with a cosine schedule: what ``sei.train(mode="embeddings", head="linear")`` trains,
    returned as a predictor of held-out data (``model.predict_proba``). ``sample_weights``: None,
    (N,) array, or an object with ``.weights`` and ``.update(losses)`` (updated after every epoch
    from the recorder's losses). ``transition_matrix`` (K, K): forward-corrected CE
    ``-log (p T)_y`` on the ``correct_mask`` samples (plain CE on the others). ``recorder`` is fed
    every epoch. ``probs`` / ``losses`` are the final model's on all samples (losses
    forward-corrected where T applies). ``hidden``: hidden widths of an MLP head in place of the
    linear one (the ALC paper's four FC layers: three hidden widths, ``lr_schedule="step10"``).
    Imports torch on first call.
    """
    from ..engine import TrainConfig, fit_head

    y = np.asarray(labels, np.int64)
    n = len(y)
    cfg = TrainConfig(mode="embeddings", head="linear", epochs=epochs, lr=lr, batch_size=batch_size,
                      weight_decay=weight_decay, momentum=momentum, lr_schedule=lr_schedule, seed=seed,
                      aux_class=False, threshold="zero", progress=False, device=device,
                      sample_weights=sample_weights, transition_matrix=transition_matrix,
                      transition_mask=None if transition_matrix is None else correct_mask)
    model = fit_head(features, y, cfg, num_classes=num_classes, recorder=recorder, hidden=tuple(hidden))
    probs = model.train_probs
    pe = probs if model.transition is None else np.where(_mask(correct_mask, n)[:, None], probs @ model.transition,
                                                          probs)
    losses = -np.log(np.clip(pe[np.arange(n), y], 1e-12, 1.0))
    return model, probs, losses


def _mask(mask, n):
    return np.ones(n, bool) if mask is None else np.asarray(mask, bool)


def sei_train_trainer(**train_kwargs):
    """A ``trainer=`` for :func:`simulate` that runs ``sei.train(mode="embeddings")``.

    Robust weights go through ``sample_weights=``, the transition matrix through
    ``transition_matrix=`` and ``transition_mask=`` (the samples not yet queried).
    ``sei.train`` exposes no predictor for held-out data, so test accuracy is NaN; use the
    built-in ``"linear"`` trainer for accuracy curves. Imports torch on first call.
    """
    def _train(features, labels, num_classes, *, epochs, sample_weights=None, transition_matrix=None,
               correct_mask=None, recorder=None, seed=0):
        import sei

        kw = dict(mode="embeddings", aux_class=False, progress=False, threshold="zero")
        kw.update(train_kwargs)
        res = sei.train(features, labels, class_names=[f"class {i}" for i in range(num_classes)], epochs=epochs,
                        sample_weights=sample_weights, transition_matrix=transition_matrix,
                        transition_mask=None if transition_matrix is None else correct_mask, seed=seed, **kw)
        probs = np.asarray(res.pred_probs, dtype=np.float64)
        losses = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))
        return None, probs, losses, res.recorder

    return _train


def simulate(features, noisy_labels, clean_labels, selector, *, budget, batch_size, num_classes=None,
             test_features=None, test_labels=None, graph=None, epochs=20, seed=0, trainer="linear",
             train_options=None, robust_options=None, score_name=SELECTION_SCORE, check_cost=None, confirm_neighbours=False):
    """Run one active-label-correction episode; returns a dict of per-round arrays.

    Parameters
    ----------
    features : (N, D) embeddings;  noisy_labels, clean_labels : (N,) ints
    selector : Selector or method name (see :func:`sei.active.make_selector`)
    budget, batch_size : total labels to query (G) and per round (Q)
    graph : KNNGraph, needed by propagation selectors
    trainer : "linear" or callable ``(features, labels, num_classes, sample_weights=, transition_matrix=,
        correct_mask=, recorder=, seed=, epochs=) -> (model with predict_proba, probs, losses)``
    check_cost : float, optional
        Human actions: each queried sample is first shown with the model's label (argmax of the
        round's ``probs``) and the oracle accepts or rejects it (:class:`Oracle`); a check costs
        ``check_cost`` relabels, a rejection adds a relabel. The labels, and so the curves, are the
        same as without it; ``cost`` says what they cost.
    confirm_neighbours : bool, default False
        Propagate each answer to the graph neighbours of the queried sample that nobody has
        queried and whose given label agrees with the answer: they count as checked (never
        picked, trained as clean: outside the forward-corrected loss), at no cost. Needs ``graph``.
        ``verified`` / ``verified_wrong`` count them and those among them whose label was wrong.

    Returns
    -------
    dict with ``labels_queried``, ``test_accuracy``, ``batch_precision``, ``precision``
    (cumulative), ``remaining_mislabeled``, ``train_label_accuracy``, ``cost`` (human cost so far
    in relabels: the labels queried without ``check_cost``), ``accepted`` (suggestions accepted
    so far) (one entry per round) and ``picks`` (all queried indices in order).
    """
    from ..recorder import SEIRecorder

    budget = check_int_param(budget, "budget", 1, "the number of labels to query")
    batch_size = check_int_param(batch_size, "batch_size", 1, "the labels to query per round")
    sel = make_selector(selector) if isinstance(selector, str) else selector
    ep = _Episode(noisy_labels, clean_labels, num_classes, features=features, check_cost=check_cost)
    n, k = len(ep.noisy), ep.k
    train_fn = train_linear if trainer == "linear" else trainer
    out = {k_: [] for k_ in ("labels_queried", "test_accuracy", "batch_precision", "precision",
                             "remaining_mislabeled", "train_label_accuracy", "transition_error", "cost",
                             "accepted", "verified", "verified_wrong")}
    rnd = 0
    while True:
        robust = sel.robust_training is True or (sel.robust_training == "round0" and rnd == 0)
        checked = ep.queried | ep.verified  # labels an oracle gave (or confirmed through a neighbour)
        weights = RobustWeights(n, **dict(getattr(sel, "robust_options", {}) or {}, **(robust_options or {})),
                                trusted=checked if getattr(sel, "trust_queries", False) else None) if robust else None
        rec = SEIRecorder(n, k)
        t_round = ep.transition(sel)
        out["transition_error"].append(ep.transition_error(t_round))
        trained = train_fn(features, ep.labels, k, epochs=epochs, sample_weights=weights,
                           transition_matrix=t_round, correct_mask=~checked, recorder=rec,
                           seed=seed * 1000 + rnd, **dict(train_options or {}))
        model, probs = trained[0], trained[1]
        if len(trained) > 3 and trained[3] is not None:
            rec = trained[3]  # the engine kept its own recorder
        acc = np.nan
        if test_features is not None and hasattr(model, "predict_proba"):
            acc = float(np.mean(model.predict_proba(test_features).argmax(1) == np.asarray(test_labels)))
        ep.record(out, acc, probs)
        if ep.queried.sum() >= budget or ep.queried.all():
            break
        ctx = SelectionContext(ep.labels, probs, exclude=ep.queried | ep.verified,
                               alpha=None if weights is None else weights.alpha,
                               sei_scores=rec.scores(score_name) if sel.needs_sei else None,
                               graph=graph, seed=seed * 1000 + rnd)
        picks = sel.select(ctx, min(batch_size, budget - int(ep.queried.sum())))
        if not len(picks):
            break
        out["batch_precision"].append(ep.correct(picks, rnd, getattr(sel, "last_draw", None),
                                                 suggestions=probs[picks].argmax(1)))
        if confirm_neighbours:
            if graph is None:
                raise ValueError("confirm_neighbours=True needs a graph")
            ep.confirm_neighbours(graph, picks)
        rnd += 1
    res = {k_: np.asarray(v) for k_, v in out.items()}
    res["picks"] = np.concatenate(ep.picks) if ep.picks else np.zeros(0, np.int64)
    res["selector"] = sel.name
    return res


class _Episode:
    """The labels of one episode as the oracle corrects them, and what was queried when."""

    def __init__(self, noisy_labels, clean_labels, num_classes=None, *, features=None, check_cost=None):
        self.features = features
        self.noisy = np.asarray(noisy_labels, np.int64)
        self.clean = np.asarray(clean_labels, np.int64)
        self.k = int(num_classes or max(self.noisy.max(), self.clean.max()) + 1)
        self.oracle = Oracle(self.clean, check_cost)
        self.labels = self.noisy.copy()
        self.queried = np.zeros(len(self.noisy), bool)
        self.verified = np.zeros(len(self.noisy), bool)  # confirmed through a neighbour's answer
        self.query_round = np.full(len(self.noisy), -1)
        self.draws = []  # uniform parts of the queries: (round, indices, size of the set drawn from)
        self.picks, self.hits = [], 0

    def transition(self, sel):
        """The round's T for a selector that trains with the forward-corrected loss (else None)."""
        if not (sel.uses_transition_matrix and self.queried.any()):
            return None
        return transition_estimate(getattr(sel, "transition_estimate", "counted"), features=self.features,
                                   noisy_labels=self.noisy, clean_labels=self.clean, query_round=self.query_round,
                                   draws=self.draws, num_classes=self.k)

    def transition_error(self, t):
        """Mean over rows of the L1 distance from ``t`` to the true T among the samples not yet queried."""
        left = ~self.queried
        if t is None or not left.any():
            return np.nan
        true = _pairs(self.noisy, self.clean, np.flatnonzero(left), self.k)
        seen = true.sum(1) > 0
        true = true[seen] / true[seen].sum(1, keepdims=True)
        return float(np.abs(np.asarray(t)[seen] - true).sum(1).mean())

    def record(self, out, acc, probs):
        q = int(self.queried.sum())
        out["labels_queried"].append(q)
        out["test_accuracy"].append(acc)
        out["remaining_mislabeled"].append(int(np.sum(self.labels != self.clean)))
        out["train_label_accuracy"].append(float(np.mean(probs.argmax(1) == self.clean)))
        out["precision"].append(self.hits / q if q else np.nan)
        out["cost"].append(self.oracle.cost)
        out["accepted"].append(self.oracle.num_accepted)
        out["verified"].append(int(self.verified.sum()))
        out["verified_wrong"].append(int(np.sum(self.verified & (self.labels != self.clean))))

    def confirm_neighbours(self, graph, picks):
        """Mark the unqueried graph neighbours of ``picks`` whose label agrees with the answer."""
        a = graph.adjacency
        for j in picks:
            nb = a.indices[a.indptr[j]:a.indptr[j + 1]]
            nb = nb[~self.queried[nb] & (self.labels[nb] == self.labels[j])]
            self.verified[nb] = True

    def correct(self, picks, rnd, draw=None, suggestions=None):
        """Query ``picks`` in round ``rnd`` (shown with ``suggestions`` when the oracle prices
        checks); returns the share of them that was mislabeled."""
        wrong = self.labels[picks] != self.clean[picks]
        self.hits += int(wrong.sum())
        self.labels[picks] = self.oracle.query(picks) if suggestions is None else self.oracle.review(picks, suggestions)
        self.queried[picks] = True
        self.verified[picks] = False
        self.query_round[picks] = rnd
        if draw is not None:
            self.draws.append((rnd, *draw))
        self.picks.append(picks)
        return float(wrong.mean()) if len(picks) else np.nan


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
    colors = plt.get_cmap("tab10").colors
    for i, (name, runs) in enumerate(results.items()):
        ys = np.array([r[metric] for r in runs], dtype=float)
        x = runs[0]["labels_queried"][: ys.shape[1]] if metric != "batch_precision" else \
            runs[0]["labels_queried"][1: ys.shape[1] + 1]
        m, s = np.nanmean(ys, 0), np.nanstd(ys, 0)
        color = colors[i % len(colors)]  # past ten selectors the colours repeat with another line style
        ax.plot(x, m, label=name, lw=1.6, color=color, ls=("-", "--", ":")[i // len(colors) % 3])
        ax.fill_between(x, m - s, m + s, alpha=0.2, color=color)
    ax.set_xlabel("labels queried")
    ax.set_ylabel(ylabel or metric)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
