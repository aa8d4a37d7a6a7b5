"""One pass over a loader for each stage: the batch steps of Stage I and Stage II.

The stages' modules decide what an epoch is for (which models, which gate, when to evaluate, what
to save); the functions here only run the batches and report the epoch's statistics. With a
:class:`MidEpoch` they also write mid-epoch checkpoints and continue an epoch from one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lgl_helpers import progress_log
from lgl_helpers.core import distributed
from lgl_helpers.core.data import stage1_views, stage2_inputs
from lgl_helpers.core.embed import autocast_context
from lgl_helpers.core.losses import AAMSoftmax, AATDiscriminator, ContrastiveLoss, grad_reverse
from lgl_helpers.core.models import ECAPATDNN
from lgl_helpers.training.state import restore_rng
from lgl_helpers.training.step_checkpoints import StepCheckpoints

STAGE1_SUMS = ("loss", "contrastive_loss", "top1", "aat_loss", "disc_loss", "disc_acc")
# The progress bar's numbers need the device's running sums: read every this many batches, not every batch.
POSTFIX_EVERY = 10


def enable_tf32(device: torch.device) -> None:
    """TF32 matmuls and cuDNN convolutions for training on CUDA GPUs (Ampere and later), several times
    faster than float32 at the precision of the gradients' noise; evaluation turns them off again
    (:func:`lgl_helpers.core.embed.embed_files`)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


class ThreeViews(nn.Module):
    """The encoder on views A, S and P, each its own forward pass (own BatchNorm batch) as in the
    reference, inside one module call so that DDP sees one forward per backward."""

    def __init__(self, encoder: ECAPATDNN):
        super().__init__()
        self.encoder = encoder

    def forward(self, view_a, view_s, view_p) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each view (B, T) → its embeddings (B, 192)."""
        return tuple(self.encoder(v) for v in (view_a, view_s, view_p))


@dataclass
class Stage1Models:
    """Stage I's trained parts: encoder, contrastive loss (w, b), AAT discriminator and their optimizers.

    ``views``, ``contrastive`` and ``discriminator`` are what a step calls: the same modules, under
    DDP in a distributed run (:func:`parallelise`); the plain ones are saved and evaluated.
    """

    encoder: ECAPATDNN
    loss_fn: ContrastiveLoss
    aat: AATDiscriminator
    optimizer: torch.optim.Optimizer
    aat_optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.StepLR
    views: nn.Module | None = None
    contrastive: nn.Module | None = None
    discriminator: nn.Module | None = None

    def __post_init__(self) -> None:
        self.views = self.views or ThreeViews(self.encoder)
        self.contrastive = self.contrastive or self.loss_fn
        self.discriminator = self.discriminator or self.aat

    def parallelise(self, device: torch.device, sync_batchnorm: bool = False) -> None:
        """Put the step's modules under DDP (nothing changes in one process)."""
        self.views = distributed.wrap(ThreeViews(self.encoder), device, sync_batchnorm)
        self.contrastive = distributed.wrap(self.loss_fn, device)
        self.discriminator = distributed.wrap(self.aat, device, sync_batchnorm)

    def train(self) -> None:
        for module in (self.encoder, self.loss_fn, self.aat):
            module.train()


@dataclass
class MidEpoch:
    """An epoch's mid-epoch checkpoints: ``checkpoints`` says when, ``write(partial)`` writes one.

    ``write`` runs on every rank with the same ``partial`` (the epoch's running totals, gathered over
    ranks, and ``batches`` done) and writes the checkpoint on rank 0, the RNG states captured then.
    ``resume``: the ``partial`` of the checkpoint this epoch continues from, with its ``rng``; the
    caller has set the sampler to skip its ``batches``. ``where`` names the epoch in log lines.
    """

    checkpoints: StepCheckpoints
    write: Callable[[dict], None]
    where: str
    resume: dict | None = None


def _batches(loader, mid: MidEpoch | None):
    """The loader's iterator, made before a resumed epoch's RNG states are restored: making it draws
    from torch's generator, as it did at the start of the interrupted epoch."""
    iterator = iter(loader)
    if mid is not None and mid.resume is not None:
        restore_rng(mid.resume["rng"])
    return iterator


def _carried(value):
    """A resumed epoch's running total on this rank: rank 0 carries the total gathered over ranks, the
    others start at 0, so that the epoch's final all-reduce counts it once."""
    return value if distributed.is_main() else type(value)(0)


def stage1_step(models: Stage1Models, batch: dict, aat_weight: float, device, autocast) -> dict:
    """One Stage I batch: the discriminator's update, then the encoder's. Returns the batch's statistics.

    batch: from :class:`lgl_helpers.core.data.Stage1Dataset`; views A, S, P are (B, T) waveforms and
    their embeddings (B, 192). The discriminator sees pairs (2B, 384): [A, S] labelled 1 (same
    augmentation) and [A, P] labelled 0. In a distributed run B is this rank's share of the batch.
    """
    view_a, view_s, view_p = stage1_views(batch, device)
    with autocast():
        emb_a, emb_s, emb_p = (emb.float() for emb in models.views(view_a, view_s, view_p))  # each (B, 192)
    batch_size = emb_a.shape[0]
    labels = torch.cat([torch.ones(batch_size), torch.zeros(batch_size)]).long().to(device)
    pairs = torch.cat([torch.cat([emb_a, emb_s], 1), torch.cat([emb_a, emb_p], 1)], 0)  # (2B, 384)

    # 1. discriminator: same augmentation [A, S] → 1, different [A, P] → 0, on detached embeddings
    disc_logits = models.discriminator(pairs.detach())
    disc_loss = F.cross_entropy(disc_logits, labels)
    models.aat_optimizer.zero_grad(set_to_none=True)
    disc_loss.backward()
    models.aat_optimizer.step()

    # 2. encoder: contrastive on (A, P) + aat_weight · discriminator CE through gradient reversal
    aat_loss = F.cross_entropy(models.discriminator(grad_reverse(pairs)), labels)
    contrastive, top1 = models.contrastive(torch.stack([emb_a, emb_p], dim=1))
    loss = contrastive + aat_weight * aat_loss
    models.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    models.optimizer.step()
    # float64 scalars left on the device (the epoch adds them up there): float() here would wait for it every batch.
    return {
        "batch_size": batch_size,
        "loss": loss.detach().double(),
        "contrastive_loss": contrastive.detach().double(),
        "top1": top1,
        "aat_loss": aat_loss.detach().double(),
        "disc_loss": disc_loss.detach().double(),
        "disc_acc": (disc_logits.argmax(1) == labels).float().mean().double() * 100,
    }


def stage1_epoch(
    models: Stage1Models,
    loader,
    aat_weight: float,
    device,
    precision: str,
    desc: str,
    max_batches: int | None = None,
    mid: MidEpoch | None = None,
) -> tuple[dict, int, bool]:
    """One Stage I epoch of at most ``max_batches`` batches in this call (None: the whole loader).

    Returns (the mean of each of :data:`STAGE1_SUMS` over the epoch's batches, the number of the
    epoch's batches done, resumed ones included, whether the epoch was completed). ``precision``: the
    encoder's forward pass in float32 or bfloat16 autocast (:func:`lgl_helpers.core.embed.autocast_context`).
    ``mid``: mid-epoch checkpoints (their ``partial``: ``batches``, ``world_size`` and the ``sums`` so far
    over ranks).
    """
    autocast = partial(autocast_context, precision, torch.device(device))
    models.train()
    resume = mid.resume if mid is not None else None
    start = resume["batches"] if resume else 0
    # The sums add one mean per rank and batch: another world size than the checkpoint's rescales them.
    rescale = distributed.world_size() / resume["world_size"] if resume else 1.0
    sums = {key: _carried(float(resume["sums"][key]) * rescale) if resume else 0.0 for key in STAGE1_SUMS}
    n_batches = start
    completed = True
    tic = time.perf_counter()

    def running() -> dict:
        return {
            "batches": n_batches,
            "world_size": distributed.world_size(),
            "sums": {key: distributed.all_reduce_sum(float(value)) for key, value in sums.items()},
        }

    bar = progress_log.progress(_batches(loader, mid), desc=desc, total=len(loader), unit="batch", leave=False)
    for batch in bar:
        if max_batches is not None and n_batches - start >= max_batches:
            completed = False
            break
        stats = stage1_step(models, batch, aat_weight, device, autocast)
        n_batches += 1
        for key in STAGE1_SUMS:
            sums[key] = sums[key] + stats[key]  # float64, as float(x) added up on the host
        if n_batches % POSTFIX_EVERY == 1:
            bar.set_postfix(
                loss=f"{float(sums['loss']) / n_batches:.3f}",
                top1=f"{float(sums['top1']) / n_batches:.1f}",
                aat=f"{float(sums['aat_loss']) / n_batches:.3f}",
                sps=f"{(n_batches - start) * stats['batch_size'] / (time.perf_counter() - tic):.0f}",
            )
        if mid is not None:
            mid.checkpoints.after_batch(mid.where, n_batches, lambda: mid.write(running()))
    bar.close()
    means = {key: float(value) / n_batches for key, value in sums.items()} if n_batches else sums
    # Each rank saw its share of every batch: the epoch's statistics are the mean over ranks.
    means = {key: distributed.all_reduce_sum(value) / distributed.world_size() for key, value in means.items()}
    return means, n_batches, completed


class EncoderWithHead(nn.Module):
    """Encoder and AAM head as one module: ``(wave (B, T), labels (B,), gate, keep (B,) or None)`` →
    :class:`AAMOutput`, one forward per backward for DDP."""

    def __init__(self, encoder: ECAPATDNN, head: AAMSoftmax):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, wave: torch.Tensor, labels: torch.Tensor, gate: float, keep: torch.Tensor | None = None):
        emb = self.encoder(wave)
        # The margin's cosines near 1 need float32 (bfloat16 keeps 3 digits): the head is outside any autocast.
        with torch.autocast(wave.device.type, enabled=False):
            return self.head(emb.float(), labels, gate, keep)


def stage2_epoch(
    model: nn.Module,
    optimizer,
    loader,
    gate: float,
    device,
    desc: str,
    after_step: Callable[[], None] | None = None,
    precision: str = "fp32",
    mid: MidEpoch | None = None,
    keep: np.ndarray | None = None,
) -> tuple[dict, dict]:
    """One Stage II epoch with loss gate ``gate`` (``inf`` = no gate, phase T); ``after_step`` runs
    after every optimizer step (the weight average's update). ``keep``: (N,) bool over the training
    list, the samples chosen beforehand (the clean-pass gate); then it, not ``gate``, selects.

    ``model``: :class:`EncoderWithHead`, under DDP in a distributed run. Returns (stats, per-sample
    arrays): arrays ``index`` (n,) int64 training-list index, ``per_sample_loss`` (n,) float32 and
    ``selected`` (n,) bool, of every rank's samples. A batch in which no sample passes the gate is
    counted in ``skipped_batches`` and makes no update. Under DDP the gate's count is global: the
    loss is the mean over the samples every rank selected, so ranks that select nothing still take
    part in the gradient all-reduce (a rank that skipped it would stall the others), and a batch is
    skipped only when no rank selected anything.

    ``mid``: mid-epoch checkpoints; their ``partial`` holds ``batches``, the running sums and counts
    (over ranks) and ``arrays``, each rank's per-sample arrays so far as tensors (one dict per rank).
    """
    model.train()
    world = distributed.world_size()
    resume = mid.resume if mid is not None else None
    index, losses, selected = _resumed_arrays(resume)
    if resume:
        n_batches, skipped = resume["batches"], resume["skipped_batches"]
        sum_loss, sum_correct = _carried(float(resume["sum_loss"])), _carried(float(resume["sum_correct"]))
        n_selected_total, n_samples = _carried(int(resume["n_selected"])), _carried(int(resume["n_samples"]))
    else:
        n_batches = skipped = n_selected_total = n_samples = 0
        sum_loss = sum_correct = 0.0

    def running() -> dict:
        parts = distributed.gather_objects(
            {
                "index": np.concatenate(index),
                "per_sample_loss": _on_host(losses),
                "selected": _on_host(selected),
            }
        )
        return {
            "batches": n_batches,
            "skipped_batches": skipped,
            "sum_loss": distributed.all_reduce_sum(float(sum_loss)),
            "sum_correct": distributed.all_reduce_sum(sum_correct),
            "n_selected": int(distributed.all_reduce_sum(n_selected_total)),
            "n_samples": int(distributed.all_reduce_sum(n_samples)),
            "arrays": [{key: torch.from_numpy(value) for key, value in part.items()} for part in parts],
        }

    autocast = partial(autocast_context, precision, torch.device(device))
    bar = progress_log.progress(_batches(loader, mid), desc=desc, total=len(loader), unit="batch", leave=False)
    for batch in bar:
        wave, labels = stage2_inputs(batch, device)
        with autocast():
            batch_keep = None if keep is None else torch.from_numpy(keep[batch["index"].numpy()])
            out = model(wave, labels, gate, batch_keep)  # encoder: (B, T) → (B, 192)
        index.append(batch["index"].numpy())
        # Kept where they are and copied to the host once per epoch: a copy per batch waits for the device.
        losses.append(out.per_sample.float())
        selected.append(out.selected)
        n_samples += labels.shape[0]
        n_batches += 1
        n_selected_all = distributed.all_reduce_sum(out.n_selected)
        if n_selected_all == 0:
            skipped += 1
            if distributed.active():
                out.loss.backward()  # zero gradients, so that every rank's DDP all-reduce stays in step
        else:
            # out.loss is the mean over this rank's selected samples; DDP averages gradients over ranks.
            loss = out.loss if world == 1 else out.loss * (max(out.n_selected, 1) * world / n_selected_all)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            n_selected_total += out.n_selected
            # A float64 sum on the device: the same numbers as float(loss) * n added up on the host, without a wait.
            sum_loss = sum_loss + out.loss.detach().double() * out.n_selected
            sum_correct += out.accuracy * out.n_selected
            if n_batches % POSTFIX_EVERY == 1:
                bar.set_postfix(
                    loss=f"{float(sum_loss) / max(n_selected_total, 1):.3f}",
                    acc=f"{sum_correct / max(n_selected_total, 1):.1f}",
                )
        if mid is not None:
            mid.checkpoints.after_batch(mid.where, n_batches, lambda: mid.write(running()))
    bar.close()
    if n_batches == 0:
        raise ValueError("the Stage II loader gave no batch: batch_size is larger than the training list")
    n_samples, n_selected_total = (
        int(distributed.all_reduce_sum(n_samples)),
        int(distributed.all_reduce_sum(n_selected_total)),
    )
    sum_loss, sum_correct = distributed.all_reduce_sum(float(sum_loss)), distributed.all_reduce_sum(sum_correct)
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
        "per_sample_loss": _on_host(losses).astype(np.float32),
        "selected": _on_host(selected).astype(bool),
    }
    return stats, distributed.gather_concat(arrays)


def _on_host(parts: list) -> np.ndarray:
    """One array of an epoch's per-batch parts: device tensors (copied in one transfer) after the
    numpy arrays a resumed epoch starts with."""
    arrays = [part for part in parts if isinstance(part, np.ndarray)]
    tensors = [part for part in parts if isinstance(part, torch.Tensor)]
    if tensors:
        arrays.append(torch.cat(tensors).cpu().numpy())
    return np.concatenate(arrays)


def _resumed_arrays(resume: dict | None) -> tuple[list, list, list]:
    """This rank's per-sample arrays (index, per_sample_loss, selected) of a resumed epoch's batches so far.

    With the world size of the checkpoint every rank takes its own part back, so the epoch's record
    is in the order of an uninterrupted run; with another world size rank 0 takes them all.
    """
    if resume is None:
        return [], [], []
    parts = resume["arrays"]
    if len(parts) == distributed.world_size():
        mine = [parts[distributed.rank()]]
    else:
        mine = parts if distributed.is_main() else []
    dtypes = {"index": np.int64, "per_sample_loss": np.float32, "selected": bool}
    return tuple([part[key].numpy() for part in mine] or [np.zeros(0, dtype)] for key, dtype in dtypes.items())
