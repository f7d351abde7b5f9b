"""Out-of-sample class probabilities by stratified K-fold cross-validation, defined once: the
confident-learning comparison of ``sei_fiftyone.compare`` and the benchmarks' confident-learning
baselines (``benchmarks/``) read it. numpy and scikit-learn only (imported when called)."""

from __future__ import annotations

import numpy as np

__all__ = ["kfold_probs"]


def kfold_probs(labels, fit_predict=None, *, features=None, num_classes=None, folds=5, seed=0,
                on_fold=None) -> np.ndarray:
    """(N, K) out-of-sample probabilities over ``StratifiedKFold(folds, shuffle=True, random_state=seed)``.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
    fit_predict : callable(fold, train_idx, test_idx) -> (len(test_idx), K) array, optional
        Trains a fresh model on ``train_idx`` and returns the probabilities of ``test_idx``.
        Default (needs ``features``): a standardised logistic regression on ``features``
        (``StandardScaler`` + ``LogisticRegression(max_iter=1000)``).
    features : array-like, shape (N, D), optional
        The default model's inputs.
    num_classes : int, optional
        K; default ``labels.max() + 1``. Classes without samples get probability 0.
    folds, seed : int
    on_fold : callable(fold), optional
        Called after each fold.

    Raises
    ------
    ValueError
        When a class has fewer than 2 samples or there are fewer samples than folds (every
        class must be on both sides of a split).
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    k = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    _, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2 or len(labels) < folds:
        raise ValueError(f"{len(labels)} samples with {counts.min()} in the smallest class cannot be split into "
                         f"{folds} folds with every class on both sides; lower folds or compare more samples")
    if fit_predict is None:
        if features is None:
            raise TypeError("kfold_probs needs fit_predict= or features= (for the default logistic regression)")
        fit_predict = _logistic_fit_predict(np.asarray(features), labels, k)
    probs = np.zeros((len(labels), k))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    for f, (tr, te) in enumerate(split):
        probs[te] = fit_predict(f, tr, te)
        if on_fold is not None:
            on_fold(f)
    return probs


def _logistic_fit_predict(features, labels, k):
    """The default model: a standardised logistic regression, its columns put at its classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit_predict(fold, tr, te):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(features[tr], labels[tr])
        out = np.zeros((len(te), k))
        out[:, clf.classes_] = clf.predict_proba(features[te])
        return out

    return fit_predict
