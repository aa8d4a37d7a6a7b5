"""Training objectives: Stage I contrastive loss and AAT discriminator, Stage II AAM-softmax with the loss gate.

docs/method.md, "Stage I" and "Stage II". Numbers equal the reference implementation's, except where its
README lists a defect: a batch in which no sample passes the gate gives a zero loss (no NaN, no
gradient), and accuracy under a gate counts the selected samples only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lgl_helpers.core import distributed


class ContrastiveLoss(nn.Module):
    """Supervised-contrastive style loss over two views with a learnable scale ``w`` and offset ``b``.

    The cosine similarity of every pair of the 2B embeddings is scaled as ``w·cos + b``; each
    embedding's positive is the other view of its utterance, the 2B-2 others are negatives, and the
    self-similarity is excluded from the softmax. ``b`` shifts all logits of a row equally, so, as in
    the reference, it receives no gradient; the reference's clamp of ``w`` discards its result, so
    ``w`` is used unclamped here too.
    """

    def __init__(self, init_w: float = 10.0, init_b: float = -5.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(init_w)))
        self.b = nn.Parameter(torch.tensor(float(init_b)))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, float]:
        """features: (B, 2, D) → (loss scalar tensor, top-1 % of the positive among the other 2B-1 similarities).

        In a distributed run ``features`` is this rank's share b of the global batch; every rank's
        embeddings are gathered (with their gradients) as negatives, and the loss is the mean over
        this rank's 2b rows, so the average over ranks (what DDP's gradient averaging optimises) is
        the loss of the whole batch in one process.
        """
        if features.dim() != 3 or features.shape[1] != 2:
            raise ValueError(f"features must be (batch, 2 views, dim), got shape {tuple(features.shape)}")
        local = features.shape[0]
        views = F.normalize(features, dim=2)
        view0 = distributed.all_gather_with_grad(views[:, 0])  # (B, D), rank order
        view1 = distributed.all_gather_with_grad(views[:, 1])
        batch = view0.shape[0]
        n = 2 * batch
        emb = torch.cat([view0, view1], dim=0)  # (2B, D): view 0 then view 1
        rows = torch.arange(local, device=features.device) + distributed.rank() * local
        rows = torch.cat([rows, rows + batch])  # this rank's rows of the 2B
        logits = (emb[rows] @ emb.t()) * self.w + self.b  # (2b, 2B)
        logits = logits.masked_fill(F.one_hot(rows, n).bool(), float("-inf"))  # no self-similarity
        positive = (rows + batch) % n
        loss = F.cross_entropy(logits, positive)
        with torch.no_grad():
            top1 = (logits.argmax(dim=1) == positive).float().mean().item() * 100.0
        return loss, top1


class AATDiscriminator(nn.Module):
    """Augmentation-type discriminator of AAT: (N, 384) pairs [emb_a, emb_b] → (N, 2) logits (1 = same augmentation).

    BN 384 → ReLU → Linear 512 → BN → ReLU → Linear 2; keys ``matcher.0.*``, ``matcher.1.*`` equal the
    reference ``AATNet`` ones.
    """

    def __init__(self, in_dim: int = 384, hidden: int = 512):
        super().__init__()
        self.matcher = nn.Sequential(
            nn.Sequential(nn.BatchNorm1d(in_dim), nn.ReLU(), nn.Linear(in_dim, hidden)),
            nn.Sequential(nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, 2)),
        )

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """pairs: (N, 384) → logits (N, 2)."""
        return self.matcher(pairs)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return -ctx.scale * grad_output, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity on the forward pass; multiplies the gradient by ``-scale`` on the backward pass (AAT)."""
    return _GradReverse.apply(x, float(scale))


@dataclass
class AAMOutput:
    """Result of :class:`AAMSoftmax` for a batch of B samples.

    loss: scalar tensor, mean cross-entropy of the selected samples (a zero that backpropagates zero
    gradients when none is selected); n_selected: how many passed the gate; accuracy: top-1 % over
    the selected samples (0.0 when none); per_sample: (B,) detached cross-entropy of every sample,
    for the loss histogram; selected: (B,) bool, the samples whose loss ≤ gate.
    """

    loss: torch.Tensor
    n_selected: int
    accuracy: float
    per_sample: torch.Tensor
    selected: torch.Tensor


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax over ``n_classes`` pseudo labels, with the LGL loss gate.

    ``weight``: (n_classes, emb_dim), xavier-normal initialised. margin 0.2 and scale 30 as in the method.
    """

    def __init__(self, n_classes: int, emb_dim: int = 192, margin: float = 0.2, scale: float = 30.0):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes={n_classes} must be at least 2")
        self.n_classes = n_classes
        self.margin = margin
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(n_classes, emb_dim))
        nn.init.xavier_normal_(self.weight, gain=1)
        self.cos_m = math.cos(margin)
        self.sin_m = math.sin(margin)
        # Beyond θ + m > π, cos(θ + m) stops decreasing; the usual linear fallback keeps the target logit monotonic.
        self.th = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def logits(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x: (B, emb_dim), labels: (B,) int64 → scaled logits (B, n_classes) with the margin on each target class."""
        cosine = F.linear(F.normalize(x), F.normalize(self.weight))
        sine = torch.sqrt((1.0 - cosine * cosine).clamp(0, 1))
        phi = cosine * self.cos_m - sine * self.sin_m
        phi = torch.where((cosine - self.th) > 0, phi, cosine - self.mm)
        one_hot = torch.zeros_like(cosine).scatter_(1, labels.view(-1, 1), 1)
        return (one_hot * phi + (1.0 - one_hot) * cosine) * self.scale

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor, gate: float = float("inf"), keep: torch.Tensor | None = None
    ) -> AAMOutput:
        """x: (B, emb_dim), labels: (B,) pseudo labels in [0, n_classes); samples with loss ≤ ``gate`` count.

        ``gate``: ``inf`` (phase T, every sample) or a phase L gate, finite and ≥ 0 as the Stage II config
        and the gate overrides guarantee (:func:`lgl_helpers.config.check_gate`). ``keep``: (B,) bool,
        the samples that count when the selection was made beforehand (``gate`` is then not used).
        """
        if x.dim() != 2 or labels.shape != (x.shape[0],):
            raise ValueError(f"x must be (B, D) and labels (B,), got {tuple(x.shape)} and {tuple(labels.shape)}")
        labels = labels.long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.n_classes):
            raise ValueError(
                f"labels must lie in [0, {self.n_classes}), got range [{int(labels.min())}, {int(labels.max())}]"
            )
        logits = self.logits(x, labels)
        per_sample = F.cross_entropy(logits, labels, reduction="none")
        if keep is not None and keep.shape != labels.shape:
            raise ValueError(f"keep must be (B,) = {tuple(labels.shape)}, got {tuple(keep.shape)}")
        selected = per_sample.detach() <= gate if keep is None else keep.to(per_sample.device, torch.bool)
        n_selected = int(selected.sum())
        # torch.where passes zero gradient to rejected samples; with none selected the loss is an exact
        # zero connected to the graph, unlike the reference's 0/0.
        loss = torch.where(selected, per_sample, torch.zeros_like(per_sample)).sum() / max(n_selected, 1)
        with torch.no_grad():
            correct = (logits.argmax(dim=1) == labels) & selected
            accuracy = 100.0 * int(correct.sum()) / n_selected if n_selected else 0.0
        return AAMOutput(loss, n_selected, accuracy, per_sample.detach(), selected)
