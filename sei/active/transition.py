"""Noise transition estimates for forward-corrected training during label correction.

Three estimates of T[i, j] = P(given = j | clean = i) among the samples *not yet queried*
(the ones the forward-corrected loss applies to), one per ``transition_estimate`` of a
selector: ``"counted"`` (:func:`estimate_transition_matrix`, DALC's), ``"design"``
(:func:`design_transition_matrix`) and ``"regression"`` (:func:`regression_transition_matrix`,
``sei_fc``'s). :func:`transition_estimate` dispatches on the name.

DALC (``estimate_transition_matrix``) counts (clean, noisy) pairs over every queried
sample. That is unbiased only when the queries are a uniform draw: a selector that
queries mislabeled samples with 98 % precision makes the counted T say "98 % noise",
and the forward-corrected loss then over-corrects (the ALC benchmark's collapse of
SEI-alpha + forward correction at 1,000 labels).

:class:`UniformShareSelector` queries each batch as a *design*: the base selector's top
picks plus a uniform draw of ``share`` of the batch from the rest of the pool. The draw's
inclusion probability is known, so :func:`design_transition_matrix` estimates, without
selection bias, the (clean, noisy) pair counts among the samples *not yet queried* (the
ones the forward correction applies to)::

    round r: R_r samples left after the top picks, m_r of them drawn uniformly (set D_r)
    C_r    = (R_r / m_r - 1) * pairs(D_r) - pairs(queried after round r)     (unbiased)
    C      = sum_r m_r C_r / sum_r m_r

Each row's noise rate rho_i = off-diagonal share of row i of C (shrunk toward the pooled
rate with ``prior`` pseudo-draws, since a round draws about ``m/K`` samples per class); the
off-diagonal shape comes from every queried mislabeled sample (many more of them; the
design corrects *how much* noise there is, the shape is far less sensitive to it)::

    T[i, i] = 1 - rho_i,   T[i, j] = rho_i * S[i, j] / sum_{j' != i} S[i, j']   (j != i)

The design estimate is unbiased but rests on the uniform draws alone (100 per batch of
1,000): its error on CIFAR-10 at 1,000 labels was about twice the regression estimate's.
:func:`regression_transition_matrix` uses every query: a selector decides what to query
from the features and the given labels (and the training they drive), not from the clean
label, so a model of P(clean | features, given label) fitted on the queried samples applies
to the samples not yet queried (selection on the covariates leaves a conditional model
unbiased when it is well specified; the uniform share keeps the covariates covered).
Summing its predictions over those samples counts their (clean, given) pairs::

    C[i, j] = sum over not-yet-queried n with given label j of P(clean = i | x_n, j)
    T[i, j] = (C[i, j] + smoothing) / sum_j' (C[i, j'] + smoothing)
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["TRANSITION_ESTIMATES", "estimate_transition_matrix", "design_transition_matrix",
           "regression_transition_matrix", "transition_estimate", "UniformShareSelector"]

TRANSITION_ESTIMATES = ("counted", "design", "regression")


def estimate_transition_matrix(noisy_labels, clean_labels, queried, num_classes, *, smoothing=1.0):
    """DALC's row-stochastic T[i, j] = P(noisy = j | clean = i), counted over the queried samples."""
    c = np.full((num_classes, num_classes), float(smoothing))
    np.add.at(c, (clean_labels[queried], noisy_labels[queried]), 1.0)
    return c / c.sum(1, keepdims=True)


def _pairs(noisy, clean, idx, k):
    c = np.zeros((k, k))
    np.add.at(c, (clean[idx], noisy[idx]), 1.0)
    return c


def design_transition_matrix(noisy_labels, clean_labels, query_round, draws, num_classes, *, prior=10.0,
                             smoothing=1.0):
    """T among the not-yet-queried samples, corrected for the selection (see the module docstring).

    Parameters
    ----------
    noisy_labels, clean_labels : (N,) ints (clean labels are known for queried samples only)
    query_round : (N,) int, the round each sample was queried in, -1 if not queried
    draws : list of ``(round, drawn indices, size of the set drawn from)``, the uniform parts
    num_classes : int
    prior : float, pseudo-draws per row pulling each row's noise rate toward the pooled one
    smoothing : float, pseudo-count of every off-diagonal pair in the shape S

    Falls back to :func:`estimate_transition_matrix` when no uniform draw was made.
    """
    noisy, clean = np.asarray(noisy_labels, np.int64), np.asarray(clean_labels, np.int64)
    qr, k = np.asarray(query_round), int(num_classes)
    draws = [(r, np.asarray(d, np.int64), float(size)) for r, d, size in draws if len(d)]
    if not draws:
        return estimate_transition_matrix(noisy, clean, qr >= 0, k, smoothing=smoothing)
    est, drawn, total_m = np.zeros((k, k)), np.zeros((k, k)), 0.0
    for r, d, size in draws:
        m = len(d)
        c_r = (size / m - 1.0) * _pairs(noisy, clean, d, k) - _pairs(noisy, clean, np.flatnonzero(qr > r), k)
        est += m * c_r
        drawn += _pairs(noisy, clean, d, k)
        total_m += m
    est = np.maximum(est / total_m, 0.0)
    row = est.sum(1)
    off = row - np.diag(est)
    pooled = off.sum() / max(row.sum(), 1e-12)
    # the row's weight in draws (not in scaled counts): a row seen in few draws leans on the pooled rate
    n_i = drawn.sum(1)
    rate = np.where(row > 0, off / np.maximum(row, 1e-12), pooled)
    rho = np.clip((n_i * rate + prior * pooled) / (n_i + prior), 0.0, 1.0 - 1.0 / k)
    shape = np.full((k, k), float(smoothing))
    q = qr >= 0
    np.add.at(shape, (clean[q], noisy[q]), 1.0)
    np.fill_diagonal(shape, 0.0)
    t = rho[:, None] * shape / shape.sum(1, keepdims=True)
    t[np.arange(k), np.arange(k)] = 1.0 - rho
    return t


def regression_transition_matrix(features, noisy_labels, clean_labels, queried, num_classes, *, C=1.0,
                                 label_scale=3.0, smoothing=1.0):
    """T among the not-yet-queried samples from a regression on the queried ones (module docstring).

    Parameters
    ----------
    features : (N, D) the features the selector saw (standardised here)
    noisy_labels : (N,) the given labels, 0..K-1
    clean_labels : (N,) the corrected labels; read only where ``queried`` (other entries may be anything)
    queried : (N,) bool, the samples whose clean label is known
    num_classes : int
    C : float, inverse L2 strength of scikit-learn's multinomial logistic regression (its default)
    label_scale : float, the one-hot given label's scale among the standardised features (a
        smaller scale penalises its weights more); 3 was the first value tried and kept (not tuned)
    smoothing : float, pseudo-count added to every (clean, given) pair

    Falls back to :func:`estimate_transition_matrix` while the queries hold fewer than two
    clean classes or no sample is left unqueried.

    Examples
    --------
    In a relabelling loop, train on the corrected labels with the forward correction where
    labels are still the given ones::

        T = regression_transition_matrix(features, given, labels, relabelled, K)
        sei.train(features, labels, mode="embeddings", transition_matrix=T, transition_mask=~relabelled)
    """
    from sklearn.linear_model import LogisticRegression

    from ..validation import check_features, check_labels, check_mask, check_num_classes

    k = check_num_classes(num_classes)
    noisy = check_labels(noisy_labels, num_classes=k, name="noisy_labels")
    n = len(noisy)
    x = check_features(features, n).astype(np.float64)
    q = check_mask(queried, n, "queried")
    if np.shape(clean_labels) != (n,):
        raise ValueError(f"clean_labels must have one entry per sample, shape ({n},), got shape "
                         f"{np.shape(clean_labels)}; put anything where the label is not known yet.")
    clean = np.zeros(n, np.int64)
    if q.any():
        clean[q] = check_labels(np.asarray(clean_labels)[q], num_classes=k, name="clean_labels (where queried)")
    qi, u = np.flatnonzero(q), np.flatnonzero(~q)
    if len(u) == 0 or len(np.unique(clean[qi])) < 2:
        return estimate_transition_matrix(noisy, clean, q, k, smoothing=smoothing)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    z = np.hstack([x, np.eye(k)[noisy] * float(label_scale)])
    model = LogisticRegression(C=C, max_iter=300).fit(z[qi], clean[qi])
    p = np.zeros((len(u), k))
    p[:, model.classes_] = model.predict_proba(z[u])
    c = np.zeros((k, k))
    np.add.at(c.T, noisy[u], p)  # c[i, j] += P(clean = i | x_n, j) for each n with given label j
    c += float(smoothing)
    return c / c.sum(1, keepdims=True)


def transition_estimate(name, *, features, noisy_labels, clean_labels, query_round, draws, num_classes):
    """The estimate called ``name`` (one of :data:`TRANSITION_ESTIMATES`) of T among the samples not yet queried."""
    queried = np.asarray(query_round) >= 0
    if check_transition_estimate(name) == "counted":
        return estimate_transition_matrix(noisy_labels, clean_labels, queried, num_classes)
    if name == "design":
        return design_transition_matrix(noisy_labels, clean_labels, query_round, draws, num_classes)
    return regression_transition_matrix(features, noisy_labels, clean_labels, queried, num_classes)


def check_transition_estimate(name):
    """``name`` if it is one of :data:`TRANSITION_ESTIMATES`, else a ValueError naming the choices."""
    if name not in TRANSITION_ESTIMATES:
        raise ValueError(f"transition_estimate must be one of {', '.join(TRANSITION_ESTIMATES)}, got {name!r}")
    return name


class UniformShareSelector:
    """A base selector's top picks plus a uniform draw of ``share`` of each batch.

    The uniform part makes the queries a sampling design with known inclusion
    probabilities (``last_draw = (drawn indices, size of the set drawn from)``), from which
    :func:`design_transition_matrix` estimates T without the base selector's bias, and
    keeps the queries spread over the feature space for :func:`regression_transition_matrix`.
    With ``uses_transition_matrix`` the simulator trains it with the forward-corrected loss
    and the estimate named by ``transition_estimate`` (one of :data:`TRANSITION_ESTIMATES`).
    """

    uses_transition_matrix = True

    def __init__(self, base, *, share=0.1, transition_estimate="regression", name=None):
        if isinstance(share, bool) or not isinstance(share, numbers.Real) or not 0.0 < float(share) < 1.0:
            raise ValueError(f"share must be in (0, 1) (the uniform part of each batch), got {share!r}")
        self.transition_estimate = check_transition_estimate(transition_estimate)
        self.base, self.share = base, float(share)
        self.name = name or f"{base.name}_uniform"
        self.uses_graph, self.robust_training, self.needs_sei = base.uses_graph, base.robust_training, base.needs_sei
        # the base's robust weights as the simulator builds them (RobustWeights options, oracle labels trusted)
        self.robust_options = dict(getattr(base, "robust_options", {}) or {})
        self.trust_queries = getattr(base, "trust_queries", False)
        self.propagate = getattr(base, "propagate", False)  # the base's kNN graph is built for it
        self.last_draw = None

    def select(self, ctx, batch_size):
        avail = ctx.available()
        q = ctx.picks(batch_size)
        m = min(max(int(round(self.share * q)), 1), q) if q else 0
        top = self.base.select(ctx, q - m) if q - m > 0 else np.zeros(0, np.int64)
        rest = avail.copy()
        rest[top] = False
        pool = np.flatnonzero(rest)
        drawn = np.random.default_rng([int(ctx.seed), 0x5E1]).choice(pool, size=m, replace=False)
        self.last_draw = (drawn.astype(np.int64), len(pool))
        return np.concatenate([top, drawn]).astype(np.int64)

    def __repr__(self):
        return (f"UniformShareSelector({self.base!r}, share={self.share}, "
                f"transition_estimate={self.transition_estimate!r})")
