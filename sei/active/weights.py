"""Robust contribution weights alpha (Kim, ECCV-W 2022, Sec. 3.1, Eq. 3-4).

Math::

    alpha(1)   = 1/N
    g_j        = exp(-loss_j^2 / sigma_alpha)
    alpha(q+1) = (1 - d) alpha(q) + d g / ||g||_1,   then renormalised to sum 1

Choices (exposed as options): ``sigma="mean_sq"`` sets sigma_alpha to the squared mean
loss of the epoch (the paper's "determined similarly" to sigma_L); ``"median_sq"`` or a
float are alternatives. Non-finite losses (samples not seen) keep their weight.
``.weights`` is ``N * alpha`` (mean 1), so a training engine that multiplies per-sample
losses by ``.weights`` and averages reproduces Eq. 2 up to the constant learning-rate factor
and trains exactly like unweighted training while alpha is uniform.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RobustWeights"]


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

    Examples
    --------
    >>> w = RobustWeights(4)
    >>> w.update(np.array([0.1, 0.1, 0.1, 5.0]))
    >>> bool(w.alpha[3] < w.alpha[0])
    True
    """

    def __init__(self, num_samples: int, *, step: float = 0.1, sigma="mean_sq"):
        n = int(num_samples)
        if n < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not 0.0 <= step <= 1.0:
            raise ValueError(f"step must be in [0, 1], got {step}")
        if isinstance(sigma, str) and sigma not in ("mean_sq", "median_sq"):
            raise ValueError(f"sigma must be 'mean_sq', 'median_sq' or a positive float, got {sigma!r}")
        self.num_samples, self.step, self.sigma = n, float(step), sigma
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
        if not ok.any():
            return
        lv = losses[ok]
        if isinstance(self.sigma, str):
            c = lv.mean() if self.sigma == "mean_sq" else np.median(lv)
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

    def state_dict(self) -> dict:
        """State as arrays, numbers and strings (``sei.train`` checkpoints it for ``resume=True``)."""
        return {"num_samples": self.num_samples, "step": self.step,
                "sigma": self.sigma if isinstance(self.sigma, str) else float(self.sigma),
                "alpha": self.alpha.copy(), "num_updates": int(self.num_updates),
                "last_sigma": None if self.last_sigma is None else float(self.last_sigma)}

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
        return self

    def candidate_order(self) -> np.ndarray:
        """Indices by decreasing p^S = (1 - alpha) / sum(1 - alpha), i.e. increasing alpha."""
        return np.argsort(self.alpha, kind="stable")
