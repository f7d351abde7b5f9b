"""The models :func:`sei_fiftyone.compute_sei` offers: one table, read by the App's compute
form and by ``compute_sei`` (``model=<name>``), so the two accept the same names.

* ``"efficientnet-lite0"``: ImageNet weights shipped with pip, offline;
* open_clip architectures with pretrained tags, in open_clip's own ``"<arch>:<tag>"`` form
  (``open_clip.list_pretrained(as_str=True)``): the paper's CLIP backbones with OpenAI
  weights (``"ViT-B-32:openai"``, ``"RN50:openai"``) and a few others. Any other open_clip
  ``"<arch>:<tag>"``, ``model=<arch>, pretrained=<tag or file>``, a checkpoint file with
  ``arch=``, or an open_clip model folder (``open_clip_config.json`` and the weights) works
  from Python too (:mod:`sei.engine.encoders`);
* FiftyOne zoo CLIP models by their zoo name. The zoo's ``clip-vit-base32-torch`` is
  OpenAI's ``ViT-B-32.pt`` (the zoo manifest's URL is the ``url`` of open_clip's
  ``ViT-B-32:openai``), so it is loaded through open_clip under that name, where the
  engine can fine-tune it and read its text tower.

:func:`weights_warning` is what the form shows when a model's weights can be had neither
from a local cache nor by download (:func:`sei.engine.encoders.weights_problem`); answers that
needed a network probe are kept for :data:`PROBE_CACHE_S` seconds, as the form re-renders
on every change.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .runs import DEFAULT_MODEL, EMBEDDINGS_MODEL


@dataclass(frozen=True)
class ModelChoice:
    """One entry of :data:`MODEL_CHOICES`: ``name`` (``compute_sei(model=)`` and the form's
    value), ``label`` (the form's text) and ``model`` (the name :func:`sei.train` loads)."""

    name: str
    label: str
    model: str


MODEL_CHOICES = (
    ModelChoice(DEFAULT_MODEL, "EfficientNet-Lite0 (ImageNet; ships with pip, offline)", DEFAULT_MODEL),
    ModelChoice("ViT-B-32:openai", "CLIP ViT-B/32, OpenAI weights (open_clip)", "ViT-B-32:openai"),
    ModelChoice("RN50:openai", "CLIP ResNet-50, OpenAI weights (open_clip)", "RN50:openai"),
    ModelChoice("ViT-B-16:openai", "CLIP ViT-B/16, OpenAI weights (open_clip)", "ViT-B-16:openai"),
    ModelChoice("ViT-B-32:laion2b_s34b_b79k", "CLIP ViT-B/32, LAION-2B weights (open_clip)",
                "ViT-B-32:laion2b_s34b_b79k"),
    ModelChoice("clip-vit-base32-torch", "FiftyOne zoo: clip-vit-base32-torch (OpenAI ViT-B/32, via open_clip)",
                "ViT-B-32:openai"),
)
#: The form's choice of a local open_clip checkpoint (a model folder, or a file and its ``arch``).
CHECKPOINT = "checkpoint"
#: The form's choice of a FiftyOne zoo model (its ``zoo_model``), ``compute_sei(model="zoo:<name>")``.
ZOO = "zoo"
#: Seconds a form keeps a weights answer that needed a network probe.
PROBE_CACHE_S = 60.0

_BY_NAME = {c.name: c for c in MODEL_CHOICES}
_ANSWERS = {}


def choice_names():
    """The names of :data:`MODEL_CHOICES`, in the form's order."""
    return [c.name for c in MODEL_CHOICES]


def resolve_model(name):
    """The model :func:`sei.train` loads for ``compute_sei(model=name)``: the table's entry, else
    ``name`` itself (any name or path :func:`sei.engine.encoders.load_model` accepts)."""
    if isinstance(name, str) and name in _BY_NAME:
        return _BY_NAME[name].model
    return name


def weights_warning(model, pretrained=None, arch=None):
    """Why the weights of ``model`` cannot be had here (a sentence naming the fix), or None.

    ``None`` for stored embeddings. Paths are checked on every call (cheap); answers for
    registry names, which may need a TCP probe, are kept :data:`PROBE_CACHE_S` seconds.
    """
    if model in (None, EMBEDDINGS_MODEL, CHECKPOINT, ZOO) or (isinstance(model, str) and model.startswith("zoo:")):
        return None  # zoo models: sei_fiftyone.zoo.zoo_problem
    loaded = resolve_model(model)
    key = (loaded, pretrained, arch)
    local = isinstance(loaded, str) and (os.path.exists(loaded) or loaded.startswith("local-dir:"))
    hit = _ANSWERS.get(key)
    if not local and hit is not None and time.monotonic() - hit[0] < PROBE_CACHE_S:
        return hit[1]
    from sei.engine.encoders import weights_problem

    answer = weights_problem(loaded, pretrained, arch=arch)
    if not local:
        _ANSWERS[key] = (time.monotonic(), answer)
    return answer
