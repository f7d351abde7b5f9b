"""The ``@sei/fiftyone`` App operators: thin forms over :mod:`sei_fiftyone`'s Python API.

Parameters carry the names of the Python arguments (``label_field``, ``brain_key``,
``model``, ``embeddings_field``, ``mode``, ``image_size``, ``device``, ``epochs``,
``threshold``, ``budget``, ...). The compute form's fields live in
:mod:`sei_fiftyone.compute_form`, its model list in :mod:`sei_fiftyone.model_choices`.
"""

from __future__ import annotations

import queue
import threading

import fiftyone.operators as foo
import fiftyone.operators.types as types

from sei.constants import DEFAULT_FEATURE_SCORE, DEFAULT_SCORE

from . import core
from .compute_form import SCORE_CHOICES, THRESHOLD_CHOICES, compute_kwargs, model_inputs, target_input  # noqa: F401
from .compute_form import training_inputs
from .delegation import Delegable, delegate_input
from .inputs import check_count, check_sample_ids, classification_fields
from .relabel import DEFAULT_TAG, apply_suggestions, check_tag, suggest_relabels
from .run_choice import brain_key_dropdown
from .runs import check_brain_key_syntax, run_outputs, validate_brain_key


def target_samples(ctx):
    """The operator's target view, the selected sample ids checked first
    (:func:`~sei_fiftyone.inputs.check_sample_ids`): a forged selection is a clear error."""
    if ctx.selected and ctx.dataset is not None:
        check_sample_ids(ctx.dataset, ctx.selected, "selected sample")
    return ctx.target_view()


def _brain_key_input(ctx, inputs):
    """The run key, checked with the rule compute_sei applies (validate_brain_key)."""
    brain_key = ctx.params.get("brain_key", "sei")
    overwrite = bool(ctx.params.get("overwrite", False))
    prop = inputs.str("brain_key", default="sei", label="Brain key",
                      description="Name of the run and of its score field")
    try:  # letters, digits and _, at most MAX_BRAIN_KEY_LENGTH characters
        check_brain_key_syntax(brain_key)
    except ValueError as e:
        prop.invalid, prop.error_message = True, str(e)
        return
    if brain_key in (ctx.dataset.list_brain_runs() if ctx.dataset is not None else []) and not overwrite:
        prop.invalid = True
        prop.error_message = f"Brain key '{brain_key}' already exists; choose another or tick 'overwrite'"
    elif ctx.dataset is not None:
        try:  # one rule for the form, execute() and compute_sei
            validate_brain_key(ctx.dataset, brain_key)
        except ValueError as e:
            prop.invalid = True
            prop.error_message = str(e)


class ComputeSEI(Delegable, foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="compute_sei",
            label="Compute SEI (find mislabeled samples)",
            description=(f"Train on a label field and score every sample from its training dynamics (default "
                         f"score: {DEFAULT_FEATURE_SCORE} on features, {DEFAULT_SCORE} when fine-tuning; "
                         "'sei' is the paper's Signed Entropy Integral)"),
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        target = target_input(ctx, inputs)
        label_fields = classification_fields(target) if ctx.dataset is not None else []
        outputs = run_outputs(ctx.dataset) if ctx.dataset is not None else set()
        label_fields = [f for f in label_fields if f not in outputs]
        if not label_fields:
            inputs.view(
                "no_label_field",
                types.Warning(
                    label="No Classification field",
                    description="SEI checks a Classification label field; this dataset has none. "
                    "Add one (e.g. 'ground_truth') and reopen this form.",
                ),
            )
            return types.Property(inputs, view=types.View(label="Compute SEI"))

        choices = types.DropdownView()
        for name in label_fields:
            choices.add_choice(name, label=name)
        default_field = "ground_truth" if "ground_truth" in label_fields else label_fields[0]
        inputs.enum("label_field", choices.values(), default=default_field, required=True,
                    label="Label field", description="The Classification labels to check", view=choices)

        model_inputs(ctx, inputs, target)
        training_inputs(ctx, inputs)
        _brain_key_input(ctx, inputs)
        inputs.bool("overwrite", default=False, label="Overwrite an existing run with this key")
        delegate_input(inputs, "the run")
        return types.Property(inputs, view=types.View(label="Compute SEI"))

    def execute(self, ctx):
        target = target_samples(ctx)
        kwargs = compute_kwargs(ctx.params, target)
        validate_brain_key(target, kwargs["brain_key"])  # refused before any training
        if ctx.delegated:
            results = core.compute_sei(
                target, progress=lambda f, label: ctx.set_progress(progress=f, label=label), **kwargs
            )
        else:
            updates = queue.Queue()
            outcome = {}

            def work():
                try:
                    outcome["results"] = core.compute_sei(
                        target, progress=lambda f, label: updates.put((f, label)), **kwargs
                    )
                except BaseException as e:  # re-raised in the operator's thread
                    outcome["error"] = e
                updates.put(None)

            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            while True:
                item = updates.get()
                if item is None:
                    break
                yield ctx.ops.set_progress(progress=item[0], label=item[1])
            thread.join()
            if "error" in outcome:
                raise outcome["error"]
            results = outcome["results"]
            yield ctx.ops.set_progress(progress=1.0, label="done")
        brain_key = kwargs["brain_key"]
        if not ctx.delegated:
            yield ctx.ops.reload_dataset()
            # By stages, not by name: the App's list of saved views predates this run
            yield ctx.ops.set_view(view=core.sorted_view(target, brain_key))
        yield {"brain_key": brain_key, "num_flagged": results.num_flagged,
               "num_samples": results.num_samples, "threshold": results.threshold}


class OpenSEIView(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="open_sei_view",
            label="Open SEI view (most likely mislabeled first)",
            dynamic=True,
            view_target=False,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        brain_key_dropdown(ctx, inputs)
        inputs.bool("flagged_only", default=True, label="Flagged samples only")
        return types.Property(inputs, view=types.View(label="Open SEI view"))

    def execute(self, ctx):
        brain_key = ctx.params["brain_key"]
        flagged_only = bool(ctx.params.get("flagged_only", True))
        ctx.ops.set_view(view=core.sorted_view(ctx.dataset, brain_key, flagged_only=flagged_only))
        return {"brain_key": brain_key}


class SuggestRelabels(Delegable, foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="suggest_relabels",
            label="Suggest samples to relabel (SEI)",
            dynamic=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        ctx.target_view()
        brain_key = brain_key_dropdown(ctx, inputs)
        if brain_key is None:
            return types.Property(inputs)
        budget = inputs.int("budget", default=100, min=1, label="Budget",
                            description="How many samples to tag for relabelling")
        tag = inputs.str("tag", default=DEFAULT_TAG, label="Tag")
        for prop, check in ((budget, lambda: check_count(ctx.params.get("budget", 100))),
                            (tag, lambda: check_tag(ctx.dataset, brain_key, ctx.params.get("tag", DEFAULT_TAG)))):
            try:  # the rules execute() applies
                check()
            except ValueError as e:
                prop.invalid, prop.error_message = True, str(e)
        inputs.bool("flagged_only", default=False, label="Only samples flagged as mislabeled")
        delegate_input(inputs, "the selection")
        return types.Property(inputs, view=types.View(label="Suggest relabels"))

    def execute(self, ctx):
        ids = suggest_relabels(
            target_samples(ctx), ctx.params["brain_key"], budget=check_count(ctx.params.get("budget", 100)),
            tag=ctx.params.get("tag", DEFAULT_TAG), flagged_only=bool(ctx.params.get("flagged_only", False)),
        )
        if not ctx.delegated:
            ctx.ops.reload_dataset()
        return {"num_tagged": len(ids), "tag": ctx.params.get("tag", DEFAULT_TAG)}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("num_tagged", label="Samples tagged")
        outputs.str("tag", label="Tag")
        return types.Property(outputs)


class ApplySuggestions(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="apply_suggestions",
            label="Apply SEI suggestions to labels",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        ctx.target_view()
        if brain_key_dropdown(ctx, inputs) is None:
            return types.Property(inputs)
        inputs.bool("only_tagged", default=not bool(ctx.selected), label="Only tagged samples")
        inputs.str("tag", default=DEFAULT_TAG, label="Tag")
        inputs.view("note", types.Notice(
            label="The previous label is kept in '<label_field>_original'."))
        return types.Property(inputs, view=types.View(label="Apply suggestions"))

    def execute(self, ctx):
        view = target_samples(ctx)
        if ctx.params.get("only_tagged", not bool(ctx.selected)):
            view = view.match_tags(ctx.params.get("tag", DEFAULT_TAG))
        changed = apply_suggestions(view, ctx.params["brain_key"])
        ctx.ops.reload_dataset()
        return {"num_changed": changed}


OPERATORS = (ComputeSEI, OpenSEIView, SuggestRelabels, ApplySuggestions)


def register(plugin):
    for op in OPERATORS:
        plugin.register(op)
    from .panel import ReviewPanel  # the label-review panel (sei_fiftyone/panel.py)

    plugin.register(ReviewPanel)
    from .compare_operator import CompareWithConfidentLearning  # sei_fiftyone/compare_operator.py

    plugin.register(CompareWithConfidentLearning)
