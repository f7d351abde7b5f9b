"""FiftyOne adapter for SEI: find mislabeled images from the App or from Python.

    import sei_fiftyone as sfo
    results = sfo.compute_sei(dataset, "ground_truth", epochs=10)
    view = sfo.sorted_view(dataset)          # flagged samples, most likely mislabeled first
    sfo.suggest_relabels(dataset, budget=50) # tag a batch for review
    sfo.apply_suggestions(dataset.match_tags("sei_relabel"))

This file is also the entry point of the App plugin ``@sei/fiftyone`` (``fiftyone.yml``
beside it; install with ``python -m sei_fiftyone install-plugin``). FiftyOne loads it by
path under another module name, so it imports with absolute names only.
"""

from sei_fiftyone.core import (
    SEI,
    SEIConfig,
    SEIResults,
    compute_sei,
    field_names,
    list_sei_runs,
    saved_view_name,
    sorted_view,
)
from sei_fiftyone.relabel import apply_suggestions, suggest_relabels
from sei_fiftyone.plugin import install_plugin, plugin_dir

__all__ = [
    "SEI",
    "SEIConfig",
    "SEIResults",
    "apply_suggestions",
    "compute_sei",
    "field_names",
    "install_plugin",
    "list_sei_runs",
    "plugin_dir",
    "saved_view_name",
    "sorted_view",
    "suggest_relabels",
]


def register(plugin):
    """Plugin entry point: registers the ``@sei/fiftyone`` operators."""
    from sei_fiftyone.operators import register as _register

    _register(plugin)
