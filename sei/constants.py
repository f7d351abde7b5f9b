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

#: Score of ``score="auto"`` without features (a probability history alone): the mean probability
#: margin p_y - max_{k!=y} p_k with a zero cutoff. Chosen by the rule in ``benchmarks/defaults_rule.py``
#: on the 12 CIFAR-10N cells of ``benchmarks/results/defaults.md`` among what a history alone allows (no
#: logits, no auxiliary samples). F1 >= confident learning's in 6 of 12 cells (won: regime a ``worse``,
#: the three regime b cells; lost: regime a ``aggre`` and ``random1``, by 1.3-1.6 F1 points); AUROC
#: never 1 point above max(CL, AUM): 0.4-0.7 points below AUM on logits in regime a, tied with it in
#: regime b. Where logits and auxiliary samples exist, ``score="aum", threshold="aux_quantile"`` (the
#: rule's pick without that restriction) meets the F1 goal in all 12 cells.
DEFAULT_SCORE = "aum_prob"

#: Score of ``score="auto"`` with features (``features=`` / ``neighbors=`` given; ``sei.train`` on
#: embeddings or frozen images): the product of experts of the epoch-averaged log-probabilities and
#: the neighbours' label shares (the benchmark's ``"poe"``), zero cutoff; the same rule's choice among
#: all candidates. Won: both goals in the three regime b cells (AUROC +2.8 to +4.0 points over AUM,
#: F1 +12.7 to +18.0 over CL), F1 >= CL in regime a ``worse``; lost: the AUROC goal in regime a (0.2-0.3
#: points above AUM, not 1) and F1 in regime a ``aggre`` / ``random1`` (1.5-2.0 points below CL). A
#: recorder that did not keep the per-class log-probabilities it needs falls back, with a warning,
#: to :data:`DEFAULT_STREAMING_FEATURE_SCORE`; fewer than 21 samples to :data:`DEFAULT_SCORE` (see
#: :func:`sei.scores.resolve_score`).
DEFAULT_FEATURE_SCORE = "poe_knn"

#: Score of ``score="auto"`` with features and a recorder that kept per-sample sums only (no
#: ``extra_scores="poe_knn"``): the mean of ``"aum_prob"`` and the neighbours' label margin, which
#: needs nothing per class, so the features the user passed are still read.
DEFAULT_STREAMING_FEATURE_SCORE = "aum_prob_knn"

#: Threshold used when none is named: works without auxiliary samples.
DEFAULT_THRESHOLD = "auto"

#: Every threshold method by name (:func:`sei.compute_threshold`; a number is a cutoff used as is).
THRESHOLD_METHODS = ("auto", "aux_mean", "aux_quantile", "zero", "gmm")

#: The methods computed from the auxiliary samples (the pseudo-class's known-bad samples).
AUX_THRESHOLDS = ("aux_mean", "aux_quantile")


def is_aux_threshold(threshold) -> bool:
    """Whether ``threshold`` is computed from the auxiliary samples (:data:`AUX_THRESHOLDS`): the
    one home of the auxiliary rule (``aux_class="auto"`` trains the pseudo-class for these only).

    >>> is_aux_threshold("aux_mean"), is_aux_threshold("auto"), is_aux_threshold(0.0)
    (True, False, False)
    """
    return isinstance(threshold, str) and threshold in AUX_THRESHOLDS


#: Image model of every entry point when none is named (:func:`sei.train`, the command line,
#: ``sei_fiftyone.compute_sei`` and its App form): ImageNet EfficientNet-Lite0, whose weights ship
#: with pip (offline).
DEFAULT_MODEL = "efficientnet-lite0"

#: Classifier heads of :func:`sei.train` on fixed features: the paper's cosine prompt
#: head and softmax regression.
HEADS = ("prompt", "linear")

#: Head on fixed features (embeddings / frozen modes) when none is named (``head="auto"`` of
#: :func:`sei.train`, ``sei_fiftyone.compute_sei``'s default): the head of the rule's with-features
#: choice (``benchmarks/results/defaults.md``: softmax regression, 10 epochs at lr 0.002; with
#: ``poe_knn`` its AUROC is 0.02-0.10 points above the 30-epoch prompt head's in all 9 regime a
#: CIFAR-10N cells, its F1 up to 0.4 below on ``aggre``). Fine-tuning trains the prompt head
#: (see :func:`resolve_head`).
DEFAULT_HEAD = "linear"


#: Training length and learning rate of each head when none is named (:func:`sei.train`,
#: ``sei_fiftyone.compute_sei``): the linear head's were chosen on CIFAR-10N ``random1``
#: (``benchmarks/results/heads.md``) and are the settings the defaults benchmark measured; the
#: prompt head keeps the paper's.
HEAD_DEFAULTS = {"linear": {"epochs": 10, "lr": 0.002}, "prompt": {"epochs": 150, "lr": 1e-3}}


def resolve_head(head, mode):
    """``head`` as :func:`sei.train` uses it: ``"auto"`` is :data:`DEFAULT_HEAD` on fixed features and
    ``"prompt"`` when fine-tuning (``mode="finetune"``, where the linear head does not apply)."""
    if isinstance(head, str) and head == "auto":
        return "prompt" if mode == "finetune" else DEFAULT_HEAD
    return head

#: AUM's percentile of auxiliary (known-bad) samples used as the cutoff.
AUX_QUANTILE = 0.99


def default_score(has_features: bool) -> str:
    """The score ``score="auto"`` stands for: :data:`DEFAULT_FEATURE_SCORE` when the samples'
    features are at hand, else :data:`DEFAULT_SCORE`.

    >>> default_score(False) == DEFAULT_SCORE, default_score(True) == DEFAULT_FEATURE_SCORE
    (True, True)
    """
    return DEFAULT_FEATURE_SCORE if has_features else DEFAULT_SCORE

#: Fewest samples the neighbour default needs (its 20 neighbours plus the sample itself).
MIN_SAMPLES_FOR_NEIGHBOURS = 21

#: Longest run key (``brain_key``) accepted: FiftyOne names database collections and saved
#: views after the key, and a key of about 1,530 characters makes a MongoDB name too long, which
#: blocks every later ``compute_sei`` on the dataset. Checked by the App's compute form
#: (``sei_fiftyone.compute_form.check_brain_key_length``).
MAX_BRAIN_KEY_LENGTH = 100
