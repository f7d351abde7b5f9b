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
#: margin p_y - max_{k!=y} p_k with a zero cutoff. The choice of the rule in
#: ``benchmarks/defaults_rule.py`` among what a history alone allows (no logits, no auxiliary samples):
#: ``benchmarks/results/defaults.json`` ``history_only``; the cells it won and lost are in
#: ``benchmarks/results/defaults_choice.md`` and ``defaults.md``.
DEFAULT_SCORE = "aum_prob"

#: Score of ``score="auto"`` with features (``features=`` / ``neighbors=`` given; ``sei.train`` on
#: embeddings or frozen images): the product of experts of the epoch-averaged log-probabilities and
#: the neighbours' label shares (the benchmark's ``"poe"``; its ``"auto"`` cutoff is
#: :data:`AUTO_THRESHOLDS`' ``"cl_count"`` since issue #22, zero before); the same rule's choice among
#: all candidates (``benchmarks/results/defaults.json`` ``with_features``; cells won and lost:
#: ``benchmarks/results/defaults_choice.md``). A recorder that did not keep the per-class
#: log-probabilities it needs falls back, with a warning, to :data:`DEFAULT_STREAMING_FEATURE_SCORE`;
#: fewer than 21 samples to :data:`DEFAULT_SCORE` (see
#: :func:`sei.scores.resolve_score`).
DEFAULT_FEATURE_SCORE = "poe_knn"

#: Score of ``score="auto"`` with features and a recorder that kept per-sample sums only (no
#: ``extra_scores="poe_knn"``): the mean of ``"aum_prob"`` and the neighbours' label margin, which
#: needs nothing per class, so the features the user passed are still read.
DEFAULT_STREAMING_FEATURE_SCORE = "aum_prob_knn"

#: Latest probabilities an :class:`sei.SEIRecorder` keeps per sample with ``top_k="auto"``
#: once N x K passes :data:`FULL_PROBS_MAX_VALUES`: the top 5 (with their classes and the
#: update's entropy, 34 bytes per sample), enough for suggestions, ``predicted_labels`` and the
#: ``"mistakenness"`` score (see :mod:`sei._latest`).
DEFAULT_TOP_K = 5

#: Up to this many values (N x K; 128 MiB of float32) ``top_k="auto"`` keeps every class's latest
#: probability, so that in-sample ``pred_probs`` (confident learning, the active-learning
#: selectors) stay available where they are cheap: 50,000 x 671 classes, 335,544 x 100. At
#: 1e6 x 100 ``compute_sei`` with every class peaked at 7.2 GB, with the top 5 at 3.8 GB
#: (``benchmarks/results/fiftyone_speed.md``); the bound was 2^27 until 2026-12.
FULL_PROBS_MAX_VALUES = 2**25

#: Recorder score that guides the SEI-led active-label-correction selectors (``"sei"``,
#: ``"sei_propagation"``, ``"sei_fc"``, ...) when none is named: ``sei_cleanlab.select_for_relabeling``
#: and the simulator (:func:`sei.active.simulate`). The paper's SEI, because every ALC table in
#: ``benchmarks/results/active*.md`` was measured with it; the detection default
#: (:data:`DEFAULT_SCORE`) has not been measured as a selection guide (issue 24 item 4).
SELECTION_SCORE = "sei"

#: Threshold used when none is named: works without auxiliary samples.
DEFAULT_THRESHOLD = "auto"

#: Every threshold method by name (:func:`sei.compute_threshold`; a number is a cutoff used as is).
THRESHOLD_METHODS = ("auto", "aux_mean", "aux_quantile", "zero", "gmm", "cl_count")

#: What ``threshold="auto"`` is for the scores named here (every other score: ``"zero"`` when
#: signed, ``"gmm"`` otherwise; :func:`sei.thresholds.resolve_threshold`). ``"poe_knn"``, the
#: default with features, flags as many of its lowest-scored samples as confident learning counts
#: on its own class probabilities (``"cl_count"``): the choice of
#: ``benchmarks/defaults_rule.choose_cutoff`` over every peers cell (issue #22 item 3: F1 at or
#: above the best peer's in more cells than the zero cutoff, and the better worst and mean lead;
#: ``benchmarks/results/peers.md``).
AUTO_THRESHOLDS = {DEFAULT_FEATURE_SCORE: "cl_count"}

#: The methods that need a count of label issues (``num_issues=``), estimated from the score's own
#: class probabilities (:func:`sei.thresholds.estimate_num_issues`).
COUNT_THRESHOLDS = ("cl_count",)

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
#: choice, softmax regression (``benchmarks/results/defaults.json`` ``head``; the comparison with the
#: prompt head: ``benchmarks/results/defaults_choice.md``). Fine-tuning trains the prompt head (see
#: :func:`resolve_head`).
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
