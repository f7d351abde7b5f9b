"""Regression tests for issue 21 (reliability, round 2): signs that survive float64,
caches keyed by the encoder's weights, resume refusing changed inputs, no silent outputs,
the documented ``sei_fc`` call, deterministic neighbours."""

import numpy as np
import pytest

from sei import SEIRecorder
from sei.entropy import entropy, signed_entropy
from sei.thresholds import flag_issues

# ---------------------------------------------------------------- (1) entropy signs
# 8 samples, 3 classes, 4 epochs: the model predicts class i % 3 with a logit gap of 40;
# samples 1 and 6 are labelled otherwise.
N, K, T, GAP = 8, 3, 4, 40.0
PRED = np.arange(N) % K
BAD = np.array([1, 6])
LABELS = PRED.copy()
LABELS[BAD] = (PRED[BAD] + 1) % K


def _gap_logits():
    z = np.zeros((T, N, K))
    z[:, np.arange(N), PRED] = GAP
    return z


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("score", ["sei", "sei_mean", "se_last", "se_mid"])
def test_confident_histories_keep_the_sign_of_signed_entropy(dtype, from_logits, score):
    z = _gap_logits()
    hist = (z if from_logits else _softmax(z)).astype(dtype)
    s = SEIRecorder.from_history(hist, LABELS, from_logits=from_logits).scores(score)
    good = np.setdiff1d(np.arange(N), BAD)
    assert np.all(s[good] >= 0), s
    assert np.all(s[BAD] < 0), s
    np.testing.assert_array_equal(np.flatnonzero(flag_issues(s, 0.0)), BAD)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_entropy_is_never_negative_and_zero_for_one_hot_rows(dtype):
    p = np.array([[1, 0, 0], [0, 1, 0], [1 - 1e-12, 1e-12, 0]], dtype=dtype)
    h = entropy(p)
    assert np.all(h >= 0)
    assert h[0] == 0 and h[1] == 0
    se = signed_entropy(p, np.array([0, 0, 0]))
    assert se[0] >= 0 and se[1] < 0 and se[2] >= 0


def test_recorder_updates_in_float64_keep_the_sign():
    rec = SEIRecorder(N, K, max_epochs=T)
    z = _gap_logits()
    for t in range(T):
        rec.update(np.arange(N), _softmax(z[t]), LABELS)
        rec.end_epoch()
    for score in ("sei", "sei_mean", "se_last", "se_mid"):
        np.testing.assert_array_equal(np.flatnonzero(flag_issues(rec.scores(score), 0.0)), BAD)


# ---------------------------------------------------------------- (2) embedding cache keyed by weights
class _Tiny(__import__("torch").nn.Module):
    """(B, 3, H, W) -> (B, 4): the same class (and bundle name) whatever its weights."""

    def __init__(self, seed):
        import torch

        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def _bundle(seed, name="enc"):
    from sei.models import EncoderBundle

    return EncoderBundle(name=name, visual=_Tiny(seed), embed_dim=4, image_size=16)


def _imgs():
    return np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)


def test_same_name_other_weights_miss_the_embedding_cache_and_same_weights_hit(tmp_path):
    from sei.embedding import embed_images

    a, b = _bundle(0), _bundle(1)
    fa = embed_images(a, _imgs(), cache_dir=tmp_path)
    fb = embed_images(b, _imgs(), cache_dir=tmp_path)
    assert not np.allclose(fa, fb), "the second encoder got the first one's cached features"
    np.testing.assert_allclose(fb, embed_images(b, _imgs()), rtol=1e-5, atol=1e-6)
    calls = []
    a.visual.register_forward_hook(lambda *args: calls.append(1))
    np.testing.assert_array_equal(embed_images(a, _imgs(), cache_dir=tmp_path), fa)
    np.testing.assert_array_equal(embed_images(_bundle(0), _imgs(), cache_dir=tmp_path), fa)
    assert not calls, "the same weights did not hit the cache"
    assert len(list(tmp_path.glob("emb_*.npz"))) == 2


def test_weights_changed_in_place_miss_the_embedding_cache(tmp_path):
    import torch

    from sei.embedding import embed_images

    a = _bundle(0)
    f0 = embed_images(a, _imgs(), cache_dir=tmp_path)
    with torch.no_grad():
        a.visual.conv.weight.add_(0.5)  # a retrained encoder under the same name
    f1 = embed_images(a, _imgs(), cache_dir=tmp_path)
    assert not np.allclose(f0, f1)
    np.testing.assert_allclose(f1, embed_images(a, _imgs()), rtol=1e-5, atol=1e-6)


def test_lite0_weight_files_of_the_same_name_have_their_own_cache_entries(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    from sei.embedding import embed_images
    from sei.models import load_model

    base = load_model("efficientnet-lite0").visual.net.state_dict()
    paths = []
    for i, scale in enumerate((1.0, 0.5)):
        d = tmp_path / f"w{i}"
        d.mkdir()
        torch.save({k: v * scale if v.is_floating_point() else v for k, v in base.items()}, d / "lite0.pt")
        paths.append(str(d / "lite0.pt"))
    imgs = _imgs()
    f = [embed_images(load_model("efficientnet-lite0", pretrained=p), imgs, image_size=32,
                      cache_dir=tmp_path / "cache") for p in paths]
    assert not np.allclose(f[0], f[1])
    assert len(list((tmp_path / "cache").glob("emb_*.npz"))) == 2


# ---------------------------------------------------------------- (3) resume refuses changed training
def _resume_setup(tmp_path, **kw):
    pytest.importorskip("torch")
    from test_training import NAMES
    from sei.training import train

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 40)
    x = (rng.normal(size=(4, 6))[y] * 2 + rng.normal(size=(40, 6))).astype(np.float32)

    def fit(**more):
        args = dict(epochs=3, lr=0.05, batch_size=16, progress=False, checkpoint_dir=tmp_path,
                    transition_matrix=np.eye(4) * 0.9 + 0.025, transition_mask=np.arange(40) % 2 == 0,
                    sample_weights=np.ones(40), seed=0)
        args.update(kw)
        args.update(more)
        return train(x, y, class_names=NAMES, **args)

    fit(epochs=2)
    return fit


T_OTHER = np.eye(4) * 0.8 + 0.05


@pytest.mark.parametrize("change, name", [
    ({"transition_matrix": T_OTHER}, "transition_matrix changed"),
    ({"transition_mask": np.arange(40) % 2 == 1}, "transition_mask changed"),
    ({"sample_weights": np.linspace(0.5, 1.5, 40)}, "sample_weights changed"),
    ({"lr": 0.01}, "lr: 0.05 -> 0.01"),
    ({"seed": 1}, "seed: 0 -> 1"),
])
def test_resume_refuses_a_changed_option_naming_it_and_the_fix(tmp_path, change, name):
    fit = _resume_setup(tmp_path)
    with pytest.raises(ValueError, match=f"{name}.*resume=False"):
        fit(resume=True, **change)
    assert len(fit(resume=True).train_loss) == 3  # the same options continue
    assert len(fit(resume=False, **change).train_loss) == 3  # and a fresh start is fine


def test_resume_refuses_other_features(tmp_path):
    pytest.importorskip("torch")
    from test_training import NAMES
    from sei.training import train

    rng = np.random.default_rng(0)
    y, x = rng.integers(0, 4, 30), rng.normal(size=(30, 5)).astype(np.float32)
    train(x, y, class_names=NAMES, epochs=1, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="inputs changed"):
        train(x + 1, y, class_names=NAMES, epochs=2, progress=False, checkpoint_dir=tmp_path, resume=True)


# ---------------------------------------------------------------- (5) sei_fc with features
def _active_data(n=40, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return y, rng.dirichlet(np.ones(k), (4, n)), rng.normal(size=(n, 5))


def test_sei_fc_with_features_as_documented():
    from sei_cleanlab import select_for_relabeling

    y, hist, x = _active_data()
    idx = select_for_relabeling(y, hist, x, budget=10, method="sei_fc")
    assert idx.shape == (10,) and len(set(idx.tolist())) == 10
    rec = SEIRecorder.from_history(hist, y)
    np.testing.assert_array_equal(select_for_relabeling(y, rec, features=x, budget=10, method="sei_fc"), idx)
