"""cleanlab-style API for SEI: numpy in, numpy out (no torch or fiftyone import).

- :func:`find_label_issues` -> boolean mask, or ranked indices
- :func:`get_label_quality_scores` -> (N,) scores in [0, 1], higher = cleaner
- :func:`get_pred_probs_list` -> the per-epoch ``pred_probs`` of a run, for cleanlab's ensemble scorer
- :func:`compare_with_confident_learning` -> a DataFrame next to cleanlab's own method
- a Datalab issue type ``"sei"`` registered on import
"""

from . import datalab as _datalab  # noqa: F401  (registers the "sei" Datalab issue type)
from sei.metrics import detection_metrics  # the one home of the metrics, re-exported here

from .compare import compare_with_confident_learning
from .datalab import SEIIssueManager
from .ensemble import get_pred_probs_list
from .filter import find_label_issues
from .rank import get_label_quality_scores

__all__ = [
    "SEIIssueManager",
    "compare_with_confident_learning",
    "detection_metrics",
    "find_label_issues",
    "get_pred_probs_list",
    "get_label_quality_scores",
    "select_for_relabeling",
]


def __getattr__(name):
    if name == "select_for_relabeling":
        from .active import select_for_relabeling

        return select_for_relabeling
    raise AttributeError(f"module 'sei_cleanlab' has no attribute {name!r}")
