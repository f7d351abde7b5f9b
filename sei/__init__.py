"""sei: find mislabeled samples from training dynamics with the Signed Entropy Integral.

The core imports numpy, scipy and scikit-learn only; training (torch, open_clip) is
loaded on first use of :func:`train`.
"""

from . import scores
from .constants import DEFAULT_SCORE, DEFAULT_THRESHOLD
from .entropy import entropy, signed_entropy, softmax
from .noise import (
    confusion_noise,
    pair_noise,
    random_transition_matrix,
    symmetric_noise,
    transition_matrix_noise,
)
from .neighbors import feature_score, knn_indices, knn_label_margin
from .recorder import SEIRecorder
from .thresholds import (
    combine_runs,
    compute_threshold,
    draw_auxiliary,
    flag_issues,
    two_run_auxiliary,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SCORE",
    "DEFAULT_THRESHOLD",
    "FEATURE_SCORES",
    "SCORE_NAMES",
    "SEIRecorder",
    "combine_runs",
    "scores",
    "compute_threshold",
    "confusion_noise",
    "draw_auxiliary",
    "entropy",
    "feature_score",
    "flag_issues",
    "knn_indices",
    "knn_label_margin",
    "pair_noise",
    "random_transition_matrix",
    "signed_entropy",
    "softmax",
    "symmetric_noise",
    "train",
    "transition_matrix_noise",
    "two_run_auxiliary",
]


def __getattr__(name):
    # Lazy: importing the training engine pulls in torch.
    if name == "train":
        from .engine.training import train

        return train
    if name in ("SCORE_NAMES", "FEATURE_SCORES"):  # read from the score registry (sei.scores)
        from . import scores

        return getattr(scores, name)
    raise AttributeError(f"module 'sei' has no attribute {name!r}")
