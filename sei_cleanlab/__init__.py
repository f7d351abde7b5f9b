"""cleanlab-style API for SEI: numpy in, numpy out (no torch or fiftyone import).

- :func:`find_label_issues` -> boolean mask, or ranked indices
- :func:`get_label_quality_scores` -> (N,) scores in [0, 1], higher = cleaner
- :func:`get_pred_probs_list` -> the per-epoch ``pred_probs`` of a run, for cleanlab's ensemble scorer
- :func:`compare_with_confident_learning` -> a DataFrame next to cleanlab's own method
- a Datalab issue type ``"sei"`` registered on import
"""

from sei.compat import import_cleanlab

import_cleanlab()  # before any cleanlab import: it would silence every warning (sei.compat)

from . import datalab as _datalab  # noqa: E402,F401  (registers the "sei" Datalab issue type)
from sei.metrics import detection_metrics  # noqa: E402  (the one home of the metrics, re-exported here)

from .compare import compare_with_confident_learning  # noqa: E402
from .datalab import SEIIssueManager  # noqa: E402
from .ensemble import get_pred_probs_list  # noqa: E402
from .filter import find_label_issues  # noqa: E402
from .rank import get_label_quality_scores  # noqa: E402

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
