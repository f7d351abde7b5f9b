"""Saving and restoring an :class:`sei.SEIRecorder` (checkpoints, ``.npz`` files), merging
its epoch accumulators across torch.distributed ranks, and building one from a stored
(T, N, K) history.

The accumulator's columns are saved with their names (``epoch_fields``; a per-class
statistic's K columns as ``name:0`` .. ``name:K-1``), so a state loads into a recorder
whose score registry records other statistics: columns are matched by name, and a
statistic the state lacks (saved before its score was added, or not asked for) reads NaN.
:meth:`RecorderState.load` keeps the per-class sums that the file holds.
"""

from __future__ import annotations

import os
import sys
import zipfile

import numpy as np

from . import scores as _scores
from ._latest import LatestProbs
from ._recorder_layout import build_layout
from ._logp_top import LogProbTop
from .validation import as_float, as_history, check_history_file, check_labels, check_probability_values

# Totals over epochs besides the statistics: epochs that saw the sample, epochs that saw its
# logits (names of a saved recorder's entries, kept from the first layout).
_EPOCHS, _LOGIT_EPOCHS = "epochs", "aum_epochs"
# The accumulator columns of recorders saved before the layout was stored with them.
_LEGACY_EPOCH_FIELDS = ("count", "se", "h", "aligned", "margin", "loss", "sc", "aum", "aum_count")


def _per_class_scores(statistics) -> list:
    """The per-class scores whose statistic is among ``statistics`` (names): the
    ``extra_scores`` that make a recorder keep those (N, K) sums."""
    return [n for n, s in _scores.SCORES.items() if s.per_class and s.statistic.name in statistics]


class RecorderState:
    """Persistence half of :class:`sei.SEIRecorder` (its state is the recorder's arrays)."""

    # ------------------------------------------------------------------ from a stored history
    @classmethod
    def from_history(cls, pred_probs_history, labels, *, from_logits=False, chunk_size=65536,
                     extra_scores="all", top_k="auto") -> "SEIRecorder":
        """Build a recorder from a (T, N, K) history, streaming along T (and N in chunks).

        ``pred_probs_history`` may be an ``np.memmap``: it is read one (chunk, K) slice at a
        time and never loaded whole. torch tensors are accepted; float16 and bfloat16
        values are computed in float32. ``extra_scores`` is the constructor's: by default
        ``"all"``, so that every score can be read from a history (the per-class sums of
        ``"mean_logp"`` / ``"poe_knn"`` cost 8 N K bytes); ``()`` skips them. ``top_k`` is the
        constructor's too (the last epoch's probabilities kept).

        Examples
        --------
        >>> H = np.tile(np.array([[[.9, .1], [.2, .8]]]), (5, 1, 1))
        >>> SEIRecorder.from_history(H, np.array([0, 0])).scores("sei").round(2)
        array([ 1.63, -2.5 ])
        """
        pred_probs_history, (T, N, K), eps = as_history(pred_probs_history)
        labels = check_labels(labels, N, K)
        return cls._from_checked_history(pred_probs_history, eps, labels, from_logits, chunk_size, extra_scores,
                                         top_k)

    @classmethod
    def _from_checked_history(cls, pred_probs_history, eps, labels, from_logits=False, chunk_size=65536,
                              extra_scores="all", top_k="auto"):
        """:meth:`from_history` on the output of :func:`sei.validation.as_history` (for
        callers that validated already; ``eps`` is the input's precision)."""
        T, N, K = (int(d) for d in pred_probs_history.shape)
        rec = cls(N, K, max_epochs=T, extra_scores=extra_scores, top_k=top_k)
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
        batch = _scores.Batch(values, labels, from_logits)
        lay, t = self._layout, self._total
        stats = lay.probs + lay.logits + lay.per_class if from_logits else lay.probs + lay.per_class
        value = {s.name: s.compute(batch) for s in stats}
        t[_EPOCHS][sl] += 1
        if from_logits:
            t[_LOGIT_EPOCHS][sl] += 1
        for name, v in value.items():
            t[name][sl] += v
        rows, top = np.arange(sl.start, sl.stop), None
        if self._logp_total is not None:  # one update per sample and epoch: straight into the totals
            top = batch.top_log_probs(self._logp_total.j)
            self._logp_total.add_updates(rows, *top)
        if self.num_epochs == self.max_epochs - 1:
            for name in set(lay.last) & set(value):
                self._last[name][sl] = value[name]
            self.last_losses[sl] = value["loss"]
            if top is None:
                self._latest.write(sl, batch.probs, batch.entropy)
            else:  # the same top k as update() takes (ties ordered alike)
                self._latest.write_top(rows, top[0], batch.top_probs, batch.entropy)
        if self.num_epochs == self.mid_epoch:
            for name in set(lay.middle) & set(value):
                self._mid[name][sl] = value[name]

    def _history_shape(self) -> tuple[int, int, int]:
        return (self.max_epochs, self.num_samples, self.num_classes)

    def _open_history(self):
        """The memmap of ``history_path``: a new file for a fresh run, the checked
        existing one for a resumed run."""
        shape = self._history_shape()
        if self._history_resumed:
            check_history_file(self.history_path, shape, self.num_epochs)
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

    def _all_reduce_epoch(self):
        """Merge the epoch over the ranks of an initialised torch.distributed group: the
        accumulators are summed (so a sample seen on several ranks, e.g. DDP's padding, has
        every update counted), labels taken from any rank that saw the sample, and each
        sample's latest probabilities from the highest rank that saw it this epoch."""
        dist_mod = sys.modules.get("torch.distributed")  # never import torch ourselves
        if dist_mod is None or not dist_mod.is_available() or not dist_mod.is_initialized():
            return
        if dist_mod.get_world_size() <= 1:
            return
        import torch

        device = "cuda" if dist_mod.get_backend() == "nccl" else "cpu"

        def reduce(array, op):
            tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
            dist_mod.all_reduce(tensor, op=op)
            return tensor.cpu().numpy()

        rank = dist_mod.get_rank()
        seen_here = self._acc[:, self._layout.column("count")] > 0
        self._acc[:] = reduce(self._acc.ravel(), dist_mod.ReduceOp.SUM).reshape(self._acc.shape)
        self.labels[:] = reduce(self.labels, dist_mod.ReduceOp.MAX)
        owner = reduce(np.where(seen_here, rank + 1, 0).astype(np.int64), dist_mod.ReduceOp.MAX)
        rows = np.flatnonzero(owner > 0)  # the same on every rank
        mine = owner[rows] == rank + 1
        for array in self._latest.arrays.values():  # (N, K), or the top k's classes, probs, entropy
            part = array[rows]
            keep = mine.reshape((-1,) + (1,) * (part.ndim - 1))
            wide = np.where(keep, part, 0).astype(np.int64 if part.dtype.kind == "i" else part.dtype)
            array[rows] = reduce(wide, dist_mod.ReduceOp.SUM).astype(array.dtype)
        if self._logp_epoch is not None:
            self._logp_epoch = self._gathered_sketch(dist_mod, device)

    def _gathered_sketch(self, dist_mod, device) -> LogProbTop:
        """This epoch's log-probability sketch merged over the ranks in rank order (the same on
        every rank): every rank's rows (its samples' updates) gathered, then merged as updates."""
        import torch

        mine, world = self._logp_epoch, dist_mod.get_world_size()
        out = LogProbTop(mine.num_samples, mine.num_classes, mine.j)
        gathered = {}
        for name, array in mine.arrays.items():
            wide = array.astype(np.uint8 if array.dtype == bool else np.int64 if array.dtype.kind == "i" else array.dtype)
            tensor = torch.from_numpy(np.ascontiguousarray(wide)).to(device)
            parts = [torch.empty_like(tensor) for _ in range(world)]
            dist_mod.all_gather(parts, tensor)
            gathered[name] = [p.cpu().numpy().astype(array.dtype) for p in parts]
        for r in range(world):
            rows = np.flatnonzero(gathered["classes"][r][:, 0] >= 0)
            out.merge_rows(rows, {name: gathered[name][r][rows] for name in gathered})
        return out

    @classmethod
    def merge(cls, recorders) -> "SEIRecorder":
        """One recorder from shards that each recorded a part of the samples.

        For a job that scores its partitions anywhere (a Spark or Ray task per partition,
        processes without torch.distributed): each shard is an ``SEIRecorder(N, K, ...)`` of
        the full size, updated with the global ids of its partition's samples, ended after
        the same epochs, and saved (:meth:`save`) or passed on; the merge equals one recorder
        that saw every update. Per sample, the shard that saw it gives its sums, its kept
        epochs and its latest probabilities; a sample recorded by two shards is refused (its
        epochs would count twice: repeated views of a sample within an epoch are merged per
        epoch by ``end_epoch`` under torch.distributed instead). Memory: one more recorder.

        Examples
        --------
        >>> p = np.array([[.9, .1], [.2, .8]])
        >>> a, b = SEIRecorder(2, 2), SEIRecorder(2, 2)
        >>> a.update([0], p[:1], [0]); a.end_epoch(); b.update([1], p[1:], [0]); b.end_epoch()
        >>> SEIRecorder.merge([a, b]).scores("sei").round(2)
        array([ 0.33, -0.5 ])
        """
        recorders = list(recorders)
        if not recorders or not all(isinstance(r, cls) for r in recorders):
            raise TypeError(f"merge takes a non-empty list of {cls.__name__} objects, got "
                            f"{[type(r).__name__ for r in recorders]}")
        first = recorders[0]
        for r in recorders[1:]:
            same = (r.num_samples, r.num_classes, r.num_epochs, r.mid_epoch, r.max_epochs, r.top_k,
                    r._layout.fields)
            want = (first.num_samples, first.num_classes, first.num_epochs, first.mid_epoch, first.max_epochs,
                    first.top_k, first._layout.fields)
            if same != want:
                raise ValueError(
                    "Shards to merge must be recorders of the same (num_samples, num_classes, epochs recorded, "
                    f"mid_epoch, max_epochs, top_k, extra_scores): {want[:6]} vs {same[:6]}; create every shard "
                    "with the full N and the same options, and end the same epochs on each")
        for r in recorders:
            r._flush_all()
            if (r._acc != 0).any():
                raise ValueError("A shard has updates in an epoch it did not end; call end_epoch() on every shard "
                                 "before merging")
        seen = np.stack([r._total[_EPOCHS] > 0 for r in recorders])
        both = np.flatnonzero(seen.sum(0) > 1)
        if both.size:
            raise ValueError(f"{both.size} sample(s) were recorded by more than one shard (e.g. sample "
                             f"{int(both[0])}); give each sample to one shard, or record repeated views under "
                             "torch.distributed, whose end_epoch merges them per epoch")
        if len({r._logp_total is None for r in recorders}) > 1:
            raise ValueError("Shards to merge must all keep the log-probability sketch or none (a shard loaded from "
                             "a state saved without one has none); record every shard with this version")
        out = cls(first.num_samples, first.num_classes, mid_epoch=first.mid_epoch, max_epochs=first.max_epochs,
                  extra_scores=_per_class_scores(first._per_class_names()), top_k=first.top_k)
        if first._logp_total is None:
            out._logp_epoch = out._logp_total = None
        out.num_epochs = first.num_epochs
        for r, rows in zip(recorders, seen):
            rows = np.flatnonzero(rows)
            out.labels[rows] = r.labels[rows]
            out._latest.copy_rows(r._latest, rows)
            out.last_losses[rows] = r.last_losses[rows]
            for f in out._total:
                out._total[f][rows] = r._total[f][rows]
            if out._logp_total is not None:
                out._logp_total.copy_rows(r._logp_total, rows)
            for d in ("_last", "_mid"):
                for name, v in getattr(out, d).items():
                    v[rows] = getattr(r, d)[name][rows]
        for name in out._per_epoch:
            epochs = [np.full(first.num_samples, np.nan, np.float32) for _ in first._per_epoch[name]]
            for r, rows in zip(recorders, seen):
                for e, v in zip(epochs, r._per_epoch[name]):
                    e[rows] = v[rows]
            out._per_epoch[name] = epochs
        return out

    def state_dict(self) -> dict:
        """All state as numpy arrays and scalars (for checkpoints); copies."""
        return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self._state().items()}

    def _state(self) -> dict:
        self._flush_all()
        state = {
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "num_epochs": self.num_epochs,
            "mid_epoch": -1 if self.mid_epoch is None else self.mid_epoch,
            "max_epochs": -1 if self.max_epochs is None else self.max_epochs,
            "labels": self.labels,
            **self._latest.arrays,  # last_probs, or the top k's last_top_classes / _probs and last_entropy
            "last_losses": self.last_losses,
            "epoch_acc": self._acc,
            "epoch_fields": ",".join(self._layout.fields),  # the accumulator's columns, by name
        }
        empty = np.zeros((0, self.num_samples), np.float32)
        state.update({f"last_{s}": v for s, v in self._last.items()})
        state.update({f"mid_{s}": v for s, v in self._mid.items()})
        state.update({f"{s}_per_epoch": np.stack(v) if v else empty for s, v in self._per_epoch.items()})
        state.update({f"total_{f}": v for f, v in self._total.items()})
        if self._logp_total is not None:
            state.update(self._logp_epoch.state("logp_epoch_"))
            state.update(self._logp_total.state("logp_total_"))
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
        self._latest = LatestProbs.from_state(state, self.num_samples, self.num_classes)
        # The sketch as saved; None for a state saved without one ("mean_logp" / "poe_knn" then
        # say they were not recorded).
        self._logp_total = LogProbTop.from_state(state, "logp_total_", self.num_samples, self.num_classes)
        self._logp_epoch = LogProbTop.from_state(state, "logp_epoch_", self.num_samples, self.num_classes)
        if (self._logp_total is None) != (self._logp_epoch is None):
            raise ValueError("The state holds one of logp_total_* and logp_epoch_* but not the other; it is damaged.")
        self.last_losses = np.array(state["last_losses"], dtype=np.float64)
        self._match_log_prob_layout(state)
        self._acc = self._restored_accumulator(state)
        self._bind_views()
        self._pending.rows = 0  # updates buffered before the restore belong to the replaced state
        self._summaries, self._summary_rows = [], 0
        # A statistic missing from the state (saved before its score was added) reads NaN.
        n, nan = self.num_samples, np.full(self.num_samples, np.nan)
        self._last = {s: np.array(state.get(f"last_{s}", nan), dtype=np.float64) for s in self._last}
        self._mid = {s: np.array(state.get(f"mid_{s}", nan), dtype=np.float64) for s in self._mid}
        unknown = np.full((self.num_epochs if self.mid_epoch is None else 0, n), np.nan, np.float32)
        self._per_epoch = {s: [np.array(r, dtype=np.float32) for r in state.get(f"{s}_per_epoch", unknown)]
                           for s in self._per_epoch}
        per_class = self._per_class_names()
        self._total = {f: np.array(state[f"total_{f}"] if f"total_{f}" in state or f in (_EPOCHS, _LOGIT_EPOCHS)
                                   else np.full((n, self.num_classes), np.nan) if f in per_class else nan,
                                   dtype=np.float64) for f in self._total_fields()}
        for f in per_class:
            if self._total[f].shape != (n, self.num_classes):
                raise ValueError(f"total_{f} has shape {self._total[f].shape}, expected ({n}, {self.num_classes}); "
                                 "the state is damaged.")
        if self.history_path is not None:
            if self.max_epochs is None:
                raise ValueError("history_path needs max_epochs, but the restored state has none; "
                                 "create the recorder without history_path.")
            self._history = None
            self._history_resumed = self.num_epochs > 0
            if self._history_resumed:
                check_history_file(self.history_path, self._history_shape(), self.num_epochs)
        return self

    def _match_log_prob_layout(self, state) -> None:
        """Per-class log-probability sums as the state holds them: (N, K) columns (kept even by a
        recorder that would sketch them, so nothing saved is dropped) or the sketch."""
        name = _scores.LOG_PROBS.name
        dense = f"total_{name}" in state
        names = set(self._per_class_names())
        if dense and name not in names:
            names.add(name)
        elif self._logp_total is not None and not dense and name in names:
            names.discard(name)
        else:
            return
        self._layout = build_layout(self.num_classes, names)

    def _restored_accumulator(self, state) -> np.ndarray:
        """The saved (N, fields [+ K]) accumulator, its columns matched to this layout by name
        (the K probability columns, which states saved before this version always hold, are
        kept only where this recorder keeps them: with ``history_path``)."""
        acc = np.array(state["epoch_acc"], dtype=np.float64)
        saved = str(state["epoch_fields"]).split(",") if "epoch_fields" in state else list(_LEGACY_EPOCH_FIELDS)
        fields, n, k = self._layout.fields, self.num_samples, self.num_classes
        if acc.ndim != 2 or acc.shape[0] != n or acc.shape[1] not in (len(saved), len(saved) + k):
            raise ValueError(f"epoch_acc has shape {acc.shape}, expected ({n}, {len(saved)}) or ({n}, "
                             f"{len(saved) + k}) for fields {', '.join(saved)} and {k} classes; the state is damaged.")
        width = len(fields) + (k if self._keep_epoch_probs else 0)
        if list(fields) == saved and acc.shape[1] == width:
            return acc
        out = np.zeros((n, width))
        for i, f in enumerate(fields):
            if f in saved:
                out[:, i] = acc[:, saved.index(f)]
        if self._keep_epoch_probs and acc.shape[1] == len(saved) + k:
            out[:, len(fields):] = acc[:, len(saved):]
        return out

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
            kept = _per_class_scores({k[len("total_"):] for k in state if k.startswith("total_")})
            top = state["last_top_probs"].shape[1] if "last_top_probs" in state else None  # the saved layout
            rec = cls(int(state["num_samples"]), int(state["num_classes"]), extra_scores=kept, top_k=top)
            return rec.load_state_dict(state)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path} is not a valid saved SEIRecorder ({e}); {hint}.") from None
