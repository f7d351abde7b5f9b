"""Intents of the changes FiftyOne finishes after our code returns: deleting and renaming a run.

``dataset.delete_brain_run(key)`` and ``rename_brain_run(key, new)`` call our method
(:meth:`sei_fiftyone.runs.SEI.cleanup`, ``.rename``) and then change the run's document
themselves, outside anything we can hold; a kill in between leaves a run without its fields
or fields under a run that no longer names them. So the method records its intent here
first (one document of the collection ``sei.journal`` in FiftyOne's database: the dataset's
sample collection, the operation and its keys), and the next writer of the dataset
(:func:`sei_fiftyone.writeback.recover_interrupted_writes`) finishes an intent whose run
still has the old key, or only forgets it when FiftyOne had finished. Finishing repeats the
operation, which is written to be repeatable.

Per pending change: one small document; none once the next writer has looked.
"""

from __future__ import annotations

import datetime

JOURNAL_COLLECTION = "sei.journal"


def _collection():
    import fiftyone.core.odm as foo

    return foo.get_db_conn()[JOURNAL_COLLECTION]


def record(dataset, op, **args):
    """Record the intent ``op`` (``"delete"`` or ``"rename"``) with its arguments; returns its id."""
    doc = {"dataset": dataset._sample_collection_name, "op": op, "args": args,
           "created": datetime.datetime.now(datetime.timezone.utc)}
    return _collection().insert_one(doc).inserted_id


def pending(dataset):
    """The recorded intents of a dataset, oldest first."""
    return list(_collection().find({"dataset": dataset._sample_collection_name}).sort("created", 1))


def forget(intent_id):
    _collection().delete_one({"_id": intent_id})


def forget_dataset(name):
    """Forget the intents of a sample collection that no longer exists."""
    _collection().delete_many({"dataset": name})
