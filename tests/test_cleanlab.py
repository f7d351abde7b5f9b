"""Specification of the cleanlab-style API."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import sei
from sei_cleanlab import (
    compare_with_confident_learning,
    find_label_issues,
    get_label_quality_scores,
)

from dynamics import planted_history


def test_import_sei_cleanlab_pulls_no_torch_or_fiftyone_and_keeps_warnings_on():
    # cleanlab's own import runs warnings.filterwarnings("ignore") (sei.compat): ours restores them
    code = ("import sys, warnings; before = list(warnings.filters); import sei_cleanlab; "
            "bad = [m for m in ('torch','fiftyone') if m in sys.modules]; "
            "bad += [f for f in warnings.filters if f not in before and f[0] == 'ignore' and f[1] is None]; "
            "print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_default_finds_the_planted_errors():
    hist, labels, noisy, _ = planted_history()
    mask = find_label_issues(labels, hist)
    assert mask.dtype == bool and mask.shape == labels.shape
    np.testing.assert_array_equal(mask, noisy)


def test_ranked_indices_are_the_flagged_ones_most_suspect_first():
    hist, labels, noisy, _ = planted_history()
    idx = find_label_issues(labels, hist, return_indices_ranked_by="sei")
    assert set(idx) == set(np.flatnonzero(noisy))
    s = sei.SEIRecorder.from_history(hist, labels).scores("sei")
    assert np.all(np.diff(s[idx]) >= 0)


def test_ranked_by_another_score_orders_by_that_score():
    hist, labels, _, _ = planted_history()
    idx = find_label_issues(labels, hist, return_indices_ranked_by="aum_prob")
    s = sei.SEIRecorder.from_history(hist, labels).scores("aum_prob")
    assert np.all(np.diff(s[idx]) >= 0)


def test_quality_scores_are_in_unit_interval_higher_is_cleaner():
    hist, labels, noisy, _ = planted_history()
    for method in sei.SCORE_NAMES:
        if method == "aum":
            continue
        q = get_label_quality_scores(labels, hist, method=method)
        assert q.shape == labels.shape and np.all((q >= 0) & (q <= 1)), method
    q = get_label_quality_scores(labels, hist)
    assert q[noisy].max() < q[~noisy].min()


def test_quality_scores_keep_the_raw_ranking():
    hist, labels, _, _ = planted_history()
    rec = sei.SEIRecorder.from_history(hist, labels)
    for method in ("sei", sei.DEFAULT_SCORE):
        raw = rec.scores(method)
        q = get_label_quality_scores(labels, hist, method=method)
        np.testing.assert_array_equal(np.argsort(raw, kind="stable"), np.argsort(q, kind="stable"))


def test_memmap_and_recorder_give_the_same_answer_as_the_array(tmp_path):
    hist, labels, _, _ = planted_history()
    path = tmp_path / "h.npy"
    np.save(path, hist.astype(np.float32))
    mm = np.load(path, mmap_mode="r")
    rec = sei.SEIRecorder.from_history(hist.astype(np.float32), labels)
    a = get_label_quality_scores(labels, hist.astype(np.float32))
    np.testing.assert_allclose(get_label_quality_scores(labels, mm), a)
    np.testing.assert_allclose(get_label_quality_scores(labels, rec), a)
    np.testing.assert_array_equal(find_label_issues(labels, mm), find_label_issues(labels, hist))


def test_memmap_is_streamed_in_chunks(tmp_path, monkeypatch):
    hist, labels, _, _ = planted_history()
    path = tmp_path / "h.npy"
    np.save(path, hist)
    mm = np.load(path, mmap_mode="r")
    seen = []
    orig = sei.SEIRecorder._fold_full_epoch_chunk

    def spy(self, sl, values, *a, **k):
        seen.append(values.shape)
        return orig(self, sl, values, *a, **k)

    monkeypatch.setattr(sei.SEIRecorder, "_fold_full_epoch_chunk", spy)
    sei.SEIRecorder.from_history(mm, labels, chunk_size=50)
    assert max(s[0] for s in seen) == 50 and len(seen) == hist.shape[0] * 3


def test_unused_zero_probability_columns_change_nothing():
    hist, labels, _, _ = planted_history()
    padded = np.concatenate([hist, np.zeros(hist.shape[:2] + (3,))], axis=2)
    np.testing.assert_allclose(
        get_label_quality_scores(labels, padded, method="sei_mean") * 0 + find_label_issues(labels, padded),
        find_label_issues(labels, hist),
    )
    r1 = sei.SEIRecorder.from_history(hist, labels)
    r2 = sei.SEIRecorder.from_history(padded, labels)
    for name in ("sei", "ei", "aum_prob", "loss", "agreement"):
        np.testing.assert_allclose(r1.scores(name), r2.scores(name), atol=1e-9, err_msg=name)


def test_tiny_data_does_not_crash():
    hist = np.array([[[0.6, 0.4]]])
    for threshold in ("auto", "zero", "gmm", 0.1):
        find_label_issues(np.array([1]), hist, threshold=threshold)
    get_label_quality_scores(np.array([1]), hist)


def test_aux_thresholds_use_threshold_samples_and_never_flag_them():
    hist, labels, noisy, _ = planted_history()
    n = labels.size
    # add a pseudo-class column; relabel some clean-easy samples to it (the model keeps predicting their class)
    h2 = np.concatenate([hist * 0.95, np.full(hist.shape[:2] + (1,), 0.05)], axis=2)
    aux = np.arange(10)
    lab2 = labels.copy()
    lab2[aux] = hist.shape[2]
    for threshold in ("aux_mean", "aux_quantile"):
        mask = find_label_issues(lab2, h2, score="sei", threshold=threshold, threshold_samples=aux)
        assert not mask[aux].any()
        assert mask[noisy].all()
    with pytest.raises(ValueError, match="threshold_samples"):
        find_label_issues(lab2, h2, threshold="aux_mean")


def test_datalab_issue_type_sei():
    from cleanlab import Datalab

    hist, labels, noisy, _ = planted_history()
    lab = Datalab(data={"y": labels}, label_name="y", verbosity=0)
    lab.find_issues(issue_types={"sei": {"pred_probs_history": hist}})
    issues = lab.get_issues("sei")  # Datalab swallows manager errors; this raises if it failed
    assert {"is_sei_issue", "sei_score"} <= set(issues.columns)
    np.testing.assert_array_equal(issues["is_sei_issue"].to_numpy(), noisy)
    assert "sei" in lab.get_issue_summary()["issue_type"].tolist()


def test_compare_with_confident_learning_reports_both_and_metrics():
    hist, labels, noisy, _ = planted_history()
    true = labels.copy()
    true[noisy] = (labels[noisy] + 1) % hist.shape[2]
    oos = hist[0]  # probabilities that do not memorise the errors
    df = compare_with_confident_learning(labels, hist, oos, true_labels=true, score="sei")
    assert isinstance(df, pd.DataFrame) and len(df) == labels.size
    assert {"sei_score", "sei_issue", "cl_score", "cl_issue", "agree", "is_mislabeled"} <= set(df.columns)
    metrics = df.attrs["metrics"]
    assert metrics.loc["sei (sei)", "f1"] == 1.0
    assert set(metrics.columns) == {"precision", "recall", "f1", "auroc", "auprc", "flagged"}
    assert metrics.loc["sei (sei)", "flagged"] == noisy.mean()  # the share flagged


def test_compare_without_pred_probs_warns():
    hist, labels, _, _ = planted_history()
    with pytest.warns(UserWarning, match="out-of-sample"):
        compare_with_confident_learning(labels, hist)


def test_auto_score_reads_the_core_default_with_and_without_features(monkeypatch):
    from sei import constants, scores

    hist, labels, _, _ = planted_history()
    x = np.random.default_rng(0).normal(size=(len(labels), 4))
    rec = sei.SEIRecorder.from_history(hist, labels)
    # give the two defaults different values so the test sees which one each call read
    monkeypatch.setattr(constants, "DEFAULT_SCORE", "sei")
    monkeypatch.setattr(constants, "DEFAULT_FEATURE_SCORE", "knn_margin")
    np.testing.assert_array_equal(get_label_quality_scores(labels, hist), get_label_quality_scores(labels, hist, method="sei"))
    expected = get_label_quality_scores(labels, hist, method="knn_margin", features=x)
    np.testing.assert_array_equal(get_label_quality_scores(labels, hist, features=x), expected)
    np.testing.assert_array_equal(find_label_issues(labels, rec, features=x),
                                  find_label_issues(labels, rec, score="knn_margin", features=x))
    # an auxiliary threshold keeps "auto" to the scores of the dynamics alone
    aux = np.arange(3)
    np.testing.assert_array_equal(
        find_label_issues(labels, rec, features=x, threshold="aux_mean", threshold_samples=aux),
        find_label_issues(labels, rec, score="sei", threshold="aux_mean", threshold_samples=aux))
    assert scores.resolve_score("aum", True) == "aum"
