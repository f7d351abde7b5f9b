"""Find and fix mislabeled CIFAR-10N images with sei_fiftyone's Python API (offline).

    python examples/fiftyone_quickstart.py [--limit 500] [--app]

Same data as `python -m sei_fiftyone demo` (2,000 bundled CIFAR-10 images with their
CIFAR-10N `worse` human labels), walked through step by step: score, browse the sorted
view, tag a relabelling batch, accept the model's suggestions for it, inspect and undo.
Images: CIFAR-10 (Krizhevsky, 2009); labels: CIFAR-10N (Wei et al., ICLR 2022), CC BY-NC 4.0.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

import fiftyone as fo  # noqa: E402

import sei_fiftyone as sfo  # noqa: E402
from sei.metrics import detection_metrics  # noqa: E402
from sei_fiftyone.demo import flags_and_truth, load_sample  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--head", default="linear", choices=["linear", "prompt"])
    ap.add_argument("--app", action="store_true")
    a = ap.parse_args()

    dataset = load_sample(name="sei-cifar10n-quickstart", limit=a.limit)

    # 1. Score every sample; fields sei, sei_mislabeled, sei_suggestion; a brain run "sei".
    # head="linear": softmax regression on frozen EfficientNet-Lite0 features (10 epochs, fast);
    # head="prompt": the paper's cosine prompt head (150 epochs by default).
    # CIFAR images are 32 px, so the encoder sees them at 96 px instead of its native 224.
    results = sfo.compute_sei(dataset, "ground_truth", model="efficientnet-lite0", epochs=a.epochs,
                              head=a.head, image_size=96)
    print(dataset.get_brain_info("sei").config)
    print(f"threshold {results.threshold:.3f}: {results.num_flagged} of {results.num_samples} flagged")
    flagged, truth = flags_and_truth(dataset)
    m = detection_metrics(flagged, None, truth)
    print("detection vs clean labels:", {k: round(m[k], 3) for k in ("precision", "recall", "f1")})

    # 2. Most likely mislabeled first (also saved as the view 'sei_most_likely_mislabeled').
    view = sfo.sorted_view(dataset)
    for s in view.limit(5):
        print(f"{Path(s.filepath).name}: given {s.ground_truth.label!r}, model says "
              f"{s.sei_suggestion.label!r} ({s.sei_suggestion.confidence:.2f}), truth {s.clean.label!r}")

    # 3. Tag a batch of 50 for review, then accept the model's labels for them; the old
    #    labels are kept in ground_truth_original.
    sfo.suggest_relabels(dataset, budget=50, tag="sei_relabel")
    batch = dataset.match_tags("sei_relabel")
    wrong_before = sum(g != c for g, c in zip(*batch.values(["ground_truth.label", "clean.label"])))
    changed = sfo.apply_suggestions(batch)
    wrong_after = sum(g != c for g, c in zip(*batch.values(["ground_truth.label", "clean.label"])))
    print(f"relabelled {changed} of {len(batch)}: wrong labels in the batch {wrong_before} -> {wrong_after}")

    if a.app:
        session = fo.launch_app(dataset, view=view, address="127.0.0.1", auto=False)
        print(session.url)
        session.wait(-1)


if __name__ == "__main__":
    main()
