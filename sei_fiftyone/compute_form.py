"""The ``compute_sei`` operator's form: what to run on, with which model, how to train; and
the :func:`sei_fiftyone.compute_sei` arguments its parameters give (:func:`compute_kwargs`).

Parameters carry the names of the Python arguments (``model``, ``embeddings_field``,
``mode``, ``image_size``, ``device``, ``head``, ``score``, ``epochs``, ``threshold``); the
local checkpoint choice asks for ``checkpoint`` (a file or an open_clip model folder) and
``arch`` (the architecture of a file), passed on as ``model=<path>, arch=<arch>``. The rules
that tie options together are the engine's (:class:`sei.engine.TrainConfig`), checked
as the form changes; model weights that cannot be had here are a warning in the form
(:func:`sei_fiftyone.model_choices.weights_warning`), before anything is submitted.
"""

from __future__ import annotations

import functools
import os

import fiftyone.operators.types as types

from sei.constants import AUTO_SCORE, DEFAULT_FEATURE_SCORE, DEFAULT_SCORE
from sei.scores import SCORES

from .inputs import embeddings_fields
from .model_choices import CHECKPOINT, MODEL_CHOICES, weights_warning
from .runs import DEFAULT_MODEL, EMBEDDINGS_MODEL

THRESHOLD_CHOICES = ("auto", "aux_mean", "aux_quantile", "zero", "gmm")
#: The App's short list of scores: "auto" (the library's default, chosen by the rule of
#: benchmarks/defaults_rule.py), the two it resolves to, the neighbour-label AUM variant and the
#: paper's SEI; names and descriptions come from the core's registry.
CURATED_SCORES = (DEFAULT_FEATURE_SCORE, DEFAULT_SCORE, "aum_prob_knn", "sei")
SCORE_CHOICES = ((AUTO_SCORE, f"auto (default): {DEFAULT_FEATURE_SCORE} on frozen features or embeddings, "
                              f"{DEFAULT_SCORE} when fine-tuning or with an auxiliary-class threshold"),) + tuple(
    (name, f"{name}: {SCORES[name].description}") for name in CURATED_SCORES
)
HEAD_CHOICES = (("auto", "auto (default): linear on frozen features, prompt when fine-tuning"),
                ("linear", "Linear (softmax regression; fast)"),
                ("prompt", "Prompt (the paper's cosine prompt head)"))
MODE_CHOICES = (("frozen", "Frozen encoder (embed once, train the head; fast)"),
                ("finetune", "Fine-tune the image tower (prompt head; slow without a GPU)"))


def target_input(ctx, inputs):
    """Dataset / current view / selected samples (FiftyOne's view target); returns the target."""
    inputs.view_target(ctx, action_description="Find mislabeled samples in")
    return ctx.target_view()


def _dropdown(inputs, name, choices, default, **kwargs):
    view = types.DropdownView()
    for value, label in choices:
        view.add_choice(value, label=label)
    return inputs.enum(name, view.values(), default=default, view=view, **kwargs)


def model_inputs(ctx, inputs, target):
    """The model: a table entry, a local open_clip checkpoint or a stored embeddings field; a
    warning when its weights can be had neither from a cache nor by download."""
    emb_fields = embeddings_fields(target)
    choices = [(c.name, c.label) for c in MODEL_CHOICES]
    choices.append((CHECKPOINT, "A local open_clip checkpoint (model folder, or weights file + architecture)"))
    if emb_fields:
        choices.append((EMBEDDINGS_MODEL, "A stored embeddings field"))
    _dropdown(inputs, "model", choices, DEFAULT_MODEL, label="Model",
              description="Image encoder (or stored vectors) the classifier trains on")
    model = ctx.params.get("model") or DEFAULT_MODEL
    if model == EMBEDDINGS_MODEL and emb_fields:
        _dropdown(inputs, "embeddings_field", [(f, f) for f in emb_fields], emb_fields[0],
                  label="Embeddings field")
        return
    problem = None
    if model == CHECKPOINT:
        path = ctx.params.get("checkpoint")
        prop = inputs.str("checkpoint", required=True, label="Checkpoint",
                          description="A folder with open_clip_config.json and the weights (open_clip's "
                          "local-dir), or a weights file (.pt, .bin, .safetensors) of an open_clip architecture")
        if path and os.path.isfile(path):
            _arch_input(inputs)
        if path:
            problem = (weights_warning(path, arch=ctx.params.get("arch") or None) if os.path.exists(path)
                       else f"No file or folder at {path!r} on the machine running the App server")
            prop.invalid, prop.error_message = problem is not None, problem
    else:
        problem = weights_warning(model)
        if problem is not None:
            inputs.view("weights_warning", types.Warning(
                label="These weights are not available here",
                description=f"{problem} Or choose 'A local open_clip checkpoint'."))


def _arch_input(inputs):
    import open_clip

    view = types.AutocompleteView()
    for name in open_clip.list_models():
        view.add_choice(name, label=name)
    inputs.enum("arch", view.values(), required=True, label="Architecture",
                description="The open_clip architecture of the weights file (e.g. ViT-B-32, RN50)", view=view)


def training_inputs(ctx, inputs):
    """Mode, image size, device, head, score, epochs and threshold; the engine's rules on their
    combination shown on ``mode`` (fine-tuning) or ``threshold``."""
    model = ctx.params.get("model") or DEFAULT_MODEL
    mode_prop = None
    if model != EMBEDDINGS_MODEL:
        mode_prop = _dropdown(inputs, "mode", MODE_CHOICES, "frozen", label="Mode")
        inputs.int("image_size", min=16, label="Image size (pixels)",
                   description="Default: the model's (224). 96 is plenty for 32 px images such as CIFAR; "
                   "CLIP ViTs take their own size only")
    _dropdown(inputs, "device", [(d, d) for d in device_choices()], "auto", label="Device",
              description="'auto': the GPU when there is one")
    _dropdown(inputs, "head", HEAD_CHOICES, "auto", label="Classifier head",
              description="What sei.train fits on the features")
    _dropdown(inputs, "score", SCORE_CHOICES, AUTO_SCORE, label="Score",
              description="Lower = more likely mislabeled")
    inputs.int("epochs", min=1, label="Epochs",
               description="Default: 10 (linear head) or 150 (prompt head, the paper's)")
    thr_prop = _dropdown(inputs, "threshold", [(t, t) for t in THRESHOLD_CHOICES], "auto", label="Threshold",
                         description="'auto': zero for SEI; 'aux_mean': the paper's auxiliary-class mean")
    problem = options_problem(ctx.params)
    if problem is not None:
        prop = mode_prop if mode_prop is not None and ctx.params.get("mode") == "finetune" else thr_prop
        prop.invalid, prop.error_message = True, problem


def options_problem(params):
    """The engine's objection to the form's head / score / threshold / mode, or None."""
    from sei.engine import TrainConfig

    mode = params.get("mode") or "frozen"
    try:
        TrainConfig(head=params.get("head") or "auto", score=params.get("score") or AUTO_SCORE,
                    threshold=params.get("threshold") or "auto",
                    mode=None if params.get("model") == EMBEDDINGS_MODEL else mode)
    except (TypeError, ValueError) as e:
        return str(e)
    return None


@functools.lru_cache(maxsize=1)
def device_choices():
    """``auto``, ``cpu`` and the accelerators torch sees in this process."""
    import torch

    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        out += ["cuda"] + ([f"cuda:{i}" for i in range(n)] if n > 1 else [])
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return tuple(out)


def compute_kwargs(params):
    """The :func:`sei_fiftyone.compute_sei` arguments (after the collection) of the form's parameters."""
    model = params.get("model") or DEFAULT_MODEL
    kwargs = dict(
        label_field=params["label_field"], brain_key=params.get("brain_key", "sei"), model=model,
        embeddings_field=params.get("embeddings_field") if model == EMBEDDINGS_MODEL else None,
        epochs=int(params["epochs"]) if params.get("epochs") else None,
        threshold=params.get("threshold", "auto"), head=params.get("head") or "auto",
        score=params.get("score") or AUTO_SCORE,
    )
    if model == CHECKPOINT:
        if not params.get("checkpoint"):
            raise ValueError("model='checkpoint' needs checkpoint=<an open_clip model folder, or a weights file "
                             "with arch=<its open_clip architecture>>")
        kwargs["model"] = params["checkpoint"]
        if params.get("arch") and os.path.isfile(params["checkpoint"]):
            kwargs["arch"] = params["arch"]
    if model != EMBEDDINGS_MODEL:
        kwargs["mode"] = params.get("mode") or "frozen"
        if params.get("image_size"):
            kwargs["image_size"] = int(params["image_size"])
    if params.get("device") and params["device"] != "auto":
        kwargs["device"] = params["device"]
    return kwargs
