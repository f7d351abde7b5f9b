"""The label-review panel ``@sei/fiftyone/sei_review``: its callbacks, run through FiftyOne's
operator machinery as the App runs them, and the functions of ``sei_fiftyone.review``
behind them, on 150 real CIFAR-10 images with CIFAR-10N human labels."""

import numpy as np
import pydash
import pytest

import fiftyone.operators as foo
from fiftyone.server.view import get_view

import sei_fiftyone as sfo
from sei_fiftyone import panel as sei_panel
from sei_fiftyone import review
from sei_fiftyone.__main__ import main as cli_main
from sei_fiftyone.demo import load_sample
from sei_fiftyone.relabel import DEFAULT_TAG

URI = "@sei/fiftyone/sei_review"
ACCEPTED, REJECTED = review.review_tags("ground_truth")


@pytest.fixture(scope="module")
def base():
    cli_main(["install-plugin"])
    ds = load_sample(limit=150, name="sei-panel-base")
    sfo.compute_sei(ds, "ground_truth", epochs=10, image_size=64)
    yield ds
    ds.delete()


class Panel:
    """The App's side of a panel: keeps its state, applies the patches the callbacks send."""

    def __init__(self, dataset):
        self.dataset, self.state, self.data, self.requests, self.output = dataset, {}, {}, [], None

    def __call__(self, method, **params):
        result = foo.execute_operator(URI, dataset=self.dataset, params={
            "__method__": method, "panel_id": "panel-1", "panel_state": pydash.clone_deep(self.state),
            "state": self.state, **params})
        assert result.error is None, result.error
        self.requests = [r.to_json() for r in result.executor._requests]
        for r in self.requests:
            if r["operator_uri"] == "patch_panel_state":
                for k, v in r["params"]["state"].items():
                    pydash.set_(self.state, k, v)
            elif r["operator_uri"] == "patch_panel_data":
                for k, v in r["params"]["data"].items():
                    pydash.set_(self.data, k, v)
            elif r["operator_uri"] == "clear_panel_state":
                self.state = {}
            elif r["operator_uri"] == "show_panel_output":
                self.output = r["params"]["output"]
        return self

    def sent(self, operator):
        return [r["params"] for r in self.requests if r["operator_uri"] == operator]

    def props(self):
        """Everything the last render shows, by name, nested ones included."""
        found = {}

        def walk(obj):
            for name, prop in (obj.get("properties") or {}).items():
                found.setdefault(name, prop)
                walk(prop.get("type") or {})

        walk(self.output["type"])
        return found

    def shown(self):
        return list(self.props())

    def text(self, name):
        """The markdown text rendered as ``name``."""
        return self.props()[name]["default"]


def _flags(ds, key="sei"):
    return dict(zip(*ds.values(["id", f"{key}_mislabeled"])))


def test_the_panel_is_part_of_the_plugin(base):
    op = foo.get_operator(URI)
    assert isinstance(op, foo.Panel) and op.config.label == "SEI label review"
    import fiftyone.plugins as fop

    assert fop.get_plugin("@sei/fiftyone").to_dict()["panels"] == ["sei_review"]


def test_on_load_shows_the_run(ds):
    p = Panel(ds)("on_load")
    results = ds.load_brain_results("sei")
    assert p.state["brain_key"] == "sei" and p.state["cutoff"] == results.threshold
    assert sum(p.data["histogram"][0]["y"]) == len(ds.exists("sei"))
    assert review.review_counts(ds, "sei") == {"flagged": results.num_flagged, "queued": 0, "reviewed": 0,
                                                "accepted": 0, "rejected": 0}
    assert p.text("counts_md").startswith(f"**{results.num_flagged}** flagged · **0** reviewed")
    assert {"brain_key", "counts_md", "cutoff", "histogram", "confusion", "next_batch", "rerun"} <= set(p.shown())


def test_the_histogram_marks_the_samples_below_the_cutoff(ds):
    hist = review.score_histogram(ds, "sei", cutoff=0.01)
    trace = hist["data"][0]
    assert sum(trace["y"]) == hist["num_scored"] == len(ds)
    assert [c == review.FLAGGED_COLOR for c in trace["marker"]["color"]] == [x < 0.01 for x in trace["x"]]
    assert hist["layout"]["shapes"][0]["x0"] == 0.01
    scores = ds.values("sei")
    assert hist["min"] == min(scores) and hist["max"] == max(scores)


def test_a_new_cutoff_reflags_the_samples_and_persists(ds):
    p = Panel(ds)("on_load")
    computed = ds.load_brain_results("sei").threshold
    before = _flags(ds)
    ids, scores, suggestions = ds.values(["id", "sei", "sei_suggestion.label"])
    cutoff = float(np.median(scores))
    p.state["cutoff"] = cutoff  # typed in the field, then "Apply cutoff"
    p("on_cutoff")
    flags = _flags(ds)
    assert flags == {i: s < cutoff for i, s in zip(ids, scores)} and flags != before
    assert list(ds.values(["id", "sei", "sei_suggestion.label"])) == [ids, scores, suggestions]  # untouched
    ds.reload()
    results = ds.load_brain_results("sei")
    assert results.threshold == cutoff and results.computed_threshold == computed
    assert results.num_flagged == sum(flags.values()) == review.summary(ds, "sei")["flagged"]
    assert p.text("counts_md").startswith(f"**{results.num_flagged}** flagged")
    assert p.state["cutoff"] == cutoff and p.props()["histogram"]["view"]["layout"]["shapes"][0]["x0"] == cutoff
    assert [c == review.FLAGGED_COLOR for c in p.data["histogram"][0]["marker"]["color"]] == [
        x < cutoff for x in p.data["histogram"][0]["x"]]
    saved = ds.load_saved_view(sfo.saved_view_name("sei"))
    assert saved.values("id") == sfo.sorted_view(ds).values("id") and len(saved) == sum(flags.values())
    assert p.sent("reload_samples")
    p("on_reset_cutoff")
    assert _flags(ds) == before and ds.load_brain_results("sei").threshold == computed


@pytest.mark.parametrize("bad", [float("nan"), "low", None])
def test_a_bad_cutoff_is_refused_without_a_write(ds, bad):
    before = _flags(ds)
    with pytest.raises((TypeError, ValueError), match="cutoff must be"):
        review.set_cutoff(ds, "sei", bad)
    p = Panel(ds)("on_load")
    p.state["cutoff"] = bad
    p("on_cutoff")
    assert p.sent("notify")[0]["variant"] == "error"
    assert _flags(ds) == before


def test_the_matrix_counts_the_flagged_samples_by_given_and_suggested_label(ds):
    conf = review.confusion(ds, "sei")
    heat = conf["data"][0]
    flagged = ds.match({"sei_mislabeled": True})
    pairs = list(zip(*flagged.values(["ground_truth.label", "sei_suggestion.label"])))
    for i, given in enumerate(heat["y"]):
        for j, suggested in enumerate(heat["x"]):
            assert heat["z"][i][j] == pairs.count((given, suggested))
    assert conf["num_flagged"] == len(flagged) == sum(map(sum, heat["z"]))


def test_clicking_a_cell_shows_its_samples_in_the_grid(ds):
    p = Panel(ds)("on_load")
    heat = p.data["confusion"][0]
    z = np.array(heat["z"])
    i, j = np.unravel_index(np.argmax(z * (np.array(heat["y"])[:, None] != np.array(heat["x"])[None, :])), z.shape)
    given, suggested = heat["y"][i], heat["x"][j]  # the largest cell where the model wants a change
    assert given != suggested and z[i, j] > 0
    p("on_cell_click", x=suggested, y=given, z=int(z[i, j]))
    (request,) = p.sent("set_view")
    view = get_view(ds, stages=request["view"])
    assert len(view) == z[i, j] and p.state["cell"] == {"given": given, "suggested": suggested}
    assert p.text("cell_md").endswith(f"**{len(view)}** flagged samples now")
    assert set(view.values("ground_truth.label")) == {given}
    assert set(view.values("sei_suggestion.label")) == {suggested}
    assert all(view.values("sei_mislabeled"))
    assert view.values("sei") == sorted(view.values("sei"))
    n = len(view)
    review.accept(ds, "sei", view.first().id)
    p("on_next_batch")  # any event renders: the cell's text follows the labels, the accepted sample left it
    assert p.text("cell_md").endswith(f"**{n - 1}** flagged samples now")


def test_the_queue_is_the_next_batch_of_active_label_correction(ds, base):
    p = Panel(ds)("on_load")
    p.state["budget"] = 5
    p("on_next_batch")
    queue = p.state["queue"]
    twin = base.clone()
    try:
        assert queue == sfo.suggest_relabels(twin, budget=5, tag="x", flagged_only=True)
    finally:
        twin.delete()
    assert sorted(ds.match_tags(DEFAULT_TAG).values("id")) == sorted(queue)
    assert [item["id"] for item in review.queue_items(ds, "sei", queue)] == queue
    assert {"item_0", "item_4", "accept", "reject", "skip", "show_queue"} <= set(p.shown())
    assert "item_5" not in p.shown()
    p("on_show_queue")
    assert get_view(ds, stages=p.sent("set_view")[0]["view"]).values("id") == queue


def test_accept_reject_and_skip(ds):
    p = Panel(ds)("on_load")
    p.state["budget"] = 4
    p("on_next_batch")
    a, r, s, rest = p.state["queue"]
    given = dict(zip(*ds.values(["id", "ground_truth.label"])))
    suggested = dict(zip(*ds.values(["id", "sei_suggestion.label"])))

    p("on_accept", sample_id=a)
    sample = ds[a]
    assert sample.ground_truth.label == suggested[a] and sample.ground_truth_original.label == given[a]
    assert ACCEPTED in sample.tags and DEFAULT_TAG not in sample.tags
    p("on_reject", sample_id=r)
    assert ds[r].ground_truth.label == given[r] and REJECTED in ds[r].tags and DEFAULT_TAG not in ds[r].tags
    p("on_skip", sample_id=s)
    assert p.state["queue"] == [rest, s] and ds[s].tags == [DEFAULT_TAG]
    assert review.review_counts(ds, "sei") == {"flagged": len(ds.match({"sei_mislabeled": True})), "queued": 2,
                                                "reviewed": 2, "accepted": 1, "rejected": 1}
    assert "**2** reviewed · **1** accepted · 1 rejected" in p.text("counts_md")
    changed = [i for i, lab in zip(*ds.values(["id", "ground_truth.label"])) if lab != given[i]]
    assert changed == ([a] if suggested[a] != given[a] else [])

    p("on_accept", sample_id=a)  # a second click on an answered row
    assert "already reviewed" in p.sent("notify")[0]["message"]
    assert ds[a].ground_truth_original.label == given[a]
    p("on_next_batch")  # reviewed samples never come back
    assert a not in p.state["queue"] and r not in p.state["queue"] and len(p.state["queue"]) == 4
    with pytest.raises(ValueError, match="not in the relabel queue"):
        review.skip(p.state["queue"], a)
    with pytest.raises(ValueError, match="budget"):
        review.next_batch(ds, "sei", 0)


def test_run_again_prompts_compute_sei_with_the_runs_options(ds):
    p = Panel(ds)("on_load")
    p.state["budget"] = 3
    p("on_next_batch")
    for sample_id in p.state["queue"]:
        p("on_accept", sample_id=sample_id)
    p("on_rerun")
    (prompt,) = p.sent("prompt_user_for_operation")
    assert prompt["operator_uri"] == "@sei/fiftyone/compute_sei"
    params = prompt["params"]
    assert params == {"label_field": "ground_truth", "model": "efficientnet-lite0", "mode": "frozen", "epochs": 10,
                      "threshold": "auto", "head": "linear", "score": "poe_knn", "image_size": 64,
                      "brain_key": "sei", "overwrite": True, "delegate": False}
    p.state["cutoff"] = 0.0
    p("on_cutoff")
    labels = ds.values("ground_truth.label")
    result = foo.execute_operator("@sei/fiftyone/compute_sei", dataset=ds, params=params)
    assert result.error is None
    ds.reload()
    assert ds.list_brain_runs() == ["sei"] and ds.get_brain_info("sei").config.epochs == 10
    results = ds.load_brain_results("sei")  # a new run: its own cutoff, on the corrected labels
    assert results.computed_threshold is None and results.num_samples == len(ds)
    assert ds.values("ground_truth.label") == labels


def test_long_image_runs_are_delegated_when_run_again(ds, monkeypatch):
    monkeypatch.setattr(review, "DELEGATE_IMAGES_ABOVE", len(ds) - 1)
    assert review.rerun_params(ds, "sei")["delegate"] is True
    monkeypatch.setattr(review, "DELEGATE_IMAGES_ABOVE", len(ds))
    assert review.rerun_params(ds, "sei")["delegate"] is False


def test_the_comparison_section_follows_get_comparison(ds, monkeypatch):
    def missing(dataset, brain_key):
        raise ImportError("no sei_fiftyone.compare")

    monkeypatch.setattr(sei_panel, "get_comparison", missing)
    p = Panel(ds)("on_load")
    assert "compare_na" in p.shown() and "compare" not in p.shown()

    monkeypatch.setattr(sei_panel, "get_comparison", lambda dataset, brain_key: None)
    p("on_load")
    assert "compare" in p.shown() and "show_disagreements" not in p.shown()
    p("on_compare")
    (prompt,) = p.sent("prompt_user_for_operation")
    assert prompt["operator_uri"] == "@sei/fiftyone/compare_with_confident_learning"
    assert prompt["params"] == {"brain_key": "sei"}

    metrics = {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "auroc": 0.7}
    found = {"n_disagree": 17, "view_name": "sei_cl_disagreements", "metrics": {"sei": metrics, "cl": metrics}}
    monkeypatch.setattr(sei_panel, "get_comparison", lambda dataset, brain_key: found)
    p("on_load")
    assert p.text("compare_text").startswith("**17** samples flagged by only one")
    assert "| SEI | – | 0.500 | 0.250 | 0.333 | 0.700 |" in p.text("compare_table")
    assert {"show_disagreements", "compare"} <= set(p.shown())
    p("on_show_disagreements")
    assert p.sent("set_view") == [{"name": "sei_cl_disagreements"}]


def test_choosing_another_run_and_a_dataset_without_runs(ds):
    sfo.compute_sei(ds.limit(120), "ground_truth", brain_key="sei_b", epochs=3, image_size=64, score="sei")
    stages = ds.load_saved_view(sfo.saved_view_name("sei_b"))._serialize(include_uuids=False)
    p = Panel(ds)("on_load")
    p.state["budget"] = 2
    p("on_next_batch")
    p("on_change_run", value="sei_b")
    assert p.state["brain_key"] == "sei_b" and p.state["queue"] == []
    assert p.state["cutoff"] == ds.load_brain_results("sei_b").threshold
    p.state["cutoff"] = -1.0  # a run on a view: its saved view keeps the view's stages
    p("on_cutoff")
    assert ds.load_saved_view(sfo.saved_view_name("sei_b"))._serialize(include_uuids=False) == stages
    assert ds.load_saved_view(sfo.saved_view_name("sei_b")).values("id") == sfo.sorted_view(ds, "sei_b").values("id")
    p("on_change_run", value="nope")
    assert "No SEI run 'nope'" in p.sent("notify")[0]["message"]
    p("on_change_dataset")  # a fresh state: the first run, no queue
    assert p.sent("clear_panel_state") and p.state["brain_key"] == "sei" and p.state["queue"] == []

    for key in list(ds.list_brain_runs()):
        ds.delete_brain_run(key)
    p = Panel(ds)("on_load")
    assert p.state["brain_key"] is None and "no_runs" in p.shown()


def test_the_comparison_section_on_a_real_comparison(ds):
    from sei_fiftyone.compare import compare_with_confident_learning, get_comparison

    rng = np.random.default_rng(0)
    classes = ds.load_brain_results("sei").classes
    clean = ds.values("clean.label")
    ds.set_values("features", [(np.eye(len(classes))[classes.index(c)] + rng.normal(0, 0.5, len(classes))).tolist()
                               for c in clean])
    found = compare_with_confident_learning(ds, "sei", embeddings_field="features", trusted_label_field="clean")
    p = Panel(ds)("on_load")
    assert p.text("compare_text").startswith(f"**{found['n_disagree']}** samples flagged by only one")
    rows = p.text("compare_table").splitlines()[2:]  # one row per detector, in this order
    for row, (key, name, flagged) in zip(rows, [("sei", "SEI", "n_sei_flagged"), ("cl", "Confident learning",
                                                "n_cl_flagged"), ("mistakenness", "FiftyOne mistakenness",
                                                                  "n_mistakenness_flagged")]):
        m = found["metrics"][key]
        assert row == (f"| {name} | {found[flagged]} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
                       f"{m['auroc']:.3f} |")
    assert len(rows) == 3 and p.text("compare_phases").startswith("Comparison phases: read ")
    p("on_show_disagreements")
    (request,) = p.sent("set_view")
    assert request == {"name": found["view_name"]} and ds.has_saved_view(found["view_name"])
    p.state["cutoff"] = float(np.median(ds.values("sei")))
    p("on_cutoff")  # the comparison follows the moved cutoff
    moved = get_comparison(ds, "sei")
    assert moved["n_sei_flagged"] == sum(ds.values("sei_mislabeled"))
    assert p.text("compare_text").startswith(f"**{moved['n_disagree']}** samples")


def test_edit_in_the_app_opens_fiftyones_editor_and_the_edit_counts_as_accept(ds):
    p = Panel(ds)("on_load")
    p.state["budget"] = 3
    p("on_next_batch")
    edited, untouched, other = p.state["queue"]
    given = dict(zip(*ds.values(["id", "ground_truth.label"])))
    assert "edit" in p.shown()
    p("on_edit", sample_id=edited)
    # the App's built-in operator: the sample view on its Annotate tab, the label selected
    assert p.sent("annotate") == [{"id": edited, "field_path": "ground_truth", "label_id": ds[edited].ground_truth.id}]
    assert p.state["editing"] == {edited: given[edited]} and ds[edited].tags == [DEFAULT_TAG]  # no sample written
    ds.reload()  # the App edits fields with a label schema: the run's classes to choose from
    schema = ds.label_schemas["ground_truth"]
    assert schema["type"] == "classification" and schema["classes"] == ds.load_brain_results("sei").classes
    assert ds.active_label_schemas == ["ground_truth"]
    assert review.ensure_label_schema(ds, "ground_truth", ["a", "b"]) is False  # a schema there is kept
    p("on_edit", sample_id=untouched)
    assert "*editing in the App*" in p.text("text")

    new_label = next(c for c in ds.load_brain_results("sei").classes if c != given[edited])
    ds.select(edited).set_values("ground_truth.label", [new_label])  # as the App's editor changes it
    p("on_change_current_sample")  # the sample view closed
    sample = ds[edited]
    assert sample.ground_truth.label == new_label and sample.ground_truth_original.label == given[edited]
    assert ACCEPTED in sample.tags and DEFAULT_TAG not in sample.tags
    assert p.state["queue"] == [untouched, other] and p.state["editing"] == {untouched: given[untouched]}
    assert "Recorded the edit of 1 sample(s)" in p.sent("notify")[0]["message"]
    assert ds[untouched].tags == [DEFAULT_TAG] and ds[untouched].ground_truth_original is None
    assert review.review_counts(ds, "sei")["accepted"] == 1

    p("on_edit", sample_id=edited)  # decided: refused, as a second Accept is
    assert "already reviewed" in p.sent("notify")[0]["message"]
    p("on_reject", sample_id=untouched)  # decided otherwise meanwhile: no longer waited for
    p("on_refresh")
    assert p.state["editing"] == {}
    with pytest.raises(ValueError, match="Not a sample id"):
        review.record_edits(ds, "sei", {"junk": "cat"})
    with pytest.raises(ValueError, match="map sample ids to labels"):
        review.record_edits(ds, "sei", [edited])


def test_the_panel_shows_the_phases_of_the_run_and_of_delegated_runs(ds):
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext, ExecutionProgress

    from sei_fiftyone.runs import RUN_PHASES

    timings = ds.load_brain_results("sei").timings
    assert tuple(timings) == RUN_PHASES and all(timings[k] > 0 for k in RUN_PHASES)
    p = Panel(ds)("on_load")
    assert p.text("phases_md") == ("Run phases: " + " · ".join(f"{k} {timings[k]:.3g} s" for k in RUN_PHASES))
    assert "refresh_progress" not in p.shown()

    service = DelegatedOperationService()  # a delegated run as FiftyOne's store holds it while a worker runs it
    doc = service.queue_operation("@sei/fiftyone/compute_sei", context=ExecutionContext(
        request_params={"dataset_name": ds.name, "dataset_id": str(ds._doc.id), "params": {}}))
    try:
        p("on_refresh")
        assert p.text("delegated_0") == "Delegated `compute_sei` queued: waiting for a worker"
        service.set_running(doc.id)
        service.set_progress(doc.id, ExecutionProgress(progress=0.4, label="train: epoch 2/5"))
        p("on_refresh")
        assert p.text("delegated_0") == "Delegated `compute_sei` running: train: epoch 2/5 (40 %)"
        assert "refresh_progress" in p.shown()
    finally:
        service.delete_operation(doc.id)
