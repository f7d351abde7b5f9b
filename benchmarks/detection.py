"""Mislabeled-image detection benchmark on CIFAR-10N (real human noise) and synthetic noise.

Reproduce everything (tables + plots under ``benchmarks/results/``)::

    nice -n 10 python benchmarks/detection.py --all

Stages (each cached under ``benchmarks/.cache/detection/``; re-running only re-scores):

* ``--regime a``  frozen EfficientNet-Lite0 features (96 px, ``benchmarks/cifar10n.py``) and a
  prompt-style cosine head with an auxiliary pseudo-class (learnable class "prompt" vectors,
  CLIP-like learnable temperature), on all 50,000 training images; 3 seeds per label set.
* ``--regime b``  a small CNN trained from scratch on a fixed 10,000-image subset, where the
  network memorises noisy labels (the regime training-dynamics methods are made for).
* ``--synthetic`` symmetric and confusion-calibrated noise at 0.1-0.5 on the clean labels (regime a).
* ``--ablations`` the paper's ablations on the same harness.

Every method is computed from the same recorded dynamics (the (T, N, C) logits of one
training run, recorded in train mode on each mini-batch before the optimiser step, as the
authors' code does), through :class:`sei.SEIRecorder`. Confident learning uses cleanlab's
``find_label_issues`` on 5-fold cross-validated probabilities from the same features/model.

Layout: ``detection_core`` (the benchmark-local training loop, models, kNN, run cache; see its
docstring for why it is not ``sei.train``), ``detection_methods`` (every method from one run),
``detection_regimes`` (regime a / b runs, confident learning), ``detection_ablations``
(synthetic noise, ablations), ``detection_tables``, ``detection_plots``, ``detection_report``;
metrics and K-fold probabilities are the library's (:func:`sei.metrics.detection_metrics`,
:func:`sei.cross_validation.kfold_probs`), the confident-learning entry comes from
:mod:`benchmarks.harness`. This module
is the command line and re-exports the parts' names.

Labels: CIFAR-10N (Wei et al., "Learning with Noisy Labels Revisited: A Study Using
Real-World Human Annotations", ICLR 2022), CC BY-NC 4.0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.detection_ablations import *  # noqa: E402,F401,F403
from benchmarks.detection_ablations import _pick, ablations, synthetic  # noqa: E402,F401
from benchmarks.detection_core import *  # noqa: E402,F401,F403
from benchmarks.detection_core import CACHE, K, _cache_path, _image_batch, _torch, log  # noqa: E402,F401
from benchmarks.detection_methods import *  # noqa: E402,F401,F403
from benchmarks.detection_plots import *  # noqa: E402,F401,F403
from benchmarks.detection_regimes import *  # noqa: E402,F401,F403
from benchmarks.detection_regimes import (B_EPOCHS, _cv_probs, _features, _res_cache, regime_a, regime_b,  # noqa: E402,F401
                                          train_stage_b)
from benchmarks.detection_report import *  # noqa: E402,F401,F403
from benchmarks.detection_report import RESULTS, write_report  # noqa: E402,F401
from benchmarks.harness import plt as _plt  # noqa: E402,F401
from benchmarks.detection_tables import *  # noqa: E402,F401,F403
from benchmarks.detection_tables import CANDIDATES, RECORDER_ONLY, _agg, _fmt, _mean, select_default  # noqa: E402,F401


def main(argv=None):
    ap = argparse.ArgumentParser(description="Mislabeled-image detection benchmark (CIFAR-10N + synthetic noise).")
    ap.add_argument("--all", action="store_true", help="every stage below, then the report")
    ap.add_argument("--regime", choices=["a", "b"], action="append", help="run (or load) this regime")
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--train-b", action="store_true", help="only train the regime-b runs (slow, CPU)")
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args(argv)
    if a.train_b:
        train_stage_b(tuple(range(a.seeds)))
        return
    regimes = ["a", "b"] if a.all else (a.regime or ["a"])
    if a.all and not _cache_path(f"b_worse_s0_e{B_EPOCHS}_eval", "json").exists():
        train_stage_b(tuple(range(a.seeds)))
    results, keep_a, keep_b = {}, {}, {}
    if "a" in regimes:
        results["a"], keep_a = regime_a(tuple(range(a.seeds)))
    if "b" in regimes:
        results["b"], keep_b = regime_b(tuple(range(a.seeds)))
    default_rec = select_default(results, RECORDER_ONLY)
    default_all = select_default(results, CANDIDATES)
    log(f"selected: recorder-only {default_rec}; with features {default_all}")
    syn = synthetic() if (a.all or a.synthetic) else {}
    abl = ablations(keep_a, keep_b, default_rec) if (a.all or a.ablations) else {}
    write_report(results, syn, abl, default_rec, default_all, keep_a, keep_b)


if __name__ == "__main__":
    main()
