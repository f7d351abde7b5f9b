"""Closing the loop after an SEI run: pick samples to relabel, accept the model's suggestions.

``suggest_relabels`` tags a budgeted batch for human review. It uses the active label
correction selection (``sei_cleanlab.select_for_relabeling``) when the installed version
provides it, and the lowest SEI scores first otherwise.

``apply_suggestions`` writes ``<brain_key>_suggestion`` into the label field and keeps the
label it replaces in ``<label_field>_original``, so nothing is lost.
"""

from __future__ import annotations

import logging

import numpy as np

import fiftyone.core.labels as fol

from .core import field_names

logger = logging.getLogger(__name__)

DEFAULT_TAG = "sei_relabel"


def _run_label_field(samples, brain_key):
    info = samples._root_dataset.get_brain_info(brain_key)
    return info.config.label_field


def suggest_relabels(samples, brain_key="sei", *, budget=100, tag=DEFAULT_TAG, flagged_only=False,
                     method="auto"):
    """Tag up to ``budget`` samples for relabelling, most useful first.

    Args:
        samples: a dataset or view with an SEI run ``brain_key``
        brain_key ("sei"): the SEI run to use
        budget (100): how many samples to tag
        tag ("sei_relabel"): the sample tag to add
        flagged_only (False): choose only among samples flagged as mislabeled
        method ("auto"): ``"auto"`` (active label correction when available, else
            ``"lowest_score"``) or ``"lowest_score"``

    Returns:
        the list of tagged sample ids, in selection order
    """
    score_field, flag_field, sugg_field = field_names(brain_key)
    view = samples.exists(score_field)
    if flagged_only:
        view = view.match({flag_field: True})
    ids, scores = view.values(["id", score_field])
    ids = np.asarray(ids)
    scores = np.asarray(scores, dtype=np.float64)
    budget = int(min(max(budget, 0), ids.size))
    if budget == 0:
        return []
    order = None
    if method == "auto":
        order = _active_selection(view, brain_key, scores, budget)
    if order is None:
        order = np.argsort(scores, kind="stable")[:budget]
    chosen = ids[np.asarray(order)[:budget]].tolist()
    samples._root_dataset.select(chosen).tag_samples(tag)
    return chosen


def _active_selection(view, brain_key, scores, budget):
    """Indices chosen by ``sei_cleanlab.select_for_relabeling``, or None if unavailable.

    The run keeps per-sample scores and the model's top label and confidence, not the
    probability history, so the selector gets an (N, K) last-epoch estimate (the
    confidence on the suggested class, the rest spread evenly) and the run's embeddings
    field for its kNN graph (SEI propagation). Runs on images have no stored vectors:
    None, so the caller ranks by the run's scores.
    """
    try:
        from sei_cleanlab import select_for_relabeling
    except ImportError:
        try:
            from sei_cleanlab.active import select_for_relabeling
        except ImportError:
            return None
    dataset = view._root_dataset
    info = dataset.get_brain_info(brain_key)
    results = dataset.load_brain_results(brain_key)
    classes = list(results.classes)
    index = {c: k for k, c in enumerate(classes)}
    k = len(classes)
    _, _, sugg_field = field_names(brain_key)
    given, sugg_labels, sugg_conf = view.values(
        [f"{info.config.label_field}.label", f"{sugg_field}.label", f"{sugg_field}.confidence"]
    )
    labels = np.array([index.get(x, 0) for x in given], dtype=np.int64)
    probs = np.full((labels.size, k), 0.0)
    for i, (lab, conf) in enumerate(zip(sugg_labels, sugg_conf)):
        if lab is None or conf is None:
            probs[i] = 1.0 / k
            continue
        probs[i] = (1.0 - conf) / max(k - 1, 1)
        probs[i, index[lab]] = conf
    features = None
    field = info.config.embeddings_field
    if field and field in dataset.get_field_schema():
        vecs = view.values(field)
        if all(v is not None for v in vecs):
            features = np.stack([np.asarray(v, dtype=np.float32).ravel() for v in vecs])
    if features is None:
        # Without vectors for the kNN graph the selector would rank by a one-epoch
        # estimate; the run's own SEI (lowest first) is the better order.
        return None
    try:
        out = select_for_relabeling(labels, probs, features, budget=budget)
    except Exception as e:  # a failing selector must not block relabelling
        logger.warning("select_for_relabeling failed (%s); using lowest scores first", e)
        return None
    return np.asarray(out, dtype=np.int64)[:budget]


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
        label_field = _run_label_field(samples, brain_key)
    _, _, sugg_field = field_names(brain_key)
    original_field = f"{label_field}_original"
    view = samples.exists(sugg_field)
    ids, current, suggestions = view.values(["id", label_field, sugg_field])
    if original_field in samples._root_dataset.get_field_schema():
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
