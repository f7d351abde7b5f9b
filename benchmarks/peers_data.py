"""The peers benchmark's data (:mod:`benchmarks.peers`): cached features per encoder, the label sets, the
seeded CIFAR-10N subset and the samples each cell is evaluated on."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: Share of the samples given to Deep k-NN as its clean held-out set (left out of every evaluation).
CLEAN_SHARE = 0.05


def _cache():
    d = Path(os.environ.get("SEI_PEERS_CACHE", ROOT / "benchmarks" / ".cache" / "peers"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cached(name, fn):
    """``fn()`` (an array or a tuple of arrays) saved once as ``<name>.npz`` in the peers cache."""
    p = _cache() / f"{name.replace('/', '_')}.npz"
    if p.exists():
        z = np.load(p)
        out = tuple(z[f"a{i}"] for i in range(len(z.files)))
        return out[0] if len(out) == 1 else out
    got = fn()
    arrs = got if isinstance(got, tuple) else (got,)
    np.savez(p.with_suffix(".tmp.npz"), **{f"a{i}": a for i, a in enumerate(arrs)})
    os.replace(p.with_suffix(".tmp.npz"), p)
    return got


# ----------------------------------------------------------------------------- data
#: The second and third encoders embed a seeded subset of CIFAR-10N on the shared 2-core CPU: at
#: 64 px a 1,000-image sample took 10.9 s (Lite1) and 7.3 s (Lite2) on one thread (30.7 s each at
#: 96 px), so all 50,000 images would take well over the 30 minutes allowed next to the other jobs.
SUBSET_NAME, SUBSET_SIZE = "cifar10n10k", 10_000


def subset_rows(n=50_000):
    """The rows of :data:`SUBSET_NAME`: a seeded 10,000 of the 50,000 CIFAR-10N training images."""
    return np.sort(np.random.default_rng(22).choice(n, SUBSET_SIZE, replace=False))


def features(name, encoder="efficientnet-lite0", size=96):
    """Frozen features of data set ``name`` with ``encoder`` at ``size`` px (cached)."""
    if name == SUBSET_NAME:
        if encoder == "efficientnet-lite0" and size == 96:
            return features("cifar10n")[subset_rows()]

        def fn():
            from benchmarks.cifar10n import load_images
            from sei.engine.embedding import embed_images
            from sei.engine.encoders import load_model

            x = np.ascontiguousarray(load_images("train")[subset_rows()])
            return np.asarray(embed_images(load_model(encoder), x, image_size=size, batch_size=128, progress=False),
                              dtype=np.float32)

        return _cached(f"features_{name}_{encoder}_{size}", fn)
    if name == "cifar10n":
        from benchmarks.cifar10n import load_embeddings

        return np.asarray(load_embeddings("train", encoder, size), dtype=np.float32)
    from benchmarks import defaults_data

    if encoder == "efficientnet-lite0" and size == 96:
        return np.asarray(defaults_data.features(name), dtype=np.float32)

    def fn():
        from sei.engine.embedding import embed_images
        from sei.engine.encoders import load_model

        x, _, _ = defaults_data.images_and_labels(name)
        return np.asarray(embed_images(load_model(encoder), x, image_size=size, batch_size=128, progress=False),
                          dtype=np.float32)

    return _cached(f"features_{name}_{encoder}_{size}", fn)


def clean_split(n, seed):
    """Deep k-NN's D_clean: a seeded 5 % of the samples."""
    rng = np.random.default_rng(10_000 + seed)
    return np.sort(rng.choice(n, int(round(CLEAN_SHARE * n)), replace=False))


def evaluated(n, seed, aux=()):
    """The samples every method of a cell is evaluated on: all but Deep k-NN's clean split and the
    auxiliary samples (``aux``)."""
    valid = np.ones(n, bool)
    valid[clean_split(n, seed)] = False
    valid[np.asarray(aux, dtype=np.int64)] = False
    return valid


def class_names(name):
    """The class names of data set ``name``."""
    if name in ("cifar10n", SUBSET_NAME):
        from benchmarks.cifar10n import load_labels

        return load_labels()["class_names"]
    from benchmarks import defaults_data as data

    return data.images_and_labels(name)[2]


def label_sets(name, seed):
    """{label set: (labels, is_mislabeled)} of data set ``name`` for ``seed`` (the subset's rows of CIFAR-10N's)."""
    from benchmarks import defaults_data as data

    if name == SUBSET_NAME:
        rows = subset_rows()
        return {t: (y[rows], m[rows]) for t, (y, m) in data.label_sets("cifar10n", seed).items()}
    if name == "cifar10n":
        return data.label_sets(name, seed)
    return data.label_sets(name, seed, *data.images_and_labels(name)[:2])
