"""The rule that picks the library's default head, score and threshold from benchmark cells.

Fixed in code before it is run on the cells (issue #12, item 1); ``benchmarks/defaults.py``
measures the cells and applies it; the added data sets (``benchmarks/defaults_data.py``) only
check the choice, they never enter it.

A **cell** is one (regime, data set, label set, seed): regime ``"a"`` (frozen features and a
head trained by :func:`sei.train`) or ``"b"`` (a small CNN from scratch, where the head does
not apply). Each cell holds two references measured on its own data, confident learning's
AUROC and F1 (``cl_auroc``, ``cl_f1``: 5-fold out-of-sample probabilities, cleanlab's
``find_label_issues``) and AUM's AUROC (``aum_auroc``: the logit margin of the same regime's
run), and every **candidate**'s AUROC and F1. A candidate is ``(head, score, threshold)``;
in a cell where the head does not apply it is looked up as ``(None, score, threshold)``.

The rule (:func:`choose`), for one set of candidates:

1. A candidate competes only if it was measured in every cell.
2. Goals per cell: ``F1 >= cl_f1`` (the F1 goal) and ``AUROC >= max(cl_auroc, aum_auroc) + 0.01``
   (the AUROC goal; the issue's "Done when").
3. Rank by, in order (higher first): the number of cells meeting both goals; the number of
   cells meeting the F1 goal; the worst cell's AUROC lead ``min(AUROC - max(cl_auroc,
   aum_auroc))``; the mean lead. Leads are rounded to 0.001 first (seed noise is larger), so
   near-equal candidates tie.
4. Ties go to the simpler option: a threshold that needs no auxiliary samples before one that
   does, then a score that needs no features before one that does, then the linear head
   before the prompt head, then the candidates' order as given (the registry's order).

:func:`choose_defaults` applies it twice: among the scores of the dynamics alone (what
``find_label_issues`` / ``get_label_quality_scores`` without ``features=`` can compute) and
among all candidates (with features). The default head is the with-features choice's head:
the head is only trained by ``sei.train`` / ``compute_sei`` on features, where the features
are always at hand.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AUROC_MARGIN", "AUX_THRESHOLDS", "CUTOFF_ORDER", "LIBRARY_CUTOFF", "FEATURE_SCORES", "choose", "choose_cutoff",
           "choose_defaults", "evaluate"]

#: The AUROC lead over max(CL, AUM) a cell asks for.
AUROC_MARGIN = 0.01
#: Thresholds computed from the auxiliary samples (need the auxiliary class trained).
AUX_THRESHOLDS = ("aux_mean", "aux_quantile")
#: Candidate scores that need features: the registry's neighbour scores and the benchmark's
#: product of experts (``"poe"``, mean log-probabilities + kNN label counts).
FEATURE_SCORES = ("aum_prob_knn", "knn_margin", "poe")


def _lookup(cell, cand):
    got = cell["candidates"].get(tuple(cand))
    if got is None:
        got = cell["candidates"].get((None,) + tuple(cand)[1:])
    return got


def evaluate(cells, cand):
    """Per-cell verdicts of one candidate: list of dicts (cell key, auroc, f1, the two
    references, ``lead`` = AUROC - max(CL, AUM), ``f1_goal``, ``auroc_goal``), or None when
    the candidate is missing from some cell."""
    out = []
    for key, cell in cells.items():
        got = _lookup(cell, cand)
        if got is None or not np.isfinite(got["auroc"]) or not np.isfinite(got["f1"]):
            return None
        ref = max(cell["cl_auroc"], cell["aum_auroc"])
        out.append({"cell": key, "auroc": got["auroc"], "f1": got["f1"], "cl_f1": cell["cl_f1"],
                    "ref_auroc": ref, "lead": got["auroc"] - ref,
                    "f1_goal": got["f1"] >= cell["cl_f1"], "auroc_goal": got["auroc"] >= ref + AUROC_MARGIN})
    return out


def _key(verdicts):
    both = sum(v["f1_goal"] and v["auroc_goal"] for v in verdicts)
    f1 = sum(v["f1_goal"] for v in verdicts)
    leads = [v["lead"] for v in verdicts]
    return (both, f1, round(min(leads), 3), round(float(np.mean(leads)), 3))


def _simplicity(cand, order):
    head, score, threshold = cand
    return (threshold in AUX_THRESHOLDS, score in FEATURE_SCORES, head == "prompt", order)


def choose(cells, candidates):
    """The winning candidate by the rule above: ``(candidate, rank key, verdicts)``.

    ``cells``: ``{cell key: {"cl_auroc", "cl_f1", "aum_auroc", "candidates": {(head, score,
    threshold): {"auroc", "f1"}}}}``; ``candidates``: the ``(head, score, threshold)`` tuples
    that compete, in the order used for the last tie-break.
    """
    if not cells:
        raise ValueError("choose needs at least one cell")
    best = None
    for i, cand in enumerate(candidates):
        verdicts = evaluate(cells, cand)
        if verdicts is None:
            continue
        rank = (_key(verdicts), tuple(-x for x in _simplicity(tuple(cand), i)[:3]) + (-i,))
        if best is None or rank > best[0]:
            best = (rank, tuple(cand), verdicts)
    if best is None:
        raise ValueError("no candidate was measured in every cell")
    return best[1], best[0][0], best[2]


def choose_defaults(cells, candidates):
    """``{"without_features": choice, "with_features": choice, "head": str}``, each choice as
    returned by :func:`choose` (the first among scores of the dynamics alone, the second among
    all candidates); ``head`` is the with-features choice's head."""
    plain = [c for c in candidates if c[1] not in FEATURE_SCORES]
    without = choose(cells, plain)
    with_f = choose(cells, candidates)
    return {"without_features": without, "with_features": with_f, "head": with_f[0][0]}


# ----------------------------------------------------------------------------- the cutoff (issue #22, item 3)
#: Cutoffs of the default's ranking in order of simplicity (the last tie-break): the zero cutoff needs
#: nothing, the mixture fits the scores, the counts read the run's probabilities (or the default's product
#: of experts, ``cl_count_poe``) through a confident joint.
CUTOFF_ORDER = ("zero", "gmm", "cl_count_mean", "cl_count_last", "cl_count_poe")
#: The library's threshold method of each cutoff it implements (``threshold=``): the chosen one is what
#: ``threshold="auto"`` is for the default with features (``sei.constants.AUTO_THRESHOLDS``; a test
#: checks it against ``peers_cells.json``).
LIBRARY_CUTOFF = {"zero": "zero", "gmm": "gmm", "cl_count_poe": "cl_count"}


def choose_cutoff(cells, cutoffs=CUTOFF_ORDER):
    """The cutoff of the default's ranking by a rule fixed before it runs (issue #22, item 3).

    ``cells``: ``{cell key: {"methods": {name: {"f1", ...}}, "cutoffs": {cutoff: {"f1", ...}}}}`` (the
    peers benchmark's ``peers_cells.json``: every regime, data set, label set, encoder and seed);
    the default's own row (``"SEI default ..."``) is not a peer.

    1. A cutoff competes only if it was measured in every cell.
    2. Goal per cell: its F1 >= the best peer's F1 in that cell (the issue's "Done when").
    3. Rank by, higher first: the number of cells meeting the goal; the worst cell's F1 lead over the
       best peer; the mean lead (leads rounded to 0.001).
    4. Ties go to the simpler cutoff (the order of ``cutoffs``, :data:`CUTOFF_ORDER`).

    Returns ``(cutoff, rank key, {cell: lead})``.
    """
    if not cells:
        raise ValueError("choose_cutoff needs at least one cell")
    best = None
    for i, cut in enumerate(cutoffs):
        if not all(cut in c["cutoffs"] for c in cells.values()):
            continue
        leads = {}
        for key, c in cells.items():
            peer = max(v["f1"] for m, v in c["methods"].items() if not m.startswith("SEI default"))
            leads[key] = c["cutoffs"][cut]["f1"] - peer
        vals = list(leads.values())
        rank = (sum(v >= 0 for v in vals), round(min(vals), 3), round(float(np.mean(vals)), 3))
        if best is None or (rank, -i) > (best[1], -best[3]):
            best = (cut, rank, leads, i)
    if best is None:
        raise ValueError("no cutoff was measured in every cell")
    return best[0], best[1], best[2]
