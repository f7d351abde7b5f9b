"""SEI as a FiftyOne Brain run: ``compute_sei`` and its Config / Method / Results triad.

Algorithm (see ``sei.recorder``): train a classifier on the given labels and record,
for every sample i and epoch t, the signed entropy of its predicted distribution

    SE_t(i) = +H(p_t(i)) if the given label is the argmax, -H(p_t(i)) otherwise
    SEI(i)  = sum_t SE_t(i)

A mislabeled sample is fitted late, so it spends many epochs predicted as another class
with a low entropy: its SEI is strongly negative. LOWER = MORE LIKELY MISLABELED. The
cutoff is ``sei.compute_threshold`` (``"auto"``: zero for signed scores; ``"aux_mean"``:
the mean score of auxiliary samples relabelled to a pseudo-class, as in the paper).

Writes three fields, in bulk, only after training succeeded:

    <brain_key>               float, the score (None for skipped samples)
    <brain_key>_mislabeled    bool, score < threshold
    <brain_key>_suggestion    Classification, the model's label and its probability

and a saved view ``<brain_key>_most_likely_mislabeled`` (flagged samples, lowest first).
The new values are staged beside the previous run and then switched in, so a failure or a
kill leaves the previous run (see "Write-back" below and :func:`write_values`).
The Config class lives here, in an importable module, so that ``get_brain_info`` and
``load_brain_results`` work in any process, the App's included.
"""

from __future__ import annotations

import logging

import numpy as np

import fiftyone.core.brain as fob
import fiftyone.core.fields as fof
import fiftyone.core.labels as fol
from fiftyone import ViewField as F
from sei.constants import DEFAULT_SCORE, HEADS

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "efficientnet-lite0"
DEFAULT_EPOCHS = 10
DEFAULT_HEAD = "linear"
MODEL_CHOICES = ("efficientnet-lite0", "embeddings")
SAVED_VIEW_SUFFIX = "_most_likely_mislabeled"


def field_names(brain_key):
    """The fields a run with this key writes: (score, flag, suggestion)."""
    return brain_key, f"{brain_key}_mislabeled", f"{brain_key}_suggestion"


def saved_view_name(brain_key):
    """Name of the saved view of a run: ``<brain_key>_most_likely_mislabeled``."""
    return f"{brain_key}{SAVED_VIEW_SUFFIX}"


def classification_fields(samples):
    """Names of the top-level ``Classification`` fields of a collection."""
    schema = samples.get_field_schema(embedded_doc_type=fol.Classification)
    return sorted(schema)


def embeddings_fields(samples):
    """Names of top-level vector/array fields that can serve as embeddings."""
    schema = samples.get_field_schema()
    out = []
    for name, field in schema.items():
        if isinstance(field, (fof.VectorField, fof.ArrayField)):
            out.append(name)
        elif isinstance(field, fof.ListField) and isinstance(field.field, (fof.FloatField, fof.IntField)):
            out.append(name)
    return sorted(out)


def validate_brain_key(samples, brain_key):
    """Refuse a ``brain_key`` whose run would overwrite something that is not its own.

    The run writes ``field_names(brain_key)`` and the saved view
    ``saved_view_name(brain_key)``. Rerunning an existing SEI run of that key reuses
    them; otherwise none of them may exist (``ground_truth``, ``filepath``, ``tags``,
    ``id``, the fields of another run, ...). A key held by a run of another method is
    refused too. Used by :func:`compute_sei` and by the App's form and operator.

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        brain_key: the proposed run key

    Raises:
        ValueError: naming the key, what it collides with and what to do instead
    """
    if not isinstance(brain_key, str) or not brain_key.isidentifier():
        raise ValueError(f"brain_key must be a valid identifier (letters, digits, _), got {brain_key!r}")
    dataset = samples._root_dataset
    if brain_key in dataset.list_brain_runs():
        config = dataset.get_brain_info(brain_key).config
        if isinstance(config, SEIConfig):
            return
        raise ValueError(f"brain_key '{brain_key}' is a {type(config).__name__} run of this dataset; choose "
                         f"another brain_key, or delete that run first (dataset.delete_brain_run('{brain_key}'))")
    schema = dataset.get_field_schema(include_private=True)
    taken = [f for f in field_names(brain_key) if f in schema]
    if taken:
        raise ValueError(
            f"brain_key '{brain_key}' would overwrite the existing field(s) {', '.join(repr(f) for f in taken)}, "
            f"which are not the fields of an SEI run '{brain_key}' (an SEI run writes {list(field_names(brain_key))}); "
            "choose another brain_key (e.g. 'sei' or 'sei_2'), or rename or delete those fields first"
        )
    view = saved_view_name(brain_key)
    if dataset.has_saved_view(view):
        raise ValueError(f"brain_key '{brain_key}' would overwrite the saved view '{view}'; choose another "
                         "brain_key, or rename or delete that saved view first")


def compute_sei(
    samples,
    label_field,
    *,
    brain_key="sei",
    model=DEFAULT_MODEL,
    embeddings_field=None,
    mode=None,
    epochs=None,
    threshold="auto",
    score=DEFAULT_SCORE,
    batch_size=128,
    lr=None,
    seed=0,
    classes=None,
    head=DEFAULT_HEAD,
    progress=None,
    **train_kwargs,
):
    """Find likely mislabeled samples from the training dynamics of a classifier.

    Trains a classifier on ``label_field`` over the images of ``samples`` (or on the
    vectors stored in ``embeddings_field``), records the Signed Entropy Integral of
    every sample, and writes ``<brain_key>`` (float, lower = more likely mislabeled),
    ``<brain_key>_mislabeled`` (bool) and ``<brain_key>_suggestion``
    (:class:`fiftyone.core.labels.Classification`: the model's label and confidence).
    The fields are written in bulk after training, beside the previous run and then
    switched in, so a failed run leaves the dataset as it was; rerunning with the same
    ``brain_key`` overwrites the previous run. A ``brain_key`` whose fields or saved
    view already exist without being an SEI run of that key is refused
    (:func:`validate_brain_key`), as is a run in which no sample could be used. A write
    interrupted by a kill is repaired when compute_sei next runs on the dataset: a
    partial write is dropped and the previous run restored, or a run whose values were
    all written is completed (:func:`recover_interrupted_writes`). The run is
    registered as a brain run (``list_brain_runs``, ``load_brain_results``,
    ``delete_brain_run`` all work) and the flagged samples, most likely mislabeled
    first, are saved as the view ``<brain_key>_most_likely_mislabeled``.

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection` (dataset or view)
        label_field: the ``Classification`` field holding the labels to check
        brain_key ("sei"): the run key, also the name of the score field; must not name
            an existing field that is not this run's (see :func:`validate_brain_key`)
        model ("efficientnet-lite0"): the image model (``"efficientnet-lite0"`` ships
            its weights with pip, so it works offline; any model name accepted by
            ``sei.train``), or ``"embeddings"`` together with ``embeddings_field``
        embeddings_field (None): a vector field to train on instead of the images. If
            no such field exists yet, ``model`` embeds the images (frozen) and the
            vectors are stored there when the run succeeds, so later runs and
            ``suggest_relabels`` (kNN graph) reuse them
        mode (None): ``"frozen"`` (default for images), ``"finetune"``, or
            ``"embeddings"`` (implied by ``embeddings_field``)
        epochs (None): training epochs; default 10 for the linear head, 150 (the
            paper's) for the prompt head
        threshold ("auto"): ``"auto"``, ``"aux_mean"``, ``"aux_quantile"``, ``"zero"``,
            ``"gmm"`` or a number; see ``sei.compute_threshold``
        score (``sei.DEFAULT_SCORE``, "aum_prob"): which score to write: a
            training-dynamics score (``sei.SCORE_NAMES``; "sei" is the paper's) or a
            neighbour-label score (``sei.FEATURE_SCORES``: "aum_prob_knn" averages
            "aum_prob" with the label agreement of each sample's 20 nearest neighbours in
            the features the model trained on)
        batch_size (128): mini-batch size
        lr (None): learning rate; default 0.002 for the linear head, 1e-3 (the
            paper's) for the prompt head
        seed (0): random seed
        classes (None): the class list; default the distinct labels, sorted
        head ("linear"): the classifier ``sei.train`` fits on the frozen features:
            ``"linear"`` (softmax regression on standardised features; fast, and the
            better detector on the bundled CIFAR-10N sample) or ``"prompt"`` (the
            paper's CLIP-style cosine prompt head). With an auxiliary-class threshold
            (``"aux_mean"``, ``"aux_quantile"``) a second run without the pseudo-class
            scores the samples the first one relabelled
        progress (None): whether to render a progress bar (True/False/None for the
            FiftyOne default), or a callable ``progress(fraction, label)``
        **train_kwargs: passed on to :func:`sei.train` (``image_size``,
            ``lr_schedule``, ``checkpoint_dir``, ...)

    Returns:
        a :class:`SEIResults`

    Raises:
        ValueError: a bad argument or ``brain_key``, or no usable sample (every image
            unreadable); nothing is written then

    Example::

        import fiftyone.zoo as foz
        import sei_fiftyone as sfo

        results = sfo.compute_sei(dataset, "ground_truth", epochs=10)
        view = sfo.sorted_view(dataset)          # flagged, most likely mislabeled first
    """
    from . import _engine

    recover_interrupted_writes(samples)
    validate_brain_key(samples, brain_key)
    # FiftyOne Brain's convention: an embeddings field that does not exist yet is computed
    # with `model` and stored (at the end, with the other fields); an existing one is used.
    store_embeddings = (embeddings_field is not None
                        and embeddings_field not in samples._root_dataset.get_field_schema())
    if store_embeddings:
        if model == _engine.EMBEDDINGS_MODEL:
            raise ValueError(f"embeddings field '{embeddings_field}' does not exist; pass model=<an image model> "
                             "to compute and store it, or the name of an existing vector field")
        if mode == "finetune":
            raise ValueError("mode='finetune' changes the encoder while training, so its embeddings cannot be "
                             "stored; use mode='frozen' with embeddings_field, or no embeddings_field")
        mode = "frozen"
        if embeddings_field in field_names(brain_key):
            raise ValueError(f"embeddings_field '{embeddings_field}' is one of the fields the run "
                             f"'{brain_key}' writes {field_names(brain_key)}; choose another name for it")
    elif embeddings_field is not None:
        model = _engine.EMBEDDINGS_MODEL
    if model == _engine.EMBEDDINGS_MODEL:
        if embeddings_field is None:
            raise ValueError("model='embeddings' needs embeddings_field=<a vector field>")
        mode = "embeddings"
    mode = mode or "frozen"
    if head not in HEADS:  # checked here too: the default epochs depend on it
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if epochs is None:
        epochs = _engine.DEFAULT_EPOCHS[head]
    _validate_label_field(samples, label_field)

    config = SEIConfig(
        label_field=label_field,
        model=model,
        embeddings_field=embeddings_field,
        mode=mode,
        epochs=int(epochs),
        threshold=threshold,
        score=score,
        seed=seed,
        head=head,
    )
    brain_method = config.build()
    brain_method.ensure_requirements()
    brain_method.validate_run(samples, brain_key, overwrite=True)

    ids, labels_str = samples.values(["id", f"{label_field}.label"])
    ids = np.asarray(ids)
    has_label = np.array([lab is not None for lab in labels_str], dtype=bool)
    if classes is None:
        classes = sorted({lab for lab in labels_str if lab is not None})
    classes = list(classes)
    if len(classes) < 2:
        raise ValueError(
            f"Field '{label_field}' has {len(classes)} class(es) on these samples; SEI needs at least 2"
        )
    index = {c: k for k, c in enumerate(classes)}
    unknown = sorted({lab for lab in labels_str if lab is not None and lab not in index})
    if unknown:
        raise ValueError(f"Labels {unknown[:5]} of '{label_field}' are not in classes={classes}")
    train_pos = np.flatnonzero(has_label)
    labels = np.array([index[labels_str[i]] for i in train_pos], dtype=np.int64)

    if mode == "embeddings":
        vecs = samples.values(embeddings_field)
        missing = [i for i in train_pos if vecs[i] is None]
        if missing:
            raise ValueError(
                f"{len(missing)} sample(s) have no '{embeddings_field}' embedding; "
                "compute it for every sample or restrict the view"
            )
        inputs = np.stack([np.asarray(vecs[i], dtype=np.float32).ravel() for i in train_pos])
    else:
        paths = samples.values("filepath")
        inputs = [paths[i] for i in train_pos]

    on_epoch_end, bar = _progress_callback(progress, epochs)
    try:
        result = _engine.train(
            inputs, labels, class_names=classes, model=model, mode=mode, epochs=int(epochs),
            threshold=threshold, score=score, seed=seed, on_epoch_end=on_epoch_end,
            progress=bool(progress) if not callable(progress) else False,
            batch_size=batch_size, lr=lr, head=head, **train_kwargs,
        )
    finally:
        if bar is not None:
            bar.close()

    n = len(ids)
    scores = np.full(n, np.nan)
    scores[train_pos] = np.asarray(result.scores, dtype=np.float64)
    flags = np.zeros(n, dtype=bool)
    flags[train_pos] = np.asarray(result.mislabeled, dtype=bool)
    pred_probs = np.asarray(result.pred_probs, dtype=np.float64)
    predicted = np.asarray(result.predicted_labels, dtype=np.int64)
    skipped_pos = train_pos[np.asarray(getattr(result, "skipped", []), dtype=np.int64)]
    if skipped_pos.size:
        logger.warning(
            "SEI skipped %d unreadable image(s) (scored None, not flagged): %s",
            skipped_pos.size,
            ", ".join(samples.select(ids[skipped_pos[:5]].tolist()).values("filepath")),
        )

    if not np.isfinite(scores).any():
        what = (f"all {skipped_pos.size} image(s) could not be read (e.g. "
                f"{', '.join(samples.select(ids[skipped_pos[:3]].tolist()).values('filepath'))})"
                if skipped_pos.size == train_pos.size else "no sample received a finite score")
        raise ValueError(f"SEI found no usable sample: {what}; nothing was written. Fix the file paths "
                         "(or the embeddings), or restrict the view to usable samples")
    score_values = [None if not np.isfinite(s) else float(s) for s in scores]
    flag_values = [bool(f) for f in flags]
    suggestion_values = [None] * n
    skipped_set = set(skipped_pos.tolist())
    for j, pos in enumerate(train_pos):
        if pos in skipped_set or predicted[j] < 0:
            continue
        k = int(predicted[j])
        suggestion_values[pos] = (classes[k], float(pred_probs[j, k]))

    aux = np.asarray(getattr(result, "aux_indices", None) if getattr(result, "aux_indices", None) is not None else [], dtype=np.int64)
    finite = scores[np.isfinite(scores)]
    results = SEIResults(
        samples,
        config,
        brain_key,
        threshold=float(result.threshold),
        score_name=str(getattr(result, "score_name", score)),
        classes=classes,
        num_samples=int(n),
        num_flagged=int(flags.sum()),
        scores_summary=_summary(finite),
        aux_ids=ids[train_pos[aux]].tolist() if aux.size else [],
        skipped_ids=ids[skipped_pos].tolist(),
        train_accuracy=[float(a) for a in (getattr(result, "train_accuracy", None) or [])],
        train_loss=[float(a) for a in (getattr(result, "train_loss", None) or [])],
        backend=brain_method,
    )

    # Everything below writes; nothing above did.
    embeddings = None
    if store_embeddings:
        feats = np.asarray(result.features, dtype=np.float32)
        unread = set(np.asarray(getattr(result, "skipped", []), dtype=np.int64).tolist())
        keep = [j for j in range(len(train_pos)) if j not in unread and np.isfinite(feats[j]).all()]
        embeddings = (embeddings_field, ids[train_pos[keep]].tolist(), [feats[j] for j in keep])
    write_values(samples, brain_key, ids.tolist(), score_values, flag_values, suggestion_values,
                 embeddings=embeddings, run=(brain_method, results))
    return results


# Write-back -------------------------------------------------------------------------------
#
# A run is written beside the previous one and then switched in, so that a failure or a
# kill leaves either the previous run or the new one, never a mix (MongoDB's standalone
# server has no multi-document transactions). The write goes through a temporary
# collection ``tmp.sei_<token>``, which is also the journal of the write (its "meta"
# document records the dataset, the fields, the phase, the owner process and, from the
# commit on, the new run's config and results), and ``tmp.sei_<token>_old``:
#
# 1. stage: the new values (one document per sample; samples left out of a run on a view
#    that hold the run's fields get a ``_remove`` mark) go into ``tmp.sei_<token>`` with
#    one ``insert_many``, and the previous values into ``..._old`` with one server-side
#    aggregation. Nothing on the dataset changes; a failure drops both collections.
# 2. switch (commit: phase "switch"): the fields are declared, then one ``$merge`` sets
#    the new values on the samples by ``_id`` (each sample is updated atomically) and a
#    second removes the fields from the marked samples. A failure rolls back: the fields
#    are removed from the staged samples and the previous values merged back from ``_old``.
# 3. run (phase "run"): the run is registered, its results saved and its saved view
#    written (single-document writes), then the collections are dropped.
#
# A process killed during the write leaves the collections behind. The next compute_sei
# (or write_values) on that dataset finds them, and once their owner is gone (same host:
# the pid no longer runs; another host: no progress for STALE_AFTER_S seconds) drops a
# staged write, rolls an interrupted switch back to the previous run, or completes a run
# whose values were all switched in; collections of datasets that no longer exist are
# dropped. Every step of a rollback or a completion can be repeated, so a kill during the
# repair is repaired the same way.

TMP_PREFIX = "tmp.sei_"
_OLD = "_old"  # suffix of the collection holding the previous run's values
STALE_AFTER_S = 600
_KINDS = {"float": (fof.FloatField, {}), "bool": (fof.BooleanField, {}),
          "classification": (fof.EmbeddedDocumentField, {"embedded_doc_type": fol.Classification}),
          "vector": (fof.VectorField, {})}
_ACTIVE = set()  # names of this process's write collections in use


def _phase(name):
    """Called at each step of the write (``"staged"``, ``"switched"``, ``"registered"``).

    A no-op; the tests replace it to inject failures and kills inside the write phase.
    """


def write_values(samples, brain_key, ids, scores, flags, suggestions, *, embeddings=None, run=None):
    """Write the fields of a run (and register the run) as one switch from the previous run.

    ``ids``, ``scores`` (float or None), ``flags`` (bool) and ``suggestions``
    (``(label, confidence)`` or None) are aligned lists; samples of the dataset that are
    not in ``ids`` lose the run's fields (as when a run is overwritten).

    The values are staged in a temporary collection with one ``insert_many`` and merged
    into the samples by ``_id`` with one server-side ``$merge`` (pymongo on FiftyOne's
    connection: FiftyOne's public ``set_values`` takes about 3x as long at 100,000 samples
    for the suggestions alone, see benchmarks/results/fiftyone_speed.md). A failure or a
    kill before the switch leaves the dataset as it was, a failure during it is rolled
    back, and a kill is repaired by the next call on the dataset (see the comment above
    this function).

    Args:
        samples: the dataset or view of the run
        brain_key: the run key (``field_names(brain_key)`` are written)
        ids, scores, flags, suggestions: aligned per-sample lists
        embeddings (None): ``(field, ids, vectors)`` to store a new vector field too
        run (None): ``(brain_method, results)`` to register the run, save its results and
            its saved view in the same switch
    """
    import datetime
    import json
    import os
    import socket
    import time
    import uuid

    from bson import ObjectId, json_util

    dataset = samples._root_dataset
    recover_interrupted_writes(dataset)
    score_field, flag_field, sugg_field = field_names(brain_key)
    kinds = {score_field: "float", flag_field: "bool", sugg_field: "classification"}
    if embeddings is not None:
        kinds[embeddings[0]] = "vector"
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    docs = {}
    for _id, score, flag, sugg in zip(ids, scores, flags, suggestions):
        if sugg is not None:
            sugg = {"_id": ObjectId(), "_cls": "Classification", "tags": [],
                    "label": sugg[0], "confidence": sugg[1]}
        docs[_id] = {"_id": ObjectId(_id), score_field: score, flag_field: bool(flag), sugg_field: sugg,
                     "last_modified_at": now}
    if embeddings is not None:
        encode = fof.VectorField().to_mongo
        for _id, vec in zip(embeddings[1], embeddings[2]):
            docs[_id][embeddings[0]] = encode(np.asarray(vec))

    meta = {"_id": "meta", "dataset": dataset._sample_collection_name, "brain_key": brain_key,
            "kinds": kinds, "phase": "stage", "host": socket.gethostname(), "pid": os.getpid(),
            "updated": time.time()}
    db = _db()
    name = f"{TMP_PREFIX}{uuid.uuid4().hex}"
    tmp = db[name]
    _ACTIVE.add(name)
    try:
        tmp.insert_one(meta)  # creates the collection: never one without its journal
        try:
            _insert_docs(tmp, list(docs.values()))
            _backup_previous(dataset, tmp, list(kinds), len(docs) < len(dataset))
            _phase("staged")
        except BaseException:
            _drop(tmp)
            raise
        schema = dataset.get_field_schema()
        commit = {"phase": "switch", "updated": time.time(), "declared": [f for f in kinds if f not in schema]}
        if run is not None:
            backend, results = run
            commit["run"] = {
                "config": json.dumps(backend.config.serialize()),
                "results": json_util.dumps(results.serialize()),
                "view_stages": _view_stages(samples),
            }
        tmp.update_one({"_id": "meta"}, {"$set": commit})
        try:
            _declare(dataset, kinds)
            _switch(tmp, dataset)
        except BaseException:
            try:
                _rollback(dataset, tmp, {**meta, **commit})
            except Exception:  # the journal stays: the next run on this dataset rolls back
                logger.exception("Rolling back SEI run '%s' failed; the next compute_sei on this "
                                 "dataset restores the previous run", brain_key)
            raise
        tmp.update_one({"_id": "meta"}, {"$set": {"phase": "run", "updated": time.time()}})
        _phase("switched")
        if run is not None:
            backend, results = run
            try:
                backend.register_run(samples, brain_key, overwrite=True, cleanup=False)
                backend.save_run_results(samples, brain_key, results)
                _phase("registered")
                _save_sorted_view(samples, brain_key)
            except Exception:  # the values are in: the journal lets the next run finish it
                logger.exception("Registering SEI run '%s' failed after its values were written; the "
                                 "next compute_sei on this dataset completes it", brain_key)
                raise
        _drop(tmp)
    finally:
        _ACTIVE.discard(name)
        dataset._reload_docs()


def recover_interrupted_writes(samples):
    """Repair what a killed write of an SEI run left on this dataset; returns the keys repaired.

    Called by :func:`compute_sei` before it does anything else. A write collection
    ``tmp.sei_*`` whose owner is gone is dropped, after rolling an interrupted switch back
    to the previous run (phase ``"switch"``) or completing a run whose values were all
    written (phase ``"run"``). Collections of other live datasets are left to them;
    those of deleted datasets, and any without a journal, are dropped.
    """
    dataset = samples._root_dataset
    db = _db()
    repaired = []
    names = db.list_collection_names(filter={"name": {"$regex": "^" + TMP_PREFIX.replace(".", r"\.")}})
    for name in names:
        if name.endswith(_OLD):
            if name[: -len(_OLD)] not in names:  # its write collection was dropped first
                db.drop_collection(name)
            continue
        tmp = db[name]
        meta = tmp.find_one({"_id": "meta"})
        if meta is not None and not _stale(name, meta):
            continue
        if meta is not None and meta.get("dataset") != dataset._sample_collection_name:
            if db.datasets.find_one({"sample_collection_name": meta.get("dataset")}, {"_id": 1}) is not None:
                continue  # another dataset's: repaired by its own next run
        elif meta is not None:
            dataset.reload()
            if meta.get("phase") == "switch":
                logger.warning("Rolling back the interrupted write of SEI run '%s' (previous run restored)",
                               meta["brain_key"])
                _rollback(dataset, tmp, meta)
            elif meta.get("phase") == "run":
                logger.warning("Completing the interrupted write of SEI run '%s'", meta["brain_key"])
                _roll_forward(dataset, tmp, meta)
            repaired.append(meta["brain_key"])
        _drop(tmp)
    return repaired


def _db():
    import fiftyone.core.odm as foo

    return foo.get_db_conn()


def _stale(name, meta):
    import os
    import socket
    import time


    if meta.get("host") != socket.gethostname():
        return time.time() - float(meta.get("updated", 0)) > STALE_AFTER_S
    pid = int(meta.get("pid", -1))
    if pid == os.getpid():
        return name not in _ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False
    return False


def _insert_docs(tmp, docs):
    """Stage the new values: one ``insert_many`` into the write collection."""
    if docs:
        tmp.insert_many(docs, ordered=False)


def _backup_previous(dataset, tmp, fields, partial):
    """Copy the previous run's values into ``<tmp>_old``; with ``partial`` (a run on some of
    the samples), also stage the removal of the run's fields from the samples left out."""
    match = {"$or": [{f: {"$exists": True}} for f in fields]}
    dataset._sample_collection.aggregate([
        {"$match": match},
        {"$project": {"_id": 1, **{f: 1 for f in fields}}},
        {"$merge": {"into": tmp.name + _OLD, "on": "_id", "whenMatched": "replace", "whenNotMatched": "insert"}},
    ])
    if partial:
        tmp.database[tmp.name + _OLD].aggregate([
            {"$lookup": {"from": tmp.name, "localField": "_id", "foreignField": "_id", "as": "new"}},
            {"$match": {"new": {"$size": 0}}},
            {"$project": {"_id": 1, "_remove": {"$literal": True}}},
            {"$merge": {"into": tmp.name, "on": "_id", "whenMatched": "keepExisting", "whenNotMatched": "insert"}},
        ])


def _merge(source, dataset, when_matched, match=None):
    """One server-side ``$merge`` of ``source``'s sample documents into the samples by ``_id``."""
    source.aggregate([
        {"$match": {"_id": {"$type": "objectId"}, **(match or {})}},
        {"$merge": {"into": dataset._sample_collection_name, "on": "_id",
                    "whenMatched": when_matched, "whenNotMatched": "discard"}},
    ])


def _unset(fields):
    return [{"$unset": list(fields)}, {"$set": {"last_modified_at": "$$NOW"}}]


def _switch(tmp, dataset):
    """Set the new values on the run's samples and remove the fields from samples left out.

    Each sample is updated atomically, and repeating the switch gives the same result.
    """
    fields = list(tmp.find_one({"_id": "meta"})["kinds"])
    _merge(tmp, dataset, "merge", {"_remove": {"$exists": False}})
    _merge(tmp, dataset, _unset(fields), {"_remove": True})


def _drop(tmp):
    tmp.drop()  # the journal first: a stray "_old" copy is dropped by the next recovery
    tmp.database.drop_collection(tmp.name + _OLD)


def _declare(dataset, kinds):
    schema = dataset.get_field_schema()
    for field, kind in kinds.items():
        if field not in schema:
            ftype, kw = _KINDS[kind]
            dataset.add_sample_field(field, ftype, **kw)


def _rollback(dataset, tmp, meta):
    """Put back the previous run's values and drop the fields this write declared."""
    _merge(tmp, dataset, _unset(meta["kinds"]))  # repeatable: the old values come back next
    _merge(tmp.database[tmp.name + _OLD], dataset, [{"$replaceWith": {"$mergeObjects": ["$$ROOT", "$$new"]}},
                                                   {"$set": {"last_modified_at": "$$NOW"}}])
    declared = [f for f in meta.get("declared", []) if f in dataset.get_field_schema()]
    if declared:
        dataset.delete_sample_fields(declared)
    _drop(tmp)
    dataset._reload_docs()


def _roll_forward(dataset, tmp, meta):
    """Finish a write whose values were all switched in: fields, run, results, saved view."""
    import json

    from bson import json_util

    import fiftyone.core.view as fov

    _declare(dataset, meta["kinds"])
    _switch(tmp, dataset)  # repeats the completed switch, to the same result
    run = meta.get("run")
    if run is not None:
        key = meta["brain_key"]
        config = fob.BrainMethodConfig.from_dict(json.loads(run["config"]))
        samples = dataset
        if run.get("view_stages"):
            samples = fov.DatasetView._build(dataset, [json_util.loads(st) for st in run["view_stages"]])
        backend = config.build()
        results = fob.BrainResults.from_dict(json_util.loads(run["results"]), samples, config, key)
        backend.register_run(samples, key, overwrite=True, cleanup=False)
        backend.save_run_results(samples, key, results)
        _save_sorted_view(samples, key)
    dataset._reload_docs()


def _view_stages(samples):
    import fiftyone.core.view as fov
    from bson import json_util

    if not isinstance(samples, fov.DatasetView):
        return None
    return [json_util.dumps(st) for st in samples._serialize(include_uuids=False)]


def _save_sorted_view(samples, brain_key):
    dataset = samples._root_dataset
    name = saved_view_name(brain_key)
    view = _sorted(samples, brain_key, flagged_only=True)
    dataset.save_view(name, view, description=f"SEI run '{brain_key}': flagged samples, most likely mislabeled first", overwrite=True)


def _sorted(samples, brain_key, flagged_only=True):
    score_field, flag_field, _ = field_names(brain_key)
    view = samples.exists(score_field)
    if flagged_only:
        view = view.match(F(flag_field) == True)  # noqa: E712 (a MongoDB expression)
    return view.sort_by(score_field)


def sorted_view(samples, brain_key="sei", *, flagged_only=True):
    """The samples of a run, most likely mislabeled first.

    Args:
        samples: the dataset or view the run was computed on (or any view of it)
        brain_key ("sei"): the run key
        flagged_only (True): keep only samples flagged as mislabeled; ``False`` sorts
            every scored sample

    Returns:
        a :class:`fiftyone.core.view.DatasetView`
    """
    if brain_key not in samples._root_dataset.list_brain_runs():
        raise ValueError(f"No SEI run with brain key '{brain_key}'; run compute_sei first")
    return _sorted(samples, brain_key, flagged_only=flagged_only)


def list_sei_runs(samples):
    """Brain keys of the SEI runs on a collection."""
    return samples.list_brain_runs(type=SEI)


def _summary(finite):
    if finite.size == 0:
        return {}
    q = np.quantile(finite, [0.01, 0.25, 0.5, 0.75, 0.99])
    return {
        "count": int(finite.size),
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "q01": float(q[0]),
        "q25": float(q[1]),
        "median": float(q[2]),
        "q75": float(q[3]),
        "q99": float(q[4]),
    }


def _validate_label_field(samples, label_field):
    fields = classification_fields(samples)
    if label_field not in fields:
        raise ValueError(
            f"label_field must be a Classification field of the collection; got '{label_field}', "
            f"available: {fields or 'none'}"
        )


def _progress_callback(progress, epochs):
    """An ``on_epoch_end`` hook from FiftyOne's ``progress`` convention."""
    if callable(progress):
        def hook(epoch, total, metrics):
            acc = metrics.get("train_accuracy")
            label = f"epoch {epoch}/{total}" + (f", train accuracy {acc:.3f}" if acc is not None else "")
            progress(epoch / max(total, 1), label)
        return hook, None
    import fiftyone as fo

    show = fo.config.show_progress_bars if progress is None else bool(progress)
    if not show:
        return None, None
    import fiftyone.core.utils as fou

    state = {}

    class _Closer:
        def close(self):
            if "bar" in state:
                state["bar"].__exit__(None, None, None)

    def hook(epoch, total, metrics):
        if "bar" not in state:
            state["bar"] = fou.ProgressBar(total=total, progress=True, iters_str="epochs").__enter__()
        state["bar"].set_iteration(min(epoch, total))
    return hook, _Closer()


class SEIConfig(fob.BrainMethodConfig):
    """Configuration of an SEI run.

    Args:
        label_field: the ``Classification`` field that was checked
        model: the model name (or ``"embeddings"``)
        embeddings_field: the vector field trained on, if any
        mode: ``"frozen"``, ``"finetune"`` or ``"embeddings"``
        epochs: training epochs
        threshold: the threshold method or value
        score: the score name
        seed: the random seed
        head: the classifier head, ``"linear"`` or ``"prompt"``
    """

    def __init__(self, label_field=None, model=DEFAULT_MODEL, embeddings_field=None, mode="frozen",
                 epochs=DEFAULT_EPOCHS, threshold="auto", score=DEFAULT_SCORE, seed=0, head=DEFAULT_HEAD, **kwargs):
        super().__init__(**kwargs)
        self.label_field = label_field
        self.model = model
        self.embeddings_field = embeddings_field
        self.mode = mode
        self.epochs = epochs
        self.threshold = threshold
        self.score = score
        self.seed = seed
        self.head = head

    @property
    def type(self):
        return "sei"

    @property
    def method(self):
        return "sei"


class SEI(fob.BrainMethod):
    """The SEI brain method: owns the three output fields and the saved view."""

    def ensure_requirements(self):
        pass

    def get_fields(self, samples, key):
        return list(field_names(key))

    def cleanup(self, samples, key):
        dataset = samples._root_dataset
        schema = dataset.get_field_schema()
        existing = [f for f in field_names(key) if f in schema]
        if existing:
            dataset.delete_sample_fields(existing)
        name = saved_view_name(key)
        if dataset.has_saved_view(name):
            dataset.delete_saved_view(name)

    def rename(self, samples, key, new_key):
        dataset = samples._root_dataset
        schema = dataset.get_field_schema()
        mapping = {o: n for o, n in zip(field_names(key), field_names(new_key)) if o in schema}
        if mapping:
            dataset.rename_sample_fields(mapping)
        old = saved_view_name(key)
        if dataset.has_saved_view(old):
            dataset.delete_saved_view(old)
            _save_sorted_view(dataset, new_key)


class SEIResults(fob.BrainResults):
    """Results of an SEI run.

    Attributes:
        threshold: the cutoff; samples scoring below it are flagged
        score_name: the score written (lower = more likely mislabeled)
        classes: the class list, in the model's output order
        num_samples, num_flagged: counts
        scores_summary: count, mean, std, min, quantiles and max of the scores
        aux_ids: ids of the samples used as auxiliary (pseudo-class) samples
        skipped_ids: ids of samples whose images could not be read
        train_accuracy, train_loss: per-epoch training curves
    """

    def __init__(self, samples, config, brain_key, *, threshold, score_name, classes,
                 num_samples, num_flagged, scores_summary, aux_ids, skipped_ids,
                 train_accuracy, train_loss, backend=None):
        super().__init__(samples, config, brain_key, backend=backend)
        self.threshold = threshold
        self.score_name = score_name
        self.classes = classes
        self.num_samples = num_samples
        self.num_flagged = num_flagged
        self.scores_summary = scores_summary
        self.aux_ids = aux_ids
        self.skipped_ids = skipped_ids
        self.train_accuracy = train_accuracy
        self.train_loss = train_loss

    @property
    def method(self):
        return self.config.method

    def attributes(self):
        return super().attributes() + [
            "threshold", "score_name", "classes", "num_samples", "num_flagged",
            "scores_summary", "aux_ids", "skipped_ids", "train_accuracy", "train_loss",
        ]

    def sorted_view(self, flagged_only=True):
        """The run's samples, most likely mislabeled first."""
        return _sorted(self.samples, self.key, flagged_only=flagged_only)

    @classmethod
    def _from_dict(cls, d, samples, config, brain_key):
        return cls(
            samples, config, brain_key,
            threshold=d["threshold"], score_name=d["score_name"], classes=d["classes"],
            num_samples=d["num_samples"], num_flagged=d["num_flagged"],
            scores_summary=d.get("scores_summary", {}), aux_ids=d.get("aux_ids", []),
            skipped_ids=d.get("skipped_ids", []), train_accuracy=d.get("train_accuracy", []),
            train_loss=d.get("train_loss", []),
        )
