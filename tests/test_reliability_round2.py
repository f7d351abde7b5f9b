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
