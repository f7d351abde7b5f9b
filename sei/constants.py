"""Constants shared by the whole package, kept in one place (cleanlab-style)."""

#: Added inside logarithms, as the authors' code does.
EPS = 1e-8

#: Tolerance on probability rows summing to one.
ROW_SUM_ATOL = 1e-3

#: ``score="auto"``, the default of every entry point (:func:`sei.train`,
#: ``sei_cleanlab.find_label_issues`` / ``get_label_quality_scores``, the Datalab issue type,
#: ``sei_fiftyone.compute_sei``): :func:`default_score` picks the score by whether the samples'
#: features are at hand.
AUTO_SCORE = "auto"

#: Score of ``score="auto"`` without features (a history alone): chosen by the rule in
#: ``benchmarks/defaults_rule.py`` on the CIFAR-10N cells of ``benchmarks/results/defaults.md``.
DEFAULT_SCORE = "aum_prob"

#: Score of ``score="auto"`` with features (``features=`` / ``neighbors=`` given; ``sei.train``
#: on embeddings or frozen images): chosen by the same rule among all candidates.
DEFAULT_FEATURE_SCORE = "aum_prob"

#: Threshold used when none is named: works without auxiliary samples.
DEFAULT_THRESHOLD = "auto"

THRESHOLD_METHODS = ("auto", "aux_mean", "aux_quantile", "zero", "gmm")

#: Classifier heads of :func:`sei.train` on fixed features: the paper's cosine prompt
#: head and softmax regression.
HEADS = ("prompt", "linear")

#: Head of :func:`sei.train` and ``sei_fiftyone.compute_sei`` when none is named: the head of
#: the rule's with-features choice (``benchmarks/results/defaults.md``).
DEFAULT_HEAD = "prompt"

#: AUM's percentile of auxiliary (known-bad) samples used as the cutoff.
AUX_QUANTILE = 0.99


def default_score(has_features: bool) -> str:
    """The score ``score="auto"`` stands for: :data:`DEFAULT_FEATURE_SCORE` when the samples'
    features are at hand, else :data:`DEFAULT_SCORE`.

    >>> default_score(False) == DEFAULT_SCORE, default_score(True) == DEFAULT_FEATURE_SCORE
    (True, True)
    """
    return DEFAULT_FEATURE_SCORE if has_features else DEFAULT_SCORE


def resolve_score(score, has_features: bool, threshold=None):
    """``score`` as an entry point uses it: ``"auto"`` becomes :func:`default_score`, any other
    value is returned as it is (and checked by the caller against the registry).

    With a ``threshold`` computed from the auxiliary samples (``"aux_mean"``, ``"aux_quantile"``),
    ``"auto"`` keeps to the scores of the dynamics alone: the auxiliary samples do not calibrate
    the neighbours' labels.
    """
    if not (isinstance(score, str) and score == AUTO_SCORE):
        return score
    aux = isinstance(threshold, str) and threshold.startswith("aux")
    return default_score(has_features and not aux)


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
