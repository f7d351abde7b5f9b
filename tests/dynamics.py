"""Synthetic training dynamics with known truth, shared by the tests."""

import numpy as np


def planted_history(n_easy=60, n_hard=30, n_noisy=30, num_classes=4, epochs=20, seed=0):
    """(T, N, K) probabilities for three kinds of samples, and the truth.

    clean-easy: predicts the given label confidently from the start;
    clean-hard: predicts another class for the first 40 % of epochs, then the given one;
    mislabeled: predicts the (hidden) true class, memorising the given label only in
    the last 15 % of epochs.
    Returns ``history, given_labels, is_mislabeled, kind`` with kind in {"easy","hard","noisy"}.
    """
    rng = np.random.default_rng(seed)
    n = n_easy + n_hard + n_noisy
    k = num_classes
    kind = np.array(["easy"] * n_easy + ["hard"] * n_hard + ["noisy"] * n_noisy)
    given = rng.integers(0, k, n)
    other = (given + rng.integers(1, k, n)) % k
    t = np.arange(epochs)[:, None]
    target = np.where(kind == "easy", given, 0)[None, :].repeat(epochs, 0)
    target = np.where((kind == "hard") & (t < 0.4 * epochs), other, np.where(kind == "hard", given, target))
    target = np.where((kind == "noisy") & (t < 0.85 * epochs), other, np.where(kind == "noisy", given, target))
    conf = np.where(kind == "easy", 0.9, 0.6)[None, :] + rng.uniform(-0.05, 0.05, (epochs, n))
    hist = np.empty((epochs, n, k))
    rest = (1 - conf) / (k - 1)
    hist[:] = rest[..., None]
    np.put_along_axis(hist, target[..., None], conf[..., None], axis=2)
    return hist, given, kind == "noisy", kind
