"""Reviewing an SEI run: the logic behind the App's label-review panel (:mod:`.panel`).

Plain functions on a dataset and a run key, so the panel's callbacks stay as thin as the
operators and every step can be called (and tested) from Python:

- :func:`score_histogram`: the run's scores binned, the bars below the cutoff marked;
- :func:`set_cutoff`: re-flag the samples at a new cutoff (``<brain_key>_mislabeled =
  score < cutoff``, the score untouched) and record the cutoff in the run's results;
- :func:`confusion`, :func:`cell_view`: the given label vs suggested label matrix of the
  flagged samples, and the samples of one cell;
- :func:`review_counts`, :func:`next_batch`, :func:`accept`, :func:`reject`, :func:`skip`:
  the relabel queue. A batch is picked by active label correction among the flagged
  samples not reviewed yet (:func:`sei_fiftyone.relabel.suggest_relabels`); accepting
  applies the suggestion as :func:`~sei_fiftyone.relabel.apply_suggestions` does (the old
  label kept in ``<label_field>_original``). Decisions are sample tags named after the
  label field (:func:`review_tags`), so they outlive the panel and a rerun of the run;
- :func:`edit_request`, :func:`record_edits`: hand a queued sample to FiftyOne's own label
  editor (the App's Annotate tab) and record the edit made there as a decision like accept;
- :func:`rerun_params`: the ``compute_sei`` operator's parameters that repeat the run on
  the corrected labels, delegated when the run is long.

Each function first repairs an interrupted write of a run (:func:`~sei_fiftyone.relabel.recovered`,
through :func:`_run`), so a kill of ``compute_sei`` never leaves the desk working on a mix of
two runs. Budgets and sample ids are checked by the rules of :mod:`.inputs`.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix

from fiftyone import ViewField as F

import fiftyone.core.labels as fol

from .relabel import DEFAULT_TAG, apply_suggestions, keep_originals, recovered, review_tags, suggest_relabels  # noqa: F401
from .core import list_sei_runs
from .delegation import DELEGATE
from .inputs import check_count, check_sample_ids
from .model_choices import CHECKPOINT, ZOO, choice_names
from .runs import EMBEDDINGS_MODEL, agreement_labels, comparison_names, field_names, is_comparison_of
from .writeback import classification_docs, cutoff_completion, exclusive, field_docs, journaled_write

MAX_BINS = 60
#: A run on images of more samples than this is delegated when run again: the demo's 2,000
#: images take 14 s, all 50,000 CIFAR-10N images 285 s (docs/fiftyone.md, "Speed").
DELEGATE_IMAGES_ABOVE = 10_000
FLAGGED_COLOR, KEPT_COLOR = "#d62728", "#7f7f7f"


def _run(dataset, brain_key):
    """(config, results) of an SEI run of the dataset, after repairing an interrupted write
    (:func:`~sei_fiftyone.relabel.recovered`); ValueError naming the runs there are."""
    recovered(dataset)
    if not isinstance(brain_key, str) or brain_key not in list_sei_runs(dataset):
        raise ValueError(f"No SEI run '{brain_key}' on dataset '{dataset.name}'; its SEI runs are "
                         f"{list_sei_runs(dataset)} (run compute_sei first)")
    # not cached: another process (the App's server, a worker) may have moved the cutoff
    return dataset.get_brain_info(brain_key).config, dataset.load_brain_results(brain_key, cache=False)


def _scored(dataset, brain_key):
    return dataset.exists(field_names(brain_key)[0])


def _flagged(dataset, brain_key):
    return _scored(dataset, brain_key).match(F(field_names(brain_key)[1]) == True)  # noqa: E712


def check_cutoff(cutoff):
    """The cutoff as a float; TypeError / ValueError for anything but a finite number."""
    if isinstance(cutoff, bool) or not isinstance(cutoff, numbers.Real):
        raise TypeError(f"cutoff must be a number (samples scoring below it are flagged), got {cutoff!r}")
    if not math.isfinite(cutoff):
        raise ValueError(f"cutoff must be a finite number, got {cutoff!r}")
    return float(cutoff)


def score_histogram(dataset, brain_key, cutoff=None):
    """The run's scores as plotly bars, bins below ``cutoff`` (default: the run's) in red.

    Returns:
        ``{"data": [bar trace], "layout": {...}, "cutoff", "min", "max", "num_scored"}``;
        the layout (:func:`histogram_layout`) draws the cutoff as a vertical line
    """
    _, results = _run(dataset, brain_key)
    cutoff = float(results.threshold) if cutoff is None else check_cutoff(cutoff)
    scores = np.asarray(_scored(dataset, brain_key).values(field_names(brain_key)[0]), dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError(f"SEI run '{brain_key}' has no finite score to plot")
    edges = np.histogram_bin_edges(scores, bins="auto")
    if len(edges) > MAX_BINS + 1:
        edges = np.histogram_bin_edges(scores, bins=MAX_BINS)
    counts, edges = np.histogram(scores, bins=edges)
    centers = (edges[:-1] + edges[1:]) / 2
    colors = [FLAGGED_COLOR if c < cutoff else KEPT_COLOR for c in centers]
    trace = {"type": "bar", "x": centers.tolist(), "y": counts.tolist(), "width": np.diff(edges).tolist(),
             "marker": {"color": colors}, "name": results.score_name,
             "hovertemplate": "score %{x:.3f}: %{y} samples<extra></extra>"}
    return {"data": [trace], "layout": histogram_layout(cutoff, results.score_name), "cutoff": cutoff,
            "min": float(scores.min()), "max": float(scores.max()), "num_scored": int(scores.size)}


def histogram_layout(cutoff, score_name):
    """The histogram's plotly layout: axes titles and the cutoff as a dashed vertical line."""
    return {
        "xaxis": {"title": {"text": f"{score_name} (lower = more likely mislabeled)"}},
        "yaxis": {"title": {"text": "samples"}}, "bargap": 0.02, "height": 260,
        "margin": {"t": 30, "b": 45, "l": 50, "r": 10},
        "shapes": [{"type": "line", "x0": cutoff, "x1": cutoff, "yref": "paper", "y0": 0, "y1": 1,
                    "line": {"color": FLAGGED_COLOR, "width": 2, "dash": "dash"}}],
        "annotations": [{"x": cutoff, "y": 1, "yref": "paper", "text": f"cutoff {cutoff:.3g}",
                         "showarrow": False, "xanchor": "left", "yanchor": "bottom"}],
    }


def summary(dataset, brain_key):
    """What the panel prints about a run, read from the database: ``cutoff``,
    ``computed_cutoff``, ``score_name``, ``timings`` (seconds of the run's phases, {} for a run
    stored by an earlier version) and the :func:`review_counts`."""
    _, results = _run(dataset, brain_key)
    computed = getattr(results, "computed_threshold", None)
    return {"cutoff": float(results.threshold), "score_name": results.score_name,
            "computed_cutoff": float(results.threshold if computed is None else computed),
            "timings": dict(getattr(results, "timings", None) or {}), **review_counts(dataset, brain_key)}


#: The operators whose delegated runs the panel follows.
FOLLOWED_OPERATORS = ("compute_sei", "compare_with_confident_learning")


def delegated_runs(dataset):
    """The delegated runs of ``@sei/fiftyone`` operators on this dataset that are queued or
    running, as FiftyOne's delegated-operations store knows them (a worker's ``ctx.set_progress``
    writes their progress there): ``[{"operator", "state", "progress", "label"}]``, oldest first."""
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionRunState

    service = DelegatedOperationService()
    out = []
    for state in (ExecutionRunState.RUNNING, ExecutionRunState.QUEUED):
        for doc in service.list_operations(dataset_name=dataset.name, run_state=state):
            name = str(doc.operator).rsplit("/", 1)[-1]
            if not str(doc.operator).startswith("@sei/fiftyone/") or name not in FOLLOWED_OPERATORS:
                continue
            status = doc.status
            out.append({"operator": name, "state": state,
                        "progress": None if status is None or status.progress is None else float(status.progress),
                        "label": None if status is None else status.label})
    return out


def set_cutoff(dataset, brain_key, cutoff):
    """Re-flag the run's samples at ``cutoff`` and record it in the run's results.

    ``<brain_key>_mislabeled`` becomes ``score < cutoff`` on every scored sample; the score
    and the suggestion are untouched, and samples without a score keep their flag. The run's
    results get the new ``threshold`` and ``num_flagged`` (the first change keeps the
    computed cutoff in ``computed_threshold``), and the saved view is rewritten. One
    journaled switch under the dataset's write lease
    (:func:`sei_fiftyone.writeback.journaled_write`): a kill leaves the old cutoff or the new
    one, flags and results in step.

    Returns:
        the number of flagged samples
    """
    cutoff = check_cutoff(cutoff)
    with exclusive(dataset):
        _run(dataset, brain_key)
        score_field, flag_field, _ = field_names(brain_key)
        ids, scores = _scored(dataset, brain_key).values(["id", score_field])
        flags = [bool(s < cutoff) for s in scores]
        columns, kinds = {flag_field: flags}, {flag_field: "bool"}
        if is_comparison_of(dataset, brain_key):  # who flagged what follows the new flags
            agreement = comparison_names(brain_key).agreement
            cl_flags = _scored(dataset, brain_key).values(comparison_names(brain_key).flag)
            columns[agreement] = classification_docs(None if c is None or a is None else (a, None)
                                                     for c, a in zip(cl_flags, agreement_labels(flags, cl_flags)))
            kinds[agreement] = "classification"
        journaled_write(dataset, brain_key, kinds, field_docs(ids, columns),
                        cutoff_completion(brain_key, cutoff, int(sum(flags))), remove_others=False)
    return int(sum(flags))


def confusion(dataset, brain_key):
    """Given label (rows) vs suggested label (columns) of the flagged samples, as a plotly
    heatmap: ``{"data": [heatmap], "classes": [...], "num_flagged": n}``. Only classes that
    occur among the flagged samples are kept, in the run's class order."""
    config, results = _run(dataset, brain_key)
    _, _, sugg_field = field_names(brain_key)
    given, suggested = _flagged(dataset, brain_key).values([f"{config.label_field}.label", f"{sugg_field}.label"])
    pairs = [(g, s) for g, s in zip(given, suggested) if g is not None and s is not None]
    present = {c for pair in pairs for c in pair}
    classes = [c for c in results.classes if c in present] + sorted(present - set(results.classes))
    if pairs:
        z = confusion_matrix([g for g, _ in pairs], [s for _, s in pairs], labels=classes).tolist()
    else:
        z = []
    heatmap = {"type": "heatmap", "z": z, "x": classes, "y": classes, "colorscale": "Reds",
               "hovertemplate": "given %{y} → suggested %{x}: %{z} samples<extra></extra>"}
    return {"data": [heatmap], "classes": classes, "num_flagged": len(pairs)}


def cell_view(dataset, brain_key, given, suggested):
    """The flagged samples labelled ``given`` whose suggestion is ``suggested``, lowest score
    first; ValueError unless both are class names (strings)."""
    config, _ = _run(dataset, brain_key)
    for value in (given, suggested):
        if not isinstance(value, str):
            raise ValueError(f"A cell of the matrix is a pair of class names, got {value!r}"[:120])
    score_field, _, sugg_field = field_names(brain_key)
    view = _flagged(dataset, brain_key).match(
        (F(f"{config.label_field}.label") == given) & (F(f"{sugg_field}.label") == suggested))
    return view.sort_by(score_field)


def review_counts(dataset, brain_key):
    """``{"flagged", "queued", "reviewed", "accepted", "rejected"}`` among the run's samples."""
    config, _ = _run(dataset, brain_key)
    accepted, rejected = review_tags(config.label_field)
    tags = _scored(dataset, brain_key).count_values("tags")
    return {"flagged": len(_flagged(dataset, brain_key)), "queued": tags.get(DEFAULT_TAG, 0),
            "accepted": tags.get(accepted, 0), "rejected": tags.get(rejected, 0),
            "reviewed": len(_scored(dataset, brain_key).match_tags([accepted, rejected]))}


def next_batch(dataset, brain_key, budget):
    """Pick and tag (``sei_relabel``) the next ``budget`` flagged samples not reviewed yet, by
    active label correction as :func:`~sei_fiftyone.relabel.suggest_relabels`; their ids in
    pick order (empty when every flagged sample was reviewed)."""
    budget = check_count(budget, "budget (samples per batch)")
    config, _ = _run(dataset, brain_key)
    unreviewed = dataset.match_tags(list(review_tags(config.label_field)), bool=False)
    return suggest_relabels(unreviewed, brain_key, budget=budget, tag=DEFAULT_TAG, flagged_only=True)


def queue_items(dataset, brain_key, ids):
    """One row per queued sample id (in queue order): id, file name, given and suggested
    label, suggestion confidence and score. Ids no longer in the dataset are dropped;
    anything that is not a sample id is refused (ValueError, :func:`~sei_fiftyone.inputs.check_sample_ids`)."""
    config, _ = _run(dataset, brain_key)
    score_field, _, sugg_field = field_names(brain_key)
    ids = check_queue(ids)
    view = dataset.select(ids, ordered=True)
    rows = view.values(["id", "filepath", f"{config.label_field}.label", f"{sugg_field}.label",
                        f"{sugg_field}.confidence", score_field])
    return [{"id": i, "file": Path(p).name, "given": g, "suggested": s,
             "confidence": None if c is None else round(float(c), 3),
             "score": None if v is None else round(float(v), 4)}
            for i, p, g, s, c, v in zip(*rows)]


def check_queue(ids):
    """The relabel queue (a list of sample ids, as the panel keeps it in its state) with the
    form of its ids checked (:func:`~sei_fiftyone.inputs.check_sample_ids`); a queued sample
    deleted since is no error (it is no longer shown)."""
    return [] if ids is None else check_sample_ids(None, ids, "queued sample")


def run_sample(dataset, brain_key, sample_id):
    """``sample_id`` if it is the id of a sample scored by the run; ValueError otherwise
    (:func:`~sei_fiftyone.inputs.check_sample_ids`)."""
    if not isinstance(sample_id, str):
        raise ValueError(f"Not a sample id: {sample_id!r}"[:80])
    return check_sample_ids(_scored(dataset, brain_key), sample_id, f"sample of SEI run '{brain_key}'")[0]


def check_undecided(sample_id, tags, label_field):
    """ValueError when the sample's ``tags`` hold a review decision on ``label_field``."""
    decided = [t for t in review_tags(label_field) if t in tags]
    if decided:
        raise ValueError(f"Sample {sample_id!r} was already reviewed ({decided[0]}); untag it to review it again")


def _decide(dataset, brain_key, sample_id, accepted):
    with exclusive(dataset):
        return _decide_one(dataset, brain_key, sample_id, accepted)


def _decide_one(dataset, brain_key, sample_id, accepted):
    config, _ = _run(dataset, brain_key)
    sample_id = run_sample(dataset, brain_key, sample_id)
    sample = dataset.select([sample_id])
    keep, drop = review_tags(config.label_field) if accepted else review_tags(config.label_field)[::-1]
    check_undecided(sample_id, sample.first().tags, config.label_field)  # e.g. a second click on a row answered
    changed = apply_suggestions(sample, brain_key) if accepted else 0
    sample.untag_samples([drop, DEFAULT_TAG])
    sample.tag_samples(keep)
    return changed


def accept(dataset, brain_key, sample_id):
    """Apply the run's suggestion to one sample (old label kept in ``<label_field>_original``),
    tag it ``<label_field>_accepted``; returns 1 if its label changed, else 0."""
    return _decide(dataset, brain_key, sample_id, accepted=True)


def reject(dataset, brain_key, sample_id):
    """Keep the given label of one sample and tag it ``<label_field>_rejected``."""
    return _decide(dataset, brain_key, sample_id, accepted=False)


def edit_request(dataset, brain_key, sample_id):
    """What hands one queued sample to FiftyOne's own label editor (the Annotate tab of the
    sample view): ``{"id", "field_path", "label_id", "label"}``, the parameters of the App's
    built-in ``annotate`` operator plus the label as it is now (``label``), which the panel keeps
    to recognise the edit (:func:`record_edits`).

    The App edits only fields with an annotation label schema (``dataset.label_schemas``; its
    Annotate tab otherwise asks to "Add schema"): a label field without one gets FiftyOne's
    generated schema with the run's classes, activated (:func:`ensure_label_schema`); the samples
    are not written.

    Raises:
        ValueError: not a sample of the run, a sample already reviewed, or one without a label
    """
    config, results = _run(dataset, brain_key)
    sample_id = run_sample(dataset, brain_key, sample_id)
    tags, label = dataset.select([sample_id]).values(["tags", config.label_field])
    check_undecided(sample_id, tags[0], config.label_field)
    if label[0] is None:
        raise ValueError(f"Sample {sample_id!r} has no '{config.label_field}' label to edit")
    ensure_label_schema(dataset, config.label_field, results.classes)
    return {"id": sample_id, "field_path": config.label_field, "label_id": label[0].id, "label": label[0].label}


#: Classes up to which the App's label schema shows radio buttons (more: a dropdown).
RADIO_CLASSES = 12


def ensure_label_schema(dataset, label_field, classes):
    """Give ``label_field`` an active annotation label schema for the App's editor, if it has none:
    FiftyOne's generated one (``generate_label_schemas``) with ``classes`` to choose from. A schema
    the user set is left as it is (only activated). Returns whether anything changed."""
    with exclusive(dataset):
        dataset.reload()
        changed = False
        if label_field not in dataset.label_schemas:
            schema = dataset.generate_label_schemas(label_field, scan_samples=False)
            schema.update(classes=[str(c) for c in classes],
                          component="radio" if len(classes) <= RADIO_CLASSES else "dropdown")
            dataset.update_label_schema(label_field, schema)
            changed = True
        if label_field not in dataset.active_label_schemas:
            dataset.activate_label_schemas(label_field)
            changed = True
        return changed


def record_edits(dataset, brain_key, pending):
    """Record as decisions the edits made in the App's label editor since the hand-off.

    ``pending`` maps sample ids to the label each had when it was handed to the editor
    (:func:`edit_request`). A sample whose label now differs counts as a decision like
    :func:`accept`: the label it replaced is kept in ``<label_field>_original`` (only the first
    time, as ``accept`` keeps it), it is tagged ``<label_field>_accepted`` and leaves the relabel
    queue. One change under the dataset's write lease.

    Returns:
        ``(decided, still_pending)``: the ids recorded, and ``pending`` without them and without
        samples decided or deleted meanwhile

    Raises:
        ValueError: ``pending`` is not a mapping of sample ids to labels
    """
    if not pending:
        return [], {}
    if not isinstance(pending, dict) or not all(isinstance(v, str) for v in pending.values()):
        raise ValueError(f"Labels waiting for an edit must map sample ids to labels, got {pending!r}"[:160])
    check_sample_ids(None, list(pending), "sample being edited")
    with exclusive(dataset):
        config, _ = _run(dataset, brain_key)
        accepted, rejected = review_tags(config.label_field)
        view = _scored(dataset, brain_key).select(list(pending))
        ids, tags, labels = view.values(["id", "tags", f"{config.label_field}.label"])
        open_ids = [i for i, t in zip(ids, tags) if accepted not in t and rejected not in t]
        edited = [i for i, lab in zip(ids, labels) if i in open_ids and lab != pending[i]]
        if edited:
            originals = {i: fol.Classification(label=pending[i]) for i in edited}
            keep_originals(dataset.select(edited), config.label_field, originals)
            done = dataset.select(edited)
            done.untag_samples([rejected, DEFAULT_TAG])
            done.tag_samples(accepted)
    return edited, {i: lab for i, lab in pending.items() if i in open_ids and i not in edited}


def skip(queue, sample_id):
    """The queue with ``sample_id`` moved to its end (decided later; nothing is written)."""
    queue = check_queue(queue)
    if sample_id not in queue:
        raise ValueError(f"Sample {sample_id!r} is not in the relabel queue")
    return [i for i in queue if i != sample_id] + [sample_id]


def rerun_params(dataset, brain_key):
    """Parameters of ``@sei/fiftyone/compute_sei`` that repeat the run on the current labels
    (same key, overwriting it; a run on a local checkpoint as the form's ``checkpoint`` and
    ``arch``); ``delegate`` is set for a run on more than
    :data:`DELEGATE_IMAGES_ABOVE` images.

    Raises:
        ValueError: the run was given an option that could not be recorded
    """
    config, results = _run(dataset, brain_key)
    kwargs = config.compute_kwargs()
    params = {k: kwargs[k] for k in ("label_field", "model", "epochs", "threshold", "head", "score")}
    if kwargs["embeddings_field"] is not None:  # the stored vectors: no need to embed again
        params.update(model=EMBEDDINGS_MODEL, embeddings_field=kwargs["embeddings_field"])
    else:
        params.update({k: kwargs[k] for k in ("mode", "image_size", "device") if kwargs.get(k) is not None})
        if isinstance(params["model"], str) and params["model"].startswith(ZOO + ":"):  # the form's zoo fields
            params.update(model=ZOO, zoo_model=params["model"][len(ZOO) + 1:])
            params.pop("image_size", None)
        elif params["model"] not in choice_names():  # a local checkpoint: the form's own fields
            params.update(model=CHECKPOINT, checkpoint=params["model"])
            if kwargs.get("arch") is not None:
                params["arch"] = kwargs["arch"]
    long_run = config.mode != "embeddings" and results.num_samples > DELEGATE_IMAGES_ABOVE
    return {**params, "brain_key": brain_key, "overwrite": True, DELEGATE: bool(long_run)}
