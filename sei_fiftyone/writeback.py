"""Writing a run's fields: the one place that uses FiftyOne's private storage.

FiftyOne's public ``set_values`` takes 10.1 s to write the suggestions alone for 100,000
samples; this route stages the values in a temporary collection with one ``insert_many``
and switches them in with a server-side ``$merge`` (3.75 s for scores, flags, suggestions
and the run's registration; ``benchmarks/fiftyone_speed.py writeback``). It relies on
FiftyOne's storage layout: the database connection (``fiftyone.core.odm.get_db_conn``),
the dataset's sample collection (``_sample_collection_name``, ``_sample_collection``),
the layout of a sample document (``_id``, ``last_modified_at``, an embedded
``Classification`` as ``{_id, _cls, tags, label, confidence}``), the ``datasets``
collection's ``sample_collection_name``, ``_reload_docs`` to refresh samples in memory,
and a view's stages (``_serialize``, ``DatasetView._build``). No other module of
``sei_fiftyone`` touches any of these; ``tests/fiftyone/test_storage_layout.py`` fails
when FiftyOne changes one of them.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import logging
import os
import socket
import time
import uuid

import numpy as np
from bson import ObjectId, json_util

import fiftyone.core.brain as fob
import fiftyone.core.fields as fof
import fiftyone.core.labels as fol
import fiftyone.core.odm as foo
import fiftyone.core.runs as fors
import fiftyone.core.view as fov

from sei.process import without_gc

from . import journal
from .lease import DatasetBusyError, held, writing
from .runs import (comparison_names, dataset_of, field_names, finish_delete, finish_rename, save_disagreement_view,
                   save_sorted_view)

logger = logging.getLogger(__name__)

# The protocol -------------------------------------------------------------------------------
#
# Every write runs while this process holds the dataset's write lease
# (:mod:`sei_fiftyone.lease`: one writer per dataset, an owner token and an expiry in MongoDB,
# never a pid), after the dataset was reloaded and what a killed writer left was repaired.
# A run is written beside the previous one and then switched in, so that a failure or a
# kill leaves either the previous run or the new one, never a mix (MongoDB's standalone
# server has no multi-document transactions). The write goes through a temporary
# collection ``tmp.sei_<token>``, which is also the journal of the write (its "meta"
# document records the dataset, the fields, the phase, the owner's lease token and, from the
# commit on, what completes the write: a brain run's or a comparison's config, results and
# saved view), and ``tmp.sei_<token>_old``:
#
# 1. stage: the new values (one document per sample; samples left out of a run on a view
#    that hold the run's fields get a ``_remove`` mark) go into ``tmp.sei_<token>`` with
#    one ``insert_many``, and the previous values into ``..._old`` with one server-side
#    aggregation. Nothing on the dataset changes; a failure drops both collections.
# 2. switch (commit: phase "switch"): the lease is checked, the fields are declared, then one
#    ``$merge`` sets the new values on the samples by ``_id`` (each sample is updated
#    atomically) and a second removes the fields from the marked samples. A failure rolls
#    back: the fields are removed from the staged samples and the previous values merged
#    back from ``_old``.
# 3. run (phase "run"): the run is registered, its results saved and its saved view
#    written, then the collections are dropped.
#
# A process killed during the write leaves the collections behind. The next writer of that
# dataset (compute_sei, a comparison, the review desk) takes the lease, so the journal's
# owner is gone, and drops a staged write, rolls an interrupted switch back to the previous
# run, or completes a run whose values were all switched in, after repairing the dataset's
# list of saved views (a kill inside FiftyOne's ``save_view`` can leave a reference to a
# deleted view, a view twice, or a view nobody references); collections of datasets that no
# longer exist are dropped. Every step of a rollback or a completion can be repeated, so a
# kill during the repair is repaired the same way.

TMP_PREFIX = "tmp.sei_"
_OLD = "_old"  # suffix of the collection holding the previous run's values
_KINDS = {"float": (fof.FloatField, {}), "bool": (fof.BooleanField, {}),
          "classification": (fof.EmbeddedDocumentField, {"embedded_doc_type": fol.Classification}),
          "vector": (fof.VectorField, {})}
_ACTIVE = set()  # names of this process's write collections in use


def _phase(name):
    """Called at each step of the write (``"staged"``, ``"switched"``, ``"registered"``).

    A no-op; the tests replace it to inject failures and kills inside the write phase.
    """


@contextlib.contextmanager
def exclusive(samples, wait=None):
    """Hold the dataset's write lease for the block, after repairing what a killed writer left.

    Every multi-step change to a dataset goes through this (re-entrant within a thread).
    Yields the dataset, reloaded.
    """
    dataset = dataset_of(samples)
    if held(dataset) is not None:  # re-entered: the outer block repaired already
        yield dataset
        return
    with writing(dataset, wait) as lease:
        _recover(dataset, lease)
        yield dataset


def write_values(samples, brain_key, ids, scores, flags, suggestions, *, embeddings=None, run=None):
    """Write the fields of a run (and register the run) as one switch from the previous run.

    ``ids``, ``scores`` (float or None), ``flags`` (bool) and ``suggestions``
    (``(label, confidence)`` or None) are aligned lists; samples of the dataset that are
    not in ``ids`` lose the run's fields (as when a run is overwritten). A failure or a
    kill before the switch leaves the dataset as it was, a failure during it is rolled
    back, and a kill is repaired by the next writer of the dataset (see "The protocol").

    Args:
        samples: the dataset or view of the run
        brain_key: the run key (``field_names(brain_key)`` are written)
        ids, scores, flags, suggestions: aligned per-sample lists
        embeddings (None): ``(field, ids, vectors)`` to store a new vector field too
        run (None): ``(brain_method, results)`` to register the run, save its results and
            its saved view in the same switch
    """
    score_field, flag_field, sugg_field = field_names(brain_key)
    kinds = {score_field: "float", flag_field: "bool", sugg_field: "classification"}
    if embeddings is not None:
        kinds[embeddings[0]] = "vector"
    docs = _sample_docs(field_names(brain_key), ids, scores, flags, suggestions, embeddings)
    completion = None if run is None else _sei_completion(samples, brain_key, *run)
    journaled_write(samples, brain_key, kinds, docs, completion)


def journaled_write(samples, key, kinds, docs, completion=None, *, remove_others=True):
    """Switch the fields ``kinds`` (name -> "float", "bool", "classification", "vector") of
    the dataset to ``docs`` (one document per sample: ``_id`` and the fields), then complete
    the write (``completion``: what :func:`_complete` registers), as one journaled change
    under the dataset's lease (see "The protocol"). With ``remove_others``, samples holding
    one of the fields that are not in ``docs`` lose them."""
    started = time.perf_counter()
    with exclusive(samples) as dataset:
        lease = held(dataset)
        meta = {"_id": "meta", "dataset": dataset._sample_collection_name, "brain_key": key, "kinds": kinds,
                "phase": "stage", "owner": lease.token, "host": socket.gethostname(), "pid": os.getpid(),
                "updated": time.time()}
        name = f"{TMP_PREFIX}{uuid.uuid4().hex}"
        tmp = _db()[name]
        _ACTIVE.add(name)
        try:
            tmp.insert_one(meta)  # creates the collection: never one without its journal
            try:
                if docs:
                    tmp.insert_many(docs, ordered=False)
                _backup_previous(dataset, tmp, list(kinds), remove_others and len(docs) < len(dataset))
                _phase("staged")
            except BaseException:
                _drop(tmp)
                raise
            commit = _commit(dataset, tmp, kinds, completion)
            try:
                lease.check()  # a writer paused past its lease's expiry stops here
                _declare(dataset, kinds)
                _switch(tmp, dataset)
            except BaseException:
                try:
                    _rollback(dataset, tmp, {**meta, **commit})
                except Exception:  # the journal stays: the next writer of this dataset rolls back
                    logger.exception("Rolling back the write of '%s' failed; the next run on this dataset "
                                     "restores the previous values", key)
                raise
            tmp.update_one({"_id": "meta"}, {"$set": {"phase": "run", "updated": time.time()}})
            _phase("switched")
            if completion is not None:
                try:
                    _complete(dataset, completion, write_seconds=time.perf_counter() - started)
                except Exception:  # the values are in: the journal lets the next writer finish it
                    logger.exception("Registering '%s' failed after its values were written; the next "
                                     "run on this dataset completes it", key)
                    raise
            _drop(tmp)
        finally:
            _ACTIVE.discard(name)
            dataset._reload_docs()


@without_gc
def field_docs(ids, columns):
    """One sample document per id in FiftyOne's layout (``_id``, ``last_modified_at``), holding
    ``columns`` (field -> values aligned with ``ids``): what :func:`journaled_write` stages."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    keys = ("_id", *columns, "last_modified_at")
    return [dict(zip(keys, row)) for row in zip(map(ObjectId, ids), *columns.values(), itertools.repeat(now))]


@without_gc
def _sample_docs(fields, ids, scores, flags, suggestions, embeddings):
    """One sample document per id, in FiftyOne's layout, holding the run's fields."""
    score_field, flag_field, sugg_field = fields
    columns = {score_field: scores, flag_field: [bool(f) for f in flags],
               sugg_field: classification_docs(suggestions)}
    docs = field_docs(ids, columns)
    if embeddings is not None:
        at = {_id: i for i, _id in enumerate(ids)}
        encode = fof.VectorField().to_mongo
        for _id, vec in zip(embeddings[1], embeddings[2]):
            docs[at[_id]][embeddings[0]] = encode(np.asarray(vec))
    return docs


@without_gc
def classification_docs(pairs):
    """``Classification`` documents as FiftyOne stores them inside a sample document, one per
    ``(label, confidence)`` of ``pairs`` (None stays None), their ``_id`` made at once."""
    pairs = list(pairs)
    new_ids = iter(new_object_ids(sum(p is not None for p in pairs)))
    return [None if p is None else {"_id": next(new_ids), "_cls": "Classification", "tags": [], "label": p[0],
                                    "confidence": p[1]} for p in pairs]


#: Ids per draw of random bytes in :func:`new_object_ids` (the 3-byte counter's range).
_OID_COUNTER = 1 << 24


def new_object_ids(n):
    """``n`` new ObjectIds in bson's layout (4-byte seconds, 5 random bytes, a 3-byte counter),
    made from one array: ``ObjectId()`` one at a time costs about 3.5 us (1e6 suggestions: 3.5 s),
    from bytes 0.5 us. Every 2^24 ids (the counter's range) take fresh random bytes."""
    out = np.empty((n, 12), np.uint8)
    out[:, :4] = np.frombuffer(int(time.time()).to_bytes(4, "big"), np.uint8)
    step = _OID_COUNTER
    for start in range(0, n, step):
        rows = slice(start, min(n, start + step))
        out[rows, 4:9] = np.frombuffer(os.urandom(5), np.uint8)
        count = np.arange(rows.stop - rows.start, dtype=np.uint32)
        out[rows, 9], out[rows, 10], out[rows, 11] = count >> 16, (count >> 8) & 0xFF, count & 0xFF
    raw = out.tobytes()
    return [ObjectId(raw[i:i + 12]) for i in range(0, 12 * n, 12)]


def _commit(dataset, tmp, kinds, completion):
    """Journal the switch (phase "switch"), with what a completion needs."""
    schema = dataset.get_field_schema()
    commit = {"phase": "switch", "updated": time.time(), "declared": [f for f in kinds if f not in schema]}
    if completion is not None:
        commit["run"] = completion
    tmp.update_one({"_id": "meta"}, {"$set": commit})
    return commit


def _sei_completion(samples, brain_key, backend, results):
    """What registers an SEI brain run: its config, results and the view it ran on, as JSON."""
    return {"kind": "sei", "key": brain_key, "config": json.dumps(backend.config.serialize()),
            "results": json_util.dumps(results.serialize()), "view_stages": _view_stages(samples)}


def comparison_completion(brain_key, config, results):
    """What registers a confident-learning comparison of run ``brain_key`` (a custom run and
    its saved view), as JSON."""
    return {"kind": "cl", "key": brain_key, "config": json.dumps(config.serialize()),
            "results": json_util.dumps(results.serialize())}


def cutoff_completion(brain_key, cutoff, num_flagged):
    """What records a cutoff moved by the review desk in the run's results."""
    return {"kind": "cutoff", "key": brain_key, "cutoff": float(cutoff), "num_flagged": int(num_flagged)}


def _complete(dataset, completion, write_seconds=None):
    """Register what the values belong to (repeatable): an SEI brain run with its results
    and saved view, a comparison's custom run and saved view, or a moved cutoff.

    ``write_seconds``: how long staging and switching the values took, recorded as the
    ``"write"`` entry of the results' ``timings`` (a write completed by a later writer after
    a kill records none)."""
    key = completion["key"]
    if completion.get("kind") == "cutoff":
        results = dataset.load_brain_results(key, cache=False)
        cutoff, num_flagged = completion["cutoff"], completion["num_flagged"]
        if (results.threshold, results.num_flagged) != (cutoff, num_flagged):
            if getattr(results, "computed_threshold", None) is None:
                results.computed_threshold = float(results.threshold)
            results.threshold, results.num_flagged = cutoff, num_flagged
            results.save()
        _phase("registered")
        save_sorted_view(dataset.load_brain_view(key), key)  # as compute_sei saved it
        return
    if completion.get("kind", "sei") == "cl":
        config = fors.RunConfig.from_dict(json.loads(completion["config"]))
        run_key = comparison_names(key).run_key
        results = fors.RunResults.from_dict(_timed(completion["results"], write_seconds), dataset, config, run_key)
        dataset.register_run(run_key, config, results=results, overwrite=True, cleanup=False)
        _phase("registered")
        save_disagreement_view(dataset, key)
        return
    config = fob.BrainMethodConfig.from_dict(json.loads(completion["config"]))
    samples = dataset
    if completion.get("view_stages"):
        samples = fov.DatasetView._build(dataset, [json_util.loads(st) for st in completion["view_stages"]])
    backend = config.build()
    results = fob.BrainResults.from_dict(_timed(completion["results"], write_seconds), samples, config, key)
    backend.register_run(samples, key, overwrite=True, cleanup=False)
    backend.save_run_results(samples, key, results)
    _phase("registered")
    save_sorted_view(samples, key)
    _describe_fields(dataset, key, results.score_name)


def _timed(results_json, write_seconds):
    """Serialized results, with ``write_seconds`` as the ``"write"`` entry of their ``timings``."""
    results = json_util.loads(results_json)
    if write_seconds is not None and isinstance(results.get("timings"), dict):
        results["timings"]["write"] = round(float(write_seconds), 3)
    return results


def _describe_fields(dataset, key, score_name):
    """Say in each field's FiftyOne description which score the run wrote."""
    score_field, flag_field, sugg_field = field_names(key)
    texts = {score_field: f"SEI run '{key}': score '{score_name}', lower = more likely mislabeled",
             flag_field: f"SEI run '{key}': score '{score_name}' below the run's cutoff",
             sugg_field: f"SEI run '{key}': the model's label and probability"}
    for name, text in texts.items():
        field = dataset.get_field(name)
        if field is not None and field.description != text:
            field.description = text
            field.save()


def recover_interrupted_writes(samples, wait=0):
    """Repair what a killed write left on this dataset; returns the keys repaired.

    Called by every writer before it writes (:func:`exclusive`) and by the review desk before
    it reads. It takes the dataset's write lease (waiting up to ``wait`` seconds; when a live
    writer holds it, its write is in progress, nothing is stale and ``[]`` is returned). A
    write collection ``tmp.sei_*`` of this dataset is then dropped, after rolling an
    interrupted switch back to the previous values (phase ``"switch"``) or completing a write
    whose values were all switched in (phase ``"run"``), the saved-view list repaired first.
    Collections of other live datasets are left to them; those of deleted datasets, and any
    without a journal, are dropped.
    """
    dataset = dataset_of(samples)
    lease = held(dataset)
    if lease is not None:
        return _recover(dataset, lease)
    if not _tmp_names(_db()) and not journal.pending(dataset):
        return []  # nothing to repair: no lease taken (the review desk calls this on every event)
    try:
        with writing(dataset, wait) as lease:
            return _recover(dataset, lease)
    except DatasetBusyError:
        return []


def _tmp_names(db):
    """Names of every write collection ``tmp.sei_*`` (of any dataset) in the database."""
    return db.list_collection_names(filter={"name": {"$regex": "^" + TMP_PREFIX.replace(".", r"\.")}})


def _recover(dataset, lease):
    db = _db()
    repaired = []
    names = _tmp_names(db)
    for name in names:
        if name.endswith(_OLD):
            if name[: -len(_OLD)] not in names:  # its write collection was dropped first
                db.drop_collection(name)
            continue
        tmp = db[name]
        meta = tmp.find_one({"_id": "meta"})
        if meta is not None and meta.get("dataset") != dataset._sample_collection_name:
            if db.datasets.find_one({"sample_collection_name": meta.get("dataset")}, {"_id": 1}) is not None:
                continue  # another dataset's: repaired by its own next writer
            journal.forget_dataset(meta.get("dataset"))
        elif meta is not None:
            if meta.get("owner") == lease.token and name in _ACTIVE:
                continue  # this thread's write in progress
            phase = meta.get("phase")
            if phase in ("switch", "run"):
                repair_references(dataset)
            if phase == "switch":
                logger.warning("Rolling back the interrupted write of '%s' (previous values restored)",
                               meta["brain_key"])
                _rollback(dataset, tmp, meta)
            elif phase == "run":
                logger.warning("Completing the interrupted write of '%s'", meta["brain_key"])
                _roll_forward(dataset, tmp, meta)
            repaired.append(meta["brain_key"])
        _drop(tmp)
    repaired += _finish_intents(dataset)
    return repaired


def _finish_intents(dataset):
    """Finish the deletions and renames of runs that FiftyOne did not (:mod:`.journal`)."""
    intents = journal.pending(dataset)
    if not intents:
        return []
    repair_references(dataset)
    done = []
    for intent in intents:
        op, args = intent.get("op"), intent.get("args", {})
        finish = {"delete": finish_delete, "rename": finish_rename}.get(op)
        if finish is not None and finish(dataset, **args):
            logger.warning("Finished the interrupted %s of SEI run '%s'", op, args.get("key"))
            done.append(args.get("key"))
        journal.forget(intent["_id"])
    return done


def _db():
    """FiftyOne's database (a pymongo ``Database``)."""
    return foo.get_db_conn()


def repair_references(dataset):
    """Make the dataset's lists of saved views and runs consistent after a kill inside one of
    FiftyOne's own calls (``save_view``, ``delete_saved_view``, ``register_run``,
    ``delete_brain_run``): FiftyOne's repairs (``patch_saved_views``, ``patch_brain_runs``,
    ``patch_runs``: references to deleted documents dropped, unreferenced ones of the dataset
    put back), then a saved-view name held twice keeps its last view. The interrupted change's
    own completion then writes its view and run again."""
    import fiftyone.core.odm.database as food

    for patch in (food.patch_saved_views, food.patch_brain_runs, food.patch_runs):
        patch(dataset.name)
    db = _db()
    refs = list((db.datasets.find_one({"_id": dataset._doc.id}, {"saved_views": 1}) or {}).get("saved_views") or [])
    names = {v["_id"]: v.get("name") for v in db.views.find({"_id": {"$in": refs}}, {"name": 1})}
    keep, seen, extra = [], set(), []
    for ref in reversed(refs):
        (extra if names.get(ref) in seen else keep).append(ref)
        seen.add(names.get(ref))
    if extra:
        logger.warning("Dataset '%s': saved view(s) %s held twice; keeping the last", dataset.name,
                       sorted({names[r] for r in extra}))
        db.datasets.update_one({"_id": dataset._doc.id}, {"$set": {"saved_views": keep[::-1]}})
        db.views.delete_many({"_id": {"$in": extra}})
    dataset.reload()


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


#: A ``$merge`` of more sample documents than this is split in two halves by ``_id``, merged
#: at once: mongod runs each on its own thread (1e6 samples: about half the write's time).
_MERGE_SPLIT_MIN = 100_000


def _merge(source, dataset, when_matched, match=None):
    """Server-side ``$merge`` of ``source``'s sample documents into the samples by ``_id``
    (each document is updated atomically; repeating it gives the same result): one, or two
    at once on the halves of a large source."""
    from concurrent.futures import ThreadPoolExecutor

    def one(ids):
        source.aggregate([
            {"$match": {**(match or {}), "_id": {"$type": "objectId", **ids}}},
            {"$merge": {"into": dataset._sample_collection_name, "on": "_id",
                        "whenMatched": when_matched, "whenNotMatched": "discard"}},
        ])

    n = source.estimated_document_count()
    middle = None
    if n >= _MERGE_SPLIT_MIN:
        doc = next(source.find({"_id": {"$type": "objectId"}}, {"_id": 1}).sort("_id", 1).skip(n // 2).limit(1), None)
        middle = None if doc is None else doc["_id"]
    if middle is None:
        one({})
        return
    with ThreadPoolExecutor(2, thread_name_prefix="sei-merge") as pool:
        for done in [pool.submit(one, {"$lt": middle}), pool.submit(one, {"$gte": middle})]:
            done.result()


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
    """Finish a write whose values were all switched in: fields, then what they belong to."""
    _declare(dataset, meta["kinds"])
    _switch(tmp, dataset)  # repeats the completed switch, to the same result
    run = meta.get("run")
    if run is not None:  # a journal of an earlier version names the key only in the meta
        _complete(dataset, {"key": meta["brain_key"], **run})
    dataset._reload_docs()


def _view_stages(samples):
    if not isinstance(samples, fov.DatasetView):
        return None
    return [json_util.dumps(st) for st in samples._serialize(include_uuids=False)]
