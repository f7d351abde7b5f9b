"""The ``"cl_count"`` cutoff (issue #22 item 3): the score ranks, confident learning's count on the
score's own class probabilities says how many to flag; ``"auto"`` for ``"poe_knn"``."""

import numpy as np
import pytest
from cleanlab.count import num_label_issues
from scipy.special import softmax

import sei
import sei.thresholds as thresholds
from sei.neighbors import feature_issue_count, knn_indices, knn_label_frequencies
from sei.thresholds import count_threshold, estimate_num_issues, resolve_threshold


@pytest.mark.parametrize("seed", range(6))
def test_the_blockwise_count_equals_cleanlabs_num_label_issues(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(60, 2000)), int(rng.integers(3, 12))
    lp = rng.normal(size=(n, k)) * rng.uniform(0.5, 4)
    y = rng.integers(0, k, n)
    if seed % 2:
        y[y == k - 1] = 0  # a class nobody carries: cleanlab's threshold 2 for it
    monkeypatch.setattr(thresholds, "_COUNT_ROWS", int(rng.integers(7, 300)))  # many blocks, ragged end
    assert estimate_num_issues(y, lp) == num_label_issues(y, softmax(lp, axis=1))
    keep = rng.random(n) < 0.7
    assert estimate_num_issues(y, lp, rows=keep) == num_label_issues(y[keep], softmax(lp[keep], axis=1))
    got = estimate_num_issues(y, lambda sl: lp[sl], num_samples=n)
    assert got == num_label_issues(y, softmax(lp, axis=1))


@pytest.mark.parametrize("seed", range(6))
def test_sparse_rows_count_as_their_dense_array(seed, monkeypatch):
    """A block listing a few classes per row and one value for the rest (the top-k recorder's product
    of experts) counts as cleanlab does on the (N, K) array it stands for."""
    from sei._logp_top import SparseRows

    rng = np.random.default_rng(seed)
    n, k, s = int(rng.integers(100, 1500)), int(rng.integers(3, 40)), int(rng.integers(1, 6))
    y = rng.integers(0, k, n)
    classes = np.stack([rng.choice(k, s, replace=False) for _ in range(n)])
    classes[:, 0] = np.where(rng.random(n) < 0.9, y, classes[:, 0])  # the label listed in most rows
    classes[:, 1:][classes[:, 1:] == classes[:, :1]] = -1  # each class once per row
    classes[rng.random((n, s)) < 0.2] = -1
    values = rng.normal(size=(n, s)) * 3 + 1
    rest = rng.normal(size=n) - 2
    rows = SparseRows(classes, values, rest, k)
    dense = rows.dense()
    monkeypatch.setattr(thresholds, "_COUNT_ROWS", int(rng.integers(50, 400)))
    want = num_label_issues(y, softmax(dense, axis=1))
    assert estimate_num_issues(y, lambda sl: SparseRows(classes[sl], values[sl], rest[sl], k), num_samples=n) == want
    assert estimate_num_issues(y, dense) == want


def test_nan_rows_are_left_out_and_nothing_counted_is_zero():
    rng = np.random.default_rng(0)
    lp, y = rng.normal(size=(300, 4)) * 3, rng.integers(0, 4, 300)
    lp[:50] = np.nan
    assert estimate_num_issues(y, lp) == num_label_issues(y[50:], softmax(lp[50:], axis=1))
    assert estimate_num_issues(y, lp, rows=np.zeros(300, bool)) == 0
    with pytest.raises(ValueError, match="num_samples"):
        estimate_num_issues(y, lambda sl: lp[sl])
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        estimate_num_issues(y, lp[:10])


def test_count_threshold_flags_exactly_the_lowest():
    s = np.array([3.0, -1.0, np.nan, 1.0, 7.0, np.inf])
    for n in range(7):
        flags = sei.flag_issues(s, count_threshold(s, n))
        assert flags.sum() == min(n, 4)  # finite scores only, as flag_issues
        assert set(np.flatnonzero(flags)) == set(np.argsort(np.nan_to_num(s, nan=np.inf))[:min(n, 4)])
    assert count_threshold(s, 0) == -1.0 and count_threshold(np.array([np.nan]), 3) == 0.0
    tied = np.array([0.0, 1.0, 1.0, 2.0])
    assert sei.flag_issues(tied, count_threshold(tied, 2)).sum() == 3  # a tie at the boundary: both
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="num_issues"):
            count_threshold(s, bad)


def test_auto_is_the_count_for_poe_knn_only_and_says_what_it_needs():
    assert resolve_threshold("auto", "poe_knn") == "cl_count" == resolve_threshold("cl_count", "sei")
    assert resolve_threshold("auto", "aum_prob") == "zero" and resolve_threshold("auto", "loss") == "gmm"
    with pytest.raises(ValueError, match="num_issues=.*or use threshold='zero'"):
        sei.compute_threshold(np.zeros(5), "auto", score_name="poe_knn")
    assert sei.compute_threshold(np.arange(5.0), "cl_count", num_issues=2) == 1.5


def _run(n=400, k=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = (rng.normal(size=(k, 6))[y] * 3 + rng.normal(size=(n, 6))).astype(np.float32)
    noisy, bad = sei.symmetric_noise(y, 0.25, num_classes=k, seed=seed)
    return x, noisy, bad


def test_find_label_issues_flags_the_count_of_the_product_of_experts():
    from sei_cleanlab import find_label_issues, get_label_quality_scores

    x, noisy, bad = _run()
    r = sei.train(x, noisy, class_names=list("abcd"), epochs=5, lr=0.05, progress=False, seed=0)
    nb = knn_indices(x, 20)
    probs = softmax(r.recorder.fusion_input("poe_knn") + np.log(knn_label_frequencies(noisy, nb, 4, smoothing=1.0)),
                    axis=1)
    n_cl = num_label_issues(noisy, probs)
    mask = find_label_issues(noisy, r.recorder, neighbors=nb)
    assert mask.sum() == n_cl > 0 and bad[mask].mean() > 0.5
    np.testing.assert_array_equal(mask, r.mislabeled)  # sei.train says the same
    q = get_label_quality_scores(noisy, r.recorder, neighbors=nb)
    assert q[mask].max() <= q[~mask].min()  # the lowest-ranked ones
    zero = find_label_issues(noisy, r.recorder, neighbors=nb, threshold="zero")
    np.testing.assert_array_equal(zero, r.scores < 0)
    with pytest.raises(ValueError, match="cl_count.*'poe_knn'"):
        find_label_issues(noisy, r.recorder, score="aum_prob", threshold="cl_count")
    with pytest.raises(ValueError, match="class probabilities"):
        feature_issue_count("knn_margin", None, noisy, neighbors=nb)


def test_auxiliary_samples_are_not_counted():
    from sei_cleanlab import find_label_issues

    x, noisy, _ = _run(seed=1)
    r = sei.train(x, noisy, class_names=list("abcd"), epochs=4, lr=0.05, progress=False, seed=1, aux_class=True,
                  score="poe_knn", threshold="cl_count")
    aux = np.asarray(r.aux_indices)
    assert aux.size
    counted = np.ones(len(noisy), bool)
    counted[aux] = False
    nb = knn_indices(x, 20)
    n_cl = feature_issue_count("poe_knn", r.recorder.fusion_input("poe_knn"), r.labels_used, neighbors=nb,
                               num_classes=5, rows=counted)
    # the count flags among the other samples; the auxiliary ones, scored by the second run without the
    # pseudo-class (sei.train's "every sample scored"), are flagged by the same cutoff
    assert r.mislabeled[counted].sum() == n_cl
    mask = find_label_issues(r.labels_used, r.recorder, neighbors=nb, threshold_samples=aux)
    assert mask.sum() == n_cl and not mask[aux].any()


def test_the_sketch_reads_whole_rows_near_the_exact_means():
    """A recorder that keeps the top j classes gives the count whole rows (tracked means, the label's
    exact mean, the rest sharing what is left below their floor); on a run that learns, its count is
    near the exact one (CIFAR-10N Lite0, j = 3 of 10: 5,890 vs 5,867 on aggre, 17,993 vs 17,849 on worse)."""
    rng = np.random.default_rng(3)
    n, k = 600, 12
    labels = rng.integers(0, k, n)
    affinity = rng.normal(size=(n, k)) * 2  # each sample's own look-alike classes, stable over epochs
    top, every = sei.SEIRecorder(n, k, top_k=3), sei.SEIRecorder(n, k, top_k=None, extra_scores="poe_knn")
    for t in range(6):
        for ids in np.array_split(rng.permutation(n), 4):
            z = affinity[ids] + rng.normal(size=(len(ids), k)) * 0.3
            z[np.arange(len(ids)), labels[ids]] += 0.6 * (t + 1)
            z[np.arange(len(ids)), (labels[ids] + 1) % k] += 0.4 * (t + 1)  # a confusable class
            for r in (top, every):
                r.update(ids, z.astype(np.float32), labels[ids], from_logits=True)
        for r in (top, every):
            r.end_epoch()
    exact = every.fusion_input("poe_knn")
    rows = top.fusion_input("poe_knn").sparse_rows(slice(None)).dense()
    np.testing.assert_allclose(rows[np.arange(n), labels], exact[np.arange(n), labels], atol=1e-9)
    assert np.all(np.exp(rows).sum(axis=1) <= 1 + 1e-9)
    nb = knn_indices(rng.normal(size=(n, 3)), 20)
    got = feature_issue_count("poe_knn", top.fusion_input("poe_knn"), labels, neighbors=nb, num_classes=k)
    ref = feature_issue_count("poe_knn", exact, labels, neighbors=nb, num_classes=k)
    assert abs(got - ref) <= 0.1 * ref, (got, ref)
