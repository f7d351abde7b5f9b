"""Training for :func:`sei_fiftyone.compute_sei`: ``sei.train`` and nothing else, and the
run's per-sample values assembled from its result.

The adapter adds two things only:

* defaults for an interactive tool: the ``"linear"`` head (softmax regression on frozen,
  standardised features) at lr 0.002 for 10 epochs, which on the bundled CIFAR-10N sample
  finds the human label errors better than the paper's cosine prompt head (README,
  "FiftyOne"); ``head="prompt"`` gives the paper's setup;
* every sample gets a score: with an auxiliary-class threshold a second run without the
  pseudo-class scores the auxiliary samples (the core's policy,
  :func:`sei.thresholds.fill_auxiliary`).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

import sei
from sei.constants import HEAD_DEFAULTS
from sei.thresholds import fill_auxiliary, flag_issues, uses_auxiliary

from .model_choices import resolve_model
from .runs import SEIResults, summarize_scores

logger = logging.getLogger(__name__)

DEFAULT_EPOCHS = {head: d["epochs"] for head, d in HEAD_DEFAULTS.items()}
DEFAULT_LR = {head: d["lr"] for head, d in HEAD_DEFAULTS.items()}


def train(inputs, labels, config, *, train_kwargs=None, progress=None):
    """``sei.train`` with the run's options; returns its ``TrainResult`` with every readable
    sample scored (see the module docstring).

    ``train_kwargs`` are the extra ``sei.train`` options as given (the Config keeps them as
    JSON values). ``progress`` follows FiftyOne's convention (True/False/None, or a callable
    ``progress(fraction, label)``); the epochs of both runs count towards it.
    """
    kwargs = dict(train_kwargs or {})
    runs = 2 if uses_auxiliary(config.threshold, kwargs.get("aux_class", "auto")) else 1
    on_epoch_end, bar = progress_hook(progress)
    model = resolve_model(config.model) if config.mode != "embeddings" else None
    common = dict(class_names=config.classes, model=model,
                  mode=config.mode, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                  head=config.head, score=config.score, seed=config.seed,
                  progress=bool(progress) if not callable(progress) else False, **kwargs)

    def hook(r):
        if on_epoch_end is None:
            return None

        def call(epoch, total, m):
            on_epoch_end(r * total + epoch + 1, runs * total, m.get("accuracy"))
        return call

    try:
        first = sei.train(inputs, labels, **{**common, "threshold": config.threshold}, on_epoch_end=hook(0))
        aux = np.asarray(first.aux_indices, dtype=np.int64)
        if runs == 1 or aux.size == 0:
            return first
        # The linear head needs only the features: reuse the first run's (no second embedding
        # pass). The prompt head may start from text-tower prompts, so it gets the images again.
        second_inputs = inputs
        if config.head == "linear" and first.features is not None:
            second_inputs, common["mode"] = first.features, "embeddings"
        common["aux_class"] = False
        second = sei.train(second_inputs, labels, **common, threshold=first.threshold, on_epoch_end=hook(1))
    finally:
        if bar is not None:
            bar.close()
    scores = fill_auxiliary(np.asarray(first.scores, dtype=np.float64), second.scores, aux)
    return dataclasses.replace(
        first, scores=scores, mislabeled=flag_issues(scores, first.threshold),
        pred_probs=fill_auxiliary(np.asarray(first.pred_probs, dtype=np.float32), second.pred_probs, aux),
        predicted_labels=fill_auxiliary(np.asarray(first.predicted_labels, dtype=np.int64),
                                        second.predicted_labels, aux))


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
    pred_probs = np.asarray(result.pred_probs, dtype=np.float64)
    for j, k in enumerate(np.asarray(result.predicted_labels, dtype=np.int64)):
        if readable[j] and k >= 0:
            suggestions[pos[j]] = (classes[k], float(pred_probs[j, k]))
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
