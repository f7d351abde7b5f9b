"""sei.engine.encoders: the open_clip names an adapter form offers ("<arch>:<tag>", a model folder, a
checkpoint file with arch=) and weights_problem, which says without loading whether they load."""

import os

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")

from sei.engine.embedding import embed_images  # noqa: E402
from sei.engine.encoders import MissingWeightsError, load_model, weights_problem  # noqa: E402
from tiny_clip import save_tiny_clip_folder  # noqa: E402


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_clip_folder(tmp_path_factory.mktemp("tiny_clip"))


def test_a_model_folder_loads_as_open_clips_local_dir(tiny_folder):
    for name in (tiny_folder, "local-dir:" + tiny_folder):
        b = load_model(name)
        assert b.has_text and b.embed_dim == 16 and b.image_size == 32
        assert b.name.startswith("local-dir:" + os.path.abspath(tiny_folder))
    x = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    assert embed_images(load_model(tiny_folder), x, image_size=32).shape == (3, 16)
    assert weights_problem(tiny_folder) is None


def test_a_folder_without_config_or_weights_is_refused_naming_what_is_missing(tiny_folder, tmp_path):
    assert "open_clip_config.json" in weights_problem(str(tmp_path))
    with pytest.raises(MissingWeightsError, match="open_clip_config.json"):
        load_model(str(tmp_path))
    (tmp_path / "open_clip_config.json").write_text(open(os.path.join(tiny_folder, "open_clip_config.json")).read())
    with pytest.raises(MissingWeightsError, match="no weight file"):
        load_model(str(tmp_path))


def test_arch_colon_tag_is_open_clips_pretrained_string(monkeypatch):
    from sei.engine import weights_probe as _weights_probe

    assert _weights_probe.open_clip_spec(open_clip, "ViT-B-32:openai") == ("ViT-B-32", "openai")
    assert _weights_probe.open_clip_spec(open_clip, "RN50:openai") == ("RN50", "openai")
    assert "ViT-B-32:openai" in open_clip.list_pretrained(as_str=True)
    assert "neither a file nor a known tag" in weights_problem("ViT-B-32:no_such_tag")
    assert "unknown model" in weights_problem("no-such-arch:openai")


def test_weights_problem_offline_names_the_download_and_the_checkpoint_fix(monkeypatch, tmp_path):
    from huggingface_hub import constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    msg = weights_problem("RN50:openai")
    assert "not in the local cache" in msg and "create_model('RN50', pretrained='openai')" in msg
    assert "pretrained=<path>" in msg
    with pytest.raises(MissingWeightsError, match="not in the local cache"):
        load_model("RN50:openai")


def test_a_checkpoint_file_needs_its_architecture(tiny_folder):
    path = os.path.join(tiny_folder, "open_clip_pytorch_model.bin")
    assert "arch=" in weights_problem(path)
    assert weights_problem("efficientnet-lite0") is None


def test_missing_weights_error_keeps_its_reason_across_processes():
    import pickle

    e = MissingWeightsError("no weights here.")
    copy = pickle.loads(pickle.dumps(e))
    assert copy.reason == e.reason and str(copy) == str(e) and "Options for model=" in str(e)
