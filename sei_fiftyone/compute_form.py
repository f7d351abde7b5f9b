"""The ``compute_sei`` operator's form: what to run on, with which model, how to train; and
the :func:`sei_fiftyone.compute_sei` arguments its parameters give (:func:`compute_kwargs`).

Parameters carry the names of the Python arguments (``model``, ``embeddings_field``,
``mode``, ``image_size``, ``device``, ``head``, ``score``, ``epochs``, ``threshold``); the
local checkpoint choice asks for ``checkpoint`` (a file or an open_clip model folder) and
``arch`` (the architecture of a file), passed on as ``model=<path>, arch=<arch>``; the zoo
choice asks for ``zoo_model`` (a FiftyOne zoo model tagged "embeddings"), passed on as
``model="zoo:<name>"``. The rules
that tie options together are the engine's (:class:`sei.engine.TrainConfig`), checked
as the form changes; model weights that cannot be had here are a warning in the form
(:func:`sei_fiftyone.model_choices.weights_warning`), before anything is submitted.

A path typed in the App names a file on the server, so the form takes only paths under
:func:`path_roots` (the user's home folder and the dataset's media folders, or the folders
of the ``SEI_FIFTYONE_PATH_ROOTS`` environment variable), resolved with ``os.path.realpath``,
and answers every other path with one message (:func:`checked_path`): the form never tells
whether a file exists elsewhere. The model is one of the form's choices. The Python
``compute_sei(model=<path>)`` is not restricted.
"""

from __future__ import annotations

import functools
import os

import fiftyone.operators.types as types

from sei.constants import AUTO_SCORE, DEFAULT_FEATURE_SCORE, DEFAULT_HEAD, DEFAULT_SCORE, HEAD_DEFAULTS, HEADS, \
    THRESHOLD_METHODS
from sei.engine.config import MODES
from sei.scores import SCORES

from .inputs import embeddings_fields
from .model_choices import CHECKPOINT, MODEL_CHOICES, ZOO, choice_names, weights_warning
from .runs import DEFAULT_MODEL, EMBEDDINGS_MODEL, check_brain_key_syntax, dataset_of

#: Environment variable of the folders under which the App's forms take a path
#: (``os.pathsep``-separated); unset: the home folder and the dataset's media folders.
PATH_ROOTS_ENV = "SEI_FIFTYONE_PATH_ROOTS"

THRESHOLD_CHOICES = THRESHOLD_METHODS
#: The App's short list of scores: "auto" (the library's default, chosen by the rule of
#: benchmarks/defaults_rule.py), the two it resolves to, the neighbour-label AUM variant and the
#: paper's SEI; names and descriptions come from the core's registry.
CURATED_SCORES = (DEFAULT_FEATURE_SCORE, DEFAULT_SCORE, "aum_prob_knn", "sei")
SCORE_CHOICES = ((AUTO_SCORE, f"auto (default): {DEFAULT_FEATURE_SCORE} on frozen features or embeddings, "
                              f"{DEFAULT_SCORE} when fine-tuning or with an auxiliary-class threshold"),) + tuple(
    (name, f"{name}: {SCORES[name].description}") for name in CURATED_SCORES
)
#: Labels of the engine's choices (the choices themselves are ``sei.constants.HEADS`` and
#: ``sei.engine.config.MODES``; a test checks that every one has a label).
HEAD_LABELS = {"auto": f"auto (default): {DEFAULT_HEAD} on frozen features, prompt when fine-tuning",
               "linear": "Linear (softmax regression; fast)",
               "prompt": "Prompt (the paper's cosine prompt head)"}
MODE_LABELS = {"frozen": "Frozen encoder (embed once, train the head; fast)",
               "finetune": "Fine-tune the image tower (prompt head; slow without a GPU)"}
HEAD_CHOICES = tuple((h, HEAD_LABELS[h]) for h in ("auto",) + HEADS)
#: The image modes (``"embeddings"`` is chosen by the model dropdown's stored-embeddings entry).
MODE_CHOICES = tuple((m, MODE_LABELS[m]) for m in MODES if m != "embeddings")


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
    choices.append((ZOO, "A FiftyOne zoo model that produces embeddings (frozen)"))
    if emb_fields:
        choices.append((EMBEDDINGS_MODEL, "A stored embeddings field"))
    model_prop = _dropdown(inputs, "model", choices, DEFAULT_MODEL, label="Model",
                           description="Image encoder (or stored vectors) the classifier trains on")
    model = ctx.params.get("model") or DEFAULT_MODEL
    if model not in [value for value, _ in choices]:  # never probed: it may be a path
        model_prop.invalid, model_prop.error_message = True, "Choose a model from the list"
        return
    if model == EMBEDDINGS_MODEL and emb_fields:
        _dropdown(inputs, "embeddings_field", [(f, f) for f in emb_fields], emb_fields[0],
                  label="Embeddings field")
        return
    problem = None
    if model == ZOO:
        _zoo_inputs(ctx, inputs)
        return
    if model == CHECKPOINT:
        path = ctx.params.get("checkpoint")
        roots = path_roots(target)
        prop = inputs.str("checkpoint", required=True, label="Checkpoint",
                          description="A folder with open_clip_config.json and the weights (open_clip's "
                          "local-dir), or a weights file (.pt, .bin, .safetensors) of an open_clip architecture, "
                          f"on the App server under {_roots_text(roots)}. The server's {PATH_ROOTS_ENV} environment "
                          "variable (folders separated by " + repr(os.pathsep) + ") sets these folders; "
                          "unset: the home folder and the dataset's media folders")
        if path:
            try:
                real = checked_path(path, roots)
            except ValueError as e:
                problem = str(e)
            else:
                if os.path.isfile(real):
                    _arch_input(inputs)
                problem = weights_warning(real, arch=ctx.params.get("arch") or None)
            prop.invalid, prop.error_message = problem is not None, problem
    else:
        problem = weights_warning(model)
        if problem is not None:
            inputs.view("weights_warning", types.Warning(
                label="These weights are not available here",
                description=f"{problem} Or choose 'A local open_clip checkpoint'."))


def _zoo_inputs(ctx, inputs):
    """The zoo model (the zoo's models tagged "embeddings", downloaded ones first) and a warning
    when its weights can be had neither from the zoo's folder nor by download."""
    from . import zoo

    names = zoo.embedding_models()
    if not names:
        inputs.view("no_zoo_models", types.Warning(label="The FiftyOne zoo lists no model tagged 'embeddings'"))
        return
    _dropdown(inputs, "zoo_model", [(n, n) for n in names], names[0], label="Zoo model", required=True,
              description="Loaded by FiftyOne (fiftyone.zoo.load_zoo_model: its download, cache and errors); "
              "its embeddings are computed once and the head trains on them")
    name = ctx.params.get("zoo_model") or names[0]
    problem = zoo.zoo_problem(name) if name in names else "Choose a zoo model from the list"
    if problem is not None:
        inputs.view("zoo_weights_warning", types.Warning(label="This zoo model cannot be used here",
                                                         description=problem))


def path_roots(samples=None):
    """The folders (real paths, sorted) under which the App's forms take a path on the server.

    The folders of the ``SEI_FIFTYONE_PATH_ROOTS`` environment variable (:data:`PATH_ROOTS_ENV`,
    ``os.pathsep``-separated) when it is set, else the user's home folder and the media folders
    of ``samples``' dataset (:func:`media_folders`); a default never includes a filesystem root.
    Read on every call, so a change of the variable applies to the next form.
    """
    configured = os.environ.get(PATH_ROOTS_ENV, "")
    if configured.strip():
        roots = [os.path.realpath(os.path.expanduser(p.strip())) for p in configured.split(os.pathsep) if p.strip()]
    else:
        roots = [os.path.realpath(os.path.expanduser("~"))] + (media_folders(samples) if samples is not None else [])
        roots = [r for r in roots if os.path.dirname(r) != r]
    return sorted(set(roots))


def media_folders(samples):
    """The media folders of the dataset of ``samples``: the common parent folder of its local
    samples' files (real paths), or, when that is a filesystem root, each distinct parent folder."""
    dataset = dataset_of(samples)
    paths = [p for p in dataset.distinct("filepath") if isinstance(p, str) and "://" not in p]
    folders = {os.path.realpath(os.path.dirname(p)) for p in paths}
    if not folders:
        return []
    common = os.path.commonpath(sorted(folders))
    if os.path.dirname(common) != common:
        return [common]
    return sorted(f for f in folders if not any(f != g and _under(f, g) for g in folders))


def _under(path, root):
    return os.path.commonpath([path, root]) == root


def _roots_text(roots):
    return ", ".join(roots) if roots else "(no folder: set " + PATH_ROOTS_ENV + ")"


def checked_path(path, roots):
    """The real path of ``path`` if the App may use it: an absolute path of a readable file or
    folder under one of ``roots`` (:func:`path_roots`) once links and ``..`` are resolved
    (``os.path.realpath``). Otherwise one ValueError, whatever the reason (outside the roots,
    missing, not a file or folder, unreadable), so the answer tells nothing about the server's
    files outside the roots."""
    problem = ValueError(f"Not a usable checkpoint: give the absolute path of an open_clip model folder or "
                         f"weights file that the App server can read, under {_roots_text(roots)}")
    if not isinstance(path, str) or not path or "\x00" in path:
        raise problem
    expanded = os.path.expanduser(path)
    if not os.path.isabs(expanded):
        raise problem
    real = os.path.realpath(expanded)
    if not any(_under(real, root) for root in roots):
        raise problem
    if os.path.isfile(real):
        usable = os.access(real, os.R_OK)
    else:
        usable = os.path.isdir(real) and os.access(real, os.R_OK | os.X_OK)
    if not usable:
        raise problem
    return real


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
    if model not in (EMBEDDINGS_MODEL, ZOO):
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
               description=f"Default: {HEAD_DEFAULTS['linear']['epochs']} (linear head) or "
               f"{HEAD_DEFAULTS['prompt']['epochs']} (prompt head, the paper's)")
    thr_prop = _dropdown(inputs, "threshold", [(t, t) for t in THRESHOLD_CHOICES], "auto", label="Threshold",
                         description="'auto': for poe_knn as many as confident learning counts ('cl_count'), "
                                     "zero for SEI; 'aux_mean': the paper's auxiliary-class mean")
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
                    mode=None if params.get("model") in (EMBEDDINGS_MODEL, ZOO) else mode)
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


def _whole(value):
    """A whole number the App sent as a float (``10.0``) as an int; anything else as it is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def compute_kwargs(params, samples=None):
    """The :func:`sei_fiftyone.compute_sei` arguments (after the collection) of the form's parameters.

    The form's rules hold here too, as an operator can be called without its form: the model
    is one of the form's choices, a checkpoint a usable path under :func:`path_roots` of
    ``samples`` (:func:`checked_path`), the brain key at most
    :data:`~sei.constants.MAX_BRAIN_KEY_LENGTH` characters; ValueError otherwise.
    """
    model = params.get("model") or DEFAULT_MODEL
    if model not in choice_names() + [CHECKPOINT, ZOO, EMBEDDINGS_MODEL]:
        raise ValueError(f"model must be one of the form's choices "
                         f"{choice_names() + [CHECKPOINT, ZOO, EMBEDDINGS_MODEL]}; a local checkpoint goes in "
                         "model='checkpoint', checkpoint=<path>, a FiftyOne zoo model in model='zoo', zoo_model=<name>")
    check_brain_key_syntax(params.get("brain_key", "sei"))
    kwargs = dict(
        label_field=params["label_field"], brain_key=params.get("brain_key", "sei"), model=model,
        embeddings_field=params.get("embeddings_field") if model == EMBEDDINGS_MODEL else None,
        epochs=_whole(params["epochs"]) if params.get("epochs") else None,  # 2.5 left for the engine to refuse
        threshold=params.get("threshold", "auto"), head=params.get("head") or "auto",
        score=params.get("score") or AUTO_SCORE,
    )
    if model == CHECKPOINT:
        if not params.get("checkpoint"):
            raise ValueError("model='checkpoint' needs checkpoint=<an open_clip model folder, or a weights file "
                             "with arch=<its open_clip architecture>>")
        kwargs["model"] = checked_path(params["checkpoint"], path_roots(samples))
        if params.get("arch") and os.path.isfile(kwargs["model"]):
            kwargs["arch"] = params["arch"]
    if model == ZOO:
        from . import zoo

        if params.get("zoo_model") not in zoo.embedding_models():
            raise ValueError(f"model='zoo' needs zoo_model=<a FiftyOne zoo model tagged 'embeddings'>, got "
                             f"{params.get('zoo_model')!r}")
        kwargs.update(model=zoo.ZOO_PREFIX + params["zoo_model"], mode="frozen")
    elif model != EMBEDDINGS_MODEL:
        kwargs["mode"] = params.get("mode") or "frozen"
        if params.get("image_size"):
            kwargs["image_size"] = int(params["image_size"])
    if params.get("device") and params["device"] != "auto":
        kwargs["device"] = params["device"]
    return kwargs
