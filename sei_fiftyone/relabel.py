"""Closing the loop after an SEI run: pick samples to relabel, accept the model's suggestions.

``suggest_relabels`` tags a budgeted batch for human review with the core's active label
correction (:mod:`sei.active`), fed with what the run stored: its scores (lower = more
suspicious) and, when the run trained on an embeddings field, the vectors of that field
for the kNN graph along which each pick lowers the suspicion of its neighbours
(``"sei_propagation"``). A run on images has no stored vectors: the lowest scores first.

``apply_suggestions`` writes ``<brain_key>_suggestion`` into the label field and keeps the
label it replaces in ``<label_field>_original``, so nothing is lost.
"""

from __future__ import annotations

import numpy as np

import fiftyone.core.labels as fol
from sei.active import KNNGraph, SelectionContext, make_selector

from .inputs import read_vectors
from .runs import dataset_of, field_names

DEFAULT_TAG = "sei_relabel"
METHODS = ("auto", "sei_propagation", "lowest_score")
NEIGHBORS = 10  # of each sample in the kNN graph, as sei_cleanlab.select_for_relabeling


def suggest_relabels(samples, brain_key="sei", *, budget=100, tag=DEFAULT_TAG, flagged_only=False,
                     method="auto"):
    """Tag up to ``budget`` samples for relabelling, most useful first.

    Args:
        samples: a dataset or view with an SEI run ``brain_key``
        brain_key ("sei"): the SEI run to use
        budget (100): how many samples to tag
        tag ("sei_relabel"): the sample tag to add
        flagged_only (False): choose only among samples flagged as mislabeled
        method ("auto"): ``"sei_propagation"`` (the run's scores propagated on the kNN
            graph of its embeddings field, :func:`sei.active.SEISelector`),
            ``"lowest_score"`` (the run's scores, lowest first), or ``"auto"``: the first
            when every chosen-from sample has a vector in the run's embeddings field

    Returns:
        the list of tagged sample ids, in selection order

    Raises:
        ValueError: an unknown ``method``, no SEI run ``brain_key``, or
            ``"sei_propagation"`` for a run without stored vectors
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    score_field, flag_field, _ = field_names(brain_key)
    view = samples.exists(score_field)
    if flagged_only:
        view = view.match({flag_field: True})
    ids, scores = view.values(["id", score_field])
    budget = int(min(max(budget, 0), len(ids)))
    if budget == 0:
        return []
    order = select(view, brain_key, budget, method=method)
    chosen = np.asarray(ids)[order].tolist()
    dataset_of(samples).select(chosen).tag_samples(tag)
    return chosen


def select(samples, brain_key, budget, *, method="auto"):
    """Positions in ``samples`` (every one scored by the run) of ``budget`` picks, in pick order.

    :class:`sei.active.SelectionContext` from the run's stored values: its scores as
    ``sei_scores``, the labels of its label field and, as ``pred_probs``, its suggestion's
    confidence on the suggested class with the rest spread evenly (validated, not ranked
    by: SEI selectors rank by the scores).
    """
    dataset = dataset_of(samples)
    config = dataset.get_brain_info(brain_key).config
    classes = list(dataset.load_brain_results(brain_key).classes)
    score_field, _, sugg_field = field_names(brain_key)
    scores, given, sugg_labels, sugg_conf = samples.values(
        [score_field, f"{config.label_field}.label", f"{sugg_field}.label", f"{sugg_field}.confidence"])
    index = {c: k for k, c in enumerate(classes)}
    labels = np.array([index.get(lab, -1) for lab in given], dtype=np.int64)
    pred_probs = _suggestion_probs(sugg_labels, sugg_conf, index)
    graph = None
    if method != "lowest_score":
        field = config.embeddings_field
        features = read_vectors(samples, field) if field in dataset.get_field_schema() else None
        if features is None and method == "sei_propagation":
            raise ValueError(f"method='sei_propagation' needs the vectors of the run's embeddings field "
                             f"for every sample; run '{brain_key}' has {field!r}")
        if features is not None and len(features) > 1:
            graph = KNNGraph(features, k=min(NEIGHBORS, len(features) - 1), seed=config.seed)
    selector = make_selector("sei_propagation" if graph is not None else "sei")
    ctx = SelectionContext(labels, pred_probs, sei_scores=np.asarray(scores, dtype=np.float64), graph=graph,
                           seed=config.seed)
    return selector.select(ctx, budget)


def _suggestion_probs(labels, confidences, index):
    """(N, K): the suggestion's confidence on its class, the rest spread evenly."""
    k = len(index)
    probs = np.full((len(labels), k), 1.0 / k)
    for i, (lab, conf) in enumerate(zip(labels, confidences)):
        if lab is not None and conf is not None and lab in index:
            probs[i] = (1.0 - conf) / max(k - 1, 1)
            probs[i, index[lab]] = conf
    return probs


def apply_suggestions(samples, brain_key="sei", *, label_field=None):
    """Replace each sample's label by the run's suggestion, keeping the old one.

    The previous label goes to ``<label_field>_original`` (only the first time, so a
    second application never overwrites the true original).

    Args:
        samples: the samples to update (e.g. ``dataset.match_tags("sei_relabel")`` or a
            selection)
        brain_key ("sei"): the SEI run whose ``<brain_key>_suggestion`` to apply
        label_field (None): the label field; default the run's ``label_field``

    Returns:
        the number of samples whose label changed
    """
    if label_field is None:
        label_field = dataset_of(samples).get_brain_info(brain_key).config.label_field
    _, _, sugg_field = field_names(brain_key)
    original_field = f"{label_field}_original"
    view = samples.exists(sugg_field)
    ids, current, suggestions = view.values(["id", label_field, sugg_field])
    if original_field in dataset_of(samples).get_field_schema():
        originals = view.values(original_field)
    else:
        originals = [None] * len(ids)
    new_labels, new_originals, changed = [], [], 0
    for cur, orig, sug in zip(current, originals, suggestions):
        new_originals.append(orig if orig is not None else cur)
        if cur is None or cur.label != sug.label:
            changed += 1
        new_labels.append(fol.Classification(label=sug.label, confidence=sug.confidence))
    view.set_values(original_field, new_originals)
    view.set_values(label_field, new_labels)
    return changed
