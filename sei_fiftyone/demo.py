"""``python -m sei_fiftyone demo``: find the human label errors of a CIFAR-10N sample.

Loads the 2,000 bundled CIFAR-10 images (``examples/cifar10n_sample``) with their
CIFAR-10N ``worse`` human labels as ``ground_truth`` (about 41 % wrong) and the original
labels as ``clean`` (used only to score the detection), runs :func:`compute_sei` offline
with EfficientNet-Lite0, and prints precision / recall / F1, the seconds of the run's
phases, the same numbers for confident learning and FiftyOne Brain's mistakenness
(:func:`sei_fiftyone.compare.compare_with_confident_learning`; ``--no-compare`` skips it)
and the ten most suspect samples; the last line says how to open the App on the result, and ``--app`` serves it on
127.0.0.1 (the sorted view) until Ctrl+C. FiftyOne's database validation is turned off for
the demo unless ``FIFTYONE_DATABASE_VALIDATION`` is set: with the MongoDB 6.0 FiftyOne
bundles, its notice about the oldest supported MongoDB would be the first screen.

Data: CIFAR-10 (Krizhevsky, 2009); labels: CIFAR-10N (Wei et al., ICLR 2022), CC BY-NC 4.0.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

DATASET_NAME = "sei-cifar10n-demo"


def default_sample_dir() -> Path:
    env = os.environ.get("SEI_CIFAR10N_SAMPLE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "examples" / "cifar10n_sample"


def add_arguments(parser):
    parser.add_argument("--sample-dir", type=Path, default=None,
                        help="folder with labels.csv and images/ (default: examples/cifar10n_sample)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: 10 (linear head) or 150 (prompt head)")
    parser.add_argument("--threshold", default="auto", help="auto | aux_mean | aux_quantile | zero | gmm | a number")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--head", default="linear", choices=["linear", "prompt"],
                        help="linear: softmax regression on frozen EfficientNet-Lite0 features "
                        "(default, fast); prompt: the paper's cosine prompt head")
    parser.add_argument("--app", action="store_true",
                        help="then serve the FiftyOne App on 127.0.0.1:PORT on the sorted view (Ctrl+C to stop)")
    parser.add_argument("--port", type=int, default=5151)
    parser.add_argument("--private-db", action="store_true",
                        help="run a throw-away mongod on 127.0.0.1 instead of FiftyOne's database")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the comparison with confident learning and FiftyOne Brain's mistakenness")


def load_sample(sample_dir=None, *, name=DATASET_NAME, limit=None):
    """The bundled sample as a FiftyOne dataset (``ground_truth`` = worse, ``clean``)."""
    import fiftyone as fo

    sample_dir = Path(sample_dir or default_sample_dir())
    rows = list(csv.DictReader(open(sample_dir / "labels.csv", newline="")))
    if limit:
        rows = rows[:limit]
    dataset = fo.Dataset(name, overwrite=True)
    samples = []
    for r in rows:
        s = fo.Sample(filepath=str((sample_dir / r["filename"]).resolve()))
        s["ground_truth"] = fo.Classification(label=r["worse"])
        s["clean"] = fo.Classification(label=r["clean"])
        s["cifar10_train_index"] = int(r["cifar10_train_index"])
        samples.append(s)
    dataset.add_samples(samples, progress=False)
    dataset.info["attribution"] = (
        "Images: CIFAR-10 (Krizhevsky, 2009). Labels: CIFAR-10N, Wei et al., ICLR 2022, CC BY-NC 4.0."
    )
    dataset.save()
    return dataset


def flags_and_truth(dataset, brain_key="sei"):
    """``(flagged, truth)``, bool arrays: ``<brain_key>_mislabeled`` (an unscored sample, None, is not
    flagged) and ``ground_truth != clean``; :func:`sei.metrics.detection_metrics` ``(flagged, None,
    truth)`` gives their precision, recall and F1."""
    import numpy as np

    given, clean, flags = dataset.values(["ground_truth.label", "clean.label", f"{brain_key}_mislabeled"])
    truth = np.array([g != c for g, c in zip(given, clean)], dtype=bool)
    flagged = np.array([bool(f) for f in flags], dtype=bool)
    return flagged, truth


def run(args):
    """The demo; returns the exit status. The last line says how to open the App on the result."""
    import contextlib

    from sei_fiftyone.db import skip_database_validation

    skip_database_validation()  # FiftyOne's MongoDB 6.0 notice would be the first screen
    stack = contextlib.ExitStack()
    if args.private_db:
        from sei_fiftyone.db import temporary_mongod

        os.environ["FIFTYONE_DATABASE_URI"] = stack.enter_context(temporary_mongod())
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    with stack:
        t0 = time.perf_counter()
        dataset = load_sample(args.sample_dir, limit=args.limit)
        dataset.persistent = not args.private_db  # kept for `fiftyone app launch` after the demo
        print(f"Loaded {len(dataset)} CIFAR-10N images (ground_truth = 'worse' human labels)")
        _compute_and_report(dataset, args)
        from sei_fiftyone.runs import saved_view_name

        print(f"\nSaved view: '{saved_view_name('sei')}' on dataset '{dataset.name}' "
              f"(total {time.perf_counter() - t0:.1f} s)")
        if args.app:
            return open_app(dataset, port=args.port)
        print(how_to_open(dataset.name, private_db=args.private_db))
    return 0


def _compute_and_report(dataset, args):
    """compute_sei on the sample, then precision / recall / F1, the seconds of the run's phases,
    the comparison with confident learning and FiftyOne Brain's mistakenness (unless
    ``--no-compare``) and the ten most suspect samples."""
    import sei_fiftyone as sfo
    from sei_fiftyone.runs import phases_text

    threshold = args.threshold
    try:
        threshold = float(threshold)
    except ValueError:
        pass
    t1 = time.perf_counter()
    # CIFAR images are 32 px: 96 px input is plenty for the encoder and 5x faster than 224.
    # the features are stored in 'lite0' so that the comparison can cross-validate on them
    results = sfo.compute_sei(dataset, "ground_truth", model="efficientnet-lite0", epochs=args.epochs,
                              threshold=threshold, head=args.head, image_size=96, embeddings_field="lite0")
    config = dataset.get_brain_info("sei").config
    print(f"sei.train: {config.head} head on frozen EfficientNet-Lite0 features (96 px), "
          f"{config.epochs} epochs, score {config.score!r}")
    t2 = time.perf_counter()
    from sei.metrics import detection_metrics

    flagged, truth = flags_and_truth(dataset)
    m = detection_metrics(flagged, None, truth)
    print(f"compute_sei: {t2 - t1:.1f} s  (threshold {results.threshold:.3f}, "
          f"{int(flagged.sum())} of {len(truth)} flagged; {int(truth.sum())} truly mislabeled)")
    print(f"precision {m['precision']:.3f}  recall {m['recall']:.3f}  F1 {m['f1']:.3f}")
    print(f"phases: {phases_text(results.timings)}")
    if not getattr(args, "no_compare", False):
        _compare_and_report(dataset)
    print(f"\nTen most likely mislabeled (lowest {config.score} first):")
    print(f"{'file':<18}{'given':<12}{'suggested':<12}{'clean':<12}{'score':>8}")
    top = sfo.sorted_view(dataset, flagged_only=False).limit(10)
    for s in top.select_fields(["ground_truth", "clean", "sei", "sei_suggestion"]):
        sugg = s.sei_suggestion.label if s.sei_suggestion else "-"
        print(f"{Path(s.filepath).name:<18}{s.ground_truth.label:<12}{sugg:<12}"
              f"{s.clean.label:<12}{s.sei:>8.2f}")


def _compare_and_report(dataset):
    """The same samples by confident learning (5-fold logistic regression on the run's Lite0
    features) and FiftyOne Brain's mistakenness (on the run's predictions), all three against
    the clean labels."""
    from sei_fiftyone.compare import compare_with_confident_learning
    from sei_fiftyone.runs import phases_text

    t = time.perf_counter()
    try:
        out = compare_with_confident_learning(dataset, "sei", trusted_label_field="clean")
    except ValueError as e:  # e.g. --limit leaves a class too small for the cross-validation
        print(f"\nComparison skipped: {e}")
        return
    print(f"\nCompared with confident learning and FiftyOne Brain's mistakenness against 'clean' "
          f"({time.perf_counter() - t:.1f} s):")
    print(f"{'detector':<24}{'flagged':>8}{'precision':>11}{'recall':>8}{'F1':>7}{'AUROC':>7}")
    flagged = {"sei": out["n_sei_flagged"], "cl": out["n_cl_flagged"], "mistakenness": out["n_mistakenness_flagged"]}
    for key, name in (("sei", "SEI"), ("cl", "confident learning"), ("mistakenness", "mistakenness (Brain)")):
        m = out["metrics"][key]
        print(f"{name:<24}{flagged[key]:>8}{m['precision']:>11.3f}{m['recall']:>8.3f}{m['f1']:>7.3f}{m['auroc']:>7.3f}")
    print(f"comparison phases: {phases_text(out['timings'])}")
    print(f"Saved view: '{out['view_name']}' (flagged by one of SEI and confident learning; "
          f"'{out['agreement_field']}' says which)")


def how_to_open(dataset_name, *, private_db=False):
    """The demo's last line: how to look at its result in the App."""
    from sei_fiftyone.runs import saved_view_name

    if private_db:
        return ("Open the App on the result: rerun with --app (the private database is removed on exit, "
                "so the dataset goes with it)")
    return (f"Open the App on the result: fiftyone app launch {dataset_name}  (then pick the saved view "
            f"'{saved_view_name('sei')}'), or rerun with --app")


def open_app(dataset, *, port=5151, address="127.0.0.1"):
    """Serve the App on ``address:port`` showing the run's sorted view, until Ctrl+C."""
    import fiftyone as fo

    import sei_fiftyone as sfo

    view = dataset.load_saved_view(sfo.saved_view_name("sei"))
    session = fo.launch_app(dataset, view=view, address=address, port=port, auto=False)
    print(f"App: http://{address}:{port}/  (the flagged samples, most likely mislabeled first; "
          "Ctrl+C to stop)")
    try:
        session.wait(-1)
    except KeyboardInterrupt:
        print("\nApp stopped")
    finally:
        session.close()
    return 0
