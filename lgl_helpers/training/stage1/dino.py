"""DINO self-distillation as a Stage I method (``stage1_method="dino"``): projection head, loss with the
teacher's centre, schedules and the collapse diagnosis (docs/dino.md).

In the manner of wespeaker's ``examples/voxceleb/v3/dino`` (after Caron et al., ICCV 2021): a student
and a teacher ECAPA-TDNN, each followed by a projection head (MLP → bottleneck → L2 normalisation →
weight-normalised linear layer of ``out_dim`` outputs). The teacher sees the global crops of an
utterance, the student every global and local crop; the student learns to predict, for each of its
crops, the teacher's output distribution on every *other* global crop. The teacher gets no gradient:
after each step it becomes an exponential moving average of the student (momentum on a cosine
schedule towards 1). Two mechanisms keep the teacher from collapsing: centring (a running mean of its
outputs is subtracted, which pushes towards uniform outputs) and sharpening (a low temperature, warmed
up from 0.04 to 0.07, which pushes towards one-hot outputs).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lgl_helpers.core import distributed

# Collapse thresholds, as fractions of log(out_dim) (the entropy of a uniform output; docs/dino.md).
UNIFORM_FRACTION = 0.95  # per-utterance teacher entropy above it: every output is near uniform
ONE_DIMENSION_FRACTION = 0.05  # entropy of the batch-mean teacher output below it: all utterances on one dimension


class WeightNormLinear(nn.Module):
    """``x @ (g · v / ‖v‖)ᵀ`` with one norm per output row (Salimans & Kingma's weight normalisation).

    ``fixed_norm``: ``g`` stays 1 (a buffer), so each output is the cosine of x with a learned
    direction times ``‖x‖``: DINO's ``norm_last_layer``, which keeps training stable.
    """

    def __init__(self, in_dim: int, out_dim: int, fixed_norm: bool = True):
        super().__init__()
        self.direction = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.direction, a=math.sqrt(5))  # nn.Linear's initialisation
        gain = torch.ones(out_dim, 1)
        if fixed_norm:
            self.register_buffer("gain", gain)
        else:
            self.gain = nn.Parameter(gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, in_dim) → (N, out_dim)."""
        return x @ (self.gain * F.normalize(self.direction, dim=1)).t()


class DinoHead(nn.Module):
    """DINO's projection head: ``layers`` linear layers (BatchNorm and GELU between them) down to a
    ``bottleneck_dim`` code, L2-normalised, then a weight-normalised layer of ``out_dim`` logits.

    emb (N, 192) → logits (N, out_dim). Linear weights start truncated-normal with std 0.02, biases at 0.
    """

    def __init__(
        self,
        in_dim: int = 192,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        layers: int = 3,
        fixed_norm: bool = True,
    ):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [bottleneck_dim]
        blocks: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            blocks.append(nn.Linear(d_in, d_out))
            if i < layers - 1:
                blocks += [nn.BatchNorm1d(d_out), nn.GELU()]
        self.mlp = nn.Sequential(*blocks)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, fixed_norm)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(emb), dim=-1))


def _entropy(prob: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of a probability matrix (N, K) → (N,)."""
    return -(prob * torch.log(prob.clamp_min(1e-12))).sum(dim=-1)


class DinoLoss(nn.Module):
    """Cross-entropy from the centred, sharpened teacher to the student, and the teacher's centre.

    ``center`` (1, K) is a buffer: saved with the loss's state dict, moved with it, and updated after
    every step as ``m · center + (1 − m) · mean of the teacher's logits`` over the global batch (the
    mean is all-reduced over ranks, so every rank keeps the same centre).
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp = float(student_temp)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor, n_global: int, teacher_temp: float
    ) -> tuple[torch.Tensor, dict]:
        """student: (n_crops·B, K) logits, the global crops' B rows first, crop by crop; teacher:
        (n_global·B, K) logits of the global crops (no gradient).

        Returns (loss, stats): the loss is the mean over every (teacher crop i, student crop v ≠ i)
        pair of the batch-mean cross-entropy ``−Σ_k q_ik log p_vk``; stats are ``teacher_entropy``
        (mean per-row entropy of q), ``teacher_mean_entropy`` (entropy of q's batch mean, on this
        rank), ``student_entropy`` and ``center_norm`` (before this step's update). Does not update the
        centre: :meth:`update_center` does, after the step.
        """
        teacher = teacher.detach().float()
        q = F.softmax((teacher - self.center) / teacher_temp, dim=-1)
        log_p = F.log_softmax(student.float() / self.student_temp, dim=-1)
        batch = teacher.shape[0] // n_global
        q_crops, p_crops = q.split(batch), log_p.split(batch)
        total, terms = 0.0, 0
        for i, q_i in enumerate(q_crops):
            for v, log_p_v in enumerate(p_crops):
                if v == i:  # the same crop seen by both networks teaches nothing
                    continue
                total = total + (-(q_i * log_p_v).sum(dim=-1)).mean()
                terms += 1
        with torch.no_grad():
            stats = {
                "teacher_entropy": float(_entropy(q).mean()),
                "teacher_mean_entropy": float(_entropy(q.mean(dim=0, keepdim=True))[0]),
                "student_entropy": float(_entropy(log_p.exp()).mean()),
                "center_norm": float(self.center.norm()),
            }
        return total / terms, stats

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """teacher: (n, K) this rank's teacher logits; the centre moves towards their mean over all ranks."""
        total = teacher.detach().float().sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher.shape[0]), device=total.device)
        if distributed.active():
            torch.distributed.all_reduce(total)
            torch.distributed.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(total / count, alpha=1 - self.center_momentum)


# ----------------------------------------------------------------------------------------------
# Schedules: pure functions of the step, so a checkpoint's step restores every one of them
# ----------------------------------------------------------------------------------------------


def cosine_value(step: int, total: int, start: float, end: float, warmup: int = 0, warmup_start: float = 0.0) -> float:
    """Value at ``step`` (0-based) of ``total``: linear from ``warmup_start`` to ``start`` over the first
    ``warmup`` steps, then half a cosine from ``start`` down (or up) to ``end`` at the last step
    (wespeaker's and DINO's ``cosine_scheduler``)."""
    if step < warmup:
        return warmup_start + (start - warmup_start) * step / max(warmup - 1, 1) if warmup > 1 else start
    span = total - warmup
    phase = (step - warmup) / span if span > 0 else 0.0
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * phase))


def teacher_temperature(epoch: int, epochs: int, warmup_temp: float, temp: float, warmup_ratio: float) -> float:
    """The teacher's temperature in (1-based) ``epoch``: linear from ``warmup_temp`` to ``temp`` over the
    first ``int(epochs · warmup_ratio)`` epochs, then ``temp`` (wespeaker's ``teacher_temp_schedule``)."""
    warmup = int(epochs * warmup_ratio)
    if epoch - 1 < warmup:
        return float(np.linspace(warmup_temp, temp, warmup)[epoch - 1])
    return float(temp)


# ----------------------------------------------------------------------------------------------
# Teacher update and the collapse diagnosis
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher ← momentum · teacher + (1 − momentum) · student, parameter by parameter.

    Buffers (BatchNorm's running statistics) are not averaged: the teacher's come from its own
    forward passes, as in wespeaker.
    """
    for p_teacher, p_student in zip(teacher.parameters(), student.parameters()):
        p_teacher.mul_(momentum).add_(p_student.detach(), alpha=1 - momentum)


def clip_per_parameter(parameters, max_norm: float) -> None:
    """Scale each parameter's gradient to a norm of at most ``max_norm`` (DINO's ``clip_gradients``,
    per tensor rather than over all of them). ``max_norm`` 0: no clipping."""
    if max_norm <= 0:
        return
    for p in parameters:
        if p.grad is not None:
            norm = p.grad.norm(2)
            p.grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))


def collapse_warning(record: dict, out_dim: int) -> str | None:
    """A warning sentence when an epoch's teacher statistics show collapse, else None.

    ``record`` holds the epoch means ``teacher_entropy`` (per-utterance entropy of the teacher's
    distribution) and ``teacher_mean_entropy`` (entropy of its batch mean). With ``log K`` the entropy
    of a uniform distribution over ``out_dim`` = K outputs:

    * per-utterance entropy ≥ 0.95 · log K: every utterance gets an almost uniform target (centring has
      won over sharpening); the student learns nothing from it;
    * batch-mean entropy ≤ 0.05 · log K: all utterances put their mass on the same few outputs
      (sharpening has won); the targets no longer tell utterances apart.

    A low per-utterance entropy alone is not collapse: each utterance sharply on its own output is
    what a trained teacher does.
    """
    log_k = math.log(out_dim)
    entropy, mean_entropy = record.get("teacher_entropy"), record.get("teacher_mean_entropy")
    if entropy is None or mean_entropy is None:
        return None
    if entropy >= UNIFORM_FRACTION * log_k:
        return (
            f"DINO teacher collapse (uniform) in epoch {record['epoch']}: teacher entropy {entropy:.2f} nats "
            f">= {UNIFORM_FRACTION} x log(out_dim) = {UNIFORM_FRACTION * log_k:.2f}; lower teacher_temp or raise "
            "center_momentum (slower centring)"
        )
    if mean_entropy <= ONE_DIMENSION_FRACTION * log_k:
        return (
            f"DINO teacher collapse (one dimension) in epoch {record['epoch']}: entropy of the batch-mean teacher "
            f"output {mean_entropy:.2f} nats <= {ONE_DIMENSION_FRACTION} x log(out_dim) = "
            f"{ONE_DIMENSION_FRACTION * log_k:.2f}; raise teacher_temp or lower center_momentum (faster centring)"
        )
    return None
