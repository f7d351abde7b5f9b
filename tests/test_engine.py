"""The engine's pieces on their own: TrainConfig, the device-native image pipeline, checkpoints."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sei.engine import TrainConfig  # noqa: E402
from sei.engine.images import ImageStore, channels_last, normalize, random_resized_crop_flip, resize  # noqa: E402


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("kw, exc, needle", [
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(epochs=2.5), TypeError, "epochs"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(threshold="median"), ValueError, "threshold"),
    (dict(score="nope"), ValueError, "score"),
    (dict(placement="gpu"), ValueError, "placement"),
    (dict(mode="finetune", head="linear"), ValueError, "head='linear'"),
    (dict(resume=True), ValueError, "checkpoint_dir"),
    (dict(threshold="aux_mean", aux_class=False), ValueError, "auxiliary"),
    (dict(prompt_template="a photo"), ValueError, "prompt_template"),
    (dict(on_epoch_end=3), TypeError, "on_epoch_end"),
    (dict(class_names="cat,dog"), TypeError, "class_names"),
])
def test_config_refuses_bad_options_naming_them(kw, exc, needle):
    with pytest.raises(exc, match=needle):
        TrainConfig(**kw)


def test_config_defaults_are_the_papers_and_its_dict_is_plain():
    cfg = TrainConfig(head="prompt")
    assert (cfg.batch_size, cfg.lr, cfg.epochs) == (128, 1e-3, 150)
    assert cfg.lr_for_batch(512) == pytest.approx(4e-3)
    # the default head (benchmarks/results/defaults.md) brings its own length and learning rate
    default = TrainConfig()
    assert (default.head, default.lr, default.epochs) == ("linear", 0.002, 10)
    d = TrainConfig(sample_weights=np.ones(3), on_epoch_end=print).to_dict()
    assert d["sample_weights"] == "ndarray" and d["on_epoch_end"] == "builtin_function_or_method"
    assert all(isinstance(v, (str, int, float, bool, list, type(None))) for v in d.values())
    with pytest.raises(ValueError, match="epochs"):
        cfg.replace(epochs=0)


def test_sei_train_parameters_are_train_configs_fields_with_its_defaults():
    """One declaration of the options (issue 24): sei.train's keyword parameters are TrainConfig's
    fields, in its order, with its defaults; the command line and the App form read the choices."""
    import dataclasses
    import inspect

    import sei
    from sei import constants
    from sei.__main__ import build_parser
    from sei.engine import config as engine_config

    params = list(inspect.signature(sei.train).parameters.values())
    assert [p.name for p in params[:2]] == ["inputs", "labels"]
    assert all(p.kind is p.KEYWORD_ONLY for p in params[2:])
    fields = dataclasses.fields(TrainConfig)
    assert [p.name for p in params[2:]] == [f.name for f in fields]
    for p, f in zip(params[2:], fields):
        assert p.default == f.default, f"sei.train's {p.name}={p.default!r} but TrainConfig's is {f.default!r}"
    assert TrainConfig().model == constants.DEFAULT_MODEL
    # the command line: every choice list is the engine's
    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    choices = {a.dest: tuple(a.choices) for a in train_parser._actions if a.choices}
    assert choices == {"mode": engine_config.MODES, "head": ("auto",) + constants.HEADS,
                       "lr_schedule": engine_config.LR_SCHEDULES, "record": engine_config.RECORDS,
                       "placement": engine_config.PLACEMENTS}
    assert train_parser.get_default("model") == constants.DEFAULT_MODEL


def test_the_auxiliary_rule_and_the_threshold_check_have_one_home():
    from sei.constants import AUX_THRESHOLDS, THRESHOLD_METHODS, is_aux_threshold
    from sei.thresholds import compute_threshold, uses_auxiliary
    from sei.validation import check_threshold

    assert set(AUX_THRESHOLDS) <= set(THRESHOLD_METHODS)
    for t in THRESHOLD_METHODS + (0.5,):
        score = "poe_knn" if t == "cl_count" else "sei"  # the count needs a score's own class probabilities
        assert TrainConfig(threshold=t, score=score).uses_aux == uses_auxiliary(t) == is_aux_threshold(t)
    with pytest.raises(ValueError, match="class probabilities"):
        TrainConfig(threshold="cl_count", score="sei")
    assert not is_aux_threshold("aux_other") and [t for t in THRESHOLD_METHODS if is_aux_threshold(t)] == list(
        AUX_THRESHOLDS)
    for bad in ("median", "aux_other", True, None):
        with pytest.raises(ValueError, match="Unknown threshold"):
            check_threshold(bad)
        with pytest.raises(ValueError, match="Unknown threshold"):
            TrainConfig(threshold=bad)
        with pytest.raises(ValueError, match="Unknown threshold"):
            compute_threshold(np.zeros(3), bad)
    with pytest.raises(ValueError, match="finite"):
        TrainConfig(threshold=float("nan"))


def test_train_result_and_checkpoint_carry_the_config(tmp_path):
    import sei
    from sei.engine.checkpoint import load_checkpoint

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    y = np.arange(60) % 3
    res = sei.train(x, y, epochs=2, batch_size=16, lr=0.05, progress=False, checkpoint_dir=tmp_path)
    assert res.config["batch_size"] == 16 and res.config["lr"] == 0.05 and res.config["mode"] == "embeddings"
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["config"]["batch_size"] == 16 and ck["config"]["epochs"] == 2


# ----------------------------------------------------------------------------- images
def test_store_from_uint8_hwc_array_is_nchw_and_sliced_per_batch():
    a = np.random.default_rng(0).integers(0, 256, (10, 8, 6, 3), dtype=np.uint8)
    st = ImageStore(a, 16, "cpu")
    assert st.data.shape == (10, 3, 8, 6) and st.data.dtype == torch.uint8 and st.ok.all() and st.resident
    b = st.batch(torch.tensor([7, 2]))
    np.testing.assert_array_equal(b.permute(0, 2, 3, 1).numpy(), a[[7, 2]])
    order = torch.tensor([3, 1, 4, 0, 9, 2])
    got = torch.cat([x for _, x in st.batches(order, 4)])
    np.testing.assert_array_equal(got.permute(0, 2, 3, 1).numpy(), a[order.numpy()])


def test_store_quantises_float_images_and_expands_grey():
    f = np.full((2, 3, 4, 4), 0.5, dtype=np.float32)
    assert int(ImageStore(f, 4, "cpu").data[0, 0, 0, 0]) == 128
    g = np.zeros((2, 5, 5), dtype=np.uint8)
    assert ImageStore(g, 5, "cpu").data.shape == (2, 3, 5, 5)


def test_store_decodes_files_marks_unreadable_and_shrinks_large_ones(tmp_path):
    from PIL import Image

    paths = []
    for i, side in enumerate((12, 12, 40)):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((side, side, 3), 10 * i, np.uint8)).save(p)
        paths.append(str(p))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    paths.append(str(bad))
    with pytest.warns(RuntimeWarning, match="bad.jpg"):
        st = ImageStore(paths, 16, "cpu", num_workers=2)
    assert st.ok.tolist() == [True, True, True, False]
    assert st.data.shape == (4, 3, 16, 16)  # mixed sizes -> all at the model's size
    assert int(st.data[1, 0, 8, 8]) == 10 and int(st.data[2, 0, 8, 8]) == 20


def test_store_from_a_dataset_of_pil_label_pairs():
    from PIL import Image

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return Image.fromarray(np.full((8, 8, 3), i, np.uint8)), i % 2

    st = ImageStore(DS(), 8, "cpu")
    assert st.ok.all() and [int(v) for v in st.data[:, 0, 0, 0]] == [0, 1, 2, 3, 4]


def test_placement_is_checked():
    with pytest.raises(ValueError, match="placement"):
        ImageStore(np.zeros((1, 4, 4, 3), np.uint8), 4, "cpu", placement="gpu")


def test_random_resized_crop_flip_is_seeded_and_full_crop_flip_mirrors():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    a = random_resized_crop_flip(x, 12, torch.Generator().manual_seed(1))
    b = random_resized_crop_flip(x, 12, torch.Generator().manual_seed(1))
    assert a.shape == (4, 3, 12, 12) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    # scale (1, 1) and ratio (1, 1): the whole image, flipped or not
    from torchvision.ops import roi_align

    full = random_resized_crop_flip(x, 8, torch.Generator().manual_seed(3), scale=(1, 1), ratio=(1, 1))
    boxes = torch.tensor([[i, 0.0, 0.0, 8.0, 8.0] for i in range(4)])
    plain = roi_align(x.float(), boxes, (8, 8), 1.0, 2, True)
    flipped = [torch.allclose(full[i], plain[i].flip(-1), atol=1e-3) for i in range(4)]
    kept = [torch.allclose(full[i], plain[i], atol=1e-3) for i in range(4)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped)


def test_normalize_matches_the_textbook_formula():
    x = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    ref = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = normalize(x, mean, std)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # the layout is the device's (sei.engine.images.channels_last) unless named
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last("cpu") else torch.contiguous_format)
    assert normalize(x, mean, std, channels_last=True).is_contiguous(memory_format=torch.channels_last)
    assert normalize(x, mean, std, channels_last=False).is_contiguous()


def test_memory_layout_is_chosen_by_device_type():
    # CUDA keeps channels_last (tensor cores read NHWC); the table decides per device type
    from sei.engine import images

    assert channels_last("cuda") and channels_last(torch.device("cuda", 0))
    assert channels_last("cpu") == images.CHANNELS_LAST["cpu"]


def test_finetune_returns_the_trained_towers_features():
    import sei

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    y = np.arange(24) % 2
    res = sei.train(imgs, y, mode="finetune", epochs=1, batch_size=8, image_size=32, progress=False,
                    num_threads=1, return_features=True)
    assert res.features.shape == (24, 1280) and np.isfinite(res.features).all()
    knn = sei.feature_score("knn_margin", None, y, res.features, num_classes=2)
    assert knn.shape == (24,)


@pytest.mark.parametrize("kw, needle", [(dict(lr=3.4e38), "lr"), (dict(lr=10.5), "lr"), (dict(momentum=1.0), "momentum"),
                                        (dict(weight_decay=5.0), "weight_decay")])
def test_config_refuses_sgd_settings_that_diverge(kw, needle):
    # lr=3.4e38 overflowed inside torch's SGD after training had started (found by the fuzz test)
    with pytest.raises(ValueError, match=needle):
        TrainConfig(**kw)


def test_fit_head_is_a_predictor_standardised_once_by_the_engine():
    """sei.engine.fit_head: the public door of the ALC simulator (no hand-built run state)."""
    from sei import SEIRecorder
    from sei.engine import fit_head

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    x = (np.eye(3)[y] * 4 + rng.normal(size=(120, 3)) + 10).astype(np.float32)
    rec = SEIRecorder(120, 3)
    cfg = TrainConfig(mode="embeddings", head="linear", epochs=5, lr=0.1, progress=False)
    model = fit_head(x, y, cfg, num_classes=3, recorder=rec)
    assert model.recorder is rec and rec.num_epochs == 5 and model.transition is None
    np.testing.assert_allclose(model.predict_proba(x), model.train_probs, atol=1e-6)
    np.testing.assert_allclose(model.net.input_mean.cpu().numpy()[0], x.mean(0), rtol=1e-5)
    assert (model.predict_proba(x).argmax(1) == y).mean() > 0.9
    with pytest.raises(ValueError, match="head='linear'"):
        fit_head(x, y, TrainConfig(head="prompt"))
