"""Each sample's latest predicted probabilities, as an :class:`sei.SEIRecorder` keeps them.

Two layouts behind one interface:

* **all K** (``top_k`` >= K): an (N, K) float32 array, 4 bytes per sample and class (what
  cleanlab's ``pred_probs`` costs in float32);
* **top k** (``top_k`` < K): the k largest probabilities of each sample's latest update
  (float32, descending), their classes (int16 while K <= 32,767, else int32) and the update's
  entropy (float32): k x 6 + 4 bytes per sample, nothing per class.

What the top k give exactly: the predicted class, its probability and the next k - 1, the
entropy (stored, not re-derived), and with them every statistic that reads the latest
probabilities only through the entropy, the argmax and the top k (``"mistakenness"``). A
dense (n, K) row rebuilt from them (:meth:`LatestProbs.dense`) spreads the remaining mass
1 - sum(top k) evenly over the other K - k classes: a stated approximation that callers needing
the whole row (confident learning on in-sample probabilities, the active-learning selectors)
refuse rather than use (:meth:`LatestProbs.full`).
"""

from __future__ import annotations

import numpy as np

from .constants import DEFAULT_TOP_K, FULL_PROBS_MAX_VALUES
from .entropy import row_entropy

_CHUNK_ROWS = 8192  # rows per step where all K are read, so that no (N, K) temporary is made


#: Up to this many columns :func:`largest` takes the row maxima one after another (m passes of
#: ``argmax``, 3-4x faster than a partition at K = 100 or 1,000 with m = 5 or 6).
_ARGMAX_PASSES = 8


def largest(x: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """``(columns, values)``, each (B, m): the ``m`` largest entries of each row of ``x``, largest
    first; every column when m >= K. Ties: the lower column first where m <= 8 and
    m <= K / 4 (m passes of ``argmax``), else in the order a partition leaves them, then stable.
    The one top-k rule of the latest probabilities and of the log-probability sketch."""
    k = x.shape[1]
    if 0 < m <= _ARGMAX_PASSES and 4 * m <= k:
        found = _argmax_passes(x, m)
        if found is not None:
            return found
    top = np.argpartition(x, k - m, axis=1)[:, k - m:] if m < k else np.broadcast_to(np.arange(k), x.shape)
    vals = np.take_along_axis(x, top, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(vals, order, axis=1)


def _argmax_passes(x, m):
    """:func:`largest` by m passes of ``argmax`` over a copy whose picks are set to -inf; None
    where a row has fewer than m entries above -inf (a pass could pick a column twice)."""
    y = np.array(x, copy=True)
    rows = np.arange(y.shape[0])
    cols = np.empty((y.shape[0], m), dtype=np.int64)
    vals = np.empty((y.shape[0], m), dtype=y.dtype)
    for j in range(m):
        c = y.argmax(axis=1)
        cols[:, j] = c
        vals[:, j] = y[rows, c]
        y[rows, c] = -np.inf
    return None if np.isneginf(vals).any() else (cols, vals)


def resolve_top_k(top_k, num_samples: int, num_classes: int) -> int:
    """The number of probabilities per sample a recorder keeps (K = all of them).

    ``"auto"`` keeps all K while N x K <= :data:`sei.constants.FULL_PROBS_MAX_VALUES`
    (128 MiB of float32), else :data:`sei.constants.DEFAULT_TOP_K`; ``None`` keeps all K; an
    int >= 1 keeps that many (all K when it is K or more).
    """
    if top_k is None:
        return num_classes
    if isinstance(top_k, str):
        if top_k != "auto":
            raise ValueError(f"top_k must be 'auto', None (all classes) or an int >= 1, got {top_k!r}.")
        small = num_samples * num_classes <= FULL_PROBS_MAX_VALUES
        return num_classes if small else min(DEFAULT_TOP_K, num_classes)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise TypeError(f"top_k must be 'auto', None (all classes) or an int >= 1, got {type(top_k).__name__}.")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1 (the predicted class at least), got {top_k}; pass None to keep "
                         "all classes.")
    return min(int(top_k), num_classes)


class LatestProbs:
    """The latest probabilities of N samples over K classes, all K or the top k (module notes)."""

    def __init__(self, num_samples: int, num_classes: int, kept: int):
        self.num_samples, self.num_classes, self.kept = num_samples, num_classes, kept
        n, k = num_samples, num_classes
        if self.complete:
            self.arrays = {"last_probs": np.full((n, k), np.nan, dtype=np.float32)}
        else:
            idx_dtype = np.int16 if k <= np.iinfo(np.int16).max else np.int32
            self.arrays = {"last_top_classes": np.full((n, kept), -1, dtype=idx_dtype),
                           "last_top_probs": np.full((n, kept), np.nan, dtype=np.float32),
                           "last_entropy": np.full(n, np.nan, dtype=np.float32)}

    @property
    def complete(self) -> bool:
        """Whether every class's probability is kept (then everything read is exact)."""
        return self.kept >= self.num_classes

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def _first(self) -> np.ndarray:
        return self.arrays["last_probs" if self.complete else "last_top_probs"]

    # ------------------------------------------------------------------ writing
    def write(self, rows: np.ndarray, probs: np.ndarray, entropy=None) -> None:
        """Rows ``rows`` (distinct) get ``probs`` (len(rows), K); ``entropy`` of those rows
        when already computed (only the top-k layout keeps it)."""
        if self.complete:
            self.arrays["last_probs"][rows] = probs
            return
        classes, values = largest(probs, self.kept)
        self.arrays["last_top_classes"][rows] = classes
        self.arrays["last_top_probs"][rows] = values
        self.arrays["last_entropy"][rows] = row_entropy(probs) if entropy is None else entropy

    def write_top(self, rows: np.ndarray, classes: np.ndarray, probs: np.ndarray, entropy: np.ndarray) -> None:
        """Rows ``rows`` (distinct) get their top ``kept`` ``classes`` and ``probs`` (largest
        first) and ``entropy``, computed elsewhere (:mod:`sei._device`); top-k layout only."""
        if self.complete:
            raise ValueError("write_top needs the top-k layout; this one keeps every class's probability.")
        self.arrays["last_top_classes"][rows] = classes
        self.arrays["last_top_probs"][rows] = probs
        self.arrays["last_entropy"][rows] = entropy

    def copy_rows(self, other: "LatestProbs", rows: np.ndarray) -> None:
        """Take ``rows`` from another instance of the same layout (merging shards)."""
        for name, array in self.arrays.items():
            array[rows] = other.arrays[name][rows]

    # ------------------------------------------------------------------ reading
    def seen(self) -> np.ndarray:
        """(N,) whether a sample was ever updated (rows are written whole)."""
        return ~np.isnan(self._first()[:, 0])

    def predicted(self) -> np.ndarray:
        """(N,) the most probable class of each sample's latest update, -1 where never seen."""
        if self.complete:  # argmax of a never-seen (NaN) row is masked out
            return np.where(self.seen(), self.arrays["last_probs"].argmax(axis=1), -1)
        return self.arrays["last_top_classes"][:, 0].astype(np.int64)

    def top(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(classes, probs)``, each (N, k), largest first (k <= the number kept; the number
        kept by default); classes -1 and probs NaN where never seen."""
        k = self.kept if k is None else int(k)
        if not 1 <= k <= self.kept:
            raise ValueError(f"top(k) needs 1 <= k <= {self.kept} (the probabilities kept per sample), got {k}.")
        if not self.complete:
            return (self.arrays["last_top_classes"][:, :k].astype(np.int64),
                    self.arrays["last_top_probs"][:, :k].copy())
        p = self.arrays["last_probs"]
        classes = np.empty((self.num_samples, k), np.int64)
        for start in range(0, self.num_samples, _CHUNK_ROWS):  # no (N, K) temporary
            part = np.nan_to_num(p[start:start + _CHUNK_ROWS], nan=-1.0)
            classes[start:start + _CHUNK_ROWS] = np.argsort(-part, axis=1, kind="stable")[:, :k]
        probs = np.take_along_axis(p, classes, axis=1)
        classes[~self.seen()] = -1
        return classes, probs

    def full(self, what: str) -> np.ndarray:
        """The (N, K) float32 array; a ValueError naming ``what`` needs it when only the top k
        were kept."""
        if self.complete:
            return self.arrays["last_probs"]
        n, k = self.num_samples, self.num_classes
        raise ValueError(
            f"{what} needs every class's latest probability, but this recorder kept the top {self.kept} of "
            f"{k} per sample (top_k='auto' keeps all classes only while N x K <= {FULL_PROBS_MAX_VALUES:,}; "
            f"here {n:,} x {k:,}). Create the recorder with top_k=None to keep them all ({n * k * 4 / 2**30:.1f} "
            "GiB of float32), or pass the probabilities yourself (e.g. cross-validated pred_probs).")

    def dense(self, rows) -> np.ndarray:
        """(n, K) float64 probabilities of ``rows`` (a slice or indices), NaN rows where never
        seen; with the top k, the rest of each row is 1 - sum(top k) spread evenly (module notes)."""
        if self.complete:
            return self.arrays["last_probs"][rows].astype(np.float64)
        cls = self.arrays["last_top_classes"][rows].astype(np.int64)
        vals = self.arrays["last_top_probs"][rows].astype(np.float64)
        rest = np.clip(1.0 - vals.sum(axis=1, keepdims=True), 0.0, None) / (self.num_classes - self.kept)
        out = np.repeat(rest, self.num_classes, axis=1)
        seen = cls[:, 0] >= 0
        np.put_along_axis(out, np.maximum(cls, 0), vals, axis=1)
        out[~seen] = np.nan
        return out

    def entropy(self, rows) -> np.ndarray | None:
        """(n,) the stored entropy of ``rows`` (top-k layout); None when all K are kept (the
        caller derives it from the row)."""
        return None if self.complete else self.arrays["last_entropy"][rows].astype(np.float64)

    # ------------------------------------------------------------------ state
    @classmethod
    def from_state(cls, state: dict, num_samples: int, num_classes: int) -> "LatestProbs":
        """Restore from a recorder's saved state (either layout; states saved before the top-k
        layout hold ``last_probs``)."""
        if "last_top_probs" in state:
            top = np.asarray(state["last_top_probs"])
            out = cls(num_samples, num_classes, int(top.shape[1]) if top.ndim == 2 else 0)
            for name, array in out.arrays.items():
                value = np.asarray(state[name])
                if value.shape != array.shape:
                    raise ValueError(f"{name} has shape {value.shape}, expected {array.shape}; the state is damaged.")
                array[...] = value
            return out
        out = cls(num_samples, num_classes, num_classes)
        value = np.asarray(state["last_probs"], dtype=np.float32)
        if value.shape != (num_samples, num_classes):
            raise ValueError(f"last_probs has shape {value.shape}, expected ({num_samples}, {num_classes}); "
                             "the state is damaged.")
        out.arrays["last_probs"][...] = value
        return out
