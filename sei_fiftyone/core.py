"""Mislabeled samples from training dynamics as a FiftyOne Brain run: :func:`compute_sei`.

Algorithm (see ``sei.recorder``): train a classifier on the given labels, record every
sample's training dynamics, and write one score per sample, LOWER = MORE LIKELY
MISLABELED. Which score is the run's ``score`` option: by default (``"auto"``,
:func:`sei.constants.default_score`) ``"poe_knn"`` on the features trained on (the margin of
the epoch-averaged log-probabilities plus the neighbours' label shares) and ``"aum_prob"``
when fine-tuning or with an auxiliary-class threshold; ``"sei"`` is the paper's Signed
Entropy Integral (signed entropy, +H when the prediction agrees with the label and -H
when not, summed over epochs). The run's config and results record the score written
(``results.score_name``), and so does the score field's description. The cutoff is
``sei.compute_threshold`` (``"auto"``: for ``"poe_knn"`` as many of the lowest-scored samples as
confident learning counts on its own class probabilities (``"cl_count"``), zero for other signed
scores; ``"aux_mean"``: the mean score of auxiliary samples relabelled to a pseudo-class, as in
the paper).

Writes three fields, in bulk, only after training succeeded:

    <brain_key>               float, the score (None for skipped samples)
    <brain_key>_mislabeled    bool, score < threshold
    <brain_key>_suggestion    Classification, the model's label and its probability

and a saved view ``<brain_key>_most_likely_mislabeled`` (flagged samples, lowest first).

The adapter converts fields and calls the core: the options are the engine's
(:class:`sei.engine.TrainConfig` validates them and resolves their defaults before any data is
read, and the run's config records the values the engine used); :func:`sei.train` trains and,
with an auxiliary-class threshold, scores every sample by a second run without the
pseudo-class (:mod:`sei.engine.protocols`). This module keeps what is FiftyOne's: the progress
convention (:func:`progress_hook`) and the per-sample values of a run (:func:`assemble`). The
rest lives in internal modules: :mod:`~sei_fiftyone.runs` (the Config / Method / Results triad,
the run's fields and saved view), :mod:`~sei_fiftyone.inputs` (labels, vectors, images) and
:mod:`~sei_fiftyone.writeback` (the switch from the previous run to the new one).
"""

from __future__ import annotations

import logging

import numpy as np

import sei
from sei.constants import AUTO_SCORE
from sei.engine import TrainConfig
from sei.process import without_gc

from . import inputs, zoo
from .model_choices import resolve_model
from .runs import (  # noqa: F401  (SEI, SEIConfig, SEIResults: the classes of runs stored by earlier versions)
    DEFAULT_MODEL,
    SEI,
    Phases,
    SEIConfig,
    SEIResults,
    dataset_of,
    field_names,
    saved_view_name,
    sorted_samples,
    summarize_scores,
    validate_brain_key,
)
from .writeback import exclusive, recover_interrupted_writes, write_values  # noqa: F401  (benchmarks/fiftyone_speed.py)

logger = logging.getLogger(__name__)

#: The share of a run's progress each phase covers (``progress(fraction, label)``; the label
#: names the phase: "read", "train: epoch 3/10, ...", "score", "write").
PHASE_SPANS = {"read": (0.0, 0.05), "train": (0.05, 0.9), "score": (0.9, 0.95), "write": (0.95, 1.0)}


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
    score=AUTO_SCORE,
    batch_size=128,
    lr=None,
    seed=0,
    classes=None,
    head="auto",
    progress=None,
    **train_kwargs,
):
    """Find likely mislabeled samples from the training dynamics of a classifier.

    Trains a classifier on ``label_field`` over the images of ``samples`` (or on the
    vectors stored in ``embeddings_field``), records every sample's training dynamics,
    and writes ``<brain_key>`` (float: the score named by ``score``, by default ``"poe_knn"``
    on the features or ``"aum_prob"`` when fine-tuning; lower = more likely mislabeled),
    ``<brain_key>_mislabeled`` (bool) and ``<brain_key>_suggestion``
    (:class:`fiftyone.core.labels.Classification`: the model's label and confidence).
    The fields are written in bulk after training, beside the previous run and then
    switched in, so a failed run leaves the dataset as it was; rerunning with the same
    ``brain_key`` overwrites the previous run. A ``brain_key`` whose fields or saved
    view already exist without being an SEI run of that key is refused
    (:func:`validate_brain_key`), as is a run in which no sample could be used. A write
    interrupted by a kill is repaired when compute_sei next runs on the dataset: a
    partial write is dropped and the previous run restored, or a run whose values were
    all written is completed (:func:`recover_interrupted_writes`). The run is
    registered as a brain run (``list_brain_runs``, ``load_brain_results``,
    ``delete_brain_run`` all work) and the flagged samples, most likely mislabeled
    first, are saved as the view ``<brain_key>_most_likely_mislabeled``.

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection` (dataset or view)
        label_field: the ``Classification`` field holding the labels to check
        brain_key ("sei"): the run key, also the name of the score field; must not name
            an existing field that is not this run's (see :func:`validate_brain_key`)
        model ("efficientnet-lite0"): the image model: a name of the App's list
            (:data:`sei_fiftyone.model_choices.MODEL_CHOICES`: ``"efficientnet-lite0"``,
            which ships its weights with pip and works offline; ``"zoo:<name>"``: any FiftyOne zoo
            model that produces embeddings (:mod:`sei_fiftyone.zoo`: FiftyOne's loading, cache
            and errors; frozen only; weights absent offline raise a ValueError at once); open_clip's CLIP weights
            as ``"<arch>:<tag>"``, e.g. ``"ViT-B-32:openai"``, ``"RN50:openai"``; FiftyOne
            zoo CLIP models by zoo name, ``"clip-vit-base32-torch"``), any other
            open_clip ``"<arch>:<tag>"``, a local checkpoint file (with ``arch=<open_clip
            architecture>``) or an open_clip model folder (``open_clip_config.json`` and
            the weights), anything else ``sei.train`` loads; or ``"embeddings"`` together
            with ``embeddings_field``. Weights that are neither cached nor downloadable
            raise ``sei.engine.encoders.MissingWeightsError`` before training
            (``sei.engine.encoders.weights_problem`` asks without loading)
        embeddings_field (None): a vector field to train on instead of the images. If
            no such field exists yet, ``model`` embeds the images (frozen) and the
            vectors are stored there when the run succeeds, so later runs and
            ``suggest_relabels`` (kNN graph) reuse them
        mode (None): ``"frozen"`` (default for images), ``"finetune"`` (trains the
            image tower; needs ``head="prompt"``), or ``"embeddings"`` (implied by
            ``embeddings_field``)
        epochs (None): training epochs; default 10 for the linear head, 150 (the
            paper's) for the prompt head
        threshold ("auto"): ``"auto"``, ``"aux_mean"``, ``"aux_quantile"``, ``"zero"``,
            ``"gmm"``, ``"cl_count"`` or a number; see ``sei.compute_threshold``
        score ("auto"): which score to write: "auto" is ``sei.constants.default_score``
            (``DEFAULT_FEATURE_SCORE``, "poe_knn", on the features trained on; ``DEFAULT_SCORE``,
            "aum_prob", when fine-tuning or with an auxiliary-class threshold;
            ``benchmarks/results/defaults.md``; the run's config records the resolved name), or a
            training-dynamics score (``sei.SCORE_NAMES``; "sei" is the paper's) or a
            neighbour-label score (``sei.FEATURE_SCORES``: "aum_prob_knn" averages
            "aum_prob" with the label agreement of each sample's 20 nearest neighbours in
            the features the model trained on)
        batch_size (128): mini-batch size
        lr (None): learning rate; default 0.002 for the linear head, 1e-3 (the
            paper's) for the prompt head
        seed (0): random seed
        classes (None): the class list; default the distinct labels, sorted
        head ("auto"): the classifier ``sei.train`` fits: ``"auto"`` is ``"linear"`` on
            frozen features or embeddings and ``"prompt"`` when fine-tuning (recorded resolved);
            ``"linear"`` (softmax regression on standardised features; fast, and the
            better detector on the bundled CIFAR-10N sample) or ``"prompt"`` (the
            paper's CLIP-style cosine prompt head). With an auxiliary-class threshold
            (``"aux_mean"``, ``"aux_quantile"``) a second run without the pseudo-class
            scores the samples the first one relabelled
        progress (None): whether to render a progress bar (True/False/None for the
            FiftyOne default), or a callable ``progress(fraction, label)``
        **train_kwargs: passed on to :func:`sei.train` (``image_size``, ``device``,
            ``pretrained``, ``arch``, ``lr_schedule``, ``weight_decay``,
            ``checkpoint_dir``, ...)

    Every option is recorded in the run's config, with the values the engine resolved its
    defaults to (``head``, ``epochs``, ``lr``, ``score``; ``classes``), so ``compute_sei(samples, **dataset.get_brain_info(key).config.compute_kwargs())``
    repeats a run (see :meth:`SEIConfig.compute_kwargs`; an option without a JSON form,
    such as a callback, is recorded by its ``repr`` only).

    Returns:
        a :class:`SEIResults`

    Raises:
        ValueError: a bad argument or ``brain_key``, or no usable sample (every image
            unreadable); nothing is written then

    Example::

        import sei_fiftyone as sfo

        results = sfo.compute_sei(dataset, "ground_truth", epochs=10)
        view = sfo.sorted_view(dataset)          # flagged, most likely mislabeled first
        config = dataset.get_brain_info("sei").config
        again = sfo.compute_sei(dataset, brain_key="sei_again", **config.compute_kwargs())
    """
    recover_interrupted_writes(samples)
    validate_brain_key(samples, brain_key)
    model, mode = inputs.resolve_source(samples, brain_key, model=model, embeddings_field=embeddings_field,
                                        mode=mode)
    inputs.check_label_field(samples, label_field)
    zoo_model = zoo.zoo_name(model) if zoo.is_zoo_model(model) and mode != "embeddings" else None
    if zoo_model is not None:  # FiftyOne's zoo embeds the images; the engine trains on the vectors
        if mode == "finetune":
            raise ValueError(f"model={model!r} is a FiftyOne zoo model, which SEI runs frozen (the zoo embeds the "
                             "images once); use mode='frozen', or an open_clip model to fine-tune")
        problem = zoo.zoo_problem(zoo_model)
        if problem is not None:
            raise ValueError(problem)
    labels = inputs.read_labels(samples, label_field, classes)
    # the engine's rules and defaults (head, epochs, lr), before any data is read
    engine_mode = "embeddings" if zoo_model is not None else mode
    options = dict(class_names=labels.classes,
                   model=resolve_model(model) if engine_mode != "embeddings" else None,
                   mode=engine_mode, epochs=epochs, batch_size=batch_size, lr=lr, head=head, score=score,
                   threshold=threshold, seed=seed, **train_kwargs)
    resolved = TrainConfig(**options)
    config = SEIConfig(
        label_field=label_field, model=model, embeddings_field=embeddings_field, mode=mode,
        epochs=resolved.epochs, threshold=threshold, score=score, batch_size=batch_size, lr=resolved.lr, seed=seed,
        classes=labels.classes, head=resolved.head, train_kwargs=train_kwargs,
    )
    brain_method = config.build()
    brain_method.ensure_requirements()
    brain_method.validate_run(samples, brain_key, overwrite=True)
    phases = Phases(progress, PHASE_SPANS)
    with phases.phase("read"):
        data = None if zoo_model is not None else inputs.read_training_inputs(samples, config, labels.positions)
    with phases.phase("train"):
        if zoo_model is not None:
            phases.step("train", 0.0, f"embedding with zoo model {zoo_model}")
            data = zoo.embed(samples, zoo_model, labels.positions)
        result = train(data, labels.labels, options,
                       progress=(lambda f, label: phases.step("train", f, label)) if callable(progress) else progress)
    # what the engine used, recorded resolved ("auto" scores depend on the readable samples), so that
    # a later version's defaults cannot change what a stored run repeats
    config.score = str(result.score_name)
    config.epochs, config.lr, config.head = result.config["epochs"], result.config["lr"], result.config["head"]
    with phases.phase("score"):
        values, results = assemble(samples, brain_method, brain_key, labels, result,
                                   store_embeddings=inputs.stores_embeddings(config))
    results.timings = dict(phases.seconds)  # "write" is added by the write itself
    # Everything below writes; nothing above did. Under the dataset's write lease the key is
    # checked again: another writer may have created a field of that name while this one trained.
    phases.step("write", 0.0)
    with exclusive(samples):
        validate_brain_key(samples, brain_key)
        write_values(samples, brain_key, **values, run=(brain_method, results))
    phases.step("write", 1.0)
    # the write's own seconds, as the write recorded them with the run
    results.timings = dict(dataset_of(samples).load_brain_results(brain_key, cache=False).timings)
    return results


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
    if brain_key not in dataset_of(samples).list_brain_runs():
        raise ValueError(f"No SEI run with brain key '{brain_key}'; run compute_sei first")
    return sorted_samples(samples, brain_key, flagged_only=flagged_only)


def list_sei_runs(samples):
    """Brain keys of the SEI runs on a collection."""
    return samples.list_brain_runs(type=SEI)


def train(data, labels, options, *, progress=None):
    """:func:`sei.train` with the run's options (``options``: its keyword arguments, as
    :func:`compute_sei` resolved the fields into them); returns its ``TrainResult``, every
    readable sample scored.

    ``progress`` follows FiftyOne's convention (True/False/None, or a callable
    ``progress(fraction, label)``); the epochs of both runs of an auxiliary-class threshold
    count towards it.
    """
    on_epoch_end, bar = progress_hook(progress)
    hook = None
    if on_epoch_end is not None:
        def hook(epoch, total, m):
            runs = m.get("runs", 1)
            on_epoch_end(m.get("run", 0) * total + epoch + 1, runs * total, m.get("accuracy"))
    try:
        return sei.train(data, labels, **options, on_epoch_end=hook,
                         progress=bool(progress) if not callable(progress) else False)
    finally:
        if bar is not None:
            bar.close()


def progress_hook(progress):
    """``(on_epoch_end(done, total, accuracy), closer or None)`` from FiftyOne's ``progress``."""
    if callable(progress):
        def hook(done, total, acc):
            label = f"epoch {done}/{total}" + (f", train accuracy {acc:.3f}" if acc is not None else "")
            progress(done / max(total, 1), label)
        return hook, None
    import fiftyone as fo
    import fiftyone.core.utils as fou

    if not (fo.config.show_progress_bars if progress is None else bool(progress)):
        return None, None
    state = {}

    class _Closer:
        def close(self):
            if "bar" in state:
                state["bar"].__exit__(None, None, None)

    def hook(done, total, acc):
        if "bar" not in state:
            state["bar"] = fou.ProgressBar(total=total, progress=True, iters_str="epochs").__enter__()
        state["bar"].set_iteration(min(done, total))
    return hook, _Closer()


@without_gc
def assemble(samples, backend, brain_key, labels, result, *, store_embeddings=False):
    """The values to write and the :class:`SEIResults` of a run.

    Args:
        samples: the run's collection
        backend: the run's :class:`sei_fiftyone.SEI`
        brain_key: the run key
        labels: the :class:`sei_fiftyone.inputs.Labels` trained on
        result: what :func:`train` returned
        store_embeddings (False): also return the trained features to store in
            ``config.embeddings_field``

    Returns:
        ``(values, results)``: ``values`` holds the keyword arguments of
        :func:`sei_fiftyone.writeback.write_values` (``ids``, ``scores``, ``flags``,
        ``suggestions``, ``embeddings``)

    Raises:
        ValueError: no sample received a finite score (nothing is written then)
    """
    ids, pos, classes = labels.ids, labels.positions, labels.classes
    n = len(ids)
    scores = np.full(n, np.nan)
    scores[pos] = np.asarray(result.scores, dtype=np.float64)
    flags = np.zeros(n, dtype=bool)
    flags[pos] = np.asarray(result.mislabeled, dtype=bool)
    skipped = np.asarray(result.skipped, dtype=np.int64)
    _check_usable(samples, ids, pos, pos[skipped], scores)
    suggestions = [None] * n
    readable = np.ones(len(pos), dtype=bool)
    readable[skipped] = False
    confidence = np.asarray(result.confidence, dtype=np.float64)
    for j, k in enumerate(np.asarray(result.predicted_labels, dtype=np.int64)):
        if readable[j] and k >= 0:
            suggestions[pos[j]] = (classes[k], float(confidence[j]))
    embeddings = None
    if store_embeddings:
        feats = np.asarray(result.features, dtype=np.float32)
        keep = np.flatnonzero(readable & np.isfinite(feats).all(axis=1))
        embeddings = (backend.config.embeddings_field, ids[pos[keep]].tolist(), list(feats[keep]))
    aux = np.asarray(result.aux_indices, dtype=np.int64)
    results = SEIResults(
        samples, backend.config, brain_key, threshold=float(result.threshold), score_name=str(result.score_name),
        classes=list(classes), num_samples=int(n), num_flagged=int(flags.sum()),
        scores_summary=summarize_scores(scores), aux_ids=ids[pos[aux]].tolist(),
        skipped_ids=ids[pos[skipped]].tolist(), train_accuracy=[float(a) for a in result.train_accuracy],
        train_loss=[float(a) for a in result.train_loss], backend=backend,
    )
    values = dict(ids=ids.tolist(), scores=[float(s) if np.isfinite(s) else None for s in scores],
                  flags=[bool(f) for f in flags], suggestions=suggestions, embeddings=embeddings)
    return values, results


def _check_usable(samples, ids, positions, skipped, scores):
    """Warn about unreadable images; raise when no sample received a finite score."""
    def paths(k):
        return ", ".join(samples.select(ids[skipped[:k]].tolist()).values("filepath"))

    if skipped.size:
        logger.warning("SEI skipped %d unreadable image(s) (scored None, not flagged): %s", skipped.size, paths(5))
    if not np.isfinite(scores).any():
        what = (f"all {skipped.size} image(s) could not be read (e.g. {paths(3)})"
                if skipped.size == positions.size else "no sample received a finite score")
        raise ValueError(f"SEI found no usable sample: {what}; nothing was written. Fix the file paths "
                         "(or the embeddings), or restrict the view to usable samples")
