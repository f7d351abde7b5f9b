"""Every option of :func:`sei.train`, declared and validated once.

:class:`TrainConfig` is the single home of the training options: their defaults, their
types and their rules. :func:`sei.train`, the command line and the FiftyOne adapter build
one; the checkpoint stores its plain form (``to_dict``) and the result carries it, so a
run can be reproduced from what it wrote. Validation runs in ``__post_init__``, before any
data is read or any model is built, and raises ValueError / TypeError naming the option
and the fix (scikit-learn's ``_parameter_constraints`` idea, as a dataclass).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np

from ..validation import check_int_param, check_real_param, check_threshold
from .. import scores as _scores
from ..thresholds import check_count_score, uses_auxiliary
from ..constants import AUTO_SCORE, DEFAULT_MODEL, DEFAULT_THRESHOLD, HEAD_DEFAULTS, HEADS, is_aux_threshold, \
    resolve_head

__all__ = ["TrainConfig", "MODES", "LR_SCHEDULES", "RECORDS", "DEFAULT_PROMPT_TEMPLATE", "DEFAULT_AUX_PROMPT",
           "PLACEMENTS"]

#: Largest learning rate accepted (SGD on these heads and towers diverges long before).
MAX_LR = 10.0
DEFAULT_PROMPT_TEMPLATE = "a photo of a {}."
DEFAULT_AUX_PROMPT = "a photo of something else."
MODES = ("embeddings", "frozen", "finetune")
LR_SCHEDULES = ("none", "step", "cosine", "step10")
RECORDS = ("train", "eval")
PLACEMENTS = ("auto", "device", "host")


def _choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}.")
    return value


@dataclass
class TrainConfig:
    """The options of one :func:`sei.train` run (see its docstring for what each does).

    Examples
    --------
    >>> TrainConfig(head="prompt", epochs=10, batch_size=512).lr_for_batch()
    0.004
    >>> TrainConfig(batch_size=0)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be at least 1, got 0: pass a batch size of one or more samples.
    """

    class_names: Optional[list] = None
    model: Any = DEFAULT_MODEL
    pretrained: Optional[str] = None
    tokenizer: Any = None
    arch: Optional[str] = None
    mode: Optional[str] = None
    epochs: Optional[int] = None
    batch_size: int = 128
    lr: Optional[float] = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_schedule: str = "none"
    logit_scale: Union[str, float] = "learned"
    record: str = "train"
    aux_class: Union[str, bool] = "auto"
    num_aux: Union[str, int, float] = "paper"
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    aux_prompt: str = DEFAULT_AUX_PROMPT
    proj_dim: Optional[int] = None
    center_features: Union[str, bool] = "auto"
    learn_class_emb: bool = True
    head: str = "auto"
    score: str = AUTO_SCORE
    threshold: Union[str, float] = DEFAULT_THRESHOLD
    sample_weights: Any = None
    transition_matrix: Any = None
    transition_mask: Any = None
    checkpoint_dir: Any = None
    resume: bool = False
    device: Any = "auto"
    image_size: Optional[int] = None
    num_workers: int = 0
    cache_dir: Any = None
    seed: int = 0
    on_epoch_end: Optional[Callable] = None
    on_record: Optional[Callable] = None
    history_path: Any = None
    progress: bool = True
    amp: bool = True
    num_threads: Union[str, int, None] = "auto"
    placement: str = "auto"
    return_features: bool = False
    extra_scores: Any = None
    score_aux_samples: bool = True
    top_k: Any = "auto"
    #: options that are objects, not settings: kept out of ``to_dict``
    _OBJECTS = ("tokenizer", "sample_weights", "transition_matrix", "transition_mask", "on_epoch_end", "on_record")
    #: options that do not change what is trained (where it runs and writes, how it reports and
    #: scores, the epochs, checked on their own): a resumed run may change them, no other
    _NOT_TRAINING = ("epochs", "score", "threshold", "extra_scores", "checkpoint_dir", "resume", "device",
                     "num_workers", "cache_dir", "on_epoch_end", "on_record", "history_path", "progress",
                     "num_threads", "placement", "return_features", "score_aux_samples", "top_k")

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ rules
    def validate(self) -> "TrainConfig":
        """Check every option; raise ValueError / TypeError naming the option and the fix."""
        # the head first: "auto" and the epochs / lr left to it depend on it
        self.head = resolve_head(self.head, self.mode)
        _choice("head", self.head, HEADS)
        for name in ("epochs", "lr"):
            if getattr(self, name) is None:
                setattr(self, name, HEAD_DEFAULTS[self.head][name])
        self._check_numbers()
        self._check_choices()
        self._check_combinations()
        return self

    def _check_numbers(self):
        """Counts, rates and SGD settings."""
        self.epochs = check_int_param(self.epochs, "epochs", 1, "train at least one epoch")
        self.batch_size = check_int_param(self.batch_size, "batch_size", 1, "pass a batch size of one or more samples")
        self.seed = check_int_param(self.seed, "seed", 0)
        self.num_workers = check_int_param(self.num_workers, "num_workers", 0, "0 picks one decoding thread per core")
        self.lr = check_real_param(self.lr, "lr")
        self.momentum = check_real_param(self.momentum, "momentum")
        self.weight_decay = check_real_param(self.weight_decay, "weight_decay")
        # SGD diverges (float overflow, NaN logits) far below these: refuse before training.
        for name, value, top in (("lr", self.lr, MAX_LR), ("momentum", self.momentum, 1.0),
                                 ("weight_decay", self.weight_decay, 1.0)):
            if value > top or (name == "momentum" and value == top):
                raise ValueError(f"{name}={value:g} is outside SGD's range: use "
                                 + {"lr": f"0 <= lr <= {MAX_LR:g} (the paper's is 1e-3; 0 records a zero-shot run)",
                                    "momentum": "0 <= momentum < 1 (the paper's is 0.9)",
                                    "weight_decay": "0 <= weight_decay <= 1 (the paper's is 1e-4)"}[name] + ".")
    def _check_choices(self):
        """Options taken from a list of names, flags and callables."""
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("record", self.record, RECORDS)
        _choice("placement", self.placement, PLACEMENTS)
        if self.extra_scores is not None:  # names are checked by the recorder's layout, the one home
            from .._recorder_layout import requested_per_class

            requested_per_class(self.extra_scores)
            if not isinstance(self.extra_scores, str):
                self.extra_scores = tuple(self.extra_scores)
        from .._latest import resolve_top_k  # the recorder's own rule for top_k (one home)

        resolve_top_k(self.top_k, 1, 2)
        if self.mode is not None:
            _choice("mode", self.mode, MODES)
        if self.image_size is not None:
            self.image_size = check_int_param(self.image_size, "image_size", 1, "pass a size in pixels or None")
        if self.proj_dim is not None:
            self.proj_dim = check_int_param(self.proj_dim, "proj_dim", 1)
        if not (self.logit_scale in ("learned", "raw") or
                (isinstance(self.logit_scale, numbers.Real) and not isinstance(self.logit_scale, bool))):
            raise ValueError(f"logit_scale must be 'learned', 'raw' or a number, got {self.logit_scale!r}.")
        if isinstance(self.logit_scale, numbers.Real):
            check_real_param(self.logit_scale, "logit_scale")
        if not (self.aux_class == "auto" or isinstance(self.aux_class, bool)):
            raise ValueError(f"aux_class must be 'auto', True or False, got {self.aux_class!r}.")
        if not (self.num_aux in ("paper", "code") or (isinstance(self.num_aux, numbers.Real)
                                                      and not isinstance(self.num_aux, bool) and self.num_aux > 0)):
            raise ValueError(f"num_aux must be 'paper', 'code', a positive int or a fraction in (0, 1), "
                             f"got {self.num_aux!r}.")
        if not (self.center_features == "auto" or isinstance(self.center_features, bool)):
            raise ValueError(f"center_features must be 'auto', True or False, got {self.center_features!r}.")
        if not (self.num_threads in ("auto", None) or (isinstance(self.num_threads, numbers.Integral)
                                                       and not isinstance(self.num_threads, bool)
                                                       and self.num_threads >= 1)):
            raise ValueError(f"num_threads must be 'auto', None or a positive int, got {self.num_threads!r}.")
        if not isinstance(self.prompt_template, str) or "{}" not in self.prompt_template:
            raise ValueError(f"prompt_template must be a str with a '{{}}' for the class name, "
                             f"got {self.prompt_template!r}.")
        if not isinstance(self.score_aux_samples, (bool, np.bool_)):
            raise TypeError(f"score_aux_samples must be True or False, got {self.score_aux_samples!r}.")
        self.score_aux_samples = bool(self.score_aux_samples)
        for name in ("on_epoch_end", "on_record"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise TypeError(f"{name} must be callable, got {type(getattr(self, name)).__name__}.")
    def _check_combinations(self):
        """Rules tying options together (score, threshold, auxiliary class, mode, resume, ...)."""
        # "auto" stays until the data is known (check_mode); checked here as the default with features
        spec = _scores.get(_scores.resolve_score(self.score, self.mode != "finetune", self.threshold))
        check_threshold(self.threshold)
        if is_aux_threshold(self.threshold) and self.aux_class is False:
            raise ValueError(f"threshold={self.threshold!r} is computed from the auxiliary samples: use "
                             "aux_class='auto' (or True), or another threshold ('auto', 'zero', 'gmm' or a number).")
        if spec.needs_features and is_aux_threshold(self.threshold):
            raise ValueError(f"score={self.score!r} mixes in the neighbours' labels, which the auxiliary samples do "
                             "not calibrate: use threshold 'auto', 'zero', 'gmm' or a number.")
        check_count_score(self.threshold, spec.name)
        if self.mode is not None:
            self.check_mode(self.mode)
        if self.transition_mask is not None and self.transition_matrix is None:
            raise ValueError("transition_mask says where transition_matrix applies: pass transition_matrix too "
                             "(or drop transition_mask).")
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir (the folder holding checkpoint.pt).")
        sw = self.sample_weights
        if sw is not None and hasattr(sw, "weights") and not callable(getattr(sw, "update", None)):
            raise TypeError("sample_weights objects need .weights and .update(losses) (see sei.active.RobustWeights).")
        if self.class_names is not None:
            if isinstance(self.class_names, str) or not hasattr(self.class_names, "__len__"):
                raise TypeError("class_names must be a list of K names, got "
                                f"{type(self.class_names).__name__}.")
            self.class_names = [str(c) for c in self.class_names]
            if len(self.class_names) < 2:
                raise ValueError("class_names must name at least 2 classes.")
            if len(set(self.class_names)) != len(self.class_names):
                raise ValueError("class_names must be unique.")

    def check_mode(self, mode: str, num_samples: Optional[int] = None) -> str:
        """The rules that tie options to the mode (also for a mode inferred from the data).

        ``score="auto"`` is resolved here, once the mode and the number of readable samples
        are known (:func:`sei.scores.resolve_score`: the feature default unless fine-tuning,
        or with too few samples for the neighbours).
        """
        score = _scores.resolve_score(self.score, mode != "finetune", self.threshold, num_samples=num_samples)
        if num_samples is not None:  # the data is known: the score the run uses
            self.score = score
        check_count_score(self.threshold, score)
        if mode == "finetune" and _scores.SCORES[score].needs_features:
            raise ValueError(f"score={score!r} compares labels in a fixed feature space: use mode 'frozen' or "
                             "'embeddings' (with return_features=True a finetune run returns its tower's "
                             "features in result.features, for sei.feature_score).")
        if mode == "finetune" and self.head == "linear":
            raise ValueError("head='linear' trains on fixed features: use mode='frozen' or 'embeddings', "
                             "or head='prompt' to fine-tune the image tower.")
        return mode

    # ------------------------------------------------------------------ derived
    @property
    def uses_aux(self) -> bool:
        """Whether the auxiliary pseudo-class is trained ("auto": only for an ``aux_*`` threshold)."""
        return uses_auxiliary(self.threshold, self.aux_class)

    def lr_for_batch(self, batch_size: Optional[int] = None) -> float:
        """The linear scaling rule: ``lr * batch_size / 128`` (Goyal et al., 2017).

        ``sei.train`` uses ``lr`` as given; call this to keep the per-sample step when
        raising ``batch_size`` above the paper's 128 (e.g. 4e-3 at 512).
        """
        return self.lr * (batch_size or self.batch_size) / 128

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some options changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain settings (str, numbers, bools, lists): what a checkpoint and a result store.

        Objects (tokenizer, sample weights, transition matrix, callbacks) are recorded by
        type name only; a model object by its class name.
        """
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in self._OBJECTS:
                v = None if v is None else type(v).__name__
            elif f.name == "model" and not isinstance(v, str):
                v = type(v).__name__
            elif f.name in ("checkpoint_dir", "cache_dir", "history_path", "device") and v is not None:
                v = str(v)
            out[f.name] = v
        return out

    def training_options(self) -> dict:
        """:meth:`to_dict` restricted to the options that change the training (every option but
        :attr:`_NOT_TRAINING`); what a resumed run must share with its checkpoint, the object
        options (arrays, weights) hashed by :func:`sei.engine.checkpoint.run_fingerprint`."""
        return {k: v for k, v in self.to_dict().items() if k not in self._NOT_TRAINING}

