"""The App's label-review panel ``@sei/fiftyone/sei_review``: thin callbacks over :mod:`.review`.

For a chosen SEI run: the seconds of its phases and the progress of delegated runs on the
dataset, a histogram of the scores with the cutoff (a new cutoff re-flags the samples), the
given vs suggested label matrix of the flagged samples (a click shows a cell in the grid),
the review counts and the relabel queue (accept / reject / skip, or *Edit in the App*: the
sample opens in FiftyOne's own label editor, the Annotate tab of the sample view, and the
edit counts as a decision like accept), the comparison with confident learning and FiftyOne
Brain's mistakenness when :mod:`sei_fiftyone.compare` is installed, and a button that runs
the run again on the corrected labels.

State (``ctx.panel.state``): ``brain_key``, ``cutoff``, ``budget``, ``queue`` (sample ids),
``editing`` (sample id -> its label when handed to the editor), ``cell`` and small render
inputs; the plots go to ``ctx.panel.data``.

Every callback and the rendering first repair an interrupted write of a run
(:func:`sei_fiftyone.relabel.recovered`), and what the App sends is checked by one rule
each (:func:`sei_fiftyone.inputs.check_count`, :func:`~sei_fiftyone.inputs.check_sample_ids`):
a bad input is an error notification in the App, never a traceback.
"""

from __future__ import annotations

import functools

import fiftyone.operators as foo
import fiftyone.operators.types as types

from . import review
from .inputs import check_count
from .lease import DatasetBusyError
from .relabel import recovered
from .run_choice import sei_runs
from .runs import phases_text

PLUGIN = "@sei/fiftyone"
COMPUTE_URI = f"{PLUGIN}/compute_sei"
COMPARE_URI = f"{PLUGIN}/compare_with_confident_learning"
#: The App's built-in operator that opens a sample on the Annotate tab of the sample view with a
#: label selected (FiftyOne >= 1.13; its parameters: id, group_id, field_path, label_id).
ANNOTATE_URI = "annotate"
DETECTOR_NAMES = {"sei": "SEI", "cl": "Confident learning", "mistakenness": "FiftyOne mistakenness"}
DEFAULT_BUDGET = 10
SHOWN = 10  # queue items rendered with their buttons


def get_comparison(dataset, brain_key):
    """The confident-learning comparison of a run (:func:`sei_fiftyone.compare.get_comparison`),
    None when there is none; raises ImportError while that module is not installed."""
    from .compare import get_comparison as _get

    return _get(dataset, brain_key)


def _reported(method):
    """A callback: repair an interrupted write first (:func:`~sei_fiftyone.relabel.recovered`),
    and show a bad input (ValueError / TypeError from :mod:`.review` and the input checks)
    as an App notification, as is a dataset another process kept writing for the whole wait."""

    @functools.wraps(method)
    def wrapper(self, ctx):
        try:
            if ctx.dataset is not None:
                recovered(ctx.dataset)
            return method(self, ctx)
        except (ValueError, TypeError, DatasetBusyError) as e:
            ctx.ops.notify(str(e), variant="error")

    return wrapper


def _budget(state):
    """The batch size typed in the panel (:data:`DEFAULT_BUDGET` until one is typed)."""
    return DEFAULT_BUDGET if state.budget is None else check_count(state.budget, "Batch size")


class ReviewPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="sei_review",
            label="SEI label review",
            icon="fact_check",
            help_markdown="Review an SEI run: move the cutoff, inspect what the model would relabel, "
                          "accept or reject its suggestions, compare with confident learning, run again.",
        )

    # -- events ---------------------------------------------------------------------------

    @_reported
    def on_load(self, ctx):
        ctx.ops.split_panel(self.config.name, layout="horizontal")  # the grid beside the panel
        self.on_refresh(ctx)

    @_reported
    def on_refresh(self, ctx):
        self._record_edits(ctx)
        runs = sei_runs(ctx)
        key = ctx.panel.state.brain_key
        self._show_run(ctx, key if key in runs else (runs[0] if runs else None))

    @_reported
    def on_change_dataset(self, ctx):
        ctx.panel.state.clear()
        self.on_refresh(ctx)

    @_reported
    def on_change_run(self, ctx):
        self._show_run(ctx, ctx.params.get("value") or ctx.panel.state.brain_key)

    @_reported
    def on_cutoff(self, ctx):
        review.set_cutoff(ctx.dataset, ctx.panel.state.brain_key, ctx.panel.state.cutoff)
        self._refresh(ctx)
        ctx.ops.reload_samples()

    @_reported
    def on_reset_cutoff(self, ctx):
        ctx.panel.state.cutoff = review.summary(ctx.dataset, ctx.panel.state.brain_key)["computed_cutoff"]
        self.on_cutoff(ctx)

    @_reported
    def on_cell_click(self, ctx):
        given, suggested = ctx.params.get("y"), ctx.params.get("x")
        view = review.cell_view(ctx.dataset, ctx.panel.state.brain_key, given, suggested)
        ctx.panel.state.cell = {"given": given, "suggested": suggested}
        ctx.ops.set_view(view=view)

    @_reported
    def on_next_batch(self, ctx):
        ctx.panel.state.queue = review.next_batch(ctx.dataset, ctx.panel.state.brain_key, _budget(ctx.panel.state))
        self._refresh(ctx)
        ctx.ops.reload_samples()

    @_reported
    def on_show_queue(self, ctx):
        ctx.ops.set_view(view=ctx.dataset.select(review.check_queue(ctx.panel.state.queue), ordered=True))

    @_reported
    def on_accept(self, ctx):
        review.accept(ctx.dataset, ctx.panel.state.brain_key, ctx.params.get("sample_id"))
        self._dequeue(ctx, ctx.params.get("sample_id"))

    @_reported
    def on_reject(self, ctx):
        review.reject(ctx.dataset, ctx.panel.state.brain_key, ctx.params.get("sample_id"))
        self._dequeue(ctx, ctx.params.get("sample_id"))

    @_reported
    def on_edit(self, ctx):
        """Open the sample in FiftyOne's own label editor: the App's built-in ``annotate``
        operator opens the sample view on its Annotate tab with the label selected."""
        request = review.edit_request(ctx.dataset, ctx.panel.state.brain_key, ctx.params.get("sample_id"))
        ctx.panel.state.editing = {**(ctx.panel.state.editing or {}), request["id"]: request["label"]}
        ctx.trigger(ANNOTATE_URI, {k: request[k] for k in ("id", "field_path", "label_id")})

    @_reported
    def on_change_current_sample(self, ctx):
        if ctx.panel.state.editing:  # e.g. the sample view closed after an edit
            self._record_edits(ctx)

    @_reported
    def on_skip(self, ctx):
        ctx.panel.state.queue = review.skip(ctx.panel.state.queue, ctx.params.get("sample_id"))
        self._refresh(ctx)

    @_reported
    def on_rerun(self, ctx):
        params = review.rerun_params(ctx.dataset, ctx.panel.state.brain_key)
        ctx.prompt(COMPUTE_URI, params=params, on_success=self.on_refresh)

    @_reported
    def on_compare(self, ctx):
        ctx.prompt(COMPARE_URI, params={"brain_key": ctx.panel.state.brain_key}, on_success=self.on_refresh)

    @_reported
    def on_show_disagreements(self, ctx):
        ctx.ops.set_view(name=get_comparison(ctx.dataset, ctx.panel.state.brain_key)["view_name"])

    # -- state ----------------------------------------------------------------------------

    def _show_run(self, ctx, brain_key):
        if brain_key != ctx.panel.state.brain_key:
            ctx.panel.state.editing = {}
        ctx.panel.state.brain_key = brain_key
        ctx.panel.state.queue = []
        ctx.panel.state.cell = None
        if brain_key is not None:
            self._refresh(ctx)

    def _record_edits(self, ctx):
        """The edits made in the App's editor since their hand-off, recorded as decisions."""
        state = ctx.panel.state
        if not state.editing or state.brain_key is None:
            return
        decided, state.editing = review.record_edits(ctx.dataset, state.brain_key, state.editing)
        if decided:
            state.queue = [i for i in review.check_queue(state.queue) if i not in decided]
            ctx.ops.notify(f"Recorded the edit of {len(decided)} sample(s) in the App's editor as accepted "
                           "(the previous label kept in '<label_field>_original')", variant="success")
            ctx.ops.reload_samples()

    def _dequeue(self, ctx, sample_id):
        ctx.panel.state.queue = [i for i in review.check_queue(ctx.panel.state.queue) if i != sample_id]
        self._refresh(ctx)
        ctx.ops.reload_samples()

    def _refresh(self, ctx):
        """Recompute the plots (panel data) and the cutoff input from the dataset. The texts
        are rendered from the database (:meth:`render`), so an event answered late with an
        older state never shows stale counts."""
        dataset, key = ctx.dataset, ctx.panel.state.brain_key
        hist = review.score_histogram(dataset, key)
        ctx.panel.data.histogram = hist["data"]
        ctx.panel.data.confusion = review.confusion(dataset, key)["data"]
        ctx.panel.state.cutoff = hist["cutoff"]

    @staticmethod
    def _comparison(dataset, key):
        try:
            comparison = get_comparison(dataset, key)
        except ImportError:
            return {"available": False}
        shown = ("n_disagree", "n_sei_only", "n_cl_only", "n_both", "n_compared", "n_sei_flagged", "n_cl_flagged",
                 "n_mistakenness_flagged", "view_name", "metrics", "timings")
        return {"available": True, "exists": comparison is not None,
                **{k: comparison[k] for k in shown if comparison is not None and k in comparison}}

    # -- layout ---------------------------------------------------------------------------

    def render(self, ctx):
        panel = types.Object()
        if ctx.dataset is not None:
            recovered(ctx.dataset)
        runs = sei_runs(ctx)
        if not runs:
            panel.message("no_runs", "No SEI run on this dataset: run 'Compute SEI' from the operator browser (`).")
            return types.Property(panel, view=types.GridView(orientation="vertical"))
        choices = types.DropdownView()
        for key in runs:
            choices.add_choice(key, label=key)
        panel.enum("brain_key", choices.values(), label="SEI run", view=choices, on_change=self.on_change_run)
        state = ctx.panel.state
        if state.brain_key not in runs:
            return types.Property(panel, view=types.GridView(orientation="vertical"))
        summary = review.summary(ctx.dataset, state.brain_key)
        self._render_phases(panel, summary["timings"], review.delegated_runs(ctx.dataset))
        self._render_cutoff(panel, summary)
        try:  # the state comes from the App: what a callback would refuse is not shown
            cell = state.cell
            if cell and not isinstance(cell, dict):
                raise ValueError(f"A cell of the matrix is a pair of class names, got {cell!r}"[:120])
            cell = cell and {"given": cell.get("given"), "suggested": cell.get("suggested")}
            cell = cell and {**cell, "count": len(review.cell_view(ctx.dataset, state.brain_key, **cell))}
        except (TypeError, ValueError) as e:
            cell = None
            panel.view("cell_error", types.Error(label="Grid cell not shown", description=str(e)))
        self._render_confusion(panel, cell)
        try:
            items = review.queue_items(ctx.dataset, state.brain_key, state.queue)[:SHOWN]
        except (TypeError, ValueError) as e:
            items = []
            panel.view("queue_error", types.Error(label="Relabel queue not shown (press 'Next batch')",
                                                  description=str(e)))
        self._render_queue(panel, state, items)
        self._render_compare(panel, self._comparison(ctx.dataset, state.brain_key))
        panel.btn("rerun", label="Run again on the corrected labels", icon="replay", variant="outlined",
                  on_click=self.on_rerun)
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=2, padding=1))

    def _render_phases(self, panel, timings, delegated):
        if timings:
            panel.md(f"Run phases: {phases_text(timings)}", name="phases_md")
        for k, run in enumerate(delegated):
            done = "" if run["progress"] is None else f" ({100 * run['progress']:.0f} %)"
            panel.md(f"Delegated `{run['operator']}` {run['state']}: {run['label'] or 'waiting for a worker'}{done}",
                     name=f"delegated_{k}")
        if delegated:
            panel.btn("refresh_progress", label="Refresh progress", icon="refresh", variant="outlined",
                      on_click=self.on_refresh)

    def _render_cutoff(self, panel, c):
        panel.md(f"**{c['flagged']}** flagged · **{c['reviewed']}** reviewed · **{c['accepted']}** accepted "
                 f"· {c['rejected']} rejected", name="counts_md")
        panel.float("cutoff", label="Cutoff", description=f"Samples scoring below it are flagged (now "
                    f"{c['cutoff']:.4g}; the run computed {c['computed_cutoff']:.4g})")
        row = panel.h_stack("cutoff_buttons", gap=2)
        row.btn("apply_cutoff", label="Apply cutoff", variant="contained", on_click=self.on_cutoff)
        row.btn("reset_cutoff", label="Reset to the run's cutoff", variant="outlined", on_click=self.on_reset_cutoff)
        panel.plot("histogram", layout=review.histogram_layout(c["cutoff"], c["score_name"]),
                   config={"displayModeBar": False})

    def _render_confusion(self, panel, cell):
        panel.md("**Given label (rows) vs suggested label (columns)** of the flagged samples; "
                 "click a cell to show its samples.", name="confusion_title")
        panel.plot("confusion", on_click=self.on_cell_click, config={"displayModeBar": False},
                   layout={"height": 320, "margin": {"t": 10, "b": 70, "l": 80, "r": 10},
                           "xaxis": {"title": {"text": "suggested"}},
                           "yaxis": {"title": {"text": "given"}, "autorange": "reversed"}})
        if cell:
            panel.md(f"Grid: given `{cell['given']}`, suggested `{cell['suggested']}`: **{cell['count']}** "
                     "flagged samples now", name="cell_md")

    def _render_queue(self, panel, state, items):
        panel.md("**Relabel queue**: the next batch by active label correction", name="queue_title")
        panel.int("budget", label="Batch size", default=DEFAULT_BUDGET, min=1)
        row = panel.h_stack("queue_row", gap=2, align_y="center")
        row.btn("next_batch", label="Next batch", icon="playlist_add", variant="contained",
                on_click=self.on_next_batch)
        if state.queue:
            row.btn("show_queue", label="Show queue in grid", variant="outlined", on_click=self.on_show_queue)
        editing = state.editing or {}
        for k, item in enumerate(items):
            line = panel.h_stack(f"item_{k}", gap=1, align_y="center")
            conf = "" if item["confidence"] is None else f" ({item['confidence']:.2f})"
            note = " · *editing in the App*" if item["id"] in editing else ""
            line.md(f"`{item['file']}` given **{item['given']}** → **{item['suggested']}**{conf}{note}", name="text")
            for action, handler in (("Accept", self.on_accept), ("Reject", self.on_reject), ("Skip", self.on_skip),
                                    ("Edit in the App", self.on_edit)):
                line.btn(action.split()[0].lower(), label=action, on_click=handler, params={"sample_id": item["id"]},
                         variant="contained" if action == "Accept" else "outlined")

    def _render_compare(self, panel, comparison):
        panel.md("**Compare with confident learning**", name="compare_title")
        if not comparison.get("available"):
            panel.message("compare_na", "Not available: this install has no sei_fiftyone.compare.")
            return
        if comparison.get("exists"):
            text = f"**{comparison['n_disagree']}** samples flagged by only one of SEI and confident learning"
            if "n_sei_only" in comparison:
                text += f" ({comparison['n_sei_only']} by SEI only, {comparison['n_cl_only']} by CL only)"
            text += "."
            panel.md(text, name="compare_text")
            panel.md(detectors_table(comparison), name="compare_table")
            if comparison.get("timings"):
                panel.md(f"Comparison phases: {phases_text(comparison['timings'])}", name="compare_phases")
            panel.btn("show_disagreements", label="Show disagreements", variant="outlined",
                      on_click=self.on_show_disagreements)
        label = "Compare again" if comparison.get("exists") else "Compare with confident learning"
        panel.btn("compare", label=label, variant="outlined", on_click=self.on_compare)


def detectors_table(comparison):
    """The comparison's detectors as a markdown table: samples flagged and, with trusted labels,
    precision, recall, F1 and AUROC of SEI, confident learning and FiftyOne Brain's mistakenness."""
    metrics = comparison.get("metrics") or {}
    flagged = {"sei": comparison.get("n_sei_flagged"), "cl": comparison.get("n_cl_flagged"),
               "mistakenness": comparison.get("n_mistakenness_flagged")}
    rows = ["| detector | flagged | precision | recall | F1 | AUROC |", "|---|---:|---:|---:|---:|---:|"]
    for key, name in DETECTOR_NAMES.items():
        if flagged[key] is None and key not in metrics:
            continue  # a comparison stored before mistakenness
        m = metrics.get(key)
        cells = [f"{m[k]:.3f}" for k in ("precision", "recall", "f1", "auroc")] if m else ["–"] * 4
        rows.append(f"| {name} | {'–' if flagged[key] is None else flagged[key]} | " + " | ".join(cells) + " |")
    if not metrics:
        rows.append("\nName a trusted label field when comparing to see precision, recall, F1 and AUROC.")
    return "\n".join(rows)
