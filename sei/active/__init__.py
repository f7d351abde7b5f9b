"""Active label correction: relabel under a budget (Kim, "Active Label Correction Using
Robust Parameter Update and Entropy Propagation", ECCV workshops 2022), plus SEI-guided
selection.

- :class:`RobustWeights`: contribution weights alpha (plug into ``sei.train(sample_weights=)``)
- :class:`KNNGraph`: symmetric Gaussian kNN graph, exact local entropy propagation
- selectors (one interface): Random, Entropy, CorrActive, LossEnt (two variants), DALC, Kim, SEI
- :func:`simulate`: oracle rounds of train -> select -> correct, metrics and plots

Imports numpy, scipy and scikit-learn only (hnswlib / faiss lazily for large graphs).
See the submodules' docstrings for the choices made where the paper is vague.
"""

from .graph import KNNGraph, dense_diffusion_reference
from .selectors import (
    SELECTORS,
    CorrActiveSelector,
    DALCSelector,
    EntropySelector,
    KimSelector,
    LossEntSelector,
    PropagationSelector,
    RandomSelector,
    SEISelector,
    SelectionContext,
    Selector,
    make_selector,
)
from .simulator import (
    Oracle, plot_curves, sei_train_trainer, simulate, summarize, train_linear,
)
from .transition import (
    TRANSITION_ESTIMATES, UniformShareSelector, design_transition_matrix, estimate_transition_matrix,
    regression_transition_matrix,
)
from .propagation import BoundedPropagation
from .weights import RobustWeights

__all__ = [
    "SELECTORS", "TRANSITION_ESTIMATES", "BoundedPropagation", "CorrActiveSelector", "DALCSelector", "EntropySelector",
    "KNNGraph", "KimSelector",
    "LossEntSelector", "Oracle", "PropagationSelector", "RandomSelector", "RobustWeights", "SEISelector",
    "SelectionContext", "Selector", "UniformShareSelector", "dense_diffusion_reference", "design_transition_matrix",
    "estimate_transition_matrix", "regression_transition_matrix",
    "make_selector", "plot_curves", "sei_train_trainer", "simulate", "summarize", "train_linear",
]
