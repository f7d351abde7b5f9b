"""The SEI brain run: ``SEIConfig`` / ``SEI`` / ``SEIResults``, the fields and saved view a
run owns, and the rule that keeps a ``brain_key`` from overwriting what is not its own.

The Config records every option of :func:`sei_fiftyone.compute_sei`, resolved defaults
included (``epochs``, ``lr``, ``classes``) and the extra ``sei.train`` options, so a run can
be repeated from ``dataset.get_brain_info(key).config`` (:meth:`SEIConfig.compute_kwargs`).
These classes live in an importable module so that ``get_brain_info`` and
``load_brain_results`` work in any process, the App's included.
"""

from __future__ import annotations

import contextlib
import contextvars
import numbers
import os
import time
from typing import NamedTuple

import numpy as np

import fiftyone as fo
import fiftyone.core.brain as fob
import fiftyone.core.runs as fors
from fiftyone import ViewField as F
from sei.constants import AUTO_SCORE, DEFAULT_HEAD, DEFAULT_MODEL, MAX_BRAIN_KEY_LENGTH  # noqa: F401  (DEFAULT_HEAD, DEFAULT_MODEL re-exported)

from . import journal
from .lease import writing

EMBEDDINGS_MODEL = "embeddings"
SAVED_VIEW_SUFFIX = "_most_likely_mislabeled"
CL_SUFFIX = "_cl"  # the confident-learning comparison of a run (sei_fiftyone.compare)
CL_METHOD = "sei_confident_learning"


def field_names(brain_key):
    """The fields a run with this key writes: (score, flag, suggestion)."""
    return brain_key, f"{brain_key}_mislabeled", f"{brain_key}_suggestion"


def saved_view_name(brain_key):
    """Name of the saved view of a run: ``<brain_key>_most_likely_mislabeled``."""
    return f"{brain_key}{SAVED_VIEW_SUFFIX}"


class ComparisonNames(NamedTuple):
    """What comparing a run with confident learning writes (:mod:`sei_fiftyone.compare`)."""

    score: str  # float: cleanlab's label quality score (lower = more likely mislabeled)
    flag: str  # bool: flagged by cleanlab's find_label_issues
    view: str  # saved view: the samples flagged by exactly one of SEI and confident learning
    run_key: str  # the custom run (``dataset.list_runs()``) recording the comparison
    agreement: str  # Classification: who flagged the sample ("both", "SEI only", "CL only"; None: neither)
    mistakenness: str  # float: FiftyOne Brain's compute_mistakenness on the run's predictions (higher = more suspect)

    @property
    def fields(self):
        """The sample fields of the comparison: score, flag, agreement, mistakenness."""
        return self.score, self.flag, self.agreement, self.mistakenness


def comparison_names(brain_key):
    """``<brain_key>_cl``, ``<brain_key>_cl_mislabeled``, ``<brain_key>_cl_disagreements``, run ``<brain_key>_cl``,
    ``<brain_key>_cl_agreement``, ``<brain_key>_cl_mistakenness``."""
    key = f"{brain_key}{CL_SUFFIX}"
    return ComparisonNames(key, f"{key}_mislabeled", f"{key}_disagreements", key, f"{key}_agreement",
                           f"{key}_mistakenness")


def run_outputs(samples):
    """Every sample field written by the SEI runs of the dataset and by their comparisons: never
    labels to check, trust or predict with (the forms and the comparison leave them out)."""
    dataset = dataset_of(samples)
    return {n for key in dataset.list_brain_runs(type=SEI) for n in field_names(key) + comparison_names(key).fields}


def dataset_of(samples):
    """The dataset behind a collection (datasets are singletons by name in FiftyOne)."""
    if isinstance(samples, fo.Dataset):
        return samples
    return fo.load_dataset(samples.dataset_name)


def sorted_samples(samples, brain_key, flagged_only=True):
    """The scored samples of a run, lowest score (most likely mislabeled) first."""
    score_field, flag_field, _ = field_names(brain_key)
    view = samples.exists(score_field)
    if flagged_only:
        view = view.match(F(flag_field) == True)  # noqa: E712 (a MongoDB expression)
    return view.sort_by(score_field)


def save_sorted_view(samples, brain_key):
    """Save the flagged samples of a run, lowest score first, as ``saved_view_name(brain_key)``."""
    view = sorted_samples(samples, brain_key, flagged_only=True)
    dataset_of(samples).save_view(saved_view_name(brain_key), view, overwrite=True,
                                  description=f"SEI run '{brain_key}': flagged samples, most likely mislabeled first")


def check_brain_key_syntax(brain_key):
    """A brain key is an identifier of at most :data:`sei.constants.MAX_BRAIN_KEY_LENGTH`
    characters (ValueError): a longer one can make a MongoDB name too long for every later run.
    The one rule of compute_sei, the App's form and its operators."""
    if isinstance(brain_key, str) and len(brain_key) > MAX_BRAIN_KEY_LENGTH:
        raise ValueError(f"A brain key has at most {MAX_BRAIN_KEY_LENGTH} characters; this one has "
                         f"{len(brain_key)}")
    if not isinstance(brain_key, str) or not brain_key.isidentifier():
        raise ValueError(f"brain_key must be a valid identifier (letters, digits, _), got {brain_key!r}")


def rename_targets_taken(dataset, brain_key, new_key):
    """What renaming SEI run ``brain_key`` to ``new_key`` would overwrite that is not the run's
    own: fields, saved views and runs that exist under the new names (a list of descriptions)."""
    schema = dataset.get_field_schema(include_private=True)
    taken = [f"field '{n}'" for o, n in zip(field_names(brain_key), field_names(new_key))
             if n in schema and n not in field_names(brain_key)]
    new_view = saved_view_name(new_key)
    if dataset.has_saved_view(new_view) and new_view != saved_view_name(brain_key):
        taken.append(f"saved view '{new_view}'")
    if is_comparison_of(dataset, brain_key):
        old, new = comparison_names(brain_key), comparison_names(new_key)
        taken += [f"field '{n}'" for n in new.fields if n in schema and n not in old.fields]
        if dataset.has_saved_view(new.view) and new.view != old.view:
            taken.append(f"saved view '{new.view}'")
        if new.run_key in dataset.list_runs() + dataset.list_brain_runs():
            taken.append(f"run '{new.run_key}'")
    return taken


class RenameRefused(BaseException):
    """Renaming an SEI run onto names it does not own.

    A ``BaseException`` on purpose: FiftyOne's ``rename_brain_run`` catches every
    ``Exception`` of a method's ``rename()`` and renames the run anyway, which would hand the
    run the user's fields (rerunning it would then write scores into them, deleting it would
    delete them). This one stops the rename before anything changed.
    """


def validate_brain_key(samples, brain_key):
    """Refuse a ``brain_key`` whose run would overwrite something that is not its own.

    The run writes ``field_names(brain_key)`` and the saved view
    ``saved_view_name(brain_key)``. Rerunning an existing SEI run of that key reuses
    them; otherwise none of them may exist (``ground_truth``, ``filepath``, ``tags``,
    ``id``, the fields of another run, ...). A key held by a run of another method is
    refused too, as is ``<run>_cl`` for an SEI run ``<run>``: its fields are those of that run's
    confident-learning comparison (``comparison_names``). Used by
    :func:`sei_fiftyone.compute_sei` and by the App's form and operator.

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        brain_key: the proposed run key

    Raises:
        ValueError: naming the key, what it collides with and what to do instead
    """
    check_brain_key_syntax(brain_key)
    dataset = dataset_of(samples)
    if brain_key in dataset.list_brain_runs():
        config = dataset.get_brain_info(brain_key).config
        if isinstance(config, SEIConfig):
            return
        raise ValueError(f"brain_key '{brain_key}' is a {type(config).__name__} run of this dataset; choose "
                         f"another brain_key, or delete that run first (dataset.delete_brain_run('{brain_key}'))")
    base = brain_key[: -len(CL_SUFFIX)] if brain_key.endswith(CL_SUFFIX) else None
    if base and base in dataset.list_brain_runs(type=SEI):
        raise ValueError(f"brain_key '{brain_key}' names the fields of the confident-learning comparison of run "
                         f"'{base}' {list(comparison_names(base).fields)}; choose another brain_key")
    schema = dataset.get_field_schema(include_private=True)
    taken = [f for f in field_names(brain_key) if f in schema]
    if taken:
        raise ValueError(
            f"brain_key '{brain_key}' would overwrite the existing field(s) {', '.join(repr(f) for f in taken)}, "
            f"which are not the fields of an SEI run '{brain_key}' (an SEI run writes {list(field_names(brain_key))}); "
            "choose another brain_key (e.g. 'sei' or 'sei_2'), or rename or delete those fields first"
        )
    view = saved_view_name(brain_key)
    if dataset.has_saved_view(view):
        raise ValueError(f"brain_key '{brain_key}' would overwrite the saved view '{view}'; choose another "
                         "brain_key, or rename or delete that saved view first")


def _comparison_of(dataset, run_key):
    """The SEI run key that the custom run ``run_key`` compares with confident learning, or None."""
    if run_key not in dataset.list_runs():
        return None
    config = dataset.get_run_info(run_key).config
    return getattr(config, "brain_key", None) if config.method == CL_METHOD else None


def is_comparison_of(samples, brain_key):
    """Whether the dataset holds a confident-learning comparison of run ``brain_key``."""
    return _comparison_of(dataset_of(samples), comparison_names(brain_key).run_key) == brain_key


def validate_comparison(samples, brain_key):
    """Refuse to compare run ``brain_key`` with confident learning where that would overwrite
    something that is not a previous comparison of the same run (``comparison_names``).

    Raises:
        ValueError: no SEI run ``brain_key``, or what the comparison would overwrite and what to do
    """
    dataset = dataset_of(samples)
    if brain_key not in dataset.list_brain_runs(type=SEI):
        raise ValueError(f"No SEI run with brain key '{brain_key}' on dataset '{dataset.name}'; run "
                         f"compute_sei first (SEI runs: {dataset.list_brain_runs(type=SEI) or 'none'})")
    if is_comparison_of(dataset, brain_key):
        return  # a previous comparison of this run: replaced
    names = comparison_names(brain_key)
    schema = dataset.get_field_schema(include_private=True)
    taken = [f"run '{names.run_key}'"] if names.run_key in dataset.list_runs() + dataset.list_brain_runs() else []
    taken += [f"field '{f}'" for f in names.fields if f in schema]
    taken += [f"saved view '{names.view}'"] if dataset.has_saved_view(names.view) else []
    if taken:
        raise ValueError(f"Comparing run '{brain_key}' with confident learning writes {list(names.fields) + [names.view]} and the "
                         f"run '{names.run_key}', but the {', '.join(taken)} already exist(s) and are not a "
                         "comparison of this run; rename or delete them first")


# The comparison with confident learning (sei_fiftyone.compare) is derived from a run: its
# saved view, and its deletion and renaming with the run, live here beside its names.
def disagreement_view(samples, brain_key="sei"):
    """The compared samples flagged by exactly one of SEI and confident learning, lowest SEI score first."""
    score_field, flag_field, _ = field_names(brain_key)
    names = comparison_names(brain_key)
    return samples.exists(names.flag).exists(flag_field).match(F(flag_field) != F(names.flag)).sort_by(score_field)


#: The labels of ``<brain_key>_cl_agreement``: who flagged a compared sample (neither: no label).
AGREEMENT_LABELS = {(True, True): "both", (True, False): "SEI only", (False, True): "CL only"}


def agreement_labels(sei_flags, cl_flags):
    """Who flagged each compared sample, as ``<brain_key>_cl_agreement`` holds it: "both",
    "SEI only", "CL only", or None (neither). The one rule of the comparison and of a moved cutoff."""
    return [AGREEMENT_LABELS.get((bool(s), bool(c))) for s, c in zip(sei_flags, cl_flags)]


def save_disagreement_view(dataset, brain_key):
    """Save (or rewrite) the saved view ``<brain_key>_cl_disagreements`` of a run's comparison."""
    dataset.save_view(comparison_names(brain_key).view, disagreement_view(dataset, brain_key), overwrite=True,
                      description=f"SEI run '{brain_key}' vs confident learning: samples flagged by one only")


def delete_comparison(samples, brain_key):
    """Delete the comparison of run ``brain_key`` (fields, saved view, run); called when the
    SEI run is deleted (:meth:`SEI.cleanup`). Returns whether there was one."""
    dataset = dataset_of(samples)
    if not is_comparison_of(dataset, brain_key):
        return False
    _delete_comparison_outputs(dataset, brain_key)  # comparisons stored before CLComparison too
    dataset.delete_run(comparison_names(brain_key).run_key)
    return True


def _delete_outputs(dataset, fields, view):
    """Delete those of ``fields`` and the saved view ``view`` that exist (repeatable)."""
    schema = dataset.get_field_schema()
    existing = [f for f in fields if f in schema]
    if existing:
        dataset.delete_sample_fields(existing)
    if dataset.has_saved_view(view):
        dataset.delete_saved_view(view)


def _delete_comparison_outputs(dataset, brain_key):
    names = comparison_names(brain_key)
    _delete_outputs(dataset, names.fields, names.view)


_RENAMING = contextvars.ContextVar("sei_renaming_comparison", default=False)
_FINISHING = contextvars.ContextVar("sei_finishing_an_intent", default=False)  # journal.py


def rename_comparison(samples, brain_key, new_key):
    """Move the comparison of run ``brain_key`` to ``new_key``; called when the SEI run is
    renamed (:meth:`SEI.rename`). Repeatable: a rename interrupted half-way is finished."""
    dataset = dataset_of(samples)
    old, new = comparison_names(brain_key), comparison_names(new_key)
    moved = _comparison_of(dataset, new.run_key) in (brain_key, new_key)  # the run was renamed already
    if not (is_comparison_of(dataset, brain_key) or moved):
        return
    schema = dataset.get_field_schema()
    mapping = {o: n for o, n in zip(old.fields, new.fields) if o in schema and n not in schema}
    if mapping:
        dataset.rename_sample_fields(mapping)
    if not moved:
        token = _RENAMING.set(True)
        try:
            dataset.rename_run(old.run_key, new.run_key)
        finally:
            _RENAMING.reset(token)
    config = dataset.get_run_info(new.run_key).config
    if config.brain_key != new_key:
        config.brain_key = new_key
        dataset.update_run_config(new.run_key, config)
    if dataset.has_saved_view(old.view):
        dataset.delete_saved_view(old.view)
    save_disagreement_view(dataset, new_key)


def finish_delete(dataset, key):
    """Finish deleting SEI run ``key`` if FiftyOne did not (a kill during ``delete_brain_run``);
    returns whether there was anything left to do."""
    if key not in dataset.list_brain_runs(type=SEI):
        return False
    token = _FINISHING.set(True)
    try:
        dataset.delete_brain_run(key)
    finally:
        _FINISHING.reset(token)
    return True


def finish_rename(dataset, key, new_key):
    """Finish renaming SEI run ``key`` to ``new_key`` if FiftyOne did not (a kill during
    ``rename_brain_run``); returns whether there was anything left to do."""
    runs = dataset.list_brain_runs(type=SEI)
    if key not in runs or new_key in dataset.list_brain_runs():
        return False
    token = _FINISHING.set(True)
    try:
        dataset.rename_brain_run(key, new_key)
    finally:
        _FINISHING.reset(token)
    return True


#: The phases of an SEI run, as ``SEIResults.timings`` and the progress labels name them.
RUN_PHASES = ("read", "train", "score", "write")


class Phases:
    """The seconds of a run's phases (``seconds``: phase -> seconds), and its progress reported in
    FiftyOne's convention: ``report(fraction, label)`` (e.g. a delegated operator's
    ``ctx.set_progress``) is called at the start of each phase and by :meth:`step`, the fraction
    of the whole run from ``spans`` (phase -> (start, end) fractions), the label
    ``"<phase>"`` or ``"<phase>: <detail>"``. The ``"write"`` phase is timed by the journaled
    write itself (:func:`sei_fiftyone.writeback.journaled_write`) and recorded with the run."""

    def __init__(self, report=None, spans=None):
        self.seconds = {}
        self._report = report if callable(report) else None
        self._spans = spans or {}

    @contextlib.contextmanager
    def phase(self, name):
        self.step(name, 0.0)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 3)

    def step(self, name, fraction, detail=None):
        """Report ``fraction`` (0..1) of phase ``name`` done."""
        if self._report is None:
            return
        a, b = self._spans.get(name, (0.0, 1.0))
        self._report(a + (b - a) * min(max(float(fraction), 0.0), 1.0), f"{name}: {detail}" if detail else name)


def phases_text(timings):
    """``"read 0.4 s · train 3.1 s · score 0.1 s · write 0.3 s"``, in the order the phases ran
    ('' for a run stored without timings)."""
    return " · ".join(f"{p} {s:.3g} s" for p, s in (timings or {}).items() if s is not None)


def _recordable(value):
    """An option as a JSON value (arrays as lists, paths as strings); what has no JSON form
    (a callback, a weights object) is kept as ``{"unrecorded": repr}``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value.tolist()
    if isinstance(value, (list, tuple)):
        items = [_recordable(v) for v in value]
        if not any(isinstance(v, dict) and "unrecorded" in v for v in items):
            return items
    elif isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _recordable(v) for k, v in value.items()}
        if not any(isinstance(v, dict) and "unrecorded" in v for v in items.values()):
            return items
    return {"unrecorded": repr(value)[:200]}


class SEIConfig(fob.BrainMethodConfig):
    """Configuration of an SEI run: every option of :func:`sei_fiftyone.compute_sei`.

    Args:
        label_field: the ``Classification`` field that was checked
        model: the model name (or ``"embeddings"``)
        embeddings_field: the vector field trained on (or computed and stored), if any
        mode: ``"frozen"``, ``"finetune"`` or ``"embeddings"``
        epochs: training epochs
        threshold: the threshold method or value
        score: the score name
        batch_size: mini-batch size
        lr: learning rate (the head's default resolved)
        seed: the random seed
        classes: the class list, in the model's output order
        head: the classifier head, ``"linear"`` or ``"prompt"``
        train_kwargs: the other options passed to ``sei.train``, as JSON values (one without
            a JSON form, such as a callback, as ``{"unrecorded": repr}``)
    """

    def __init__(self, label_field=None, model=DEFAULT_MODEL, embeddings_field=None, mode="frozen",
                 epochs=10, threshold="auto", score=AUTO_SCORE, batch_size=128, lr=None, seed=0,
                 classes=None, head=DEFAULT_HEAD, train_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        self.label_field = label_field
        self.model = model
        self.embeddings_field = embeddings_field
        self.mode = mode
        self.epochs = epochs
        self.threshold = _recordable(threshold)
        self.score = score
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.classes = None if classes is None else list(classes)
        self.head = head
        self.train_kwargs = {k: _recordable(v) for k, v in (train_kwargs or {}).items()}

    @property
    def type(self):
        return "sei"

    @property
    def method(self):
        return "sei"

    def compute_kwargs(self):
        """The arguments of :func:`sei_fiftyone.compute_sei` (after the collection) that repeat
        this run: ``compute_sei(samples, **config.compute_kwargs())``.

        Raises:
            ValueError: the run was given an option that could not be recorded (a callback,
                a weights object); pass it again yourself
        """
        unrecorded = {k: v["unrecorded"] for k, v in self.train_kwargs.items()
                      if isinstance(v, dict) and "unrecorded" in v}
        if unrecorded:
            raise ValueError(f"This run was given options that could not be recorded: {unrecorded}; "
                             "call compute_sei with them yourself")
        return dict(label_field=self.label_field, model=self.model, embeddings_field=self.embeddings_field,
                    mode=self.mode, epochs=self.epochs, threshold=self.threshold, score=self.score,
                    batch_size=self.batch_size, lr=self.lr, seed=self.seed, classes=self.classes,
                    head=self.head, **self.train_kwargs)


class SEI(fob.BrainMethod):
    """The SEI brain method: owns the three output fields and the saved view."""

    def ensure_requirements(self):
        pass

    def get_fields(self, samples, key):
        return list(field_names(key))

    def cleanup(self, samples, key):
        dataset = dataset_of(samples)
        with writing(dataset):
            if not _FINISHING.get():  # FiftyOne deletes the run's document after this returns
                journal.record(dataset, "delete", key=key)
            delete_comparison(dataset, key)  # the comparison is derived from the run: it goes with it
            _delete_outputs(dataset, field_names(key), saved_view_name(key))

    def rename(self, samples, key, new_key):
        dataset = dataset_of(samples)
        try:
            check_brain_key_syntax(new_key)
        except ValueError as e:
            raise RenameRefused(f"Cannot rename SEI run '{key}' to '{new_key}': {e}") from None
        with writing(dataset):
            finishing = _FINISHING.get()  # then the new names half-moved are the run's own
            taken = [] if finishing else rename_targets_taken(dataset, key, new_key)
            if taken:
                raise RenameRefused(
                    f"Cannot rename SEI run '{key}' to '{new_key}': the {', '.join(taken)} already exist(s) and "
                    f"are not this run's (the run would write into them and delete them with itself). Nothing "
                    "was renamed; choose another key, or rename or delete those first")
            if not finishing:  # FiftyOne renames the run's document after this returns
                journal.record(dataset, "rename", key=key, new_key=new_key)
            schema = dataset.get_field_schema()
            mapping = {o: n for o, n in zip(field_names(key), field_names(new_key)) if o in schema and n not in schema}
            if mapping:
                dataset.rename_sample_fields(mapping)
            old = saved_view_name(key)
            if dataset.has_saved_view(old):
                dataset.delete_saved_view(old)
            if field_names(new_key)[0] in dataset.get_field_schema():
                save_sorted_view(dataset, new_key)
            rename_comparison(dataset, key, new_key)


class CLComparisonConfig(fors.RunConfig):
    """The custom run ``<brain_key>_cl`` recording a comparison of SEI run ``brain_key`` with
    confident learning (:mod:`sei_fiftyone.compare`); its method deletes the comparison's
    fields and saved view with it (``dataset.delete_run``)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("method", CL_METHOD)
        super().__init__(**kwargs)


class CLComparison(fors.Run):
    """The method of :class:`CLComparisonConfig`: owns the comparison's two fields and saved view."""

    def cleanup(self, samples, key):
        brain_key = getattr(self.config, "brain_key", None)
        if brain_key is not None and comparison_names(brain_key).run_key == key:
            _delete_comparison_outputs(dataset_of(samples), brain_key)

    def rename(self, samples, key, new_key):
        if not _RENAMING.get():
            raise RenameRefused(
                f"Cannot rename the comparison run '{key}' on its own: it belongs to SEI run "
                f"'{getattr(self.config, 'brain_key', None)}'; rename that run instead "
                "(dataset.rename_brain_run), which renames its comparison too")


class SEIResults(fob.BrainResults):
    """Results of an SEI run.

    Attributes:
        threshold: the cutoff; samples scoring below it are flagged
        computed_threshold: the cutoff the run computed, once the review panel moved it
            (``sei_fiftyone.review.set_cutoff``); None before
        score_name: the score written (lower = more likely mislabeled)
        classes: the class list, in the model's output order
        num_samples, num_flagged: counts
        scores_summary: count, mean, std, min, quantiles and max of the scores
        aux_ids: ids of the samples used as auxiliary (pseudo-class) samples
        skipped_ids: ids of samples whose images could not be read
        train_accuracy, train_loss: per-epoch training curves
        timings: seconds of the run's phases (:data:`RUN_PHASES`): ``read`` (labels and images
            or vectors), ``train`` (:func:`sei.train`: embedding, training, the engine's scores),
            ``score`` (the per-sample values and the run's summary), ``write`` (staging and
            switching the values in); {} for a run stored by an earlier version
    """

    _ATTRIBUTES = ("threshold", "score_name", "classes", "num_samples", "num_flagged", "scores_summary",
                   "aux_ids", "skipped_ids", "train_accuracy", "train_loss", "computed_threshold", "timings")

    def __init__(self, samples, config, brain_key, *, threshold, score_name, classes,
                 num_samples, num_flagged, scores_summary, aux_ids, skipped_ids,
                 train_accuracy, train_loss, computed_threshold=None, timings=None, backend=None):
        super().__init__(samples, config, brain_key, backend=backend)
        self.threshold = threshold
        self.score_name = score_name
        self.classes = classes
        self.num_samples = num_samples
        self.num_flagged = num_flagged
        self.scores_summary = scores_summary
        self.aux_ids = aux_ids
        self.skipped_ids = skipped_ids
        self.train_accuracy = train_accuracy
        self.train_loss = train_loss
        self.computed_threshold = computed_threshold
        self.timings = dict(timings or {})

    @property
    def method(self):
        return self.config.method

    def attributes(self):
        return super().attributes() + list(self._ATTRIBUTES)

    def sorted_view(self, flagged_only=True):
        """The run's samples, most likely mislabeled first."""
        return sorted_samples(self.samples, self.key, flagged_only=flagged_only)

    @classmethod
    def _from_dict(cls, d, samples, config, brain_key):
        defaults = {"scores_summary": {}, "aux_ids": [], "skipped_ids": [], "train_accuracy": [],
                    "train_loss": [], "computed_threshold": None, "timings": {}}
        return cls(samples, config, brain_key, **{a: d.get(a, defaults.get(a)) for a in cls._ATTRIBUTES})


def summarize_scores(scores):
    """Count, mean, std, min, max and quantiles of the finite scores ({} when there is none)."""
    finite = np.asarray(scores, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return {}
    q = np.quantile(finite, [0.01, 0.25, 0.5, 0.75, 0.99])
    return {"count": int(finite.size), "mean": float(finite.mean()), "std": float(finite.std()),
            "min": float(finite.min()), "max": float(finite.max()), "q01": float(q[0]), "q25": float(q[1]),
            "median": float(q[2]), "q75": float(q[3]), "q99": float(q[4])}
