"""Every score's output on a few fixed random histories, to check that numbers never change.

``python tests/score_golden.py`` (re)writes ``tests/data/scores_golden.npz``; it was first
written before the score registry (sei/scores.py) replaced the recorder's if-chains, and
``tests/test_scores.py`` asserts that the code still reproduces it. Only public API is used.
"""

from __future__ import annotations

import os

import numpy as np

from sei.constants import is_aux_threshold

GOLDEN_PATH = os.path.join(os.path.dirname(__file__), "data", "scores_golden.npz")

DYNAMICS = ("sei", "sei_mean", "ei", "se_last", "se_mid", "aum", "aum_prob", "signed_confidence", "loss",
            "agreement", "mistakenness")
NEIGHBOURS = ("aum_prob_knn", "knn_margin")
N, K, T = 48, 4, 6


def _history(rng, k, from_logits):
    """(T, N, k) values drifting towards the labels, plus labels."""
    labels = rng.integers(0, k, N)
    drift = np.linspace(0.0, 3.0, T)[:, None, None] * np.eye(k)[labels][None]
    z = rng.normal(0.0, 1.5, (T, N, k)) + drift
    if from_logits:
        return z.astype(np.float32), labels
    p = np.exp(z - z.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)).astype(np.float32), labels


def _streamed(hist, labels, from_logits, max_epochs, rng):
    """A recorder fed in shuffled batches with repeats; sample 0 is never seen, sample 1 only
    in epoch 0, sample 2 twice per epoch."""
    from sei import SEIRecorder

    rec = SEIRecorder(N, hist.shape[2], max_epochs=max_epochs)
    for t in range(hist.shape[0]):
        ids = rng.permutation(np.arange(1 if t == 0 else 2, N))
        ids = np.concatenate([ids, [2]])
        for batch in np.array_split(ids, 5):
            rec.update(batch, hist[t, batch], labels[batch], from_logits=from_logits)
        rec.end_epoch()
    return rec


def _recorder_outputs(out, tag, rec, relabeled):
    for name in DYNAMICS:
        try:
            out[f"{tag}/rec/{name}"] = rec.scores(name)
        except ValueError:  # "aum" without logits
            out[f"{tag}/rec/{name}"] = np.array([])
    for name in ("ei", "mistakenness"):
        out[f"{tag}/rec_relabeled/{name}"] = rec.scores(name, labels=relabeled)
    out[f"{tag}/predicted"] = rec.predicted_labels().astype(np.float64)
    out[f"{tag}/last_losses"] = rec.last_losses


def _cleanlab_outputs(out, tag, labels, source, features, aux, from_logits):
    from sei_cleanlab import find_label_issues, get_label_quality_scores

    kw = {} if source is None or not hasattr(source, "shape") else {"from_logits": from_logits}
    for name in DYNAMICS + NEIGHBOURS:
        if name == "aum" and not from_logits:
            continue
        feats = features if name in NEIGHBOURS else None
        out[f"{tag}/quality/{name}"] = get_label_quality_scores(labels, source, method=name, features=feats, **kw)
        thresholds = ("auto",) + (("aux_mean", "aux_quantile") if aux is not None else ())
        for th in thresholds:
            if aux is not None and name in NEIGHBOURS and is_aux_threshold(th):
                continue
            mask = find_label_issues(labels, source, score=name, threshold=th, threshold_samples=aux,
                                     features=feats, **kw)
            out[f"{tag}/mask/{name}/{th}"] = mask.astype(np.float64)
        ranked = find_label_issues(labels, source, score=name, threshold="gmm", threshold_samples=aux,
                                   return_indices_ranked_by="sei", features=feats, **kw)
        out[f"{tag}/ranked/{name}"] = ranked.astype(np.float64)


def compute_outputs() -> dict:
    """name -> float64 array of every output (a fixed seed: the same on every run)."""
    from sei import SEIRecorder, draw_auxiliary

    rng = np.random.default_rng(11)
    out = {}
    features = rng.normal(size=(N, 8)).astype(np.float32)
    for from_logits in (False, True):
        for with_aux in (False, True):
            k = K + 1 if with_aux else K
            hist, labels = _history(rng, K, from_logits)
            aux = None
            if with_aux:
                labels, aux = draw_auxiliary(labels, K, num_aux=6, seed=3)
                extra = rng.normal(0.0, 1.5, (T, N, 1)).astype(np.float32)
                if from_logits:
                    hist = np.concatenate([hist, extra], axis=2)
                else:
                    hist = np.concatenate([hist, np.abs(extra) * 0.1], axis=2)
                    hist = (hist / hist.sum(-1, keepdims=True)).astype(np.float32)
            tag = f"{'logits' if from_logits else 'probs'}{'_aux' if with_aux else ''}"
            relabeled = labels.copy()
            relabeled[3:9] = (relabeled[3:9] + 1) % K
            for max_epochs in (None, T):
                rec = _streamed(hist, labels, from_logits, max_epochs, rng)
                _recorder_outputs(out, f"{tag}/stream{max_epochs}", rec, relabeled)
                _cleanlab_outputs(out, f"{tag}/stream{max_epochs}", labels, rec, features, aux, from_logits)
            rec = SEIRecorder.from_history(hist, labels, from_logits=from_logits, chunk_size=20)
            _recorder_outputs(out, f"{tag}/history", rec, relabeled)
            _cleanlab_outputs(out, f"{tag}/history", labels, hist, features, aux, from_logits)
            half = hist.astype(np.float16)
            if not from_logits:
                half = half / half.sum(-1, keepdims=True)
            rec = SEIRecorder.from_history(half, labels, from_logits=from_logits)
            _recorder_outputs(out, f"{tag}/float16", rec, relabeled)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


if __name__ == "__main__":
    os.makedirs(os.path.dirname(GOLDEN_PATH), exist_ok=True)
    outputs = compute_outputs()
    np.savez_compressed(GOLDEN_PATH, **outputs)
    print(f"wrote {len(outputs)} arrays to {GOLDEN_PATH}")
