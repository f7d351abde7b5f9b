"""Score partitions anywhere, merge once: the recorder of a job that trains or scores its
partitions in separate tasks (a Spark or Ray job, processes without torch.distributed).

Each task records the samples of its partition, with their global ids, in a full-size
``SEIRecorder`` and saves it; the driver loads the shards and merges them with
``SEIRecorder.merge``, which equals one recorder that saw every update. Here the "model" is
a fixed noisy predictor replayed per epoch, and the tasks are processes of a pool.

    python examples/shard_merge.py
"""

import os
import tempfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from sei import SEIRecorder
from sei_cleanlab import find_label_issues

N, K, EPOCHS, PARTS = 6000, 10, 5, 3


def data():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, K, N)
    noisy = rng.random(N) < 0.2
    given = np.where(noisy, (truth + rng.integers(1, K, N)) % K, truth)
    return truth, given, noisy


def logits(epoch, ids, truth):
    rng = np.random.default_rng([epoch, int(ids[0])])
    out = rng.normal(0, 1, (ids.size, K))
    out[np.arange(ids.size), truth[ids]] += 1.0 + 0.4 * epoch  # the model learns the true class
    return out


def task(part, folder):
    """One partition's work: every epoch, its samples in batches; returns the shard's file."""
    truth, given, _ = data()
    ids = np.arange(N)[part::PARTS]
    rec = SEIRecorder(N, K, max_epochs=EPOCHS)
    for epoch in range(EPOCHS):
        for batch in np.array_split(ids, 8):
            rec.update(batch, logits(epoch, batch, truth), given[batch], from_logits=True)
        rec.end_epoch()
    path = os.path.join(folder, f"shard{part}.npz")
    rec.save(path)
    return path


def main():
    truth, given, noisy = data()
    with tempfile.TemporaryDirectory() as folder, ProcessPoolExecutor(PARTS) as pool:
        paths = list(pool.map(task, range(PARTS), [folder] * PARTS))
        merged = SEIRecorder.merge([SEIRecorder.load(p) for p in paths])
    single = SEIRecorder(N, K, max_epochs=EPOCHS)
    for epoch in range(EPOCHS):
        for part in range(PARTS):
            for batch in np.array_split(np.arange(N)[part::PARTS], 8):
                single.update(batch, logits(epoch, batch, truth), given[batch], from_logits=True)
        single.end_epoch()
    same = all(np.allclose(merged.scores(s), single.scores(s), equal_nan=True) for s in ("sei", "aum_prob", "aum"))
    issues = find_label_issues(given, merged)
    precision = (issues & noisy).sum() / max(issues.sum(), 1)
    print(f"{PARTS} shards merged: scores equal to one recorder: {same}")
    print(f"flagged {issues.sum()} of {N}; precision {precision:.2f}, recall {(issues & noisy).sum() / noisy.sum():.2f}")


if __name__ == "__main__":
    main()
