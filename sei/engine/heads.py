"""Classifier heads, the fine-tuning network, and the one training loss.

``loss_terms`` is the only loss of the engine: every path (heads on features, fine-tuning,
DDP) calls it and back-propagates with autograd, so a change to the loss applies everywhere::

    per_i = CE(softmax(logits_i), y_i)                 (or -log (softmax(logits_i) @ T)[y_i])
    loss  = mean_i w_i * per_i

(A hand-written closed-form step for the cosine head used to bypass it; measured on 50,000 x
1280 features it was 1.1x faster than autograd, short of the 2x that would justify a second
gradient path, so it went.)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..constants import EPS
from ..validation import to_numpy

__all__ = ["PromptHead", "LinearHead", "MLPHead", "FinetuneNet", "loss_terms", "extend_transition",
           "build_head", "build_finetune", "prepare_features", "MAX_LOGIT_SCALE"]

MAX_LOGIT_SCALE = 100.0


class PromptHead(nn.Module):
    """Cosine (or raw) prompt classifier over fixed-size features.

    ``logits = scale * normalize(proj(x)) @ normalize(class_emb).T``

    Parameters
    ----------
    in_dim : int
        D, the feature width.
    num_outputs : int
        C = K (+1 with the auxiliary class).
    class_init : torch.Tensor, shape (C, E), optional
        Initial class embeddings (text-tower prompt features); random otherwise.
    proj_dim : int or None
        E. None: no projection when ``class_init`` matches D (CLIP space) or no init is given.
    logit_scale : "learned" | "raw" | float
    init_logit_scale : float
        log of the initial scale for "learned" (CLIP's 1/0.07 by default); raw value for "raw".
    """

    def __init__(self, in_dim, num_outputs, *, class_init=None, proj_dim=None, logit_scale="learned",
                 init_logit_scale=math.log(1 / 0.07), learn_class_emb=True):
        super().__init__()
        emb_dim = proj_dim or (class_init.shape[1] if class_init is not None else in_dim)
        if proj_dim is None and emb_dim != in_dim:
            proj_dim = emb_dim
        self.proj = None
        if proj_dim is not None:
            self.proj = nn.Linear(in_dim, emb_dim, bias=False)
            if emb_dim == in_dim:
                nn.init.eye_(self.proj.weight)
        if class_init is None:
            class_init = torch.randn(num_outputs, emb_dim) / math.sqrt(emb_dim)
        self.class_emb = nn.Parameter(class_init.detach().clone().float(), requires_grad=learn_class_emb)
        self.mode = logit_scale
        self.center = False
        self.pre_normalized = False
        if logit_scale == "learned" or logit_scale == "raw":
            self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        else:
            self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))

    def scale(self):
        if self.mode == "learned":
            return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        return self.logit_scale

    def forward(self, x, *, normalized_input=False):
        if self.proj is not None:
            x = self.proj(x)
            normalized_input = False
        t = self.class_emb
        if self.mode == "raw":  # authors' code: raw parameter, unnormalised features
            return self.logit_scale * x @ t.t()
        if not normalized_input:
            x = F.normalize(x, dim=-1)
        return self.scale() * (x @ F.normalize(t, dim=-1).t())


class LinearHead(nn.Module):
    """Softmax regression on standardised features: ``logits = x @ W.T + b``, zero init.

    The light head of ``head="linear"`` (frozen / embeddings modes): features are
    standardised once per run (mean 0, unit variance per dimension over the readable
    samples), no prompts, no temperature. On the bundled CIFAR-10N sample it ranks
    mislabeled images better than the cosine prompt head at 10 epochs (see README).
    """

    proj = None
    mode = "linear"

    def __init__(self, in_dim, num_outputs):
        super().__init__()
        self.fc = nn.Linear(in_dim, num_outputs)
        self.pre_normalized = False
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x, *, normalized_input=False):
        return self.fc(x)


class MLPHead(LinearHead):
    """Fully-connected layers on standardised features: ``hidden`` widths with ReLU, then the
    class layer (``len(hidden) + 1`` FC layers; the ALC paper's classifier is a frozen backbone
    with four). PyTorch's default initialisation (a zero init would leave the hidden layers
    symmetric); standardised like :class:`LinearHead`, so a predictor treats both alike."""

    mode = "mlp"

    def __init__(self, in_dim, num_outputs, hidden=(512, 256, 128)):
        nn.Module.__init__(self)
        dims = [int(in_dim), *(int(h) for h in hidden)]
        if any(d < 1 for d in dims[1:]):
            raise ValueError(f"hidden widths must be positive integers, got {tuple(hidden)!r}")
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(dims[-1], num_outputs)
        self.pre_normalized = False

    def forward(self, x, *, normalized_input=False):
        return self.fc(self.body(x))


class FinetuneNet(nn.Module):
    """Image tower + prompt head: the network of ``mode="finetune"``."""

    def __init__(self, visual, head):
        super().__init__()
        self.visual = visual
        self.head = head

    def forward(self, x):
        return self.head(self.visual(x).float())


# ----------------------------------------------------------------------------- the loss
def extend_transition(T, c: int, k: int) -> torch.Tensor:
    """Validate a (K, K) row-stochastic noise transition and pad it to C classes (identity on aux)."""
    T = to_numpy(T, "transition_matrix")
    if T.shape != (k, k):
        raise ValueError(f"transition_matrix must have shape (K, K) = ({k}, {k}) for the {k} classes, got "
                         f"{T.shape}; row i is p(given label | true class i).")
    T = torch.as_tensor(np.asarray(T, dtype=np.float32))
    if not torch.isfinite(T).all() or (T < 0).any() or not torch.allclose(T.sum(1), torch.ones(k), atol=1e-3):
        raise ValueError("transition_matrix must be row-stochastic (finite, non-negative rows summing to 1).")
    if c > k:
        E = torch.eye(c)
        E[:k, :k] = T
        T = E
    return T


def loss_terms(logits, y, *, weights=None, T=None, t_mask=None):
    """The engine's one loss: ``(mean weighted loss, per-sample loss (B,))`` in float32.

    ``t_mask`` (B,) bool: the samples ``T`` applies to (the others: plain CE, e.g. labels
    already verified by an oracle); None: all of them.
    """
    logits = logits.float()
    if T is not None:
        p = torch.softmax(logits, dim=-1) @ T
        per = F.nll_loss(torch.log(p.clamp_min(EPS)), y, reduction="none")
        if t_mask is not None:
            per = torch.where(t_mask, per, F.cross_entropy(logits, y, reduction="none"))
    else:
        per = F.cross_entropy(logits, y, reduction="none")
    loss = (per * weights).mean() if weights is not None else per.mean()
    return loss, per


# ----------------------------------------------------------------------------- builders
def _init_logit_scale(bundle):
    if bundle is not None and bundle.clip is not None and hasattr(bundle.clip, "logit_scale"):
        return float(bundle.clip.logit_scale.detach().reshape(-1)[0])
    return math.log(1 / 0.07)


def build_head(cfg, features, c, class_init, bundle):
    """The head of the frozen / embeddings modes for ``cfg.head``."""
    if cfg.head == "linear":
        return LinearHead(features.shape[1], c)
    d = features.shape[1]
    proj_dim = cfg.proj_dim
    if class_init is not None and class_init.shape[1] != d and proj_dim is None:
        proj_dim = class_init.shape[1]
    head = PromptHead(d, c, class_init=class_init, proj_dim=proj_dim, logit_scale=cfg.logit_scale,
                      init_logit_scale=_init_logit_scale(bundle), learn_class_emb=cfg.learn_class_emb)
    head.center = bool(class_init is None) if cfg.center_features == "auto" else bool(cfg.center_features)
    return head


def build_finetune(cfg, bundle, c, class_init):
    """Image tower + prompt head; a CLIP model's text tower is frozen (prompts encoded once)."""
    if bundle.clip is not None:
        for p in bundle.clip.parameters():
            p.requires_grad_(False)
        for p in bundle.visual.parameters():
            p.requires_grad_(True)
    head = PromptHead(bundle.embed_dim, c, class_init=class_init, logit_scale=cfg.logit_scale,
                      init_logit_scale=_init_logit_scale(bundle),
                      learn_class_emb=cfg.learn_class_emb if class_init is None else False)
    visual = bundle.visual.clip.visual if bundle.clip is not None else bundle.visual
    return FinetuneNet(visual, head)


def prepare_features(features, valid, head, dev):
    """Fixed features on the device, standardised (linear head) or centred / normalised (cosine head) once."""
    x = torch.from_numpy(np.nan_to_num(features, nan=0.0)).to(dev)
    ok = torch.from_numpy(valid).to(dev)
    if isinstance(head, LinearHead):  # standardise over the readable samples
        # kept on the head (plain attributes, not in its state dict): what a predictor applies to new features
        head.input_mean = x[ok].mean(0, keepdim=True)
        head.input_std = x[ok].std(0, unbiased=False, keepdim=True) + 1e-6
        x = (x - head.input_mean) / head.input_std
        return x.contiguous()
    if head.center:
        x = x - x[ok].mean(0, keepdim=True)
    head.pre_normalized = head.proj is None and head.mode != "raw"
    if head.pre_normalized:
        x = F.normalize(x, dim=-1)  # fixed features: normalise once, not every step
    return x.contiguous()
