"""What an :class:`sei.SEIRecorder` accumulates (read from the score registry), and the
buffer that lets ``update`` copy a batch and return: statistics are computed and scattered
into the accumulator for many batches at once.

One update of a training loop is small (a batch of 128 rows) and runs right after a
training step has evicted the caches, so its cost is dominated by the number of numpy
calls, not by the arithmetic: buffering turns ~40 calls per update into ~10, and the
statistics of a few thousand rows are computed in one pass.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import scores as _scores

# Accumulator columns besides the statistics: updates per epoch, and updates that came
# with logits (the names of a saved recorder's entries, kept from the first layout).
COUNT, LOGIT_COUNT = "count", "aum_count"
# Values (rows x K) buffered before the statistics are computed (256 KiB in float64).
BUFFER_VALUES = 1 << 15


class Layout(NamedTuple):
    """What a recorder accumulates, read from the registry when it is created."""

    probs: tuple  # per-sample Statistics of every update
    logits: tuple  # per-sample Statistics of updates with logits
    per_class: tuple  # (B, K) Statistics of every update, kept only on request
    last: tuple  # statistic names kept for the last epoch that saw the sample
    middle: tuple  # ... and for the middle epoch
    num_classes: int

    @property
    def fields(self) -> tuple:
        cls = tuple(f"{s.name}:{c}" for s in self.per_class for c in range(self.num_classes))
        return (COUNT, *(s.name for s in self.probs + self.logits), LOGIT_COUNT, *cls)

    def column(self, name: str) -> int:
        """First accumulator column of statistic ``name``."""
        fields = self.fields
        return fields.index(name) if name in fields else fields.index(f"{name}:0")

    def is_logit(self, name: str) -> bool:
        return any(s.name == name for s in self.logits)


def requested_per_class(extra_scores) -> set:
    """Names of the per-class statistics that the scores ``extra_scores`` read (a
    neighbour score reads what it fuses with); ``"all"``: every registered one."""
    if extra_scores == "all":
        extra_scores = [name for name, score in _scores.SCORES.items() if score.per_class or score.fuses_with]
    if isinstance(extra_scores, str):
        extra_scores = (extra_scores,)
    out = set()
    for name in extra_scores or ():
        score = _scores.get(name, what="extra_scores entry")
        if score.fuses_with is not None:
            score = _scores.SCORES[score.fuses_with]
        if score.per_class:
            out.add(score.statistic.name)
    return out


def build_layout(num_classes: int, per_class_names: set) -> Layout:
    probs, logits, per_class, last, middle = {}, {}, {}, [], []
    for score in _scores.SCORES.values():
        if score.reduce not in ("sum", "mean", "last", "middle"):
            continue
        stat = score.statistic
        if stat.per_class:
            if stat.name in per_class_names:
                per_class.setdefault(stat.name, stat)
            continue
        (logits if score.needs_logits else probs).setdefault(stat.name, stat)
        for kept, reduce in ((last, "last"), (middle, "middle")):
            if score.reduce == reduce and stat.name not in kept:
                kept.append(stat.name)
    probs.setdefault("loss", _scores.CROSS_ENTROPY)  # last_losses (robust weights) read it
    return Layout(tuple(probs.values()), tuple(logits.values()), tuple(per_class.values()), tuple(last),
                  tuple(middle), int(num_classes))


def fill_block(layout: Layout, batch, with_probs: bool) -> np.ndarray:
    """(B, fields) accumulator rows of one (or many buffered) updates (a :class:`sei.scores.Batch`),
    and the K probabilities after them ``with_probs`` (only a recorder with ``history_path``
    keeps each epoch's mean probabilities)."""
    fields, k = layout.fields, layout.num_classes
    from_logits = batch.from_logits
    block = np.empty((len(batch.labels), len(fields) + (k if with_probs else 0)))
    block[:, 0] = 1.0
    col = 1
    for stat in layout.probs:
        block[:, col] = stat.compute(batch)
        col += 1
    for stat in layout.logits:
        block[:, col] = stat.compute(batch) if from_logits else 0.0
        col += 1
    block[:, col] = 1.0 if from_logits else 0.0
    col += 1
    for stat in layout.per_class:
        block[:, col:col + k] = stat.compute(batch)
        col += k
    if with_probs:
        block[:, col:] = batch.probs
    return block


class Pending:
    """Updates copied into a fixed buffer until it is full, the dtype or the logits flag
    changes, or the recorder's accumulator is read (:meth:`sei.SEIRecorder.end_epoch`,
    ``state_dict``, ``save``)."""

    def __init__(self, num_classes: int):
        self.capacity = max(1, BUFFER_VALUES // num_classes)
        self.rows = 0
        self.values = self.ids = self.labels = None
        self.from_logits = False

    def fits(self, values: np.ndarray, from_logits: bool) -> bool:
        """Whether ``values`` can join the buffered rows without a flush first."""
        if self.rows == 0:
            return True
        return (values.dtype == self.values.dtype and from_logits == self.from_logits
                and self.rows + values.shape[0] <= self.capacity)

    def append(self, ids, values, labels, from_logits) -> None:
        if self.values is None or self.values.dtype != values.dtype:
            self.values = np.empty((self.capacity, values.shape[1]), values.dtype)
            self.ids = np.empty(self.capacity, np.int64)
            self.labels = np.empty(self.capacity, np.int64)
        r, b = self.rows, values.shape[0]
        self.values[r:r + b] = values
        self.ids[r:r + b] = ids
        self.labels[r:r + b] = labels
        self.rows, self.from_logits = r + b, from_logits

    def take(self):
        """``(ids, values, labels, from_logits)`` of the buffered rows (views), emptying it."""
        r, self.rows = self.rows, 0
        return self.ids[:r], self.values[:r], self.labels[:r], self.from_logits


def last_occurrence(ids: np.ndarray, marker: np.ndarray) -> np.ndarray:
    """(B,) bool: the last row of each distinct id (``marker``: an (N,) int scratch array)."""
    pos = np.arange(ids.shape[0], dtype=marker.dtype)
    marker[ids] = pos
    return marker[ids] == pos


def scatter_add(acc: np.ndarray, ids: np.ndarray, block: np.ndarray, last: np.ndarray) -> None:
    """``acc[ids] += block`` with repeated ids summed, as ``np.add.at`` does but at the speed
    of plain fancy indexing for one row per distinct id (``last``: :func:`last_occurrence`);
    only the repeats go through ``np.add.at``."""
    if last.all():
        acc[ids] += block
        return
    acc[ids[last]] += block[last]
    np.add.at(acc, ids[~last], block[~last])
