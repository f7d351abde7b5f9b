"""Command line: ``python -m sei <command> ...``.

Commands live in :data:`COMMANDS` (name -> (help, add_arguments, run)), added with
:func:`register_command`. The ``train`` command's options and defaults are those of
:class:`sei.engine.TrainConfig`, which validates them before any data is read.

``python -m sei train --images data/train --output runs/sei`` trains the prompt classifier
on a folder-per-class image tree (or ``--embeddings X.npy --labels y.npy``) and writes
``scores.csv`` (one row per sample: path, given label, score, flag, suggested label),
``recorder.npz`` (the :class:`sei.SEIRecorder`, loadable with ``SEIRecorder.load``) and
``summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

COMMANDS: dict = {}


def register_command(name, help, add_arguments, run):
    """Register a subcommand: ``add_arguments(parser)`` then ``run(args) -> int``."""
    COMMANDS[name] = (help, add_arguments, run)


# ----------------------------------------------------------------------------- train
def _default(name):
    """The default of a :class:`sei.engine.TrainConfig` option: one home for every default."""
    from .engine.config import TrainConfig

    return TrainConfig.__dataclass_fields__[name].default


def _add_train_args(p):
    from .constants import DEFAULT_FEATURE_SCORE, DEFAULT_SCORE, HEADS, THRESHOLD_METHODS
    from .engine.config import LR_SCHEDULES, MODES, PLACEMENTS, RECORDS

    src = p.add_argument_group("data")
    g = src.add_mutually_exclusive_group(required=True)
    g.add_argument("--images", metavar="DIR", help="image folder: DIR/<class>/<image> (labels from folders), "
                   "or any folder of images together with --labels CSV")
    g.add_argument("--embeddings", metavar="FILE", help="(N, D) features as .npy (mode embeddings)")
    src.add_argument("--labels", metavar="FILE", help=".npy / .txt (one integer per line) labels, or a CSV with "
                     "columns path,label (label = class name or integer) for --images")
    src.add_argument("--class-names", metavar="NAMES", help="comma-separated class names, or a text file with one "
                     "per line (default: folder names, or 'class 0', ...)")
    m = p.add_argument_group("model")
    m.add_argument("--model", default=_default("model"), help="efficientnet-lite0 (offline), an open_clip name "
                   "(with --pretrained), or a checkpoint path (with --arch)")
    m.add_argument("--pretrained", help="open_clip pretrained tag or checkpoint path")
    m.add_argument("--arch", help="open_clip architecture of a checkpoint given as --model")
    m.add_argument("--mode", choices=MODES, help="default: embeddings for "
                   "--embeddings, frozen for --images")
    m.add_argument("--image-size", type=int, help="input size in pixels (default: the model's)")
    m.add_argument("--head", choices=("auto",) + HEADS, default=_default("head"),
                   help="auto (default): linear on fixed features, prompt when fine-tuning; prompt: the paper's "
                   "cosine prompt head; linear: softmax regression on standardised features (frozen / embeddings "
                   "modes)")
    t = p.add_argument_group("training protocol")
    t.add_argument("--epochs", type=int, default=_default("epochs"))
    t.add_argument("--batch-size", type=int, default=_default("batch_size"),
                   help="the paper's 128; with larger batches scale --lr by batch/128")
    t.add_argument("--lr", type=float, default=_default("lr"))
    t.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=_default("lr_schedule"),
                   help="none: constant lr (authors' code, the default); step: /10 at 50%% and 77%% of the "
                   "epochs (paper)")
    t.add_argument("--logit-scale", default=_default("logit_scale"), help="learned | raw | <float>")
    t.add_argument("--record", choices=RECORDS, default=_default("record"))
    t.add_argument("--no-aux", action="store_true", help="no auxiliary pseudo-class (default: one only when --threshold is aux_mean or aux_quantile)")
    t.add_argument("--num-aux", default=_default("num_aux"), help="paper (N//(K+1)) | code (N//K) | <int>")
    t.add_argument("--prompt-template", default=None, help="default 'a photo of a {}.'")
    t.add_argument("--aux-prompt", default=None)
    t.add_argument("--seed", type=int, default=_default("seed"))
    t.add_argument("--device", default=_default("device"))
    t.add_argument("--placement", choices=PLACEMENTS, default=_default("placement"),
                   help="fine-tuning: decoded images on the device, or in pinned host memory (default: auto)")
    t.add_argument("--num-workers", type=int, default=_default("num_workers"),
                   help="image decoding threads (0: one per core)")
    s = p.add_argument_group("scoring and output")
    s.add_argument("--score", default=None, help=f"score to write (default auto: {DEFAULT_FEATURE_SCORE} on fixed "
                   f"features, {DEFAULT_SCORE} when fine-tuning; sei: the paper's Signed Entropy Integral)")
    s.add_argument("--threshold", default=_default("threshold"), help=" | ".join(THRESHOLD_METHODS) + " | <float>")
    s.add_argument("--output", "-o", required=True, metavar="DIR", help="writes scores.csv, recorder.npz, "
                   "summary.json and checkpoint/ here")
    s.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint")
    s.add_argument("--quiet", action="store_true", help="no progress bar")


class CLIError(ValueError):
    """A usage error: printed as ``error: <message>`` with exit status 2, no traceback."""


def _read_labels(path):
    import numpy as np

    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path), None
    if path.suffix == ".csv":
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "label" not in rows[0]:
            raise CLIError(f"{path}: a labels CSV needs a 'label' column (and 'path' for --images)")
        return [r["label"] for r in rows], [r.get("path") for r in rows]
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()], None


def _encode_labels(raw, names, source):
    """Labels from a file -> (int64 labels, class names).

    Integers (or integral numbers such as ``3.0``) are class indices; non-integral numbers
    are refused (never truncated); strings that are not integers are class names, which must
    all be in ``names`` when given.
    """
    import numpy as np

    arr = np.asarray(raw)
    if arr.ndim != 1:
        raise CLIError(f"--labels {source}: expected one label per sample (1-D), got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64), names
    if arr.dtype.kind == "b":
        raise CLIError(f"--labels {source}: labels are booleans; save integer class indices 0..K-1")
    if arr.dtype.kind in "US":
        vals = [str(v).strip() for v in arr.tolist()]
        if all(v.lstrip("-").isdigit() for v in vals):
            return np.asarray([int(v) for v in vals], dtype=np.int64), names
        try:  # "1.0", "2.5": numbers written as floats
            arr = np.asarray([float(v) for v in vals])
        except ValueError:
            names = names or sorted(set(vals))
            idx = {c: i for i, c in enumerate(names)}
            missing = sorted(set(vals) - set(idx))
            if missing:
                raise CLIError(f"--labels {source}: class(es) {missing[:5]} not in --class-names {names}; add them "
                               "to --class-names or leave --class-names out") from None
            return np.asarray([idx[v] for v in vals], dtype=np.int64), names
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CLIError(f"--labels {source}: label {arr[i]!r} at row {i} is not a whole number "
                           f"({int(bad.sum())} such); labels must be integer class indices 0..K-1 or class names")
        return arr.astype(np.int64), names
    raise CLIError(f"--labels {source}: unsupported label dtype {arr.dtype}; use integers or class names")


def _class_names(arg):
    if arg is None:
        return None
    p = Path(arg)
    if p.is_file():
        return [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    return [c.strip() for c in arg.split(",")]


def _number_or_name(value):
    try:
        return float(value)
    except ValueError:
        return value


def _config(a, TrainConfig, out):
    """The :class:`sei.engine.TrainConfig` of the command line's options (validated)."""
    kw = dict(model=a.model, pretrained=a.pretrained, arch=a.arch, epochs=a.epochs, batch_size=a.batch_size,
              lr=a.lr, lr_schedule=a.lr_schedule, logit_scale=_number_or_name(a.logit_scale), record=a.record,
              aux_class=False if a.no_aux else "auto",
              num_aux=int(a.num_aux) if str(a.num_aux).isdigit() else a.num_aux, head=a.head,
              threshold=_number_or_name(a.threshold), checkpoint_dir=out / "checkpoint", resume=a.resume,
              device=a.device, image_size=a.image_size, num_workers=a.num_workers, seed=a.seed,
              progress=not a.quiet, placement=a.placement)
    for opt in ("prompt_template", "aux_prompt", "score"):
        if getattr(a, opt) is not None:
            kw[opt] = getattr(a, opt)
    return TrainConfig(**kw)


def _run_train(a):
    import numpy as np

    from .engine.data import IMAGE_EXTENSIONS, scan_image_folder
    from .engine import TrainConfig, train_scoring_every_sample

    out = Path(a.output)
    cfg = _config(a, TrainConfig, out)  # every option checked before any data is read
    names = _class_names(a.class_names)
    paths = None
    if a.embeddings:
        if a.labels is None:
            raise CLIError("--embeddings needs --labels")
        inputs = np.load(a.embeddings)
        raw, _ = _read_labels(a.labels)
        labels, names = _encode_labels(raw, names, a.labels)
        mode = a.mode or "embeddings"
    else:
        root = Path(a.images)
        if not root.is_dir():
            raise CLIError(f"--images {root} is not a folder")
        if a.labels is None:
            paths, labels, folder_names = scan_image_folder(root)
            names = names or folder_names
        else:
            raw, col = _read_labels(a.labels)
            if col is None or any(c is None for c in col):
                files = sorted(str(f) for f in root.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
                if len(files) != len(raw):
                    raise CLIError(f"{len(files)} images under {root} but {len(raw)} labels")
                paths = files
            else:
                paths = [str(root / c) for c in col]
            labels, names = _encode_labels(raw, names, a.labels)
        inputs = paths
        mode = a.mode or "frozen"
    if names is not None and len(labels) and int(labels.max()) >= len(names):
        raise CLIError(f"label {int(labels.max())} has no name: --class-names lists {len(names)} classes "
                       f"({names}); give one name per class 0..{int(labels.max())}")
    out.mkdir(parents=True, exist_ok=True)
    res = train_scoring_every_sample(inputs, labels, cfg.replace(class_names=names, mode=a.mode or mode))
    aux = np.zeros(len(labels), dtype=bool)
    aux[res.aux_indices] = True
    with open(out / "scores.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "path", "label", "label_name", "score", "mislabeled", "predicted_label",
                    "predicted_name", "auxiliary", "skipped"])
        skipped = set(res.skipped.tolist())
        for i in range(len(labels)):
            p = res.predicted_labels[i]
            w.writerow([i, paths[i] if paths else "", int(labels[i]), res.class_names[labels[i]],
                        "" if not np.isfinite(res.scores[i]) else f"{res.scores[i]:.6g}", int(res.mislabeled[i]),
                        int(p), res.class_names[p] if p >= 0 else "", int(aux[i]), int(i in skipped)])
    res.recorder.save(out / "recorder.npz")
    summary = {"num_samples": len(labels), "num_flagged": int(res.mislabeled.sum()), "threshold": res.threshold,
               "score": res.score_name, "class_names": res.class_names, "aux_indices": res.aux_indices.tolist(),
               "skipped": res.skipped.tolist(), "train_accuracy": res.train_accuracy, "train_loss": res.train_loss,
               "config": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                          for k, v in res.config.items()}, "elapsed_s": res.elapsed_s}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{int(res.mislabeled.sum())} of {len(labels)} samples flagged (score {res.score_name} < "
          f"{res.threshold:.4g}); wrote {out / 'scores.csv'}, {out / 'recorder.npz'}, {out / 'summary.json'}")
    return 0


register_command("train", "train a classifier (linear on fixed features, prompt when fine-tuning) and score every "
                 "sample from its training dynamics (the score written is in summary.json)", _add_train_args, _run_train)


# ----------------------------------------------------------------------------- main
def build_parser():
    p = argparse.ArgumentParser(prog="python -m sei", description="Find mislabeled images from a classifier's "
                                "training dynamics.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add_args, run) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        add_args(sp)
        sp.set_defaults(_run=run)
    return p


def _is_user_error(e):
    """Errors that mean bad input (printed without a traceback), not a bug."""
    if isinstance(e, (ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                      PermissionError)):
        return True
    return type(e).__name__ == "MissingWeightsError"


def main(argv=None):
    p = build_parser()
    a = p.parse_args(argv)
    if not getattr(a, "_run", None):
        p.print_help()
        return 2
    try:
        return a._run(a)
    except Exception as e:
        if not _is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
