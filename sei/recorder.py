"""Streaming recorder of training dynamics: the Signed Entropy Integral and its peers.

Feed it every mini-batch's predictions while a model trains; it keeps O(N) running sums
per sample (plus each sample's latest probabilities: all K while N x K is small, its top
few beyond, see ``top_k``; and the per-class log-probability sums of ``"mean_logp"`` /
``"poe_knn"``: (N, K) when asked for while all K are kept, else always, as a top-k sketch of
O(N k) with stated bounds, :mod:`sei._logp_top`) and turns them into one score per sample,
lower = more likely mislabeled.

What is recorded, and how each score reduces it, is read from the score registry
(:data:`sei.scores.SCORES`, where the formulas are): a score added there is recorded by
every recorder created afterwards (one whose statistic is per class, O(N K), only by
recorders created with ``extra_scores`` naming it).
"""

from __future__ import annotations

import numpy as np

from . import scores as _scores
from ._recorder_layout import COUNT as _COUNT, LOGIT_COUNT as _LOGIT_COUNT, Pending, build_layout, fill_block
from ._recorder_layout import last_occurrence, requested_per_class, scatter_add
from ._device import split_summary, summarise_logits
from ._latest import LatestProbs, resolve_top_k
from ._logp_top import LogProbTop
from ._recorder_state import _EPOCHS, _LOGIT_EPOCHS, RecorderState
from .validation import (
    _is_tensor,
    as_float,
    check_history_path,
    check_int_param,
    check_labels,
    check_num_classes,
    check_num_samples,
    check_probability_values,
    input_eps,
    to_numpy,
)

# Rows per step where a whole (N, K) array is processed (end_epoch, the last-probability
# scores), so that no full-size temporary is ever allocated.
_CHUNK_ROWS = 8192
# Values (rows x K) per step when one update brings more rows than the buffer holds (32 MiB in float64).
_SCATTER_VALUES = 1 << 22
# Rows of logits summarised on their device before the summaries go to the host at once.
_DEVICE_FLUSH_ROWS = 1 << 16


class SEIRecorder(RecorderState):
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
    extra_scores : str or iterable of str, optional
        Scores to record on top of the default set. By default every registered score
        whose state is O(N) is recorded; a score that needs a per-class (N, K) sum
        (``"mean_logp"``, and ``"poe_knn"`` which fuses it with the neighbours' labels)
        is recorded only when named here (or with ``"all"``), so other recorders pay
        nothing for it. A recorder that keeps the top k (``top_k`` below K) keeps those
        sums as a top-k sketch instead, named here or not (:mod:`sei._logp_top`: 11 k + 16
        bytes per sample, twice): the scores read from it are lower bounds of the exact ones,
        exact where the sketch says so, and readable only at the trained labels.
    top_k : "auto", int or None
        How many of each sample's latest probabilities to keep (:mod:`sei._latest`). ``None``
        keeps all K ((N, K) float32, :attr:`last_probs`); an int keeps the k largest with their
        classes and the update's entropy (6 k + 4 bytes per sample, nothing per class), which
        give :meth:`predicted_labels`, :meth:`latest_top` and the ``"mistakenness"`` score
        exactly, but not :attr:`last_probs` (it raises, saying so). ``"auto"`` (default) keeps
        all K while N x K <= :data:`sei.constants.FULL_PROBS_MAX_VALUES` (128 MiB), else
        :data:`sei.constants.DEFAULT_TOP_K`. Below K, the per-class log-probability sums are
        kept as a sketch of the k largest too (``extra_scores``).

    Notes
    -----
    ``update`` copies each batch into a small buffer; the statistics of the buffered rows
    are computed together when it is full and before the accumulator is read
    (``end_epoch``, ``state_dict``, ``save``), so the per-step cost stays small.

    Memory per sample: about 8 bytes per recorded statistic (a dozen by default) for the
    epoch's sums and as many for the totals, plus the latest probabilities: (N, K) float32
    (4 bytes per sample and class, what cleanlab's ``pred_probs`` costs in float32) or, with
    ``top_k`` below K, 6 k + 4 bytes per sample and the log-probability sketch's 2 (11 k + 16).
    A score asked for with ``extra_scores`` that sums a per-class statistic adds, while all K
    are kept, 16 bytes per sample and class; ``history_path`` 8 more (the epoch's probability
    sums). A sample updated several times in one epoch
    (augmented views, DDP padding) has every update's statistics averaged into that epoch
    exactly; its latest probabilities are those of its last update (the history file, when
    ``history_path`` is set, holds the epoch's mean).

    Examples
    --------
    >>> rec = SEIRecorder(4, 2)
    >>> for epoch in range(3):
    ...     rec.update([0, 1, 2, 3], np.array([[.9, .1], [.8, .2], [.3, .7], [.6, .4]]), [0, 0, 1, 1])
    ...     rec.end_epoch()
    >>> rec.scores("sei").round(2)
    array([ 0.98,  1.5 ,  1.83, -2.02])
    """

    def __init__(self, num_samples, num_classes, *, mid_epoch=None, max_epochs=None, history_path=None,
                 extra_scores=None, top_k="auto"):
        self.num_samples = check_num_samples(num_samples)
        self.num_classes = check_num_classes(num_classes)
        self.max_epochs = None if max_epochs is None else check_int_param(max_epochs, "max_epochs", 1)
        if mid_epoch is None and self.max_epochs is not None:
            mid_epoch = max(self.max_epochs // 2 - 1, 0)
        self.mid_epoch = None if mid_epoch is None else check_int_param(
            mid_epoch, "mid_epoch", 0, "it is a 0-based epoch index")
        if self.mid_epoch is not None and self.max_epochs is not None and self.mid_epoch >= self.max_epochs:
            raise ValueError(f"mid_epoch={self.mid_epoch} is past the last epoch of max_epochs={self.max_epochs}: "
                             f"pass a 0-based epoch below {self.max_epochs}, or leave mid_epoch=None.")
        if history_path is not None and self.max_epochs is None:
            raise ValueError("history_path needs max_epochs to size the (T, N, K) memmap; pass max_epochs=.")
        self.history_path = None if history_path is None else check_history_path(history_path)
        self._history = None
        self._history_resumed = False  # set by load_state_dict: reopen the file, never replace it
        self.num_epochs = 0
        n, k = self.num_samples, self.num_classes
        kept = resolve_top_k(top_k, n, k)
        # With the top k of the latest probabilities kept, the per-class log-probability sums
        # ("mean_logp", "poe_knn") are kept as a top-k sketch too, always (sei._logp_top).
        sketched = kept < k
        per_class = requested_per_class(extra_scores)
        self._layout = build_layout(k, per_class - {_scores.LOG_PROBS.name} if sketched else per_class)
        # One (N, fields) block so that buffered batches are scattered at once and ranks are
        # merged with a single all_reduce; the dicts are views. Only with history_path does
        # it hold the K probabilities too (their epoch mean is the history's row).
        self._keep_epoch_probs = self.history_path is not None
        self._acc = np.zeros((n, len(self._layout.fields) + (k if self._keep_epoch_probs else 0)))
        self._bind_views()
        self._pending = Pending(k)
        self._summaries, self._summary_rows = [], 0  # (ids, labels, summary) tensors on the logits' device
        self._marker = np.zeros(n, np.int32)  # scatter_add's scratch
        self._total = {f: np.zeros((n, k) if f in self._per_class_names() else n) for f in self._total_fields()}
        self.labels = np.full(n, -1, dtype=np.int64)
        self._latest = LatestProbs(n, k, kept)
        self._logp_epoch = LogProbTop(n, k, kept) if sketched else None  # this epoch's updates
        self._logp_total = LogProbTop(n, k, kept) if sketched else None  # the epochs' means
        self.last_losses = np.full(n, np.nan)
        # Per statistic: its value at the last epoch that saw the sample, at the middle
        # epoch, and every epoch's (float32, only when the middle epoch is not known up front).
        self._last = {s: np.full(n, np.nan) for s in self._layout.last}
        self._mid = {s: np.full(n, np.nan) for s in self._layout.middle}
        self._per_epoch: dict[str, list] = {s: [] for s in self._layout.middle}

    @property
    def top_k(self) -> int:
        """How many of each sample's latest probabilities are kept (K = all of them)."""
        return self._latest.kept

    @property
    def last_probs(self) -> np.ndarray:
        """(N, K) float32 probabilities of each sample's latest update (NaN rows where never
        seen); a ValueError when the recorder kept only the top ``top_k`` (use
        :meth:`latest_top`, or create it with ``top_k=None``)."""
        return self._latest.full("SEIRecorder.last_probs")

    def latest_top(self, k=None) -> tuple:
        """``(classes, probs)``, each (N, k) (k <= :attr:`top_k`, all kept by default): the
        largest probabilities of each sample's latest update, largest first; classes -1 and
        probs NaN where never seen. Exact in either layout."""
        return self._latest.top(k)

    def _total_fields(self) -> tuple:
        lay = self._layout
        return (_EPOCHS, *(s.name for s in lay.probs + lay.logits), _LOGIT_EPOCHS, *self._per_class_names())

    def _per_class_names(self) -> tuple:
        return tuple(s.name for s in self._layout.per_class)

    @property
    def epochs_seen(self) -> np.ndarray:
        """(N,) float64 number of recorded epochs in which each sample was seen (a copy)."""
        return self._total[_EPOCHS].copy()

    def _bind_views(self):
        lay, k = self._layout, self.num_classes
        fields = lay.fields
        self._epoch = {f: self._acc[:, i] for i, f in enumerate(fields) if ":" not in f}
        self._epoch.update({s: self._acc[:, lay.column(s):lay.column(s) + k] for s in self._per_class_names()})
        self._epoch_probs = self._acc[:, len(fields):] if self._keep_epoch_probs else None

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

        Notes
        -----
        torch logits (``from_logits=True``) of a recorder that keeps the top k and no per-class
        sums (the default at scale) are summarised on their own device (:mod:`sei._device`: O(k)
        numbers per row) and reach the host together every 65,536 rows and when the state is
        read: no host synchronisation per batch when ``sample_ids`` and ``labels`` are on the
        CPU or on the logits' device. Their checks that need the values (finite logits, ids
        and labels on the device in range) run then: a failure raises at that point (from
        ``end_epoch``, ``save``, ...) and records none of the updates since the last transfer.
        """
        if from_logits and self._summarises(probs_or_logits):
            self._update_summarised(sample_ids, probs_or_logits, labels)
            return
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
        ids = self._check_ids(to_numpy(sample_ids, "sample_ids"), values.shape[0])
        labels = check_labels(labels, values.shape[0], self.num_classes)
        self._flush_summaries()  # keeps the order of updates (the latest probabilities)
        self._accumulate(ids, values, labels, from_logits)

    def _check_ids(self, ids: np.ndarray, rows: int) -> np.ndarray:
        if ids.ndim != 1 or ids.shape[0] != rows:
            raise ValueError(
                f"sample_ids must be 1-D with one id per row of probs_or_logits ({rows}), got shape {ids.shape}.")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"sample_ids must be integers, got dtype {ids.dtype}.")
        ids = ids.astype(np.int64, copy=False)
        if ids.size and ids.view(np.uint64).max() >= self.num_samples:  # one pass: negative ids wrap to huge
            raise ValueError(
                f"sample_ids must lie in 0..{self.num_samples - 1}, got {ids.min()}..{ids.max()}; "
                "create the recorder with the full data set size."
            )
        return ids

    # ------------------------------------------------------------------ logits summarised on their device
    def _summarises(self, x) -> bool:
        """Whether ``x`` goes through :mod:`sei._device` (see :meth:`update`'s notes)."""
        return (_is_tensor(x) and getattr(x, "ndim", 0) == 2 and x.shape[1] == self.num_classes and x.shape[0] > 0
                and x.is_floating_point() and not self._layout.per_class and not self._keep_epoch_probs
                and not self._latest.complete)

    def _on_device(self, x, rows: int, device, name: str, check):
        """(rows,) int64 tensor on ``device``: a tensor already there as is (checked at the
        transfer), anything else checked now and copied."""
        import torch  # a tensor is in hand

        if _is_tensor(x) and x.device == device:
            if x.ndim != 1 or x.shape[0] != rows:
                raise ValueError(f"{name} must be 1-D with one entry per row of the logits ({rows}), got shape "
                                 f"{tuple(x.shape)}.")
            if x.is_floating_point() or x.dtype == torch.bool:
                raise TypeError(f"{name} must be integers, got dtype {x.dtype}.")
            return x.long()
        host = torch.from_numpy(check(x))
        if device.type == "cpu":
            return host
        return host.pin_memory().to(device, non_blocking=True)  # pinned: the copy does not wait for the GPU

    def _update_summarised(self, sample_ids, logits, labels):
        rows, device, k = logits.shape[0], logits.device, self.num_classes
        ids = self._on_device(sample_ids, rows, device, "sample_ids",
                              lambda x: self._check_ids(to_numpy(x, "sample_ids"), rows))
        labels = self._on_device(labels, rows, device, "labels", lambda x: check_labels(x, rows, k))
        self._flush()  # host rows first: the order of updates decides the latest probabilities
        self._summaries.append((ids, labels, summarise_logits(logits, labels.clamp(0, k - 1), self._summary_k)))
        self._summary_rows += rows
        if self._summary_rows >= _DEVICE_FLUSH_ROWS:
            self._flush_summaries()

    @property
    def _summary_k(self) -> int:
        """Largest logits per row in a summary: the top k kept (and the next one for the
        log-probability sketch's bound), and at least the two the margins read."""
        return min(max(2, self._latest.kept + (self._logp_epoch is not None)), self.num_classes)

    def _flush_summaries(self):
        """Bring the buffered summaries to the host (one synchronisation) and fold them in."""
        if not self._summaries:
            return
        import torch  # summaries exist, so torch is imported

        parts, self._summaries, self._summary_rows = self._summaries, [], 0
        ids, labels, summary = (torch.cat([p[i] for p in parts]).cpu().numpy() for i in range(3))
        k = self.num_classes
        try:  # the checks update() runs at once on host inputs
            self._check_ids(ids, ids.shape[0])
            check_labels(labels, ids.shape[0], k)
            check_probability_values(summary, "probs_or_logits", from_logits=True)
        except ValueError as e:
            raise ValueError(f"{e} (Checked when the device's updates reached the host: none of them since the last "
                             "transfer was recorded.)") from None
        head, top_values, top_classes = split_summary(summary, self._summary_k)
        self.labels[ids] = labels
        batch = _scores.Batch.from_summary(labels, head, k)
        last = last_occurrence(ids, self._marker)
        scatter_add(self._acc, ids, fill_block(self._layout, batch, False), last)
        r = self._latest.kept
        self._latest.write_top(ids[last], top_classes[last, :r], np.exp(top_values[last, :r] - head[last, 2:3]),
                               head[last, 0])
        if self._logp_epoch is not None:
            lse = head[:, 2]
            tau = top_values[:, r] - lse if top_values.shape[1] > r else np.full(len(ids), -np.inf)
            self._logp_epoch.add_updates(ids, top_classes[:, :r], top_values[:, :r] - lse[:, None], tau,
                                         head[:, 1] - lse)

    def _accumulate(self, ids, values, labels, from_logits):
        self.labels[ids] = labels
        values = as_float(np.asarray(values))
        if not self._pending.fits(values, from_logits):
            self._flush()
        if values.shape[0] > self._pending.capacity:
            # A large block (sei.train hands over RECORD_ROWS rows at once) in row steps: the statistics'
            # temporaries stay a few (rows, K) arrays of _SCATTER_VALUES, whatever N; the same
            # result, since steps are folded in order.
            step = max(1, _SCATTER_VALUES // self.num_classes)
            for start in range(0, values.shape[0], step):
                sl = slice(start, start + step)
                self._scatter(ids[sl], values[sl], labels[sl], from_logits)
        else:
            self._pending.append(ids, values, labels, from_logits)

    def _flush(self):
        """Fold the buffered updates into the epoch accumulator."""
        if self._pending.rows:
            self._scatter(*self._pending.take())

    def _flush_all(self):
        """Every buffered update folded in (before the accumulator is read)."""
        self._flush_summaries()
        self._flush()

    def _scatter(self, ids, values, labels, from_logits):
        batch = _scores.Batch(values, labels, from_logits)
        last = last_occurrence(ids, self._marker)
        scatter_add(self._acc, ids, fill_block(self._layout, batch, self._keep_epoch_probs), last)
        # The latest probabilities of each sample: its last update (O(B K) per batch; the
        # epoch's (N, K) sums are not kept, see the class notes).
        if self._logp_epoch is None:
            self._latest.write(ids[last], batch.probs[last], None if self._latest.complete else batch.entropy[last])
            return
        # One partition of the rows gives both the sketch's top j (+ the bound) and the latest top k.
        top = batch.top_log_probs(self._logp_epoch.j)
        self._logp_epoch.add_updates(ids, *top)
        self._latest.write_top(ids[last], top[0][last], batch.top_probs[last], batch.entropy[last])

    def end_epoch(self):
        """Close the current epoch: fold each seen sample's mean update into the totals.

        Under an initialised ``torch.distributed`` group with several ranks the epoch's
        accumulators are summed across ranks first, so every rank ends with the merged
        state (every rank must call ``end_epoch``).

        An epoch in which no sample was updated (on any rank) raises a ValueError and records
        nothing: it would count as an epoch and leave its single-epoch scores NaN.
        """
        self._flush_all()
        self._all_reduce_epoch()
        if not (self._epoch[_COUNT] > 0).any():
            raise ValueError(f"No sample was updated in epoch {self.num_epochs}: call update(...) with the epoch's "
                             "batches before end_epoch() (nothing was recorded for it).")
        if self.history_path is not None and self.num_epochs < self.max_epochs and self._history is None:
            self._history = self._open_history()
        e, t = self._epoch, self._total
        seen = e[_COUNT] > 0
        cnt = np.where(seen, e[_COUNT], 1.0)
        has_logits = e[_LOGIT_COUNT] > 0
        logit_cnt = np.where(has_logits, e[_LOGIT_COUNT], 1.0)
        t[_EPOCHS] += seen
        t[_LOGIT_EPOCHS] += has_logits
        for stat in self._layout.probs:
            t[stat.name] += np.where(seen, e[stat.name] / cnt, 0.0)
        for stat in self._layout.logits:
            t[stat.name] += np.where(has_logits, e[stat.name] / logit_cnt, 0.0)
        self._keep_epoch_slices(seen, cnt, has_logits, logit_cnt)
        self.last_losses = np.where(seen, e["loss"] / cnt, self.last_losses)
        # The (N, K) parts work in row chunks, so that no full-size temporary is allocated (at
        # N = 1e6, K = 100 each would be 800 MB): the per-class totals, and with history_path
        # the epoch's mean probabilities, divided in place inside the accumulator (cleared
        # below anyway) and copied out.
        row = self._history[self.num_epochs] if self._history is not None and self.num_epochs < self.max_epochs else None
        if self._per_class_names() or row is not None:
            for start in range(0, self.num_samples, _CHUNK_ROWS):
                sl = slice(start, start + _CHUNK_ROWS)
                for name in self._per_class_names():  # unseen rows add 0 / 1
                    t[name][sl] += e[name][sl] / cnt[sl, None]
                if row is not None:
                    probs = self._epoch_probs[sl]
                    probs /= cnt[sl, None]
                    row[sl] = probs
                    row[sl][~seen[sl]] = np.nan
        if row is not None:
            self._history.flush()
        if self._logp_epoch is not None:
            rows = np.flatnonzero(seen)
            self._logp_total.merge(self._logp_epoch, rows=rows, scale=cnt[rows])
            self._logp_epoch.reset()
        self._acc.fill(0.0)
        self.num_epochs += 1

    def _keep_epoch_slices(self, seen, cnt, has_logits, logit_cnt):
        """This epoch's mean statistic, for the scores that read one epoch (last, middle)."""
        lay = self._layout
        for name in dict.fromkeys(lay.last + lay.middle):
            ok, n = (has_logits, logit_cnt) if lay.is_logit(name) else (seen, cnt)
            value = np.where(ok, self._epoch[name] / n, np.nan)
            if name in self._last:
                self._last[name] = np.where(ok, value, self._last[name])
            if name not in self._mid:
                continue
            if self.mid_epoch is None:
                self._per_epoch[name].append(value.astype(np.float32))
            elif self.num_epochs == self.mid_epoch:
                self._mid[name] = value

    # ------------------------------------------------------------------ reading
    def scores(self, name: str = "sei", labels=None) -> np.ndarray:
        """One float per sample, lower = more likely mislabeled; NaN where never seen.

        Parameters
        ----------
        name : str
            A recorder score of :data:`sei.scores.SCORES` (``sei.SCORE_NAMES``).
        labels : array-like of int, optional
            (N,) labels to score, e.g. after some were corrected. By default, and for
            samples whose label equals the one trained on, the recorded dynamics are
            used. Where a label differs, only the scores that do not need the past
            epochs' agreement with that label can be recomputed (``Score.relabelable``:
            ``"ei"`` and ``"mean_logp"``, label-free, and ``"mistakenness"``, from the last
            epoch's probabilities). Any other score raises a
            ValueError, since the recorder keeps running sums and not the per-epoch
            probabilities: pass the (T, N, K) history instead (``history_path=``), or
            retrain on the new labels.

        Returns
        -------
        np.ndarray
            (N,) float64 scores.
        """
        score = _scores.get(name, needs_features=False)
        self._check_recorded(score)
        if self.num_epochs == 0:
            raise ValueError("No epoch recorded yet: call update(...) for each batch and end_epoch() after each epoch.")
        label_of = self.labels
        if labels is not None:
            labels = check_labels(labels, self.num_samples, self.num_classes)
            changed = np.flatnonzero((self.labels >= 0) & (labels != self.labels))
            if changed.size and not score.relabelable:
                i = int(changed[0])
                can = ", ".join(n for n, s in _scores.SCORES.items() if s.relabelable and not s.needs_features)
                raise ValueError(
                    f"labels differ from the labels this recorder was trained on at {changed.size} sample(s) "
                    f"(e.g. sample {i}: given {int(labels[i])}, trained on {int(self.labels[i])}), and score "
                    f"{name!r} sums each epoch's agreement with the trained label: the recorder keeps those sums, "
                    "not the per-epoch probabilities, so it cannot be recomputed for other labels. Pass the "
                    "(T, N, K) history instead (record it with history_path=), retrain on the corrected labels, "
                    f"pass the trained labels (recorder.labels), or use a score that can be recomputed ({can})."
                )
            label_of = np.where(self.labels >= 0, labels, self.labels)
        raw = self._reduce(score, label_of)
        return -raw if score.negate else raw

    def _sketches(self, score) -> bool:
        """Whether per-class ``score`` is read from the log-probability sketch (sei._logp_top)."""
        return (score.per_class and score.statistic is _scores.LOG_PROBS and self._logp_total is not None
                and score.statistic.name not in self._per_class_names())

    def _logp_means(self):
        """The sketch's bounds of each sample's mean log-probabilities (:class:`sei._logp_top.LogProbMeans`)."""
        return self._logp_total.means(self._total[_EPOCHS], self.labels)

    def _check_recorded(self, score):
        if self._sketches(score):
            return
        if score.per_class and score.statistic.name not in self._per_class_names():
            raise ValueError(f"score {score.name!r} needs the per-class sums of {score.statistic.name!r} "
                             "(O(N K) memory), which this recorder was not asked to keep: create it with "
                             f"SEIRecorder(..., extra_scores=({score.name!r},)) (sei.train does so for its "
                             "score=), or build it with SEIRecorder.from_history.")

    def fusion_input(self, name: str, labels=None):
        """What neighbour score ``name`` fuses with (for :func:`sei.feature_score`): the (N,)
        scores of ``SCORES[name].fuses_with`` for ``labels`` (as :meth:`scores`), its (N, K)
        reduced per-class statistic when that is per class (label-free), or None. A recorder
        that keeps the top k (``top_k``) gives the per-class mean log-probabilities as the bounds
        of its sketch instead (:class:`sei._logp_top.LogProbMeans`), read at the trained labels."""
        score = _scores.get(name, needs_features=True)
        if score.fuses_with is None:
            return None
        fused = _scores.SCORES[score.fuses_with]
        if not fused.per_class:
            return self.scores(fused.name, labels=labels)
        self._check_recorded(fused)
        if self.num_epochs == 0:
            raise ValueError("No epoch recorded yet: call update(...) for each batch and end_epoch() after each epoch.")
        if self._sketches(fused):
            return self._logp_means()
        return self._per_class_reduced(fused)

    def _reduced(self, score, rows=slice(None)) -> np.ndarray:
        """The "sum" / "mean" reduction of ``score``'s statistic over ``rows``: (n,) or (n, K);
        NaN where unseen."""
        t = self._total
        n = (t[_LOGIT_EPOCHS] if score.needs_logits else t[_EPOCHS])[rows]
        seen = n > 0
        if score.needs_logits and not (t[_LOGIT_EPOCHS] > 0).any():
            others = ", ".join(s for s, sc in _scores.SCORES.items() if not (sc.needs_logits or sc.needs_features))
            raise ValueError(f"The {score.name!r} score needs logits: call update(..., from_logits=True), "
                             f"or use a score computed from probabilities ({others}).")
        total = t[score.statistic.name][rows]
        if total.ndim == 2:
            seen, n = seen[:, None], n[:, None]
        if score.reduce == "sum":
            return np.where(seen, total, np.nan)
        return np.where(seen, total / np.where(seen, n, 1.0), np.nan)

    def _per_class_reduced(self, score, labels=None) -> np.ndarray:
        """(N, K) reduced per-class statistic, or (N,) its readout at ``labels``; in row
        chunks, so that no (N, K) temporary is allocated besides the output."""
        out = np.empty((self.num_samples, self.num_classes) if labels is None else self.num_samples)
        for start in range(0, self.num_samples, _CHUNK_ROWS):
            sl = slice(start, start + _CHUNK_ROWS)
            part = self._reduced(score, sl)
            out[sl] = part if labels is None else score.readout(part, np.maximum(labels[sl], 0))
        return out

    def _reduce(self, score, labels: np.ndarray) -> np.ndarray:
        """``score``'s statistic reduced over the recorded epochs, before ``negate``."""
        if score.reduce == "last_probs":
            return self._from_last_probs(score, labels)
        if score.reduce == "last":
            return self._last[score.statistic.name].copy()
        if score.reduce == "middle":
            return self._middle(score)
        if self._sketches(score):
            return self._logp_means().margin(labels)[0]
        return self._per_class_reduced(score, labels) if score.per_class else self._reduced(score)

    def _from_last_probs(self, score, labels: np.ndarray) -> np.ndarray:
        # Row chunks: a float64 copy of the (N, K) probabilities would double the memory. With
        # the top k only, the row is rebuilt (sei._latest) and its entropy is the stored one,
        # so statistics of the entropy, the argmax and the top k are exact.
        seen = self._total[_EPOCHS] > 0
        out = np.full(self.num_samples, np.nan)
        for start in range(0, self.num_samples, _CHUNK_ROWS):
            sl = slice(start, start + _CHUNK_ROWS)
            p = np.nan_to_num(self._latest.dense(sl))
            valid = (labels[sl] >= 0) & seen[sl]
            batch = _scores.Batch(p, np.where(valid, labels[sl], 0))
            stored = self._latest.entropy(sl)
            if stored is not None:
                batch.entropy = np.nan_to_num(stored)  # overrides the cached property
            out[sl] = np.where(valid, score.statistic.compute(batch), np.nan)
        return out

    def _middle(self, score) -> np.ndarray:
        stat = score.statistic.name
        if self.mid_epoch is not None:
            if self.num_epochs <= self.mid_epoch:
                raise ValueError(f"{score.name} is kept at epoch {self.mid_epoch} but only {self.num_epochs} "
                                 "epoch(s) were recorded.")
            return self._mid[stat].copy()
        mid = max(self.num_epochs // 2 - 1, 0)
        return self._per_epoch[stat][mid].astype(np.float64)

    def predicted_labels(self) -> np.ndarray:
        """(N,) argmax of the last epoch's probabilities (-1 where never seen)."""
        return self._latest.predicted()

    def __repr__(self):
        return f"SEIRecorder(num_samples={self.num_samples}, num_classes={self.num_classes}, epochs={self.num_epochs})"
