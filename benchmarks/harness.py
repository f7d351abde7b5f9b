"""What every benchmark shares besides the library: the confident-learning baseline, plotting and
the small CLI bits (a time guard, writing a table and its json).

The library's parts are used as they are: :func:`sei.metrics.detection_metrics` turns a flag mask
and a score (lower = more likely mislabeled) into precision / recall / F1 / AUROC / AUPRC against
the truth (``valid=`` leaves out e.g. a run's auxiliary samples), and
:func:`sei.cross_validation.kfold_probs` gives K-fold out-of-sample probabilities.

* :func:`confident_learning`: the confident-learning baseline on out-of-sample probabilities,
  cleanlab's ``find_label_issues`` (prune_by_noise_rate) and self-confidence, through cleanlab
  when it is installed, else through the numpy port :mod:`benchmarks.confident_learning`
  (identical masks; the GPU machine has no cleanlab).
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

__all__ = ["TimeGuard", "confident_learning", "plt", "write_table"]


# ----------------------------------------------------------------------------- confident learning
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
