"""The training engine behind :func:`sei.train`, and the one home of torch in :mod:`sei`.

- :mod:`~sei.engine.training`: :func:`sei.train`, the face of the engine;
- :mod:`~sei.engine.config`: :class:`TrainConfig`, every option declared and validated once;
- :mod:`~sei.engine.inputs`: labels, class names and inputs checked against the mode;
- :mod:`~sei.engine.data`: image folders (folder per class) read into paths, labels and class names;
- :mod:`~sei.engine.images`: the device-native image pipeline (uint8 to the device, batched
  resize / random resized crop / flip / normalisation there);
- :mod:`~sei.engine.encoders`: the image / text encoders (EfficientNet-Lite0, open_clip);
  :mod:`~sei.engine.weights_probe`: where open_clip weights come from, without loading them;
  :mod:`~sei.engine.towers`: the input sizes an image tower takes;
- :mod:`~sei.engine.embedding`: frozen embeddings through the image pipeline, cached on disk;
- :mod:`~sei.engine.heads`: the heads, the fine-tuning network and the one training loss;
- :mod:`~sei.engine.loop`: the run's typed state and the epoch runners;
- :mod:`~sei.engine.checkpoint`: checkpoints that load with ``weights_only=True``;
- :mod:`~sei.engine.trainer`: one run from a config; :mod:`~sei.engine.result`: what it returns;
- :mod:`~sei.engine.protocols`: what is built on runs: every sample scored with the auxiliary
  class (:func:`train_scoring_every_sample`, behind :func:`sei.train`) and the linear head as a
  predictor of held-out features (:func:`fit_head`, behind :func:`sei.active.train_linear`).

The engine knows no adapter: ``sei_cleanlab`` and ``sei_fiftyone`` call :func:`sei.train`.
Nothing outside this package imports torch at module level; ``import sei`` and
``import sei.engine`` (the config, for the command line's parser) stay light.
"""

from .config import TrainConfig
from .result import TrainResult

__all__ = ["TrainConfig", "TrainResult", "fit", "fit_head", "train", "train_scoring_every_sample"]


def __getattr__(name):
    # Lazy: the config (and the CLI's parser built from it) must not import torch.
    if name == "fit":
        from .trainer import fit

        return fit
    if name in ("fit_head", "train_scoring_every_sample"):
        from . import protocols

        return getattr(protocols, name)
    if name == "train":
        from .training import train

        return train
    raise AttributeError(f"module 'sei.engine' has no attribute {name!r}")
