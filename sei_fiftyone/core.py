"""SEI as a FiftyOne Brain run: ``compute_sei`` and its Config / Method / Results triad.

Algorithm (see ``sei.recorder``): train a classifier on the given labels and record,
for every sample i and epoch t, the signed entropy of its predicted distribution

    SE_t(i) = +H(p_t(i)) if the given label is the argmax, -H(p_t(i)) otherwise
    SEI(i)  = sum_t SE_t(i)

A mislabeled sample is fitted late, so it spends many epochs predicted as another class
with a low entropy: its SEI is strongly negative. LOWER = MORE LIKELY MISLABELED. The
cutoff is ``sei.compute_threshold`` (``"auto"``: zero for signed scores; ``"aux_mean"``:
the mean score of auxiliary samples relabelled to a pseudo-class, as in the paper).

Writes three fields, in bulk, only after training succeeded:

    <brain_key>               float, the score (None for skipped samples)
    <brain_key>_mislabeled    bool, score < threshold
    <brain_key>_suggestion    Classification, the model's label and its probability

and a saved view ``<brain_key>_most_likely_mislabeled`` (flagged samples, lowest first).
The Config class lives here, in an importable module, so that ``get_brain_info`` and
``load_brain_results`` work in any process, the App's included.
"""

from __future__ import annotations

import logging

import numpy as np

import fiftyone.core.brain as fob
import fiftyone.core.fields as fof
import fiftyone.core.labels as fol
from fiftyone import ViewField as F
from sei.constants import DEFAULT_SCORE, HEADS

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "efficientnet-lite0"
DEFAULT_EPOCHS = 10
DEFAULT_HEAD = "linear"
MODEL_CHOICES = ("efficientnet-lite0", "embeddings")
SAVED_VIEW_SUFFIX = "_most_likely_mislabeled"


def field_names(brain_key):
    """The fields a run with this key writes: (score, flag, suggestion)."""
    return brain_key, f"{brain_key}_mislabeled", f"{brain_key}_suggestion"


def saved_view_name(brain_key):
    """Name of the saved view of a run: ``<brain_key>_most_likely_mislabeled``."""
    return f"{brain_key}{SAVED_VIEW_SUFFIX}"


def classification_fields(samples):
    """Names of the top-level ``Classification`` fields of a collection."""
    schema = samples.get_field_schema(embedded_doc_type=fol.Classification)
    return sorted(schema)


def embeddings_fields(samples):
    """Names of top-level vector/array fields that can serve as embeddings."""
    schema = samples.get_field_schema()
    out = []
    for name, field in schema.items():
        if isinstance(field, (fof.VectorField, fof.ArrayField)):
            out.append(name)
        elif isinstance(field, fof.ListField) and isinstance(field.field, (fof.FloatField, fof.IntField)):
            out.append(name)
    return sorted(out)


def compute_sei(
    samples,
    label_field,
    *,
    brain_key="sei",
    model=DEFAULT_MODEL,
    embeddings_field=None,
    mode=None,
    epochs=None,
    threshold="auto",
    score=DEFAULT_SCORE,
    batch_size=128,
    lr=None,
    seed=0,
    classes=None,
    head=DEFAULT_HEAD,
    progress=None,
    **train_kwargs,
):
    """Find likely mislabeled samples from the training dynamics of a classifier.

    Trains a classifier on ``label_field`` over the images of ``samples`` (or on the
    vectors stored in ``embeddings_field``), records the Signed Entropy Integral of
    every sample, and writes ``<brain_key>`` (float, lower = more likely mislabeled),
    ``<brain_key>_mislabeled`` (bool) and ``<brain_key>_suggestion``
    (:class:`fiftyone.core.labels.Classification`: the model's label and confidence).
    The fields are written in bulk after training, so a failed run leaves the dataset as
    it was; rerunning with the same ``brain_key`` overwrites the previous run. The run is
    registered as a brain run (``list_brain_runs``, ``load_brain_results``,
    ``delete_brain_run`` all work) and the flagged samples, most likely mislabeled
    first, are saved as the view ``<brain_key>_most_likely_mislabeled``.

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection` (dataset or view)
        label_field: the ``Classification`` field holding the labels to check
        brain_key ("sei"): the run key, also the name of the score field
        model ("efficientnet-lite0"): the image model (``"efficientnet-lite0"`` ships
            its weights with pip, so it works offline; any model name accepted by
            ``sei.train``), or ``"embeddings"`` together with ``embeddings_field``
        embeddings_field (None): a vector field to train on instead of the images. If
            no such field exists yet, ``model`` embeds the images (frozen) and the
            vectors are stored there when the run succeeds, so later runs and
            ``suggest_relabels`` (kNN graph) reuse them
        mode (None): ``"frozen"`` (default for images), ``"finetune"``, or
            ``"embeddings"`` (implied by ``embeddings_field``)
        epochs (None): training epochs; default 10 for the linear head, 150 (the
            paper's) for the prompt head
        threshold ("auto"): ``"auto"``, ``"aux_mean"``, ``"aux_quantile"``, ``"zero"``,
            ``"gmm"`` or a number; see ``sei.compute_threshold``
        score (``sei.DEFAULT_SCORE``, "aum_prob"): which score to write: a
            training-dynamics score (``sei.SCORE_NAMES``; "sei" is the paper's) or a
            neighbour-label score (``sei.FEATURE_SCORES``: "aum_prob_knn" averages
            "aum_prob" with the label agreement of each sample's 20 nearest neighbours in
            the features the model trained on)
        batch_size (128): mini-batch size
        lr (None): learning rate; default 0.002 for the linear head, 1e-3 (the
            paper's) for the prompt head
        seed (0): random seed
        classes (None): the class list; default the distinct labels, sorted
        head ("linear"): the classifier ``sei.train`` fits on the frozen features:
            ``"linear"`` (softmax regression on standardised features; fast, and the
            better detector on the bundled CIFAR-10N sample) or ``"prompt"`` (the
            paper's CLIP-style cosine prompt head). With an auxiliary-class threshold
            (``"aux_mean"``, ``"aux_quantile"``) a second run without the pseudo-class
            scores the samples the first one relabelled
        progress (None): whether to render a progress bar (True/False/None for the
            FiftyOne default), or a callable ``progress(fraction, label)``
        **train_kwargs: passed on to :func:`sei.train` (``image_size``,
            ``lr_schedule``, ``checkpoint_dir``, ...)

    Returns:
        a :class:`SEIResults`

    Example::

        import fiftyone.zoo as foz
        import sei_fiftyone as sfo

        results = sfo.compute_sei(dataset, "ground_truth", epochs=10)
        view = sfo.sorted_view(dataset)          # flagged, most likely mislabeled first
    """
    from . import _engine

    # FiftyOne Brain's convention: an embeddings field that does not exist yet is computed
    # with `model` and stored (at the end, with the other fields); an existing one is used.
    store_embeddings = (embeddings_field is not None
                        and embeddings_field not in samples._root_dataset.get_field_schema())
    if store_embeddings:
        if model == _engine.EMBEDDINGS_MODEL:
            raise ValueError(f"embeddings field '{embeddings_field}' does not exist; pass model=<an image model> "
                             "to compute and store it, or the name of an existing vector field")
        if mode == "finetune":
            raise ValueError("mode='finetune' changes the encoder while training, so its embeddings cannot be "
                             "stored; use mode='frozen' with embeddings_field, or no embeddings_field")
        mode = "frozen"
    elif embeddings_field is not None:
        model = _engine.EMBEDDINGS_MODEL
    if model == _engine.EMBEDDINGS_MODEL:
        if embeddings_field is None:
            raise ValueError("model='embeddings' needs embeddings_field=<a vector field>")
        mode = "embeddings"
    mode = mode or "frozen"
    if head not in HEADS:  # checked here too: the default epochs depend on it
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if epochs is None:
        epochs = _engine.DEFAULT_EPOCHS[head]
    _validate_label_field(samples, label_field)

    config = SEIConfig(
        label_field=label_field,
        model=model,
        embeddings_field=embeddings_field,
        mode=mode,
        epochs=int(epochs),
        threshold=threshold,
        score=score,
        seed=seed,
        head=head,
    )
    brain_method = config.build()
    brain_method.ensure_requirements()
    brain_method.validate_run(samples, brain_key, overwrite=True)

    ids, labels_str = samples.values(["id", f"{label_field}.label"])
    ids = np.asarray(ids)
    has_label = np.array([lab is not None for lab in labels_str], dtype=bool)
    if classes is None:
        classes = sorted({lab for lab in labels_str if lab is not None})
    classes = list(classes)
    if len(classes) < 2:
        raise ValueError(
            f"Field '{label_field}' has {len(classes)} class(es) on these samples; SEI needs at least 2"
        )
    index = {c: k for k, c in enumerate(classes)}
    unknown = sorted({lab for lab in labels_str if lab is not None and lab not in index})
    if unknown:
        raise ValueError(f"Labels {unknown[:5]} of '{label_field}' are not in classes={classes}")
    train_pos = np.flatnonzero(has_label)
    labels = np.array([index[labels_str[i]] for i in train_pos], dtype=np.int64)

    if mode == "embeddings":
        vecs = samples.values(embeddings_field)
        missing = [i for i in train_pos if vecs[i] is None]
        if missing:
            raise ValueError(
                f"{len(missing)} sample(s) have no '{embeddings_field}' embedding; "
                "compute it for every sample or restrict the view"
            )
        inputs = np.stack([np.asarray(vecs[i], dtype=np.float32).ravel() for i in train_pos])
    else:
        paths = samples.values("filepath")
        inputs = [paths[i] for i in train_pos]

    on_epoch_end, bar = _progress_callback(progress, epochs)
    try:
        result = _engine.train(
            inputs, labels, class_names=classes, model=model, mode=mode, epochs=int(epochs),
            threshold=threshold, score=score, seed=seed, on_epoch_end=on_epoch_end,
            progress=bool(progress) if not callable(progress) else False,
            batch_size=batch_size, lr=lr, head=head, **train_kwargs,
        )
    finally:
        if bar is not None:
            bar.close()

    n = len(ids)
    scores = np.full(n, np.nan)
    scores[train_pos] = np.asarray(result.scores, dtype=np.float64)
    flags = np.zeros(n, dtype=bool)
    flags[train_pos] = np.asarray(result.mislabeled, dtype=bool)
    pred_probs = np.asarray(result.pred_probs, dtype=np.float64)
    predicted = np.asarray(result.predicted_labels, dtype=np.int64)
    skipped_pos = train_pos[np.asarray(getattr(result, "skipped", []), dtype=np.int64)]
    if skipped_pos.size:
        logger.warning(
            "SEI skipped %d unreadable image(s) (scored None, not flagged): %s",
            skipped_pos.size,
            ", ".join(samples.select(ids[skipped_pos[:5]].tolist()).values("filepath")),
        )

    score_values = [None if not np.isfinite(s) else float(s) for s in scores]
    flag_values = [bool(f) for f in flags]
    suggestion_values = [None] * n
    skipped_set = set(skipped_pos.tolist())
    for j, pos in enumerate(train_pos):
        if pos in skipped_set or predicted[j] < 0:
            continue
        k = int(predicted[j])
        suggestion_values[pos] = (classes[k], float(pred_probs[j, k]))

    aux = np.asarray(getattr(result, "aux_indices", None) if getattr(result, "aux_indices", None) is not None else [], dtype=np.int64)
    finite = scores[np.isfinite(scores)]
    results = SEIResults(
        samples,
        config,
        brain_key,
        threshold=float(result.threshold),
        score_name=str(getattr(result, "score_name", score)),
        classes=classes,
        num_samples=int(n),
        num_flagged=int(flags.sum()),
        scores_summary=_summary(finite),
        aux_ids=ids[train_pos[aux]].tolist() if aux.size else [],
        skipped_ids=ids[skipped_pos].tolist(),
        train_accuracy=[float(a) for a in (getattr(result, "train_accuracy", None) or [])],
        train_loss=[float(a) for a in (getattr(result, "train_loss", None) or [])],
        backend=brain_method,
    )

    # Everything below writes; nothing above did.
    brain_method.register_run(samples, brain_key, overwrite=True, cleanup=True)
    write_values(samples, brain_key, ids.tolist(), score_values, flag_values, suggestion_values)
    if store_embeddings:
        feats = np.asarray(result.features, dtype=np.float32)
        unread = set(np.asarray(getattr(result, "skipped", []), dtype=np.int64).tolist())
        keep = [j for j in range(len(train_pos)) if j not in unread and np.isfinite(feats[j]).all()]
        samples._root_dataset.select(ids[train_pos[keep]].tolist(), ordered=True).set_values(
            embeddings_field, [feats[j] for j in keep])
    _save_sorted_view(samples, brain_key)
    brain_method.save_run_results(samples, brain_key, results)
    return results


def write_values(samples, brain_key, ids, scores, flags, suggestions):
    """Write the three per-sample fields of a run in one bulk server-side merge.

    ``ids``, ``scores`` (float or None), ``flags`` (bool) and ``suggestions``
    (``(label, confidence)`` or None) are aligned lists. The values go to a temporary
    collection with one ``insert_many`` and are merged into the samples by ``_id`` with a
    single ``$merge`` aggregation: about 10x faster than ``set_values``' per-sample updates
    (see benchmarks/results/fiftyone_speed.md). The fields are declared in the schema first.
    """
    import datetime
    import uuid

    from bson import ObjectId

    import fiftyone.core.odm as foo

    dataset = samples._root_dataset
    score_field, flag_field, sugg_field = field_names(brain_key)
    schema = dataset.get_field_schema()
    if score_field not in schema:
        dataset.add_sample_field(score_field, fof.FloatField)
    if flag_field not in schema:
        dataset.add_sample_field(flag_field, fof.BooleanField)
    if sugg_field not in schema:
        dataset.add_sample_field(sugg_field, fof.EmbeddedDocumentField, embedded_doc_type=fol.Classification)

    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    docs = []
    for _id, score, flag, sugg in zip(ids, scores, flags, suggestions):
        if sugg is not None:
            sugg = {"_id": ObjectId(), "_cls": "Classification", "tags": [],
                    "label": sugg[0], "confidence": sugg[1]}
        docs.append({"_id": ObjectId(_id), score_field: score, flag_field: bool(flag),
                     sugg_field: sugg, "last_modified_at": now})
    if not docs:
        return
    db = foo.get_db_conn()
    tmp = db[f"tmp.sei_{uuid.uuid4().hex}"]
    try:
        tmp.insert_many(docs, ordered=False)
        tmp.aggregate([{"$merge": {"into": dataset._sample_collection_name, "on": "_id",
                                   "whenMatched": "merge", "whenNotMatched": "discard"}}])
    finally:
        tmp.drop()
    dataset._reload_docs()


def _save_sorted_view(samples, brain_key):
    dataset = samples._root_dataset
    name = saved_view_name(brain_key)
    view = _sorted(samples, brain_key, flagged_only=True)
    dataset.save_view(name, view, description=f"SEI run '{brain_key}': flagged samples, most likely mislabeled first", overwrite=True)


def _sorted(samples, brain_key, flagged_only=True):
    score_field, flag_field, _ = field_names(brain_key)
    view = samples.exists(score_field)
    if flagged_only:
        view = view.match(F(flag_field) == True)  # noqa: E712 (a MongoDB expression)
    return view.sort_by(score_field)


def sorted_view(samples, brain_key="sei", *, flagged_only=True):
    """The samples of a run, most likely mislabeled first.

    Args:
        samples: the dataset or view the run was computed on (or any view of it)
        brain_key ("sei"): the run key
        flagged_only (True): keep only samples flagged as mislabeled; ``False`` sorts
            every scored sample

    Returns:
        a :class:`fiftyone.core.view.DatasetView`
    """
    if brain_key not in samples._root_dataset.list_brain_runs():
        raise ValueError(f"No SEI run with brain key '{brain_key}'; run compute_sei first")
    return _sorted(samples, brain_key, flagged_only=flagged_only)


def list_sei_runs(samples):
    """Brain keys of the SEI runs on a collection."""
    return samples.list_brain_runs(type=SEI)


def _summary(finite):
    if finite.size == 0:
        return {}
    q = np.quantile(finite, [0.01, 0.25, 0.5, 0.75, 0.99])
    return {
        "count": int(finite.size),
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "q01": float(q[0]),
        "q25": float(q[1]),
        "median": float(q[2]),
        "q75": float(q[3]),
        "q99": float(q[4]),
    }


def _validate_label_field(samples, label_field):
    fields = classification_fields(samples)
    if label_field not in fields:
        raise ValueError(
            f"label_field must be a Classification field of the collection; got '{label_field}', "
            f"available: {fields or 'none'}"
        )


def _progress_callback(progress, epochs):
    """An ``on_epoch_end`` hook from FiftyOne's ``progress`` convention."""
    if callable(progress):
        def hook(epoch, total, metrics):
            acc = metrics.get("train_accuracy")
            label = f"epoch {epoch}/{total}" + (f", train accuracy {acc:.3f}" if acc is not None else "")
            progress(epoch / max(total, 1), label)
        return hook, None
    import fiftyone as fo

    show = fo.config.show_progress_bars if progress is None else bool(progress)
    if not show:
        return None, None
    import fiftyone.core.utils as fou

    state = {}

    class _Closer:
        def close(self):
            if "bar" in state:
                state["bar"].__exit__(None, None, None)

    def hook(epoch, total, metrics):
        if "bar" not in state:
            state["bar"] = fou.ProgressBar(total=total, progress=True, iters_str="epochs").__enter__()
        state["bar"].set_iteration(min(epoch, total))
    return hook, _Closer()


class SEIConfig(fob.BrainMethodConfig):
    """Configuration of an SEI run.

    Args:
        label_field: the ``Classification`` field that was checked
        model: the model name (or ``"embeddings"``)
        embeddings_field: the vector field trained on, if any
        mode: ``"frozen"``, ``"finetune"`` or ``"embeddings"``
        epochs: training epochs
        threshold: the threshold method or value
        score: the score name
        seed: the random seed
        head: the classifier head, ``"linear"`` or ``"prompt"``
    """

    def __init__(self, label_field=None, model=DEFAULT_MODEL, embeddings_field=None, mode="frozen",
                 epochs=DEFAULT_EPOCHS, threshold="auto", score=DEFAULT_SCORE, seed=0, head=DEFAULT_HEAD, **kwargs):
        super().__init__(**kwargs)
        self.label_field = label_field
        self.model = model
        self.embeddings_field = embeddings_field
        self.mode = mode
        self.epochs = epochs
        self.threshold = threshold
        self.score = score
        self.seed = seed
        self.head = head

    @property
    def type(self):
        return "sei"

    @property
    def method(self):
        return "sei"


class SEI(fob.BrainMethod):
    """The SEI brain method: owns the three output fields and the saved view."""

    def ensure_requirements(self):
        pass

    def get_fields(self, samples, key):
        return list(field_names(key))

    def cleanup(self, samples, key):
        dataset = samples._root_dataset
        schema = dataset.get_field_schema()
        existing = [f for f in field_names(key) if f in schema]
        if existing:
            dataset.delete_sample_fields(existing)
        name = saved_view_name(key)
        if dataset.has_saved_view(name):
            dataset.delete_saved_view(name)

    def rename(self, samples, key, new_key):
        dataset = samples._root_dataset
        schema = dataset.get_field_schema()
        mapping = {o: n for o, n in zip(field_names(key), field_names(new_key)) if o in schema}
        if mapping:
            dataset.rename_sample_fields(mapping)
        old = saved_view_name(key)
        if dataset.has_saved_view(old):
            dataset.delete_saved_view(old)
            _save_sorted_view(dataset, new_key)


class SEIResults(fob.BrainResults):
    """Results of an SEI run.

    Attributes:
        threshold: the cutoff; samples scoring below it are flagged
        score_name: the score written (lower = more likely mislabeled)
        classes: the class list, in the model's output order
        num_samples, num_flagged: counts
        scores_summary: count, mean, std, min, quantiles and max of the scores
        aux_ids: ids of the samples used as auxiliary (pseudo-class) samples
        skipped_ids: ids of samples whose images could not be read
        train_accuracy, train_loss: per-epoch training curves
    """

    def __init__(self, samples, config, brain_key, *, threshold, score_name, classes,
                 num_samples, num_flagged, scores_summary, aux_ids, skipped_ids,
                 train_accuracy, train_loss, backend=None):
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

    @property
    def method(self):
        return self.config.method

    def attributes(self):
        return super().attributes() + [
            "threshold", "score_name", "classes", "num_samples", "num_flagged",
            "scores_summary", "aux_ids", "skipped_ids", "train_accuracy", "train_loss",
        ]

    def sorted_view(self, flagged_only=True):
        """The run's samples, most likely mislabeled first."""
        return _sorted(self.samples, self.key, flagged_only=flagged_only)

    @classmethod
    def _from_dict(cls, d, samples, config, brain_key):
        return cls(
            samples, config, brain_key,
            threshold=d["threshold"], score_name=d["score_name"], classes=d["classes"],
            num_samples=d["num_samples"], num_flagged=d["num_flagged"],
            scores_summary=d.get("scores_summary", {}), aux_ids=d.get("aux_ids", []),
            skipped_ids=d.get("skipped_ids", []), train_accuracy=d.get("train_accuracy", []),
            train_loss=d.get("train_loss", []),
        )
