"""Active label correction on CIFAR-10 (the ALC paper's protocol, scaled to a shared CPU).

    nice -n 10 python benchmarks/active.py [--seeds 0,1,2] [--epochs 10] [--time-limit 3600] [--synthetic]

Protocol: CIFAR-10 training images (40,000; 10,000 more held out as the test set), frozen EfficientNet-Lite0 embeddings (96 px,
``benchmarks/cifar10n.py``) reduced to 64 dims by PCA; a softmax-regression head trained
from scratch each round through the library's engine (``sei.active.train_linear``: the
engine's linear head, loss, epoch runner and SGD); budget G labels in batches of Q = 1,000
(the paper's); noise: 80 % uniform (symmetric, to another class), 80 % class-transition
(random row-stochastic T, diagonal 0.2, ``sei.noise``), and CIFAR-10N's real human noise
(``worse``, 40 %). The paper used a fixed ResNet-101 with four FC layers, 10 seeds and more
epochs; here: a linear head, fewer epochs and seeds (see the table header). Selectors: see
``sei.active.SELECTORS``; the kNN graph (k=10) is built once on the same PCA features and
propagation takes the library's default path (bounded push, bound from the graph).

Seeds: report seeds 0, 1, 2; tune on seeds 100+ (``--seeds 100 --out /tmp/...``), never on
the reported ones. ``--time-limit``: no run starts that would end after it (estimated from
the runs so far); the tables then hold the seeds that finished and say so.

Outputs ``benchmarks/results/active.md`` (tables), ``active_<setting>.png`` (accuracy
curves with ±1 std bands), ``active_<setting>_precision.png`` and ``active_raw.npz``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))

from benchmarks.harness import TimeGuard  # noqa: E402
from sei import symmetric_noise, transition_matrix_noise  # noqa: E402
from sei.active import KNNGraph, make_selector, plot_curves, simulate, train_linear  # noqa: E402

METHODS = ["random", "entropy", "corractive", "lossent", "lossent_sum", "dalc", "kim", "sei", "sei_propagation",
           "sei_alpha", "sei_fc", "sei_fc_ce0", "sei_fc_design", "dalc_regression"]
# ablations: a selector of ``sei.active.SELECTORS`` with another transition estimate
VARIANTS = {"sei_fc_design": ("sei_fc", {"transition_estimate": "design", "robust_training": False}),
            "sei_fc_ce0": ("sei_fc", {"robust_training": False}),
            "dalc_regression": ("dalc", {"transition_estimate": "regression"})}
SETTINGS = ("uniform80", "transition80", "cifar10n_worse")
LR = 0.1  # the simulator's SGD step (batch 256, cosine); the engine's default 1e-3 is for 150-epoch runs


def parse_args(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (report 0,1,2; tune on 100+)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--budget", type=int, default=15_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--test", choices=("holdout", "cifar10"), default="holdout")
    ap.add_argument("--n", type=int, default=0, help="subsample the training set (0 = all)")
    ap.add_argument("--features", default=None,
                    help="(50000, D) features of the CIFAR-10N training images in their order, e.g. the fine-tuned "
                         "ones of benchmarks/finetune_detection.py (finetuned_features_<labels>.npy); holdout test only")
    ap.add_argument("--time-limit", type=float, default=None, help="seconds; partial results after it")
    ap.add_argument("--cut", default="", help="protocol cut stated in the results header")
    ap.add_argument("--out", default=str(_HERE / "results"))
    ap.add_argument("--from-raw", default=None, help="rewrite the report from an active_raw.npz (no training)")
    a = ap.parse_args(argv)
    a.seeds = [int(s) for s in str(a.seeds).split(",") if s != ""]
    a.settings, a.methods = a.settings.split(","), a.methods.split(",")
    if a.features and a.test != "holdout":
        raise ValueError("--features holds training images only: use --test holdout")
    for s in a.settings:
        if s not in SETTINGS:
            raise ValueError(f"--settings: unknown setting {s!r}; choose from {', '.join(SETTINGS)}")
    return a


def _holdout_split(n, size=10_000):
    """``(test indices, training indices)``: a fixed random draw of ``size`` held-out images."""
    perm = np.random.default_rng(0).permutation(n)
    return perm[:size], perm[size:]


def load_data(synthetic=False, test="holdout", features=None):
    """``(x_train, y_train, x_test, y_test, worse_labels, description)``; PCA-64 CIFAR-10 features.

    ``test="holdout"``: 10,000 training images (a fixed random draw, clean labels) are the test
    set and the other 40,000 the training set (needs only the cached training embeddings);
    ``"cifar10"``: the CIFAR-10 test split (embeds it on first use). ``features``: a ``.npy``
    of (50,000, D) features of the training images in CIFAR-10N's order (e.g. the fine-tuned
    tower's, already reduced; used as they are), with the holdout split.
    """
    if features is not None:
        from benchmarks.cifar10n import load_labels

        lab, x = load_labels(), np.load(features).astype(np.float32)
        ytr, worse = lab["train_clean"], lab["worse"]
        if x.ndim != 2 or len(x) != len(ytr):
            raise ValueError(f"--features {features}: expected ({len(ytr)}, D) features of the CIFAR-10N training "
                             f"images, got shape {x.shape}")
        te, tr = _holdout_split(len(ytr))
        return (x[tr], ytr[tr], x[te], ytr[te], worse[tr],
                f"CIFAR-10, features from {Path(features).name} ({x.shape[1]}-d), 40,000 training images; test: "
                "10,000 held-out training images (clean labels)")
    from sklearn.decomposition import PCA

    if not synthetic:
        try:
            from benchmarks.cifar10n import load_embeddings, load_labels

            lab = load_labels()
            xtr, ytr, worse = load_embeddings("train", verbose=True), lab["train_clean"], lab["worse"]
            if test == "holdout":
                te, tr = _holdout_split(len(ytr))
                xte, yte, xtr, ytr, worse = xtr[te], ytr[te], xtr[tr], ytr[tr], worse[tr]
                what = "40,000 training images; test: 10,000 held-out training images (clean labels)"
            else:
                xte, yte = load_embeddings("test", verbose=True), lab["test"]
                what = f"all {len(ytr):,} training images; test: the CIFAR-10 test split ({len(yte):,} images)"
            pca = PCA(64, random_state=0).fit(xtr)
            return (pca.transform(xtr).astype(np.float32), ytr, pca.transform(xte).astype(np.float32), yte, worse,
                    f"CIFAR-10, EfficientNet-Lite0 96px embeddings, PCA-64, {what}")
        except Exception as exc:  # noqa: BLE001
            print(f"[active] CIFAR-10 embeddings unavailable ({exc}); using synthetic data")
    rng = np.random.default_rng(0)
    k, d = 10, 64
    c = rng.normal(size=(k, d)) * 0.6
    ytr, yte = rng.integers(0, k, 50_000), rng.integers(0, k, 10_000)
    xtr = (c[ytr] + rng.normal(size=(50_000, d))).astype(np.float32)
    xte = (c[yte] + rng.normal(size=(10_000, d))).astype(np.float32)
    worse, _ = symmetric_noise(ytr, 0.4, num_classes=k, seed=5)
    return xtr, ytr, xte, yte, worse, "synthetic 10-class Gaussian blobs, 64-d"


def noisy_labels(setting, clean, worse, k, seed):
    """``(noisy labels, is_mislabeled)`` of one setting and seed."""
    if setting == "uniform80":
        return symmetric_noise(clean, 0.8, num_classes=k, seed=seed)
    if setting == "transition80":
        return transition_matrix_noise(clean, 0.8, num_classes=k, seed=seed)
    return worse, worse != clean


def bench_selector(method):
    """The selector called ``method``: a name of ``sei.active.SELECTORS`` or of ``VARIANTS``."""
    base, options = VARIANTS.get(method, (method, {}))
    return make_selector(base, **options, **({"name": method} if method in VARIANTS else {}))


def run_one(data, graph, setting, method, seed, a):
    """One episode of one selector; prints a line and returns the simulator's result."""
    xtr, ytr, xte, yte, worse, k = data
    noisy, _ = noisy_labels(setting, ytr, worse, k, seed)
    t = time.time()
    sel = bench_selector(method) if isinstance(method, str) else method
    r = simulate(xtr, noisy, ytr, sel, budget=a.budget, batch_size=a.batch,
                 test_features=xte, test_labels=yte, graph=graph, epochs=a.epochs, seed=seed,
                 train_options={"lr": LR})
    r["seconds"] = time.time() - t
    print(f"[active] {setting} seed {seed} {sel.name:16s} acc {r['test_accuracy'][0]:.3f}->"
          f"{r['test_accuracy'][-1]:.3f} prec {np.nanmean(r['batch_precision']):.3f} ({r['seconds']:.0f}s)", flush=True)
    return r


def _cell(values, fmt="{:.1%}"):
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if not len(v):
        return "-"
    return fmt.format(v.mean()) + (f" ± {fmt.format(v.std())}" if len(v) > 1 else "")


def _labels_to_target(run, target):
    hit = np.flatnonzero(np.asarray(run["test_accuracy"]) >= target)
    return float(run["labels_queried"][hit[0]]) if len(hit) else np.nan


def setting_table(setting, runs, noise, target, clean_acc, budget):
    """The markdown table of one setting: per selector, labels to target per seed and on the mean curve."""
    seeds = sorted({s for m in runs for s in runs[m]})
    lines = [f"### {setting} (noise rate {noise:.1%}, target accuracy {target:.1%} = clean-label accuracy "
             f"{clean_acc:.1%} - 2 pt; seeds {', '.join(map(str, seeds))})", "",
             "| selector | labels to target (mean ± std over seeds) | per seed | mean curve | acc @0 | acc @1k | "
             "acc @5k | acc @budget | mean acc (AUC) | selection precision |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m, by_seed in runs.items():
        rs = [by_seed[s] for s in sorted(by_seed)]
        if not rs:
            continue
        lt = [_labels_to_target(r, target) for r in rs]
        reached = [x for x in lt if np.isfinite(x)]
        lt_cell = (_cell(reached, "{:,.0f}") + ("" if len(reached) == len(lt) else f" ({len(lt) - len(reached)} "
                   f"of {len(lt)} not reached)")) if reached else "not reached"
        per_seed = " / ".join("-" if not np.isfinite(x) else f"{x / 1000:g}k" if x else "0" for x in lt)
        mean_curve = {"test_accuracy": np.mean([r["test_accuracy"] for r in rs], 0),
                      "labels_queried": rs[0]["labels_queried"]}
        lt_mean = _labels_to_target(mean_curve, target)
        lq = list(rs[0]["labels_queried"])

        def at(v):
            return _cell([r["test_accuracy"][lq.index(v)] for r in rs]) if v in lq else "-"

        lines.append(f"| {m} | {lt_cell} | {per_seed} | {'not reached' if not np.isfinite(lt_mean) else f'{lt_mean:,.0f}'} | "
                     f"{at(0)} | {at(1000)} | {at(5000)} | {at(budget)} | {_cell([np.mean(r['test_accuracy']) for r in rs])} | "
                     f"{_cell([np.nanmean(r['batch_precision']) for r in rs])} |")
    return "\n".join(lines)


def write_report(out, a, results, info, done, planned):
    """Tables, curves and raw arrays of whatever has finished (called after every run)."""
    tables, raw = [], {}
    for setting, runs in results.items():
        methods = {m: v for m, v in runs.items() if v}
        if not methods:
            continue
        tables.append(setting_table(setting, methods, info["noise"][setting], info["target"], info["clean_acc"],
                                    a.budget))
        curves = {m: [v[s] for s in sorted(v)] for m, v in methods.items()}
        plot_curves(curves, out / f"active_{setting}.png", title=f"{setting}: test accuracy, mean ± std over seeds",
                    ylabel="test accuracy")
        plot_curves(curves, out / f"active_{setting}_precision.png", metric="batch_precision",
                    title=f"{setting}: selection precision per batch", ylabel="share of batch mislabeled")
        for m, v in methods.items():
            for s, r in v.items():
                raw[f"{setting}/{m}/{s}/acc"] = r["test_accuracy"]
                raw[f"{setting}/{m}/{s}/prec"] = r["batch_precision"]
    raw["_info"] = np.array(json.dumps({k_: v for k_, v in info.items() if k_ != "argv"}))
    np.savez_compressed(out / "active_raw.npz", **raw)
    graph_s = f"build {info['t_graph']:.0f} s" if np.isfinite(info["t_graph"]) else "build time not recorded"
    partial = "" if done == planned else (f" **Partial: {done} of {planned} planned runs finished before the "
                                          "time limit; the tables hold those.**")
    head = [
        "# Active label correction on CIFAR-10 (scaled protocol)", "",
        f"Data: {info['source']}. Budget {a.budget:,} labels, batch {a.batch:,}, seeds {', '.join(map(str, a.seeds))} "
        f"(mean ± std over seeds), {a.epochs} epochs per round of the engine's linear head "
        f"(`sei.active.train_linear`: LinearHead + loss_terms, SGD lr {LR}, batch 256, cosine), retrained from "
        "scratch each round (the paper: 10 seeds, ResNet-101 + 4 FC layers). kNN graph k=10 on the same features "
        f"({graph_s}), propagation on the default path (bounded push, bound from the graph). "
        "Labels to target = labels queried when test accuracy first reaches the target (per seed; "
        "'mean curve': on the seed-mean accuracy curve). Selection precision = share of queried samples that "
        "were mislabeled." + (f" Cut: {a.cut}." if a.cut else "") + partial,
        "", f"Produced by `nice -n 10 python benchmarks/active.py {shlex.join(info['argv'])}`"
        + (" from the raw arrays of the run with the same options less `--from-raw` (no training)." if a.from_raw
           else "."), ""]
    (out / "active.md").write_text("\n".join(head) + "\n" + "\n\n".join(tables) + "\n")


def report_from_raw(a, out, info):
    """Rebuild the results of a finished run from its ``active_raw.npz`` and write the report again."""
    raw = np.load(a.from_raw)
    info = dict(json.loads(str(raw["_info"])) if "_info" in raw else {}, **info)
    results = {s: {m: {} for m in a.methods} for s in a.settings}
    for key in raw.files:
        setting, m, seed, what = (key.split("/") + [""] * 4)[:4]
        if what == "acc" and setting in results and m in results[setting]:
            acc = raw[key]
            results[setting][m][int(seed)] = {"test_accuracy": acc, "batch_precision": raw[key[:-3] + "prec"],
                                              "labels_queried": np.arange(len(acc)) * a.batch}
    done = sum(len(v) for r in results.values() for v in r.values())
    write_report(out, a, results, info, done, len(a.seeds) * len(a.settings) * len(a.methods))


def main(argv=None):
    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.from_raw and "_info" in np.load(a.from_raw):
        return report_from_raw(a, out, {"argv": list(argv if argv is not None else sys.argv[1:])})
    guard = TimeGuard(a.time_limit)
    xtr, ytr, xte, yte, worse, source = load_data(a.synthetic, a.test, a.features)
    if a.n:
        keep = np.random.default_rng(0).permutation(len(ytr))[: a.n]
        xtr, ytr, worse = xtr[keep], ytr[keep], worse[keep]
        source += f", random subset of {a.n:,} training images"
    k = int(ytr.max()) + 1
    t0 = time.time()
    graph = None if a.from_raw else KNNGraph(xtr, k=10)
    info = {"source": source, "t_graph": np.nan if a.from_raw else time.time() - t0,
            "argv": list(argv if argv is not None else sys.argv[1:])}
    clean_model, _, _ = train_linear(xtr, ytr, k, epochs=a.epochs, lr=LR, seed=0)
    info["clean_acc"] = float(np.mean(clean_model.predict_proba(xte).argmax(1) == yte))
    info["target"] = info["clean_acc"] - 0.02
    info["noise"] = {s: float(np.mean(noisy_labels(s, ytr, worse, k, a.seeds[0])[1])) for s in a.settings}
    if a.from_raw:
        return report_from_raw(a, out, info)
    results = {s: {m: {} for m in a.methods} for s in a.settings}
    planned = len(a.seeds) * len(a.settings) * len(a.methods)
    done, secs = 0, []
    for seed in a.seeds:  # seed-major: a time-limited run still has every selector on the first seeds
        for setting in a.settings:
            for m in a.methods:
                if secs and not guard.allows(max(secs[-len(a.methods):])):
                    print(f"[active] time limit: stopping after {done} of {planned} runs", flush=True)
                    write_report(out, a, results, info, done, planned)
                    return results
                results[setting][m][seed] = run_one((xtr, ytr, xte, yte, worse, k), graph, setting, m, seed, a)
                secs.append(results[setting][m][seed]["seconds"])
                done += 1
                write_report(out, a, results, info, done, planned)
    return results


if __name__ == "__main__":
    main()
