"""compute_sei never damages what it did not create: brain_key collisions are refused, and
a failure or a kill -9 during the write leaves the previous run (real mongod, no mocks of
the database: failures are injected into pymongo's write calls)."""

import os
import textwrap
from pathlib import Path

import pytest

import fiftyone as fo
import fiftyone.core.odm as foodm
import fiftyone.operators as foo
import pymongo.collection

import sei_fiftyone as sfo
import sei_fiftyone.core as core
from forked import kill_at_flag
from sei_fo_testutil import build_dataset
from sei_fiftyone.__main__ import main as cli_main

REPO = Path(__file__).resolve().parents[2]
URI = "@sei/fiftyone"
RUN = dict(embeddings_field="embedding")


def _tmp_collections():
    return sorted(n for n in foodm.get_db_conn().list_collection_names() if n.startswith("tmp."))


def _state(ds, key="sei"):
    """Everything a run consists of, as plain values."""
    ds.reload()
    fields = sfo.field_names(key)
    view_name = sfo.saved_view_name(key)
    runs = ds.list_brain_runs()
    info = ds.get_brain_info(key) if key in runs else None
    res = ds.load_brain_results(key, cache=False) if key in runs else None
    schema = ds.get_field_schema()
    return dict(
        schema=sorted(schema),
        values=ds.values([f for f in fields[:2] if f in schema]
                         + ([f"{fields[2]}.label", f"{fields[2]}.confidence"] if fields[2] in schema else [])),
        runs=runs,
        saved_views=sorted(ds.list_saved_views()),
        view=ds.load_saved_view(view_name).values("id") if ds.has_saved_view(view_name) else None,
        config=None if info is None else (info.config.epochs, info.config.label_field),
        timestamp=None if info is None else info.timestamp,
        results=None if res is None else (res.threshold, res.num_flagged, res.train_accuracy, res.scores_summary),
    )


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(core, "train", refuse)


# brain_key collisions ------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["ground_truth", "clean", "filepath", "tags", "id", "metadata",
                                 "created_at", "embedding"])
def test_brain_key_naming_an_existing_field_is_refused_before_training(dataset, key, no_training):
    before = _state(dataset, key)
    gt = dataset.values("ground_truth.label")
    with pytest.raises(ValueError, match=rf"brain_key '{key}' would overwrite the existing field.*'{key}'.*"
                                         "choose another brain_key"):
        sfo.compute_sei(dataset, "ground_truth", brain_key=key, epochs=2, **RUN)
    assert _state(dataset, key) == before and dataset.values("ground_truth.label") == gt
    assert len(list(dataset.iter_samples())) == len(dataset)
    assert _tmp_collections() == []


def test_brain_key_whose_output_fields_collide_is_refused(dataset, no_training):
    dataset.add_sample_field("mine_mislabeled", fo.BooleanField)
    with pytest.raises(ValueError, match="'mine_mislabeled'"):
        sfo.compute_sei(dataset, "ground_truth", brain_key="mine", epochs=2, **RUN)
    dataset.save_view("other_most_likely_mislabeled", dataset.limit(3))
    with pytest.raises(ValueError, match="saved view 'other_most_likely_mislabeled'"):
        sfo.compute_sei(dataset, "ground_truth", brain_key="other", epochs=2, **RUN)
    assert dataset.list_brain_runs() == [] and "mine" not in dataset.get_field_schema()


def test_a_key_that_would_write_over_another_runs_field_is_refused_and_a_rerun_is_not(dataset):
    sfo.compute_sei(dataset, "ground_truth", epochs=2, **RUN)
    before = _state(dataset)
    with pytest.raises(ValueError, match="'sei_suggestion'"):
        sfo.compute_sei(dataset, "ground_truth", brain_key="sei_suggestion", epochs=2, **RUN)
    assert _state(dataset) == before
    sfo.validate_brain_key(dataset, "sei")  # its own fields: a rerun overwrites them
    sfo.compute_sei(dataset, "ground_truth", epochs=3, **RUN)
    assert dataset.get_brain_info("sei").config.epochs == 3


def test_operator_form_and_execute_refuse_a_colliding_brain_key(dataset, no_training):
    cli_main(["install-plugin"])
    op = foo.get_operator(f"{URI}/compute_sei")
    ctx = foo.ExecutionContext(request_params={"dataset_name": dataset.name,
                                               "params": {"brain_key": "ground_truth"}})
    prop = op.resolve_input(ctx).type.properties["brain_key"]
    assert prop.invalid and "'ground_truth'" in prop.error_message and "choose another" in prop.error_message
    ctx = foo.ExecutionContext(request_params={"dataset_name": dataset.name, "params": {"brain_key": "sei_new"}})
    assert not op.resolve_input(ctx).type.properties["brain_key"].invalid
    gt = dataset.values("ground_truth.label")
    params = dict(label_field="ground_truth", model="embeddings", embeddings_field="embedding",
                  epochs=2, brain_key="ground_truth", overwrite=True)
    with pytest.raises(Exception, match="would overwrite the existing field"):  # the form's validation
        foo.execute_operator(f"{URI}/compute_sei", dataset=dataset, params=params)
    ctx = foo.ExecutionContext(request_params={"dataset_name": dataset.name, "params": params})
    with pytest.raises(ValueError, match="would overwrite the existing field"):  # execute() on its own
        list(op.execute(ctx))
    dataset.reload()
    assert dataset.values("ground_truth.label") == gt and dataset.list_brain_runs() == []


# no usable sample ---------------------------------------------------------------------------

def test_no_usable_sample_raises_and_leaves_the_dataset_as_it_was(tmp_path):
    ds = build_dataset(str(tmp_path / "imgs"), n=12)
    try:
        sfo.compute_sei(ds, "ground_truth", epochs=2, **RUN)
        before = _state(ds)
        for p in ds.values("filepath"):
            os.remove(p)
        with pytest.raises(ValueError):
            sfo.compute_sei(ds, "ground_truth", model="efficientnet-lite0", epochs=1, image_size=64)
        assert _state(ds) == before
        before_other = _state(ds, "other")
        with pytest.raises(ValueError):
            sfo.compute_sei(ds, "ground_truth", brain_key="other", model="efficientnet-lite0", epochs=1,
                            image_size=64)
        assert _state(ds, "other") == before_other and ds.list_brain_runs() == ["sei"]
        assert _tmp_collections() == []
    finally:
        ds.delete()


# injected failures inside the write ----------------------------------------------------------

def _fail_once_after_half(monkeypatch, method, applies):
    """Make pymongo's ``method`` write about half of its documents, then raise (once)."""
    orig = getattr(pymongo.collection.Collection, method)
    state = {"done": False}

    def wrapper(self, arg, *args, **kwargs):
        if state["done"] or not applies(self, arg):
            return orig(self, arg, *args, **kwargs)
        state["done"] = True
        if method == "insert_many":
            arg = list(arg)
            orig(self, arg[: len(arg) // 2], *args, **kwargs)
        else:  # an aggregation ending in $merge: merge the first half only
            n = self.count_documents({})
            orig(self, arg[:-1] + [{"$limit": max(n // 2, 1)}] + arg[-1:], *args, **kwargs)
        raise RuntimeError("injected failure inside the write")
    monkeypatch.setattr(pymongo.collection.Collection, method, wrapper)
    return state


def _merges_into(dataset):
    def applies(coll, pipeline):
        last = pipeline[-1] if pipeline else {}
        return "$merge" in last and last["$merge"].get("into") == dataset._sample_collection_name
    return applies


@pytest.mark.parametrize("method,on_view,split", [("insert_many", False, False), ("insert_many", True, False),
                                                  ("aggregate", False, False), ("aggregate", True, False),
                                                  ("aggregate", False, True)])
def test_a_failure_inside_the_write_leaves_the_previous_run(dataset, monkeypatch, method, on_view, split):
    """split: the switch's $merge in two halves at once, as on a large dataset."""
    if split:
        import sei_fiftyone.writeback as writeback

        monkeypatch.setattr(writeback, "_MERGE_SPLIT_MIN", 2)
    sfo.compute_sei(dataset, "ground_truth", epochs=3, **RUN)
    before = _state(dataset)
    applies = (lambda coll, docs: coll.name.startswith("tmp.")) if method == "insert_many" else _merges_into(dataset)
    state = _fail_once_after_half(monkeypatch, method, applies)
    with pytest.raises(RuntimeError, match="injected"):  # on a view, the samples left out lose their values
        sfo.compute_sei(dataset.take(60, seed=2) if on_view else dataset, "ground_truth", epochs=6, **RUN)
    assert state["done"]
    monkeypatch.undo()
    assert _state(dataset) == before
    assert len(list(dataset.iter_samples())) == len(dataset)
    assert _tmp_collections() == []
    if split:
        monkeypatch.setattr(writeback, "_MERGE_SPLIT_MIN", 2)
    sfo.compute_sei(dataset, "ground_truth", epochs=6, **RUN)
    assert dataset.get_brain_info("sei").config.epochs == 6 and _tmp_collections() == []
    if split:  # the same values as one $merge writes
        after = {k: v for k, v in _state(dataset).items() if k != "timestamp"}
        monkeypatch.undo()
        sfo.compute_sei(dataset, "ground_truth", epochs=6, **RUN)
        assert {k: v for k, v in _state(dataset).items() if k != "timestamp"} == after


# kill -9 inside the write -------------------------------------------------------------------

_KILLED_RUN = textwrap.dedent("""
    import sys, time
    import pymongo.collection
    import fiftyone as fo
    import sei_fiftyone as sfo
    import sei_fiftyone.writeback as writeback

    name, where, flag = sys.argv[1:4]
    ds = fo.load_dataset(name)

    def pause():
        open(flag, "w").close()
        time.sleep(600)

    orig_insert, orig_aggregate = pymongo.collection.Collection.insert_many, pymongo.collection.Collection.aggregate

    def insert_many(self, docs, *a, **k):
        if where == "staging" and self.name.startswith("tmp."):
            docs = list(docs)
            orig_insert(self, docs[: len(docs) // 2], *a, **k)
            pause()
        return orig_insert(self, docs, *a, **k)

    def aggregate(self, pipeline, *a, **k):
        last = pipeline[-1] if pipeline else {}
        if where == "switching" and last.get("$merge", {}).get("into") == ds._sample_collection_name:
            orig_aggregate(self, pipeline[:-1] + [{"$limit": self.count_documents({}) // 2}] + pipeline[-1:], *a, **k)
            pause()
        return orig_aggregate(self, pipeline, *a, **k)

    pymongo.collection.Collection.insert_many = insert_many
    pymongo.collection.Collection.aggregate = aggregate
    if where in ("switched", "registered"):
        writeback._phase = lambda p: pause() if p == where else None
    sfo.compute_sei(ds, "ground_truth", embeddings_field="embedding", epochs=6)
    print("finished without a kill", flush=True)
""")


def _run_and_kill(dataset, where, tmp_path):
    kill_at_flag(_KILLED_RUN, [dataset.name, where, tmp_path / "in_write"], tmp_path / "in_write")


@pytest.mark.parametrize("where", ["staging", "switching"])
def test_kill_inside_the_write_leaves_the_previous_run(dataset, tmp_path, where):
    dataset.persistent = True  # the killed process shares the database
    sfo.compute_sei(dataset, "ground_truth", epochs=3, **RUN)
    before = _state(dataset)
    _run_and_kill(dataset, where, tmp_path)
    if where == "staging":
        assert _state(dataset) == before  # nothing on the dataset changed yet
    assert _tmp_collections(), "expected the killed write's collection"
    assert sfo.recover_interrupted_writes(dataset) == ["sei"]
    assert _state(dataset) == before
    assert len(list(dataset.iter_samples())) == len(dataset)
    assert _tmp_collections() == []
    sfo.compute_sei(dataset, "ground_truth", epochs=4, **RUN)
    assert dataset.get_brain_info("sei").config.epochs == 4 and _tmp_collections() == []


@pytest.mark.parametrize("where", ["switched", "registered"])
def test_kill_after_the_switch_is_completed_by_the_next_run(dataset, tmp_path, where):
    dataset.persistent = True
    sfo.compute_sei(dataset, "ground_truth", epochs=3, **RUN)
    _run_and_kill(dataset, where, tmp_path)
    sfo.compute_sei(dataset, "ground_truth", brain_key="sei_b", epochs=2, **RUN)  # repairs first
    after = _state(dataset)
    assert after["config"] == (6, "ground_truth") and after["results"] is not None
    assert len(after["results"][2]) == 6  # the killed run's training curve
    assert after["view"] == sfo.sorted_view(dataset).values("id")
    assert after["saved_views"] == ["sei_b_most_likely_mislabeled", "sei_most_likely_mislabeled"]
    assert _tmp_collections() == []
