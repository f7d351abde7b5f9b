"""``sei.train``: the face of the training engine (:mod:`sei.engine`).

A CLIP-style prompt classifier whose training dynamics are recorded. Class names become
prompts (``"a photo of a {}."``); an auxiliary pseudo-class prompt (``"a photo of
something else."``) receives randomly relabelled samples; the model's p(y = k | x) is the
softmax of scaled cosine similarities between an image embedding and the K (+1) class
embeddings. Every epoch the predictions are fed to a :class:`sei.SEIRecorder`, whose scores
rank the samples (lower = more likely mislabeled)::

    logits_k = s * <f(x) / |f(x)|, t_k / |t_k|>        s = min(exp(logit_scale), 100)   ("learned")
    loss     = mean_i w_i * CE(softmax(logits_i), y_i)   (forward-corrected: CE(softmax(logits) @ T, y))

Modes
-----
``embeddings``  an (N, D) feature array; a light head trained on tensors held on the device.
``frozen``      the encoder embeds the images once (cached on disk keyed by model, data and
                preprocessing), then as ``embeddings``; class embeddings start from the text
                tower's prompt features when the model has one.
``finetune``    the image tower is trained: images decoded once to uint8, kept on the device
                when they fit, random resized crop + flip + normalisation batched there; the
                text tower stays frozen, prompt features computed once.

Protocol switches (defaults first, the paper's / authors' values one argument away):
``logit_scale`` "learned" | "raw" (authors: raw parameter times unnormalised features) | float;
``lr_schedule`` "none" (authors' code) | "step" (/10 at 50 % and 77 % of the epochs, the paper) | "step10";
``record`` "train" (in the loop, augmented batch, before the optimizer step: authors' code) |
"eval" (a separate pass after each epoch); ``aux_class`` on/off; ``num_aux`` "paper"
(N // (K+1)) | "code" (N // K) | int.

The options are declared and validated once, in :class:`sei.engine.TrainConfig`. This module
imports torch (through the trainer); ``import sei`` reaches it only on first use of ``sei.train``.
"""

from __future__ import annotations

import dataclasses

from ..constants import AUTO_SCORE, DEFAULT_MODEL, DEFAULT_THRESHOLD
from .config import DEFAULT_AUX_PROMPT, DEFAULT_PROMPT_TEMPLATE, TrainConfig
from .protocols import train_scoring_every_sample
from .heads import LinearHead, PromptHead
from .result import TrainResult

__all__ = ["train", "TrainResult", "TrainConfig", "PromptHead", "LinearHead", "DEFAULT_PROMPT_TEMPLATE",
           "DEFAULT_AUX_PROMPT"]


def train(inputs, labels, *, class_names=None, model=DEFAULT_MODEL, pretrained=None, tokenizer=None,
          arch=None, mode=None, epochs=None, batch_size=128, lr=None, momentum=0.9, weight_decay=1e-4,
          lr_schedule="none", logit_scale="learned", record="train", aux_class="auto", num_aux="paper",
          prompt_template=DEFAULT_PROMPT_TEMPLATE, aux_prompt=DEFAULT_AUX_PROMPT, proj_dim=None,
          center_features="auto", learn_class_emb=True, head="auto", score=AUTO_SCORE, threshold=DEFAULT_THRESHOLD,
          sample_weights=None, transition_matrix=None, transition_mask=None, checkpoint_dir=None, resume=False, device="auto",
          image_size=None, num_workers=0, cache_dir=None, seed=0, on_epoch_end=None, on_record=None,
          history_path=None, progress=True, amp=True, num_threads="auto",
          placement="auto", return_features=False, extra_scores=None, score_aux_samples=True, top_k="auto"):
    """Train a prompt classifier and score every sample with its training dynamics.

    Parameters
    ----------
    inputs : np.ndarray or list of str or torch.utils.data.Dataset
        ``(N, D)`` float embeddings (mode ``"embeddings"``); N image file paths; an
        ``(N, H, W, 3)`` uint8 image array; or a Dataset whose items are images or
        ``(image, label)`` pairs (PIL, uint8 HWC, or float CHW in [0, 1]).
    labels : array-like of int, shape (N,)
        Given (possibly noisy) labels in 0..K-1.
    class_names : list of str, optional
        K names used in the prompts; default ``["class 0", ...]``.
    model : str or torch.nn.Module, default ``sei.constants.DEFAULT_MODEL`` ("efficientnet-lite0")
        See :func:`sei.engine.encoders.load_model`; unused in mode ``"embeddings"``.
    pretrained, tokenizer, arch : optional
        open_clip pretrained tag or checkpoint path; tokenizer of a model object;
        architecture of a checkpoint path.
    mode : {"embeddings", "frozen", "finetune"}, optional
        Default: ``"embeddings"`` for a float (N, D) array, else ``"frozen"``.
    epochs : int, optional
        Default: the head's (``sei.constants.HEAD_DEFAULTS``): 10 for the linear head, 150
        (the paper's) for the prompt head.
    batch_size : int, default 128
        The paper's 128. Larger batches (512 and up) use a GPU better; keep the per-sample
        step with the linear scaling rule, ``lr * batch_size / 128`` (e.g. ``lr=4e-3`` at 512;
        :meth:`sei.engine.TrainConfig.lr_for_batch`).
    lr : float, optional
        SGD learning rate; default the head's: 0.002 for the linear head, 1e-3 (the
        paper's) for the prompt head.
    momentum, weight_decay : float, default 0.9, 1e-4
        SGD, as the paper.
    lr_schedule : {"none", "step", "cosine", "step10"}, default "none"
        "none": constant lr (the authors' code; on CIFAR-10N it ranks better than "step":
        AUROC 0.838 vs 0.823 on the worse labels, 0.793 vs 0.780 on aggre, 30 epochs);
        "step": /10 at 50 % and 77 % of the epochs (epochs 75 and 115 of 150, the paper);
        "step10": /10 every 10 epochs (the ALC paper's schedule, ``benchmarks/active.py --protocol paper``).
    logit_scale : "learned" | "raw" | float, default "learned"
        "learned": exp(parameter) clamped at 100 on cosine similarities (CLIP);
        "raw": the parameter itself times unnormalised features (the authors' code);
        a float: fixed scale on cosine similarities.
    record : {"train", "eval"}, default "train"
        "train": the batch's predictions inside the loop, before the optimizer step (the
        authors' code); "eval": a separate pass over all samples after each epoch.
    aux_class : "auto" | bool, default "auto"
        Relabel ``num_aux`` random samples to a pseudo-class prompted by ``aux_prompt``.
        "auto": only when the threshold uses them (``"aux_mean"``, ``"aux_quantile"``). Their
        own label is never trained: a second run scores them (``score_aux_samples``). On CIFAR-10N the aux class barely changes the ranking (AUROC
        0.836 vs 0.830, 30 epochs) and its mean-SEI cutoff is too strict (F1 0.59 vs 0.79
        for the zero cutoff), see ``benchmarks/results/train_speed.md``.
    num_aux : "paper" | "code" | int | float in (0, 1), default "paper"
        "paper": N // (K + 1); "code": N // K (the authors' code).
    prompt_template, aux_prompt : str
    proj_dim : int, optional
        Width of a learned projection before the class embeddings (frozen/embeddings
        modes). Default: none when the features live in the text space, else none either
        (the head is then a cosine classifier on the features).
    center_features : "auto" | bool
        Subtract the feature mean before the cosine (default: when there is no text init).
    head : {"auto", "prompt", "linear"}, default "auto"
        "prompt": the paper's cosine prompt classifier (class embeddings, initialised from
        the text tower's prompts when the model has one). "linear": softmax regression on
        standardised features (:class:`LinearHead`; frozen / embeddings modes only; the
        prompt, scale and projection options do not apply). "auto": ``sei.constants.DEFAULT_HEAD``
        ("linear", chosen by the rule of ``benchmarks/results/defaults.md``: with the default
        score it ranked 0.02-0.10 AUROC points above the 30-epoch prompt head in all 9 frozen-feature
        CIFAR-10N cells) on fixed features, "prompt" when fine-tuning.
    score : str, default "auto"
        Recorder score returned in ``result.scores`` (see ``sei.SCORE_NAMES``), or a
        neighbour-label score (``sei.FEATURE_SCORES``; frozen / embeddings modes, computed
        on the features trained on; not with an auxiliary threshold). "auto"
        (``sei.scores.resolve_score``): ``DEFAULT_FEATURE_SCORE`` ("poe_knn") in the
        frozen / embeddings modes, ``DEFAULT_SCORE`` ("aum_prob") when fine-tuning, with an
        auxiliary threshold or below 21 samples; ``benchmarks/results/defaults.md`` lists the
        cells each won and lost.
    threshold : "auto" | str | float
        Passed to :func:`sei.compute_threshold` ("auto": "cl_count" for "poe_knn", i.e. as
        many of the lowest-scored samples as confident learning counts on its own class
        probabilities; zero for other signed scores such as SEI; a two-component GMM
        otherwise); "aux_mean" is the paper's cutoff (the mean score of the auxiliary
        samples), "aux_quantile" AUM's.
    sample_weights : None | array (N,) | object with ``.weights`` and ``.update(losses)``
        Per-sample loss weights; an object is updated after every epoch with that
        epoch's (N,) per-sample losses.
    transition_matrix : array (K, K), optional
        Row-stochastic noise transition T; the loss becomes forward-corrected CE,
        ``-log (softmax(logits) @ T)[y]``.
    transition_mask : (N,) bool, optional
        Where ``transition_matrix`` applies (plain CE elsewhere): e.g. ``~relabelled`` in
        active label correction, where the labels a person checked are clean. Default: everywhere.
    checkpoint_dir : path, optional
        Write ``checkpoint.pt`` (model, optimizer, recorder, RNG and metrics) every epoch.
    resume : bool, default False
        Continue from ``checkpoint_dir``; gives the same scores as an uninterrupted run. The
        checkpoint records every option and input that changes the training (the array
        options, the features or images and the encoder's weights by content hash); a resume
        with any of them changed raises a ValueError naming it (``epochs`` may grow).
    device : str, default "auto"
        CUDA when present, else CPU.
    image_size : int, optional
        Input size for images (default the model's).
    num_workers : int, default 0
        Threads decoding image files (0: one per core), or DataLoader workers for a Dataset.
        Images are decoded once per run; augmentation runs batched on the device.
    cache_dir : path, optional
        Where frozen embeddings are cached (default ``checkpoint_dir/embeddings`` when given).
    seed : int, default 0
    on_epoch_end : callable(epoch, epochs, metrics), optional
    on_record : callable(epoch, sample_ids, logits, labels), optional
        Sees exactly what is fed to the recorder (numpy), e.g. to log or audit: called for
        each block of up to ``sei.engine.loop.RECORD_ROWS`` (65,536) samples, so several
        times per epoch on large data; every recorded sample appears once per epoch.
    history_path : path, optional
        Spill the (epochs, N, C) probability history to a memmap (``SEIRecorder``).
    progress : bool, default True
        tqdm bar over epochs with loss and accuracy.
    amp : bool, default True
        Mixed precision when fine-tuning on a GPU: bf16 autocast where the GPU supports it,
        fp16 with a gradient scaler otherwise (CPU trains in fp32).
    num_threads : "auto" | int | None
        torch CPU threads while training. "auto": 1 in the frozen/embeddings modes (the
        head's small matrix products are dominated by thread synchronisation, badly so on
        a shared machine; the frozen mode's encoder pass keeps torch's setting), torch's
        setting otherwise. Restored on return.
    placement : {"auto", "device", "host"}, default "auto"
        Where fine-tuning keeps its decoded uint8 images: "device" (on the GPU, no copies),
        "host" (pinned memory, each batch copied while the previous one computes), "auto":
        on the device when they take at most a quarter of its free memory.
    return_features : bool, default False
        Finetune mode: also return the trained image tower's features of every image
        (one extra pass after the last epoch) in ``result.features``, e.g. for
        :func:`sei.feature_score` on the fine-tuned features.
    extra_scores : str or list of str or "all", optional
        Scores besides ``score`` to be readable from ``result.recorder`` afterwards
        (``result.recorder.scores(name)``). Only scores with per-class state need naming
        (``"mean_logp"``, ``"poe_knn"``: an (N, K) sum, 8 N K bytes); every other score is
        always readable.
    top_k : "auto", int or None, default "auto"
        How many of each sample's latest probabilities the recorder keeps, as
        :class:`sei.SEIRecorder`'s ``top_k``: ``"auto"`` keeps all K while N x K <= 2^25 values,
        else the top 5; an int below K keeps that many and the per-class log-probability sums
        as a top-k sketch (``"poe_knn"`` / ``"mean_logp"`` then lower bounds of the exact scores,
        :mod:`sei._logp_top`), and ``result.pred_probs`` is None; None keeps all K.
    score_aux_samples : bool, default True
        With the auxiliary pseudo-class (``aux_class``), train a second run without it and take
        the auxiliary samples' rows of ``scores``, ``pred_probs`` and ``predicted_labels`` from
        it, so that every sample is scored; the cutoff, the recorder and the curves stay the
        first run's (:func:`sei.engine.protocols.train_scoring_every_sample`). False: one run,
        the auxiliary samples scored NaN (the paper's protocol, half the training).

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> import numpy as np, sei
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 300)
    >>> x = np.eye(3)[y] * 3 + rng.normal(size=(300, 3))
    >>> noisy, is_bad = sei.symmetric_noise(y, 0.2, num_classes=3)
    >>> res = sei.train(x.astype("float32"), noisy, class_names=["a", "b", "c"],
    ...                 epochs=20, lr=0.05, progress=False)
    >>> res.scores.shape, res.pred_probs.shape
    ((300,), (300, 3))
    """
    options = locals()  # exactly TrainConfig's fields (pinned by tests/test_engine.py), inputs and labels
    cfg = TrainConfig(**{f.name: options[f.name] for f in dataclasses.fields(TrainConfig)})
    return train_scoring_every_sample(inputs, labels, cfg)
