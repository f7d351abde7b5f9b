"""The compute_sei form's branches (target view, model table, local checkpoint, weights warning,
mode / image size / device, the engine's rules) through resolve_input, and the model names
shared with the Python compute_sei, run offline on a tiny random open_clip model."""

import os
import time

import numpy as np
import pytest

import fiftyone.operators as foo
import fiftyone.plugins as fop

import sei_fiftyone as sfo
from sei_fiftyone import model_choices
from sei_fiftyone.__main__ import main as cli_main
from sei_fiftyone.compute_form import compute_kwargs

open_clip = pytest.importorskip("open_clip")
from tiny_clip import register_tiny_arch, save_tiny_clip_folder  # noqa: E402

URI = "@sei/fiftyone/compute_sei"


@pytest.fixture(scope="module", autouse=True)
def installed_plugin():
    cli_main(["install-plugin"])
    fop.core._plugins_cache = None if hasattr(fop.core, "_plugins_cache") else None


@pytest.fixture(autouse=True)
def path_roots(monkeypatch, tmp_path_factory):
    """The form takes paths under SEI_FIFTYONE_PATH_ROOTS only: here, pytest's temporary folders."""
    monkeypatch.setenv("SEI_FIFTYONE_PATH_ROOTS", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_clip_folder(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture
def offline_cache(monkeypatch, tmp_path):
    """No cached open_clip weights and no network: HF offline mode, empty caches."""
    from huggingface_hub import constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(model_choices, "_ANSWERS", {})


def _form(dataset, selected=None, **params):
    ctx = foo.ExecutionContext(request_params={"dataset_name": dataset.name, "params": params,
                                               "selected": selected or []})
    return foo.get_operator(URI).resolve_input(ctx).type.properties


def test_the_form_offers_the_model_table_a_checkpoint_and_stored_embeddings(dataset):
    props = _form(dataset)
    values = list(props["model"].type.values)
    assert values == model_choices.choice_names() + [model_choices.CHECKPOINT, model_choices.ZOO, "embeddings"]
    assert {"ViT-B-32:openai", "RN50:openai", "clip-vit-base32-torch"} <= set(values)
    labels = {c.value: c.label for c in props["model"].view.choices}
    assert "OpenAI" in labels["RN50:openai"] and "zoo" in labels["clip-vit-base32-torch"]
    assert {"mode", "image_size", "device", "head", "score", "epochs", "threshold"} <= set(props)
    assert list(props["mode"].type.values) == ["frozen", "finetune"]
    assert list(props["device"].type.values)[:2] == ["auto", "cpu"]
    assert "weights_warning" not in props  # EfficientNet-Lite0 ships with pip


def test_the_zoo_clip_is_opened_by_open_clip_under_its_own_name():
    import fiftyone.zoo.models as fozm

    zoo = fozm.get_zoo_model("clip-vit-base32-torch")
    assert model_choices.resolve_model("clip-vit-base32-torch") == "ViT-B-32:openai"
    # the zoo's file is open_clip's OpenAI ViT-B/32 checkpoint
    assert zoo.manager.config.url == open_clip.get_pretrained_cfg("ViT-B-32", "openai")["url"]
    assert model_choices.resolve_model("/some/path.pt") == "/some/path.pt"


def test_weights_neither_cached_nor_downloadable_are_a_warning_in_the_form(dataset, offline_cache, monkeypatch):
    import sei.engine.encoders

    calls = []
    real = sei.engine.encoders.weights_problem
    monkeypatch.setattr(sei.engine.encoders, "weights_problem", lambda *a, **k: calls.append(a) or real(*a, **k))
    for model, arch in (("RN50:openai", "RN50"), ("clip-vit-base32-torch", "ViT-B-32")):
        props = _form(dataset, model=model)
        warning = props["weights_warning"].view
        assert "not in the local cache" in warning.description
        assert f"create_model('{arch}', pretrained='openai')" in warning.description
        assert "local open_clip checkpoint" in warning.description
        assert not any(getattr(p, "invalid", False) for p in props.values())  # a warning: still submittable
    t = time.perf_counter()
    for _ in range(5):  # re-renders reuse the answer
        _form(dataset, model="RN50:openai")
    assert len(calls) == 2 and time.perf_counter() - t < 5


def test_a_local_checkpoint_folder_needs_no_architecture(dataset, tiny_folder):
    props = _form(dataset, model="checkpoint")
    assert props["checkpoint"].required and "arch" not in props
    props = _form(dataset, model="checkpoint", checkpoint=tiny_folder)
    assert not props["checkpoint"].invalid and "arch" not in props
    props = _form(dataset, model="checkpoint", checkpoint=os.path.join(tiny_folder, "missing"))
    assert props["checkpoint"].invalid and "Not a usable checkpoint" in props["checkpoint"].error_message
    props = _form(dataset, model="checkpoint", checkpoint=os.path.dirname(tiny_folder))
    assert props["checkpoint"].invalid and "open_clip_config.json" in props["checkpoint"].error_message


def test_a_checkpoint_file_asks_for_its_architecture(dataset, tiny_folder):
    path = os.path.join(tiny_folder, "open_clip_pytorch_model.bin")
    props = _form(dataset, model="checkpoint", checkpoint=path)
    assert "ViT-B-32" in props["arch"].type.values and "RN50" in props["arch"].type.values
    assert props["checkpoint"].invalid and "arch=" in props["checkpoint"].error_message
    props = _form(dataset, model="checkpoint", checkpoint=path, arch="ViT-B-32")
    assert not props["checkpoint"].invalid
    kwargs = compute_kwargs(dict(label_field="ground_truth", model="checkpoint", checkpoint=path, arch="ViT-B-32"))
    assert kwargs["model"] == path and kwargs["arch"] == "ViT-B-32" and kwargs["mode"] == "frozen"


def test_a_checkpoint_file_and_its_architecture_train(dataset, tiny_folder, tmp_path):
    arch = register_tiny_arch(tmp_path)
    path = os.path.join(tiny_folder, "open_clip_pytorch_model.bin")
    assert _form(dataset, model="checkpoint", checkpoint=path, arch=arch)["checkpoint"].invalid is False
    kwargs = compute_kwargs(dict(label_field="ground_truth", model="checkpoint", checkpoint=path, arch=arch,
                                 image_size=32, epochs=2, brain_key="clip_file"))
    sfo.compute_sei(dataset, **kwargs)
    config = dataset.get_brain_info("clip_file").config
    assert config.model == path and config.train_kwargs["arch"] == arch
    assert np.isfinite(np.array(dataset.values("clip_file"), dtype=float)).all()
    with pytest.raises(ValueError, match="needs checkpoint="):
        compute_kwargs(dict(label_field="ground_truth", model="checkpoint"))


def test_the_engine_rules_on_fine_tuning_show_in_the_form(dataset):
    assert not _form(dataset, mode="finetune")["mode"].invalid  # default head "auto": prompt when fine-tuning
    props = _form(dataset, mode="finetune", head="linear")
    assert props["mode"].invalid and "head='prompt'" in props["mode"].error_message
    props = _form(dataset, mode="finetune", head="prompt", score="aum_prob_knn")
    assert props["mode"].invalid and "aum_prob_knn" in props["mode"].error_message
    props = _form(dataset, mode="finetune", head="prompt")
    assert not props["mode"].invalid
    props = _form(dataset, threshold="aux_mean", score="aum_prob_knn")
    assert props["threshold"].invalid and "auxiliary" in props["threshold"].error_message


def test_stored_embeddings_hide_the_image_options(dataset):
    props = _form(dataset, model="embeddings")
    assert "embeddings_field" in props and "mode" not in props and "image_size" not in props
    assert compute_kwargs(dict(label_field="ground_truth", model="embeddings", embeddings_field="embedding",
                               device="cpu")) == dict(
        label_field="ground_truth", brain_key="sei", model="embeddings", embeddings_field="embedding", epochs=None,
        threshold="auto", head="auto", score="auto", device="cpu")


def test_the_target_view_leads_the_form_and_offers_the_selection(dataset):
    props = _form(dataset)
    assert list(props)[0] == "view_target"
    ids = dataset.limit(30).values("id")
    choices = _form(dataset, selected=ids)["view_target"].type.values
    assert "SELECTED_SAMPLES" in choices and "DATASET" in choices


def test_the_operator_runs_on_the_selected_samples_only(dataset):
    ids = dataset.limit(30).values("id")
    result = foo.execute_operator(URI, dataset=dataset, selected=ids, params=dict(
        view_target="SELECTED_SAMPLES", label_field="ground_truth", model="embeddings",
        embeddings_field="embedding", epochs=3, brain_key="sel"))
    assert result.error is None, result.error
    dataset.reload()
    assert set(dataset.exists("sel").values("id")) == set(ids)


def test_a_local_checkpoint_from_the_form_trains_frozen_and_finetuned(dataset, tiny_folder):
    common = dict(label_field="ground_truth", model="checkpoint", checkpoint=tiny_folder, image_size=32,
                  device="cpu", epochs=2)
    result = foo.execute_operator(URI, dataset=dataset, params=dict(common, brain_key="clip_frozen"))
    assert result.error is None, result.error
    result = foo.execute_operator(URI, dataset=dataset, params=dict(
        common, brain_key="clip_ft", mode="finetune", head="prompt", epochs=1))
    assert result.error is None, result.error
    dataset.reload()
    for key, mode in (("clip_frozen", "frozen"), ("clip_ft", "finetune")):
        config = dataset.get_brain_info(key).config
        assert (config.model, config.mode) == (tiny_folder, mode)
        assert config.train_kwargs["image_size"] == 32 and config.train_kwargs["device"] == "cpu"
        assert np.isfinite(np.array(dataset.values(key), dtype=float)).all()


def test_python_compute_sei_takes_the_forms_names(dataset, tiny_folder, offline_cache):
    sfo.compute_sei(dataset, "ground_truth", model=tiny_folder, epochs=2, image_size=32, brain_key="py_clip")
    again = dataset.get_brain_info("py_clip").config.compute_kwargs()
    assert again["model"] == tiny_folder and again["image_size"] == 32
    from sei.engine.encoders import MissingWeightsError

    t = time.perf_counter()
    for name in ("clip-vit-base32-torch", "RN50:openai"):
        with pytest.raises(MissingWeightsError, match="not in the local cache"):
            sfo.compute_sei(dataset, "ground_truth", model=name, epochs=1, brain_key="offline")
    assert time.perf_counter() - t < 10
    dataset.reload()
    assert "offline" not in dataset.list_brain_runs() and "offline" not in dataset.get_field_schema()


def test_the_forms_choices_are_the_engines():
    """The form reads its choices from sei.constants / the engine's config, never a copy (issue 24)."""
    from sei import constants
    from sei.engine.config import MODES
    from sei_fiftyone import compute_form as form

    assert form.THRESHOLD_CHOICES == constants.THRESHOLD_METHODS
    assert [h for h, _ in form.HEAD_CHOICES] == ["auto", *constants.HEADS]
    assert [m for m, _ in form.MODE_CHOICES] + ["embeddings"] == sorted(MODES, key=lambda m: m == "embeddings")
    assert form.DEFAULT_MODEL == constants.DEFAULT_MODEL
    assert compute_kwargs({"label_field": "ground_truth", "epochs": 10.0})["epochs"] == 10
    assert compute_kwargs({"label_field": "ground_truth", "epochs": 2.5})["epochs"] == 2.5  # the engine refuses it
