"""Regression tests for issue 13, core and cleanlab adapter: no silent wrong answers,
clear errors for bad input, valid input accepted, bounded recorder memory."""

import os
import tracemalloc

import numpy as np
import pytest

import sei
from sei import SEIRecorder
from sei.validation import to_numpy
from sei.entropy import entropy, signed_entropy
from sei_cleanlab import find_label_issues, get_label_quality_scores, select_for_relabeling

from dynamics import planted_history

torch = pytest.importorskip("torch")

# The issue's example: sample 1 is labelled 0 but predicted 0 only with p = 0.8 ... and
# sample 0 is labelled 0 while the model says class 2.
H_BAD = np.tile([[[0, 0.3, 0.7], [0.8, 0.2, 0]]], (5, 1, 1))
Y_BAD = np.array([0, 0])


def _train(rec, hist, labels):
    for t in range(hist.shape[0]):
        rec.update(np.arange(hist.shape[1]), hist[t], labels)
        rec.end_epoch()
    return rec


# ---------------------------------------------------------------- (4) float16 histories
@pytest.mark.parametrize("score", ["sei", "aum_prob", "loss", "signed_confidence", "mistakenness"])
def test_float16_history_scores_like_float64(score):
    s64 = SEIRecorder.from_history(H_BAD, Y_BAD).scores(score)
    s16 = SEIRecorder.from_history(H_BAD.astype(np.float16), Y_BAD).scores(score)
    assert np.all(np.isfinite(s16))
    np.testing.assert_allclose(s16, s64, rtol=1e-3, atol=1e-3)


def test_float16_history_flags_the_mislabeled_sample():
    expected = find_label_issues(Y_BAD, H_BAD, score="sei")
    assert expected.tolist() == [True, False]
    assert find_label_issues(Y_BAD, H_BAD.astype(np.float16), score="sei").tolist() == [True, False]
    q = get_label_quality_scores(Y_BAD, H_BAD.astype(np.float16), method="sei")
    assert np.all(np.isfinite(q))


def test_recorder_update_with_float16_batches_gives_finite_scores():
    rec = _train(SEIRecorder(2, 3), H_BAD.astype(np.float16), Y_BAD)
    ref = _train(SEIRecorder(2, 3), H_BAD, Y_BAD)
    np.testing.assert_allclose(rec.scores("sei"), ref.scores("sei"), rtol=1e-3, atol=1e-3)


def test_entropy_helpers_on_float16():
    p = H_BAD[0].astype(np.float16)
    np.testing.assert_allclose(entropy(p), entropy(H_BAD[0]), atol=1e-3)
    np.testing.assert_allclose(signed_entropy(p, Y_BAD), signed_entropy(H_BAD[0], Y_BAD), atol=1e-3)


def test_selectors_on_float16_probabilities_give_finite_priorities():
    from sei.active import SelectionContext, make_selector

    p = H_BAD[0].astype(np.float16)
    for method in ("entropy", "corractive", "lossent"):
        sel = make_selector(method)
        assert np.all(np.isfinite(sel.priority(SelectionContext(Y_BAD, p)))), method


# ---------------------------------------------------------------- torch and bfloat16
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_torch_histories_are_accepted_everywhere(dtype):
    hist, labels, noisy, _ = planted_history()
    t = torch.tensor(hist).to(getattr(torch, dtype))
    assert np.array_equal(find_label_issues(labels, t), noisy)
    q = get_label_quality_scores(labels, t)
    assert np.all(np.isfinite(q))
    picks = select_for_relabeling(labels, t, budget=10, method="sei")
    assert len(set(picks.tolist())) == 10 and set(picks) <= set(np.flatnonzero(noisy))


def test_torch_history_in_datalab():
    from cleanlab import Datalab

    hist, labels, noisy, _ = planted_history()
    lab = Datalab(data={"y": labels}, label_name="y", verbosity=0)
    lab.find_issues(issue_types={"sei": {"pred_probs_history": torch.tensor(hist, dtype=torch.bfloat16)}})
    np.testing.assert_array_equal(lab.get_issues("sei")["is_sei_issue"].to_numpy(), noisy)


def test_torch_tensor_with_grad_and_labels_as_tensor():
    hist, labels, noisy, _ = planted_history()
    t = torch.tensor(hist, requires_grad=True)
    assert np.array_equal(find_label_issues(torch.tensor(labels), t), noisy)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cuda_tensors_are_accepted(dtype):
    hist, labels, noisy, _ = planted_history()
    t = torch.tensor(hist, device="cuda").to(getattr(torch, dtype))
    assert np.array_equal(find_label_issues(torch.tensor(labels, device="cuda"), t), noisy)
    rec = SEIRecorder(hist.shape[1], hist.shape[2])
    rec.update(torch.arange(hist.shape[1], device="cuda"), t[0], torch.tensor(labels, device="cuda"))
    rec.end_epoch()
    assert np.all(np.isfinite(rec.scores("sei")))


def test_float16_logits_give_finite_aum():
    logits = np.log(np.clip(H_BAD, 1e-30, 1)).astype(np.float16)  # -69 for the zeros: finite in float16
    rec = SEIRecorder.from_history(logits, Y_BAD, from_logits=True)
    assert np.all(np.isfinite(rec.scores("aum"))) and np.all(np.isfinite(rec.scores("sei")))


def test_to_numpy_turns_half_precision_into_float32():
    for x in (torch.ones(2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.float16), np.ones(2, np.float16)):
        assert to_numpy(x).dtype == np.float32
    assert to_numpy(np.ones(2)).dtype == np.float64
    assert to_numpy(torch.ones(2, dtype=torch.float32)).dtype == np.float32


def _bf16_softmax(n=2000, k=10, t=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(t, n, k, generator=g), dim=-1).to(torch.bfloat16)


def test_real_bfloat16_softmax_output_is_accepted():
    p = _bf16_softmax()
    assert float((p.float().sum(-1) - 1).abs().max()) > 1e-3  # would fail the float32 tolerance
    labels = torch.randint(0, 10, (p.shape[1],), generator=torch.Generator().manual_seed(1)).numpy()
    mask = find_label_issues(labels, p)
    assert mask.shape == labels.shape
    rec = SEIRecorder(p.shape[1], 10)
    rec.update(np.arange(p.shape[1]), p[0], labels)  # recorder.update takes bf16 tensors too
    rec.end_epoch()
    assert np.all(np.isfinite(rec.scores("sei")))
    assert np.all(np.isfinite(entropy(p[0])))


def test_row_sum_tolerance_still_strict_for_float32():
    p = _bf16_softmax().float().numpy()  # the same rounding errors, but claimed to be float32
    with pytest.raises(ValueError, match="sum to 1"):
        find_label_issues(np.zeros(p.shape[1], int), p)
    with pytest.raises(ValueError, match="sum to 1"):
        find_label_issues(np.zeros(p.shape[1], int), torch.tensor(p * 0.98, dtype=torch.bfloat16))


# ---------------------------------------------------------------- (5) Datalab class alignment
def test_datalab_with_a_class_absent_from_the_labels():
    from cleanlab import Datalab

    # Three classes; class 1 never occurs in the labels; every label is right.
    hist = np.tile([[[0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.05, 0.05, 0.9]]], (4, 1, 1))
    labels = np.array([0, 2, 2])
    assert not find_label_issues(labels, hist).any()
    lab = Datalab(data={"y": labels}, label_name="y", verbosity=0)
    lab.find_issues(issue_types={"sei": {"pred_probs_history": hist}})
    issues = lab.get_issues("sei")
    assert not issues["is_sei_issue"].any()
    np.testing.assert_allclose(issues["sei_score"], get_label_quality_scores(labels, hist))


def test_datalab_string_labels_that_cannot_be_aligned_raise():
    from sei_cleanlab.datalab import _history_labels

    class FakeLab:  # what Datalab holds for labels ["a", "c", "c"]
        labels = np.array([0, 1, 1])
        _label_map = {0: "a", 1: "c"}

    with pytest.raises(ValueError, match="cannot be matched"):
        _history_labels(FakeLab(), 3)
    np.testing.assert_array_equal(_history_labels(FakeLab(), 2), [0, 1, 1])


# ---------------------------------------------------------------- (6) labels given with a recorder
def test_find_label_issues_with_recorder_uses_the_given_labels():
    hist, labels, noisy, _ = planted_history()
    rec = SEIRecorder.from_history(hist, labels)
    # Unchanged labels: the recorded dynamics, as before.
    assert np.array_equal(find_label_issues(labels, rec), noisy)
    corrected = labels.copy()
    i = int(np.flatnonzero(noisy)[0])
    corrected[i] = (labels[i] + 1) % hist.shape[2]
    with pytest.raises(ValueError, match="history"):
        find_label_issues(corrected, rec)  # was: the old answer, silently
    with pytest.raises(ValueError, match="trained on"):
        get_label_quality_scores(corrected, rec)
    # From the history, corrected labels are scored for what they are.
    assert find_label_issues(corrected, hist).shape == labels.shape


def test_last_epoch_scores_are_recomputed_for_new_labels():
    hist, labels, _, _ = planted_history()
    rec = SEIRecorder.from_history(hist, labels)
    new = (labels + 1) % hist.shape[2]
    np.testing.assert_allclose(rec.scores("mistakenness", labels=new),
                               SEIRecorder.from_history(hist, new).scores("mistakenness"), atol=1e-6)
    np.testing.assert_allclose(rec.scores("ei", labels=new), rec.scores("ei"))
    m = get_label_quality_scores(new, rec, method="mistakenness")
    np.testing.assert_allclose(m, get_label_quality_scores(new, hist, method="mistakenness"), atol=1e-6)


def test_auxiliary_samples_keep_their_trained_label():
    hist, labels, _, _ = planted_history(num_classes=4)
    k = hist.shape[2]
    aux = np.array([0, 5, 9])
    trained = labels.copy()
    trained[aux] = k  # pseudo-class in an extra column
    h5 = np.concatenate([hist * 0.99, np.full(hist.shape[:2] + (1,), 0.01)], axis=2)
    rec = SEIRecorder.from_history(h5, trained)
    a = find_label_issues(labels, rec, threshold="aux_mean", threshold_samples=aux)
    b = find_label_issues(trained, rec, threshold="aux_mean", threshold_samples=aux)
    np.testing.assert_array_equal(a, b)


def test_select_for_relabeling_with_recorder_and_corrected_excluded_labels():
    hist, labels, noisy, _ = planted_history()
    rec = SEIRecorder.from_history(hist, labels)
    first = select_for_relabeling(labels, rec, budget=5, method="sei")
    corrected, done = labels.copy(), np.zeros(labels.size, bool)
    corrected[first] = (labels[first] + 1) % hist.shape[2]
    done[first] = True
    nxt = select_for_relabeling(corrected, rec, budget=5, method="sei", exclude=done)
    assert not set(nxt) & set(first)
    with pytest.raises(ValueError, match="trained on"):
        select_for_relabeling(corrected, rec, budget=5, method="sei")


# ---------------------------------------------------------------- (7) history_path reuse
def _run(path, hist, labels, epochs=None):
    rec = SEIRecorder(hist.shape[1], hist.shape[2], max_epochs=epochs or hist.shape[0], history_path=path)
    return _train(rec, hist, labels)


def test_history_path_reused_by_a_fresh_run_holds_only_that_run(tmp_path):
    path = tmp_path / "h.npy"
    hist, labels, _, _ = planted_history(epochs=6)
    _run(path, hist, labels)
    second = np.flip(hist, axis=2).copy()
    _run(path, second[:3], labels, epochs=6)  # stops early: the old run's epochs 3..5 must not remain
    saved = np.load(path)
    np.testing.assert_allclose(saved[:3], second[:3], rtol=1e-6)
    assert not np.any(np.isclose(saved[3:], hist[3:]).all(axis=2))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.mark.parametrize("shape_change", ["epochs", "samples", "classes"])
def test_history_path_of_another_shape_is_replaced_not_a_crash(tmp_path, shape_change):
    path = tmp_path / "h.npy"
    hist, labels, _, _ = planted_history(epochs=4)
    _run(path, hist, labels)
    if shape_change == "epochs":
        rec = _run(path, hist, labels, epochs=8)
    elif shape_change == "samples":
        rec = _run(path, hist[:, :50], labels[:50])
    else:
        h3 = hist[..., :3] / hist[..., :3].sum(-1, keepdims=True)
        rec = _run(path, h3, labels % 3)
    assert np.load(path, mmap_mode="r").shape == (rec.max_epochs, rec.num_samples, rec.num_classes)


def test_resumed_recorder_reopens_its_history_file(tmp_path):
    path = tmp_path / "h.npy"
    hist, labels, _, _ = planted_history(epochs=6)
    rec = SEIRecorder(hist.shape[1], hist.shape[2], max_epochs=6, history_path=path)
    _train(rec, hist[:3], labels)
    state = rec.state_dict()
    del rec
    resumed = SEIRecorder(hist.shape[1], hist.shape[2], max_epochs=6, history_path=path)
    resumed.load_state_dict(state)
    _train(resumed, hist[3:], labels)
    np.testing.assert_allclose(np.load(path), hist, rtol=1e-6)


def test_resume_with_a_history_file_of_another_shape_fails_before_training(tmp_path):
    path = tmp_path / "h.npy"
    hist, labels, _, _ = planted_history(epochs=6)
    rec = SEIRecorder(hist.shape[1], hist.shape[2], max_epochs=6, history_path=path)
    _train(rec, hist[:2], labels)
    state = rec.state_dict()
    np.save(path, np.zeros((6, 10, 4), np.float32))  # another run's file
    fresh = SEIRecorder(hist.shape[1], hist.shape[2], max_epochs=6, history_path=path)
    with pytest.raises(ValueError, match="another run"):
        fresh.load_state_dict(state)
    os.remove(path)
    with pytest.raises(ValueError, match="does not exist"):
        SEIRecorder(hist.shape[1], hist.shape[2], max_epochs=6, history_path=path).load_state_dict(state)


def test_history_path_in_a_missing_folder_fails_at_construction(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        SEIRecorder(5, 2, max_epochs=3, history_path=tmp_path / "nope" / "h.npy")
    with pytest.raises(ValueError, match="folder"):
        SEIRecorder(5, 2, max_epochs=3, history_path=tmp_path)


# ---------------------------------------------------------------- bad input: clear errors
def test_recorder_load_on_a_non_npz_file_names_the_file(tmp_path):
    bad = tmp_path / "rec.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="rec.npz"):
        SEIRecorder.load(bad)
    arr = tmp_path / "arr.npy"
    np.save(arr, np.zeros(3))
    with pytest.raises(ValueError, match="arr.npy"):
        SEIRecorder.load(arr)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz.*missing"):
        SEIRecorder.load(other)


def test_recorder_save_load_roundtrip(tmp_path):
    hist, labels, _, _ = planted_history()
    rec = SEIRecorder.from_history(hist, labels)
    rec.save(tmp_path / "r.npz")
    np.testing.assert_array_equal(SEIRecorder.load(tmp_path / "r.npz").scores("sei"), rec.scores("sei"))


@pytest.mark.parametrize("neighbors, match", [
    (np.full((4, 2), 4), "0..3"),
    (np.full((4, 2), -1), "0..3"),
    (np.zeros((3, 2), int), "one row per sample"),
    (np.zeros((4, 2)), "integer"),
])
def test_bad_neighbors_are_refused(neighbors, match):
    labels = np.array([0, 1, 0, 1])
    hist = np.full((2, 4, 2), 0.5)
    with pytest.raises((ValueError, TypeError), match=match):
        find_label_issues(labels, hist, score="knn_margin", neighbors=neighbors)
    with pytest.raises((ValueError, TypeError), match=match):
        sei.knn_label_margin(labels, neighbors=neighbors)


@pytest.mark.parametrize("kw, match", [
    ({"exclude": np.zeros(5, bool)}, "exclude"),
    ({"exclude": np.zeros(500, bool)}, "exclude"),
    ({"alpha": np.full(5, 0.2), "method": "kim"}, "alpha"),
    ({"alpha": np.full(500, 0.002), "method": "kim"}, "alpha"),
    ({"budget": 2.5}, "budget"),
    ({"budget": -1}, "budget"),
])
def test_select_for_relabeling_bad_parameters(kw, match):
    hist, labels, _, _ = planted_history()
    x = np.random.default_rng(0).normal(size=(labels.size, 4))
    kw = {"budget": 10, **kw}
    with pytest.raises((ValueError, TypeError), match=match):
        select_for_relabeling(labels, hist, x, **kw)


def test_alpha_of_the_wrong_length_never_gives_duplicate_picks():
    from sei.active import SelectionContext

    with pytest.raises(ValueError, match="alpha"):
        SelectionContext(np.zeros(10, int), np.full((10, 2), 0.5), alpha=np.full(3, 1 / 3))


def test_select_for_relabeling_validates_like_find_label_issues():
    hist, labels, _, _ = planted_history()
    for bad in (hist * 3, np.where(hist > 0.5, np.nan, hist), hist[..., :1]):
        with pytest.raises(ValueError) as a:
            find_label_issues(labels, bad)
        with pytest.raises(ValueError) as b:
            select_for_relabeling(labels, bad, budget=3, method="entropy")
        assert str(a.value) == str(b.value)
    # A documented (N, K) matrix is one epoch and goes through the same value checks.
    with pytest.raises(ValueError, match="sum to 1"):
        select_for_relabeling(labels, hist[0] * 0.5, budget=3, method="entropy")
    assert len(select_for_relabeling(labels, hist[0], budget=3, method="entropy")) == 3


def test_exclude_of_the_wrong_length_in_find_label_issues_threshold_samples():
    hist, labels, _, _ = planted_history()
    with pytest.raises(ValueError, match="length"):
        find_label_issues(labels, hist, threshold="aux_mean", threshold_samples=np.zeros(5, bool))


# ---------------------------------------------------------------- memory of end_epoch
@pytest.fixture
def small_chunks(monkeypatch):
    # Chunks much smaller than N, so that a chunk's temporaries cannot pass for O(N K) ones.
    import sei.recorder

    monkeypatch.setattr(sei.recorder, "_CHUNK_ROWS", 1024, raising=False)


def test_end_epoch_allocates_no_full_size_temporary(small_chunks):
    n, k = 20_000, 100
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(k), size=n).astype(np.float32)
    labels = rng.integers(0, k, n)
    rec = SEIRecorder(n, k, max_epochs=4)
    for start in range(0, n, 4096):
        rec.update(np.arange(start, min(start + 4096, n)), p[start:start + 4096], labels[start:start + 4096])
    full = n * k * 8  # one float64 (N, K) array
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        rec.end_epoch()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # A few (N,) vectors and (chunk, K) blocks are fine; an (N, K) temporary is not.
    assert peak < 0.25 * full, (peak, full)


def test_mistakenness_allocates_no_full_size_temporary(small_chunks):
    n, k = 40_000, 100
    rec = SEIRecorder.from_history(np.full((2, n, k), 1 / k, np.float32), np.zeros(n, int))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        rec.scores("mistakenness")
        rec.predicted_labels()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * n * k * 8, peak
