"""Detection benchmark, part 6: the plots (histograms, trajectories, bars, epochs)."""

from __future__ import annotations

import numpy as np

from benchmarks.detection_core import CIFAR_SETS, margin, softmax
from sei.entropy import row_entropy, signed_row_entropy
from benchmarks.detection_tables import _agg
from benchmarks.harness import plt as _plt


def per_epoch_curves(hist_logits, labels_run):
    """(T, N) signed entropy and (T, N) probability margin per epoch."""
    T, N, _ = hist_logits.shape
    se = np.empty((T, N), np.float32)
    mg = np.empty((T, N), np.float32)
    for t in range(T):
        p = softmax(hist_logits[t])
        m = margin(p, labels_run)
        se[t] = signed_row_entropy(row_entropy(p), m >= 0)
        mg[t] = m
    return se, mg


def _figure(nrows, ncols, figsize):
    """``(pyplot, figure, 2-D axes)``: the one way every plot here starts."""
    plt = _plt()
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    return plt, fig, axes


def _save(plt, fig, path, title=None):
    """Title (fontsize 9), tight layout, 110 dpi, closed: the one way every plot here ends."""
    if title is not None:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label(ax, title, xlabel=None, size=9):
    """A panel's title, x label (fontsize 8) and small ticks."""
    ax.set_title(title, fontsize=size)
    if xlabel is not None:
        ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=7)


def _valid(run, n):
    """Samples that were not auxiliary in ``run``."""
    valid = np.ones(n, bool)
    valid[np.asarray(run["aux"])] = False
    return valid


def plot_histograms(keep, regime, methods, path):
    sets = [s for s in CIFAR_SETS if s in keep]
    plt, fig, axes = _figure(len(sets), len(methods), (3.6 * len(methods), 2.6 * len(sets)))
    for i, tag in enumerate(sets):
        run, meth, is_mis = keep[tag]
        valid = _valid(run, len(is_mis))
        for j, m in enumerate(methods):
            ax = axes[i, j]
            if m not in meth:
                ax.axis("off")
                continue
            s, _, _, th = meth[m]
            s = np.asarray(s, float)
            ok = valid & np.isfinite(s)
            bins = np.linspace(np.nanpercentile(s[ok], 0.5), np.nanpercentile(s[ok], 99.5), 60)
            ax.hist(s[ok & ~is_mis], bins=bins, alpha=0.6, density=True, label="clean")
            ax.hist(s[ok & is_mis], bins=bins, alpha=0.6, density=True, label="mislabeled")
            if th is not None and np.isfinite(th):
                ax.axvline(th, color="k", ls="--", lw=1, label="cutoff")
            _label(ax, f"{tag}: {m}", size=8)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    _save(plt, fig, path, f"Regime {regime}: scores of clean vs mislabeled samples (seed 0, lower = more suspicious)")


def plot_trajectories(keep, regime, path):
    sets = [s for s in CIFAR_SETS if s in keep]
    plt, fig, axes = _figure(2, len(sets), (4.2 * len(sets), 6))
    for j, tag in enumerate(sets):
        run, _, is_mis = keep[tag]
        lab = np.asarray(run["labels_run"])
        h = np.asarray(run["train"])
        se, mg = per_epoch_curves(h, lab)
        aligned = mg >= 0
        aux = ~_valid(run, len(lab))
        clean = ~is_mis & ~aux
        q = max(1, len(h) // 4)
        groups = {
            "easy clean": clean & aligned.all(0),
            "hard clean": clean & (~aligned[:q]).mean(0).astype(bool) & ((~aligned[:q]).mean(0) > 0.5) & aligned[-1],
            "mislabeled": is_mis & ~aux,
            "auxiliary": aux,
        }
        x = np.arange(1, len(h) + 1)
        for r, (curve, name) in enumerate(((se, "signed entropy"), (mg, "p_y - max other p"))):
            ax = axes[r, j]
            for g, mask in groups.items():
                if mask.sum() == 0:
                    continue
                c = curve[:, mask]
                ax.plot(x, np.median(c, 1), label=f"{g} (n={mask.sum()})")
                ax.fill_between(x, np.percentile(c, 25, 1), np.percentile(c, 75, 1), alpha=0.2)
            ax.axhline(0, color="k", lw=0.5)
            _label(ax, f"{tag}: per-epoch {name}", "epoch")
            if r == 0 and j == 0:
                ax.legend(fontsize=7)
    _save(plt, fig, path, f"Regime {regime}: training dynamics (median, 25-75% band), seed 0")


def plot_bars(results, methods, path):
    regs = [r for r in ("a", "b") if r in results]
    plt, fig, axes = _figure(len(regs), 2, (13, 3.6 * len(regs)))
    for i, reg in enumerate(regs):
        sets = [s for s in CIFAR_SETS if results[reg].get(s)]
        for j, metric in enumerate(("auroc", "f1")):
            ax = axes[i, j]
            w = 0.8 / max(len(methods), 1)
            for k, m in enumerate(methods):
                vals, errs = [], []
                for s in sets:
                    a = _agg(list(results[reg][s].values()), m, metric)
                    vals.append(a[0] if a else np.nan)
                    errs.append(a[1] if a else 0)
                ax.bar(np.arange(len(sets)) + k * w, vals, w, yerr=errs, label=m)
            ax.set_xticks(np.arange(len(sets)) + 0.4 - w / 2)
            ax.set_xticklabels(sets)
            ax.set_ylim(0.3 if metric == "f1" else 0.5, 1.0)
            ax.set_title(f"regime {reg}: {metric.upper()}", fontsize=9)
            if i == 0 and j == 1:
                ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    _save(plt, fig, path)


def plot_epochs(abl, path):
    ep = abl["epochs"]
    keys = sorted({k.rsplit("/", 1)[0] for k in ep})
    plt, fig, axes = _figure(1, len(keys), (4.2 * len(keys), 3.2))
    for j, rk in enumerate(keys):
        ts = sorted(int(k.rsplit("/", 1)[1]) for k in ep if k.rsplit("/", 1)[0] == rk)
        ax = axes[0, j]
        for m in ep[f"{rk}/{ts[0]}"]:
            ax.plot(ts, [ep[f"{rk}/{t}"][m]["auroc"] for t in ts], marker="o", ms=3, label=m)
        _label(ax, f"{rk}: AUROC vs epochs integrated", "epochs")
    axes[0, 0].legend(fontsize=6)
    _save(plt, fig, path)
