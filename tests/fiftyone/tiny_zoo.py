"""A small stand-in for a FiftyOne Model Zoo model that produces embeddings: registered through
FiftyOne's own custom-manifest mechanism (``fo.config.model_zoo_manifest_paths``), with its
"weights" file in ``fo.config.model_zoo_dir``, so that ``fiftyone.zoo.load_zoo_model`` loads it
exactly as it loads CLIP or DINOv2 (no downloads are possible in the tests).

``tiny-embedder-torch``: weights present; embeds an image as its per-channel mean colour and a
4x4 grey thumbnail (19 numbers), which separates the colour classes of the generated datasets.
``tiny-missing-torch``: weights absent, its download URL on a closed local port (offline).
"""

import json
import os

import numpy as np
from PIL import Image

import eta.core.config as etac
import eta.core.learning as etal

import fiftyone.core.models as fom

PRESENT, MISSING = "tiny-embedder-torch", "tiny-missing-torch"
WEIGHTS = "tiny-embedder.npy"


class TinyEmbedderConfig(etac.Config, etal.HasPublishedModel):
    def __init__(self, d):
        d = self.init(d)
        self.size = self.parse_number(d, "size", default=4)


class TinyEmbedder(fom.Model, fom.EmbeddingsMixin):
    """Mean colour and a grey thumbnail, scaled by the weights file (a float array)."""

    def __init__(self, config):
        self.config = config
        self.scale = np.load(config.model_path)

    @property
    def media_type(self):
        return "image"

    @property
    def ragged_batches(self):
        return True

    @property
    def transforms(self):
        return None

    @property
    def preprocess(self):
        return False

    @preprocess.setter
    def preprocess(self, value):
        pass

    @property
    def has_embeddings(self):
        return True

    def _features(self, img):
        img = np.asarray(img, dtype=np.float32) / 255.0
        size = int(self.config.size)
        grey = Image.fromarray((img.mean(axis=2) * 255).astype(np.uint8)).resize((size, size))
        return np.concatenate([img.reshape(-1, 3).mean(0), np.asarray(grey, np.float32).ravel() / 255.0]) * self.scale

    def predict(self, arg):
        raise NotImplementedError("an embeddings-only stand-in")

    def predict_all(self, args):
        raise NotImplementedError("an embeddings-only stand-in")

    def embed(self, arg):
        return self._features(arg)

    def embed_all(self, args):
        return np.stack([self._features(a) for a in args])

    def get_embeddings(self):
        raise NotImplementedError


def register(folder):
    """Write the manifest and the present model's weights under ``folder``; returns
    ``(manifest_path, model_zoo_dir)`` for ``fo.config.model_zoo_manifest_paths`` /
    ``fo.config.model_zoo_dir`` (or the FIFTYONE_MODEL_ZOO_* environment variables)."""
    zoo_dir = os.path.join(folder, "zoo")
    os.makedirs(zoo_dir, exist_ok=True)
    np.save(os.path.join(zoo_dir, WEIGHTS), np.full(19, 2.0, dtype=np.float32))

    def entry(name, filename, url):
        return {"base_name": name, "base_filename": filename, "version": None, "description": f"stand-in {name}",
                "source": "tests/fiftyone/tiny_zoo.py", "size_bytes": 200, "license": "MIT",
                "manager": {"type": "fiftyone.core.models.ModelManager", "config": {"url": url}},
                "default_deployment_config_dict": {"type": "tiny_zoo.TinyEmbedder", "config": {"size": 4}},
                "requirements": {"packages": ["numpy"]}, "tags": ["embeddings", "torch"],
                "date_added": "2026-12-07 00:00:00"}

    manifest = {"models": [entry(PRESENT, WEIGHTS, "http://127.0.0.1:9/tiny-embedder.npy"),
                           entry(MISSING, "tiny-missing.npy", "http://127.0.0.1:9/tiny-missing.npy")]}
    path = os.path.join(folder, "manifest-tiny.json")
    with open(path, "w") as f:
        json.dump(manifest, f)
    return path, zoo_dir
