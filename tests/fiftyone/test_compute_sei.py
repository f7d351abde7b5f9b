"""compute_sei end to end on generated images, on a real MongoDB."""

import os

import numpy as np
import pytest

import fiftyone as fo

import sei_fiftyone as sfo
from sei_fo_testutil import build_dataset


def _sei_fields(ds):
    return sorted(f for f in ds.get_field_schema() if f.startswith("sei"))


def test_compute_sei_writes_score_flag_and_suggestion_fields(dataset):
    results = sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=8)
    assert _sei_fields(dataset) == ["sei", "sei_mislabeled", "sei_suggestion"]
    scores = np.array(dataset.values("sei"), dtype=float)
    flags = np.array(dataset.values("sei_mislabeled"))
    assert np.all(np.isfinite(scores))
    assert np.array_equal(flags, scores < results.threshold)
    sugg = dataset.first()["sei_suggestion"]
    assert isinstance(sugg, fo.Classification) and sugg.label in ("red", "green", "blue")
    assert 0.0 <= sugg.confidence <= 1.0


def test_flipped_labels_are_ranked_first(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=8)
    flipped = set(dataset.info["flipped_ids"])
    top = sfo.sorted_view(dataset, flagged_only=False).limit(len(flipped)).values("id")
    assert len(set(top) & flipped) >= 0.8 * len(flipped)


def test_saved_view_lists_flagged_samples_lowest_score_first(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=8)
    assert "sei_most_likely_mislabeled" in dataset.list_saved_views()
    view = dataset.load_saved_view("sei_most_likely_mislabeled")
    scores = view.values("sei")
    assert len(view) == sum(dataset.values("sei_mislabeled")) > 0
    assert scores == sorted(scores)
    assert all(view.values("sei_mislabeled"))


def test_run_is_listed_loaded_and_described(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=5, threshold="aux_mean")
    assert dataset.list_brain_runs() == ["sei"]
    assert sfo.list_sei_runs(dataset) == ["sei"]
    info = dataset.get_brain_info("sei")
    assert info.config.label_field == "ground_truth" and info.config.epochs == 5
    dataset.clear_cache() if hasattr(dataset, "clear_cache") else None
    results = dataset.load_brain_results("sei", cache=False)
    assert isinstance(results, sfo.SEIResults)
    assert results.config.threshold == "aux_mean"
    assert len(results.train_accuracy) == 5
    assert len(results.aux_ids) > 0 and set(results.aux_ids) <= set(dataset.values("id"))
    assert results.scores_summary["count"] == len(dataset)
    assert len(dataset.load_brain_view("sei")) == len(dataset)


def test_rename_moves_fields_and_saved_view(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=3)
    dataset.rename_brain_run("sei", "sei_v2")
    assert dataset.list_brain_runs() == ["sei_v2"]
    assert _sei_fields(dataset) == ["sei_v2", "sei_v2_mislabeled", "sei_v2_suggestion"]
    assert dataset.list_saved_views() == ["sei_v2_most_likely_mislabeled"]


def test_delete_removes_fields_and_saved_view(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=3)
    dataset.delete_brain_run("sei")
    assert dataset.list_brain_runs() == []
    assert _sei_fields(dataset) == []
    assert dataset.list_saved_views() == []


def test_rerun_with_same_key_overwrites_cleanly(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=3)
    first = dataset.values("sei")
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=6)
    assert dataset.list_brain_runs() == ["sei"]
    assert dataset.get_brain_info("sei").config.epochs == 6
    assert dataset.values("sei") != first
    assert dataset.list_saved_views() == ["sei_most_likely_mislabeled"]


def test_failed_run_leaves_dataset_untouched(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=3)
    before = dataset.values("sei")
    with pytest.raises(ValueError):
        sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=3, threshold="bogus")
    assert dataset.values("sei") == before
    assert dataset.get_brain_info("sei").config.epochs == 3
    with pytest.raises(ValueError):
        sfo.compute_sei(dataset, "ground_truth", brain_key="other", embeddings_field="embedding",
                        epochs=3, threshold="bogus")
    assert "other" not in dataset.get_field_schema() and dataset.list_brain_runs() == ["sei"]


def test_works_on_a_view_and_leaves_other_samples_unset(dataset):
    view = dataset.take(60, seed=1)
    sfo.compute_sei(view, "ground_truth", embeddings_field="embedding", epochs=4)
    assert len(dataset.exists("sei")) == 60
    assert len(sfo.sorted_view(dataset, flagged_only=False)) == 60


def test_non_classification_field_is_rejected_with_a_message(dataset):
    with pytest.raises(ValueError, match="Classification field"):
        sfo.compute_sei(dataset, "filepath", embeddings_field="embedding")


def test_progress_callable_receives_fractions(dataset):
    seen = []
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=4,
                    progress=lambda f, label: seen.append(f))
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)


def test_images_mode_reports_and_skips_missing_and_corrupt_files(tmp_path, caplog):
    ds = build_dataset(str(tmp_path / "imgs"), n=30, with_embeddings=False)
    try:
        paths = ds.values("filepath")
        os.remove(paths[0])
        with open(paths[1], "wb") as f:
            f.write(b"not a jpeg")
        with caplog.at_level("WARNING"):
            results = sfo.compute_sei(ds, "ground_truth", model="efficientnet-lite0", epochs=2)
        assert "skipped 2 unreadable" in caplog.text
        assert len(results.skipped_ids) == 2
        bad = ds.select(results.skipped_ids)
        assert bad.values("sei") == [None, None] and bad.values("sei_mislabeled") == [False, False]
        assert len(ds.exists("sei")) == 28
    finally:
        ds.delete()


def test_samples_loaded_before_the_run_see_its_fields(dataset):
    sample = dataset.first()
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=3)
    assert isinstance(sample["sei"], float)
    assert isinstance(sample["sei_suggestion"], fo.Classification)
    assert dataset.get_field("sei_suggestion").document_type is fo.Classification


def test_compute_sei_with_the_papers_prompt_head(dataset):
    results = sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=30, lr=0.05,
                              head="prompt")
    assert dataset.get_brain_info("sei").config.head == "prompt"
    assert dataset.list_brain_runs() == ["sei"]
    assert len(results.train_accuracy) >= 1
    scores = np.array(dataset.values("sei"), dtype=float)
    assert np.isfinite(scores).all()
    flipped = set(dataset.info["flipped_ids"])
    top = sfo.sorted_view(dataset, flagged_only=False).limit(len(flipped)).values("id")
    assert len(set(top) & flipped) >= 0.5 * len(flipped)


def test_neighbour_label_score_from_the_trained_features(dataset):
    results = sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=8,
                              score="aum_prob_knn")
    assert results.score_name == "aum_prob_knn" and results.threshold == 0.0
    scores = np.array(dataset.values("sei"), dtype=float)
    assert np.isfinite(scores).all() and (scores >= -1).all() and (scores <= 1).all()
    flipped = set(dataset.info["flipped_ids"])
    top = sfo.sorted_view(dataset, flagged_only=False).limit(len(flipped)).values("id")
    assert len(set(top) & flipped) >= 0.8 * len(flipped)


def test_neighbour_label_score_refuses_an_auxiliary_threshold_and_writes_nothing(dataset):
    before = dataset.get_field_schema().keys()
    with pytest.raises(ValueError, match="auxiliary"):
        sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=2,
                        score="aum_prob_knn", threshold="aux_mean")
    assert dataset.get_field_schema().keys() == before and dataset.list_brain_runs() == []


@pytest.mark.parametrize("bad, match", [(dict(head="mlp"), "head must be"),
                                        (dict(head="linear", mode="finetune"), "head='prompt'")])
def test_bad_head_is_refused_before_anything_is_written(dataset, bad, match):
    with pytest.raises(ValueError, match=match):
        sfo.compute_sei(dataset, "ground_truth", epochs=1, **bad)
    assert dataset.list_brain_runs() == []


def test_a_new_embeddings_field_is_computed_stored_and_reused(tmp_path):
    ds = build_dataset(str(tmp_path / "imgs"), n=30, with_embeddings=False)
    try:
        paths = ds.values("filepath")
        os.remove(paths[0])
        first = sfo.compute_sei(ds, "ground_truth", model="efficientnet-lite0", embeddings_field="lite0",
                                epochs=2, image_size=64)
        assert first.config.mode == "frozen" and first.config.model == "efficientnet-lite0"
        vecs = ds.values("lite0")
        assert vecs[0] is None and all(v is not None and len(v) == 1280 for v in vecs[1:])
        with pytest.raises(ValueError, match="restrict the view"):  # the unreadable image has no vector
            sfo.compute_sei(ds, "ground_truth", embeddings_field="lite0", epochs=2, brain_key="again")
        second = sfo.compute_sei(ds.exists("lite0"), "ground_truth", embeddings_field="lite0", epochs=2,
                                 brain_key="again")
        assert second.config.mode == "embeddings" and second.config.model == "embeddings"
        chosen = sfo.suggest_relabels(ds.exists("lite0"), "again", budget=5)
        assert len(chosen) == 5
    finally:
        ds.delete()


def test_a_missing_embeddings_field_without_a_model_is_refused(dataset):
    with pytest.raises(ValueError, match="does not exist"):
        sfo.compute_sei(dataset, "ground_truth", model="embeddings", embeddings_field="nope", epochs=1)
    assert "nope" not in dataset.get_field_schema() and dataset.list_brain_runs() == []


def test_brain_info_config_records_every_option_and_repeats_the_run(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=6, lr=0.01, batch_size=32,
                    seed=3, weight_decay=1e-3, lr_schedule="step", threshold="gmm")
    config = dataset.get_brain_info("sei").config
    assert (config.lr, config.batch_size, config.seed, config.epochs) == (0.01, 32, 3, 6)
    assert config.train_kwargs == {"weight_decay": 1e-3, "lr_schedule": "step"}
    assert config.classes == ["blue", "green", "red"] and config.head == "linear"
    assert (config.model, config.mode, config.embeddings_field) == ("embeddings", "embeddings", "embedding")
    assert config.threshold == "gmm" and config.score == "poe_knn"  # "auto" recorded resolved (embeddings: features at hand)
    again = sfo.compute_sei(dataset, brain_key="again", **config.compute_kwargs())
    assert dataset.values("again") == dataset.values("sei")
    assert dataset.values("again_mislabeled") == dataset.values("sei_mislabeled")
    assert again.threshold == dataset.load_brain_results("sei").threshold
    assert dataset.get_brain_info("again").config.serialize() == config.serialize()


def test_resolved_defaults_are_recorded_and_an_unrecordable_option_is_named(dataset):
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", on_record=lambda *a, **k: None)
    config = dataset.get_brain_info("sei").config
    assert (config.epochs, config.lr, config.batch_size) == (10, 0.002, 128)
    assert "unrecorded" in config.train_kwargs["on_record"]
    with pytest.raises(ValueError, match="on_record"):
        config.compute_kwargs()


def test_options_are_the_engines_checked_and_resolved_by_it(dataset):
    """compute_sei passes its options to the engine as given (no int(epochs), no defaults of its own):
    a fractional epoch count is refused as sei.train refuses it, and the run records the engine's values."""
    from sei.engine import TrainConfig

    with pytest.raises(TypeError, match="epochs must be an int"):
        sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=2.5)
    assert dataset.list_brain_runs() == []
    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding")
    config, engine = dataset.get_brain_info("sei").config, TrainConfig(mode="embeddings")
    assert (config.head, config.epochs, config.lr) == (engine.head, engine.epochs, engine.lr)
    assert config.score == dataset.load_brain_results("sei").score_name != "auto"


def test_vectors_are_read_raw_and_equal_fiftyones_own_values():
    from sei_fiftyone.inputs import read_vectors

    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=f"/tmp/v{i}.jpg") for i in range(6)])
    x = np.random.default_rng(0).normal(size=(6, 5))
    ds.set_values("emb", list(x))  # float64 arrays, FiftyOne's zlib-compressed .npy
    ds.set_values("lst", [list(map(float, r)) for r in x])  # lists: values() reads them
    ds.set_values("mixed", [np.zeros(3, np.float32)] + list(x[1:].astype(np.float32)))  # two headers
    ref = np.stack([np.asarray(v, np.float32) for v in ds.values("emb")])
    for field in ("emb", "lst"):
        got = read_vectors(ds, field)
        assert got.dtype == np.float32 and got.flags.writeable
        np.testing.assert_array_equal(got, ref)
    with pytest.raises(ValueError):  # rows of two widths cannot stack, as before
        read_vectors(ds, "mixed")
    first = ds.first()
    first["emb"] = None
    first.save()
    assert read_vectors(ds, "emb") is None
    ds.delete()


def test_training_vectors_are_decoded_in_steps_and_equal_fiftyones_values(monkeypatch):
    """compute_sei reads its embeddings field raw (as read_vectors does), in steps of rows; a
    field that needs values() (lists) gives the same; a missing vector is refused by count."""
    from types import SimpleNamespace

    from sei_fiftyone import inputs

    monkeypatch.setattr(inputs, "_DECODE_ROWS", 4)
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=f"/tmp/w{i}.jpg") for i in range(11)])
    x = np.random.default_rng(1).normal(size=(11, 3, 2)).astype(np.float32)
    ds.set_values("emb", list(x))
    ds.set_values("lst", [r.ravel().tolist() for r in x])
    positions = np.array([0, 2, 3, 5, 6, 7, 8, 10])
    for field in ("emb", "lst"):
        got = inputs.read_training_inputs(ds, SimpleNamespace(mode="embeddings", embeddings_field=field), positions)
        np.testing.assert_array_equal(got, x[positions].reshape(len(positions), -1))
    ds.set_values("emb", [None] + list(x[1:]))
    with pytest.raises(ValueError, match="1 sample"):
        inputs.read_training_inputs(ds, SimpleNamespace(mode="embeddings", embeddings_field="emb"), positions)
    got = inputs.read_training_inputs(ds, SimpleNamespace(mode="embeddings", embeddings_field="emb"), positions[1:])
    np.testing.assert_array_equal(got, x[positions[1:]].reshape(len(positions) - 1, -1))
    ds.delete()
