"""Constants shared by the whole package, kept in one place (cleanlab-style)."""

#: Added inside logarithms, as the authors' code does.
EPS = 1e-8

#: Tolerance on probability rows summing to one.
ROW_SUM_ATOL = 1e-3

#: Score used when none is named: the mean probability margin p_y - max_{k!=y} p_k over
#: training (AUM computed on probabilities). On CIFAR-10N (benchmarks/results/detection.md)
#: no candidate beat every established method on every set in both regimes, so the
#: default is the best measured method that works from probabilities alone: AUM leads
#: on AUROC everywhere; its probability form ties it (within 0.9 AUROC points) with a
#: natural zero cutoff and better F1 from scratch. ``"sei"`` stays the paper's method.
DEFAULT_SCORE = "aum_prob"

#: Threshold used when none is named: works without auxiliary samples.
DEFAULT_THRESHOLD = "auto"

THRESHOLD_METHODS = ("auto", "aux_mean", "aux_quantile", "zero", "gmm")

#: Classifier heads of :func:`sei.train` on fixed features: the paper's cosine prompt
#: head and softmax regression.
HEADS = ("prompt", "linear")

#: AUM's percentile of auxiliary (known-bad) samples used as the cutoff.
AUX_QUANTILE = 0.99


# Derived from the score registry (sei/scores.py), read when first asked for so that the
# registry stays the one place a score is defined:
#: SCORE_NAMES: every score a :class:`sei.SEIRecorder` can produce (lower = more likely mislabeled);
#: FEATURE_SCORES: scores that also need the samples' features (see :mod:`sei.neighbors`);
#: SIGNED_SCORES: scores whose sign carries meaning (negative = the model disagrees with the
#: label), so that ``threshold="zero"`` is a principled cutoff for them.
_FROM_REGISTRY = ("SCORE_NAMES", "FEATURE_SCORES", "SIGNED_SCORES")


def __getattr__(name):
    if name in _FROM_REGISTRY:
        from . import scores

        if name == "SIGNED_SCORES":
            return scores.signed_names()
        return scores.names(needs_features=name == "FEATURE_SCORES")
    raise AttributeError(f"module 'sei.constants' has no attribute {name!r}")
