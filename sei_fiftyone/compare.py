"""Compare an SEI run with confident learning on the same samples.

Confident learning (Northcutt et al., JAIR 2021) is cleanlab's ``find_label_issues`` on
*out-of-sample* predicted probabilities. By default they come from a K-fold cross-validated
logistic regression (``sklearn.model_selection.cross_val_predict``) on the vectors the run
trained on (its embeddings field); a field of probabilities computed elsewhere can be named
instead. The comparison writes, beside the run's fields (names from
:func:`sei_fiftyone.runs.comparison_names`, refused by the brain-key rule to other runs):

    <brain_key>_cl                   float, cleanlab's label quality score (lower = more suspect)
    <brain_key>_cl_mislabeled        bool, flagged by find_label_issues
    <brain_key>_cl_disagreements     saved view: samples flagged by exactly one detector

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
from .runs import (SEI, CLComparisonConfig, _recordable, comparison_names, dataset_of, field_names,
                   is_comparison_of, validate_comparison)
from .writeback import comparison_completion, exclusive, field_docs, journaled_write


@dataclass
class _RunSamples:
    """The samples of a run to compare: ids, given labels as indices into ``classes``."""

    view: object
    ids: list
    labels: np.ndarray
    classes: list
    label_field: str


def compare_with_confident_learning(samples, brain_key="sei", *, probs_field=None, embeddings_field=None,
                                    trusted_label_field=None, folds=5, seed=0, **find_label_issues_kwargs):
    """Run confident learning on the samples of an SEI run and save where the two disagree.

    Args:
        samples: the dataset, or a view of it (only the run's scored samples in it are compared)
        brain_key ("sei"): the SEI run
        probs_field (None): a vector field of out-of-sample predicted probabilities, one column per
            class of the run (``load_brain_results(brain_key).classes``, in that order), rows
            summing to 1. Default: K-fold logistic regression on ``embeddings_field``
        embeddings_field (None): the vectors to cross-validate on; default the run's embeddings field
        trusted_label_field (None): a ``Classification`` field of trusted labels; adds precision,
            recall, F1 and AUROC of both detectors (a sample is mislabeled where its trusted label
            differs from the run's label field)
        folds (5): number of cross-validation folds
        seed (0): seed of the fold split
        **find_label_issues_kwargs: passed on to ``cleanlab.filter.find_label_issues``
            (e.g. ``filter_by="prune_by_class"``; ``n_jobs`` defaults to 1 here)

    Returns:
        the comparison, as :func:`get_comparison` returns it

    Raises:
        ValueError: no SEI run ``brain_key``, names the comparison would overwrite, a run without
            stored vectors and no ``probs_field``, a malformed probabilities field, a bad trusted
            label field or ``folds``; nothing is written then
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    dataset = dataset_of(samples)
    with exclusive(dataset):  # a killed earlier write is repaired before the run is read
        validate_comparison(dataset, brain_key)
    run = _run_samples(samples, brain_key)
    folds = check_int_param(folds, "folds", 2, "cross-validation needs at least 2 folds")
    _check_trusted_field(dataset, run, trusted_label_field)
    if probs_field is not None:
        probs = read_probs(run.view, probs_field, run.classes)
        embeddings_field = None
    else:
        embeddings_field = _embeddings_field(dataset, brain_key, embeddings_field)
        probs = kfold_probs(run.labels, features=_read_embeddings(run.view, embeddings_field),
                            num_classes=len(run.classes), folds=folds, seed=seed)
    quality = get_label_quality_scores(run.labels, probs)
    # One process unless asked (same result): its default forks a multiprocessing pool, which
    # kills the App's server when the operator runs there.
    flags = find_label_issues(run.labels, probs, **{"n_jobs": 1, **find_label_issues_kwargs})
    config = CLComparisonConfig(
        brain_key=brain_key, label_field=run.label_field, classes=list(run.classes),
        probs_field=probs_field, embeddings_field=embeddings_field, trusted_label_field=trusted_label_field,
        folds=folds, seed=seed, find_label_issues_kwargs=_recordable(find_label_issues_kwargs))
    with exclusive(dataset):  # checked again: another writer may have changed the names meanwhile
        validate_comparison(dataset, brain_key)
        _write(dataset, brain_key, run.ids, quality, flags, config)
    return get_comparison(dataset, brain_key)


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
    written = {n for key in dataset.list_brain_runs(type=SEI) for n in field_names(key)}
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
    SEI cutoff): ``n_compared``, ``n_sei_flagged``, ``n_cl_flagged``, ``n_both``,
    ``n_sei_only``, ``n_cl_only``, ``n_disagree`` (the size of the saved view ``view_name``),
    the field names ``cl_field`` (flag) and ``cl_score_field``, the options it ran with, and,
    when a trusted label field was named, ``metrics``: ``{"sei": {...}, "cl": {...}}`` with
    ``precision``, ``recall``, ``f1``, ``auroc`` and ``n`` (samples with a trusted label).
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
           "timestamp": info.timestamp.isoformat()}
    out.update({k: getattr(cfg, k, None) for k in ("label_field", "probs_field", "embeddings_field",
                                                     "trusted_label_field", "folds", "seed")})
    trusted = cfg.trusted_label_field
    if trusted is not None and trusted in dataset.get_field_schema():
        out["metrics"] = _metrics(compared.exists(trusted), brain_key, cfg.label_field, trusted)
    return out


def _metrics(view, brain_key, label_field, trusted):
    """Precision / recall / F1 of each detector's flags and AUROC of its score
    (:func:`sei.metrics.detection_metrics`)."""
    score_field, flag_field, _ = field_names(brain_key)
    names = comparison_names(brain_key)
    given, truth_labels, sei_score, sei_flag, cl_score, cl_flag = view.values(
        [f"{label_field}.label", f"{trusted}.label", score_field, flag_field, names.score, names.flag])
    truth = np.array([g != t for g, t in zip(given, truth_labels)], dtype=bool)
    out = {}
    for name, flags, score in (("sei", sei_flag, sei_score), ("cl", cl_flag, cl_score)):
        m = detection_metrics(flags, score, truth)
        out[name] = {k: m[k] for k in ("precision", "recall", "f1", "auroc")} | {"n": int(truth.size)}
    return out


# ----------------------------------------------------------------------------- writing
def _write(dataset, brain_key, ids, quality, flags, config):
    """Replace the comparison's fields, run and saved view as one journaled switch
    (:func:`sei_fiftyone.writeback.journaled_write`): a failure or a kill leaves the previous
    comparison or the new one, never new flags under the old comparison's config."""
    names = comparison_names(brain_key)
    docs = field_docs(ids, {names.score: [float(q) for q in quality], names.flag: [bool(f) for f in flags]})
    results = fors.RunResults(dataset, config, names.run_key, n_compared=len(ids), n_cl_flagged=int(np.sum(flags)))
    journaled_write(dataset, names.run_key, {names.score: "float", names.flag: "bool"}, docs,
                    comparison_completion(brain_key, config, results))


def list_comparisons(samples):
    """Brain keys of the SEI runs of a collection that have a confident-learning comparison."""
    return [k for k in dataset_of(samples).list_brain_runs(type=SEI) if is_comparison_of(samples, k)]
