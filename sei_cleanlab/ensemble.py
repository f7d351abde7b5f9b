"""The per-epoch predicted probabilities of a run, as the list that cleanlab's ensemble scorer
(:func:`cleanlab.rank.get_label_quality_ensemble_scores`) takes, so a cleanlab user can score the
same run with cleanlab's own function next to ours.

The probabilities are in-sample (each epoch's predictions of the samples it trained on), not the
out-of-sample ``pred_probs`` cleanlab's documentation asks for: the comparison is of two ways of
reading one training run, not of cleanlab's cross-validated protocol.
"""

from __future__ import annotations

import numpy as np

from sei import SEIRecorder
from sei.entropy import softmax
from sei.validation import as_float, as_history

__all__ = ["get_pred_probs_list"]


def get_pred_probs_list(pred_probs_history, *, from_logits=False, num_classes=None):
    """One (N, K) probability array per recorded epoch, oldest first.

    Parameters
    ----------
    pred_probs_history : sei.SEIRecorder, np.ndarray, np.memmap or torch.Tensor
        A recorder that kept its history (``SEIRecorder(..., history_path=, max_epochs=)``,
        ``sei.train(history_path=...)``), or a (T, N, K) history of probabilities (or logits
        with ``from_logits=True``).
    from_logits : bool
        Whether a (T, N, K) history holds logits (a softmax is applied per row).
    num_classes : int, optional
        Keep the first ``num_classes`` columns and renormalise each row: drops the auxiliary
        pseudo-class column of a run trained with one (``sei.train(aux_class=...)`` records
        K + 1 columns), since cleanlab's ``pred_probs`` have one column per given class.

    Returns
    -------
    list of np.ndarray
        T float32 arrays of shape (N, K), rows summing to one.

    Raises
    ------
    ValueError
        For a recorder without a history file, or a sample not seen in some epoch (its row is
        NaN there, which cleanlab cannot score).

    Examples
    --------
    >>> H = np.array([[[.9, .1], [.2, .8]], [[.7, .3], [.4, .6]]])
    >>> epochs = get_pred_probs_list(H)
    >>> len(epochs), epochs[1][0]
    (2, array([0.7, 0.3], dtype=float32))
    """
    if isinstance(pred_probs_history, SEIRecorder):
        rec = pred_probs_history
        if rec.history_path is None:
            raise ValueError("This SEIRecorder kept no per-epoch probabilities: record with "
                             "SEIRecorder(..., max_epochs=T, history_path='run.npy') (or sei.train(history_path=...)) "
                             "to hand the epochs to cleanlab.")
        if rec.num_epochs == 0:
            raise ValueError("The SEIRecorder has no recorded epoch: call end_epoch() after each epoch of updates.")
        if from_logits:
            raise ValueError("A recorder's history holds probabilities; from_logits applies to a (T, N, K) array.")
        hist = np.load(rec.history_path, mmap_mode="r")[: rec.num_epochs]
    else:
        hist, _, _ = as_history(pred_probs_history)
    out = []
    for t in range(hist.shape[0]):
        p = as_float(np.asarray(hist[t]))
        if from_logits:
            p = softmax(p, axis=1)
        p = np.asarray(p, dtype=np.float32)
        if np.isnan(p).any():
            bad = int(np.isnan(p).any(1).sum())
            raise ValueError(f"epoch {t}: {bad} samples were not seen (NaN rows); cleanlab needs every sample's "
                             "probabilities in every epoch.")
        if num_classes is not None:
            k = int(num_classes)
            if not 1 < k <= p.shape[1]:
                raise ValueError(f"num_classes must be in 2..{p.shape[1]}, got {num_classes}.")
            if k < p.shape[1]:
                p = p[:, :k] / p[:, :k].sum(1, keepdims=True)
        out.append(np.ascontiguousarray(p))
    return out
