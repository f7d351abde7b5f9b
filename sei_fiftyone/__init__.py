"""FiftyOne adapter for SEI: find mislabeled images from the App or from Python.

    import sei_fiftyone as sfo
    results = sfo.compute_sei(dataset, "ground_truth", epochs=10)
    view = sfo.sorted_view(dataset)          # flagged samples, most likely mislabeled first
    sfo.suggest_relabels(dataset, budget=50) # tag a batch for review
    sfo.apply_suggestions(dataset.match_tags("sei_relabel"))
    sfo.compare_with_confident_learning(dataset, "sei", trusted_label_field="clean")
    [c.name for c in sfo.MODEL_CHOICES]     # the model names of compute_sei and the App's form

This file is also the entry point of the App plugin ``@sei/fiftyone`` (``fiftyone.yml``
beside it; install with ``python -m sei_fiftyone install-plugin``). FiftyOne loads it by
path under another module name, so it imports with absolute names only.
"""

import importlib

# Lazy, so that `sei_fiftyone.db` can start a database before fiftyone is imported
# (FiftyOne reads FIFTYONE_DATABASE_URI once, on import).
_EXPORTS = {
    "DatasetBusyError": "sei_fiftyone.lease",
    "MODEL_CHOICES": "sei_fiftyone.model_choices",
    "SEI": "sei_fiftyone.runs",
    "SEIConfig": "sei_fiftyone.runs",
    "SEIResults": "sei_fiftyone.runs",
    "compare_with_confident_learning": "sei_fiftyone.compare",
    "compute_sei": "sei_fiftyone.core",
    "get_comparison": "sei_fiftyone.compare",
    "field_names": "sei_fiftyone.runs",
    "list_sei_runs": "sei_fiftyone.core",
    "recover_interrupted_writes": "sei_fiftyone.writeback",
    "saved_view_name": "sei_fiftyone.runs",
    "sorted_view": "sei_fiftyone.core",
    "validate_brain_key": "sei_fiftyone.runs",
    "apply_suggestions": "sei_fiftyone.relabel",
    "suggest_relabels": "sei_fiftyone.relabel",
    "install_plugin": "sei_fiftyone.plugin",
    "plugin_dir": "sei_fiftyone.plugin",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sei_fiftyone' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = [
    "DatasetBusyError",
    "MODEL_CHOICES",
    "SEI",
    "SEIConfig",
    "SEIResults",
    "apply_suggestions",
    "compare_with_confident_learning",
    "compute_sei",
    "field_names",
    "get_comparison",
    "install_plugin",
    "list_sei_runs",
    "plugin_dir",
    "recover_interrupted_writes",
    "saved_view_name",
    "sorted_view",
    "suggest_relabels",
    "validate_brain_key",
]


def register(plugin):
    """Plugin entry point: registers the ``@sei/fiftyone`` operators."""
    from sei_fiftyone.operators import register as _register

    _register(plugin)
