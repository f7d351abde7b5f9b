"""Fast smoke test of the detection benchmark harness on tiny synthetic data (no CIFAR needed)."""

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

import sei  # noqa: E402
from benchmarks import detection as D  # noqa: E402
from sei.cross_validation import kfold_probs  # noqa: E402
from sei.metrics import detection_metrics  # noqa: E402


def _blobs(n=600, k=4, d=16, noise=0.25, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    clean = rng.integers(0, k, n)
    x = centers[clean] + rng.normal(size=(n, d))
    noisy, is_mis = sei.symmetric_noise(clean, noise, num_classes=k, seed=seed)
    return x.astype(np.float32), clean, np.asarray(noisy), np.asarray(is_mis)


def test_harness_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "K", 4)
    monkeypatch.setattr(D, "RESULTS", tmp_path)
    x, clean, noisy, is_mis = _blobs()
    lab_run, aux = sei.draw_auxiliary(noisy, 4, seed=0)
    head = D.make_prompt_head(x.shape[1], 5, seed=0)
    run = D.train_record(head, x, lab_run, epochs=4, batch_size=64, lr=1e-2, record_eval=True)
    assert run["train"].shape == (4, len(x), 5) and run["eval"].shape == (4, len(x), 5)
    run["labels_run"], run["aux"] = np.asarray(lab_run), np.asarray(aux)
    nb = D.knn_indices(x, k=5, pca_dim=0)
    assert nb.shape == (len(x), 5) and not np.any(nb == np.arange(len(x))[:, None])
    res, meth, rec = D.score_run(run, is_mis, neighbours=nb)
    for name in ("SEI (aux_mean)", "AUM (aux 99%)", "small-loss GMM", "AUM-prob + kNN margin (zero)",
                 "rank fusion AUM + kNN (aux 99%)", "mistakenness (0.5)"):
        r = res[name]
        for k in ("precision", "recall", "f1", "auroc", "auprc"):
            assert 0.0 <= r[k] <= 1.0, (name, k, r[k])
    # well-separated blobs: the dynamics must rank mislabeled samples far above chance
    assert res["AUM (aux 99%)"]["auroc"] > 0.8
    # partial integration and temperature paths run
    res2, _, _ = D.score_run(run, is_mis, epochs=2, temperature=2.0, hist="eval")
    assert set(res2) <= set(res)
    # tables and plots render
    results = {"a": {"random1": {0: res, 1: res}}}
    assert "SEI (aux_mean)" in D.headline_table(results, "a", D.HEADLINE)
    tab, _ = D.beats_table(results, "signed confidence (zero)")
    assert "| a | random1 |" in tab
    D.plot_bars(results, ["SEI (zero)", "AUM (aux 99%)"], tmp_path / "bars.png")
    D.plot_histograms({"random1": (run, meth, is_mis)}, "a", ["SEI (aux_mean)", "AUM (aux 99%)"], tmp_path / "h.png")
    D.plot_trajectories({"random1": (run, meth, is_mis)}, "a", tmp_path / "t.png")
    assert (tmp_path / "bars.png").stat().st_size > 0 and (tmp_path / "t.png").stat().st_size > 0


def test_knn_margin_and_metrics():
    nb = np.array([[1, 2], [0, 2], [0, 1]])
    q = D.knn_label_distribution(nb, np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(q, [[0.5, 0.5], [0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(D.margin(q, np.array([0, 0, 1])), [0.0, 0.0, -1.0])
    m = detection_metrics(np.array([True, False, False, True]), np.array([-1.0, 1.0, 2.0, -2.0]),
                          np.array([True, False, False, False]), valid=np.ones(4, bool))
    assert m["precision"] == 0.5 and m["recall"] == 1.0 and abs(m["auroc"] - 2 / 3) < 1e-9


def test_library_metrics_nan_safe_and_cl_backends(tmp_path):
    from benchmarks import harness as H

    assert not hasattr(H, "detection_metrics") and not hasattr(H, "kfold_probs")  # the library's, not copies
    assert not hasattr(D, "metrics")
    truth = np.array([True, False, False, True, False])
    s = np.array([-2.0, 1.0, np.nan, -1.0, 0.5])
    m = detection_metrics(s < 0, s, truth)
    assert m["auroc"] == 1.0 and m["auprc"] == 1.0 and m["precision"] == 1.0 and m["recall"] == 1.0
    assert m["flagged"] == 0.4
    one = detection_metrics(s < 0, s, np.zeros(5, bool))  # one class: ranking metrics undefined, no error
    assert np.isnan(one["auroc"]) and np.isnan(one["auprc"]) and one["f1"] == 0.0
    no_flags = detection_metrics(None, s, truth)
    assert np.isnan(no_flags["f1"]) and np.isnan(no_flags["flagged"]) and no_flags["auroc"] == 1.0
    # valid: only those samples count, for the flags and the ranking alike
    v = np.array([True, True, False, False, True])
    mv = detection_metrics(s < 0, s, truth, valid=v)
    assert mv == detection_metrics((s < 0)[v], s[v], truth[v])
    assert mv["recall"] == 1.0 and mv["flagged"] == 1 / 3
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    p = rng.dirichlet(np.ones(3), 300)
    p[np.arange(300), y] += rng.uniform(0, 1, 300)
    p /= p.sum(1, keepdims=True)
    q_np, mask_np = H.confident_learning(y, p, backend="numpy")
    if __import__("importlib.util").util.find_spec("cleanlab") is not None:
        q_cl, mask_cl = H.confident_learning(y, p, backend="cleanlab")
        np.testing.assert_array_equal(mask_np, mask_cl)
        np.testing.assert_allclose(q_np, q_cl)
    probs = kfold_probs(y, lambda f, tr, te: np.full((len(te), 3), 1 / 3), folds=3, num_classes=3)
    assert probs.shape == (300, 3) and np.allclose(probs.sum(1), 1)
    x = rng.normal(size=(300, 4)) + y[:, None]  # the default model: standardised logistic regression
    lr = kfold_probs(y, features=x, num_classes=4, folds=3)
    assert lr.shape == (300, 4) and np.allclose(lr.sum(1), 1) and (lr[:, 3] == 0).all()
    assert (lr.argmax(1) == y).mean() > 0.6
    with pytest.raises(ValueError, match="smallest class"):
        kfold_probs(np.array([0, 0, 1]), features=np.zeros((3, 1)), folds=2)
    g = H.TimeGuard(None)
    assert g.allows(1e9) and not g.expired
    assert not H.TimeGuard(0.0, start=0.0).allows(1.0)
    H.write_table(tmp_path / "t.md", "| a |\n", {"x": 1}, mirror=tmp_path / "m")
    assert (tmp_path / "m" / "t.md").read_text() == "| a |\n" and (tmp_path / "m" / "t.json").exists()


def test_benchmark_modules_under_400_lines():
    from pathlib import Path

    for p in (Path(ROOT) / "benchmarks").glob("*.py"):
        assert len(p.read_text().splitlines()) <= 400, p.name
