"""Training protocols built on one run of the engine: the public doors for callers that need more
(or less) than :func:`sei.engine.trainer.fit`.

- :func:`train_scoring_every_sample`: what :func:`sei.train` runs. With the auxiliary
  pseudo-class (an ``aux_*`` threshold, or ``aux_class=True``) the auxiliary samples' own labels
  are never trained, so one run leaves them unscored; a second run WITHOUT the pseudo-class scores
  them, and only their rows are taken from it (scores, ``pred_probs``, ``predicted_labels``).
  Every other sample keeps the first run's values, the cutoff stays the first run's (the one the
  auxiliary samples calibrated), and so do the recorder, the auxiliary indices and the curves.
  ``score_aux_samples=False`` keeps the single run (auxiliary samples NaN, the paper's protocol).
- :func:`fit_head`: the softmax-regression head on fixed features, trained in-process by the
  engine's loss and epoch runner, returned as a predictor of held-out features
  (:class:`HeadPredictor`, ``predict_proba``): what the active-label-correction simulator
  (:func:`sei.active.train_linear`) trains each round.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..recorder import SEIRecorder
from ..thresholds import fill_auxiliary, flag_issues
from .config import TrainConfig
from .heads import LinearHead, MLPHead, extend_transition, prepare_features
from .loop import Run, SampleWeights, TrainState, resolve_device
from .result import TrainResult
from .trainer import _epochs, fit

__all__ = ["train_scoring_every_sample", "fit_head", "HeadPredictor", "AUX_RESCORE_DIR"]

#: Sub-folder of ``checkpoint_dir`` holding the second run's checkpoint (the first run's stays where it was).
AUX_RESCORE_DIR = "aux_rescore"


def train_scoring_every_sample(inputs, labels, cfg: TrainConfig) -> TrainResult:
    """One :func:`~sei.engine.trainer.fit` run, and with the auxiliary pseudo-class a second run
    without it that scores the auxiliary samples (see the module docstring).

    ``cfg.on_epoch_end`` sees the epochs of both runs: its metrics carry ``"run"`` (0 or 1) and
    ``"runs"`` (how many runs the protocol trains). ``on_record``, ``history_path`` and
    ``return_features`` belong to the first run (whose recorder the result carries); a stateful
    ``sample_weights`` object is copied for the second run, which starts from its initial state.
    """
    runs = 2 if (cfg.uses_aux and cfg.score_aux_samples) else 1
    user_hook = cfg.on_epoch_end
    second_weights = copy.deepcopy(cfg.sample_weights) if runs == 2 and hasattr(cfg.sample_weights, "weights") \
        else cfg.sample_weights
    cfg.on_epoch_end = _tagged(user_hook, 0, runs)
    try:
        first = fit(inputs, labels, cfg)
    finally:
        cfg.on_epoch_end = user_hook
    aux = np.asarray(first.aux_indices, dtype=np.int64)
    if runs == 1 or aux.size == 0:
        return first
    second_inputs, mode = inputs, first.config.get("mode")
    # The linear head needs only the features: reuse the first run's (no second embedding pass).
    # The prompt head may start from text-tower prompts, so it reads the inputs again.
    if cfg.head == "linear" and first.features is not None:
        second_inputs, mode = first.features, "embeddings"
    cache_dir = cfg.cache_dir if cfg.cache_dir is not None else (
        Path(cfg.checkpoint_dir) / "embeddings" if cfg.checkpoint_dir else None)
    second_cfg = cfg.replace(
        aux_class=False, threshold=float(first.threshold), score=first.score_name, mode=mode,
        sample_weights=second_weights, on_epoch_end=_tagged(user_hook, 1, runs), on_record=None,
        history_path=None, return_features=False, extra_scores=None, cache_dir=cache_dir,
        checkpoint_dir=None if cfg.checkpoint_dir is None else Path(cfg.checkpoint_dir) / AUX_RESCORE_DIR)
    second = fit(second_inputs, labels, second_cfg)
    scores = fill_auxiliary(np.asarray(first.scores, dtype=np.float64), second.scores, aux)
    return dataclasses.replace(
        first, scores=scores, mislabeled=flag_issues(scores, first.threshold),
        pred_probs=None if first.pred_probs is None or second.pred_probs is None else fill_auxiliary(
            np.asarray(first.pred_probs, dtype=np.float32), second.pred_probs, aux),
        predicted_labels=fill_auxiliary(np.asarray(first.predicted_labels, dtype=np.int64),
                                        second.predicted_labels, aux),
        confidence=fill_auxiliary(np.asarray(first.confidence, dtype=np.float32), second.confidence, aux),
        elapsed_s=first.elapsed_s + second.elapsed_s)


def _tagged(hook, run, runs):
    """``on_epoch_end`` of run ``run`` of ``runs``: the user's hook with the run in its metrics."""
    if hook is None:
        return None

    def call(epoch, epochs, metrics):
        return hook(epoch, epochs, dict(metrics, run=run, runs=runs))
    return call


class HeadPredictor:
    """A trained :class:`~sei.engine.heads.LinearHead` with the standardisation it was trained
    under (the training features' mean and standard deviation, computed once).

    Attributes: ``net`` (the head), ``train_probs`` ((N, K) float64: the final model's
    probabilities on the training features), ``recorder`` (fed every epoch), ``transition``
    ((K, K) float32 array as trained with, or None).
    """

    def __init__(self, net, train_probs, recorder, transition):
        self.net, self.train_probs, self.recorder, self.transition = net, train_probs, recorder, transition

    def predict_proba(self, features) -> np.ndarray:
        """``(n, K)`` float64 class probabilities of ``(n, D)`` features."""
        net = self.net
        x = torch.from_numpy(np.asarray(features, np.float32)).to(net.input_mean.device)
        with torch.no_grad():
            return torch.softmax(net((x - net.input_mean) / net.input_std).float(), -1).cpu().numpy().astype(np.float64)


def fit_head(features, labels, config: TrainConfig, *, num_classes: Optional[int] = None,
             recorder: Optional[SEIRecorder] = None, hidden=()) -> HeadPredictor:
    """Train the linear head on ``(N, D)`` features as ``config`` says; return a :class:`HeadPredictor`.

    ``hidden``: widths of hidden ReLU layers before the class layer (:class:`~sei.engine.heads.MLPHead`;
    ``()``, the default: the linear head itself).

    ``config`` is a :class:`TrainConfig` with ``head="linear"`` (mode ``"embeddings"`` or None);
    it supplies the epochs, learning rate and schedule, batch size, SGD settings, seed, device,
    ``sample_weights``, ``transition_matrix`` / ``transition_mask`` and ``record``. Thresholds,
    scores and the auxiliary class do not apply (no sample is scored here: read ``recorder``).
    ``num_classes``: K (default: ``len(config.class_names)``, else ``max(labels) + 1``).
    ``recorder``: fed every epoch (default a fresh ``SEIRecorder(N, K)``).
    Training uses one torch thread on CPU unless ``config.num_threads`` says otherwise.
    """
    if config.head != "linear":
        raise ValueError(f"fit_head trains the linear head: pass a TrainConfig with head='linear', got {config.head!r}.")
    if config.mode not in (None, "embeddings"):
        raise ValueError(f"fit_head trains on fixed features (mode 'embeddings'), got mode={config.mode!r}.")
    cfg = config if config.mode == "embeddings" else config.replace(mode="embeddings")
    x = np.asarray(features, np.float32)
    y = np.asarray(labels, np.int64)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features must be (N, D) with one row per label, got {x.shape} for {y.shape[0]} labels.")
    n = len(y)
    k = int(num_classes) if num_classes is not None else (
        len(cfg.class_names) if cfg.class_names is not None else int(y.max()) + 1)
    dev = resolve_device(cfg.device)
    threads = 1 if (cfg.num_threads == "auto" and dev.type == "cpu") else (
        None if cfg.num_threads == "auto" else cfg.num_threads)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))  # as sei.train on CPU: the head's small products lose to thread sync
    try:
        torch.manual_seed(cfg.seed)
        net = (MLPHead(x.shape[1], k, hidden) if len(hidden) else LinearHead(x.shape[1], k)).to(dev)
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        st = TrainState(net=net, opt=opt, rec=recorder if recorder is not None else SEIRecorder(n, k),
                        weights=SampleWeights(cfg.sample_weights, n, dev))
        T = None if cfg.transition_matrix is None else extend_transition(cfg.transition_matrix, k, k).to(dev)
        T_mask = None if cfg.transition_mask is None else torch.from_numpy(
            np.asarray(cfg.transition_mask, bool)).to(dev)
        run = Run(cfg=cfg, n=n, c=k, dev=dev, y=torch.from_numpy(y).to(dev), T=T, T_mask=T_mask,
                  valid=torch.arange(n, device=dev))
        run.X = prepare_features(x, np.ones(n, bool), net, dev)
        _epochs(run, st, "embeddings", lambda: None)
        with torch.no_grad():
            probs = torch.softmax(net(run.X).float(), -1).cpu().numpy().astype(np.float64)
    finally:
        torch.set_num_threads(old_threads)
    return HeadPredictor(net, probs, st.rec, None if T is None else T.cpu().numpy())
