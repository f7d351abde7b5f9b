"""Running an operator in the App or on a delegated-operations worker: one form checkbox, one rule.

Every ``@sei/fiftyone`` operator that may take long (compute, compare, suggest) offers the
``delegate`` checkbox (:func:`delegate_input`) and resolves delegation from it (:class:`Delegable`).
"""

from __future__ import annotations

#: The form parameter (also what the review panel sets when it prompts a run again).
DELEGATE = "delegate"


class Delegable:
    """Mixin of an operator whose form's ``delegate`` checkbox forces delegated execution."""

    def resolve_delegation(self, ctx):
        # True forces delegation; None leaves the choice to the caller (App or API)
        return True if ctx.params.get(DELEGATE, False) else None


def delegate_input(inputs, what):
    """The ``delegate`` checkbox; ``what`` is queued ("the run", "the comparison", ...)."""
    inputs.bool(DELEGATE, default=False, label="Delegate execution",
                description=f"Queue {what} for a delegated-operations worker")
