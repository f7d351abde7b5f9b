"""Closing the loop after an SEI run: pick samples to relabel, accept the model's suggestions.

``suggest_relabels`` tags a budgeted batch for human review with the core's active label
correction (:mod:`sei.active`), fed with what the run stored: its scores (lower = more
suspicious) and, when the run trained on an embeddings field, the vectors of that field
for the kNN graph along which each pick lowers the suspicion of its neighbours
(``"sei_propagation"``). A run on images has no stored vectors: the lowest scores first.

``apply_suggestions`` writes ``<brain_key>_suggestion`` into the label field and keeps the
label it replaces in ``<label_field>_original``, so nothing is lost (a ``<label_field>_original``
field of another type is refused before anything is written).

Every function here, and every function of the review desk (:mod:`.review`, :mod:`.panel`),
first repairs an interrupted write of a run (:func:`recovered`), so none of them reads or
re-flags the mix of two runs that a killed ``compute_sei`` leaves.
"""

from __future__ import annotations

import numpy as np

import fiftyone.core.labels as fol
from sei.active import KNNGraph, SelectionContext, make_selector

from . import writeback
from .inputs import check_count, classification_fields, read_vectors
from .runs import dataset_of, field_names

DEFAULT_TAG = "sei_relabel"
METHODS = ("auto", "sei_propagation", "lowest_score")
NEIGHBORS = 10  # of each sample in the kNN graph, as sei_cleanlab.select_for_relabeling


def recovered(samples):
    """The dataset of ``samples``, after repairing what a killed write of an SEI run left on it.

    The one entry of the review desk: :func:`suggest_relabels`, :func:`apply_suggestions`,
    every function of :mod:`.review` and every callback of the review panel call it before
    they read or write a run, so a cutoff moved, a batch picked or a suggestion accepted
    after a kill works on the previous run or the new one
    (:func:`sei_fiftyone.writeback.recover_interrupted_writes`), never on their mix.
    """
    dataset = dataset_of(samples)
    writeback.recover_interrupted_writes(dataset)
    return dataset


def review_tags(label_field):
    """The sample tags recording a review decision on ``label_field``: (accepted, rejected)."""
    return f"{label_field}_accepted", f"{label_field}_rejected"


def check_tag(samples, brain_key, tag):
    """``tag`` if it can mark suggestions: a non-empty string that is not a review decision.

    The review desk reads ``<label_field>_accepted`` / ``_rejected`` (:func:`review_tags`)
    as a person's decision, for the run's label field and every ``Classification`` field
    of the dataset; tagging suggestions with one would fake reviews (ValueError).
    """
    if not isinstance(tag, str) or not tag.strip():
        raise ValueError(f"tag must be a non-empty string, got {tag!r}")
    dataset = dataset_of(samples)
    fields = set(classification_fields(dataset))
    if brain_key in dataset.list_brain_runs():
        fields.add(dataset.get_brain_info(brain_key).config.label_field)
    decisions = {t for f in fields for t in review_tags(f)}
    if tag in decisions:
        raise ValueError(f"tag '{tag}' records a review decision of the label review; choose another tag for "
                         f"suggestions (default '{DEFAULT_TAG}')")
    return tag


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
        ValueError: an unknown ``method``, no SEI run ``brain_key``, a ``budget`` that is
            not a whole number >= 0, a ``tag`` that is a review decision
            (:func:`check_tag`), or ``"sei_propagation"`` for a run without stored vectors
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    budget = check_count(budget, "budget", minimum=0)
    with writeback.exclusive(samples):  # tags are a write: one writer per dataset
        return _suggest(samples, brain_key, budget, tag, flagged_only, method)


def _suggest(samples, brain_key, budget, tag, flagged_only, method):
    check_tag(samples, brain_key, tag)
    score_field, flag_field, _ = field_names(brain_key)
    view = samples.exists(score_field)
    if flagged_only:
        view = view.match({flag_field: True})
    ids, scores = view.values(["id", score_field])
    budget = min(budget, len(ids))
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

    Raises:
        ValueError: ``<label_field>_original`` exists and is not a ``Classification``
            field (its values are not labels this function wrote); nothing is written
    """
    with writeback.exclusive(samples) as dataset:  # one writer per dataset
        return _apply(samples, dataset, brain_key, label_field)


def original_field(dataset, label_field):
    """``<label_field>_original``, where the labels a review replaced are kept; ValueError when a
    field of that name exists and is not a ``Classification`` field (nothing is written then)."""
    name = f"{label_field}_original"
    schema = dataset.get_field_schema()
    if name in schema and name not in classification_fields(dataset):
        raise ValueError(
            f"Field '{name}' exists and is a {type(schema[name]).__name__}, not the "
            f"Classification field where the labels of '{label_field}' that a review replaces are kept; "
            f"rename or delete '{name}' first (nothing was written)")
    return name


def keep_originals(view, label_field, replaced):
    """Keep in ``<label_field>_original`` the labels ``replaced`` (sample id -> Classification) of
    the samples of ``view``, where none is kept yet (a second change never overwrites the true
    original). The one rule of accepting a suggestion and of an edit made in the App."""
    dataset = dataset_of(view)
    name = original_field(dataset, label_field)
    ids = view.values("id")
    kept = view.values(name) if name in dataset.get_field_schema() else [None] * len(ids)
    view.set_values(name, [k if k is not None else replaced.get(i) for i, k in zip(ids, kept)])


def _apply(samples, dataset, brain_key, label_field):
    if label_field is None:
        label_field = dataset.get_brain_info(brain_key).config.label_field
    _, _, sugg_field = field_names(brain_key)
    original_field(dataset, label_field)  # refused before anything is written
    view = samples.exists(sugg_field)
    ids, current, suggestions = view.values(["id", label_field, sugg_field])
    new_labels, changed = [], 0
    for cur, sug in zip(current, suggestions):
        if cur is None or cur.label != sug.label:
            changed += 1
        new_labels.append(fol.Classification(label=sug.label, confidence=sug.confidence))
    keep_originals(view, label_field, dict(zip(ids, current)))
    view.set_values(label_field, new_labels)
    return changed
