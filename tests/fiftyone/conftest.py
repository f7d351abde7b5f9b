"""Fixtures for the FiftyOne adapter: a real mongod on a free 127.0.0.1 port, no mocks.

mongod must run before ``import fiftyone`` (FiftyOne reads FIFTYONE_DATABASE_URI once),
and test modules import fiftyone at collection time, so it starts when this conftest is
loaded and stops when pytest unconfigures.
"""

import os
import tempfile
import uuid

import numpy as np
import pytest

import importlib.util

if importlib.util.find_spec("fiftyone") is None:  # importing it here would read its config too early
    pytest.skip("the FiftyOne extra is not installed", allow_module_level=True)

from sei_fiftyone.db import temporary_mongod  # noqa: E402  (does not import fiftyone)

_TMP = tempfile.mkdtemp(prefix="sei-fo-tests-")
_MONGOD = temporary_mongod()
_URI = _MONGOD.__enter__()
os.environ["FIFTYONE_DATABASE_URI"] = _URI
os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ["FIFTYONE_PLUGINS_DIR"] = os.path.join(_TMP, "plugins")
os.environ["FIFTYONE_SHOW_PROGRESS_BARS"] = "false"
assert "fiftyone" not in __import__("sys").modules, "fiftyone was imported before its database was set"
os.environ.setdefault("FIFTYONE_DEFAULT_DATASET_DIR", os.path.join(_TMP, "datasets"))


def pytest_unconfigure(config):
    try:
        import fiftyone.core.odm.database as food

        food._disconnect()
    except Exception:
        pass
    _MONGOD.__exit__(None, None, None)


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


@pytest.fixture
def dataset(tmp_path):
    ds = build_dataset(str(tmp_path / "images"))
    yield ds
    ds.delete()


@pytest.fixture
def plugins_dir():
    return os.environ["FIFTYONE_PLUGINS_DIR"]
