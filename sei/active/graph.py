"""kNN graph and exact local entropy propagation (Kim, ECCV-W 2022, Sec. 3.2).

Math (paper Eq. 7-8)::

    A_jk = exp(-||x_j - x_k||^2 / sigma_L)   if j in kNN(k) or k in kNN(j), else 0
    L    = I - D^-1 A                          (random-walk Laplacian, D = diag(A 1))
    e   <- e - delta L e  =  M e,   M = (1 - delta) I + delta D^-1 A

After a pick x*, e(x*) is set to 0 and ``steps`` Euler steps are applied *to the change*
``c = -e(x*) 1_{x*}`` (mode ``"change"``, the default): ``e <- e + M^steps c``. Diffusion is
linear, so ``M^steps c`` is non-zero only within ``steps`` hops of x*; we compute it exactly
on that neighbourhood with a sparse push, never touching the rest of the graph.
Mode ``"full"`` diffuses the whole field each pick, ``e <- M^steps (e + c)`` (the literal
reading of Algorithm 1; O(N k) per pick, kept for reference and small graphs).

Choices where the paper is vague (all exposed as options):

- ``sigma="pairs"``: sigma_L = (mean pairwise distance)^2, the mean estimated on
  ``num_pairs`` random pairs (paper: "squared mean of pairwise data distances").
  ``sigma="knn"`` uses the squared mean kNN distance instead (sharper weights); a float is used as is.
- The graph is the union (symmetric) kNN graph on whatever features are given; the
  simulator and adapters pass the frozen embeddings the classifier was trained on.
- ``tol`` prunes push entries below ``tol * |e(x*)|``; the max-norm error of the result is
  then at most ``steps * tol * |e(x*)|`` (M is row-stochastic and non-negative, so it never
  grows the max-norm of an error). ``tol=0`` is exact (the tests compare against dense diffusion).

Bounded push (``bound=``, what the selectors use by default). Expand the binomial:
``M^steps = sum_s b_s P^s`` with ``b_s = C(steps, s) (1-delta)^(steps-s) delta^s`` (0.35, 0.39,
0.19, 0.057, 0.011, 1.5e-3, ... for delta = 0.1), and let ``T_s = sum_{s' >= s} b_s'``. The
response to a pick is ``sum_s b_s u_s`` with ``u_0 = 1_{x*}``, ``u_s = P u_{s-1}``, pushed hop by
hop along the edges of the active nodes. Two cuts, chosen from ``bound`` alone:

- hops beyond ``H`` are dropped, ``H`` the least with ``T_{H+1} <= bound / 2``;
- entries of ``u_r`` below ``theta_r = (bound - T_{H+1}) / ((H-1) (T_{r+1} - T_{H+1}))`` are
  counted at hop r but not pushed further (1 <= r < H).

Every ``P^m`` is row-stochastic and non-negative, so an entry left out at hop r changes the
result by at most ``theta_r (T_{r+1} - T_{H+1})`` in max-norm, and the dropped hops by at most
``T_{H+1}``: ``||response - M^steps c||_inf <= bound * |e(x*)|`` (c = -e(x*) 1_{x*}); over a
sequence of picks the errors add. The work of a pick is at most
``sum_r deg_max * (d(x*) / d_min) / theta_r`` edge visits whatever N is (``||u_r||_1 <= d(x*)/d_min``
for this reversible walk), and in practice far less (``bound=1e-4``: 4,000-13,000 edge visits,
about 1 ms per pick on 50,000 nodes). ``bound="auto"`` (:meth:`KNNGraph.auto_bound`) takes the
smallest bound of ``0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2`` whose mean work over 16 probe nodes
of this graph is at most ``work_budget`` edge visits (default 15,000): exact on tiny graphs,
``1e-4`` on the 50,000-node kNN graphs of ``benchmarks/active_speed.py``. Deterministic for a
given graph (probe nodes from ``seed``). :mod:`sei.active.propagation` adds the left-out mass
back exactly every few dozen picks, so that errors do not pile up over a batch.
- Backends: scikit-learn exact neighbours up to ``exact_max`` samples, then faiss IVF (or hnswlib)
  approximate neighbours, imported lazily. Nothing is O(N^2).
"""

from __future__ import annotations

from functools import lru_cache
from math import comb

import numpy as np
import scipy.sparse as sp

from ..neighbors import check_features, check_k
from ..neighbors import search as _knn_search

__all__ = ["KNNGraph", "dense_diffusion_reference", "diffusion_plan"]

BOUND_LADDER = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def _flat_ranges(indptr, rows):
    """Concatenated ``arange(indptr[r], indptr[r+1])`` for r in rows, plus segment starts."""
    starts = indptr[rows]
    lens = indptr[rows + 1] - starts
    seg = np.zeros(len(rows), dtype=np.int64)
    np.cumsum(lens[:-1], out=seg[1:])
    total = int(seg[-1] + lens[-1]) if len(rows) else 0
    flat = np.arange(total, dtype=np.int64) + np.repeat(starts - seg, lens)
    return flat, seg


def diffusion_plan(bound: float, steps: int = 10, step_size: float = 0.1):
    """Hop weights ``b_0..b_H`` and push thresholds ``theta_0..theta_H`` for a max-norm error
    of at most ``bound`` (relative to ``|e(x*)|``); see the module docstring. ``bound=0``: all
    ``steps`` hops, no thresholds (exact). Read-only arrays, cached."""
    return _plan(float(bound), int(steps), float(step_size))


@lru_cache(maxsize=64)
def _plan(bound, steps, step_size):
    if not 0.0 <= bound < 1.0:
        raise ValueError(f"bound must be in [0, 1), got {bound!r}")
    b = np.array([comb(steps, s) * (1 - step_size) ** (steps - s) * step_size ** s for s in range(steps + 1)])
    tails = np.append(np.cumsum(b[::-1])[::-1], 0.0)  # tails[s] = sum_{s' >= s} b_s'
    hops = next(h for h in range(steps + 1) if tails[h + 1] <= bound / 2)
    tail = tails[hops + 1]
    theta = np.zeros(hops + 1)
    for r in range(1, hops):
        theta[r] = (bound - tail) / ((hops - 1) * (tails[r + 1] - tail))
    b = b[:hops + 1]
    b.flags.writeable = theta.flags.writeable = False
    return b, theta


class KNNGraph:
    """Symmetric kNN graph with Gaussian weights, for entropy (or SEI) propagation.

    Parameters
    ----------
    features : (N, D) array
        Embeddings of the N samples (the graph lives in this space).
    k : int, default 10
        Neighbours per sample (the paper's |N(x)|); the union graph is symmetric.
    sigma : {"pairs", "knn"} or float, default "pairs"
        sigma_L, see the module docstring.
    backend : {"auto", "sklearn", "hnswlib", "faiss"}
        "auto": exact scikit-learn up to ``exact_max`` samples, faiss beyond (hnswlib if
        faiss is missing).
    num_pairs : int
        Random pairs used to estimate the mean pairwise distance.

    Examples
    --------
    >>> g = KNNGraph(np.random.default_rng(0).normal(size=(500, 8)), k=10)
    >>> e = np.random.default_rng(1).random(500)
    >>> g.propagate_pick(e, 3)           # in place: e[3] -> 0, neighbours suppressed
    """

    def __init__(self, features, k: int = 10, *, sigma="pairs", backend="auto", num_pairs=100_000,
                 exact_max=20_000, seed=0, num_threads=2):
        x = np.ascontiguousarray(check_features(features))
        n = x.shape[0]
        k = check_k(k, n)
        self.num_samples, self.k = n, k
        dist, idx, backend = _knn_search(x, k, backend=backend, exact_max=exact_max, seed=seed,
                                         num_threads=num_threads)
        self.backend = backend
        # Drop self matches (first column, or wherever the library put them).
        rows = np.repeat(np.arange(n), k + 1)
        cols, d = idx.ravel(), dist.ravel().astype(np.float64)
        keep = (cols != rows) & (cols >= 0)
        rows, cols, d = rows[keep], cols[keep], d[keep]

        if isinstance(sigma, str):
            if sigma == "pairs":
                rng = np.random.default_rng(seed)
                m = int(min(num_pairs, n * (n - 1) // 2))
                a = rng.integers(0, n, m)
                b = rng.integers(0, n, m)
                ok = a != b
                mean_d = float(np.mean(np.linalg.norm(x[a[ok]].astype(np.float64) - x[b[ok]], axis=1)))
            elif sigma == "knn":
                mean_d = float(np.mean(d))
            else:
                raise ValueError(f"sigma must be 'pairs', 'knn' or a positive float, got {sigma!r}")
            sigma_val = mean_d ** 2
        else:
            sigma_val = float(sigma)
        if not sigma_val > 0:
            raise ValueError(f"sigma_L must be > 0, got {sigma_val} (all features identical?)")
        self.sigma = sigma_val
        w = np.exp(-(d ** 2) / sigma_val)
        a = sp.coo_matrix((w, (rows, cols)), shape=(n, n)).tocsr()
        a = a.maximum(a.T).tocsr()  # union graph: edge if either is a kNN of the other
        a.sort_indices()
        self.adjacency = a
        self.degree = np.asarray(a.sum(axis=1)).ravel()
        # P = D^-1 A, row-stochastic, in CSR (rows of P pull from neighbours).
        self._indptr = a.indptr.astype(np.int64)
        self._indices = a.indices.astype(np.int64)
        self._pdata = a.data / np.repeat(self.degree, np.diff(a.indptr))
        # Row k of A holds column k of P (A is symmetric): P_ik = A_ki / d_i, for pushes.
        self._lens = np.diff(self._indptr)
        self._ptdata = a.data / self.degree[self._indices]
        self._work = np.zeros(n)
        self._acc = np.zeros(n)
        self._slot = np.zeros(n, dtype=np.int64)
        self._stamp = np.zeros(n, dtype=np.int64)
        self._seed = seed
        self._auto = {}

    # -- operators ---------------------------------------------------------------------
    def transition_matrix(self) -> sp.csr_matrix:
        """P = D^-1 A as a CSR matrix (N, N)."""
        return sp.csr_matrix((self._pdata, self._indices, self._indptr), shape=(self.num_samples,) * 2)

    def laplacian(self) -> sp.csr_matrix:
        """Random-walk Laplacian L = I - D^-1 A (N, N)."""
        return (sp.identity(self.num_samples, format="csr") - self.transition_matrix()).tocsr()

    def diffuse(self, values, *, steps: int = 10, step_size: float = 0.1) -> np.ndarray:
        """``steps`` explicit Euler steps e <- e - step_size L e on the whole field (O(N k) each)."""
        e = np.asarray(values, dtype=np.float64).copy()
        p = self.transition_matrix()
        for _ in range(steps):
            e = (1 - step_size) * e + step_size * (p @ e)
        return e

    def local_response(self, node: int, value: float = 1.0, *, steps: int = 10, step_size: float = 0.1,
                       tol: float = 0.0):
        """``M^steps (value * 1_node)`` computed on the ``steps``-hop neighbourhood only.

        Returns ``(indices, values)`` of the (possibly pruned) support.
        """
        ip, ind, pd, work, stamp = self._indptr, self._indices, self._pdata, self._work, self._stamp
        sup = np.array([node], dtype=np.int64)
        work[node] = value
        thresh = abs(value) * tol
        flat, _ = _flat_ranges(ip, sup)
        nb = ind[flat]
        try:
            for _ in range(steps):
                # Support of the next iterate: current support plus its neighbours, de-duplicated
                # without sorting (each node keeps the slot of its last occurrence).
                cand = np.concatenate((sup, nb))
                pos = np.arange(len(cand))
                stamp[cand] = pos
                tgt = cand[stamp[cand] == pos]
                flat, seg = _flat_ranges(ip, tgt)
                nb = ind[flat]
                pulled = np.add.reduceat(pd[flat] * work[nb], seg)
                new = (1.0 - step_size) * work[tgt] + step_size * pulled
                work[tgt] = new  # all reads done above, so the in-place write is safe
                if thresh > 0:
                    small = np.abs(new) < thresh
                    if small.any():
                        work[tgt[small]] = 0.0
                        keep = ~small
                        tgt = tgt[keep]
                        nb = nb[np.repeat(keep, np.diff(np.append(seg, len(flat))))]
                sup = tgt
            vals = work[sup].copy()
        finally:
            work[sup] = 0.0
            work[node] = 0.0
        return sup, vals

    def bounded_response(self, node: int, value: float = 1.0, *, bound: float, steps: int = 10,
                         step_size: float = 0.1, max_work=None, residual=None):
        """``M^steps (value * 1_node)`` within ``bound * |value|`` in max-norm, by the hop push.

        Returns ``(indices, values)`` (indices distinct), or ``None`` when the push would visit
        more than ``max_work`` edges (used to probe the cost of a bound). ``residual``, an
        array of shape (H + 1, N) or more rows, receives ``value * u_r`` where it was left out
        at hop r (row r), for :class:`sei.active.propagation.BoundedPropagation` to diffuse later.
        """
        b, theta = diffusion_plan(bound, steps, step_size)
        ip, ind, pt, lens = self._indptr, self._indices, self._ptdata, self._lens
        stamp, slot, acc = self._stamp, self._slot, self._acc
        idx, val = np.array([node], dtype=np.int64), np.ones(1)
        parts, work = [idx], 0
        acc[node] = b[0]
        try:
            for s in range(1, len(b)):
                flat, _ = _flat_ranges(ip, idx)
                work += len(flat)
                if max_work is not None and work > max_work:
                    return None
                nb = ind[flat]
                pushed = pt[flat] * np.repeat(val, lens[idx])
                pos = np.arange(len(nb))
                stamp[nb] = pos
                tgt = nb[stamp[nb] == pos]  # distinct targets, no sort
                slot[tgt] = np.arange(len(tgt))
                u = np.bincount(slot[nb], pushed, minlength=len(tgt))  # u_s on its support
                acc[tgt] += b[s] * u
                parts.append(tgt)
                keep = u >= theta[s]  # u >= 0: entries below theta_s are counted, not pushed on
                if residual is not None:
                    drop = ~keep if s < len(b) - 1 else slice(None)  # hop H is never pushed on
                    residual[s, tgt[drop]] += value * u[drop]
                idx, val = tgt[keep], u[keep]
            touched = np.concatenate(parts)
            pos = np.arange(len(touched))
            stamp[touched] = pos
            touched = touched[stamp[touched] == pos]
            self.last_push_work = work
            return touched, acc[touched] * value
        finally:
            for t in parts:
                acc[t] = 0.0

    def auto_bound(self, *, steps: int = 10, step_size: float = 0.1, work_budget: int = 15_000,
                   probes: int = 16) -> float:
        """The smallest bound of ``BOUND_LADDER`` whose mean push work on ``probes`` nodes of
        this graph (drawn with the graph's seed) is at most ``work_budget`` edge visits.

        Computed once per (steps, step_size, work_budget) and cached; costs at most
        ``len(BOUND_LADDER) * probes * work_budget`` edge visits (tens of ms).
        """
        key = (int(steps), float(step_size), int(work_budget))
        if key not in self._auto:
            nodes = np.random.default_rng(self._seed).choice(self.num_samples, min(probes, self.num_samples),
                                                              replace=False)
            chosen = BOUND_LADDER[-1]
            for bound in BOUND_LADDER:
                total, ok = 0, True
                for j in nodes:
                    r = self.bounded_response(int(j), bound=bound, steps=steps, step_size=step_size,
                                              max_work=work_budget * len(nodes) - total)
                    if r is None:
                        ok = False
                        break
                    total += self.last_push_work
                if ok:
                    chosen = bound
                    break
            self._auto[key] = chosen
        return self._auto[key]

    def precompute_responses(self, *, steps: int = 10, step_size: float = 0.1, tol: float = 1e-4,
                             max_entries: int = 100_000_000):
        """Cache the pruned columns of ``M^steps`` (CSC), so a pick costs one sparse axpy.

        Memory is N times the pruned support (about 150 entries per column at ``tol=1e-4``
        and k=10); raises MemoryError past ``max_entries`` entries. ``tol=0`` is exact but
        the columns then cover the whole ``steps``-hop ball. Returns self.
        """
        n = self.num_samples
        m = ((1 - step_size) * sp.identity(n, format="csr") + step_size * self.transition_matrix()).tocsr()
        r = sp.identity(n, format="csc")
        avg_deg = m.nnz / n
        for _ in range(steps):
            if r.nnz * avg_deg > 4 * max_entries:  # refuse before the product can blow up memory
                raise MemoryError(f"response matrix would exceed max_entries={max_entries}; raise tol or "
                                  "use on-the-fly propagation")
            r = (m @ r).tocsc()
            if tol > 0:
                r.data[np.abs(r.data) < tol] = 0.0
                r.eliminate_zeros()
            if r.nnz > max_entries:
                raise MemoryError(f"response matrix exceeds max_entries={max_entries}; raise tol or use "
                                  "on-the-fly propagation")
        r.sort_indices()
        self._responses = (r.indptr.astype(np.int64), r.indices.astype(np.int64), r.data, steps, step_size, tol)
        return self

    def propagate_pick(self, values, node: int, *, steps: int = 10, step_size: float = 0.1,
                       mode: str = "change", tol: float = 0.0, bound=None):
        """Set ``values[node] = 0`` and propagate that change (in place). Returns touched indices.

        ``mode="change"``: local diffusion of the change (see module docstring), exact with
        ``tol=0`` (the default), pruned with ``tol > 0`` (error <= ``steps * tol * |e(x*)|``), or
        by the bounded hop push when ``bound`` is given (error <= ``bound * |e(x*)|``; ``"auto"``:
        :meth:`auto_bound`, or the precomputed columns when :meth:`precompute_responses` was
        run with these ``steps`` and ``step_size``).
        ``mode="full"``: diffuse the whole field (O(N k) per pick).
        ``mode="clamped"``: Algorithm 1 lines 17-20 as written: ``steps`` times, set
        ``values[node] = 0`` and take one Euler step of Eq. 8 on the whole field (the picked node is
        held at zero before every step, a Dirichlet condition; O(N k) per pick).
        """
        if mode == "full":
            values[node] = 0.0
            values[:] = self.diffuse(values, steps=steps, step_size=step_size)
            return np.arange(self.num_samples)
        if mode == "clamped":
            p = self.transition_matrix()
            for _ in range(steps):
                values[node] = 0.0
                values[:] = (1 - step_size) * values + step_size * (p @ values)
            return np.arange(self.num_samples)
        if mode != "change":
            raise ValueError(f"mode must be 'change', 'full' or 'clamped', got {mode!r}")
        delta = -float(values[node])
        if delta == 0.0:
            return np.array([node], dtype=np.int64)
        cache = getattr(self, "_responses", None)
        if bound == "auto" and cache is not None and cache[3:5] == (steps, step_size):
            tol, bound = cache[5], None
        if cache is not None and bound is None and cache[3:] == (steps, step_size, tol):
            ip, ind, data = cache[:3]
            a, b = ip[node], ip[node + 1]
            idx = ind[a:b]
            values[idx] += delta * data[a:b]
            return idx
        if bound is None:
            idx, resp = self.local_response(node, delta, steps=steps, step_size=step_size, tol=tol)
        else:
            if bound == "auto":
                bound = self.auto_bound(steps=steps, step_size=step_size)
            idx, resp = self.bounded_response(node, delta, bound=bound, steps=steps, step_size=step_size)
        values[idx] += resp
        return idx


def dense_diffusion_reference(adjacency, values, node, *, steps=10, step_size=0.1):
    """Dense reference: ``e + M^steps c`` with c the zeroed-out change at ``node`` (small N only)."""
    a = np.asarray(adjacency.todense() if sp.issparse(adjacency) else adjacency, dtype=np.float64)
    n = a.shape[0]
    m = (1 - step_size) * np.eye(n) + step_size * a / a.sum(1, keepdims=True)
    c = np.zeros(n)
    c[node] = -values[node]
    return np.asarray(values, dtype=np.float64) + np.linalg.matrix_power(m, steps) @ c
