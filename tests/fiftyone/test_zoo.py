"""compute_sei(model="zoo:<name>"): a FiftyOne zoo model that produces embeddings, loaded by
FiftyOne (a stand-in registered through FiftyOne's custom zoo manifest, tiny_zoo.py: no
download is possible here), frozen; weights absent offline are a clear error within seconds."""

import os
import sys
import time

import numpy as np
import pytest

import fiftyone as fo
import fiftyone.operators as foo

import sei_fiftyone as sfo
from sei_fiftyone import zoo
from sei_fiftyone.__main__ import main as cli_main

sys.path.insert(0, os.path.dirname(__file__))
import tiny_zoo  # noqa: E402


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    manifest, zoo_dir = tiny_zoo.register(str(tmp_path))
    monkeypatch.setattr(fo.config, "model_zoo_manifest_paths", [manifest])
    monkeypatch.setattr(fo.config, "model_zoo_dir", zoo_dir)
    return zoo_dir


def test_a_zoo_model_embeds_the_images_through_fiftyone_and_the_run_is_frozen(dataset, tiny):
    assert tiny_zoo.PRESENT in zoo.embedding_models() and zoo.zoo_problem(tiny_zoo.PRESENT) is None
    results = sfo.compute_sei(dataset, "ground_truth", model=f"zoo:{tiny_zoo.PRESENT}", embeddings_field="tiny",
                              epochs=20, progress=False)
    config = dataset.get_brain_info("sei").config
    assert (config.model, config.mode) == (f"zoo:{tiny_zoo.PRESENT}", "frozen")
    import fiftyone.zoo as foz

    expected = dataset.compute_embeddings(foz.load_zoo_model(tiny_zoo.PRESENT))  # FiftyOne's own embedding
    assert np.allclose(np.stack(dataset.values("tiny")), expected, atol=1e-5)
    flipped = set(dataset.info["flipped_ids"])
    flagged = set(dataset.match({"sei_mislabeled": True}).values("id"))
    assert len(flagged & flipped) >= 0.7 * len(flipped)  # the colour features find the flipped labels
    assert results.num_samples == len(dataset) and tuple(results.timings) == ("read", "train", "score", "write")
    again = sfo.compute_sei(dataset, brain_key="sei_again", progress=False, **config.compute_kwargs())
    assert again.num_flagged == results.num_flagged  # repeatable from the recorded config


def test_absent_weights_offline_are_a_clear_error_within_seconds(dataset, tiny):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"weights of zoo model 'tiny-missing-torch' are not in the zoo's folder.*"
                                         r"fiftyone zoo models download tiny-missing-torch"):
        sfo.compute_sei(dataset, "ground_truth", model=f"zoo:{tiny_zoo.MISSING}")
    assert time.perf_counter() - start < 10
    assert dataset.list_brain_runs() == [] and not os.path.exists(os.path.join(tiny, "tiny-missing.npy"))
    with pytest.raises(ValueError, match="'nope' is not a FiftyOne zoo model"):
        sfo.compute_sei(dataset, "ground_truth", model="zoo:nope")
    with pytest.raises(ValueError, match="runs frozen"):
        sfo.compute_sei(dataset, "ground_truth", model=f"zoo:{tiny_zoo.PRESENT}", mode="finetune")
    with pytest.raises(ValueError, match="names no zoo model"):
        sfo.compute_sei(dataset, "ground_truth", model="zoo:")


def test_the_form_offers_the_zoos_embedding_models(dataset, tiny):
    cli_main(["install-plugin"])
    op = foo.get_operator("@sei/fiftyone/compute_sei")

    def form(params):
        ctx = foo.ExecutionContext(request_params={"dataset_name": dataset.name, "params": params})
        return op.resolve_input(ctx).type.properties

    assert "zoo" in form({})["model"].type.values
    props = form({"model": "zoo", "zoo_model": tiny_zoo.MISSING})
    assert tiny_zoo.PRESENT in props["zoo_model"].type.values and "zoo_weights_warning" in props
    assert "zoo_weights_warning" not in form({"model": "zoo", "zoo_model": tiny_zoo.PRESENT})
    result = foo.execute_operator("@sei/fiftyone/compute_sei", dataset=dataset, params=dict(
        label_field="ground_truth", model="zoo", zoo_model=tiny_zoo.PRESENT, epochs=5, brain_key="sei_zoo"))
    assert result.error is None, result.error
    dataset.reload()
    assert dataset.get_brain_info("sei_zoo").config.model == f"zoo:{tiny_zoo.PRESENT}"
    from sei_fiftyone import review

    params = review.rerun_params(dataset, "sei_zoo")  # the panel's "run again" asks for the same zoo model
    assert (params["model"], params["zoo_model"]) == ("zoo", tiny_zoo.PRESENT)
