"""The App operator ``compare_with_confident_learning``: a form over
:func:`sei_fiftyone.compare.compare_with_confident_learning` (confident learning and FiftyOne
Brain's mistakenness beside the SEI run) that opens the saved view of the samples where SEI and
confident learning disagree. Delegated, it reports its phases with ``ctx.set_progress``."""

from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .compare import compare_with_confident_learning, get_comparison
from .delegation import Delegable, delegate_input
from .inputs import check_count, classification_fields, embeddings_fields
from .run_choice import brain_key_dropdown
from .runs import field_names, phases_text, run_outputs, validate_comparison


def _dropdown(inputs, name, fields, label, description):
    choices = types.DropdownView()
    for field in fields:
        choices.add_choice(field, label=field)
    inputs.enum(name, choices.values(), required=False, label=label, description=description, view=choices)


class CompareWithConfidentLearning(Delegable, foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="compare_with_confident_learning",
            label="Compare SEI run with confident learning",
            description="Run cleanlab's find_label_issues on out-of-sample probabilities of the run's samples "
            "and FiftyOne Brain's compute_mistakenness on the run's predictions, and show where they and SEI "
            "disagree",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        brain_key = brain_key_dropdown(ctx, inputs)
        if brain_key is None:
            return types.Property(inputs)
        try:  # one rule for the form and the Python function
            validate_comparison(ctx.dataset, brain_key)
        except ValueError as e:
            prop = inputs.get_property("brain_key")
            prop.invalid, prop.error_message = True, str(e)
        config = ctx.dataset.get_brain_info(brain_key).config
        emb = config.embeddings_field
        arrays = [f for f in embeddings_fields(ctx.dataset) if f != emb]
        kfold = f"K-fold logistic regression on the run's embeddings field '{emb}'" if emb else None
        if arrays:
            _dropdown(inputs, "probs_field", arrays, "Probabilities field (optional)",
                      "Out-of-sample predicted probabilities, one per class of the run, in its class order. "
                      f"Empty: {kfold or 'needs a run with stored embeddings'}")
        elif kfold:
            inputs.view("kfold", types.Notice(label=f"Probabilities: {kfold}"))
        if emb is None and not ctx.params.get("probs_field"):
            inputs.view("no_embeddings", types.Warning(
                label=f"Run '{brain_key}' stored no embeddings",
                description="Choose a probabilities field, or rerun Compute SEI with an embeddings field "
                "(compute_sei(..., embeddings_field='<new field>') stores the run's image features)."))
        outputs = run_outputs(ctx.dataset) if ctx.dataset is not None else set()
        trusted = [f for f in classification_fields(ctx.dataset) if f != config.label_field and f not in outputs]
        _dropdown(inputs, "trusted_label_field", trusted, "Trusted label field (optional)",
                  "Labels known to be right: adds precision, recall, F1 and AUROC of SEI, confident learning "
                  "and FiftyOne Brain's mistakenness")
        chosen = ctx.params.get("trusted_label_field")
        predictions = [f for f in trusted if f != chosen]
        if predictions:
            _dropdown(inputs, "predictions_field", predictions, "Predictions field for mistakenness (optional)",
                      f"A Classification field of model predictions with confidences for FiftyOne Brain's "
                      f"compute_mistakenness. Empty: the run's own predictions '{field_names(brain_key)[2]}'")
        inputs.int("folds", default=5, min=2, label="Folds", description="Cross-validation folds")
        previous = get_comparison(ctx.dataset, brain_key)
        if previous is not None:
            inputs.view("replaces", types.Notice(
                label=f"Replaces the previous comparison ({previous['n_disagree']} disagreements)"))
        delegate_input(inputs, "the comparison (large datasets)")
        return types.Property(inputs, view=types.View(label="Compare with confident learning"))

    def execute(self, ctx):
        result = compare_with_confident_learning(
            ctx.dataset, ctx.params["brain_key"], probs_field=ctx.params.get("probs_field") or None,
            trusted_label_field=ctx.params.get("trusted_label_field") or None,
            predictions_field=ctx.params.get("predictions_field") or None,
            folds=5 if ctx.params.get("folds") is None else check_count(ctx.params["folds"], "folds", minimum=2),
            # FiftyOne's way for a delegated operator to report progress (the App shows it on its runs)
            progress=(lambda f, label: ctx.set_progress(progress=f, label=label)) if ctx.delegated else None)
        if not ctx.delegated:
            ctx.ops.reload_dataset()
            # By stages, not by name: the App's list of saved views predates this comparison
            ctx.ops.set_view(view=ctx.dataset.load_saved_view(result["view_name"]))
        out = {k: result[k] for k in ("view_name", "n_compared", "n_sei_flagged", "n_cl_flagged",
                                      "n_mistakenness_flagged", "n_disagree")}
        for name, m in result.get("metrics", {}).items():
            out[f"{name}_metrics"] = metrics_text(m)
        out["timings"] = phases_text(result.get("timings"))
        return out

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("view_name", label="Saved view of the disagreements")
        outputs.int("n_disagree", label="Samples flagged by one detector only")
        outputs.int("n_compared", label="Samples compared")
        outputs.int("n_sei_flagged", label="Flagged by SEI")
        outputs.int("n_cl_flagged", label="Flagged by confident learning")
        outputs.int("n_mistakenness_flagged", label="Flagged by FiftyOne Brain's mistakenness (> 0.5)")
        if ctx.params.get("trusted_label_field"):
            outputs.str("sei_metrics", label="SEI against the trusted labels")
            outputs.str("cl_metrics", label="Confident learning against the trusted labels")
            outputs.str("mistakenness_metrics", label="Mistakenness against the trusted labels")
        outputs.str("timings", label="Seconds per phase")
        return types.Property(outputs, view=types.View(label="SEI vs confident learning vs mistakenness"))


def metrics_text(m):
    """``"precision 0.812, recall 0.640, F1 0.716, AUROC 0.884"``: one detector's metrics, as the
    operator's output and the review panel show them."""
    return f"precision {m['precision']:.3f}, recall {m['recall']:.3f}, F1 {m['f1']:.3f}, AUROC {m['auroc']:.3f}"
