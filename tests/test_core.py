"""Specification of the core: signed entropy, the recorder, thresholds, auxiliary samples, noise."""

import sys
import subprocess

import numpy as np
import pytest

import sei
from sei import SEIRecorder, signed_entropy
from sei.scores import SCORE_NAMES

from dynamics import planted_history


def test_import_sei_pulls_no_heavy_or_adapter_modules():
    code = ("import sys, sei; bad = [m for m in ('torch','open_clip','cleanlab','fiftyone') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_signed_entropy_is_positive_entropy_when_label_is_argmax():
    p = np.array([[0.7, 0.2, 0.1]])
    h = -(p * np.log(p)).sum()
    assert signed_entropy(p, np.array([0]))[0] == pytest.approx(h, abs=1e-6)


def test_signed_entropy_is_negative_entropy_when_label_is_not_argmax():
    p = np.array([[0.7, 0.2, 0.1]])
    assert signed_entropy(p, np.array([2]))[0] == pytest.approx(-signed_entropy(p, np.array([0]))[0])


def test_signed_entropy_tie_counts_as_aligned():
    p = np.array([[0.5, 0.5]])
    assert signed_entropy(p, np.array([1]))[0] > 0
    assert signed_entropy(p, np.array([0]))[0] > 0


def test_recorder_sum_equals_sum_of_per_epoch_signed_entropy():
    hist, labels, _, _ = planted_history()
    rec = SEIRecorder(hist.shape[1], hist.shape[2])
    for t in range(hist.shape[0]):
        rec.update(np.arange(hist.shape[1]), hist[t], labels)
        rec.end_epoch()
    expected = sum(signed_entropy(hist[t], labels) for t in range(hist.shape[0]))
    np.testing.assert_allclose(rec.scores("sei"), expected, atol=1e-10)
    np.testing.assert_allclose(rec.scores("sei_mean"), expected / hist.shape[0], atol=1e-10)
    np.testing.assert_allclose(rec.scores("se_last"), signed_entropy(hist[-1], labels), atol=1e-10)


def test_recorder_batches_in_any_order_and_repeats_give_per_epoch_means():
    hist, labels, _, _ = planted_history(epochs=6)
    n = hist.shape[1]
    ref = SEIRecorder.from_history(hist, labels)
    rec = SEIRecorder(n, hist.shape[2])
    rng = np.random.default_rng(1)
    for t in range(hist.shape[0]):
        order = rng.permutation(n)
        for chunk in np.array_split(order, 7):
            rec.update(chunk, hist[t, chunk], labels[chunk])
            rec.update(chunk[:3], hist[t, chunk[:3]], labels[chunk[:3]])  # seen twice, same probs
        rec.end_epoch()
    for name in ("sei", "ei", "se_last", "se_mid", "aum_prob", "signed_confidence", "loss", "agreement"):
        np.testing.assert_allclose(rec.scores(name), ref.scores(name), atol=1e-10, err_msg=name)


def test_recorder_accepts_torch_tensors_and_logits_enable_aum():
    torch = pytest.importorskip("torch")
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    rec = SEIRecorder(2, 3)
    rec.update(torch.tensor([0, 1]), logits, torch.tensor([0, 0]), from_logits=True)
    rec.end_epoch()
    np.testing.assert_allclose(rec.scores("aum"), [2.0, -1.0])
    assert rec.scores("sei")[1] < 0 < rec.scores("sei")[0]


def test_aum_without_logits_says_to_pass_logits():
    rec = SEIRecorder.from_history(np.full((2, 3, 2), 0.5), np.zeros(3, int))
    with pytest.raises(ValueError, match="from_logits=True"):
        rec.scores("aum")


@pytest.mark.parametrize("name", SCORE_NAMES)
def test_every_score_is_one_float_per_sample_and_ranks_planted_errors_low(name):
    hist, labels, noisy, _ = planted_history()
    rec = SEIRecorder.from_history(np.log(hist), labels, from_logits=True)
    s = rec.scores(name)
    assert s.shape == labels.shape and s.dtype == np.float64
    if name not in ("se_last", "ei", "loss", "mistakenness"):  # late memorisation fools single-epoch and unsigned scores
        assert s[noisy].mean() < s[~noisy].mean()


def test_unsigned_entropy_integral_cannot_tell_hard_clean_from_mislabeled_but_sei_can():
    hist, labels, noisy, kind = planted_history()
    rec = SEIRecorder.from_history(hist, labels)
    sei_s, ei_s = rec.scores("sei"), rec.scores("ei")
    hard = kind == "hard"
    assert sei_s[noisy].max() < sei_s[hard].min()
    assert abs(ei_s[noisy].mean() - ei_s[hard].mean()) < 0.1 * abs(ei_s[hard].mean())


def test_unseen_samples_score_nan_and_are_never_flagged():
    rec = SEIRecorder(3, 2)
    rec.update([0, 1], np.array([[0.9, 0.1], [0.1, 0.9]]), [0, 0])
    rec.end_epoch()
    s = rec.scores("sei")
    assert np.isnan(s[2])
    assert not sei.flag_issues(s, 0.0)[2]


def test_save_load_roundtrip(tmp_path):
    hist, labels, _, _ = planted_history(epochs=5)
    rec = SEIRecorder.from_history(hist, labels)
    rec.save(tmp_path / "rec.npz")
    back = SEIRecorder.load(tmp_path / "rec.npz")
    for name in ("sei", "se_mid", "mistakenness"):
        np.testing.assert_array_equal(back.scores(name), rec.scores(name))
    np.testing.assert_array_equal(back.predicted_labels(), rec.predicted_labels())


def test_history_spill_to_memmap(tmp_path):
    hist, labels, _, _ = planted_history(epochs=4)
    rec = SEIRecorder(hist.shape[1], hist.shape[2], max_epochs=4, history_path=tmp_path / "h.npy")
    for t in range(4):
        rec.update(np.arange(hist.shape[1]), hist[t], labels)
        rec.end_epoch()
    np.testing.assert_allclose(np.load(tmp_path / "h.npy", mmap_mode="r"), hist, atol=1e-6)


def test_se_mid_is_the_middle_epoch_with_or_without_planned_epochs():
    hist, labels, _, _ = planted_history(epochs=10)
    a = SEIRecorder.from_history(hist, labels)  # max_epochs known
    b = SEIRecorder(hist.shape[1], hist.shape[2])
    for t in range(10):
        b.update(np.arange(hist.shape[1]), hist[t], labels)
        b.end_epoch()
    expected = signed_entropy(hist[4], labels)
    np.testing.assert_allclose(a.scores("se_mid"), expected)
    np.testing.assert_allclose(b.scores("se_mid"), expected)


# ---------------------------------------------------------------- thresholds
def test_threshold_methods():
    s = np.array([-5.0, -4.0, -3.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert sei.compute_threshold(s, "zero") == 0.0
    assert sei.compute_threshold(s, "aux_mean", aux_indices=[0, 1]) == -4.5
    assert sei.compute_threshold(s, "aux_quantile", aux_indices=[0, 1, 2]) == pytest.approx(-3.02)
    assert sei.compute_threshold(s, 1.5) == 1.5
    g = sei.compute_threshold(s, "gmm")
    assert -3.0 < g <= 1.0


def test_auto_threshold_needs_no_auxiliary_samples():
    assert sei.compute_threshold(np.array([-1.0, 1.0]), "auto", score_name="sei") == 0.0
    assert np.isfinite(sei.compute_threshold(np.r_[np.zeros(20), np.ones(20)], "auto", score_name="loss"))


def test_aux_threshold_without_aux_samples_says_what_to_pass():
    with pytest.raises(ValueError, match="aux_indices"):
        sei.compute_threshold(np.zeros(4), "aux_mean")


def test_draw_auxiliary_default_size_and_seeded():
    labels = np.arange(110) % 10
    new, aux = sei.draw_auxiliary(labels, 10, seed=3)
    assert len(aux) == 110 // 11 and np.all(new[aux] == 10)
    np.testing.assert_array_equal(aux, sei.draw_auxiliary(labels, 10, seed=3)[1])
    assert np.all(new[np.setdiff1d(np.arange(110), aux)] == labels[np.setdiff1d(np.arange(110), aux)])


def test_two_run_protocol_uses_disjoint_sets_and_combines_over_non_aux_runs():
    labels = np.arange(44) % 3
    (l1, a1), (l2, a2) = sei.two_run_auxiliary(labels, 3, seed=0)
    assert len(np.intersect1d(a1, a2)) == 0
    s1, s2 = np.full(44, 1.0), np.full(44, 3.0)
    comb = sei.combine_runs([s1, s2], [a1, a2])
    assert np.all(comb[a1] == 3.0) and np.all(comb[a2] == 1.0)
    rest = np.setdiff1d(np.arange(44), np.r_[a1, a2])
    assert np.all(comb[rest] == 2.0)


# ---------------------------------------------------------------- noise
@pytest.mark.parametrize("gen", [sei.symmetric_noise, sei.pair_noise])
def test_flip_noise_hits_the_rate_exactly_and_is_seeded(gen):
    labels = np.arange(1000) % 10
    noisy, mask = gen(labels, 0.3, seed=5)
    assert mask.sum() == 300 and np.all((noisy != labels) == mask)
    np.testing.assert_array_equal(noisy, gen(labels, 0.3, seed=5)[0])


def test_confusion_noise_follows_the_off_diagonal():
    labels = np.repeat(np.arange(3), 300)
    cm = np.array([[90, 10, 0], [0, 90, 10], [10, 0, 90]])
    noisy, mask = sei.confusion_noise(labels, cm, 0.5, seed=0)
    assert mask.sum() == 450
    assert np.all(noisy[mask] == (labels[mask] + 1) % 3)


def test_transition_matrix_noise_rate_is_close_to_requested():
    labels = np.arange(20000) % 10
    T = sei.random_transition_matrix(10, 0.8, seed=0)
    np.testing.assert_allclose(T.sum(1), 1.0)
    noisy, mask = sei.transition_matrix_noise(labels, 0.8, seed=0)
    assert abs(mask.mean() - 0.8) < 0.02


def test_auxiliary_draw_is_independent_of_noise_drawn_with_the_same_seed():
    labels = np.arange(5000) % 10
    _, mask = sei.symmetric_noise(labels, 0.4, seed=0)
    _, aux = sei.draw_auxiliary(labels, 10, seed=0)
    assert abs(mask[aux].mean() - 0.4) < 0.06  # not the noisy set itself
