"""sei.train on images with a tiny random open_clip model: finetune, frozen, datasets, corrupt files."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from sei.engine.training import train  # noqa: E402

NAMES = ["red", "green", "blue"]


def tiny_clip(seed=0):
    torch.manual_seed(seed)
    vision = open_clip.CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=32)
    text = open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)
    return open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text), open_clip.get_tokenizer("ViT-B-32")


def colour_images(n=60, size=32, seed=0):
    """Class k = a noisy image dominated by colour channel k."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.integers(0, 80, (n, size, size, 3))
    x[np.arange(n), :, :, y] += 170
    return x.clip(0, 255).astype(np.uint8), y


def write_pngs(tmp_path, images):
    from PIL import Image

    paths = []
    for i, a in enumerate(images):
        p = tmp_path / f"img_{i:03d}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
    return paths


def test_finetune_trains_image_tower_and_keeps_text_frozen():
    clip, tok = tiny_clip()
    text_before = {k: v.clone() for k, v in clip.transformer.state_dict().items()}
    vis_before = clip.visual.conv1.weight.detach().clone()
    x, y = colour_images(24)
    res = train(x, y, class_names=NAMES, model=clip, tokenizer=tok, mode="finetune", epochs=2, batch_size=8,
                lr=0.01, progress=False)
    assert res.scores.shape == (24,) and res.pred_probs.shape == (24, 3) and res.features is None
    assert res.recorder.num_epochs == 2
    for k, v in clip.transformer.state_dict().items():
        torch.testing.assert_close(v, text_before[k])
    assert not torch.allclose(clip.visual.conv1.weight, vis_before)


def test_finetune_skips_a_corrupt_file_and_scores_it_nan(tmp_path):
    clip, tok = tiny_clip()
    x, y = colour_images(12)
    paths = write_pngs(tmp_path, x)
    open(paths[5], "wb").write(b"garbage, not a png")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        res = train(paths, y, class_names=NAMES, model=clip, tokenizer=tok, mode="finetune", epochs=2,
                    batch_size=4, progress=False, aux_class=False)
    assert res.skipped.tolist() == [5]
    assert np.isnan(res.scores[5]) and not res.mislabeled[5]
    assert np.isfinite(np.delete(res.scores, 5)).all()


def test_finetune_record_eval_and_resume(tmp_path):
    x, y = colour_images(16)
    clip, tok = tiny_clip()
    full = train(x, y, class_names=NAMES, model=clip, tokenizer=tok, mode="finetune", epochs=3, batch_size=8,
                 progress=False, record="eval", lr=0.01)

    class Stop(Exception):
        pass

    def stop(e, t, m):
        if e == 1:
            raise Stop

    clip, tok = tiny_clip()
    with pytest.raises(Stop):
        train(x, y, class_names=NAMES, model=clip, tokenizer=tok, mode="finetune", epochs=3, batch_size=8,
              progress=False, record="eval", lr=0.01, checkpoint_dir=tmp_path, on_epoch_end=stop)
    clip, tok = tiny_clip()
    resumed = train(x, y, class_names=NAMES, model=clip, tokenizer=tok, mode="finetune", epochs=3, batch_size=8,
                    progress=False, record="eval", lr=0.01, checkpoint_dir=tmp_path, resume=True)
    np.testing.assert_allclose(full.recorder.scores("sei"), resumed.recorder.scores("sei"), rtol=1e-5, atol=1e-6)


def test_frozen_mode_initialises_class_embeddings_from_prompts():
    clip, tok = tiny_clip()
    x, y = colour_images(30)
    seen = {}

    def grab(epoch, ids, logits, labels):
        seen.setdefault(epoch, (ids, logits))

    res = train(x, y, class_names=NAMES, model=clip, tokenizer=tok, mode="frozen", epochs=1, batch_size=8,
                lr=0.0, progress=False, aux_class=False, on_record=grab, logit_scale=10.0, head="prompt")
    assert res.features.shape == (30, 32)
    # lr = 0: logits are exactly the zero-shot prompt classifier
    with torch.no_grad():
        t = clip.encode_text(tok([f"a photo of a {c}." for c in NAMES])).float()
    f = torch.from_numpy(res.features)
    zero_shot = 10.0 * torch.nn.functional.normalize(f, dim=-1) @ torch.nn.functional.normalize(t, dim=-1).T
    ids, logits = seen[0]
    np.testing.assert_allclose(logits, zero_shot[ids].numpy(), rtol=1e-4, atol=1e-4)


def test_frozen_mode_accepts_a_dataset_of_image_label_pairs():
    clip, tok = tiny_clip()
    x, y = colour_images(20)

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            from PIL import Image

            return Image.fromarray(x[i]), int(y[i])

    res = train(DS(), y, class_names=NAMES, model=clip, tokenizer=tok, mode="frozen", epochs=2, progress=False)
    assert res.features.shape == (20, 32) and np.isfinite(res.features).all()


def test_frozen_embeddings_are_cached_under_checkpoint_dir(tmp_path):
    clip, tok = tiny_clip()
    x, y = colour_images(10)
    train(x, y, class_names=NAMES, model=clip, tokenizer=tok, mode="frozen", epochs=1, progress=False,
          checkpoint_dir=tmp_path)
    assert list((tmp_path / "embeddings").glob("emb_*.npz"))


def test_efficientnet_lite0_frozen_finds_flipped_colour_labels():
    pytest.importorskip("efficientnet_lite_pytorch")
    x, y = colour_images(90)
    noisy = y.copy()
    bad = np.array([1, 10, 20, 31, 47, 58, 70, 83])
    noisy[bad] = (y[bad] + 1) % 3
    res = train(x, noisy, class_names=NAMES, model="efficientnet-lite0", mode="frozen", image_size=32, epochs=30,
                lr=0.05, batch_size=16, progress=False, aux_class=False)
    worst = np.argsort(res.scores)[: len(bad)]
    assert len(set(worst) & set(bad)) >= len(bad) - 2
