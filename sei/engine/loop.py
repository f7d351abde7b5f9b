"""The training loop: a typed run state, one epoch runner per kind of input, records in blocks.

Both runners keep everything on the device during an epoch (features or uint8 images,
labels, weights, loss and accuracy sums) and hand the recorder the epoch's logits in blocks
of ``RECORD_ROWS`` rows: one host sync per block, and no (N, C) block of logits is held.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..recorder import SEIRecorder
from ..validation import check_sample_weights
from .heads import loss_terms
from .images import normalize, random_resized_crop_flip, resize

__all__ = ["Run", "TrainState", "run_epoch", "finetuned_features", "resolve_device", "dist_info", "lr_factor", "rng_seed",
           "autocast_dtype", "SampleWeights"]


# ----------------------------------------------------------------------------- small helpers
def resolve_device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def dist_info():
    """``(rank, world_size)``; joins the process group torchrun describes in the environment."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def lr_factor(schedule, epoch, epochs) -> float:
    if schedule in (None, "none"):
        return 1.0
    if schedule == "step":
        m1, m2 = int(round(0.5 * epochs)), int(round(epochs * 115 / 150))
        return 0.1 ** ((epoch >= m1) + (epoch >= m2))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
    if schedule == "step10":  # x0.1 every 10 epochs (the ALC paper's schedule)
        return 0.1 ** (epoch // 10)
    raise ValueError(f"lr_schedule must be 'step', 'step10', 'none' or 'cosine', got {schedule!r}")


def rng_seed(seed, epoch) -> int:
    return int(seed) * 100003 + int(epoch) * 7919 + 17


def autocast_dtype(dev: torch.device, amp: bool) -> Optional[torch.dtype]:
    """bf16 on a GPU that has it, fp16 (with a gradient scaler) on one that does not, None (fp32) on CPU."""
    if not amp or dev.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class SampleWeights:
    """``sample_weights`` as the loop sees it: None, a fixed (N,) array, or an object with
    ``.weights`` and ``.update(losses)`` (e.g. :class:`sei.active.RobustWeights`) updated after
    every epoch."""

    def __init__(self, sw, n, device):
        self.obj = sw if (sw is not None and hasattr(sw, "weights")) else None
        self.device, self.n = device, n
        self.t = None
        if sw is not None:
            self.refresh(sw if self.obj is None else self.obj.weights)

    def refresh(self, w):
        w = check_sample_weights(w, self.n, "sample_weights")
        self.t = torch.from_numpy(np.asarray(w, dtype=np.float32)).to(self.device)

    def after_epoch(self, losses):
        if self.obj is not None:
            self.obj.update(losses)
            self.refresh(self.obj.weights)

    def of(self, idx):
        return None if self.t is None else self.t[idx]


# ----------------------------------------------------------------------------- state
@dataclass
class Run:
    """What is fixed for a run: config, sizes, device, data on the device."""

    cfg: object
    n: int
    c: int
    dev: torch.device
    y: torch.Tensor  # (N,) labels trained on, on the device
    rank: int = 0
    world: int = 1
    T: Optional[torch.Tensor] = None
    T_mask: Optional[torch.Tensor] = None  # (N,) bool: where T applies (None: everywhere)
    X: Optional[torch.Tensor] = None  # features (frozen / embeddings)
    store: object = None  # ImageStore (finetune)
    size: int = 0
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    valid: Optional[torch.Tensor] = None  # indices of the trainable samples
    amp_dtype: Optional[torch.dtype] = None


@dataclass
class TrainState:
    """What changes while training, and what a checkpoint saves."""

    net: torch.nn.Module
    opt: torch.optim.Optimizer
    rec: SEIRecorder
    weights: SampleWeights
    ddp_net: Optional[torch.nn.Module] = None
    scaler: Optional[object] = None
    epoch: int = 0  # the next epoch to train
    metrics: dict = field(default_factory=lambda: {"train_accuracy": [], "train_loss": []})

    @property
    def model(self):
        return self.ddp_net if self.ddp_net is not None else self.net


def shard(perm, rank, world):
    """DistributedSampler semantics: pad to a multiple of world by wrapping, take rank::world.

    Returns the shard and how many of its entries are real: the padded (repeated) entries
    come last in every shard; they are trained on but not recorded, so that every sample is
    recorded exactly once per epoch.
    """
    n = perm.numel()
    total = int(math.ceil(n / world)) * world
    pad = total - n
    full = torch.cat([perm, perm[:pad]]) if pad else perm
    return full[rank::world], len(range(rank, n, world))


def _record(run: Run, st: TrainState, epoch, ids, logits):
    """Hand the recorder a block of an epoch's logits (on a GPU, a host transfer per block)."""
    ids_np = ids.cpu().numpy()
    lg = logits.detach().float().cpu().numpy()
    lab = run.y[ids].cpu().numpy()
    st.rec.update(ids_np, lg, lab, from_logits=True)
    if run.cfg.on_record is not None:  # its own copy: the block is reused for the next rows
        run.cfg.on_record(epoch, ids_np, lg.copy(), lab)


def _reduce_metrics(run: Run, loss_sum, correct, count):
    t = torch.stack([loss_sum.double().cpu(), correct.double().cpu(), torch.tensor(float(count), dtype=torch.float64)])
    if run.world > 1:
        import torch.distributed as dist

        if run.dev.type == "cuda":
            t = t.to(run.dev)
        dist.all_reduce(t)
        t = t.cpu()
    cnt = max(float(t[2]), 1.0)
    return float(t[0]) / cnt, float(t[1]) / cnt


def _step(run: Run, st: TrainState, logits, idx):
    """Loss, backward and optimizer step (with the fp16 gradient scaler when there is one)."""
    loss, per = loss_terms(logits, run.y[idx], weights=st.weights.of(idx), T=run.T,
                           t_mask=None if run.T_mask is None else run.T_mask[idx])
    st.opt.zero_grad(set_to_none=True)
    if st.scaler is not None:
        st.scaler.scale(loss).backward()
        st.scaler.step(st.opt)
        st.scaler.update()
    else:
        loss.backward()
        st.opt.step()
    return per.detach()


# ----------------------------------------------------------------------------- epochs
#: Rows of logits handed to the recorder at a time: an epoch's logits are never held whole
#: (at 1.28e6 x 1,000 they would be 5 GB), and on a GPU this is one host transfer per block.
RECORD_ROWS = 1 << 16


def run_epoch(run: Run, st: TrainState, epoch: int):
    """Train one epoch and record it; returns ``(mean loss, accuracy)`` over the trained samples."""
    g = torch.Generator().manual_seed(rng_seed(run.cfg.seed, epoch))
    perm = run.valid[torch.randperm(run.valid.numel(), generator=g).to(run.valid.device)]
    mine, real = shard(perm, run.rank, run.world)

    def record(lo, hi, logits):  # rows lo..hi of the shard; its padded tail is not recorded
        hi = min(hi, real)
        if hi > lo:
            _record(run, st, epoch, mine[lo:hi], logits[:hi - lo])

    during = record if run.cfg.record == "train" else None
    if run.X is not None:
        loss_sum, correct = _features_epoch(run, st, mine, during)
    else:
        loss_sum, correct = _images_epoch(run, st, mine, g, during)
    if during is None:
        for lo in range(0, real, RECORD_ROWS):
            record(lo, lo + RECORD_ROWS, _eval_logits(run, st, mine[lo:min(lo + RECORD_ROWS, real)]))
    return _reduce_metrics(run, loss_sum, correct, mine.numel())


def _train_batches(run: Run, st: TrainState, order, batches, record):
    """Train on ``batches`` (pairs of a slice of ``order`` and a function giving its logits);
    ``record(lo, hi, logits)`` receives the logits of ``order[lo:hi]`` in blocks of about
    ``RECORD_ROWS`` rows (None: not recorded). Loss sum and correct count stay on the device."""
    n = order.numel()
    cap = min(n, max(RECORD_ROWS, run.cfg.batch_size))
    block = torch.empty(cap, run.c, device=run.dev) if record is not None else None
    lo = 0
    loss_sum = torch.zeros((), device=run.dev)
    correct = torch.zeros((), device=run.dev)
    st.model.train()
    for sl, forward in batches:
        hi = min(sl.stop, n)
        if record is not None and hi - lo > cap:
            record(lo, sl.start, block[:sl.start - lo])
            lo = sl.start
        idx = order[sl].to(run.dev)
        logits = forward()
        per = _step(run, st, logits, idx)
        with torch.no_grad():
            if record is not None:
                block[sl.start - lo:hi - lo] = logits.detach().float()
            loss_sum += per.sum()
            correct += (logits.detach().argmax(1) == run.y[idx]).sum()
    if record is not None and n > lo:
        record(lo, n, block[:n - lo])
    return loss_sum, correct


def _features_epoch(run: Run, st: TrainState, order, record):
    net, pre, bs = st.model, st.net.pre_normalized, run.cfg.batch_size

    def batches():
        for s in range(0, order.numel(), bs):
            sl = slice(s, s + bs)
            yield sl, (lambda sl=sl: net(run.X.index_select(0, order[sl]), normalized_input=pre))

    return _train_batches(run, st, order, batches(), record)


def _images_epoch(run: Run, st: TrainState, order, g, record):
    net = st.model

    def forward(xb):
        x = normalize(random_resized_crop_flip(xb, run.size, g), run.mean, run.std)
        with torch.autocast(run.dev.type, dtype=run.amp_dtype or torch.bfloat16, enabled=run.amp_dtype is not None):
            return net(x)

    batches = ((sl, (lambda xb=xb: forward(xb))) for sl, xb in run.store.batches(order, run.cfg.batch_size))
    return _train_batches(run, st, order, batches, record)


def finetuned_features(run: Run, st: TrainState) -> np.ndarray:
    """The trained image tower's features of every readable image (eval mode, no augmentation);
    rows of unreadable images are NaN."""
    visual = st.net.visual
    was = visual.training
    visual.eval()
    order = run.valid
    parts = []
    with torch.no_grad():
        for _, xb in run.store.batches(order, 2 * run.cfg.batch_size):
            x = normalize(resize(xb.float(), run.size), run.mean, run.std)
            with torch.autocast(run.dev.type, dtype=run.amp_dtype or torch.bfloat16, enabled=run.amp_dtype is not None):
                parts.append(visual(x).float())
    visual.train(was)
    out = torch.cat(parts)
    feats = np.full((run.n, out.shape[1]), np.nan, dtype=np.float32)
    feats[order.cpu().numpy()] = out.cpu().numpy()
    return feats


def _eval_logits(run: Run, st: TrainState, order):
    """A separate pass in eval mode (``record="eval"``): no augmentation."""
    base = st.net
    base.eval()
    out = torch.empty(order.numel(), run.c, device=run.dev)
    with torch.no_grad():
        if run.X is not None:
            for s in range(0, order.numel(), 8192):
                out[s:s + 8192] = base(run.X[order[s:s + 8192]], normalized_input=base.pre_normalized)
        else:
            for sl, xb in run.store.batches(order, 2 * run.cfg.batch_size):
                x = normalize(resize(xb.float(), run.size), run.mean, run.std)
                with torch.autocast(run.dev.type, dtype=run.amp_dtype or torch.bfloat16,
                                    enabled=run.amp_dtype is not None):
                    out[sl] = base(x).float()
    base.train()
    return out
