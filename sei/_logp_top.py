"""Per-class log-probability sums in O(N k): what ``"mean_logp"`` and ``"poe_knn"`` read, kept
as a bounded top-k per sample when the (N, K) sums would not fit (an :class:`sei.SEIRecorder`
whose latest probabilities are its top k, see :mod:`sei._latest`).

Both scores read ``m(c) = mean_t log p_t(c)`` and take a margin at the label,
``r(y) - max_{c != y} r(c)`` with ``r = m`` (``"mean_logp"``) or ``r = m + log q~``
(``"poe_knn"``, q~ the neighbours' smoothed label shares). Per sample, :class:`LogProbTop`
keeps

* the exact sum of ``log p_t(y)`` at the trained label y;
* up to j tracked classes, each with an **upper bound** of its sum ``S(c) = sum_t log p_t(c)``
  and a flag saying whether that bound is exact;
* one floor ``F``: an upper bound of ``S(c)`` for every class that is not tracked.

**Why the bounds hold** (by induction over the merges). An update contributes its j largest
log-probabilities exactly and bounds every other class by the (j + 1)-th largest, ``tau``. Two
sketches A and B of disjoint sets of updates merge class by class: a class tracked in both
adds its two bounds; tracked in one, it adds the other's floor (which bounds it there); the
floor of the merge is ``F_A + F_B``. Of the at most 2j candidates the j largest bounds stay
tracked; each one dropped raises the floor to its bound (from then on it is an untracked class,
bounded by the floor). A bound is exact when every update it sums saw the class among its j
largest (or when the other side of a merge had no update at all). Dividing sums and floor by
the number of epochs keeps the bounds (the epoch means of :meth:`sei.SEIRecorder.end_epoch`
are merged the same way as updates).

**What the score is then.** With ``m^`` the bounds over the epochs, ``max_{c != y} r^(c)`` is an
upper bound of ``max_{c != y} r(c)`` (over the tracked classes, and the floor for the best
untracked one), so the score read here, ``r(y) - max r^``, is a **lower bound** of the exact score
(a sample looks at most more suspicious, never less), and it is **exact** wherever the class
that attains ``max r^`` has an exact bound. :meth:`LogProbMeans.margin` returns both and the
exact score's upper bound (from the exact classes alone). With ``j >= K`` nothing is ever
dropped and every score is exact. How often the maximising class is exact is measured on real
runs in ``benchmarks/results/logp_top.md`` (CIFAR-10N: 95-98 % of the samples with k = 5) and on
synthetic ones in ``benchmarks/results/scale.md``; the bounds are tested in ``tests/test_logp_top.py``.

Memory per sample: ``j`` classes (int16 while K <= 32,767, else int32), ``j`` float64 bounds,
``j`` exact flags, the floor and the label's sum: ``11 j + 16`` bytes (71 with j = 5), twice in a
recorder (the epoch's and the totals).
"""

from __future__ import annotations

import numpy as np

#: What an empty row holds (no update): no class tracked, bounds -inf, sums of nothing 0.
_EMPTY = {"classes": -1, "sums": -np.inf, "exact": False, "floor": 0.0, "label": 0.0}
_CHUNK_ROWS = 16384  # rows per step where the (n, j, j) class matches are built


class LogProbTop:
    """Sums of log-probabilities per sample, bounded to ``j`` tracked classes (module notes)."""

    def __init__(self, num_samples: int, num_classes: int, j: int):
        self.num_samples, self.num_classes, self.j = int(num_samples), int(num_classes), int(j)
        n, j = self.num_samples, self.j
        idx = np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32
        shapes = {"classes": ((n, j), idx), "sums": ((n, j), np.float64), "exact": ((n, j), bool),
                  "floor": (n, np.float64), "label": (n, np.float64)}
        self.arrays = {k: np.full(shape, _EMPTY[k], dtype) for k, (shape, dtype) in shapes.items()}

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def reset(self) -> None:
        for k, array in self.arrays.items():
            array.fill(_EMPTY[k])

    # ------------------------------------------------------------------ adding
    def add_updates(self, ids: np.ndarray, top_classes: np.ndarray, top_logp: np.ndarray, tau: np.ndarray,
                    label_logp: np.ndarray) -> None:
        """Add one update per row: its ``j`` largest log-probabilities (any order) and their
        classes, ``tau`` (n,) the next largest (-inf when there is none: K <= j) and the label's
        log-probability. Repeated ids are added one after the other."""
        ids = np.asarray(ids, np.int64)
        todo = np.arange(ids.shape[0])
        while todo.size:  # rows with distinct ids at a time (repeats are rare: augmented views, padding)
            _, first = np.unique(ids[todo], return_index=True)
            rows = todo[np.sort(first)]
            part = {"classes": top_classes[rows], "sums": top_logp[rows].astype(np.float64),
                    "exact": np.ones(top_classes[rows].shape, bool), "floor": tau[rows].astype(np.float64),
                    "label": label_logp[rows].astype(np.float64)}
            self.merge_rows(ids[rows], part)
            todo = np.setdiff1d(todo, rows, assume_unique=True)

    def merge_rows(self, rows: np.ndarray, other: dict) -> None:
        """Merge ``other`` (arrays as :attr:`arrays`, one row per entry of ``rows``, distinct),
        a sketch of other updates of those samples, into rows ``rows`` (module notes).

        Rows that hold nothing yet take ``other``'s row as it is (what the merge gives there:
        its classes ordered by bound); ascending runs of rows are read and written as slices."""
        rows = np.asarray(rows, np.int64)
        other = {k: np.asarray(v) for k, v in other.items()}
        empty = np.zeros(len(rows), bool)
        if self.j:  # (a bound of -inf, e.g. a probability of 0, is ordered by the general merge)
            finite = (np.asarray(other["sums"]) > -np.inf) | (np.asarray(other["classes"]) < 0)
            empty = self._empty(rows) & finite.all(axis=1)
        if empty.any():  # the first update of a sample in the epoch: a copy, ordered
            at = np.flatnonzero(empty) if not empty.all() else slice(None)
            self._copy_in(rows[at], {k: v[at] for k, v in other.items()})
            if empty.all():
                return
            rest = np.flatnonzero(~empty)
            rows, other = rows[rest], {k: v[rest] for k, v in other.items()}
        for start in range(0, len(rows), _CHUNK_ROWS):
            sl = slice(start, start + _CHUNK_ROWS)
            chunk = rows[sl]
            if chunk.size and chunk[-1] - chunk[0] == chunk.size - 1 and (np.diff(chunk) == 1).all():
                chunk = slice(int(chunk[0]), int(chunk[-1]) + 1)  # a view: no gather, no scatter
            self._merge_chunk(chunk, {k: v[sl] for k, v in other.items()})

    def _empty(self, rows) -> np.ndarray:
        """Which of ``rows`` hold exactly what an empty row holds (:data:`_EMPTY`). Not merely no
        tracked class: a merge whose bounds are all -inf tracks none but keeps its floor and sum."""
        a = self.arrays
        floor, label = a["floor"][rows], a["label"][rows]
        return ((a["classes"][rows] < 0).all(axis=1) & (floor == 0) & ~np.signbit(floor)
                & (label == 0) & ~np.signbit(label))

    def _copy_in(self, rows, b) -> None:
        """Rows ``rows`` are empty and ``b``'s tracked bounds finite: they take ``b``'s rows, tracked
        classes ordered by bound as a merge orders them (-1 and -inf where ``b`` tracks none)."""
        cls, sums = np.asarray(b["classes"]), np.asarray(b["sums"], np.float64)
        order = np.argsort(np.where(cls >= 0, -sums, np.inf), axis=1, kind="stable")
        kept_cls = np.take_along_axis(cls, order, axis=1)
        out = self.arrays
        out["classes"][rows] = kept_cls
        out["sums"][rows] = np.where(kept_cls >= 0, np.take_along_axis(sums, order, axis=1), -np.inf)
        out["exact"][rows] = np.take_along_axis(np.asarray(b["exact"], bool), order, axis=1) & (kept_cls >= 0)
        floor = np.asarray(b["floor"], np.float64)
        out["floor"][rows] = floor + _EMPTY["floor"]
        out["label"][rows] = np.asarray(b["label"], np.float64) + _EMPTY["label"]

    def _merge_chunk(self, rows, b) -> None:
        a = {k: v[rows] for k, v in self.arrays.items()}
        ca, cb = a["classes"], np.asarray(b["classes"])
        sa, sb = a["sums"], np.asarray(b["sums"], np.float64)
        ea, eb = a["exact"], np.asarray(b["exact"], bool)
        fa, fb = a["floor"], np.asarray(b["floor"], np.float64)
        empty_a, empty_b = ca[:, 0] < 0, cb[:, 0] < 0
        valid_a = ca >= 0
        # Classes are distinct within a row, so each tracked class of A matches at most one of B:
        # one (n, ja) comparison per column of B (cheaper than the (n, ja, jb) cube and its reductions).
        a_in_b = np.zeros(ca.shape, bool)
        b_in_a = np.zeros(cb.shape, bool)
        sb_at_a = np.zeros(sa.shape)
        eb_at_a = np.zeros(ca.shape, bool)
        for q in range(cb.shape[1]):
            eq = (ca == cb[:, q, None]) & valid_a
            a_in_b |= eq
            b_in_a[:, q] = eq.any(axis=1)
            sb_at_a += np.where(eq, sb[:, q, None], 0.0)
            eb_at_a |= eq & eb[:, q, None]
        new_sa = np.where(a_in_b, sa + sb_at_a, sa + fb[:, None])
        new_ea = ea & np.where(a_in_b, eb_at_a, empty_b[:, None])
        only_b = ~b_in_a & (cb >= 0)
        new_sb = np.where(only_b, fa[:, None] + sb, -np.inf)
        new_eb = eb & only_b & empty_a[:, None]
        cls = np.concatenate([ca, np.where(only_b, cb, -1).astype(ca.dtype)], axis=1)
        sums = np.concatenate([np.where(valid_a, new_sa, -np.inf), new_sb], axis=1)
        exact = np.concatenate([new_ea & valid_a, new_eb], axis=1)
        order = np.argsort(-sums, axis=1, kind="stable")
        keep, drop = order[:, :self.j], order[:, self.j:]
        floor = fa + fb
        if drop.shape[1]:
            floor = np.maximum(floor, np.take_along_axis(sums, drop, axis=1).max(axis=1))
        kept_cls = np.take_along_axis(cls, keep, axis=1)
        kept_sums = np.take_along_axis(sums, keep, axis=1)
        out = self.arrays
        out["classes"][rows] = kept_cls
        out["sums"][rows] = np.where(kept_cls >= 0, kept_sums, -np.inf)
        out["exact"][rows] = np.take_along_axis(exact, keep, axis=1) & (kept_cls >= 0)
        out["floor"][rows] = floor
        out["label"][rows] = a["label"] + np.asarray(b["label"], np.float64)

    def merge(self, other: "LogProbTop", rows: np.ndarray, scale=None) -> None:
        """Merge another sketch's rows ``rows`` into this one, its sums and floor divided by
        ``scale`` (n,) first (an epoch's mean: the number of its updates)."""
        part = {k: v[rows] for k, v in other.arrays.items()}
        if scale is not None:
            for k in ("sums", "floor", "label"):
                part[k] = part[k] / (scale[:, None] if part[k].ndim == 2 else scale)
        self.merge_rows(rows, part)

    def copy_rows(self, other: "LogProbTop", rows: np.ndarray) -> None:
        for k, v in self.arrays.items():
            v[rows] = other.arrays[k][rows]

    # ------------------------------------------------------------------ reading
    def means(self, epochs: np.ndarray, trained_labels: np.ndarray) -> "LogProbMeans":
        """The sums divided by ``epochs`` (N,) (NaN where 0): the bounds of ``m``."""
        return LogProbMeans(self, epochs, trained_labels)

    # ------------------------------------------------------------------ state
    def state(self, prefix: str) -> dict:
        return {f"{prefix}{k}": v for k, v in self.arrays.items()}

    @classmethod
    def from_state(cls, state: dict, prefix: str, num_samples: int, num_classes: int):
        """Restored from :meth:`state`'s entries, or None when the state has none (saved without
        a sketch)."""
        if f"{prefix}sums" not in state:
            return None
        sums = np.asarray(state[f"{prefix}sums"])
        out = cls(num_samples, num_classes, sums.shape[1] if sums.ndim == 2 else 0)
        for k, array in out.arrays.items():
            value = np.asarray(state[f"{prefix}{k}"])
            if value.shape != array.shape:
                raise ValueError(f"{prefix}{k} has shape {value.shape}, expected {array.shape}; the state is damaged.")
            array[...] = value
        return out


class SparseRows:
    """Rows of K per-class values stored sparsely: ``values[i, s]`` for class ``classes[i, s]``
    (-1: an empty slot, its value ignored; each class at most once per row) and ``rest[i]`` for
    every class not listed. What :meth:`LogProbMeans.sparse_rows` (and the product of experts on
    it) gives, and :func:`sei.thresholds.estimate_num_issues` counts on, in O(n s) instead of
    O(n K)."""

    def __init__(self, classes, values, rest, num_classes):
        self.classes, self.values, self.rest = classes, values, rest
        self.num_classes = int(num_classes)

    def dense(self) -> np.ndarray:
        """The (n, K) array (for tests and small K)."""
        out = np.repeat(np.asarray(self.rest, np.float64)[:, None], self.num_classes, axis=1)
        r, c = np.nonzero(self.classes >= 0)
        out[r, self.classes[r, c]] = self.values[r, c]
        return out


class LogProbMeans:
    """Bounds of each sample's mean log-probabilities (:meth:`LogProbTop.means`): what a
    recorder with the sketch gives for ``"mean_logp"`` and passes to ``"poe_knn"`` in place of
    the (N, K) means (:meth:`sei.SEIRecorder.fusion_input`)."""

    def __init__(self, top: LogProbTop, epochs: np.ndarray, trained_labels: np.ndarray):
        self.top, self.num_classes = top, top.num_classes
        self.epochs = np.asarray(epochs, np.float64)
        self.trained_labels = np.asarray(trained_labels, np.int64)
        self.shape = (top.num_samples, top.num_classes)

    def __len__(self):
        return self.top.num_samples

    def __getitem__(self, rows) -> "LogProbMeans":
        """The bounds of a subset of the samples (a boolean mask or indices), as ``array[rows]``."""
        part = LogProbTop(0, self.num_classes, self.top.j)
        part.arrays = {k: v[rows] for k, v in self.top.arrays.items()}
        part.num_samples = part.arrays["floor"].shape[0]
        return LogProbMeans(part, self.epochs[rows], self.trained_labels[rows])

    def check_labels(self, labels: np.ndarray, what: str) -> None:
        """A ValueError when ``labels`` differ from the trained ones: the exact sum is kept for
        the trained label only."""
        differ = np.flatnonzero((self.trained_labels >= 0) & (labels != self.trained_labels))
        if differ.size:
            i = int(differ[0])
            raise ValueError(
                f"{what} reads each sample's summed log-probability at its label, which this recorder keeps exactly "
                f"only for the label it was trained on (it kept the top {self.top.j} classes per sample: top_k); "
                f"labels differ at {differ.size} sample(s) (e.g. sample {i}: {int(labels[i])} vs trained "
                f"{int(self.trained_labels[i])}). Pass the trained labels, or create the recorder with top_k=None "
                "to keep every class.")

    def sparse_rows(self, sl) -> "SparseRows":
        """The mean log-probabilities of the rows ``sl`` (a slice) as the sketch knows them, in
        O(n j): the tracked classes' means and the trained label's exact mean; every other class
        shares what is left, ``log((1 - sum of the known exp(means)) / (number of others))``
        (geometric means of probabilities sum to at most 1), capped at its bound (the floor, an
        upper bound of its mean); NaN rows where unseen. What a reader that needs whole rows
        takes in place of the exact means (the ``"cl_count"`` cutoff); exact where every class is
        tracked."""
        a = self.top.arrays
        cls, sums = a["classes"][sl].astype(np.int64), a["sums"][sl]
        t = self.epochs[sl]
        seen = (t > 0) & (cls[:, 0] >= 0)
        tt = np.where(seen, t, 1.0)
        y = self.trained_labels[sl]
        own = a["label"][sl] / tt
        cls = np.where(cls == y[:, None], -1, cls)  # the label's exact mean, once, in its own column
        classes = np.concatenate([cls, np.where(y >= 0, y, -1)[:, None]], axis=1)
        values = np.concatenate([sums / tt[:, None], own[:, None]], axis=1)
        values = np.where(classes >= 0, values, -np.inf)
        with np.errstate(divide="ignore"):
            left = np.maximum(1.0 - np.exp(values).sum(axis=1), 0.0)
            others = np.maximum(self.num_classes - (classes >= 0).sum(axis=1), 1)
            rest = np.minimum(np.log(left / others), a["floor"][sl] / tt)
        values[~seen], rest[~seen] = np.nan, np.nan
        return SparseRows(classes, values, rest, self.num_classes)

    def margin(self, labels: np.ndarray, shares=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(score, exact, upper)``, each (N,): the margin ``r(y) - max_{c != y} r(c)`` read from
        the bounds (a lower bound of the exact margin), whether it is exact, and an upper bound of
        the exact margin (from the classes whose bound is exact; +inf when none is). ``r = m``, or
        ``m + log q~`` with ``shares`` (:class:`sei.neighbors.NeighbourShares`). NaN where unseen."""
        labels = np.asarray(labels, np.int64)
        self.check_labels(labels, "this score")
        n = self.top.num_samples
        score, exact, upper = np.full(n, np.nan), np.zeros(n, bool), np.full(n, np.nan)
        for start in range(0, n, _CHUNK_ROWS):
            sl = slice(start, start + _CHUNK_ROWS)
            s, e, u = self._margin_chunk(sl, labels[sl], shares)
            score[sl], exact[sl], upper[sl] = s, e, u
        return score, exact, upper

    def _margin_chunk(self, sl, y, shares):
        a = self.top.arrays
        cls, sums, ex = a["classes"][sl].astype(np.int64), a["sums"][sl], a["exact"][sl]
        t = self.epochs[sl]
        seen = (t > 0) & (cls[:, 0] >= 0)
        tt = np.where(seen, t, 1.0)
        mean = sums / tt[:, None]
        floor = a["floor"][sl] / tt
        own = a["label"][sl] / tt
        other = (cls >= 0) & (cls != y[:, None])
        k = self.num_classes
        untracked_left = k - 1 - other.sum(axis=1) > 0  # some class != y is not tracked
        if shares is None:
            log_q = np.zeros(cls.shape)
            log_q_y = np.zeros(len(y))
            log_q_untracked = np.zeros(len(y))
        else:
            nl = shares.neighbour_labels[sl]
            log_d = np.log(shares.denominator)
            count = (nl[:, None, :] == cls[:, :, None]).sum(axis=2)
            log_q = np.log(count + shares.smoothing) - log_d
            log_q_y = np.log((nl == y[:, None]).sum(axis=1) + shares.smoothing) - log_d
            # The best untracked class other than y: the most frequent such neighbour label, or a
            # class no neighbour carries (count 0).
            per_pos = (nl[:, :, None] == nl[:, None, :]).sum(axis=2)
            tracked = (nl[:, :, None] == np.where(other, cls, -2)[:, None, :]).any(axis=2)
            free = (nl != y[:, None]) & ~tracked
            best = np.where(free, per_pos, 0).max(axis=1) if nl.shape[1] else np.zeros(len(y), np.int64)
            log_q_untracked = np.log(best + shares.smoothing) - log_d
        r = np.where(other, mean + log_q, -np.inf)
        r_floor = np.where(untracked_left, floor + log_q_untracked, -np.inf)
        tracked_best = r.max(axis=1)
        top = np.maximum(tracked_best, r_floor)
        r_exact = np.where(other & ex, r, -np.inf).max(axis=1)
        ry = own + log_q_y
        with np.errstate(invalid="ignore"):
            score = ry - top
            upper = ry - r_exact
            exact = (r_exact >= top) | ~np.isfinite(top)  # nothing else: +inf, exact
        score = np.where(np.isneginf(top), np.inf, score)
        upper = np.where(np.isneginf(top), np.inf, upper)
        return (np.where(seen, score, np.nan), seen & exact, np.where(seen, upper, np.nan))
