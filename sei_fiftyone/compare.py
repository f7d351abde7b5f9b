"""Compare an SEI run with confident learning on the same samples.

Confident learning (Northcutt et al., JAIR 2021) is cleanlab's ``find_label_issues`` on
*out-of-sample* predicted probabilities. By default they come from a K-fold cross-validated
logistic regression (``sklearn.model_selection.cross_val_predict``) on the vectors the run
trained on (its embeddings field); a field of probabilities computed elsewhere can be named
instead. The comparison writes, beside the run's fields (names from
:func:`sei_fiftyone.runs.comparison_names`, refused by the brain-key rule to other runs):

    <brain_key>_cl                   float, cleanlab's label quality score (lower = more suspect)
    <brain_key>_cl_mislabeled        bool, flagged by find_label_issues
    <brain_key>_cl_agreement         Classification, who flagged the sample: "both", "SEI only",
                                     "CL only" (no label: neither), so the grid shows it at a glance
    <brain_key>_cl_mistakenness      float, FiftyOne Brain's ``compute_mistakenness`` of the label
                                     given the run's predictions (higher = more suspect)
    <brain_key>_cl_disagreements     saved view: samples flagged by exactly one of SEI and confident
                                     learning, lowest SEI score (most suspect) first

FiftyOne Brain's mistakenness is what FiftyOne users run to find label mistakes: one snapshot of
a model's predictions, ``(m * confidence + 1) / 2`` with ``m = 1`` where the prediction differs
from the label and ``-1`` where it agrees. It runs on the run's own predictions
(``<brain_key>_suggestion``: the model's label and probability) unless a ``predictions_field`` is
named, through Brain's own ``compute_mistakenness`` on a temporary clone of the compared samples
(so the dataset is written only by the comparison's journaled write). A sample counts as flagged
by it above :data:`MISTAKENNESS_CUTOFF` (0.5: the prediction differs from the label).

and records itself as the custom run ``<brain_key>_cl`` (``dataset.list_runs()``), which
:func:`get_comparison` reads back. Comparing again replaces the previous comparison;
deleting or renaming the SEI run deletes or renames it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import fiftyone.core.runs as fors
from sei.cross_validation import kfold_probs
from sei.metrics import detection_metrics
from sei.validation import check_int_param, check_pred_probs

from .inputs import classification_fields, embeddings_fields, read_vectors
from .runs import (SEI, CLComparisonConfig, Phases, _recordable, agreement_labels, comparison_names, dataset_of,
                   field_names, is_comparison_of, run_outputs, validate_comparison)
from .writeback import classification_docs, comparison_completion, exclusive, field_docs, journaled_write

#: A sample counts as flagged by FiftyOne Brain's mistakenness above this value: in Brain's
#: formula ``(m * confidence + 1) / 2`` it is exactly where the prediction differs from the label.
MISTAKENNESS_CUTOFF = 0.5
#: The detectors of a comparison, as ``get_comparison(...)["metrics"]`` names them.
DETECTORS = ("sei", "cl", "mistakenness")


@dataclass
class _RunSamples:
    """The samples of a run to compare: ids, given labels as indices into ``classes``."""

    view: object
    ids: list
    labels: np.ndarray
    classes: list
    label_field: str


def compare_with_confident_learning(samples, brain_key="sei", *, probs_field=None, embeddings_field=None,
                                    trusted_label_field=None, predictions_field=None, use_logits=False, folds=5,
                                    seed=0, progress=None, **find_label_issues_kwargs):
    """Run confident learning and FiftyOne Brain's mistakenness on the samples of an SEI run and
    save who flagged what.

    Args:
        samples: the dataset, or a view of it (only the run's scored samples in it are compared)
        brain_key ("sei"): the SEI run
        probs_field (None): a vector field of out-of-sample predicted probabilities, one column per
            class of the run (``load_brain_results(brain_key).classes``, in that order), rows
            summing to 1. Default: K-fold logistic regression on ``embeddings_field``
        embeddings_field (None): the vectors to cross-validate on; default the run's embeddings field
        trusted_label_field (None): a ``Classification`` field of trusted labels; adds precision,
            recall, F1 and AUROC of the three detectors (a sample is mislabeled where its trusted
            label differs from the run's label field)
        predictions_field (None): a ``Classification`` field of predictions for Brain's
            ``compute_mistakenness`` (with ``confidence``, or ``logits`` and ``use_logits=True``);
            default the run's own ``<brain_key>_suggestion``
        use_logits (False): Brain's ``use_logits``: mistakenness from the predictions' logits
        folds (5): number of cross-validation folds
        seed (0): seed of the fold split
        progress (None): a callable ``progress(fraction, label)`` told each phase ("read",
            "confident learning", "mistakenness", "write"), e.g. a delegated operator's
            ``ctx.set_progress``; the seconds of each are recorded in the comparison's results
            (``dataset.load_run_results("<brain_key>_cl").timings``)
        **find_label_issues_kwargs: passed on to ``cleanlab.filter.find_label_issues``
            (e.g. ``filter_by="prune_by_class"``; ``n_jobs`` defaults to 1 here)

    Returns:
        the comparison, as :func:`get_comparison` returns it

    Raises:
        ValueError: no SEI run ``brain_key``, names the comparison would overwrite, a run without
            stored vectors and no ``probs_field``, a malformed probabilities field, a bad trusted
            label field or ``folds``; nothing is written then
    """
    from sei.compat import import_cleanlab

    import_cleanlab()  # keeps the warning filters (a plain first import of cleanlab silences them all)
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    dataset = dataset_of(samples)
    with exclusive(dataset):  # a killed earlier write is repaired before the run is read
        validate_comparison(dataset, brain_key)
    phases = Phases(progress, PHASE_SPANS)
    with phases.phase("read"):
        run = _run_samples(samples, brain_key)
        folds = check_int_param(folds, "folds", 2, "cross-validation needs at least 2 folds")
        _check_trusted_field(dataset, run, trusted_label_field)
        pred_field = _predictions_field(dataset, brain_key, run, predictions_field, trusted_label_field)
        if not isinstance(use_logits, bool):
            raise TypeError(f"use_logits must be True or False, got {use_logits!r}")
        if probs_field is not None:
            probs = read_probs(run.view, probs_field, run.classes)
            embeddings_field = None
        else:
            embeddings_field = _embeddings_field(dataset, brain_key, embeddings_field)
            features = _read_embeddings(run.view, embeddings_field)
    with phases.phase("confident learning"):
        if probs_field is None:
            probs = kfold_probs(run.labels, features=features, num_classes=len(run.classes), folds=folds, seed=seed)
        quality = get_label_quality_scores(run.labels, probs)
        # One process unless asked (same result): its default forks a multiprocessing pool, which
        # kills the App's server when the operator runs there.
        flags = find_label_issues(run.labels, probs, **{"n_jobs": 1, **find_label_issues_kwargs})
    with phases.phase("mistakenness"):
        mistakenness = brain_mistakenness(run.view, run.label_field, pred_field, use_logits=use_logits)
    config = CLComparisonConfig(
        brain_key=brain_key, label_field=run.label_field, classes=list(run.classes),
        probs_field=probs_field, embeddings_field=embeddings_field, trusted_label_field=trusted_label_field,
        predictions_field=predictions_field, use_logits=use_logits, folds=folds, seed=seed,
        find_label_issues_kwargs=_recordable(find_label_issues_kwargs))
    phases.step("write", 0.0)
    with exclusive(dataset):  # checked again: another writer may have changed the names meanwhile
        validate_comparison(dataset, brain_key)
        _write(dataset, brain_key, run, quality, flags, mistakenness, config, phases.seconds)
    phases.step("write", 1.0)
    return get_comparison(dataset, brain_key)


#: The share of a comparison's progress each phase covers (:class:`sei_fiftyone.runs.Phases`).
PHASE_SPANS = {"read": (0.0, 0.1), "confident learning": (0.1, 0.6), "mistakenness": (0.6, 0.9),
               "write": (0.9, 1.0)}


def _predictions_field(dataset, brain_key, run, field, trusted):
    """The ``Classification`` field of predictions Brain's mistakenness reads (default the run's
    suggestions)."""
    if field is None:
        return field_names(brain_key)[2]
    fields = [f for f in classification_fields(dataset) if f not in (run.label_field, trusted)
              and f not in comparison_names(brain_key).fields]
    if field not in fields:
        raise ValueError(f"predictions_field must be a Classification field of predictions other than the run's "
                         f"label field '{run.label_field}' and the trusted labels; got {field!r}, available: "
                         f"{fields or 'none'} (leave it unset to use the run's '{field_names(brain_key)[2]}')")
    return field


def brain_mistakenness(view, label_field, pred_field, *, use_logits=False):
    """FiftyOne Brain's ``compute_mistakenness`` of ``label_field`` given ``pred_field`` on the
    samples of ``view``, as an (N,) array in the order of ``view.values("id")``.

    Brain writes its field (and a brain run) sample by sample; here it runs on a temporary,
    non-persistent clone of the two fields (same sample ids), deleted afterwards, so the
    dataset is only written by the comparison's journaled write.

    Raises:
        ValueError: a prediction without the ``confidence`` (or, with ``use_logits``, the
            ``logits``) that Brain needs, named with the fix
    """
    import fiftyone as fo
    import fiftyone.brain as fob
    import fiftyone.core.utils as fou

    ids = view.values("id")
    with fou.SetAttributes(fo.config, show_progress_bars=False):
        tmp = view.select_fields([label_field, pred_field]).clone()
    try:
        try:
            fob.compute_mistakenness(tmp, pred_field, label_field, mistakenness_field="mistakenness",
                                     use_logits=use_logits, progress=False)
        except ValueError as e:
            what = "logits" if use_logits else "confidence"
            raise ValueError(f"FiftyOne Brain's compute_mistakenness refused predictions field '{pred_field}': {e}. "
                             f"Every prediction needs a {what}" + ("" if use_logits else
                             " (or pass use_logits=True for predictions with logits)")) from None
        by_id = dict(zip(*tmp.values(["id", "mistakenness"])))
    finally:
        tmp.delete()
    return np.array([np.nan if by_id.get(i) is None else float(by_id[i]) for i in ids], dtype=np.float64)


def _run_samples(samples, brain_key):
    dataset = dataset_of(samples)
    label_field = dataset.get_brain_info(brain_key).config.label_field
    classes = list(dataset.load_brain_results(brain_key, cache=False).classes)
    view = samples.exists(field_names(brain_key)[0]).exists(label_field)
    ids, names = view.values(["id", f"{label_field}.label"])
    index = {c: k for k, c in enumerate(classes)}
    unknown = sorted({n for n in names if n not in index})
    if unknown:
        raise ValueError(f"Labels {unknown[:5]} of '{label_field}' are not classes of run '{brain_key}' "
                         f"({classes}); rerun compute_sei on the current labels first")
    labels = np.array([index[n] for n in names], dtype=np.int64)
    if len(np.unique(labels)) < 2:
        raise ValueError(f"Run '{brain_key}' has {len(ids)} labelled, scored sample(s) in these samples with "
                         f"{len(np.unique(labels))} class(es); confident learning needs at least 2 classes")
    return _RunSamples(view, ids, labels, classes, label_field)


def _check_trusted_field(dataset, run, field):
    if field is None:
        return
    written = run_outputs(dataset)
    if field in written:
        raise ValueError(f"trusted_label_field '{field}' is written by an SEI run (its suggestions are the "
                         "detector's own output, so measuring the detector against them is circular); name a "
                         "field of labels checked independently")
    fields = [f for f in classification_fields(dataset) if f != run.label_field and f not in written]
    if field not in fields:
        raise ValueError(f"trusted_label_field must be a Classification field other than the run's label field "
                         f"'{run.label_field}'; got {field!r}, available: {fields or 'none'}")
    if not len(run.view.exists(field)):
        raise ValueError(f"No compared sample has a label in trusted_label_field '{field}'")


def _embeddings_field(dataset, brain_key, field):
    field = field or dataset.get_brain_info(brain_key).config.embeddings_field
    if field is None:
        raise ValueError(
            f"Run '{brain_key}' trained on images and stored no embeddings, so there is nothing to cross-validate "
            "a classifier on. Pass probs_field=<a field of out-of-sample probabilities> or "
            "embeddings_field=<a vector field>, or rerun compute_sei with embeddings_field='<a new field name>' "
            "to store the run's image features")
    available = embeddings_fields(dataset)
    if field not in available:
        raise ValueError(f"embeddings field '{field}' is not a vector field of the dataset "
                         f"(available: {available or 'none'}); pass embeddings_field=<a vector field>")
    return field


def _read_embeddings(view, field):
    vectors = read_vectors(view, field)
    if vectors is None:
        raise ValueError(f"Some compared samples have no '{field}' vector; compute it for every sample of the "
                         "run, or pass probs_field=<a field of out-of-sample probabilities>")
    return vectors


def read_probs(samples, field, classes):
    """The (N, K) probabilities of a vector field, validated against the run's ``classes``."""
    available = embeddings_fields(samples)
    if field not in available:
        raise ValueError(f"probs_field '{field}' is not a vector field of the dataset (available: "
                         f"{available or 'none'}); store one probability vector per sample first")
    values = samples.values(field)
    missing = sum(v is None for v in values)
    if missing:
        raise ValueError(f"{missing} compared sample(s) have no '{field}' probabilities; store them for every "
                         "sample of the run")
    widths = sorted({np.asarray(v).size for v in values})
    if widths != [len(classes)]:
        raise ValueError(f"probs_field '{field}' has {widths} value(s) per sample but the run has {len(classes)} "
                         f"classes {classes}; store one probability per class, in that order")
    probs = np.stack([np.asarray(v, dtype=np.float64).ravel() for v in values])
    return check_pred_probs(probs, name=f"probs_field '{field}'")


# ----------------------------------------------------------------------------- reading back
def get_comparison(samples, brain_key="sei"):
    """The confident-learning comparison of run ``brain_key``, or None when there is none.

    Counts and metrics are computed from the fields as they are now (so they follow a moved
    SEI cutoff): ``n_compared``, ``n_sei_flagged``, ``n_cl_flagged``, ``n_mistakenness_flagged``,
    ``n_both``, ``n_sei_only``, ``n_cl_only``, ``n_disagree`` (the size of the saved view
    ``view_name``), the field names ``cl_field`` (flag), ``cl_score_field``,
    ``agreement_field`` and ``mistakenness_field``, the options it ran with, ``timings`` (seconds
    of its phases), and, when a trusted label field was named, ``metrics``: ``{"sei": {...},
    "cl": {...}, "mistakenness": {...}}`` with ``precision``, ``recall``, ``f1``, ``auroc`` and
    ``n`` (samples with a trusted label). A comparison stored by an earlier version has no
    mistakenness: its entries are missing.
    """
    dataset = dataset_of(samples)
    if not is_comparison_of(dataset, brain_key):
        return None
    names = comparison_names(brain_key)
    info = dataset.get_run_info(names.run_key)
    cfg = info.config
    score_field, flag_field, _ = field_names(brain_key)
    compared = dataset.exists(names.flag).exists(flag_field)
    sei, cl = (np.array(v, dtype=bool) for v in compared.values([flag_field, names.flag]))
    out = {"brain_key": brain_key, "run_key": names.run_key, "cl_field": names.flag, "cl_score_field": names.score,
           "view_name": names.view, "n_compared": int(sei.size), "n_sei_flagged": int(sei.sum()),
           "n_cl_flagged": int(cl.sum()), "n_both": int((sei & cl).sum()), "n_sei_only": int((sei & ~cl).sum()),
           "n_cl_only": int((cl & ~sei).sum()), "n_disagree": int((sei != cl).sum()),
           "agreement_field": names.agreement, "timestamp": info.timestamp.isoformat()}
    out.update({k: getattr(cfg, k, None) for k in ("label_field", "probs_field", "embeddings_field",
                                                     "trusted_label_field", "predictions_field", "use_logits",
                                                     "folds", "seed")})
    schema = dataset.get_field_schema()
    with_mistakenness = names.mistakenness in schema
    if with_mistakenness:
        m = np.array(compared.values(names.mistakenness), dtype=np.float64)
        out.update(mistakenness_field=names.mistakenness, n_mistakenness_flagged=int(np.sum(m > MISTAKENNESS_CUTOFF)))
    out["timings"] = dict(getattr(dataset.load_run_results(names.run_key, cache=False), "timings", None) or {})
    trusted = cfg.trusted_label_field
    if trusted is not None and trusted in schema:
        out["metrics"] = _metrics(compared.exists(trusted), brain_key, cfg.label_field, trusted, with_mistakenness)
    return out


def _metrics(view, brain_key, label_field, trusted, with_mistakenness=True):
    """Precision / recall / F1 of each detector's flags and AUROC of its score
    (:func:`sei.metrics.detection_metrics`; mistakenness negated, as higher is more suspect there)."""
    score_field, flag_field, _ = field_names(brain_key)
    names = comparison_names(brain_key)
    given, truth_labels, sei_score, sei_flag, cl_score, cl_flag = view.values(
        [f"{label_field}.label", f"{trusted}.label", score_field, flag_field, names.score, names.flag])
    truth = np.array([g != t for g, t in zip(given, truth_labels)], dtype=bool)
    detectors = [("sei", sei_flag, sei_score), ("cl", cl_flag, cl_score)]
    if with_mistakenness:
        m = np.array(view.values(names.mistakenness), dtype=np.float64)
        detectors.append(("mistakenness", m > MISTAKENNESS_CUTOFF, -m))
    out = {}
    for name, flags, score in detectors:
        m = detection_metrics(flags, score, truth)
        out[name] = {k: m[k] for k in ("precision", "recall", "f1", "auroc")} | {"n": int(truth.size)}
    return out


# ----------------------------------------------------------------------------- writing
def _write(dataset, brain_key, run, quality, flags, mistakenness, config, timings):
    """Replace the comparison's fields, run and saved view as one journaled switch
    (:func:`sei_fiftyone.writeback.journaled_write`): a failure or a kill leaves the previous
    comparison or the new one, never new flags under the old comparison's config."""
    names = comparison_names(brain_key)
    sei_flags = run.view.values(field_names(brain_key)[1])
    agreement = classification_docs(None if a is None else (a, None) for a in agreement_labels(sei_flags, flags))
    docs = field_docs(run.ids, {names.score: [float(q) for q in quality], names.flag: [bool(f) for f in flags],
                                names.agreement: agreement,
                                names.mistakenness: [None if np.isnan(v) else float(v) for v in mistakenness]})
    results = fors.RunResults(dataset, config, names.run_key, n_compared=len(run.ids), n_cl_flagged=int(np.sum(flags)),
                              timings=dict(timings))
    kinds = {names.score: "float", names.flag: "bool", names.agreement: "classification",
             names.mistakenness: "float"}
    journaled_write(dataset, names.run_key, kinds, docs, comparison_completion(brain_key, config, results))


def list_comparisons(samples):
    """Brain keys of the SEI runs of a collection that have a confident-learning comparison."""
    return [k for k in dataset_of(samples).list_brain_runs(type=SEI) if is_comparison_of(samples, k)]
