"""The per-class log-probability sums kept as a top-k sketch (sei._logp_top): the bounds hold,
the score is exact where it says so, and saving, merging, the device path and the default
score with features keep it."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sei import SEIRecorder
from sei._logp_top import LogProbTop
from sei.neighbors import _shares, feature_score, knn_indices


def _record(recs, labels, epochs, rng, repeats=0, learn=1.0, as_probs=False, torch_rows=False):
    n, k = labels.size, recs[0].num_classes
    for t in range(epochs):
        order = rng.permutation(n)
        order = np.concatenate([order, order[:repeats]])  # augmented views: some samples twice
        for ids in np.array_split(order, 5):
            z = rng.normal(size=(len(ids), k)) * 2
            z[np.arange(len(ids)), labels[ids]] += learn * (t + 1)
            z[np.arange(len(ids)), (labels[ids] + 1) % k] += 0.5 * learn * (t + 1)  # a confusable class
            for r in recs:
                if as_probs:
                    p = np.exp(z - z.max(1, keepdims=True))
                    r.update(ids, p / p.sum(1, keepdims=True), labels[ids])
                elif torch_rows and r.top_k < k:
                    import torch

                    r.update(torch.from_numpy(ids), torch.from_numpy(z.astype(np.float32)),
                             torch.from_numpy(labels[ids]), from_logits=True)
                else:
                    r.update(ids, z.astype(np.float32), labels[ids], from_logits=True)
        for r in recs:
            r.end_epoch()


def _pair(n=300, k=12, j=3, seed=0, **kw):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    full = SEIRecorder(n, k, top_k=None, extra_scores="all")
    top = SEIRecorder(n, k, top_k=j)  # keeps the sketch without being asked (top k < K)
    _record([full, top], labels, 5, rng, **kw)
    return labels, full, top


@pytest.mark.parametrize("seed,j,kw", [(0, 2, {}), (1, 3, {"repeats": 40}), (2, 4, {"as_probs": True}),
                                       (3, 1, {"learn": 0.0}), (4, 5, {"repeats": 10, "learn": 3.0})])
def test_bounds_hold_and_the_score_is_exact_where_it_says(seed, j, kw):
    labels, full, top = _pair(seed=seed, j=j, **kw)
    exact_mean = full.scores("mean_logp")
    low, exact, high = top._logp_means().margin(labels)
    np.testing.assert_array_equal(top.scores("mean_logp"), low)
    assert np.all(low <= exact_mean + 1e-9) and np.all(exact_mean <= high + 1e-9)
    np.testing.assert_allclose(low[exact], exact_mean[exact], atol=1e-9)
    # poe_knn: the neighbours' smoothed shares added
    x = np.random.default_rng(seed).normal(size=(labels.size, 3))
    nb = knn_indices(x, 20)
    ref = feature_score("poe_knn", full.fusion_input("poe_knn"), labels, neighbors=nb, num_classes=12)
    got = feature_score("poe_knn", top.fusion_input("poe_knn"), labels, neighbors=nb, num_classes=12)
    low, exact, high = top._logp_means().margin(labels, _shares(labels, nb, 12, 1.0))
    np.testing.assert_array_equal(got, low)
    assert np.all(low <= ref + 1e-9) and np.all(ref <= high + 1e-9)
    np.testing.assert_allclose(low[exact], ref[exact], atol=1e-9)
    if j >= 5 and kw.get("learn") == 3.0:  # a clear run, five of 12 tracked: exact for many samples
        assert exact.mean() > 0.3, exact.mean()


def test_a_case_computed_by_hand():
    # K = 4, one tracked class (j = 1); two updates of one sample with label 0.
    top = LogProbTop(1, 4, 1)
    lp1 = np.log([0.5, 0.3, 0.1, 0.1])
    lp2 = np.log([0.2, 0.6, 0.1, 0.1])
    for lp in (lp1, lp2):
        order = np.argsort(-lp)
        top.add_updates(np.array([0]), order[None, :1], lp[None, order[:1]], lp[order[1:2]], lp[:1])
    a = top.arrays
    # update 1 tracks class 0 (log .5), floor log .3; update 2's top is class 1 (log .6):
    # class 0 -> log .5 + tau_2 = log .5 + log .2; class 1 -> floor_1 + log .6 = log .3 + log .6;
    # the larger (class 1: log .18 > log .1) is kept, class 0 dropped into the floor.
    assert a["classes"][0, 0] == 1 and not a["exact"][0, 0]
    np.testing.assert_allclose(a["sums"][0, 0], np.log(0.3) + np.log(0.6))
    np.testing.assert_allclose(a["floor"][0], max(np.log(0.3) + np.log(0.2), np.log(0.5) + np.log(0.2)))
    np.testing.assert_allclose(a["label"][0], np.log(0.5) + np.log(0.2))  # exact at the label
    means = top.means(np.array([2.0]), np.array([0]))
    score, exact, high = means.margin(np.array([0]))
    # m(0) = (log .5 + log .2) / 2; the best other is class 1's bound (log .3 + log .6) / 2
    np.testing.assert_allclose(score, [(np.log(0.1) - np.log(0.18)) / 2])
    assert not exact[0] and high[0] == np.inf  # no exact class: nothing bounds it from above
    # true margin: m(0) - m(1) = (log .1 - log .18) / 2 ... equal here, since tau_1 was class 1's value
    # every class tracked (j >= K): exact
    full = LogProbTop(1, 4, 4)
    for lp in (lp1, lp2):
        full.add_updates(np.array([0]), np.arange(4)[None], lp[None], np.array([-np.inf]), lp[:1])
    score, exact, _ = full.means(np.array([2.0]), np.array([0])).margin(np.array([0]))
    m = (lp1 + lp2) / 2
    np.testing.assert_allclose(score, [m[0] - m[1:].max()])
    assert exact[0]


def test_the_device_path_records_what_numpy_does():
    pytest.importorskip("torch")
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    labels = np.random.default_rng(0).integers(0, 12, 200)
    host, dev = SEIRecorder(200, 12, top_k=3), SEIRecorder(200, 12, top_k=3)
    _record([host], labels, 4, rng_a, repeats=20)
    _record([dev], labels, 4, rng_b, repeats=20, torch_rows=True)
    for name in ("classes", "exact"):
        np.testing.assert_array_equal(dev._logp_total.arrays[name], host._logp_total.arrays[name])
    for name in ("sums", "floor", "label"):
        np.testing.assert_allclose(dev._logp_total.arrays[name], host._logp_total.arrays[name], rtol=1e-5, atol=1e-5)


def test_save_load_and_shard_merge_keep_the_sketch(tmp_path):
    labels, _, top = _pair(seed=6)
    top.save(tmp_path / "r.npz")
    back = SEIRecorder.load(tmp_path / "r.npz")
    np.testing.assert_array_equal(back.scores("mean_logp"), top.scores("mean_logp"))
    # shards recording halves equal one recorder
    rng = np.random.default_rng(7)
    n, k = labels.size, 12
    logits = rng.normal(size=(4, n, k)).astype(np.float32) * 2
    half = np.arange(n) < n // 2
    shards, one = [SEIRecorder(n, k, top_k=3) for _ in range(2)], SEIRecorder(n, k, top_k=3)
    for t in range(4):
        for rec, rows in ((shards[0], np.flatnonzero(half)), (shards[1], np.flatnonzero(~half)), (one, np.arange(n))):
            rec.update(rows, logits[t, rows], labels[rows], from_logits=True)
            rec.end_epoch()
    np.testing.assert_array_equal(SEIRecorder.merge(shards).scores("mean_logp"), one.scores("mean_logp"))


def test_states_saved_without_the_sketch_load_and_say_so(tmp_path):
    labels, full, top = _pair(seed=8)
    state = top.state_dict()
    old = {k: v for k, v in state.items() if not k.startswith("logp_")}  # saved before the sketch
    back = SEIRecorder(labels.size, 12, top_k=3).load_state_dict(old)
    with pytest.raises(ValueError, match="per-class sums"):
        back.scores("mean_logp")
    with pytest.warns(UserWarning, match="aum_prob_knn"):
        from sei_cleanlab import find_label_issues

        find_label_issues(labels, back, features=np.random.default_rng(0).normal(size=(labels.size, 3)))
    # a top-k state that kept the dense (N, K) sums keeps them
    dense = SEIRecorder(labels.size, 12, top_k=None, extra_scores="mean_logp")
    _record([dense], labels, 2, np.random.default_rng(1))
    state = dense.state_dict()
    state.update({k: v for k, v in top.state_dict().items() if k.startswith("last_")})
    state.pop("last_probs", None)
    back = SEIRecorder(labels.size, 12, top_k=3).load_state_dict(state)
    np.testing.assert_allclose(back.scores("mean_logp"), dense.scores("mean_logp"))


def test_other_labels_are_refused_and_the_default_with_features_reads_the_sketch():
    labels, _, top = _pair(seed=9)
    other = labels.copy()
    other[4] = (other[4] + 1) % 12
    with pytest.raises(ValueError, match="top_k=None"):
        top.scores("mean_logp", labels=other)
    from sei_cleanlab import find_label_issues

    x = np.random.default_rng(0).normal(size=(labels.size, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # poe_knn is read from the sketch: no fallback warning
        find_label_issues(labels, top, features=x)


def test_sketch_state_is_per_sample():
    rec = SEIRecorder(1000, 1000, top_k=5)
    # int16 classes, float64 bounds, bool flags per slot; the floor and the label's sum
    assert rec._logp_total.nbytes == rec._logp_epoch.nbytes == 1000 * (5 * (2 + 8 + 1) + 16)
    assert SEIRecorder(1000, 10)._logp_total is None  # all K kept: no sketch


@settings(max_examples=40, deadline=None)
@given(k=st.integers(2, 7), data=st.data())
def test_the_bounds_hold_for_any_updates(k, data):
    j = data.draw(st.integers(1, k - 1))
    n = data.draw(st.integers(1, 6))
    seed = data.draw(st.integers(0, 2**31 - 1))
    epochs = data.draw(st.integers(1, 4))
    as_probs = data.draw(st.booleans())  # probabilities (log(p + EPS)) or logits (exact log-softmax)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    full, top = SEIRecorder(n, k, top_k=None, extra_scores="mean_logp"), SEIRecorder(n, k, top_k=j)
    for _ in range(epochs):
        ids = rng.integers(0, n, rng.integers(1, 3 * n + 1))  # any samples, any repeats, some unseen
        logits = rng.normal(size=(len(ids), k)) * rng.uniform(0.1, 8)
        if as_probs:
            p = np.exp(logits - logits.max(1, keepdims=True))
            values, from_logits = p / p.sum(1, keepdims=True), False
        else:
            values, from_logits = logits, True
        for rec in (full, top):
            rec.update(ids, values, labels[ids], from_logits=from_logits)
            rec.end_epoch()
    exact = full.scores("mean_logp")
    low, is_exact, high = top._logp_means().margin(labels)
    seen = np.isfinite(exact)
    np.testing.assert_array_equal(np.isfinite(low), seen)
    assert np.all(low[seen] <= exact[seen] + 1e-9) and np.all(exact[seen] <= high[seen] + 1e-9)
    np.testing.assert_allclose(low[is_exact], exact[is_exact], atol=1e-9)


def _plain_merge(top, rows, b):
    """The module notes' merge written plainly, row set by row set: the (n, ja, jb) class matches
    and one gather and scatter (the oracle of the optimised merge_rows)."""
    a = {k: v[rows] for k, v in top.arrays.items()}
    ca, cb = a["classes"].astype(np.int64), np.asarray(b["classes"], np.int64)
    sa, sb, fa, fb = a["sums"], np.asarray(b["sums"], np.float64), a["floor"], np.asarray(b["floor"], np.float64)
    empty_a, empty_b = ca[:, 0] < 0, cb[:, 0] < 0
    match = (ca[:, :, None] == cb[:, None, :]) & (ca[:, :, None] >= 0)
    a_in_b, b_in_a = match.any(axis=2), match.any(axis=1)
    new_sa = np.where(a_in_b, sa + np.where(match, sb[:, None, :], 0.0).sum(axis=2), sa + fb[:, None])
    new_ea = a["exact"] & np.where(a_in_b, (match & np.asarray(b["exact"])[:, None, :]).any(axis=2), empty_b[:, None])
    only_b = ~b_in_a & (cb >= 0)
    cls = np.concatenate([ca, np.where(only_b, cb, -1)], axis=1)
    sums = np.concatenate([np.where(ca >= 0, new_sa, -np.inf), np.where(only_b, fa[:, None] + sb, -np.inf)], axis=1)
    exact = np.concatenate([new_ea & (ca >= 0), np.asarray(b["exact"]) & only_b & empty_a[:, None]], axis=1)
    order = np.argsort(-sums, axis=1, kind="stable")
    keep, drop = order[:, :top.j], order[:, top.j:]
    floor = fa + fb
    if drop.shape[1]:
        floor = np.maximum(floor, np.take_along_axis(sums, drop, axis=1).max(axis=1))
    kept = np.take_along_axis(cls, keep, axis=1)
    top.arrays["classes"][rows] = kept
    top.arrays["sums"][rows] = np.where(kept >= 0, np.take_along_axis(sums, keep, axis=1), -np.inf)
    top.arrays["exact"][rows] = np.take_along_axis(exact, keep, axis=1) & (kept >= 0)
    top.arrays["floor"][rows] = floor
    top.arrays["label"][rows] = a["label"] + np.asarray(b["label"], np.float64)


class _PlainTop(LogProbTop):
    def merge_rows(self, rows, other):
        _plain_merge(self, np.asarray(rows, np.int64), other)


@pytest.mark.parametrize("k,j,zeros", [(12, 3, False), (12, 3, True), (4, 5, True), (30, 1, True)])
def test_the_fast_merge_paths_equal_the_plain_merge_bit_for_bit(k, j, zeros):
    # first updates copied in, ascending rows merged as slices, one comparison per column:
    # the same arrays as the plain merge, with repeated ids, zero probabilities (-inf) and K <= j
    rng = np.random.default_rng(k * 10 + j)
    n = 400
    fast, plain = (LogProbTop(n, k, j), LogProbTop(n, k, j)), (_PlainTop(n, k, j), _PlainTop(n, k, j))
    for epoch in range(3):
        order = np.concatenate([rng.permutation(n), rng.integers(0, n, 60)])  # some samples twice
        for ids in np.array_split(order, 4):
            p = rng.dirichlet(np.full(k, 0.3), len(ids))
            if zeros:
                p[rng.random(p.shape) < 0.5] = 0.0
                p[np.arange(len(ids)), rng.integers(0, k, len(ids))] += 0.1
                p /= p.sum(1, keepdims=True)
            with np.errstate(divide="ignore"):
                lp = np.log(p)
            srt = np.argsort(-lp, axis=1, kind="stable")
            w = min(j, k)
            cls = srt[:, :w].astype(np.int16)
            tau = lp[np.arange(len(ids)), srt[:, w]] if k > j else np.full(len(ids), -np.inf)
            if w < j:
                cls = np.concatenate([cls, np.full((len(ids), j - w), -1, np.int16)], axis=1)
            top_lp = np.where(cls >= 0, np.take_along_axis(lp, np.maximum(cls, 0).astype(np.int64), 1), -np.inf)
            label = lp[np.arange(len(ids)), rng.integers(0, k, len(ids))]
            for ep, _ in (fast, plain):
                ep.add_updates(ids, cls, top_lp, tau, label)
        for ep, total in (fast, plain):
            seen = np.flatnonzero(np.bincount(order, minlength=n) > 0)
            total.merge(ep, rows=seen, scale=np.bincount(order, minlength=n)[seen].astype(float))
            ep.reset()
    for name, array in fast[1].arrays.items():
        np.testing.assert_array_equal(array, plain[1].arrays[name], err_msg=name)
