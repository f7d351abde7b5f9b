"""Generated image datasets for the FiftyOne adapter tests (fiftyone imported lazily)."""

import os
import uuid

import numpy as np

CLASSES = ("red", "green", "blue")
_COLORS = np.array([[220, 40, 40], [40, 200, 60], [50, 60, 220]], dtype=np.float64)


def make_images(folder, n, *, seed=0, flip_rate=0.15, size=32):
    """n small JPEGs of three colour classes; returns (paths, true, given, flipped)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    true = np.arange(n) % len(CLASSES)
    paths = []
    for i in range(n):
        base = _COLORS[true[i]] + rng.normal(0, 25, size=(size, size, 3))
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        p = os.path.join(folder, f"{i:04d}.jpg")
        img.save(p, quality=90)
        paths.append(p)
    flipped = rng.random(n) < flip_rate
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, len(CLASSES), flipped.sum())) % len(CLASSES)
    return paths, true, given, flipped


def build_dataset(folder, n=90, *, seed=0, with_embeddings=True, name=None):
    """A FiftyOne dataset of generated images with noisy ``ground_truth`` and ``clean``."""
    import fiftyone as fo

    paths, true, given, flipped = make_images(folder, n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    dataset = fo.Dataset(name or f"sei-test-{uuid.uuid4().hex[:8]}")
    samples = []
    for i, p in enumerate(paths):
        s = fo.Sample(filepath=p)
        s["ground_truth"] = fo.Classification(label=CLASSES[given[i]])
        s["clean"] = fo.Classification(label=CLASSES[true[i]])
        if with_embeddings:
            s["embedding"] = (np.eye(len(CLASSES))[true[i]] * 3 + rng.normal(0, 0.5, 8)[:3]).tolist() + rng.normal(0, 1, 5).tolist()
        samples.append(s)
    dataset.add_samples(samples)
    dataset.info["flipped_ids"] = [dataset.values("id")[i] for i in np.flatnonzero(flipped)]
    dataset.save()
    return dataset

