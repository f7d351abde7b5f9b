"""The @sei/fiftyone operators, executed through FiftyOne's operator machinery."""

import os

import pytest

import fiftyone as fo
import fiftyone.core.brain as fob
import fiftyone.operators as foo
import fiftyone.plugins as fop
from fiftyone.operators.delegated import DelegatedOperationService

import sei_fiftyone as sfo
from sei_fiftyone.__main__ import main as cli_main

URI = "@sei/fiftyone"


@pytest.fixture(scope="module", autouse=True)
def installed_plugin():
    cli_main(["install-plugin"])
    fop.core._plugins_cache = None if hasattr(fop.core, "_plugins_cache") else None
    yield


def test_install_plugin_is_idempotent_and_found(plugins_dir):
    first = sfo.install_plugin()
    second = sfo.install_plugin()
    assert first == second and os.path.islink(first)
    assert URI in fop.list_plugins(enabled="all") or URI in [p.name for p in fop.list_plugins(enabled="all")]
    names = {op.uri for op in foo.list_operators()}
    for op in ("compute_sei", "open_sei_view", "suggest_relabels", "apply_suggestions"):
        assert f"{URI}/{op}" in names


def test_install_plugin_copy_mode(tmp_path):
    dest = sfo.install_plugin(tmp_path / "p", copy=True)
    assert (dest / "fiftyone.yml").exists() and not dest.is_symlink()
    assert sfo.install_plugin(tmp_path / "p", copy=True) == dest


def test_compute_sei_operator_immediate(dataset):
    result = foo.execute_operator(
        f"{URI}/compute_sei", dataset=dataset,
        params=dict(label_field="ground_truth", model="embeddings", embeddings_field="embedding",
                    epochs=5, threshold="zero", brain_key="sei_op"),
    )
    assert result.error is None
    dataset.reload()
    assert "sei_op" in dataset.list_brain_runs()
    assert {"sei_op", "sei_op_mislabeled", "sei_op_suggestion"} <= set(dataset.get_field_schema())
    assert "sei_op_most_likely_mislabeled" in dataset.list_saved_views()


def test_compute_sei_operator_passes_head_and_score(dataset):
    op = foo.get_operator(f"{URI}/compute_sei")
    ctx = foo.ExecutionContext(request_params={"dataset_name": dataset.name, "params": {}})
    props = op.resolve_input(ctx).type.properties
    assert set(props["head"].type.values) == {"auto", "linear", "prompt"}
    assert {"auto", "poe_knn", "aum_prob", "aum_prob_knn", "sei"} <= set(props["score"].type.values)
    result = foo.execute_operator(
        f"{URI}/compute_sei", dataset=dataset,
        params=dict(label_field="ground_truth", model="embeddings", embeddings_field="embedding",
                    epochs=3, head="prompt", score="aum_prob_knn", brain_key="sei_knn"),
    )
    assert result.error is None
    dataset.reload()
    config = dataset.get_brain_info("sei_knn").config
    assert config.head == "prompt" and config.score == "aum_prob_knn"


def test_compute_sei_operator_delegated_then_run_by_service(dataset, monkeypatch):
    reported = []  # what the worker's ctx.set_progress hands to FiftyOne's store
    store = DelegatedOperationService.set_progress
    monkeypatch.setattr(DelegatedOperationService, "set_progress",
                        lambda self, doc_id, progress: reported.append((progress.progress, progress.label))
                        or store(self, doc_id, progress))
    result = foo.execute_operator(
        f"{URI}/compute_sei", dataset=dataset, request_delegation=True,
        params=dict(label_field="ground_truth", model="embeddings", embeddings_field="embedding",
                    epochs=3, brain_key="sei_del"),
    )
    assert result.error is None
    dataset.reload()
    assert "sei_del" not in dataset.list_brain_runs()  # only queued so far
    dos = DelegatedOperationService()
    queued = dos.get_queued_operations(dataset_name=dataset.name)
    assert len(queued) == 1
    dos.execute_queued_operations(dataset_name=dataset.name)
    doc = dos.get(queued[0].id)
    assert doc.run_state == "completed", doc.result
    dataset.reload()
    assert "sei_del" in dataset.list_brain_runs()
    assert doc.status is not None and doc.status.progress == pytest.approx(1.0)
    phases = [label.split(":")[0] for _, label in reported]  # the run's phases, in order, as FiftyOne shows them
    assert [p for k, p in enumerate(phases) if k == 0 or p != phases[k - 1]] == ["read", "train", "score", "write"]
    assert any(label.startswith("train: epoch 3/3") for _, label in reported)
    assert [f for f, _ in reported] == sorted(f for f, _ in reported)
    assert tuple(dataset.load_brain_results("sei_del").timings) == ("read", "train", "score", "write")


def test_compute_sei_form_warns_without_classification_field(tmp_path):
    ds = fo.Dataset()
    ds.add_sample(fo.Sample(filepath=str(tmp_path / "x.jpg")))
    try:
        op = foo.get_operator(f"{URI}/compute_sei")
        ctx = foo.ExecutionContext(request_params={"dataset_name": ds.name, "params": {}})
        form = op.resolve_input(ctx)
        props = form.type.properties
        assert "no_label_field" in props and "label_field" not in props
    finally:
        ds.delete()


def test_score_choices_are_the_curated_scores_described_by_the_core_registry(dataset):
    from sei.scores import SCORES
    from sei_fiftyone.operators import SCORE_CHOICES

    assert [name for name, _ in SCORE_CHOICES] == ["auto", "poe_knn", "aum_prob", "aum_prob_knn", "sei"]
    assert SCORE_CHOICES[0][1].startswith("auto (default): poe_knn")
    for name, label in SCORE_CHOICES[1:]:
        assert label.startswith(f"{name}: {SCORES[name].description}")
    op = foo.get_operator(f"{URI}/compute_sei")
    ctx = foo.ExecutionContext(request_params={"dataset_name": dataset.name, "params": {}})
    view = op.resolve_input(ctx).type.properties["score"].view
    assert [(c.value, c.label) for c in view.choices] == list(SCORE_CHOICES)


def test_compute_sei_form_flags_an_existing_brain_key(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=2)
    op = foo.get_operator(f"{URI}/compute_sei")
    ctx = foo.ExecutionContext(request_params={"dataset_name": dataset.name,
                                               "params": {"brain_key": "sei"}})
    prop = op.resolve_input(ctx).type.properties["brain_key"]
    assert prop.invalid and "already exists" in prop.error_message
    ctx = foo.ExecutionContext(request_params={"dataset_name": dataset.name,
                                               "params": {"brain_key": "sei", "overwrite": True}})
    assert not op.resolve_input(ctx).type.properties["brain_key"].invalid
    labels = op.resolve_input(ctx).type.properties["label_field"].type.values
    assert set(labels) == {"ground_truth", "clean"}


def test_open_sei_view_sets_the_saved_view(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=3)
    result = foo.execute_operator(f"{URI}/open_sei_view", dataset=dataset, params={"brain_key": "sei"})
    assert result.error is None
    triggers = [r["operator_uri"] for r in result.executor.to_json()["requests"]]
    assert any("set_view" in t for t in triggers)


def test_suggest_relabels_tags_a_budgeted_batch(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=5)
    result = foo.execute_operator(f"{URI}/suggest_relabels", dataset=dataset,
                                  params={"brain_key": "sei", "budget": 7, "tag": "fixme"})
    assert result.result["num_tagged"] == 7
    tagged = dataset.match_tags("fixme")
    assert len(tagged) == 7
    assert len(set(tagged.values("id"))) == 7


def test_suggest_relabels_without_embeddings_takes_the_lowest_scores(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=5)
    info = dataset.get_brain_info("sei")
    info.config.embeddings_field = None  # as for a run on the images
    fob.BrainMethod.update_run_config(dataset, "sei", info.config)
    ids = sfo.suggest_relabels(dataset, budget=6, tag="low")
    assert ids == sfo.sorted_view(dataset, flagged_only=False).limit(6).values("id")


def test_apply_suggestions_keeps_the_original_label(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=5)
    sfo.suggest_relabels(dataset, budget=5, tag="sei_relabel")
    tagged = dataset.match_tags("sei_relabel")
    before = {s.id: s.ground_truth.label for s in tagged}
    sugg = {s.id: s.sei_suggestion.label for s in tagged}
    result = foo.execute_operator(f"{URI}/apply_suggestions", dataset=dataset,
                                  params={"brain_key": "sei", "only_tagged": True, "tag": "sei_relabel"})
    assert result.error is None
    dataset.reload()
    for s in dataset.match_tags("sei_relabel"):
        assert s.ground_truth.label == sugg[s.id]
        assert s.ground_truth_original.label == before[s.id]
    untouched = dataset.match_tags("sei_relabel", bool=False)
    assert all(v is None for v in untouched.values("ground_truth_original"))


def test_apply_suggestions_on_selected_samples(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=3)
    ids = dataset.limit(3).values("id")
    result = foo.execute_operator(f"{URI}/apply_suggestions", dataset=dataset, selected=ids,
                                  params={"brain_key": "sei", "only_tagged": False,
                                          "view_target": "SELECTED_SAMPLES"})
    assert result.result["num_changed"] >= 0
    assert len(dataset.exists("ground_truth_original")) == 3
