"""One update's logits summarised where they live (a torch tensor, e.g. on the GPU), so that
an :class:`sei.SEIRecorder` moves O(B k) numbers to the host instead of B x K, and only when
its buffer of summaries is flushed (one synchronisation per many batches, not per batch).

The summary holds what every per-sample statistic of the default recording reads
(:meth:`sei.scores.Batch.from_summary`): per row the entropy, the label's logit, the log of
the softmax denominator, and the ``kk`` largest logits with their classes (for the margins
and the recorder's top-k latest probabilities). All logits are shifted by the row's largest,
so every column is exact to float32 whatever the logits' scale. torch is only touched here
with a tensor in hand (never imported by the core at module level).
"""

from __future__ import annotations

#: Columns before the largest logits: entropy, the label's shifted logit, log-sum-exp.
HEAD = 3


def summary_width(kk: int) -> int:
    """Columns of a summary keeping the ``kk`` largest logits (values, then classes)."""
    return HEAD + 2 * kk


def summarise_logits(logits, labels, kk: int):
    """(B, 3 + 2 kk) float32 tensor on ``logits``' device: H, z_y - max z, log sum exp(z - max z),
    the kk largest z - max z (descending) and their classes (exact as float32 below 2^24
    classes). ``labels`` is a (B,) int64 tensor on the same device. No host synchronisation."""
    import torch  # a tensor is in hand, so torch is imported already

    with torch.no_grad():
        z = logits.detach()
        if z.dtype != torch.float64:
            z = z.float()
        vals, idx = z.topk(kk, dim=1)  # sorted, largest first
        shifted = z - vals[:, :1]  # <= 0, exactly 0 at the largest
        e = shifted.exp()
        total = e.sum(dim=1)  # >= 1
        lse = total.log()
        h = (lse - (e * shifted).sum(dim=1) / total).clamp_min_(0.0)
        zy = shifted.gather(1, labels[:, None])[:, 0]
        cols = [h[:, None], zy[:, None], lse[:, None], vals - vals[:, :1], idx.to(z.dtype)]
        return torch.cat(cols, dim=1).float()


def split_summary(summary, kk: int):
    """``(head, top_values, top_classes)`` of a host (numpy) summary: the (n, 5) columns
    :meth:`sei.scores.Batch.from_summary` reads (the head and the two largest logits), and the
    kk largest shifted logits with their int64 classes."""
    import numpy as np

    head = summary[:, :HEAD + 2].astype(np.float64)
    return head, summary[:, HEAD:HEAD + kk].astype(np.float64), summary[:, HEAD + kk:HEAD + 2 * kk].astype(np.int64)
