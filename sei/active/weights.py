"""Robust contribution weights alpha (Kim, ECCV-W 2022, Sec. 3.1, Eq. 3-4).

Math::

    alpha(1)   = 1/N
    g_j        = exp(-loss_j^2 / sigma_alpha)
    alpha(q+1) = (1 - d) alpha(q) + d g / ||g||_1,   then renormalised to sum 1

Choices (exposed as options): ``sigma="mean_sq"`` (the default) sets sigma_alpha to the squared
mean loss of the epoch; ``sigma="pairs"`` to the squared mean pairwise loss distance
``(mean_{j != k} |l_j - l_k|)^2``, the literal reading of the paper's "determined similarly" to
sigma_L ("the squared mean of pairwise data distances"), computed exactly from the sorted losses;
``"median_sq"`` or a float are alternatives. Non-finite losses (samples not seen) keep their weight.

``rule="hard"`` is the ablation of the paper's Fig. 4 ("hard" explicit noise detection in place of
the soft weights): after every epoch a two-component Gaussian mixture on each sample's mean loss
so far (the small-loss criterion of O2U-Net-style detectors) flags the high-loss component as
noisy; flagged samples get weight 0, the others equal weight (``alpha`` uniform over them).
``trusted=`` (an extension, not the paper's): samples whose label an oracle gave are weighted as a
zero-loss sample in every update (``g_j = 1``; the hard rule always keeps them), so the update does
not suppress a corrected label that disagrees with the noisy labels around it.
``.weights`` is ``N * alpha`` (mean 1), so a training engine that multiplies per-sample
losses by ``.weights`` and averages reproduces Eq. 2 up to the constant learning-rate factor
and trains exactly like unweighted training while alpha is uniform.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RobustWeights", "mean_pairwise_distance"]


class RobustWeights:
    """Per-sample contribution weights updated from per-epoch losses.

    Plugs into ``sei.train(..., sample_weights=RobustWeights(N))``: the engine reads
    ``.weights`` (N,) and calls ``.update(losses)`` after every epoch.

    Parameters
    ----------
    num_samples : int
    step : float, default 0.1
        delta_alpha.
    sigma : {"mean_sq", "median_sq"} or float, default "mean_sq"
    rule : {"soft", "hard"}, default "soft"
    trusted : array-like of bool, shape (N,), optional
        Samples whose label an oracle gave: weighted as zero-loss samples (never suppressed).

    Examples
    --------
    >>> w = RobustWeights(4)
    >>> w.update(np.array([0.1, 0.1, 0.1, 5.0]))
    >>> bool(w.alpha[3] < w.alpha[0])
    True
    """

    def __init__(self, num_samples: int, *, step: float = 0.1, sigma="mean_sq", rule: str = "soft", trusted=None):
        n = int(num_samples)
        if n < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not 0.0 <= step <= 1.0:
            raise ValueError(f"step must be in [0, 1], got {step}")
        if isinstance(sigma, str) and sigma not in ("mean_sq", "median_sq", "pairs"):
            raise ValueError(f"sigma must be 'mean_sq', 'median_sq', 'pairs' or a positive float, got {sigma!r}")
        if rule not in ("soft", "hard"):
            raise ValueError(f"rule must be 'soft' (Eq. 3-4) or 'hard' (explicit noise detection), got {rule!r}")
        self.num_samples, self.step, self.sigma, self.rule = n, float(step), sigma, rule
        if trusted is not None:
            trusted = np.asarray(trusted)
            if trusted.dtype != bool or trusted.shape != (n,):
                raise ValueError(f"trusted must be a boolean mask of shape ({n},), got dtype {trusted.dtype} and "
                                 f"shape {trusted.shape}")
            trusted = trusted.copy()
        self.trusted = trusted
        self._loss_sum, self._loss_count = np.zeros(n), np.zeros(n)
        self.alpha = np.full(n, 1.0 / n)
        self.num_updates = 0
        self.last_sigma = None

    @property
    def weights(self) -> np.ndarray:
        """(N,) loss weights with mean 1 (``N * alpha``)."""
        return self.alpha * self.num_samples

    def update(self, losses) -> None:
        """One epoch's update from the (N,) per-sample losses."""
        losses = np.asarray(losses, dtype=np.float64).ravel()
        if losses.shape[0] != self.num_samples:
            raise ValueError(f"losses must have shape ({self.num_samples},), got {losses.shape}")
        ok = np.isfinite(losses)
        if self.trusted is not None:  # an oracle's label: a zero loss for the weights
            losses = np.where(self.trusted, 0.0, losses)
            ok |= self.trusted
        if not ok.any():
            return
        if self.rule == "hard":
            return self._hard_update(losses, ok)
        lv = losses[ok]
        if isinstance(self.sigma, str):
            c = {"mean_sq": np.mean, "median_sq": np.median, "pairs": mean_pairwise_distance}[self.sigma](lv)
            sigma = max(float(c) ** 2, 1e-12)
        else:
            sigma = float(self.sigma)
        self.last_sigma = sigma
        g = np.zeros(self.num_samples)
        g[ok] = np.exp(-(lv ** 2) / sigma)
        gs = g.sum()
        g = g / gs if gs > 0 else np.where(ok, 1.0 / ok.sum(), 0.0)
        new = (1 - self.step) * self.alpha + self.step * g
        new[~ok] = self.alpha[~ok]
        self.alpha = new / new.sum()
        self.num_updates += 1

    def _hard_update(self, losses, ok):
        from sklearn.mixture import GaussianMixture

        self._loss_sum[ok] += losses[ok]
        self._loss_count[ok] += 1
        seen = self._loss_count > 0
        mean = self._loss_sum[seen] / self._loss_count[seen]
        keep = np.ones(self.num_samples, bool)
        if len(mean) >= 2 and np.ptp(mean) > 0:
            gm = GaussianMixture(2, random_state=0).fit(mean[:, None])
            noisy_comp = int(np.argmax(gm.means_.ravel()))
            keep[np.flatnonzero(seen)] = gm.predict(mean[:, None]) != noisy_comp
        if self.trusted is not None:
            keep |= self.trusted
        if not keep.any():
            keep[:] = True
        self.alpha = keep / keep.sum()
        self.num_updates += 1

    def state_dict(self) -> dict:
        """State as arrays, numbers and strings (``sei.train`` checkpoints it for ``resume=True``)."""
        state = {"num_samples": self.num_samples, "step": self.step,
                 "sigma": self.sigma if isinstance(self.sigma, str) else float(self.sigma),
                 "alpha": self.alpha.copy(), "num_updates": int(self.num_updates),
                 "last_sigma": None if self.last_sigma is None else float(self.last_sigma), "rule": self.rule,
                 "loss_sum": self._loss_sum.copy(), "loss_count": self._loss_count.copy()}
        if self.trusted is not None:  # absent otherwise: a run without it keeps its fingerprint
            state["trusted"] = self.trusted.copy()
        return state

    def load_state_dict(self, state: dict) -> "RobustWeights":
        """Restore :meth:`state_dict` (same ``num_samples``; ``step`` and ``sigma`` are taken from it)."""
        n = int(state["num_samples"])
        alpha = np.array(state["alpha"], dtype=np.float64).ravel()
        if n != self.num_samples or alpha.shape != (self.num_samples,):
            raise ValueError(f"RobustWeights state is for {n} samples but this object has {self.num_samples}; "
                             "create it with the same num_samples.")
        self.step = float(state["step"])
        self.sigma = state["sigma"]
        self.alpha = alpha
        self.num_updates = int(state["num_updates"])
        self.last_sigma = None if state["last_sigma"] is None else float(state["last_sigma"])
        self.rule = state.get("rule", "soft")
        if "loss_sum" in state:
            self._loss_sum = np.array(state["loss_sum"], dtype=np.float64).ravel()
            self._loss_count = np.array(state["loss_count"], dtype=np.float64).ravel()
        trusted = state.get("trusted")
        self.trusted = None if trusted is None else np.array(trusted, dtype=bool).ravel()
        return self

    def candidate_order(self) -> np.ndarray:
        """Indices by decreasing p^S = (1 - alpha) / sum(1 - alpha), i.e. increasing alpha."""
        return np.argsort(self.alpha, kind="stable")


def mean_pairwise_distance(values) -> float:
    """``mean_{j != k} |v_j - v_k|`` of a 1-D array, exactly, in O(N log N) (from the sorted values:
    ``sum_{j<k} (v_(k) - v_(j)) = sum_i (2i - N - 1) v_(i)`` with ranks i = 1..N)."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = len(v)
    if n < 2:
        return 0.0
    return float(2.0 * np.dot(2.0 * np.arange(1, n + 1) - n - 1, v) / (n * (n - 1)))
