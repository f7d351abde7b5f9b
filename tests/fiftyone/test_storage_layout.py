"""Canary: the parts of FiftyOne's private storage layout that sei_fiftyone.writeback relies on.

The write-back goes around FiftyOne's public ``set_values`` because it is more than 2x
faster (benchmarks/fiftyone_speed.py writeback). If one of these tests fails after a
FiftyOne upgrade, the layout changed: fix sei_fiftyone/writeback.py (the only module that
uses these names) or switch it to ``set_values``.
"""

import datetime

import numpy as np
import pytest

import fiftyone as fo
import fiftyone.core.brain as fob
import fiftyone.core.fields as fof
import fiftyone.core.odm as foodm
import fiftyone.core.view as fov
import pymongo.collection
import pymongo.database
from bson import ObjectId

import sei_fiftyone as sfo
from sei_fiftyone import writeback

LAYOUT = "FiftyOne's storage layout changed; sei_fiftyone/writeback.py relies on it: "


def _raw(dataset, sample_id):
    return dataset._sample_collection.find_one({"_id": ObjectId(sample_id)})


def test_the_database_connection_and_the_sample_collection(dataset):
    db = foodm.get_db_conn()
    assert isinstance(db, pymongo.database.Database), LAYOUT + "get_db_conn() is no pymongo Database"
    assert writeback._db().name == db.name
    name = dataset._sample_collection_name
    assert isinstance(name, str) and name in db.list_collection_names(), LAYOUT + "_sample_collection_name"
    coll = dataset._sample_collection
    assert isinstance(coll, pymongo.collection.Collection) and coll.name == name, LAYOUT + "_sample_collection"
    assert coll.count_documents({}) == len(dataset)
    doc = db.datasets.find_one({"sample_collection_name": name})
    assert doc is not None and doc["name"] == dataset.name, LAYOUT + "datasets.sample_collection_name"


def test_a_sample_document_is_keyed_by_its_id_and_stamped(dataset):
    sample = dataset.first()
    doc = _raw(dataset, sample.id)
    assert doc is not None and doc["_id"] == ObjectId(sample.id), LAYOUT + "sample documents keyed by _id"
    assert isinstance(doc.get("last_modified_at"), datetime.datetime), LAYOUT + "last_modified_at"


def test_a_classification_is_stored_as_writeback_writes_it(dataset):
    sample_id = dataset.first().id
    dataset.select(sample_id).set_values("label_probe", [fo.Classification(label="red", confidence=0.25)])
    stored = _raw(dataset, sample_id)["label_probe"]
    ours = writeback.classification_docs([("red", 0.25)])[0]
    assert set(stored) <= set(ours) | {"attributes"} and set(ours) <= set(stored), (
        LAYOUT + f"an embedded Classification is stored as {sorted(stored)}, write-back writes {sorted(ours)}")
    assert stored["_cls"] == ours["_cls"] == "Classification" and isinstance(stored["_id"], ObjectId)
    assert stored["tags"] == ours["tags"] == []


def test_a_vector_is_encoded_as_fiftyone_encodes_it(dataset):
    sample_id = dataset.first().id
    vec = np.arange(4, dtype=np.float32)
    dataset.add_sample_field("vector_probe", fof.VectorField)
    dataset.select(sample_id).set_values("vector_probe", [vec])
    stored = _raw(dataset, sample_id)["vector_probe"]
    assert bytes(stored) == bytes(fof.VectorField().to_mongo(vec)), LAYOUT + "VectorField.to_mongo"
    assert np.array_equal(fof.VectorField().to_python(fof.VectorField().to_mongo(vec)), vec)


def test_a_merge_into_the_sample_collection_then_reload_docs_reaches_loaded_samples(dataset):
    sample = dataset.first()
    tmp = foodm.get_db_conn()["tmp.sei_layout_probe"]
    try:
        tmp.insert_one({"_id": ObjectId(sample.id), "score_probe": 1.5})
        tmp.aggregate([{"$merge": {"into": dataset._sample_collection_name, "on": "_id",
                                   "whenMatched": "merge", "whenNotMatched": "discard"}}])
    finally:
        tmp.drop()
    dataset.add_sample_field("score_probe", fo.FloatField)
    dataset._reload_docs()
    assert sample["score_probe"] == 1.5, LAYOUT + "_reload_docs() no longer refreshes loaded samples"
    assert dataset.values("score_probe")[0] == 1.5


def test_view_stages_serialize_and_rebuild(dataset):
    view = dataset.match({"ground_truth.label": "red"}).sort_by("filepath").limit(5)
    stages = writeback._view_stages(view)
    assert stages and all(isinstance(s, str) for s in stages)
    from bson import json_util

    rebuilt = fov.DatasetView._build(dataset, [json_util.loads(s) for s in stages])
    assert rebuilt.values("id") == view.values("id"), LAYOUT + "_serialize / DatasetView._build"
    assert writeback._view_stages(dataset) is None


def test_run_config_and_results_round_trip_through_their_dicts(dataset):
    config = sfo.SEIConfig(label_field="ground_truth", model="embeddings", embeddings_field="embedding",
                           mode="embeddings", epochs=3, lr=0.01, batch_size=16, classes=["a", "b"],
                           train_kwargs={"weight_decay": 1e-3})
    again = fob.BrainMethodConfig.from_dict(config.serialize())
    assert type(again) is sfo.SEIConfig and again.serialize() == config.serialize()


@pytest.mark.parametrize("on_view", [False, True])
def test_write_values_gives_what_the_public_api_reads(dataset, on_view):
    samples = dataset.limit(10) if on_view else dataset
    ids = samples.values("id")
    scores = [float(i) - 4.5 for i in range(len(ids))]
    flags = [s < 0 for s in scores]
    suggestions = [("red", 0.5)] * (len(ids) - 1) + [None]
    writeback.write_values(samples, "probe", ids, scores, flags, suggestions)
    assert samples.values("probe") == scores and samples.values("probe_mislabeled") == flags
    sugg = samples.values("probe_suggestion")
    assert all(isinstance(s, fo.Classification) and s.label == "red" and s.confidence == 0.5 for s in sugg[:-1])
    assert sugg[-1] is None
    assert dataset.get_field("probe_suggestion").document_type is fo.Classification
    assert isinstance(dataset.get_field("probe"), fo.FloatField)
    assert len(dataset.exists("probe")) == len(ids)


def test_object_ids_made_at_once_are_new_unique_and_in_bsons_layout(monkeypatch):
    import time

    monkeypatch.setattr(writeback, "_OID_COUNTER", 1000)  # fresh random bytes every 1,000 ids
    before = int(time.time())
    ids = writeback.new_object_ids(2500) + writeback.new_object_ids(2500)
    assert all(isinstance(i, ObjectId) for i in ids) and len(set(ids)) == 5000
    seconds = {int(i.generation_time.timestamp()) for i in ids}
    assert min(seconds) >= before and max(seconds) <= int(time.time())
    assert len({i.binary[4:9] for i in ids}) == 6  # 3 draws per call
    assert writeback.new_object_ids(0) == []
    docs = writeback.classification_docs([("a", 0.5), None, ("b", None)])
    assert docs[1] is None and docs[0]["label"] == "a" and docs[2]["confidence"] is None
    assert docs[0]["_id"] != docs[2]["_id"]


def test_documents_are_built_with_the_collector_paused_and_it_is_restored():
    import gc

    from sei.process import without_gc

    seen = []
    probe = without_gc(lambda: seen.append(gc.isenabled()))
    probe()
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        probe()
        assert not gc.isenabled()  # a collector the caller paused stays paused
    finally:
        gc.enable()
    with pytest.raises(ZeroDivisionError):
        without_gc(lambda: 1 / 0)()
    assert gc.isenabled()
