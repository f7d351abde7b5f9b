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
    from sei.engine.encoders import EncoderBundle

    return EncoderBundle(name=name, visual=_Tiny(seed), embed_dim=4, image_size=16)


def _imgs():
    return np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)


def test_same_name_other_weights_miss_the_embedding_cache_and_same_weights_hit(tmp_path):
    from sei.engine.embedding import embed_images

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

    from sei.engine.embedding import embed_images

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
    from sei.engine.embedding import embed_images
    from sei.engine.encoders import load_model

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
    from sei.engine.training import train

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
    from sei.engine.training import train

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


# ---------------------------------------------------------------- (4) no silent outputs
@pytest.mark.parametrize("threshold", [np.nan, np.inf, -np.inf, np.float32("nan")])
def test_flag_issues_refuses_a_non_finite_threshold(threshold):
    with pytest.raises(ValueError, match="finite"):
        flag_issues(np.array([-1.0, 1.0]), threshold)


def test_gmm_threshold_on_all_nan_scores_raises():
    from sei.thresholds import compute_threshold

    with pytest.raises(ValueError, match="gmm.*finite scores"):
        compute_threshold(np.full(10, np.nan), "gmm")


@pytest.mark.parametrize("method", ["aux_mean", "aux_quantile"])
def test_auxiliary_thresholds_stay_finite_near_the_float64_range(method):
    from sei.thresholds import compute_threshold

    s = np.array([1.7e308, 1.6e308, -1.0, 2.0])
    th = compute_threshold(s, method, aux_indices=[0, 1])
    assert np.isfinite(th) and 1.6e308 <= th <= 1.7e308


def test_end_epoch_without_any_update_raises_and_records_nothing():
    rec = SEIRecorder(4, 2, max_epochs=3)
    rec.update([0, 1, 2, 3], np.full((4, 2), 0.5), [0, 1, 0, 1])
    rec.end_epoch()
    with pytest.raises(ValueError, match="No sample was updated"):
        rec.end_epoch()
    assert rec.num_epochs == 1


@pytest.mark.parametrize("kw, exc, match", [
    ({"mid_epoch": -3}, ValueError, "mid_epoch"),
    ({"mid_epoch": 1.5}, TypeError, "mid_epoch"),
    ({"mid_epoch": 5, "max_epochs": 5}, ValueError, "mid_epoch=5"),
    ({"max_epochs": 2.5}, TypeError, "max_epochs"),
    ({"max_epochs": 0}, ValueError, "max_epochs"),
])
def test_recorder_refuses_bad_epoch_options(kw, exc, match):
    with pytest.raises(exc, match=match):
        SEIRecorder(4, 2, **kw)


def test_all_zero_sample_weights_are_refused_before_training():
    pytest.importorskip("torch")
    from test_training import NAMES
    from sei.engine.training import train

    y = np.arange(20) % 4
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="sample_weights are all zero"):
        train(x, y, class_names=NAMES, epochs=1, sample_weights=np.zeros(20), progress=False)


@pytest.mark.parametrize("kw, exc, match", [
    ({"method": "kim", "pool": -1}, ValueError, "pool"),
    ({"method": "kim", "pool": 0}, ValueError, "pool"),
    ({"method": "kim", "pool": 2.5}, ValueError, "pool"),
    ({"method": "kim", "pool": 1.5}, ValueError, "pool"),
    ({"method": "kim", "pool": True}, TypeError, "pool"),
    ({"method": "kim", "steps": 0}, ValueError, "steps"),
    ({"method": "kim", "steps": 2.5}, TypeError, "steps"),
    ({"method": "kim", "step_size": 0.0}, ValueError, "step_size"),
    ({"method": "kim", "tol": -1.0}, ValueError, "tol"),
    ({"method": "kim", "flush_every": -1}, ValueError, "flush_every"),
    ({"method": "kim", "flush_every": 2.5}, TypeError, "flush_every"),
    ({"method": "lossent", "margin": np.nan}, ValueError, "margin"),
    ({"method": "sei_fc", "share": 0.0}, ValueError, "share"),
    ({"budget": -1}, ValueError, "budget"),
    ({"budget": 2.5}, TypeError, "budget"),
    ({"k": 0}, ValueError, "k must"),
    ({"k": 2.5}, TypeError, "k must"),
])
def test_select_for_relabeling_refuses_bad_numeric_options(kw, exc, match):
    from sei_cleanlab import select_for_relabeling

    y, hist, x = _active_data()
    kw = dict({"budget": 5}, **kw)
    with pytest.raises(exc, match=match):
        select_for_relabeling(y, hist, x, **kw)


@pytest.mark.parametrize("method", ["random", "entropy", "kim", "sei_fc"])
@pytest.mark.parametrize("batch_size, exc", [(2.5, TypeError), (-1, ValueError)])
def test_selectors_refuse_a_bad_batch_size(method, batch_size, exc):
    from sei.active import SelectionContext, make_selector, KNNGraph

    y, hist, x = _active_data()
    ctx = SelectionContext(y, hist[-1], graph=KNNGraph(x, k=5), sei_scores=np.zeros(len(y)), alpha=np.full(40, 1 / 40))
    with pytest.raises(exc, match="batch_size"):
        make_selector(method).select(ctx, batch_size)


def test_pool_as_a_count_or_a_fraction_is_accepted():
    from sei_cleanlab import select_for_relabeling

    y, hist, x = _active_data()
    for pool in (10, 0.5, 1.0, np.int64(8)):
        assert len(select_for_relabeling(y, hist, x, budget=5, method="kim", pool=pool)) == 5


# ---------------------------------------------------------------- (6) deterministic neighbours
def _duplicated_features(groups=60, copies=8, d=6, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(groups, d)).astype(np.float32)
    group = rng.permutation(np.repeat(np.arange(groups), copies))
    return base[group], group


@pytest.mark.parametrize("backend", ["sklearn", "hnswlib", "faiss"])
def test_duplicated_rows_take_the_lowest_index_duplicates_as_neighbours(backend):
    if backend != "sklearn":
        pytest.importorskip(backend)
    from sei.neighbors import knn_indices

    x, group = _duplicated_features()
    k = 4
    nb = knn_indices(x, k, backend=backend)
    for i in range(len(x)):
        twins = np.flatnonzero(group == group[i])
        np.testing.assert_array_equal(nb[i], twins[twins != i][:k])


@pytest.mark.parametrize("backend", ["sklearn", "hnswlib", "faiss"])
def test_two_calls_give_identical_neighbours_and_poe_knn_scores(backend):
    if backend != "sklearn":
        pytest.importorskip(backend)
    from sei.neighbors import feature_score, knn_indices

    x, group = _duplicated_features(groups=400, copies=5, d=4, seed=1)
    x = np.concatenate([x, x[:, :1] * 0 + x[::-1, :1]], axis=1)  # ties between distinct rows too
    y = group % 3
    hist = np.random.default_rng(2).dirichlet(np.ones(3), (3, len(y)))
    m = SEIRecorder.from_history(hist, y).fusion_input("poe_knn")
    runs = [knn_indices(x, 20, backend=backend, num_threads=2) for _ in range(3)]
    for nb in runs[1:]:
        np.testing.assert_array_equal(nb, runs[0])
    s = [feature_score("poe_knn", m, y, x, backend=backend) for _ in range(2)]
    np.testing.assert_array_equal(s[0], s[1])
