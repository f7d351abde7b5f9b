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

#: Every score a :class:`sei.SEIRecorder` can produce. Lower = more likely mislabeled.
SCORE_NAMES = (
    "sei",
    "sei_mean",
    "ei",
    "se_last",
    "se_mid",
    "aum",
    "aum_prob",
    "signed_confidence",
    "loss",
    "agreement",
    "mistakenness",
)

#: Scores whose sign carries meaning (negative = the model disagrees with the label),
#: so that ``threshold="zero"`` is a principled cutoff for them.
SIGNED_SCORES = frozenset(
    {"sei", "sei_mean", "se_last", "se_mid", "aum", "aum_prob", "signed_confidence", "aum_prob_knn", "knn_margin"}
)

#: Scores that also need the samples' features (see :mod:`sei.neighbors`).
FEATURE_SCORES = ("aum_prob_knn", "knn_margin")

THRESHOLD_METHODS = ("auto", "aux_mean", "aux_quantile", "zero", "gmm")

#: Classifier heads of :func:`sei.train` on fixed features: the paper's cosine prompt
#: head and softmax regression.
HEADS = ("prompt", "linear")

#: AUM's percentile of auxiliary (known-bad) samples used as the cutoff.
AUX_QUANTILE = 0.99
