"""Detection benchmark, part 2: every method's score and cutoff from one recorded run, and its metrics.

The dynamics scores come from :class:`sei.SEIRecorder`, the neighbour label margin and its fusion with
``aum_prob`` from :func:`sei.knn_label_margin` / :func:`sei.feature_score` (on the benchmark's cached
kNN graph), the product of experts from the library's ``poe_knn`` (:meth:`sei.SEIRecorder.fusion_input`,
:func:`sei.feature_score`); the other fusions (signed confidence + kNN, rank fusion) are benchmark-local
candidates the library does not offer.
"""

from __future__ import annotations

import time

import numpy as np

import sei
from benchmarks.detection_core import rank01
from sei import SEIRecorder, compute_threshold
from sei.constants import is_aux_threshold
from sei.metrics import detection_metrics


# ----------------------------------------------------------------------------- product of experts
def mean_log_probs(hist_logits):
    """(N, C) log-softmax of the recorded (T, N, C) logits, averaged over the T epochs: the library's
    per-class statistic behind ``mean_logp`` / ``poe_knn`` (label-free, so any labels do)."""
    h = np.asarray(hist_logits)
    rec = SEIRecorder.from_history(h, np.zeros(h.shape[1], np.int64), from_logits=True, extra_scores="poe_knn")
    return rec.fusion_input("poe_knn")


def poe_score(mean_logp, labels, neighbours):
    """Product of experts, the library's ``poe_knn``: the epoch-averaged log-probabilities plus the log
    of the neighbours' add-one smoothed label shares ((count + 1) / (k + C)); score = margin of the sum
    at the given label, so zero = the two sources together favour another class."""
    return sei.feature_score("poe_knn", mean_logp, np.asarray(labels), neighbors=neighbours,
                             num_classes=mean_logp.shape[1])


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
        if is_aux_threshold(thr) and not has_aux:
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
        # the library's neighbour scores (sei.knn_label_margin, sei.feature_score) on this benchmark's graph
        t = time.time()
        lab = np.asarray(labels_run)
        km = sei.knn_label_margin(lab, neighbors=neighbours, num_classes=hist_logits.shape[2])
        t_knn = time.time() - t
        out["kNN label margin (zero)"] = (km, km < 0, t_knn, 0.0)
        ap = rec.scores("aum_prob")
        fused = sei.feature_score("aum_prob_knn", ap, lab, neighbors=neighbours, num_classes=hist_logits.shape[2])
        out["AUM-prob + kNN margin (zero)"] = (fused, fused < 0, t_rec + t_knn, 0.0)
        sc = rec.scores("signed_confidence")
        fused2 = 0.5 * (sc + km)
        out["signed conf. + kNN margin (zero)"] = (fused2, fused2 < 0, t_rec + t_knn, 0.0)
        # product of experts, the library's "poe_knn": the epoch-averaged log-probabilities plus the log of the
        # neighbours' add-one smoothed label shares, margin at the given label (zero = the two sources of
        # evidence together favour another class)
        t = time.time()
        poe = sei.feature_score("poe_knn", rec.fusion_input("poe_knn"), lab, neighbors=neighbours,
                                num_classes=hist_logits.shape[2])
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
        m = detection_metrics(np.asarray(f, bool), np.asarray(s, float), is_mis, valid=valid)
        res[name] = {**m, "seconds": sec}
    return res, meth, rec
