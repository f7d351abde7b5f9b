"""Streaming recorder of training dynamics: the Signed Entropy Integral and its peers.

Feed it every mini-batch's predictions while a model trains; it keeps O(N) running sums
per sample (plus the last epoch's (N, K) probabilities) and turns them into one score per
sample, lower = more likely mislabeled.

Per sample i and epoch t (an epoch's value is the mean over that sample's updates in it):

    SE_t   = sign_t * H(p_t)                 sign_t = +1 if p_t[y] >= max_k p_t[k] else -1
    SEI    = sum_t SE_t                      "sei"        (the paper)
    mean_t SE_t                              "sei_mean"   (the authors' code stores this)
    -sum_t H(p_t)                            "ei"         (unsigned entropy integral, negated)
    SE_T, SE_{T/2}                           "se_last", "se_mid"  (single-epoch slices)
    mean_t (z_y - max_{k!=y} z_k)            "aum"        (AUM, logits needed)
    mean_t (p_y - max_{k!=y} p_k)            "aum_prob"   (AUM on probabilities)
    mean_t sign_t * (1 - H(p_t) / log K)     "signed_confidence"
    -mean_t CE(p_t, y)                       "loss"       (small-loss criterion)
    mean_t 1[sign_t > 0]                     "agreement"
    1 - mistakenness(p_T, y)                 "mistakenness" (FiftyOne Brain's formula, last epoch)
"""

from __future__ import annotations

import os
import sys
import zipfile

import numpy as np

from ._validation import (
    as_float,
    as_history,
    check_labels,
    check_num_classes,
    check_num_samples,
    check_probability_values,
    input_eps,
    to_numpy,
)
from .constants import EPS, SCORE_NAMES

# Per-epoch accumulators, summed over a sample's updates within the epoch.
_EPOCH_FIELDS = ("count", "se", "h", "aligned", "margin", "loss", "sc", "aum", "aum_count")
# Totals over epochs (each epoch contributes the mean of its updates).
_TOTAL_FIELDS = ("epochs", "se", "h", "aligned", "margin", "loss", "sc", "aum", "aum_epochs")
# Scores that can be computed for labels other than those trained on: "ei" does not
# depend on the label, "mistakenness" reads only the last epoch's probabilities.
_RELABELABLE_SCORES = ("ei", "mistakenness")
# Rows per step where a whole (N, K) array is processed (end_epoch, mistakenness), so
# that no full-size temporary is ever allocated.
_CHUNK_ROWS = 8192


def _top2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest and second-largest entry of each row of an (B, K) array.

    Loops over the K columns, vectorised over rows: numpy's ``max(axis=1)`` is several
    times slower for the small K of classification.
    """
    cols = np.ascontiguousarray(x.T)
    first = cols[0].copy()
    second = np.full_like(first, -np.inf)
    for c in cols[1:]:
        np.maximum(second, np.minimum(first, c), out=second)
        np.maximum(first, c, out=first)
    return first, second


def _margin(x: np.ndarray, given: np.ndarray) -> np.ndarray:
    """x_y - max_{k != y} x_k per row, from the given entries ``given`` = x[rows, y]."""
    first, second = _top2(x)
    return given - np.where(given >= first, second, first)


def _batch_stats(values: np.ndarray, labels: np.ndarray, from_logits: bool) -> dict:
    """Per-update statistics for a batch of probabilities (or logits).

    Works in float32 or wider (float32 stays float32, float16 / bfloat16 become float32:
    ``log(p + 1e-8)`` is ``log(0)`` in float16); totals are float64.
    """
    values = as_float(np.asarray(values))
    rows = np.arange(values.shape[0])
    out = {}
    if from_logits:
        z = values
        out["aum"] = _margin(z, z[rows, labels])
        p = z - z.max(axis=1, keepdims=True)
        np.exp(p, out=p)
        p /= p.sum(axis=1, keepdims=True)
    else:
        p = values
    log_p = np.log(p + EPS)
    margin = _margin(p, p[rows, labels])
    aligned = margin >= 0
    h = -np.einsum("ij,ij->i", p, log_p)
    sign = np.where(aligned, 1.0, -1.0)
    out.update(
        probs=p,
        se=sign * h,
        h=h,
        aligned=aligned.astype(np.float64),
        margin=margin,
        loss=-log_p[rows, labels],
        sc=sign * (1.0 - h / np.log(p.shape[1])),
    )
    return out


class SEIRecorder:
    """Accumulates per-sample training dynamics and scores them.

    Parameters
    ----------
    num_samples : int
        N, the number of training samples; ``sample_ids`` index into 0..N-1.
    num_classes : int
        K, the number of probability columns fed (K + 1 with an auxiliary pseudo-class).
    mid_epoch : int, optional
        0-based epoch whose signed entropy is kept as ``"se_mid"``. Defaults to
        ``max_epochs // 2 - 1`` when ``max_epochs`` is given; otherwise each epoch's
        signed entropy is kept (float32, T x N) to find the middle epoch at read time.
    max_epochs : int, optional
        Planned number of epochs (fixes the middle epoch and sizes ``history_path``).
    history_path : str, optional
        Spill the full (max_epochs, N, K) float32 history of per-epoch mean
        probabilities to an ``.npy`` memmap at this path, for analysis. A fresh recorder
        starts a fresh file: at the end of its first epoch a new file replaces any file
        at that path in one step (written beside it, then renamed), so the path never
        mixes two runs. A recorder restored with :meth:`load_state_dict` after some
        epochs (``sei.train(resume=True)``) reopens the existing file, and raises a
        ValueError at once when that file is missing or has another shape.

    Examples
    --------
    >>> rec = SEIRecorder(4, 2)
    >>> for epoch in range(3):
    ...     rec.update([0, 1, 2, 3], np.array([[.9, .1], [.8, .2], [.3, .7], [.6, .4]]), [0, 0, 1, 1])
    ...     rec.end_epoch()
    >>> rec.scores("sei").round(2)
    array([ 0.98,  1.5 ,  1.83, -2.02])
    """

    def __init__(self, num_samples, num_classes, *, mid_epoch=None, max_epochs=None, history_path=None):
        self.num_samples = check_num_samples(num_samples)
        self.num_classes = check_num_classes(num_classes)
        if max_epochs is not None and int(max_epochs) < 1:
            raise ValueError(f"max_epochs must be positive, got {max_epochs}.")
        self.max_epochs = None if max_epochs is None else int(max_epochs)
        if mid_epoch is None and self.max_epochs is not None:
            mid_epoch = max(self.max_epochs // 2 - 1, 0)
        self.mid_epoch = None if mid_epoch is None else int(mid_epoch)
        if history_path is not None and self.max_epochs is None:
            raise ValueError("history_path needs max_epochs to size the (T, N, K) memmap; pass max_epochs=.")
        self.history_path = None if history_path is None else _check_history_path(history_path)
        self._history = None
        self._history_resumed = False  # set by load_state_dict: reopen the file, never replace it
        self.num_epochs = 0
        n, k = self.num_samples, self.num_classes
        # One (N, fields + K) block so that a batch is scattered with a single np.add.at
        # and ranks are merged with a single all_reduce; the dict and probs are views.
        self._acc = np.zeros((n, len(_EPOCH_FIELDS) + k))
        self._bind_views()
        self._total = {f: np.zeros(n) for f in _TOTAL_FIELDS}
        self.labels = np.full(n, -1, dtype=np.int64)
        self.last_probs = np.full((n, k), np.nan, dtype=np.float32)
        self.last_losses = np.full(n, np.nan)
        self._last_se = np.full(n, np.nan)
        self._mid_se = np.full(n, np.nan)
        self._se_per_epoch: list[np.ndarray] = []  # only when the middle epoch is not known up front

    def _history_shape(self) -> tuple[int, int, int]:
        return (self.max_epochs, self.num_samples, self.num_classes)

    def _open_history(self):
        """The memmap of ``history_path``: a new file for a fresh run, the checked
        existing one for a resumed run."""
        shape = self._history_shape()
        if self._history_resumed:
            _check_history_file(self.history_path, shape, self.num_epochs)
            return np.lib.format.open_memmap(self.history_path, mode="r+")
        # Written beside the target, then renamed over it: a reader of history_path sees
        # the old file or the new one, never a mix; the mapping survives the rename.
        tmp = f"{self.history_path}.{os.getpid()}.tmp"
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        try:
            os.replace(tmp, self.history_path)
        except BaseException:
            del mm
            os.unlink(tmp)
            raise
        return mm

    def _bind_views(self):
        self._epoch = {f: self._acc[:, i] for i, f in enumerate(_EPOCH_FIELDS)}
        self._epoch_probs = self._acc[:, len(_EPOCH_FIELDS):]

    # ------------------------------------------------------------------ recording
    def update(self, sample_ids, probs_or_logits, labels, *, from_logits=False):
        """Record one mini-batch.

        Parameters
        ----------
        sample_ids : array-like of int, shape (B,)
            Positions of the batch's samples in 0..N-1, any order; repeats allowed.
        probs_or_logits : array-like, shape (B, K)
            Softmax probabilities, or logits with ``from_logits=True``. numpy or torch.
        labels : array-like of int, shape (B,)
            The labels the model is trained on for these samples.
        from_logits : bool
            Whether ``probs_or_logits`` are logits (enables the ``"aum"`` score).
        """
        eps = input_eps(probs_or_logits)
        values = to_numpy(probs_or_logits, "probs_or_logits")
        if values.dtype.kind not in "fiu" or values.dtype.kind == "b":
            raise TypeError(f"probs_or_logits must hold real numbers, got dtype {values.dtype}.")
        if values.ndim != 2 or values.shape[1] != self.num_classes:
            raise ValueError(
                f"probs_or_logits must have shape (B, {self.num_classes}), got {values.shape}; "
                "the recorder was created with num_classes columns."
            )
        if values.shape[0] == 0:
            return
        check_probability_values(values, "probs_or_logits", from_logits=from_logits, eps=eps)
        ids = to_numpy(sample_ids, "sample_ids")
        if ids.ndim != 1 or ids.shape[0] != values.shape[0]:
            raise ValueError(
                f"sample_ids must be 1-D with one id per row of probs_or_logits ({values.shape[0]}), got shape {ids.shape}."
            )
        if ids.dtype.kind not in "iu":
            raise TypeError(f"sample_ids must be integers, got dtype {ids.dtype}.")
        if ids.min() < 0 or ids.max() >= self.num_samples:
            raise ValueError(
                f"sample_ids must lie in 0..{self.num_samples - 1}, got {ids.min()}..{ids.max()}; "
                "create the recorder with the full data set size."
            )
        labels = check_labels(labels, values.shape[0], self.num_classes)
        self._accumulate(ids.astype(np.int64, copy=False), values, labels, from_logits)

    def _accumulate(self, ids, values, labels, from_logits):
        stats = _batch_stats(values, labels, from_logits)
        block = np.empty((ids.shape[0], self._acc.shape[1]))
        block[:, 0] = 1.0
        for i, f in enumerate(_EPOCH_FIELDS[1:7], start=1):  # se, h, aligned, margin, loss, sc
            block[:, i] = stats[f]
        block[:, 7] = stats["aum"] if from_logits else 0.0
        block[:, 8] = 1.0 if from_logits else 0.0
        block[:, len(_EPOCH_FIELDS):] = stats["probs"]
        np.add.at(self._acc, ids, block)
        self.labels[ids] = labels

    def end_epoch(self):
        """Close the current epoch: fold each seen sample's mean update into the totals.

        Under an initialised ``torch.distributed`` group with several ranks the epoch's
        accumulators are summed across ranks first, so every rank ends with the merged
        state (every rank must call ``end_epoch``).
        """
        self._all_reduce_epoch()
        if self.history_path is not None and self.num_epochs < self.max_epochs and self._history is None:
            self._history = self._open_history()
        e, t = self._epoch, self._total
        seen = e["count"] > 0
        cnt = np.where(seen, e["count"], 1.0)
        t["epochs"] += seen
        for f in ("se", "h", "aligned", "margin", "loss", "sc"):
            t[f] += np.where(seen, e[f] / cnt, 0.0)
        has_aum = e["aum_count"] > 0
        t["aum"] += np.where(has_aum, e["aum"] / np.where(has_aum, e["aum_count"], 1.0), 0.0)
        t["aum_epochs"] += has_aum
        se_epoch = np.where(seen, e["se"] / cnt, np.nan)
        self._last_se = np.where(seen, se_epoch, self._last_se)
        self.last_losses = np.where(seen, e["loss"] / cnt, self.last_losses)
        if self.mid_epoch is not None:
            if self.num_epochs == self.mid_epoch:
                self._mid_se = se_epoch
        else:
            self._se_per_epoch.append(se_epoch.astype(np.float32))
        # The (N, K) part works in place, in row chunks: the epoch's probability sums
        # become means inside the accumulator (cleared below anyway), then are copied
        # out; no full-size temporary (at N = 1e6, K = 100 each would be 800 MB).
        row = self._history[self.num_epochs] if self._history is not None and self.num_epochs < self.max_epochs else None
        for start in range(0, self.num_samples, _CHUNK_ROWS):
            sl = slice(start, start + _CHUNK_ROWS)
            probs, s = self._epoch_probs[sl], seen[sl]
            probs /= cnt[sl, None]
            np.copyto(self.last_probs[sl], probs, casting="same_kind", where=s[:, None])
            if row is not None:
                row[sl] = probs
                row[sl][~s] = np.nan
        if row is not None:
            self._history.flush()
        self._acc.fill(0.0)
        self.num_epochs += 1

    def _all_reduce_epoch(self):
        dist_mod = sys.modules.get("torch.distributed")  # never import torch ourselves
        if dist_mod is None or not dist_mod.is_available() or not dist_mod.is_initialized():
            return
        if dist_mod.get_world_size() <= 1:
            return
        import torch

        tensor = torch.from_numpy(self._acc.ravel())
        if dist_mod.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist_mod.all_reduce(tensor, op=dist_mod.ReduceOp.SUM)
        self._acc[:] = tensor.cpu().numpy().reshape(self._acc.shape)
        # Labels are per-rank: take, for each sample, the label from any rank that saw it.
        lab = torch.from_numpy(self.labels.copy())
        if dist_mod.get_backend() == "nccl":
            lab = lab.cuda()
        dist_mod.all_reduce(lab, op=dist_mod.ReduceOp.MAX)
        self.labels[:] = lab.cpu().numpy()

    # ------------------------------------------------------------------ reading
    def scores(self, name: str = "sei", labels=None) -> np.ndarray:
        """One float per sample, lower = more likely mislabeled; NaN where never seen.

        Parameters
        ----------
        name : str
            One of :data:`sei.constants.SCORE_NAMES`.
        labels : array-like of int, optional
            (N,) labels to score, e.g. after some were corrected. By default, and for
            samples whose label equals the one trained on, the recorded dynamics are
            used. Where a label differs, only the scores that do not need the past
            epochs' agreement with that label can be recomputed: ``"ei"`` (label-free)
            and ``"mistakenness"`` (last epoch's probabilities). Any other score raises a
            ValueError, since the recorder keeps running sums and not the per-epoch
            probabilities: pass the (T, N, K) history instead (``history_path=``), or
            retrain on the new labels.

        Returns
        -------
        np.ndarray
            (N,) float64 scores.
        """
        if name not in SCORE_NAMES:
            raise ValueError(f"Unknown score {name!r}; choose one of {', '.join(SCORE_NAMES)}.")
        if self.num_epochs == 0:
            raise ValueError("No epoch recorded yet: call update(...) for each batch and end_epoch() after each epoch.")
        label_of = self.labels
        if labels is not None:
            labels = check_labels(labels, self.num_samples, self.num_classes)
            changed = np.flatnonzero((self.labels >= 0) & (labels != self.labels))
            if changed.size and name not in _RELABELABLE_SCORES:
                i = int(changed[0])
                raise ValueError(
                    f"labels differ from the labels this recorder was trained on at {changed.size} sample(s) "
                    f"(e.g. sample {i}: given {int(labels[i])}, trained on {int(self.labels[i])}), and score "
                    f"{name!r} sums each epoch's agreement with the trained label: the recorder keeps those sums, "
                    "not the per-epoch probabilities, so it cannot be recomputed for other labels. Pass the "
                    "(T, N, K) history instead (record it with history_path=), retrain on the corrected labels, "
                    f"pass the trained labels (recorder.labels), or use a score that can be recomputed "
                    f"({', '.join(_RELABELABLE_SCORES)})."
                )
            label_of = np.where(self.labels >= 0, labels, self.labels)
        t = self._total
        n = t["epochs"]
        seen = n > 0
        safe_n = np.where(seen, n, 1.0)

        def mean(field):
            return np.where(seen, t[field] / safe_n, np.nan)

        if name == "sei":
            return np.where(seen, t["se"], np.nan)
        if name == "sei_mean":
            return mean("se")
        if name == "ei":
            return np.where(seen, -t["h"], np.nan)
        if name == "se_last":
            return self._last_se.copy()
        if name == "se_mid":
            return self._middle_se()
        if name == "aum":
            if not np.any(t["aum_epochs"] > 0):
                raise ValueError(
                    "The 'aum' score needs logits: call update(..., from_logits=True), or use 'aum_prob'."
                )
            has = t["aum_epochs"] > 0
            return np.where(has, t["aum"] / np.where(has, t["aum_epochs"], 1.0), np.nan)
        if name == "aum_prob":
            return mean("margin")
        if name == "signed_confidence":
            return mean("sc")
        if name == "loss":
            return -mean("loss")
        if name == "agreement":
            return mean("aligned")
        return self._mistakenness(label_of, seen)

    def _mistakenness(self, labels: np.ndarray, seen: np.ndarray) -> np.ndarray:
        # mistakenness (FiftyOne Brain): m = (s * exp(-H) + 1) / 2 with s = +1 when the
        # prediction disagrees with the label; we return 1 - m so that lower = suspicious.
        # Row chunks: a float64 copy of the (N, K) probabilities would double the memory.
        out = np.full(self.num_samples, np.nan)
        for start in range(0, self.num_samples, _CHUNK_ROWS):
            sl = slice(start, start + _CHUNK_ROWS)
            p = np.nan_to_num(self.last_probs[sl].astype(np.float64))
            valid = (labels[sl] >= 0) & seen[sl]
            lab = np.where(valid, labels[sl], 0)
            h = -(p * np.log(p + EPS)).sum(axis=1)
            aligned = np.take_along_axis(p, lab[:, None], axis=1)[:, 0] >= p.max(axis=1)
            s = np.where(aligned, -1.0, 1.0)
            out[sl] = np.where(valid, 1.0 - (s * np.exp(-h) + 1.0) / 2.0, np.nan)
        return out

    def _middle_se(self) -> np.ndarray:
        if self.mid_epoch is not None:
            if self.num_epochs <= self.mid_epoch:
                raise ValueError(
                    f"se_mid is kept at epoch {self.mid_epoch} but only {self.num_epochs} epoch(s) were recorded."
                )
            return self._mid_se.copy()
        mid = max(self.num_epochs // 2 - 1, 0)
        return self._se_per_epoch[mid].astype(np.float64)

    def predicted_labels(self) -> np.ndarray:
        """(N,) argmax of the last epoch's probabilities (-1 where never seen)."""
        seen = ~np.isnan(self.last_probs[:, 0])  # rows are written whole
        return np.where(seen, self.last_probs.argmax(axis=1), -1)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        """All state as numpy arrays and scalars (for checkpoints); copies."""
        return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self._state().items()}

    def _state(self) -> dict:
        state = {
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "num_epochs": self.num_epochs,
            "mid_epoch": -1 if self.mid_epoch is None else self.mid_epoch,
            "max_epochs": -1 if self.max_epochs is None else self.max_epochs,
            "labels": self.labels,
            "last_probs": self.last_probs,
            "last_losses": self.last_losses,
            "last_se": self._last_se,
            "mid_se": self._mid_se,
            "epoch_acc": self._acc,
            "se_per_epoch": (np.stack(self._se_per_epoch) if self._se_per_epoch
                             else np.zeros((0, self.num_samples), np.float32)),
        }
        state.update({f"total_{f}": v for f, v in self._total.items()})
        return state

    def load_state_dict(self, state: dict) -> "SEIRecorder":
        """Restore :meth:`state_dict`'s output (e.g. from a checkpoint).

        With ``history_path`` set and epochs already recorded, the existing history file
        is checked here (it must exist with shape (max_epochs, N, K), float32) and is
        reopened, not replaced, at the next :meth:`end_epoch`.
        """
        if int(state["num_samples"]) != self.num_samples or int(state["num_classes"]) != self.num_classes:
            raise ValueError(
                f"State is for ({int(state['num_samples'])}, {int(state['num_classes'])}) but this recorder is "
                f"({self.num_samples}, {self.num_classes}); create the recorder with the same sizes."
            )
        self.num_epochs = int(state["num_epochs"])
        mid, mx = int(state["mid_epoch"]), int(state["max_epochs"])
        self.mid_epoch = None if mid < 0 else mid
        self.max_epochs = None if mx < 0 else mx
        self.labels = np.array(state["labels"], dtype=np.int64)
        self.last_probs = np.array(state["last_probs"], dtype=np.float32)
        self.last_losses = np.array(state["last_losses"], dtype=np.float64)
        self._last_se = np.array(state["last_se"], dtype=np.float64)
        self._mid_se = np.array(state["mid_se"], dtype=np.float64)
        self._acc = np.array(state["epoch_acc"], dtype=np.float64)
        self._bind_views()
        self._se_per_epoch = [np.array(r, dtype=np.float32) for r in state["se_per_epoch"]]
        self._total = {f: np.array(state[f"total_{f}"], dtype=np.float64) for f in _TOTAL_FIELDS}
        if self.history_path is not None:
            if self.max_epochs is None:
                raise ValueError("history_path needs max_epochs, but the restored state has none; "
                                 "create the recorder without history_path.")
            self._history = None
            self._history_resumed = self.num_epochs > 0
            if self._history_resumed:
                _check_history_file(self.history_path, self._history_shape(), self.num_epochs)
        return self

    def save(self, path) -> None:
        """Save to an ``.npz`` file (no pickles)."""
        path = os.fspath(path)
        tmp = path + ".tmp.npz"
        np.savez(tmp, **{k: np.asarray(v) for k, v in self._state().items()})  # no copies
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "SEIRecorder":
        """Load a recorder written by :meth:`save`; a ValueError naming the file when it
        is not one."""
        path = os.fspath(path)
        hint = "pass a file written by SEIRecorder.save"
        try:
            data = np.load(path, allow_pickle=False)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path} is not a saved SEIRecorder (an .npz file) ({e}); {hint}.") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{path} holds a single array, not a saved SEIRecorder (.npz); {hint}.")
        with data:
            required = {"num_samples", "num_classes", "num_epochs", "labels", "epoch_acc"}
            missing = sorted(required - set(data.files))
            if missing:
                raise ValueError(f"{path} is an .npz file but not a saved SEIRecorder (missing {', '.join(missing)}); "
                                 f"{hint}.")
            try:
                state = {k: data[k] for k in data.files}
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                raise ValueError(f"{path} is damaged ({e}); {hint}.") from None
        try:
            rec = cls(int(state["num_samples"]), int(state["num_classes"]))
            return rec.load_state_dict(state)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path} is not a valid saved SEIRecorder ({e}); {hint}.") from None

    # ------------------------------------------------------------------ from a stored history
    @classmethod
    def from_history(cls, pred_probs_history, labels, *, from_logits=False, chunk_size=65536) -> "SEIRecorder":
        """Build a recorder from a (T, N, K) history, streaming along T (and N in chunks).

        ``pred_probs_history`` may be an ``np.memmap``: it is read one (chunk, K) slice at a
        time and never loaded whole. torch tensors are accepted; float16 and bfloat16
        values are computed in float32.

        Examples
        --------
        >>> H = np.tile(np.array([[[.9, .1], [.2, .8]]]), (5, 1, 1))
        >>> SEIRecorder.from_history(H, np.array([0, 0])).scores("sei").round(2)
        array([ 1.63, -2.5 ])
        """
        pred_probs_history, (T, N, K), eps = as_history(pred_probs_history)
        labels = check_labels(labels, N, K)
        return cls._from_checked_history(pred_probs_history, eps, labels, from_logits, chunk_size)

    @classmethod
    def _from_checked_history(cls, pred_probs_history, eps, labels, from_logits=False, chunk_size=65536):
        """:meth:`from_history` on the output of :func:`sei._validation.as_history` (for
        callers that validated already; ``eps`` is the input's precision)."""
        T, N, K = (int(d) for d in pred_probs_history.shape)
        rec = cls(N, K, max_epochs=T)
        rec.labels[:] = labels
        for t in range(T):
            for start in range(0, N, chunk_size):
                stop = min(start + chunk_size, N)
                chunk = as_float(np.asarray(pred_probs_history[t, start:stop]))  # float16 -> float32
                check_probability_values(chunk, "pred_probs_history", from_logits=from_logits, eps=eps)
                rec._fold_full_epoch_chunk(slice(start, stop), chunk, labels[start:stop], from_logits)
            rec.num_epochs += 1
        return rec

    def _fold_full_epoch_chunk(self, sl, values, labels, from_logits):
        # Every sample is seen exactly once per epoch: add straight into the totals,
        # skipping the per-epoch accumulators.
        stats = _batch_stats(values, labels, from_logits)
        t = self._total
        t["epochs"][sl] += 1
        for f in ("se", "h", "aligned", "margin", "loss", "sc"):
            t[f][sl] += stats[f]
        if from_logits:
            t["aum"][sl] += stats["aum"]
            t["aum_epochs"][sl] += 1
        if self.num_epochs == self.max_epochs - 1:
            self._last_se[sl] = stats["se"]
            self.last_losses[sl] = stats["loss"]
            self.last_probs[sl] = stats["probs"]
        if self.num_epochs == self.mid_epoch:
            self._mid_se[sl] = stats["se"]

    def __repr__(self):
        return f"SEIRecorder(num_samples={self.num_samples}, num_classes={self.num_classes}, epochs={self.num_epochs})"


def _check_history_path(path) -> str:
    """``history_path`` must name a file in an existing, writable folder (checked before
    any training, not when the first epoch is written)."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"history_path must be a path, got {type(path).__name__}.") from None
    if os.path.isdir(path):
        raise ValueError(f"history_path {path!r} is a folder; pass a file path such as "
                         f"{os.path.join(path, 'history.npy')!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"history_path {path!r}: folder {folder!r} does not exist; create it first.")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"history_path {path!r}: folder {folder!r} is not writable.")
    return path


def _check_history_file(path: str, shape: tuple, num_epochs: int) -> None:
    """A resumed run's history file must exist with this run's shape and dtype."""
    fix = ("resume with the history file of the same run, pass history_path=None, or start a fresh run "
           "(a fresh recorder replaces the file)")
    if not os.path.exists(path):
        raise ValueError(f"history_path {path!r} does not exist, but the restored recorder has already written "
                         f"{num_epochs} epoch(s) to it; {fix}.")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            file_shape, fortran, dtype = read_header(f)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"history_path {path!r} is not a .npy history file ({e}); {fix}.") from None
    if tuple(file_shape) != tuple(shape) or dtype != np.float32 or fortran:
        raise ValueError(f"history_path {path!r} holds a {tuple(file_shape)} {dtype} array, but this run records "
                         f"{tuple(shape)} float32 (max_epochs, N, K): it belongs to another run; {fix}.")
