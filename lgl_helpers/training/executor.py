"""One pass over a loader for each stage: the batch steps of Stage I and Stage II.

The stages' modules decide what an epoch is for (which models, which gate, when to evaluate, what
to save); the functions here only run the batches and report the epoch's statistics.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lgl_helpers import runs
from lgl_helpers.core.data import stage1_views, stage2_inputs
from lgl_helpers.core.losses import AAMSoftmax, AATDiscriminator, ContrastiveLoss, grad_reverse
from lgl_helpers.core.models import ECAPATDNN

STAGE1_SUMS = ("loss", "contrastive_loss", "top1", "aat_loss", "disc_loss", "disc_acc")


@dataclass
class Stage1Models:
    """Stage I's trained parts: encoder, contrastive loss (w, b), AAT discriminator and their optimizers."""

    encoder: ECAPATDNN
    loss_fn: ContrastiveLoss
    aat: AATDiscriminator
    optimizer: torch.optim.Optimizer
    aat_optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.StepLR

    def train(self) -> None:
        for module in (self.encoder, self.loss_fn, self.aat):
            module.train()


def stage1_step(models: Stage1Models, batch: dict, aat_weight: float, device, autocast) -> dict:
    """One Stage I batch: the discriminator's update, then the encoder's. Returns the batch's statistics.

    batch: from :class:`lgl_helpers.core.data.Stage1Dataset`; views A, S, P are (B, T) waveforms and
    their embeddings (B, 192). The discriminator sees pairs (2B, 384): [A, S] labelled 1 (same
    augmentation) and [A, P] labelled 0.
    """
    view_a, view_s, view_p = stage1_views(batch, device)
    with autocast():
        emb_a, emb_s, emb_p = (models.encoder(v).float() for v in (view_a, view_s, view_p))  # each (B, 192)
    batch_size = emb_a.shape[0]
    labels = torch.cat([torch.ones(batch_size), torch.zeros(batch_size)]).long().to(device)
    pairs = torch.cat([torch.cat([emb_a, emb_s], 1), torch.cat([emb_a, emb_p], 1)], 0)  # (2B, 384)

    # 1. discriminator: same augmentation [A, S] → 1, different [A, P] → 0, on detached embeddings
    disc_logits = models.aat(pairs.detach())
    disc_loss = F.cross_entropy(disc_logits, labels)
    models.aat_optimizer.zero_grad(set_to_none=True)
    disc_loss.backward()
    models.aat_optimizer.step()

    # 2. encoder: contrastive on (A, P) + aat_weight · discriminator CE through gradient reversal
    aat_loss = F.cross_entropy(models.aat(grad_reverse(pairs)), labels)
    contrastive, top1 = models.loss_fn(torch.stack([emb_a, emb_p], dim=1))
    loss = contrastive + aat_weight * aat_loss
    models.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    models.optimizer.step()
    return {
        "batch_size": batch_size,
        "loss": float(loss.detach()),
        "contrastive_loss": float(contrastive.detach()),
        "top1": top1,
        "aat_loss": float(aat_loss.detach()),
        "disc_loss": float(disc_loss.detach()),
        "disc_acc": float((disc_logits.argmax(1) == labels).float().mean()) * 100,
    }


def stage1_epoch(
    models: Stage1Models, loader, aat_weight: float, device, bf16: bool, desc: str, max_batches: int | None = None
) -> tuple[dict, int, bool]:
    """One Stage I epoch of at most ``max_batches`` batches (None: the whole loader).

    Returns (the mean of each of :data:`STAGE1_SUMS` over the batches, the number of batches, whether
    the epoch was completed). ``bf16``: the encoder's forward pass in bfloat16 autocast (CUDA only).
    """
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    models.train()
    sums = dict.fromkeys(STAGE1_SUMS, 0.0)
    n_batches = 0
    completed = True
    tic = time.perf_counter()
    bar = runs.progress(loader, desc=desc, total=len(loader), unit="batch", leave=False)
    for batch in bar:
        if max_batches is not None and n_batches >= max_batches:
            completed = False
            break
        stats = stage1_step(models, batch, aat_weight, device, autocast)
        n_batches += 1
        for key in STAGE1_SUMS:
            sums[key] += stats[key]
        bar.set_postfix(
            loss=f"{sums['loss'] / n_batches:.3f}",
            top1=f"{sums['top1'] / n_batches:.1f}",
            aat=f"{sums['aat_loss'] / n_batches:.3f}",
            sps=f"{n_batches * stats['batch_size'] / (time.perf_counter() - tic):.0f}",
        )
    bar.close()
    means = {key: value / n_batches for key, value in sums.items()} if n_batches else sums
    return means, n_batches, completed


def stage2_epoch(
    encoder: ECAPATDNN,
    head: AAMSoftmax,
    optimizer,
    loader,
    gate: float,
    device,
    desc: str,
    after_step: Callable[[], None] | None = None,
) -> tuple[dict, dict]:
    """One Stage II epoch with loss gate ``gate`` (``inf`` = no gate, phase T); ``after_step`` runs
    after every optimizer step (the weight average's update).

    Returns (stats, per-sample arrays): arrays ``index`` (n,) int64 training-list index,
    ``per_sample_loss`` (n,) float32 and ``selected`` (n,) bool. A batch in which no sample passes
    the gate is counted in ``skipped_batches`` and makes no update.
    """
    encoder.train()
    head.train()
    index, losses, selected = [], [], []
    sum_loss = sum_correct = 0.0
    n_selected_total = n_samples = skipped = 0
    bar = runs.progress(loader, desc=desc, total=len(loader), unit="batch", leave=False)
    for batch in bar:
        wave, labels = stage2_inputs(batch, device)
        out = head(encoder(wave), labels, gate)  # encoder: (B, T) → (B, 192)
        index.append(batch["index"].numpy())
        losses.append(out.per_sample.float().cpu().numpy())
        selected.append(out.selected.cpu().numpy())
        n_samples += labels.shape[0]
        if out.n_selected == 0:
            skipped += 1
            continue
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        n_selected_total += out.n_selected
        sum_loss += float(out.loss.detach()) * out.n_selected
        sum_correct += out.accuracy * out.n_selected
        bar.set_postfix(loss=f"{sum_loss / n_selected_total:.3f}", acc=f"{sum_correct / n_selected_total:.1f}")
    bar.close()
    if n_samples == 0:
        raise ValueError("the Stage II loader gave no batch: batch_size is larger than the training list")
    stats = {
        "loss": sum_loss / n_selected_total if n_selected_total else 0.0,
        "accuracy": sum_correct / n_selected_total if n_selected_total else 0.0,
        "n_samples": n_samples,
        "n_selected": n_selected_total,
        "fraction_selected": n_selected_total / n_samples,
        "skipped_batches": skipped,
    }
    arrays = {
        "index": np.concatenate(index).astype(np.int64),
        "per_sample_loss": np.concatenate(losses).astype(np.float32),
        "selected": np.concatenate(selected).astype(bool),
    }
    return stats, arrays
