"""DINO Stage I's data and batch loop: multi-crop items, the models of one step, and one epoch.

Each utterance gives ``global_crops`` crops of ``global_frames`` frames and ``local_crops`` of
``local_frames``, each at its own random position (crops may overlap, as in wespeaker) and each with its
own augmentation drawn from the kit's Stage I policy (MUSAN noise / RIR reverb, :mod:`lgl_helpers.core.augment`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from lgl_helpers import progress_log
from lgl_helpers.core import distributed
from lgl_helpers.core.audio import SAMPLE_RATE
from lgl_helpers.core.augment import (
    STAGE1_POLICY,
    AugmentSources,
    apply_recipe,
    clean_recipe,
    collate_recipes,
    sample_recipe,
    segment_samples,
)
from lgl_helpers.core.data import CropError, _item_rng, _stack, check_train_files, random_crop
from lgl_helpers.core.embed import autocast_context
from lgl_helpers.core.models import ECAPATDNN
from lgl_helpers.corpus.lists import TrainEntry
from lgl_helpers.training.executor import MidEpoch, _batches, _carried
from lgl_helpers.training.stage1.dino import DinoHead, DinoLoss, clip_per_parameter, ema_update

DINO_SUMS = ("loss", "teacher_entropy", "teacher_mean_entropy", "student_entropy", "center_norm")


class MultiCropDataset(Dataset):
    """DINO items: ``n_global`` crops of ``global_frames`` and ``n_local`` of ``local_frames`` frames, each augmented alone.

    Item: ``global`` (n_global, Tg) and ``local`` (n_local, Tl) float32 tensors, ``global_recipes`` /
    ``local_recipes`` (one single recipe per crop), ``index``. Batches: ``global`` (B, n_global, Tg),
    ``local`` (B, n_local, Tl), a batched recipe per crop, ``index`` (B,). Items are a pure function of
    (seed, epoch, index), as :class:`lgl_helpers.core.data.Stage1Dataset`'s are.
    """

    def __init__(
        self,
        entries: Sequence[TrainEntry],
        train_root: str | os.PathLike,
        n_global: int,
        global_frames: int,
        n_local: int,
        local_frames: int,
        sources: AugmentSources | None = None,
        seed: int = 0,
        check_files: bool = True,
    ):
        if not entries:
            raise ValueError("the training list is empty")
        self.entries = list(entries)
        self.train_root = Path(train_root)
        self.n_global, self.n_local = int(n_global), int(n_local)
        self.global_length, self.local_length = segment_samples(global_frames), segment_samples(local_frames)
        self.sources = sources if sources is not None and not sources.empty else None
        self.seed = int(seed)
        longest = max(e.duration for e in self.entries)
        if self.global_length / SAMPLE_RATE > longest:
            raise CropError(
                f"global_frames={global_frames} gives crops of {self.global_length / SAMPLE_RATE:.2f} s, longer than "
                f"every file of the training list (longest {longest:.2f} s); choose global_frames <= "
                f"{int((longest * SAMPLE_RATE - 240) // 160)}"
            )
        if check_files:
            check_train_files(self.entries, self.train_root)

    def __len__(self) -> int:
        return len(self.entries)

    def _crops(self, path: Path, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, list]:
        crops = np.stack([random_crop(path, length, rng) for _ in range(n)]) if n else np.zeros((0, length))
        recipes = [
            sample_recipe(self.sources, STAGE1_POLICY, length, rng) if self.sources else clean_recipe(length)
            for _ in range(n)
        ]
        return np.ascontiguousarray(crops, dtype=np.float32), recipes

    def __getitem__(self, key) -> dict:
        index, rng = _item_rng(key, self.seed)
        path = self.train_root / self.entries[index].path
        global_crops, global_recipes = self._crops(path, self.n_global, self.global_length, rng)
        local_crops, local_recipes = self._crops(path, self.n_local, self.local_length, rng)
        return {
            "global": torch.from_numpy(global_crops),
            "local": torch.from_numpy(local_crops),
            "global_recipes": global_recipes,
            "local_recipes": local_recipes,
            "index": index,
        }

    @staticmethod
    def collate(items: Sequence[dict]) -> dict:
        batch = {key: _stack([item[key] for item in items]) for key in ("global", "local")}
        for key in ("global_recipes", "local_recipes"):
            batch[key] = [collate_recipes([item[key][c] for item in items]) for c in range(len(items[0][key]))]
        batch["index"] = torch.tensor([item["index"] for item in items], dtype=torch.int64)
        return batch


@torch.no_grad()
def multicrop_views(batch: dict, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Augmented crops on ``device``, crop by crop: globals (n_global·B, Tg), locals (n_local·B, Tl) or None."""

    def views(key: str) -> torch.Tensor | None:
        crops = batch[key].to(device, non_blocking=True)
        recipes = batch[f"{key}_recipes"]
        if not recipes:
            return None
        return torch.cat([apply_recipe(crops[:, c], r.to(device, non_blocking=True)) for c, r in enumerate(recipes)])

    return views("global"), views("local")


class DinoStudent(nn.Module):
    """Student encoder and head as one module, one forward per backward for DDP:
    (globals (n_g·B, Tg), locals (n_l·B, Tl) or None) → logits (n_crops·B, K), global rows first.

    Globals and locals are separate passes (their lengths differ), each with its own BatchNorm batch.
    The head runs in float32 outside any autocast: its softmax at temperature 0.1 needs the digits.
    """

    def __init__(self, encoder: ECAPATDNN, head: DinoHead):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, global_wave: torch.Tensor, local_wave: torch.Tensor | None = None) -> torch.Tensor:
        emb = [self.encoder(global_wave)]
        if local_wave is not None:
            emb.append(self.encoder(local_wave))
        with torch.autocast(global_wave.device.type, enabled=False):
            return self.head(torch.cat(emb).float())


@dataclass
class DinoModels:
    """DINO's parts: student and teacher (encoder + head each), the loss with the centre, the optimizer.

    ``student_net`` is what a step calls (under DDP in a distributed run); the teacher is never wrapped:
    it gets no gradient and every rank updates it alike from the synchronised student.
    """

    student: ECAPATDNN
    student_head: DinoHead
    teacher: ECAPATDNN
    teacher_head: DinoHead
    loss_fn: DinoLoss
    optimizer: torch.optim.Optimizer
    student_net: nn.Module | None = None

    def __post_init__(self) -> None:
        self.student_net = self.student_net or DinoStudent(self.student, self.student_head)
        for module in (self.teacher, self.teacher_head):
            module.requires_grad_(False)

    def parallelise(self, device: torch.device, sync_batchnorm: bool = False) -> None:
        self.student_net = distributed.wrap(DinoStudent(self.student, self.student_head), device, sync_batchnorm)

    def train(self) -> None:
        # The teacher also runs in training mode, as in wespeaker: its BatchNorm uses batch statistics
        # and keeps its own running statistics for evaluation.
        for module in (self.student, self.student_head, self.teacher, self.teacher_head):
            module.train()


def param_groups(modules: Sequence[nn.Module], weight_decay: float) -> list[dict]:
    """Weights with ``weight_decay``; biases and normalisation parameters (1-D tensors) without, as in DINO."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


@dataclass
class DinoSchedule:
    """Values of the step: learning rate, teacher momentum, teacher temperature; ``freeze_last``: no
    update of the head's last layer (the first ``freeze_last_layer`` epochs)."""

    lr: float
    teacher_momentum: float
    teacher_temp: float
    freeze_last: bool


def dino_step(models: DinoModels, batch: dict, schedule: DinoSchedule, clip_grad: float, device, autocast) -> dict:
    """One DINO batch: student update, teacher EMA, centre update. Returns the batch's statistics."""
    for group in models.optimizer.param_groups:
        group["lr"] = schedule.lr
    global_wave, local_wave = multicrop_views(batch, device)
    n_global = batch["global"].shape[1]
    with torch.no_grad(), autocast():
        teacher_out = models.teacher_head(models.teacher(global_wave).float())  # (n_g·B, K)
    with autocast():
        student_out = models.student_net(global_wave, local_wave)  # (n_crops·B, K)
    loss, stats = models.loss_fn(student_out, teacher_out, n_global, schedule.teacher_temp)
    models.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_per_parameter(models.student_net.parameters(), clip_grad)
    if schedule.freeze_last:
        for p in models.student_head.last_layer.parameters():
            p.grad = None
    models.optimizer.step()
    ema_update(
        nn.ModuleList([models.teacher, models.teacher_head]),
        nn.ModuleList([models.student, models.student_head]),
        schedule.teacher_momentum,
    )
    models.loss_fn.update_center(teacher_out)
    return {"batch_size": batch["global"].shape[0], "loss": float(loss.detach()), **stats}


def dino_epoch(
    models: DinoModels,
    loader,
    schedule_at,
    clip_grad: float,
    device,
    precision: str,
    desc: str,
    max_batches: int | None = None,
    mid: MidEpoch | None = None,
) -> tuple[dict, int, bool]:
    """One DINO epoch of at most ``max_batches`` batches in this call (None: the whole loader).

    ``schedule_at(batch_in_epoch)`` → :class:`DinoSchedule` (0-based batch of the epoch). Returns (the mean
    of each of :data:`DINO_SUMS` over the epoch's batches and ranks, plus the last step's ``lr``,
    ``teacher_momentum`` and ``teacher_temp``; the number of the epoch's batches done, resumed ones
    included; whether the epoch was completed). ``mid`` as in :func:`lgl_helpers.training.executor.stage1_epoch`.
    """
    autocast = partial(autocast_context, precision, torch.device(device))
    models.train()
    resume = mid.resume if mid is not None else None
    start = resume["batches"] if resume else 0
    rescale = distributed.world_size() / resume["world_size"] if resume else 1.0
    sums = {key: _carried(float(resume["sums"][key]) * rescale) if resume else 0.0 for key in DINO_SUMS}
    n_batches, completed, tic = start, True, time.perf_counter()
    schedule = schedule_at(max(start - 1, 0))

    def running() -> dict:
        return {
            "batches": n_batches,
            "world_size": distributed.world_size(),
            "sums": {key: distributed.all_reduce_sum(value) for key, value in sums.items()},
        }

    bar = progress_log.progress(_batches(loader, mid), desc=desc, total=len(loader), unit="batch", leave=False)
    for batch in bar:
        if max_batches is not None and n_batches - start >= max_batches:
            completed = False
            break
        schedule = schedule_at(n_batches)
        stats = dino_step(models, batch, schedule, clip_grad, device, autocast)
        n_batches += 1
        for key in DINO_SUMS:
            sums[key] += stats[key]
        bar.set_postfix(
            loss=f"{sums['loss'] / n_batches:.3f}",
            h_teacher=f"{sums['teacher_entropy'] / n_batches:.2f}",
            sps=f"{(n_batches - start) * stats['batch_size'] / (time.perf_counter() - tic):.0f}",
        )
        if mid is not None:
            mid.checkpoints.after_batch(mid.where, n_batches, lambda: mid.write(running()))
    bar.close()
    means = {key: value / n_batches for key, value in sums.items()} if n_batches else sums
    means = {key: distributed.all_reduce_sum(value) / distributed.world_size() for key, value in means.items()}
    means.update(lr=schedule.lr, teacher_momentum=schedule.teacher_momentum, teacher_temp=schedule.teacher_temp)
    return means, n_batches, completed
