"""What every benchmark shares: detection metrics, the confident-learning baseline, plotting and
the small CLI bits (a time guard, writing a table and its json).

* :func:`detection_metrics`: the one place a benchmark turns a score (lower = more likely
  mislabeled) and a flag mask into AUROC / AUPRC / F1 / precision / recall against the truth.
* :func:`confident_learning` and :func:`kfold_probs`: the confident-learning baseline, K-fold
  out-of-sample probabilities then cleanlab's ``find_label_issues`` (prune_by_noise_rate) and
  self-confidence, through cleanlab when it is installed, else through the numpy port
  :mod:`benchmarks.confident_learning` (identical masks; the GPU machine has no cleanlab).
* :func:`plt`, :class:`TimeGuard`, :func:`write_table`.

Loaders stay where they were: :mod:`benchmarks.cifar10n` (CIFAR-10N images, labels, cached
embeddings) and :mod:`benchmarks.device_pack` (the GPU machine's pack).

Heavy imports (sklearn, cleanlab, matplotlib) are made inside the functions, so importing this
module costs nothing and works on the GPU machine.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

__all__ = ["TimeGuard", "confident_learning", "detection_metrics", "kfold_probs", "plt", "write_table"]


# ----------------------------------------------------------------------------- metrics
def detection_metrics(score, is_mislabeled, flagged=None, valid=None) -> dict:
    """Detection quality of ``score`` (lower = more likely mislabeled) and of ``flagged``.

    Returns ``{"precision", "recall", "f1", "auroc", "auprc", "flagged"}`` (floats; ``flagged`` is
    the share of flagged samples). Only the ``valid`` samples count (default: all). The flag
    metrics use every valid sample; AUROC and AUPRC rank the valid samples whose score is finite
    and are NaN when those hold only one class. Without ``flagged`` the flag metrics are NaN.
    Precision, recall and F1 are 0 (not undefined) when nothing is flagged or nothing is mislabeled.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    score = np.asarray(score, dtype=float)
    is_mis = np.asarray(is_mislabeled, dtype=bool)
    valid = np.ones(len(score), bool) if valid is None else np.asarray(valid, dtype=bool)
    s, m = score[valid], is_mis[valid]
    if flagged is None:
        prec = rec = f1 = share = float("nan")
    else:
        f = np.asarray(flagged, dtype=bool)[valid]
        tp = int(np.sum(f & m))
        prec = tp / max(int(f.sum()), 1)
        rec = tp / max(int(m.sum()), 1)
        f1 = 2 * prec * rec / max(prec + rec, 1e-12)
        share = float(f.mean()) if f.size else float("nan")
    ok = np.isfinite(s)
    n_pos = int(m[ok].sum())
    if 0 < n_pos < int(ok.sum()):
        auroc = float(roc_auc_score(m[ok], -s[ok]))
        auprc = float(average_precision_score(m[ok], -s[ok]))
    else:
        auroc = auprc = float("nan")
    return {"precision": prec, "recall": rec, "f1": f1, "auroc": auroc, "auprc": auprc, "flagged": share}


# ----------------------------------------------------------------------------- confident learning
def kfold_probs(labels, fit_predict, *, folds=5, seed=0, num_classes=None, on_fold=None) -> np.ndarray:
    """(N, K) out-of-sample probabilities: ``StratifiedKFold(folds, shuffle=True, random_state=seed)``;
    ``fit_predict(fold, train_idx, test_idx)`` trains a fresh model on ``train_idx`` and returns the
    (len(test_idx), K) probabilities of ``test_idx``. ``on_fold(fold)`` is called after each fold."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    k = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    probs = np.zeros((len(labels), k))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    for f, (tr, te) in enumerate(split):
        probs[te] = fit_predict(f, tr, te)
        if on_fold is not None:
            on_fold(f)
    return probs


def confident_learning(labels, pred_probs, *, backend="auto"):
    """``(quality, mask)``: cleanlab's self-confidence (lower = worse) and ``find_label_issues`` mask
    (prune_by_noise_rate) of out-of-sample ``pred_probs``. ``backend``: ``"cleanlab"``, ``"numpy"``
    (:mod:`benchmarks.confident_learning`) or ``"auto"`` (cleanlab when installed)."""
    labels, pred_probs = np.asarray(labels), np.asarray(pred_probs)
    if backend == "auto":
        try:
            import cleanlab  # noqa: F401  (only whether it is installed)

            backend = "cleanlab"
        except ImportError:
            backend = "numpy"
    if backend == "cleanlab":
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        return get_label_quality_scores(labels, pred_probs), find_label_issues(labels, pred_probs)
    from benchmarks import confident_learning as cl

    return cl.self_confidence(labels, pred_probs), cl.find_label_issues(labels, pred_probs)


# ----------------------------------------------------------------------------- plotting / CLI
def plt():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


class TimeGuard:
    """``--time-limit`` seconds from ``start``: ``left()`` seconds, ``allows(seconds)`` whether work of
    that (estimated) length still ends in time. No limit: always allows."""

    def __init__(self, limit=None, start=None):
        self.start = time.time() if start is None else start
        self.deadline = None if limit is None else self.start + limit

    def left(self):
        return float("inf") if self.deadline is None else max(0.0, self.deadline - time.time())

    def allows(self, seconds=0.0):
        return self.deadline is None or time.time() + (seconds or 0.0) <= self.deadline

    @property
    def expired(self):
        return not self.allows(0.0)


def write_table(md_path, text, json_obj=None, *, json_path=None, mirror=None):
    """Write ``text`` to ``md_path`` (and ``json_obj`` to ``json_path``, default the same name with
    ``.json``), creating the folder; copy both to ``mirror`` (a folder) when given."""
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(text)
    written = [md_path]
    if json_obj is not None:
        jp = Path(json_path) if json_path is not None else md_path.with_suffix(".json")
        jp.write_text(json.dumps(json_obj, indent=1))
        written.insert(0, jp)
    copy_to_mirror(written, mirror)
    return written


def copy_to_mirror(paths, mirror):
    """Copy ``paths`` into the folder ``mirror`` (e.g. the device tool's ``$OUT``), creating it; None: nothing."""
    if mirror is None:
        return
    mirror = Path(mirror)
    mirror.mkdir(parents=True, exist_ok=True)
    for p in paths:
        shutil.copy(p, mirror / Path(p).name)
