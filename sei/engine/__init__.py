"""The training engine behind :func:`sei.train`.

- :mod:`~sei.engine.config`: :class:`TrainConfig`, every option declared and validated once;
- :mod:`~sei.engine.inputs`: labels, class names and inputs checked against the mode;
- :mod:`~sei.engine.images`: the device-native image pipeline (uint8 to the device, batched
  resize / random resized crop / flip / normalisation there);
- :mod:`~sei.engine.heads`: the heads, the fine-tuning network and the one training loss;
- :mod:`~sei.engine.loop`: the run's typed state and the epoch runners;
- :mod:`~sei.engine.checkpoint`: checkpoints that load with ``weights_only=True``;
- :mod:`~sei.engine.trainer`: one run from a config; :mod:`~sei.engine.result`: what it returns.

The engine knows no adapter: ``sei_cleanlab`` and ``sei_fiftyone`` call :func:`sei.train`.
"""

from .config import TrainConfig
from .result import TrainResult

__all__ = ["TrainConfig", "TrainResult", "fit"]


def __getattr__(name):
    # Lazy: the config (and the CLI's parser built from it) must not import torch.
    if name == "fit":
        from .trainer import fit

        return fit
    raise AttributeError(f"module 'sei.engine' has no attribute {name!r}")
