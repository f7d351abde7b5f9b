"""Issue 21, the review desk and the App's forms (real mongod, no mocks of the database):
recovery from a killed write before the panel reads, the accepted label never lost, forged
ids and bad batch sizes answered in the panel, review tags refused as suggestion tags, paths
in the App restricted to a root set, and brain keys of a sane length."""

import os

import numpy as np
import pytest

import fiftyone as fo
import fiftyone.core.odm as foodm
import fiftyone.operators as foo
from fiftyone.operators.executor import ExecutionError

import sei_fiftyone as sfo
import sei_fiftyone.writeback as writeback
from sei.constants import MAX_BRAIN_KEY_LENGTH
from sei_fiftyone import compute_form, review
from sei_fiftyone.__main__ import main as cli_main
from sei_fiftyone.relabel import DEFAULT_TAG
from test_panel import Panel
from test_write_safety import _run_and_kill

RUN = dict(embeddings_field="embedding")
COMPUTE = "@sei/fiftyone/compute_sei"


@pytest.fixture(scope="module", autouse=True)
def installed_plugin():
    cli_main(["install-plugin"])


@pytest.fixture
def run(dataset):
    sfo.compute_sei(dataset, "ground_truth", epochs=3, **RUN)
    return dataset


def _tmp_collections():
    return sorted(n for n in foodm.get_db_conn().list_collection_names() if n.startswith("tmp."))


def _in_step(ds, key="sei"):
    """Whether every scored sample is flagged exactly when its score is below the recorded cutoff."""
    ds.reload()
    cutoff = ds.load_brain_results(key, cache=False).threshold
    scores, flags = ds.exists(key).values([key, f"{key}_mislabeled"])
    return cutoff, [bool(f) for f in flags] == [s < cutoff for s in scores]


def _refused(uri, dataset, **kwargs):
    """The error text of an operator run refused by its form's validation or by execute()."""
    try:
        result = foo.execute_operator(uri, dataset=dataset, **kwargs)
    except ExecutionError as e:
        return str(e)
    assert result.error is not None, "the operator ran"
    return result.error


def _notified(panel):
    return [n["message"] for n in panel.sent("notify") if n.get("variant") == "error"]


# 1. recovery before the panel reads -------------------------------------------------------------

@pytest.mark.parametrize("entry", ["panel", "review"])
def test_a_cutoff_moved_after_a_kill_in_the_switch_keeps_the_flags_in_step(dataset, tmp_path, entry):
    dataset.persistent = True  # the killed process shares the database
    sfo.compute_sei(dataset, "ground_truth", epochs=3, **RUN)
    previous = dataset.values(["id", "sei"])
    _run_and_kill(dataset, "switching", tmp_path)  # half of the new run's values switched in
    assert _tmp_collections(), "expected the killed write's journal"
    cutoff = float(np.median(previous[1]))
    if entry == "panel":
        p = Panel(dataset)
        p.state.update(brain_key="sei", cutoff=cutoff)  # a panel open before the kill
        p("on_cutoff")
        assert not _notified(p)
    else:
        review.set_cutoff(dataset, "sei", cutoff)
    writeback.recover_interrupted_writes(dataset)  # what the next compute_sei does first
    assert _in_step(dataset) == (cutoff, True)
    assert dataset.values(["id", "sei"]) == previous  # the previous run, not a mix
    assert _tmp_collections() == []


class _Killed(BaseException):
    """A kill -9 inside this process: nothing of the write's own cleanup catches it."""


@pytest.fixture
def killed_after_switch(run, monkeypatch):
    """A new run of ``run`` (6 epochs) killed once all its values were switched in, before its
    registration: the journal asks for a completion."""
    def phase(name):
        if name == "switched":
            raise _Killed()
    monkeypatch.setattr(writeback, "_phase", phase)
    with pytest.raises(_Killed):
        sfo.compute_sei(run, "ground_truth", epochs=6, **RUN)
    monkeypatch.undo()
    assert _tmp_collections() and run.get_brain_info("sei").config.epochs == 3
    return run


@pytest.mark.parametrize("entry", ["on_load", "on_cutoff", "on_next_batch", "on_accept", "on_reject",
                                   "set_cutoff", "next_batch", "queue_items", "suggest_relabels",
                                   "apply_suggestions"])
def test_every_entry_of_the_review_desk_repairs_a_killed_write_first(killed_after_switch, entry):
    ds = killed_after_switch
    sample_id = ds.first().id
    cutoff = float(np.median(ds.values("sei")))
    if entry.startswith("on_"):
        p = Panel(ds)
        p.state.update(brain_key="sei", cutoff=cutoff, budget=3, queue=[sample_id])
        p(entry, **({"sample_id": sample_id} if entry in ("on_accept", "on_reject") else {}))
        assert not _notified(p)
    elif entry == "set_cutoff":
        review.set_cutoff(ds, "sei", cutoff)
    elif entry == "next_batch":
        review.next_batch(ds, "sei", 3)
    elif entry == "queue_items":
        review.queue_items(ds, "sei", [sample_id])
    elif entry == "suggest_relabels":
        sfo.suggest_relabels(ds, budget=3)
    else:
        sfo.apply_suggestions(ds.select(sample_id))
    assert _tmp_collections() == []
    ds.reload()
    assert ds.get_brain_info("sei").config.epochs == 6  # the killed run, completed
    if entry in ("on_cutoff", "set_cutoff"):
        assert _in_step(ds) == (cutoff, True)  # the moved cutoff, not the completion's, is recorded
    assert _in_step(ds)[1]


# 2. accept never loses the label it replaces ----------------------------------------------------

def test_accept_refuses_an_original_field_of_another_type_before_writing(run):
    run.add_sample_field("ground_truth_original", fo.StringField)
    run.set_values("ground_truth_original", ["a note"] * len(run))
    sample_id = [i for i, g, s in zip(*run.values(["id", "ground_truth.label", "sei_suggestion.label"]))
                 if g != s][0]  # accepting it would change its label
    before = run.values(["id", "ground_truth.label", "ground_truth_original", "tags"])
    with pytest.raises(ValueError, match="ground_truth_original.*StringField.*nothing was written"):
        review.accept(run, "sei", sample_id)
    with pytest.raises(ValueError, match="ground_truth_original"):
        sfo.apply_suggestions(run.select(sample_id))
    p = Panel(run)
    p.state.update(brain_key="sei", queue=[sample_id])
    p("on_accept", sample_id=sample_id)
    assert "ground_truth_original" in _notified(p)[0]
    assert run.values(["id", "ground_truth.label", "ground_truth_original", "tags"]) == before
    run.delete_sample_field("ground_truth_original")  # once it is out of the way, accepting works
    given = run[sample_id].ground_truth.label
    assert review.accept(run, "sei", sample_id) == 1
    assert run[sample_id].ground_truth_original.label == given


# 3. forged ids and bad batch sizes --------------------------------------------------------------

FORGED_IDS = ["x", "0" * 24, "ABCDEF0123456789ABCDEF01", {"$gt": ""}, ["x"], None, 12]


@pytest.mark.parametrize("method", ["on_accept", "on_reject", "on_skip"])
def test_forged_sample_ids_are_a_message_in_the_panel(run, method):
    p = Panel(run)("on_load")
    p.state["queue"] = run.limit(2).values("id")
    tags = run.values("tags")
    for forged in FORGED_IDS:
        p(method, sample_id=forged)  # the Panel helper asserts that no traceback came back
        (message,) = _notified(p)
        assert "Traceback" not in message and ("sample id" in message or "not in the relabel queue" in message
                                               or "No sample" in message), message
    assert run.values("tags") == tags


def test_a_sample_of_another_dataset_is_refused(run, tmp_path):
    from sei_fo_testutil import build_dataset

    other = build_dataset(str(tmp_path / "other"), n=6)
    try:
        p = Panel(run)("on_load")
        p("on_accept", sample_id=other.first().id)
        assert "No sample of SEI run 'sei'" in _notified(p)[0]
    finally:
        other.delete()


@pytest.mark.parametrize("queue", [["x"], ["0" * 24, "x"], "x", [{"$gt": ""}], 7])
def test_a_forged_queue_is_a_message_and_never_a_traceback(run, queue):
    p = Panel(run)("on_load")
    p.state["queue"] = queue
    p("on_show_queue")
    assert "sample id" in _notified(p)[0] or "list" in _notified(p)[0]
    assert "queue_error" in p.shown()  # the render shows the queue's problem, without crashing
    p("on_refresh")
    p("on_skip", sample_id="0" * 24)
    assert _notified(p)


@pytest.mark.parametrize("bad", [0, -1, 2.5, 3.0, True, "5", [5]])
def test_bad_batch_sizes_are_refused_not_rounded(run, bad):
    p = Panel(run)("on_load")
    p.state["budget"] = bad
    p("on_next_batch")
    (message,) = _notified(p)
    assert message.startswith("Batch size must be a whole number of at least 1"), message
    assert len(run.match_tags(DEFAULT_TAG)) == 0 and p.state["queue"] == []
    with pytest.raises(ValueError, match="budget"):
        review.next_batch(run, "sei", bad)
    error = _refused("@sei/fiftyone/suggest_relabels", run, params={"brain_key": "sei", "budget": bad})
    assert "budget must be a whole number" in error
    assert len(run.match_tags(DEFAULT_TAG)) == 0
    p.state["budget"] = None  # never typed: the default batch
    p("on_next_batch")
    assert len(p.state["queue"]) == 10


def test_a_forged_cell_and_selection_are_refused(run):
    p = Panel(run)("on_load")
    p("on_cell_click", x={"$where": "1"}, y="red")
    assert "pair of class names" in _notified(p)[0]
    p.state["cell"] = "junk"
    p("on_show_queue")  # rendered without the cell, no traceback
    assert "cell_error" in p.shown()
    error = _refused("@sei/fiftyone/apply_suggestions", run, selected=["x"],
                     params={"brain_key": "sei", "view_target": "SELECTED_SAMPLES", "only_tagged": False})
    assert "Not a sample id: 'x'" in error


# 4. review tags are not suggestion tags ---------------------------------------------------------

@pytest.mark.parametrize("tag", ["ground_truth_accepted", "ground_truth_rejected", "clean_accepted", "", None])
def test_review_tags_cannot_mark_suggestions(run, tag):
    with pytest.raises(ValueError, match="tag"):
        sfo.suggest_relabels(run, budget=5, tag=tag)
    assert run.count_values("tags") == {}
    ctx = foo.ExecutionContext(request_params={"dataset_name": run.name,
                                               "params": {"brain_key": "sei", "tag": tag}})
    prop = foo.get_operator("@sei/fiftyone/suggest_relabels").resolve_input(ctx).type.properties["tag"]
    assert prop.invalid and "tag" in prop.error_message
    assert "tag" in _refused("@sei/fiftyone/suggest_relabels", run, params={"brain_key": "sei", "budget": 5,
                                                                             "tag": tag})
    assert run.count_values("tags") == {}
    assert review.review_counts(run, "sei")["reviewed"] == 0


def test_an_ordinary_tag_still_marks_suggestions(run):
    assert len(sfo.suggest_relabels(run, budget=5, tag="to_check")) == 5
    assert sfo.suggest_relabels(run, budget=0) == []


# 5. paths in App forms ---------------------------------------------------------------------------

def _form(dataset, **params):
    ctx = foo.ExecutionContext(request_params={"dataset_name": dataset.name, "params": params})
    return foo.get_operator(COMPUTE).resolve_input(ctx).type.properties


@pytest.fixture
def root(tmp_path, monkeypatch):
    root = tmp_path / "models"
    (root / "clip").mkdir(parents=True)
    (root / "weights.pt").write_bytes(b"not really weights")
    os.symlink("/etc/passwd", root / "passwd_link")
    monkeypatch.setenv(compute_form.PATH_ROOTS_ENV, str(root) + os.pathsep + str(tmp_path / "missing_root"))
    return root


def test_paths_outside_the_roots_all_get_one_message(run, root):
    unusable = ["/etc/shadow", "/etc/passwd", "/etc", "/nonexistent/ckpt.pt", f"{root}/../../../etc/passwd",
                f"{root}/passwd_link", f"{root}/missing.pt", f"{root}/weights.pt/inside", "weights.pt",
                "~/../../etc/passwd"]
    messages = set()
    for path in unusable:
        props = _form(run, model="checkpoint", checkpoint=path)
        assert props["checkpoint"].invalid and "arch" not in props, path
        messages.add(props["checkpoint"].error_message)
        with pytest.raises(ValueError) as raised:
            compute_form.compute_kwargs(dict(label_field="ground_truth", model="checkpoint", checkpoint=path), run)
        messages.add(str(raised.value))
    assert len(messages) == 1, messages
    (message,) = messages
    assert message.startswith("Not a usable checkpoint") and str(root) in message
    assert compute_form.PATH_ROOTS_ENV in str(_form(run, model="checkpoint")["checkpoint"].to_json())

    props = _form(run, model="checkpoint", checkpoint=f"{root}/weights.pt")  # usable: the form goes on
    assert "arch" in props and props["checkpoint"].error_message != message
    props = _form(run, model="checkpoint", checkpoint=f"{root}/clip")
    assert "arch" not in props and "open_clip_config.json" in props["checkpoint"].error_message
    assert "Not a usable checkpoint" in _refused(COMPUTE, run, params=dict(
        label_field="ground_truth", model="checkpoint", checkpoint="/etc/passwd", brain_key="leak"))
    assert "leak" not in run.list_brain_runs()


def test_a_forged_model_value_is_never_probed(run, root, monkeypatch):
    def probe(*args, **kwargs):
        raise AssertionError("a forged model was probed")
    monkeypatch.setattr(compute_form, "weights_warning", probe)
    for forged in ("/etc/shadow", f"{root}/weights.pt", "local-dir:/etc"):
        props = _form(run, model=forged)
        assert props["model"].invalid and props["model"].error_message == "Choose a model from the list"
        with pytest.raises(ValueError, match="form's choices"):
            compute_form.compute_kwargs(dict(label_field="ground_truth", model=forged), run)


def test_the_default_roots_are_the_home_and_the_media_folders(run, tmp_path, monkeypatch):
    monkeypatch.delenv(compute_form.PATH_ROOTS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    media = os.path.dirname(run.first().filepath)
    assert compute_form.path_roots(run) == sorted({os.path.realpath(tmp_path / "home"), os.path.realpath(media)})
    assert compute_form.path_roots() == [os.path.realpath(tmp_path / "home")]
    (tmp_path / "home").mkdir()
    assert compute_form.checked_path(str(tmp_path / "home"), compute_form.path_roots(run))
    assert compute_form.checked_path(run.first().filepath, compute_form.path_roots(run))
    with pytest.raises(ValueError, match="Not a usable checkpoint"):
        compute_form.checked_path("/etc/passwd", compute_form.path_roots(run))
    monkeypatch.setenv("HOME", "/")  # a filesystem root is never a default root
    assert "/" not in compute_form.path_roots(run)


def test_a_run_on_a_checkpoint_is_run_again_through_the_checkpoint_field(run):
    import fiftyone.core.brain as fob

    config = run.get_brain_info("sei").config  # as compute_sei(model="/models/clip", arch=...) records it
    config.model, config.mode, config.embeddings_field = "/models/clip", "frozen", None
    config.train_kwargs = {"arch": "ViT-B-32"}
    fob.BrainMethod.update_run_config(run, "sei", config)
    params = review.rerun_params(run, "sei")
    assert (params["model"], params["checkpoint"], params["arch"]) == ("checkpoint", "/models/clip", "ViT-B-32")


# 6. brain keys of a sane length --------------------------------------------------------------------

def test_a_brain_key_longer_than_the_limit_is_refused_by_the_form(dataset):
    long_key = "k" * (MAX_BRAIN_KEY_LENGTH + 1)
    props = _form(dataset, brain_key=long_key, model="embeddings", embeddings_field="embedding")
    assert props["brain_key"].invalid and f"at most {MAX_BRAIN_KEY_LENGTH} characters" in props[
        "brain_key"].error_message
    props = _form(dataset, brain_key="k" * MAX_BRAIN_KEY_LENGTH, model="embeddings", embeddings_field="embedding")
    assert not props["brain_key"].invalid
    for key in (long_key, "k" * 1600):
        assert f"at most {MAX_BRAIN_KEY_LENGTH} characters" in _refused(COMPUTE, dataset, params=dict(
            label_field="ground_truth", model="embeddings", embeddings_field="embedding", epochs=1, brain_key=key))
    dataset.reload()
    assert dataset.list_brain_runs() == []


# forged input, at random ------------------------------------------------------------------------

_CALLBACKS = ["on_refresh", "on_change_run", "on_cutoff", "on_reset_cutoff", "on_cell_click", "on_next_batch",
              "on_show_queue", "on_accept", "on_reject", "on_skip", "on_show_disagreements"]


def _junk(rng, ids):
    pool = [None, "", "x", "0" * 24, "f" * 24, ids[0], ids[0][:-1] + "z", -1, 0, 2.5, 1e308, float("nan"),
            True, [], [ids[1], "junk"], {"$gt": ""}, "sei", "ground_truth", "k" * 2000, ["0" * 24] * 3,
            {"given": "red", "suggested": {"$ne": 1}}]
    return pool[rng.integers(len(pool))]


def test_forged_panel_input_at_random_is_a_message_never_a_traceback(run):
    """120 callbacks with forged state and parameters (ids, keys, cutoffs, batch sizes, queues,
    cells, operator-injection dicts): every one answers without an error result (a bad value
    is a notification), and the run's values are those a valid callback could leave."""
    rng = np.random.default_rng(21)
    ids = run.values("id")
    scores = run.values("sei")
    answered = notified = 0
    for _ in range(120):
        p = Panel(run)
        p.state.update(brain_key=rng.choice(["sei", None]) if rng.random() < 0.7 else _junk(rng, ids),
                       cutoff=_junk(rng, ids) if rng.random() < 0.5 else float(rng.normal()),
                       budget=_junk(rng, ids), queue=_junk(rng, ids), cell=_junk(rng, ids))
        method = _CALLBACKS[rng.integers(len(_CALLBACKS))]
        p(method, sample_id=_junk(rng, ids), value=_junk(rng, ids), x=_junk(rng, ids), y=_junk(rng, ids))
        answered += 1
        notified += bool(_notified(p))
    assert answered == 120 and notified > 30
    run.reload()
    assert run.values("sei") == scores  # scores are never written by the desk
    cutoff, in_step = _in_step(run)
    assert in_step
