"""sei.train on synthetic embeddings: planted noise is found, options behave, resume is exact."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import sei  # noqa: E402
from sei.engine.training import TrainResult, train  # noqa: E402

K = 4
NAMES = ["cat", "dog", "ship", "truck"]


def _blobs(n=600, d=16, seed=0, sep=2.0, noise_rate=0.2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    centers = rng.normal(size=(K, d)) * sep
    x = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
    noisy, is_bad = sei.symmetric_noise(y, noise_rate, num_classes=K, seed=seed)
    return x, noisy, is_bad


def _fit(x, y, **kw):
    kw.setdefault("epochs", 12)
    kw.setdefault("lr", 0.05)
    kw.setdefault("batch_size", 64)
    kw.setdefault("progress", False)
    return train(x, y, class_names=NAMES, **kw)


def test_planted_noise_ranks_first_and_is_flagged():
    from sklearn.metrics import roc_auc_score

    x, noisy, is_bad = _blobs()
    res = _fit(x, noisy, epochs=20)
    assert np.isfinite(res.scores).all() and len(res.aux_indices) == 0  # default: every sample scored
    assert roc_auc_score(is_bad, -res.scores) > 0.95
    # "auto" with features: poe_knn and the "cl_count" cutoff (the lowest scores, as many as cleanlab counts)
    assert res.score_name == "poe_knn" and res.mislabeled.sum() < len(noisy) / 2
    assert res.scores[res.mislabeled].max() < res.threshold <= res.scores[~res.mislabeled].min()
    assert is_bad[res.mislabeled].mean() > 0.7 and res.mislabeled[is_bad].mean() > 0.8
    paper = _fit(x, noisy, epochs=20, threshold="aux_mean")  # the paper: aux class + its mean SEI
    ok = np.isfinite(paper.scores)
    assert roc_auc_score(is_bad[ok], -paper.scores[ok]) > 0.95
    flagged = paper.mislabeled[ok]
    assert is_bad[ok][flagged].mean() > 0.8 and flagged[is_bad[ok]].mean() > 0.4  # a conservative cutoff


def test_result_fields_have_documented_shapes():
    x, noisy, _ = _blobs(n=200)
    res = _fit(x, noisy, epochs=3, aux_class=True)
    n = len(noisy)
    assert isinstance(res, TrainResult)
    assert res.scores.shape == (n,) and res.mislabeled.shape == (n,) and res.mislabeled.dtype == bool
    assert res.pred_probs.shape == (n, K)
    np.testing.assert_allclose(res.pred_probs.sum(1), 1, atol=1e-5)
    assert res.predicted_labels.shape == (n,)
    assert len(res.train_accuracy) == len(res.train_loss) == 3
    assert res.recorder.num_epochs == 3 and res.recorder.num_classes == K + 1
    assert res.features.shape == x.shape
    assert res.score_name == sei.constants.DEFAULT_FEATURE_SCORE  # score="auto" on embeddings: features at hand


def test_auxiliary_samples_are_relabelled_and_set_the_threshold():
    x, noisy, _ = _blobs(n=200)
    res = _fit(x, noisy, epochs=3, threshold="aux_mean", score_aux_samples=False)
    assert len(res.aux_indices) == 200 // (K + 1)
    assert (res.labels_used[res.aux_indices] == K).all()
    raw = res.recorder.scores(res.score_name)
    assert res.threshold == pytest.approx(raw[res.aux_indices].mean())
    assert np.isnan(res.scores[res.aux_indices]).all()
    assert not res.mislabeled[res.aux_indices].any()


@pytest.mark.parametrize("threshold", ["aux_mean", "aux_quantile"])
def test_an_auxiliary_threshold_scores_every_sample_by_a_second_run(threshold):
    """The protocol of sei.engine.protocols: the auxiliary samples' rows come from a run without the
    pseudo-class, every other row and the cutoff from the first run (issue 24)."""
    x, noisy, _ = _blobs(n=200)
    seen = []
    one = _fit(x, noisy, epochs=3, threshold=threshold, score_aux_samples=False)
    res = _fit(x, noisy, epochs=3, threshold=threshold, on_epoch_end=lambda e, t, m: seen.append((m["run"], e)))
    aux = res.aux_indices
    assert len(aux) and np.isfinite(res.scores).all() and (res.predicted_labels >= 0).all()
    rest = np.setdiff1d(np.arange(200), aux)
    np.testing.assert_array_equal(res.scores[rest], one.scores[rest])
    assert res.threshold == one.threshold and res.recorder.num_classes == K + 1
    np.testing.assert_array_equal(res.mislabeled, res.scores < res.threshold)
    second = _fit(res.features, noisy, epochs=3, aux_class=False, threshold=res.threshold, score=res.score_name)
    np.testing.assert_array_equal(res.scores[aux], second.scores[aux])
    np.testing.assert_array_equal(res.pred_probs[aux], second.pred_probs[aux])
    assert seen == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]


def test_num_aux_code_uses_n_over_k_and_aux_off_uses_k_columns():
    x, noisy, _ = _blobs(n=200)
    assert len(_fit(x, noisy, epochs=1, aux_class=True, num_aux="code").aux_indices) == 200 // K
    res = _fit(x, noisy, epochs=1, aux_class=False)
    assert len(res.aux_indices) == 0 and res.recorder.num_classes == K


def test_removed_force_autograd_is_a_type_error():
    # it had no effect (every path trains with autograd through one loss); removed, not ignored
    x, noisy, _ = _blobs(n=50)
    with pytest.raises(TypeError, match="force_autograd"):
        _fit(x, noisy, epochs=1, force_autograd=True)
    from sei.engine import TrainConfig

    with pytest.raises(TypeError, match="force_autograd"):
        TrainConfig(force_autograd=False)


def test_same_seed_same_scores_and_other_seed_differs():
    x, noisy, _ = _blobs(n=200)
    a, b, c = (_fit(x, noisy, epochs=3, aux_class=True, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.recorder.scores("sei"), b.recorder.scores("sei"))
    assert not np.array_equal(a.aux_indices, c.aux_indices)
    assert not np.allclose(a.recorder.scores("sei"), c.recorder.scores("sei"))


def test_resume_after_interruption_gives_identical_scores(tmp_path):
    x, noisy, _ = _blobs(n=300)
    full = _fit(x, noisy, epochs=6)

    class Stop(Exception):
        pass

    def stop_after_3(epoch, epochs, metrics):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        _fit(x, noisy, epochs=6, checkpoint_dir=tmp_path, on_epoch_end=stop_after_3)
    assert (tmp_path / "checkpoint.pt").exists()
    resumed = _fit(x, noisy, epochs=6, checkpoint_dir=tmp_path, resume=True)
    np.testing.assert_array_equal(full.recorder.scores("sei"), resumed.recorder.scores("sei"))
    assert full.train_loss == resumed.train_loss


def test_resume_with_other_labels_is_refused(tmp_path):
    x, noisy, _ = _blobs(n=200)
    _fit(x, noisy, epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="other data"):
        _fit(x, (noisy + 1) % K, epochs=2, checkpoint_dir=tmp_path, resume=True)


@pytest.mark.parametrize("opts", [
    dict(record="eval"), dict(lr_schedule="none"), dict(lr_schedule="cosine"), dict(logit_scale="raw"),
    dict(logit_scale=30.0), dict(proj_dim=8), dict(center_features=False), dict(head="linear", lr=0.01),
])
def test_protocol_options_train_and_score(opts):
    x, noisy, is_bad = _blobs(n=300)
    res = _fit(x, noisy, epochs=10, aux_class=True, **opts)
    ok = np.isfinite(res.scores)
    assert ok.all() and len(res.aux_indices)  # the auxiliary samples scored by a second run
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(is_bad[ok], -res.scores[ok]) > 0.75


def test_step_schedule_divides_lr_at_half_and_77_percent():
    from sei.engine.loop import lr_factor

    f = [lr_factor("step", e, 150) for e in range(150)]
    assert f[74] == 1 and f[75] == pytest.approx(0.1) and f[114] == pytest.approx(0.1)
    assert f[115] == pytest.approx(0.01)
    assert lr_factor("none", 149, 150) == 1


def test_sample_weights_object_is_updated_with_per_sample_losses_each_epoch():
    x, noisy, _ = _blobs(n=200)

    class Robust:
        def __init__(self):
            self.weights = np.ones(200)
            self.calls = []

        def update(self, losses):
            self.calls.append(np.asarray(losses).copy())
            self.weights = np.exp(-np.asarray(losses))

    w = Robust()
    _fit(x, noisy, epochs=3, sample_weights=w)
    assert len(w.calls) == 3 and all(c.shape == (200,) and np.isfinite(c).all() for c in w.calls)


def test_vanishing_sample_weights_stop_learning_and_all_zero_ones_are_refused():
    x, noisy, _ = _blobs(n=200)
    res = _fit(x, noisy, epochs=3, sample_weights=np.full(200, 1e-12), weight_decay=0.0)
    first = res.train_loss[0]
    assert res.train_loss[-1] == pytest.approx(first, rel=1e-5)
    with pytest.raises(ValueError, match="all zero"):  # would train nothing (issue 21)
        _fit(x, noisy, epochs=3, sample_weights=np.zeros(200))


def test_identity_transition_matrix_equals_plain_cross_entropy():
    x, noisy, _ = _blobs(n=200)
    a = _fit(x, noisy, epochs=3)
    b = _fit(x, noisy, epochs=3, transition_matrix=np.eye(K))
    np.testing.assert_allclose(a.recorder.scores("sei"), b.recorder.scores("sei"), rtol=1e-4, atol=1e-4)


def test_transition_matrix_must_be_row_stochastic():
    x, noisy, _ = _blobs(n=100)
    with pytest.raises(ValueError, match="row-stochastic"):
        _fit(x, noisy, epochs=1, transition_matrix=np.ones((K, K)))


def test_non_finite_rows_are_skipped_and_never_flagged():
    x, noisy, _ = _blobs(n=200)
    x[[3, 7]] = np.nan
    with pytest.warns(RuntimeWarning, match="2 unreadable"):
        res = _fit(x, noisy, epochs=2, aux_class=False)
    assert res.skipped.tolist() == [3, 7]
    assert np.isnan(res.scores[[3, 7]]).all() and not res.mislabeled[[3, 7]].any()


def test_on_epoch_end_and_on_record_see_every_epoch():
    x, noisy, _ = _blobs(n=150)
    seen, recorded = [], []
    _fit(x, noisy, epochs=3, on_epoch_end=lambda e, t, m: seen.append((e, t, sorted(m))),
         on_record=lambda e, ids, logits, lab: recorded.append((e, np.sort(ids))))
    assert [s[0] for s in seen] == [0, 1, 2] and seen[0][1] == 3 and "loss" in seen[0][2]
    for e, ids in recorded:
        np.testing.assert_array_equal(ids, np.arange(150))  # every sample exactly once per epoch


def test_result_recorder_feeds_cleanlab_adapter():
    sei_cleanlab = pytest.importorskip("sei_cleanlab")
    x, noisy, is_bad = _blobs(n=300)
    res = _fit(x, noisy, epochs=10, aux_class=False)
    ranked = sei_cleanlab.find_label_issues(noisy, res.recorder)
    assert ranked.shape == (300,) and ranked.dtype == bool
    assert is_bad[ranked].mean() > 0.6


@pytest.mark.parametrize("bad", [
    dict(mode="nope"), dict(record="later"), dict(logit_scale="huge"), dict(score="bogus"), dict(lr_schedule="x"),
    dict(head="mlp"), dict(head="linear", mode="finetune"),
])
def test_bad_options_raise_value_error(bad):
    x, noisy, _ = _blobs(n=50)
    with pytest.raises(ValueError):
        _fit(x, noisy, epochs=1, **bad)


def test_labels_out_of_range_raise():
    x, noisy, _ = _blobs(n=50)
    with pytest.raises(ValueError, match="labels must lie"):
        _fit(x, noisy + K, epochs=1)


def test_train_is_exported_lazily():
    assert sei.train is train


def test_linear_head_is_softmax_regression_on_standardised_features():
    from sei.engine.training import LinearHead

    x, noisy, is_bad = _blobs(n=400)
    shifted = x * 50.0 + 1000.0  # standardisation makes the head blind to scale and offset
    seen = []
    a = _fit(x, noisy, epochs=8, lr=0.01, head="linear", on_record=lambda e, i, lg, y: seen.append(lg))
    b = _fit(shifted, noisy, epochs=8, lr=0.01, head="linear")
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-3, atol=1e-3)
    assert np.abs(seen[0]).max() < 1.0  # zero init: the first batches predict near-uniform
    assert a.config["head"] == "linear"
    assert LinearHead(16, K).fc.weight.abs().sum() == 0


def test_neighbour_label_score_is_computed_on_the_trained_features():
    from sklearn.metrics import roc_auc_score

    x, noisy, is_bad = _blobs(n=400)
    x[0] = np.nan  # an unreadable row stays unscored
    res = _fit(x, noisy, epochs=10, score="aum_prob_knn")
    assert res.score_name == "aum_prob_knn" and res.threshold == 0.0
    assert np.isnan(res.scores[0]) and np.isfinite(res.scores[1:]).all()
    assert ((res.scores[1:] >= -1) & (res.scores[1:] <= 1)).all()
    assert roc_auc_score(is_bad[1:], -res.scores[1:]) > 0.95
    expected = sei.feature_score("aum_prob_knn", res.recorder.scores("aum_prob")[1:], noisy[1:], x[1:],
                                 num_classes=K)
    np.testing.assert_allclose(res.scores[1:], expected)


@pytest.mark.parametrize("bad, match", [(dict(threshold="aux_mean"), "auxiliary"),
                                        (dict(mode="finetune"), "fixed feature space")])
def test_neighbour_label_score_refuses_what_it_cannot_do(bad, match):
    x, noisy, _ = _blobs(n=50)
    with pytest.raises(ValueError, match=match):
        _fit(x, noisy, epochs=1, score="aum_prob_knn", **bad)


def test_auto_score_is_the_feature_default_except_when_fine_tuning(monkeypatch):
    from sei import constants
    from sei.engine import TrainConfig

    monkeypatch.setattr(constants, "DEFAULT_SCORE", "sei")
    monkeypatch.setattr(constants, "DEFAULT_FEATURE_SCORE", "knn_margin")
    def resolved(mode="embeddings", n=1000, **kw):
        cfg = TrainConfig(**kw)
        cfg.check_mode(mode, n)
        return cfg.score

    assert resolved() == "knn_margin"  # embeddings / frozen: the features are at hand
    assert resolved("finetune", head="prompt") == "sei"
    assert resolved(threshold="aux_quantile") == "sei"  # aux samples do not calibrate neighbours
    assert resolved(n=12) == "sei"  # too few samples for 20 neighbours
    assert resolved(score="aum") == "aum"
    assert TrainConfig().head == constants.DEFAULT_HEAD and TrainConfig(mode="finetune").head == "prompt"



def test_auto_score_counts_only_the_readable_samples():
    # 24 rows, 12 of them NaN: too few readable samples for 20 neighbours, so "auto" is the
    # score of the dynamics alone (it used to pick the neighbour score and fail after training)
    x, y, _ = _blobs(n=24, seed=1)
    x[1::2] = np.nan
    with pytest.warns(RuntimeWarning, match="12 unreadable"):
        res = _fit(x, y, epochs=2)
    assert res.score_name == sei.constants.DEFAULT_SCORE
    assert np.isnan(res.scores[1::2]).all() and np.isfinite(res.scores[0::2]).all()

def test_extra_scores_keep_per_class_state_for_reading_after_the_run():
    x, y, _ = _blobs(n=240, seed=3)
    res = _fit(x, y, epochs=3, score="aum_prob", aux_class=False)
    with pytest.raises(ValueError, match="extra_scores"):
        res.recorder.scores("mean_logp")  # per-class state is not kept unless asked for
    history = np.zeros((3, 240, K), np.float32)

    def grab(epoch, ids, logits, labels):
        history[epoch, np.asarray(ids)] = np.asarray(logits)

    res = _fit(x, y, epochs=3, score="aum_prob", aux_class=False, extra_scores=["mean_logp"], on_record=grab)
    direct = sei.SEIRecorder.from_history(history, y, from_logits=True).scores("mean_logp")
    np.testing.assert_allclose(res.recorder.scores("mean_logp"), direct, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="extra_scores entry 'nope'"):
        _fit(x, y, epochs=1, extra_scores="nope")


def test_epochs_are_recorded_in_blocks_with_the_same_result(monkeypatch):
    """The epoch's logits reach the recorder in blocks of RECORD_ROWS rows (never held whole):
    blocks of at most 7 rows (two batches of 3), give the run of one block per epoch, and
    on_record sees every sample once per epoch, in several blocks, each its own copy."""
    from sei.engine import loop

    x, noisy, _ = _blobs(n=150)
    seen = {}
    whole = _fit(x, noisy, epochs=3, score="aum_prob", aux_class=False, extra_scores=["mean_logp"])
    monkeypatch.setattr(loop, "RECORD_ROWS", 7)
    blocks = _fit(x, noisy, epochs=3, score="aum_prob", aux_class=False, extra_scores=["mean_logp"],
                  batch_size=3, on_record=lambda e, ids, lg, lab: seen.setdefault(e, []).append((ids, lg)))
    # batch size changes the run; compare the blocks run with its own one-block twin
    monkeypatch.setattr(loop, "RECORD_ROWS", 1 << 16)
    twin = _fit(x, noisy, epochs=3, score="aum_prob", aux_class=False, extra_scores=["mean_logp"], batch_size=3)
    for name in ("aum_prob", "sei", "mean_logp"):
        np.testing.assert_allclose(blocks.recorder.scores(name), twin.recorder.scores(name), rtol=1e-6, atol=1e-7)
    assert whole.scores.shape == blocks.scores.shape
    for e, parts in seen.items():
        assert len(parts) > 10
        np.testing.assert_array_equal(np.sort(np.concatenate([p[0] for p in parts])), np.arange(150))
        assert len({id(p[1]) for p in parts}) == len(parts) and all(p[1].base is None for p in parts)


def test_a_failed_run_cancels_its_neighbour_search(monkeypatch):
    """sei.train searches the score's neighbours while the epochs train; a run that fails
    cancels that search instead of leaving it running."""
    from sei import neighbors

    made = []
    real = neighbors.NeighbourSearch

    class Spy(real):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(neighbors, "NeighbourSearch", Spy)
    x, noisy, _ = _blobs(n=150)
    res = _fit(x, noisy, epochs=2, score="poe_knn", aux_class=False)
    assert len(made) == 1 and made[0].done()
    np.testing.assert_allclose(res.scores, sei.neighbors.feature_score(
        "poe_knn", res.recorder.fusion_input("poe_knn"), noisy, x, num_classes=K))

    def fail(epoch, epochs, metrics):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(x, noisy, epochs=2, score="poe_knn", aux_class=False, on_epoch_end=fail)
    assert len(made) == 2 and made[1]._control.cancel.is_set()
