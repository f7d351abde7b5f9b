"""Choosing an SEI run in the App: the one list of a dataset's runs and the one dropdown, shared
by the operators, the comparison operator and the review panel."""

from __future__ import annotations

import fiftyone.operators.types as types

from .core import list_sei_runs


def sei_runs(ctx):
    """The SEI brain runs of the App's dataset (none without a dataset)."""
    return [] if ctx.dataset is None else list_sei_runs(ctx.dataset)


def brain_key_dropdown(ctx, inputs):
    """A required ``brain_key`` dropdown of the dataset's SEI runs; the chosen key, or None (and a
    warning in the form) when the dataset has none."""
    keys = sei_runs(ctx)
    if not keys:
        inputs.view(
            "no_runs",
            types.Warning(
                label="No SEI run on this dataset",
                description="Run 'Compute SEI (find mislabeled samples)' first.",
            ),
        )
        return None
    choices = types.DropdownView()
    for key in keys:
        choices.add_choice(key, label=key)
    inputs.enum("brain_key", choices.values(), default=keys[0], required=True,
                label="SEI run", view=choices)
    return ctx.params.get("brain_key", keys[0])
