"""One training run from a :class:`TrainConfig`: set up, resume, train epoch by epoch, score.

Order of work (each step only after the previous one succeeded, so bad input costs
nothing): config validated -> data checked -> auxiliary labels drawn -> model loaded and
images decoded once (or features embedded, cached) -> network, optimizer, recorder ->
checkpoint restored -> epochs -> :class:`TrainResult`.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..recorder import SEIRecorder
from ..thresholds import draw_auxiliary
from ..validation import check_mask
from .checkpoint import CKPT_NAME, check_same_run, clean_stale_tmp, load_checkpoint, run_fingerprint, save_checkpoint
from .config import TrainConfig
from .heads import build_finetune, build_head, extend_transition, prepare_features
from .images import ImageStore, channels_last
from .inputs import check_data, no_readable_input
from .loop import Run, SampleWeights, TrainState, autocast_dtype, dist_info, finetuned_features, lr_factor, \
    resolve_device, rng_seed, run_epoch
from .result import finish, neighbour_search

__all__ = ["fit"]


def _num_aux(num_aux, n, k):
    if num_aux is None or num_aux == "paper":
        return n // (k + 1)
    if num_aux == "code":
        return n // k
    if isinstance(num_aux, float) and 0 < num_aux < 1:
        return int(round(num_aux * n))
    return int(num_aux)


def _prompts(cfg, class_names, use_aux):
    ps = [cfg.prompt_template.format(c) for c in class_names]
    if use_aux:
        ps.append(cfg.aux_prompt)
    return ps


def fit(inputs, labels, cfg: TrainConfig):
    """Train as ``cfg`` says and return a :class:`~sei.engine.result.TrainResult`."""
    t_start = time.time()
    inputs, labels, class_names, k, mode = check_data(inputs, labels, cfg)
    rank, world = dist_info()
    dev = resolve_device(cfg.device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    old_threads = torch.get_num_threads()
    num_threads = cfg.num_threads
    if num_threads == "auto":  # the head's small products lose to thread sync on CPU
        num_threads = 1 if (mode != "finetune" and dev.type == "cpu") else None
    try:
        if num_threads and mode == "embeddings":
            torch.set_num_threads(int(num_threads))
        return _fit(inputs, labels, cfg, class_names, k, mode, rank, world, dev, num_threads, t_start)
    finally:
        torch.set_num_threads(old_threads)


def _aux_labels(cfg, labels, k):
    """``(labels trained on, auxiliary indices)``: the pseudo-class draw when the config uses it."""
    if not cfg.uses_aux:
        return labels.copy(), np.zeros(0, dtype=np.int64)
    # A seed derived from ``seed``: with the raw seed, draw_auxiliary would pick exactly the
    # positions that sei.symmetric_noise(..., seed=seed) flips (same generator, same draw).
    aux_seed = int(np.random.SeedSequence([int(cfg.seed), 0xA5C1]).generate_state(1)[0])
    return draw_auxiliary(labels, k, num_aux=_num_aux(cfg.num_aux, len(labels), k), seed=aux_seed)


def _load_data(inputs, cfg, mode, class_names, dev, rank):
    """``(bundle, size, class_init, features, store, valid)``: the model, then features (embeddings /
    frozen) or decoded images (finetune); ``valid`` marks the readable inputs."""
    bundle, features, store, class_init, size = None, None, None, None, 0
    if mode == "embeddings":
        features = np.asarray(inputs, dtype=np.float32)
        return bundle, size, class_init, features, store, np.isfinite(features).all(1)
    from .embedding import embed_images
    from .encoders import encode_text, load_model

    bundle = load_model(cfg.model, pretrained=cfg.pretrained, tokenizer=cfg.tokenizer, arch=cfg.arch,
                        image_size=cfg.image_size)
    size = int(cfg.image_size or bundle.image_size)
    class_init = encode_text(bundle, _prompts(cfg, class_names, cfg.uses_aux), device="cpu")
    if mode == "frozen":
        cdir = cfg.cache_dir if cfg.cache_dir is not None else (
            Path(cfg.checkpoint_dir) / "embeddings" if cfg.checkpoint_dir else None)
        features, skipped = embed_images(bundle, inputs, image_size=size, batch_size=256, device=dev,
                                         cache_dir=cdir, num_workers=cfg.num_workers,
                                         progress=cfg.progress and rank == 0, return_skipped=True)
        valid = np.ones(len(inputs), dtype=bool)
        valid[skipped] = False
        return bundle, size, class_init, features, store, valid
    store = ImageStore(inputs, size, dev, placement=cfg.placement, num_workers=cfg.num_workers,
                       progress=cfg.progress and rank == 0)
    return bundle, size, class_init, features, store, store.ok.copy()


def _build_state(cfg, mode, n, c, dev, world, bundle, class_init, features, weights):
    """Network (head, or tower + head in the device's layout: :func:`~sei.engine.images.channels_last`),
    SGD, recorder, DDP wrapper, fp16 scaler (autocast only on CUDA: :func:`~sei.engine.loop.autocast_dtype`)."""
    if mode == "finetune":
        net = build_finetune(cfg, bundle, c, class_init).to(dev)
        if channels_last(dev):
            net = net.to(memory_format=torch.channels_last)
    else:
        net = build_head(cfg, features, c, class_init, bundle).to(dev)
    amp_dtype = autocast_dtype(dev, cfg.amp) if mode == "finetune" else None
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    ddp_net = None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp_net = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    st = TrainState(net=net, opt=opt, rec=SEIRecorder(n, c, max_epochs=cfg.epochs, history_path=cfg.history_path,
                                                          extra_scores=_recorded_scores(cfg), top_k=cfg.top_k),
                    weights=weights, ddp_net=ddp_net,
                    scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None)
    return st, amp_dtype


def _recorded_scores(cfg):
    """The scores whose state the run's recorder keeps: the run's own and ``extra_scores``."""
    if cfg.extra_scores == "all":
        return "all"
    return (cfg.score,) + tuple((cfg.extra_scores,) if isinstance(cfg.extra_scores, str) else cfg.extra_scores or ())


def _fit(inputs, labels, cfg, class_names, k, mode, rank, world, dev, num_threads, t_start):
    n = labels.shape[0]
    torch.manual_seed(cfg.seed)
    labels_used, aux_indices = _aux_labels(cfg, labels, k)
    c = k + 1 if cfg.uses_aux else k
    weights = SampleWeights(cfg.sample_weights, n, dev)  # shape checked before any model work
    T = extend_transition(cfg.transition_matrix, c, k).to(dev) if cfg.transition_matrix is not None else None
    T_mask = None if cfg.transition_mask is None else torch.from_numpy(
        check_mask(cfg.transition_mask, n, "transition_mask").copy()).to(dev)
    bundle, size, class_init, features, store, valid = _load_data(inputs, cfg, mode, class_names, dev, rank)
    if not valid.any():
        raise no_readable_input(inputs, n)
    fingerprint = _fingerprint(cfg, mode, inputs, features, bundle) if cfg.checkpoint_dir else None
    cfg.check_mode(mode, int(valid.sum()))  # score='auto' for the samples that can be scored
    if num_threads and mode == "frozen":
        torch.set_num_threads(int(num_threads))
    st, amp_dtype = _build_state(cfg, mode, n, c, dev, world, bundle, class_init, features, weights)
    run = Run(cfg=cfg, n=n, c=c, dev=dev, y=torch.from_numpy(labels_used).to(dev), rank=rank, world=world, T=T, T_mask=T_mask,
              store=store, size=size, mean=tuple(bundle.mean) if bundle else (0, 0, 0),
              std=tuple(bundle.std) if bundle else (1, 1, 1), amp_dtype=amp_dtype,
              valid=torch.from_numpy(np.flatnonzero(valid)).to(dev))
    if features is not None:
        run.X = prepare_features(features, valid, st.net, dev)

    ckpt_path = Path(cfg.checkpoint_dir) / CKPT_NAME if cfg.checkpoint_dir else None
    if ckpt_path is not None and rank == 0:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_tmp(ckpt_path)
    # fixed features: the score's neighbours are searched while the epochs train
    neighbours = neighbour_search(cfg, features) if mode != "finetune" else None
    try:
        if cfg.resume and ckpt_path is not None and ckpt_path.exists():
            _restore(ckpt_path, st, n, c, labels_used, cfg.epochs, fingerprint)
        _epochs(run, st, mode, lambda: _save(ckpt_path, st, cfg, n, c, labels_used, valid, fingerprint)
                if ckpt_path is not None and rank == 0 else None)
        if mode == "finetune" and cfg.return_features:  # the fine-tuned tower's features
            features = finetuned_features(run, st)
        skipped = np.flatnonzero(~valid)
        if skipped.size and rank == 0:
            warnings.warn(f"{skipped.size} unreadable input(s) skipped (scored NaN): indices {skipped[:10].tolist()}"
                          + ("..." if skipped.size > 10 else ""), RuntimeWarning, stacklevel=3)
        config = dict(cfg.to_dict(), mode=mode, aux_class=cfg.uses_aux, num_aux=len(aux_indices),
                      model=getattr(bundle, "name", None) if bundle else "embeddings")
        return finish(st.rec, cfg, k=k, aux_indices=aux_indices, labels_used=labels_used, metrics=st.metrics,
                      features=features, skipped=skipped, class_names=class_names, t_start=t_start, config=config,
                      neighbours=neighbours)
    except BaseException:  # a failed run leaves no search running
        if neighbours is not None:
            neighbours.cancel()
        raise


def _fingerprint(cfg, mode, inputs, features, bundle):
    """:func:`~sei.engine.checkpoint.run_fingerprint` of this run, before any training: the
    features trained on (embeddings, frozen), or the images and the tower's initial weights."""
    from ..fingerprint import array_fingerprint

    if features is not None:
        return run_fingerprint(cfg, array_fingerprint(features))
    from .embedding import _data_fingerprint
    from .encoders import weights_fingerprint
    from .images import is_path_list

    data = _data_fingerprint(inputs) if isinstance(inputs, np.ndarray) or is_path_list(inputs) else type(inputs).__name__
    return run_fingerprint(cfg, data, weights_fingerprint(bundle.visual))


def _epochs(run: Run, st: TrainState, mode, checkpoint):
    """The epochs left to train: lr schedule, one epoch, recorder, weights, checkpoint, progress."""
    cfg = run.cfg
    bar = None
    if cfg.progress and run.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, initial=st.epoch, desc=f"sei.train[{mode}]", unit="epoch")
    for epoch in range(st.epoch, cfg.epochs):
        for g in st.opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(cfg.lr_schedule, epoch, cfg.epochs)
        torch.manual_seed(rng_seed(cfg.seed, epoch))
        loss, acc = run_epoch(run, st, epoch)
        st.rec.end_epoch()
        st.metrics["train_loss"].append(loss)
        st.metrics["train_accuracy"].append(acc)
        st.weights.after_epoch(np.nan_to_num(st.rec.last_losses, nan=0.0))
        st.epoch = epoch + 1
        checkpoint()
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}")
            bar.update(1)
        if cfg.on_epoch_end is not None:
            cfg.on_epoch_end(epoch, cfg.epochs, {"loss": loss, "accuracy": acc, "lr": st.opt.param_groups[0]["lr"],
                                                 "epoch": epoch})
    if bar is not None:
        bar.close()


def _save(path, st: TrainState, cfg, n, c, labels_used, valid, fingerprint):
    w = st.weights
    save_checkpoint(path, {
        "epoch": st.epoch - 1, "n": n, "c": c, "labels_used": labels_used, "model": st.net.state_dict(),
        "optimizer": st.opt.state_dict(), "recorder": st.rec.state_dict(), "metrics": st.metrics,
        "weights": None if w.t is None else w.t.cpu().numpy(),
        "weights_obj": w.obj.state_dict() if hasattr(w.obj, "state_dict") else None,
        "skipped": np.flatnonzero(~valid).tolist(),
        "scaler": st.scaler.state_dict() if st.scaler is not None else None,
        "config": cfg.to_dict(),
        "fingerprint": fingerprint,
    })


def _restore(path, st: TrainState, n, c, labels_used, epochs, fingerprint):
    ck = load_checkpoint(path)
    if ck["n"] != n or ck["c"] != c or not np.array_equal(ck["labels_used"], labels_used):
        raise ValueError(f"checkpoint {path} was written for other data (N, classes or labels differ): pass "
                         "another checkpoint_dir, or resume=False to train from scratch")
    check_same_run(path, ck, fingerprint)
    done = int(ck["epoch"]) + 1
    if done > epochs:
        raise ValueError(f"checkpoint {path} has {done} epochs trained but epochs={epochs}: pass "
                         f"epochs>={done} to continue it, or resume=False (or another checkpoint_dir) to train "
                         f"{epochs} epochs from scratch")
    st.net.load_state_dict(ck["model"])
    st.opt.load_state_dict(ck["optimizer"])
    st.rec.load_state_dict(ck["recorder"])
    st.metrics = {k_: list(v_) for k_, v_ in ck["metrics"].items()}
    st.epoch = done
    w = st.weights
    if ck.get("weights") is not None:
        w.refresh(ck["weights"])
    if w.obj is not None:
        if ck.get("weights_obj") is not None and hasattr(w.obj, "load_state_dict"):
            w.obj.load_state_dict(ck["weights_obj"])
            w.refresh(w.obj.weights)
        else:
            warnings.warn(f"sample_weights ({type(w.obj).__name__}) has no state_dict/load_state_dict: its state is "
                          "not restored, so the resumed scores can differ from an uninterrupted run",
                          RuntimeWarning, stacklevel=4)
    if st.scaler is not None and ck.get("scaler") is not None:
        st.scaler.load_state_dict(ck["scaler"])
