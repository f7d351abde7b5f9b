"""Speed of the FiftyOne adapter: bulk write-back, and compute_sei wall time on CIFAR-10N.

    python benchmarks/fiftyone_speed.py writeback --n 100000
    python benchmarks/fiftyone_speed.py compute --n 2000            # images, EfficientNet-Lite0
    python benchmarks/fiftyone_speed.py compute --n 50000 --embeddings   # stored embeddings field
    python benchmarks/fiftyone_speed.py scale --n 1000000 --classes 100  # synthetic 64-d embeddings field

Runs against a private mongod on 127.0.0.1 (``sei_fiftyone.db.temporary_mongod``) unless
FIFTYONE_DATABASE_URI is set. Appends a row to ``benchmarks/results/fiftyone_speed.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "fiftyone_speed.md"
HEADER = (
    "# FiftyOne adapter speed\n\n"
    "Produced by `benchmarks/fiftyone_speed.py` on the machine named in each row "
    "(wall-clock seconds, real MongoDB 6.0.5 on 127.0.0.1).\n\n"
    "| benchmark | samples | what | seconds | notes | machine |\n"
    "| --- | ---: | --- | ---: | --- | --- |\n"
)


def _machine():
    return f"{platform.machine()} {os.cpu_count()} cores, torch threads 2"


def _record(bench, n, what, seconds, notes):
    if not RESULTS.exists():
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(HEADER)
    with open(RESULTS, "a") as f:
        f.write(f"| {bench} | {n:,} | {what} | {seconds:.2f} | {notes} | {_machine()} |\n")
    print(f"{bench} n={n:,} {what}: {seconds:.2f} s  ({notes})")


def bench_writeback(n):
    import fiftyone as fo
    import fiftyone.core.labels as fol

    from sei_fiftyone.core import SEIConfig, SEIResults, write_values

    ds = fo.Dataset(f"sei-bench-writeback-{n}", overwrite=True)
    t = time.perf_counter()
    ds.add_samples([fo.Sample(filepath=f"/nonexistent/{i:06d}.jpg") for i in range(n)], progress=False)
    add_s = time.perf_counter() - t
    rng = np.random.default_rng(0)
    classes = [f"class_{k}" for k in range(10)]

    def run(seed):
        """compute_sei's write phase: stage, switch, register the run, save its results and view."""
        rng = np.random.default_rng(seed)
        scores, labels, conf = rng.normal(size=n), rng.integers(0, 10, n), rng.random(n)
        t = time.perf_counter()
        score_values = [float(s) for s in scores]
        flag_values = [bool(s < 0) for s in scores]
        sugg = [(classes[k], float(c)) for k, c in zip(labels, conf)]
        ids = ds.values("id")
        build_s = time.perf_counter() - t
        config = SEIConfig(label_field="ground_truth", model="embeddings", embeddings_field="embedding",
                           mode="embeddings", epochs=10)
        backend = config.build()
        results = SEIResults(ds, config, "sei", threshold=0.0, score_name="aum_prob", classes=classes,
                             num_samples=n, num_flagged=int(sum(flag_values)), scores_summary={}, aux_ids=[],
                             skipped_ids=[], train_accuracy=[], train_loss=[], backend=backend)
        t = time.perf_counter()
        write_values(ds, "sei", ids, score_values, flag_values, sugg, run=(backend, results))
        return build_s, time.perf_counter() - t, labels, conf

    build_s, write_s, labels, conf = run(0)
    assert isinstance(ds.last()["sei_suggestion"], fol.Classification)
    build2_s, write2_s, _, _ = run(1)  # overwrites the run: the previous values are kept until the switch
    assert len(ds.exists("sei_suggestion")) == n and ds.list_brain_runs() == ["sei"]
    t = time.perf_counter()
    ds.set_values("sei_setvalues", [fol.Classification(label=classes[k], confidence=float(c))
                                    for k, c in zip(labels, conf)])
    ref_s = time.perf_counter() - t
    note = ("staged in a tmp collection, switched in with one $merge, run registered + saved view; "
            f"the suggestions alone through FiftyOne's set_values take {ref_s:.2f} s; goal < 5 s; "
            f"(adding the samples took {add_s:.1f} s)")
    _record("write-back", n, "scores + flags + suggestions + run (write_values), new run", write_s + build_s,
            f"write {write_s:.2f} s + building values {build_s:.2f} s; " + note)
    _record("write-back", n, "scores + flags + suggestions + run (write_values), overwriting a run",
            write2_s + build2_s, f"write {write2_s:.2f} s + building values {build2_s:.2f} s; the previous "
            "values are copied aside first (rollback on failure); " + note)
    ds.delete()


def _cifar_dir():
    sys.path.insert(0, str(REPO))
    from benchmarks.cifar10n import data_dir

    return data_dir()


def _extract(n, dest):
    dest.mkdir(parents=True, exist_ok=True)
    paths = [dest / f"{i:05d}.jpg" for i in range(n)]
    if all(p.exists() for p in paths[-5:]):
        return paths
    with zipfile.ZipFile(_cifar_dir() / "images.zip") as z:
        for i, p in enumerate(paths):
            if not p.exists():
                p.write_bytes(z.read(f"train/{i:05d}.jpg"))
    return paths


def bench_compute(n, epochs, embeddings, head="linear"):
    import fiftyone as fo

    import sei_fiftyone as sfo
    from sei.engine.embedding import embed_images
    from sei.metrics import detection_metrics
    from sei_fiftyone.demo import flags_and_truth

    lab = np.load(_cifar_dir() / "labels.npz")
    names = [str(s) for s in lab["class_names"]]
    worse, clean = lab["worse"][:n], lab["train_clean"][:n]
    cache = REPO / "benchmarks" / ".cache" / "fiftyone_images"
    paths = _extract(n, cache)
    ds = fo.Dataset(f"sei-bench-compute-{n}", overwrite=True)
    samples = []
    for i, p in enumerate(paths):
        s = fo.Sample(filepath=str(p))
        s["ground_truth"] = fo.Classification(label=names[worse[i]])
        s["clean"] = fo.Classification(label=names[clean[i]])
        samples.append(s)
    ds.add_samples(samples, progress=False)
    kwargs = {"head": head, "image_size": 96}
    notes = ""
    if embeddings:
        feats_cache = REPO / "benchmarks" / ".cache" / f"fiftyone_lite0_{n}.npy"
        if feats_cache.exists():
            feats = np.load(feats_cache)
        else:
            t = time.perf_counter()
            feats = embed_images("efficientnet-lite0", [str(p) for p in paths], image_size=96)
            np.save(feats_cache, feats)
            notes += f"embedding the images first took {time.perf_counter() - t:.0f} s; "
        ds.set_values("embedding", [f for f in feats])
        kwargs["embeddings_field"] = "embedding"
    t = time.perf_counter()
    res = sfo.compute_sei(ds, "ground_truth", epochs=epochs, progress=False, **kwargs)
    wall = time.perf_counter() - t
    flagged, truth = flags_and_truth(ds)
    m = detection_metrics(flagged, None, truth)  # an unscored sample counts as not flagged
    what = "compute_sei, " + ("stored embeddings field" if embeddings else "images, frozen efficientnet-lite0 @96px")
    _record("compute_sei", n, what, wall,
            notes + f"{epochs} epochs, {head} head, score {res.score_name}; CIFAR-10N worse: P {m['precision']:.2f} R {m['recall']:.2f} "
            f"F1 {m['f1']:.2f}, {res.num_flagged} flagged")
    ds.delete()


def _peak_rss_reset():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def _insert_like_first(ds, names, labels, feats, step=50_000):
    """Samples 1..n-1 as copies of sample 0's document (new ids, their label and vector)."""
    import datetime

    from bson import ObjectId
    from fiftyone.core.utils import serialize_numpy_array

    coll = ds._sample_collection
    proto = coll.find_one()
    now = datetime.datetime.now(datetime.timezone.utc)
    rng = np.random.default_rng(1)
    for start in range(1, len(labels), step):
        docs = []
        for i in range(start, min(len(labels), start + step)):
            doc = dict(proto, _id=ObjectId(), filepath=f"/nonexistent/{i:07d}.jpg", _rand=float(rng.random()),
                       created_at=now, last_modified_at=now, embedding=serialize_numpy_array(feats[i]))
            doc["ground_truth"] = dict(proto["ground_truth"], _id=ObjectId(), label=names[labels[i]])
            docs.append(doc)
        coll.insert_many(docs, ordered=False)


def bench_scale(n, classes, epochs, dim=64, noise=0.2, seed=0, top_k="auto"):
    """compute_sei on a stored embeddings field of n synthetic samples (issue 20's FiftyOne row):
    64-d float32 vectors around one centre per class, ``noise`` of the labels flipped. The
    dataset is built first (not timed); then compute_sei's wall time, its phases (the run's
    ``timings``) and this process's peak RSS during it (mongod is another process)."""
    import fiftyone as fo

    import sei_fiftyone as sfo

    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n)
    flip = rng.random(n) < noise
    labels = np.where(flip, (true + rng.integers(1, classes, n)) % classes, true)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    feats = centres[true] + rng.normal(size=(n, dim)).astype(np.float32)
    names = [f"class_{k:04d}" for k in range(classes)]
    t = time.perf_counter()
    ds = fo.Dataset(f"sei-bench-scale-{n}", overwrite=True)
    # The first sample through FiftyOne (it declares the fields); the rest as the same documents
    # straight into the sample collection (fo.Sample objects cost ~1 ms each: 20 min at 1e6).
    ds.add_sample(fo.Sample(filepath="/nonexistent/0000000.jpg", ground_truth=fo.Classification(
        label=names[labels[0]]), embedding=feats[0]))
    _insert_like_first(ds, names, labels, feats)
    build = time.perf_counter() - t
    del feats
    _peak_rss_reset()
    base = _peak_rss()
    phase, by_phase, done = ["start"], {}, threading.Event()

    def sample_rss():  # the resident set every 0.2 s, kept per phase (compute_sei's progress labels)
        while not done.wait(0.2):
            with open("/proc/self/status") as f:
                rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            by_phase[phase[0]] = max(by_phase.get(phase[0], 0), rss)

    def progress(fraction, label):
        phase[0] = str(label).split(":")[0].split(" ")[0] or phase[0]

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    t = time.perf_counter()
    res = sfo.compute_sei(ds, "ground_truth", embeddings_field="embedding", epochs=epochs, progress=progress,
                          **({} if top_k == "auto" else {"top_k": top_k}))
    wall = time.perf_counter() - t
    done.set()
    sampler.join()
    peak = _peak_rss()
    from sei.metrics import detection_metrics

    flagged = np.array([bool(v) for v in ds.values("sei_mislabeled")])  # insertion order = i; unscored: False
    m = detection_metrics(flagged, None, flip)
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in (res.timings or {}).items())
    _record("compute_sei", n, f"compute_sei, synthetic {dim}-d embeddings field, {classes} classes", wall,
            f"{epochs} epochs, score {res.score_name}, top_k={top_k}; phases: {phases}; peak RSS {peak / 1e9:.2f} GB (before "
            f"{base / 1e9:.2f} GB; mongod not counted; largest resident set per progress label: "
            f"{', '.join(f'{k} {v / 1e9:.2f} GB' for k, v in by_phase.items())}); {int(flagged.sum()):,} flagged, {int(flip.sum()):,} flipped: "
            f"P {m['precision']:.2f} R {m['recall']:.2f} F1 {m['f1']:.2f}; "
            f"(building the dataset took {build:.0f} s)")
    ds.delete()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["writeback", "compute", "scale"])
    ap.add_argument("--classes", type=int, default=100, help="scale: number of classes")
    ap.add_argument("--top-k", type=int, default=None, help="scale: sei.train's top_k (default 'auto')")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--embeddings", action="store_true", help="train on a stored embeddings field")
    ap.add_argument("--head", default="linear", choices=["linear", "prompt"])
    a = ap.parse_args(argv)
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    stack = contextlib.ExitStack()
    if not os.environ.get("FIFTYONE_DATABASE_URI"):
        sys.path.insert(0, str(REPO))
        from sei_fiftyone.db import temporary_mongod

        os.environ["FIFTYONE_DATABASE_URI"] = stack.enter_context(temporary_mongod())
    with stack:
        import torch

        torch.set_num_threads(2)
        if a.what == "writeback":
            bench_writeback(a.n or 100_000)
        elif a.what == "scale":
            bench_scale(a.n or 1_000_000, a.classes, a.epochs, top_k="auto" if a.top_k is None else a.top_k)
        else:
            bench_compute(a.n or 2_000, a.epochs, a.embeddings, a.head)


if __name__ == "__main__":
    main()
