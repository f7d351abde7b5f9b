"""Issue 21, the FiftyOne write paths: renames onto other names, two writers at once (real
processes on one real mongod), kills inside FiftyOne's own calls (save_view) and inside a
comparison, a stale journal whose pid now belongs to a live process, and the lease that makes
one writer per dataset."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import fiftyone as fo
import fiftyone.core.odm as foodm

import sei_fiftyone as sfo
import sei_fiftyone.lease as lease
import sei_fiftyone.runs as runs
import sei_fiftyone.writeback as writeback
from forked import ScriptProcess, kill_at_flag, start_until_flag

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from benchmarks.reliability_attacks import consistent  # noqa: E402  (one check for the tests and the benchmark)
RUN = dict(embeddings_field="embedding", epochs=3, progress=False)


def _tmp_collections():
    return sorted(n for n in foodm.get_db_conn().list_collection_names() if n.startswith("tmp."))


def _consistent(ds):
    """The dataset loads, every saved view loads and is named once, each SEI run's fields are
    declared (no value sits in the documents unreadable) and has its saved view, and no journal
    is left (the benchmark's check: ``benchmarks/reliability_attacks.consistent``)."""
    problems = consistent(ds)
    assert problems == [], problems
    ds = fo.load_dataset(ds.name)
    ds.reload()
    return ds


# renames ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["clean", "ground_truth", "embedding"])
def test_renaming_a_run_onto_a_field_it_does_not_own_is_refused(dataset, target):
    sfo.compute_sei(dataset, "ground_truth", **RUN)
    before = dataset.values(f"{target}.label" if target != "embedding" else target)
    with pytest.raises(runs.RenameRefused, match=rf"field '{target}' already exist"):
        dataset.rename_brain_run("sei", target)
    dataset.reload()
    assert dataset.list_brain_runs() == ["sei"]
    assert dataset.values(f"{target}.label" if target != "embedding" else target) == before
    # the three actions that used to destroy the field: rerun, delete
    sfo.compute_sei(dataset, "ground_truth", **RUN)
    dataset.delete_brain_run("sei")
    assert target in dataset.get_field_schema()
    assert dataset.values(f"{target}.label" if target != "embedding" else target) == before


def test_renaming_onto_free_names_moves_the_fields_view_and_comparison(dataset):
    sfo.compute_sei(dataset, "ground_truth", **RUN)
    sfo.compare_with_confident_learning(dataset, "sei", folds=3)
    flags = dataset.values("sei_mislabeled")
    dataset.rename_brain_run("sei", "renamed")
    dataset.reload()
    assert dataset.values("renamed_mislabeled") == flags
    assert "sei_mislabeled" not in dataset.get_field_schema()
    assert dataset.has_saved_view("renamed_most_likely_mislabeled")
    assert sfo.get_comparison(dataset, "renamed")["n_compared"] == len(dataset)
    with pytest.raises(runs.RenameRefused, match="rename that run instead"):
        dataset.rename_run("renamed_cl", "elsewhere")
    _consistent(dataset)


def test_deleting_the_comparison_run_deletes_its_fields_and_view(dataset):
    sfo.compute_sei(dataset, "ground_truth", **RUN)
    sfo.compare_with_confident_learning(dataset, "sei", folds=3)
    dataset.delete_run("sei_cl")
    dataset.reload()
    assert not {"sei_cl", "sei_cl_mislabeled"} & set(dataset.get_field_schema())
    assert not dataset.has_saved_view("sei_cl_disagreements")


def test_a_brain_key_too_long_is_refused_before_anything_is_written(dataset):
    key = "k" * (runs.MAX_BRAIN_KEY_LENGTH + 1)
    with pytest.raises(ValueError, match="at most 100"):
        sfo.compute_sei(dataset, "ground_truth", brain_key=key, **RUN)
    assert _tmp_collections() == [] and dataset.list_brain_runs() == []
    sfo.compute_sei(dataset, "ground_truth", brain_key="k" * runs.MAX_BRAIN_KEY_LENGTH, **RUN)


def test_a_runs_own_suggestions_are_refused_as_trusted_labels(dataset):
    sfo.compute_sei(dataset, "ground_truth", **RUN)
    with pytest.raises(ValueError, match="written by an SEI run"):
        sfo.compare_with_confident_learning(dataset, "sei", trusted_label_field="sei_suggestion")
    assert "sei_cl" not in dataset.list_runs()


# two writers -----------------------------------------------------------------------------------

_WRITER = textwrap.dedent("""
    import sys
    import fiftyone as fo
    import sei_fiftyone as sfo
    name, key, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sfo.compute_sei(fo.load_dataset(name), "ground_truth", brain_key=key, embeddings_field="embedding",
                    epochs=epochs, progress=False)
    print("done", key, flush=True)
""")


def concurrent_runs(dataset, keys):
    """Two compute_sei processes started together on one dataset; returns their outputs."""
    procs = [ScriptProcess(_WRITER, [dataset.name, key, 3 + i]) for i, key in enumerate(keys)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    return outs


@pytest.mark.parametrize("keys", [("a", "b"), ("sei", "sei")])
def test_two_concurrent_runs_lose_nothing(dataset, keys):
    dataset.persistent = True  # the writers are other processes
    concurrent_runs(dataset, keys)
    ds = _consistent(dataset)
    assert sorted(ds.list_brain_runs()) == sorted(set(keys))
    for key in set(keys):
        assert set(sfo.field_names(key)) <= set(ds.get_field_schema())
        assert len(ds.exists(key)) == len(ds)
        assert ds.load_saved_view(sfo.saved_view_name(key)).values("id") == sfo.sorted_view(ds, key).values("id")
    assert _tmp_collections() == []


_HOLDER = textwrap.dedent("""
    import sys, time
    import fiftyone as fo
    import sei_fiftyone.lease as lease
    ds = fo.load_dataset(sys.argv[1])
    with lease.writing(ds):
        open(sys.argv[2], "w").close()
        time.sleep(float(sys.argv[3]))
""")


def _hold_lease(dataset, tmp_path, seconds):
    flag = tmp_path / "holding"
    return start_until_flag(_HOLDER, [dataset.name, flag, seconds], flag, timeout=60)


def test_a_live_writer_is_waited_for_then_refused_clearly(dataset, tmp_path, monkeypatch):
    dataset.persistent = True
    sfo.compute_sei(dataset, "ground_truth", **RUN)
    before = dataset.values("sei")
    proc = _hold_lease(dataset, tmp_path, 120)
    try:
        monkeypatch.setenv(lease.WAIT_ENV, "1")
        with pytest.raises(sfo.DatasetBusyError, match=rf"being written by process {proc.pid}"):
            sfo.compute_sei(dataset, "ground_truth", epochs=4, embeddings_field="embedding", progress=False)
        assert sfo.recover_interrupted_writes(dataset) == []  # readers do not wait
        dataset.reload()
        assert dataset.values("sei") == before and dataset.get_brain_info("sei").config.epochs == 3
    finally:
        proc.kill()
        proc.wait()
    # its holder is gone (same host, pid dead): the lease is free at once, no expiry to wait for
    start = time.time()
    sfo.compute_sei(dataset, "ground_truth", epochs=4, embeddings_field="embedding", progress=False)
    assert time.time() - start < 30 and dataset.get_brain_info("sei").config.epochs == 4


def test_an_expired_lease_of_another_host_is_taken_and_a_live_one_is_never_overtaken(dataset):
    coll = lease._collection()
    name = dataset._sample_collection_name
    coll.insert_one({"_id": name, "owner": "elsewhere", "host": "another-host", "pid": 1,
                     "expires": __import__("datetime").datetime(2000, 1, 1)})
    with lease.writing(dataset, wait=0) as held:
        assert coll.find_one({"_id": name})["owner"] == held.token
        other = lease.Lease(name)
        assert not other._try_take()  # live: never overtaken
        held.check()
    assert coll.find_one({"_id": name}) is None


def test_a_writer_that_lost_its_lease_writes_nothing(dataset):
    sfo.compute_sei(dataset, "ground_truth", **RUN)
    before = dataset.values("sei")

    def steal(phase):
        if phase == "staged":  # as if paused past the expiry while another writer took over
            lease._collection().update_one({"_id": dataset._sample_collection_name}, {"$set": {"owner": "thief"}})
    writeback._phase, orig = steal, writeback._phase
    try:
        with pytest.raises(lease.LeaseLostError, match="lost the dataset's write lease"):
            sfo.compute_sei(dataset, "ground_truth", epochs=5, embeddings_field="embedding", progress=False)
    finally:
        writeback._phase = orig
    dataset.reload()
    assert dataset.values("sei") == before and _tmp_collections() == []


# kills inside FiftyOne's calls and inside a comparison -----------------------------------------

_KILLED = textwrap.dedent("""
    import sys, time
    import fiftyone as fo
    import fiftyone.core.odm as foodm
    import sei_fiftyone as sfo
    import sei_fiftyone.writeback as writeback

    name, what, where, flag = sys.argv[1:5]
    ds = fo.load_dataset(name)

    def pause():
        open(flag, "w").close()
        time.sleep(600)

    if where.startswith("after:"):  # pause right after a call returns: after:<module>:<Class.method>
        import importlib
        module, attr = where[len("after:"):].split(":")
        owner_name, method = attr.rsplit(".", 1)
        owner = importlib.import_module(module)
        for part in owner_name.split("."):
            owner = getattr(owner, part)
        orig = getattr(owner, method)
        def paused(*a, **k):
            out = orig(*a, **k)
            pause()
        setattr(owner, method, paused)
    elif where == "save_view:after_delete":  # the old view's document deleted, the list not saved
        orig = foodm.SavedViewDocument.delete
        def delete(self, *a, **k):
            orig(self, *a, **k)
            pause()
        foodm.SavedViewDocument.delete = delete
    elif where == "save_view:after_insert":  # the new view's document saved, not yet in the list
        orig = foodm.SavedViewDocument.save
        def save(self, *a, **k):
            out = orig(self, *a, **k)
            pause()
        foodm.SavedViewDocument.save = save
    else:
        writeback._phase = lambda p: pause() if p == where else None
    if what == "run":
        sfo.compute_sei(ds, "ground_truth", embeddings_field="embedding", epochs=6, progress=False)
    elif what == "compare":
        sfo.compare_with_confident_learning(ds, "sei", folds=4)
    elif what == "cutoff":
        from sei_fiftyone import review
        review.set_cutoff(ds, "sei", -0.05)
    elif what == "delete":
        ds.delete_brain_run("sei")
    elif what == "rename":
        ds.rename_brain_run("sei", "moved")
    print("finished without a kill", flush=True)
""")


def run_and_kill(dataset, what, where, tmp_path):
    flag = tmp_path / f"in_{what}"
    kill_at_flag(_KILLED, [dataset.name, what, where, flag], flag)


@pytest.mark.parametrize("where", ["save_view:after_delete", "save_view:after_insert"])
def test_a_kill_inside_save_view_is_repaired(dataset, tmp_path, where):
    dataset.persistent = True
    sfo.compute_sei(dataset, "ground_truth", **RUN)
    run_and_kill(dataset, "run", where, tmp_path)
    assert sfo.recover_interrupted_writes(dataset) == ["sei"]
    ds = _consistent(dataset)
    assert ds.get_brain_info("sei").config.epochs == 6  # the killed run, completed
    assert ds.list_saved_views().count("sei_most_likely_mislabeled") == 1
    ds.delete_brain_run("sei")
    ds.reload()
    assert ds.list_saved_views() == [] and _tmp_collections() == []
    assert foodm.get_db_conn().views.count_documents({"_dataset_id": ds._doc.id, "name": {"$regex": "^sei"}}) <= 1


@pytest.mark.parametrize("where", ["staged", "switched", "registered"])
def test_a_kill_inside_a_comparison_leaves_the_old_or_the_new_one(dataset, tmp_path, where):
    dataset.persistent = True
    sfo.compute_sei(dataset, "ground_truth", **RUN)
    sfo.compare_with_confident_learning(dataset, "sei", folds=3)
    old = sfo.get_comparison(dataset, "sei")
    run_and_kill(dataset, "compare", where, tmp_path)
    sfo.recover_interrupted_writes(dataset)
    ds = _consistent(dataset)
    new = sfo.get_comparison(ds, "sei")
    assert new["folds"] == (3 if where == "staged" else 4)
    if where == "staged":
        assert {k: v for k, v in new.items() if k != "timestamp"} == {k: v for k, v in old.items() if k != "timestamp"}
    flags = ds.values("sei_cl_mislabeled")
    assert ds.load_run_results("sei_cl", cache=False).n_cl_flagged == sum(flags)
    assert _tmp_collections() == []


def test_a_stale_journal_whose_pid_is_reused_is_repaired_before_the_next_write(dataset, tmp_path):
    """The journal of a killed write names a pid that now belongs to a live process: ownership
    is the lease's token, so the next writer still repairs it (before writing: a later repair
    can never roll a newer run back)."""
    dataset.persistent = True
    sfo.compute_sei(dataset, "ground_truth", **RUN)
    before = dataset.values("sei")
    run_and_kill(dataset, "run", "staged", tmp_path)
    # the killed write was staged; pretend its pid is now a live process of this host
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        for name in _tmp_collections():
            if not name.endswith("_old"):
                foodm.get_db_conn()[name].update_one({"_id": "meta"}, {"$set": {"pid": sleeper.pid}})
        sfo.compute_sei(dataset, "ground_truth", epochs=5, embeddings_field="embedding", progress=False)
        assert _tmp_collections() == []
        dataset.reload()
        assert dataset.get_brain_info("sei").config.epochs == 5 and dataset.values("sei") != before
        assert sfo.recover_interrupted_writes(dataset) == []
        assert dataset.get_brain_info("sei").config.epochs == 5
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("where", ["after:sei_fiftyone.runs:SEI.cleanup",
                                   "after:fiftyone.core.dataset:Dataset.delete_sample_fields",
                                   "after:fiftyone.core.odm:RunDocument.delete"])
def test_a_kill_inside_delete_brain_run_is_finished_by_the_next_writer(dataset, tmp_path, where):
    dataset.persistent = True
    sfo.compute_sei(dataset, "ground_truth", **RUN)
    sfo.compare_with_confident_learning(dataset, "sei", folds=3)
    run_and_kill(dataset, "delete", where, tmp_path)
    assert sfo.recover_interrupted_writes(dataset) in (["sei"], [])
    ds = _consistent(dataset)
    assert ds.list_brain_runs() == [] and ds.list_runs() == [] and ds.list_saved_views() == []
    assert not [f for f in ds.get_field_schema() if f.startswith("sei")]
    assert foodm.get_db_conn()[ds._sample_collection_name].count_documents({"sei": {"$exists": True}}) == 0


@pytest.mark.parametrize("where", ["after:sei_fiftyone.runs:SEI.rename",
                                   "after:fiftyone.core.dataset:Dataset.rename_sample_fields",
                                   "after:fiftyone.core.dataset:Dataset.delete_saved_view"])
def test_a_kill_inside_rename_brain_run_is_finished_by_the_next_writer(dataset, tmp_path, where):
    dataset.persistent = True
    sfo.compute_sei(dataset, "ground_truth", **RUN)
    sfo.compare_with_confident_learning(dataset, "sei", folds=3)
    flags = dataset.values("sei_mislabeled")
    run_and_kill(dataset, "rename", where, tmp_path)
    assert sfo.recover_interrupted_writes(dataset) == ["sei"]
    ds = _consistent(dataset)
    assert ds.list_brain_runs() == ["moved"] and ds.list_runs() == ["moved_cl"]
    assert ds.values("moved_mislabeled") == flags
    assert sorted(ds.list_saved_views()) == ["moved_cl_disagreements", "moved_most_likely_mislabeled"]
    assert sfo.get_comparison(ds, "moved")["n_compared"] == len(ds)
    assert not [f for f in ds.get_field_schema() if f.startswith("sei")]


@pytest.mark.parametrize("where", ["staged", "switched", "registered"])
def test_a_kill_while_moving_the_cutoff_leaves_flags_and_results_in_step(dataset, tmp_path, where):
    dataset.persistent = True
    sfo.compute_sei(dataset, "ground_truth", **RUN)
    assert dataset.load_brain_results("sei", cache=False).threshold != -0.05
    run_and_kill(dataset, "cutoff", where, tmp_path)
    sfo.recover_interrupted_writes(dataset)
    ds = _consistent(dataset)
    res = ds.load_brain_results("sei", cache=False)
    scores, flags = ds.values(["sei", "sei_mislabeled"])
    if where == "staged":
        assert res.computed_threshold is None  # the old cutoff
    else:
        assert res.threshold == -0.05 and res.computed_threshold is not None  # the new one
    assert flags == [s < res.threshold for s in scores] and res.num_flagged == sum(flags)
    assert ds.load_saved_view("sei_most_likely_mislabeled").values("id") == sfo.sorted_view(ds).values("id")


def test_a_journal_left_by_the_previous_version_is_completed(dataset):
    """Journals written before the comparison and cutoff were journaled too hold the run's
    config, results and view stages without a kind or key: they are still completed."""
    sfo.compute_sei(dataset, "ground_truth", **RUN)

    def fail(phase):
        if phase == "switched":
            raise RuntimeError("injected after the switch")
    writeback._phase, orig = fail, writeback._phase
    try:
        with pytest.raises(RuntimeError, match="injected"):
            sfo.compute_sei(dataset, "ground_truth", epochs=5, embeddings_field="embedding", progress=False)
    finally:
        writeback._phase = orig
    journal, = [n for n in _tmp_collections() if not n.endswith("_old")]
    foodm.get_db_conn()[journal].update_one({"_id": "meta"}, {"$unset": {"run.kind": "", "run.key": ""}})
    assert sfo.recover_interrupted_writes(dataset) == ["sei"]
    ds = _consistent(dataset)
    assert ds.get_brain_info("sei").config.epochs == 5
