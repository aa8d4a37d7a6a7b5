"""Training data of both stages: crops of the training utterances plus their augmentation recipes, and the loader.

* Stage I (docs/method.md, "Stage I"): per utterance two non-overlapping crops of ``frames`` frames
  (``frames·160 + 240`` samples), and two augmentations a and b; the training loop builds
  A = crop 0 with a, S = crop 1 with a, P = crop 1 with b (:func:`stage1_views`). S's copy of a has
  the same RIR, noise files and SNRs as A's but its own segment of each noise file, as in the
  reference (:func:`~lgl_helpers.core.augment.sample_recipe_pair`).
* Stage II (docs/method.md, "Stage II", step 2): one crop per utterance with its pseudo label and one
  recipe (:func:`stage2_inputs`).

Workers only read audio (the crops and the needed noise segments) and draw recipes; reverberation
and mixing run on the batch on the training device (:mod:`lgl_helpers.core.augment`).

Short utterances are wrap-padded from a random phase, so every utterance of at least 0.5 s works
in both stages. A crop longer than the longest file of the list is refused: every item would then
be a repetition of a shorter file, which points to a wrong ``frames`` value rather than a wish.

Randomness: each item's crops and recipes come from a generator seeded by (seed, epoch, index),
and the shuffled order from (seed, epoch). An epoch's data therefore does not depend on the number
of workers, and a run resumed at epoch e sees exactly the data an uninterrupted run would.
"""

from __future__ import annotations

import logging
import os
import random
import signal
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lgl_helpers.core import distributed
from lgl_helpers.core.audio import SAMPLE_RATE, WavInfo, read_wav_part
from lgl_helpers.core.augment import (
    STAGE1_POLICY,
    STAGE2_POLICY,
    AugmentPolicy,
    AugmentSources,
    Recipe,
    apply_recipe,
    clean_recipe,
    collate_recipes,
    sample_recipe,
    sample_recipe_pair,
    segment_samples,
)
from lgl_helpers.corpus.lists import TrainEntry, read_train_list

log = logging.getLogger(__name__)


class CropError(ValueError):
    """A crop length that no file of the training list can provide. The message names the parameter."""


# ----------------------------------------------------------------------------------------------
# Crops
# ----------------------------------------------------------------------------------------------


def _wrapped(wave: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """``length`` samples of ``wave`` repeated circularly from a random phase. (n,) → (length,)."""
    return wave[(int(rng.integers(0, len(wave))) + np.arange(length)) % len(wave)]


def random_crop(path: str | os.PathLike, length: int, rng: np.random.Generator) -> np.ndarray:
    """One random ``length``-sample crop, reading only that part; short files are wrap-padded. Returns (length,) float32."""

    def part(info: WavInfo) -> tuple[int, int]:
        if info.frames >= length:
            return int(rng.integers(0, info.frames - length + 1)), length
        return 0, -1

    wave, info = read_wav_part(path, part)
    return wave if info.frames >= length else _wrapped(wave, length, rng)


def two_crops(path: str | os.PathLike, length: int, rng: np.random.Generator) -> np.ndarray:
    """Two non-overlapping random crops of ``length`` samples, in random order. Returns (2, length) float32.

    With at least ``2·length`` samples the crops are disjoint parts of the file (only their span is
    read); a shorter file is wrap-padded to ``2·length`` first, so both crops repeat its content.
    """
    starts = []

    def part(info: WavInfo) -> tuple[int, int]:
        if info.frames < 2 * length:
            return 0, -1
        first, second = np.sort(rng.integers(0, info.frames - 2 * length + 1, size=2))
        starts.extend([int(first), int(second) + length])
        return starts[0], starts[1] - starts[0] + length

    wave, _ = read_wav_part(path, part)
    if starts:
        crops = np.stack([wave[:length], wave[starts[1] - starts[0] :]])
    else:
        crops = _wrapped(wave, 2 * length, rng).reshape(2, length)
    if rng.random() < 0.5:  # the anchor is the later segment half of the time
        crops = crops[::-1]
    return np.ascontiguousarray(crops, dtype=np.float32)


def check_crop_length(entries: Sequence[TrainEntry], length: int, list_name: str = "training list") -> None:
    """Raise :class:`CropError` naming ``frames`` when one crop of ``length`` samples is longer than every
    file of the list (durations as listed; no audio is read)."""
    longest = max(e.duration for e in entries)
    crop_s = length / SAMPLE_RATE
    if crop_s > longest:
        raise CropError(
            f"frames gives a crop of {length} samples ({crop_s:.2f} s), longer than every file of the {list_name} "
            f"(longest {longest:.2f} s); choose frames <= {int((longest * SAMPLE_RATE - 240) // 160)}"
        )


def check_crop(entries: Sequence[TrainEntry], length: int, n_crops: int, list_name: str = "training list") -> int:
    """Validate a crop of ``length`` samples against the list's durations; returns how many files need wrap-padding.

    Raises :class:`CropError` when one crop is longer than the longest file. Logs a warning when the
    ``n_crops`` non-overlapping crops fit in no file (the crops of every item then share content).
    """
    check_crop_length(entries, length, list_name)
    longest = max(e.duration for e in entries)
    crop_s = length / SAMPLE_RATE
    need = n_crops * crop_s
    short = sum(e.duration < need for e in entries)
    if n_crops > 1 and need > longest:
        log.warning(
            "the %d non-overlapping crops need %.2f s but the longest file has %.2f s: every item is wrap-padded "
            "and its crops repeat the same audio",
            n_crops,
            need,
            longest,
        )
    elif short:
        log.info("%d of %d files are shorter than %.2f s and are wrap-padded", short, len(entries), need)
    return short


def check_training_list(paths: dict, run_dir: str | os.PathLike, *, batch_size: int, frames: int) -> list[TrainEntry]:
    """The training list of a stage's resolved ``paths``, checked against its batch and crop without reading audio.

    ``paths`` as from :func:`lgl_helpers.runs.resolve_data_paths`; the list, its root and the test trials
    must be set (``run_dir`` names the data.json that would give them). The list must be well formed,
    hold a full batch of ``batch_size`` utterances and a file as long as one crop of ``frames``. Raises
    ValueError (ListFormatError, CropError) naming the parameter or ``file:line``.
    """
    for key in ("train_list", "train_root", "test_root", "trials"):
        if paths[key] is None:
            raise ValueError(
                f"{key} is not set: give it as a parameter or run notebook 00 to write {Path(run_dir) / 'data.json'}"
            )
    entries = read_train_list(paths["train_list"])
    if batch_size > len(entries):
        raise ValueError(
            f"batch_size={batch_size} is larger than the {len(entries)} utterances of "
            f"{paths['train_list']}: no full batch; choose batch_size <= {len(entries)}"
        )
    check_crop_length(entries, segment_samples(frames), f"training list {paths['train_list']}")
    return entries


def check_train_files(entries: Sequence[TrainEntry], root: str | os.PathLike, list_name: str = "training list") -> None:
    """Raise FileNotFoundError naming the first missing files of the list (existence only, no decoding)."""
    root = Path(root)
    missing = [e.path for e in entries if not (root / e.path).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise FileNotFoundError(
            f"{len(missing)} of {len(entries)} files of the {list_name} are missing under {root}: {shown}"
        )


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------


def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """torch.stack of CPU tensors by numpy: a plain copy, without the OpenMP region that stalls on busy cores."""
    return torch.from_numpy(np.stack([t.numpy() for t in tensors]))


def _item_rng(key, seed: int) -> tuple[int, np.random.Generator]:
    """``key`` is an index or the (index, seed, epoch) tuple of :class:`EpochSampler`."""
    if isinstance(key, tuple):
        index, seed, epoch = key
    else:
        index, epoch = int(key), 0
    return int(index), np.random.default_rng([int(seed), int(epoch), int(index)])


class Stage1Dataset(Dataset):
    """Stage I items: two crops of ``frames`` frames and two augmentations a, b of ``policy`` per utterance.

    Item: dict ``crops`` (2, T) float32 tensor; single recipes ``recipe_a`` (a for crop 0),
    ``recipe_s`` (a for crop 1: same RIR, noise files and SNRs, fresh noise segments) and ``recipe_b``;
    ``index`` int. Batches (``collate``): ``crops`` (B, 2, T), batched ``recipe_a`` / ``recipe_s`` /
    ``recipe_b``, ``index`` (B,). ``sources`` None or empty → clean recipes.
    """

    n_crops = 2

    def __init__(
        self,
        entries: Sequence[TrainEntry],
        train_root: str | os.PathLike,
        frames: int,
        sources: AugmentSources | None = None,
        policy: AugmentPolicy = STAGE1_POLICY,
        seed: int = 0,
        check_files: bool = True,
    ):
        if not entries:
            raise ValueError("the training list is empty")
        if frames < 1:
            raise CropError(f"frames={frames} must be positive")
        self.entries = list(entries)
        self.train_root = Path(train_root)
        self.length = segment_samples(frames)
        self.sources = sources if sources is not None and not sources.empty else None
        self.policy = policy
        self.seed = int(seed)
        check_crop(self.entries, self.length, self.n_crops)
        if check_files:
            check_train_files(self.entries, self.train_root)

    def __len__(self) -> int:
        return len(self.entries)

    def _recipe(self, rng: np.random.Generator) -> Recipe:
        if self.sources is None:
            return clean_recipe(self.length)
        return sample_recipe(self.sources, self.policy, self.length, rng)

    def _recipe_pair(self, rng: np.random.Generator) -> tuple[Recipe, Recipe]:
        if self.sources is None:
            return clean_recipe(self.length), clean_recipe(self.length)
        return sample_recipe_pair(self.sources, self.policy, self.length, rng)

    def __getitem__(self, key) -> dict:
        index, rng = _item_rng(key, self.seed)
        crops = two_crops(self.train_root / self.entries[index].path, self.length, rng)
        recipe_a, recipe_s = self._recipe_pair(rng)
        return {
            "crops": torch.from_numpy(crops),
            "recipe_a": recipe_a,
            "recipe_s": recipe_s,
            "recipe_b": self._recipe(rng),
            "index": index,
        }

    @staticmethod
    def collate(items: Sequence[dict]) -> dict:
        return {
            "crops": _stack([item["crops"] for item in items]),
            "recipe_a": collate_recipes([item["recipe_a"] for item in items]),
            "recipe_s": collate_recipes([item["recipe_s"] for item in items]),
            "recipe_b": collate_recipes([item["recipe_b"] for item in items]),
            "index": torch.tensor([item["index"] for item in items], dtype=torch.int64),
        }


class Stage2Dataset(Stage1Dataset):
    """Stage II items: one crop of ``frames`` frames (300 = 3 s in the method), its pseudo label and one recipe.

    ``pseudo_labels``: (N,) non-negative ints, one per list entry (list index → label).
    Item: dict ``crop`` (T,) float32, ``label`` int, ``recipe``, ``index``. Batches: ``crops`` (B, T),
    ``labels`` (B,) int64, batched ``recipe``, ``index`` (B,).
    """

    n_crops = 1

    def __init__(
        self,
        entries: Sequence[TrainEntry],
        train_root: str | os.PathLike,
        pseudo_labels: Sequence[int] | np.ndarray,
        frames: int = 300,
        sources: AugmentSources | None = None,
        policy: AugmentPolicy = STAGE2_POLICY,
        seed: int = 0,
        check_files: bool = True,
    ):
        super().__init__(entries, train_root, frames, sources, policy, seed, check_files)
        labels = np.asarray(pseudo_labels)
        if labels.shape != (len(self.entries),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"pseudo_labels must be ({len(self.entries)},) integers, one per training-list entry; "
                f"got {labels.dtype} of shape {labels.shape}"
            )
        if labels.size and labels.min() < 0:
            raise ValueError(f"pseudo_labels must be non-negative, found {int(labels.min())}")
        self.pseudo_labels = labels.astype(np.int64)

    def __getitem__(self, key) -> dict:
        index, rng = _item_rng(key, self.seed)
        crop = random_crop(self.train_root / self.entries[index].path, self.length, rng)
        return {
            "crop": torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32)),
            "label": int(self.pseudo_labels[index]),
            "recipe": self._recipe(rng),
            "index": index,
        }

    @staticmethod
    def collate(items: Sequence[dict]) -> dict:
        return {
            "crops": _stack([item["crop"] for item in items]),
            "labels": torch.tensor([item["label"] for item in items], dtype=torch.int64),
            "recipe": collate_recipes([item["recipe"] for item in items]),
            "index": torch.tensor([item["index"] for item in items], dtype=torch.int64),
        }


# ----------------------------------------------------------------------------------------------
# Batches on the device
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def stage1_views(batch: dict, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Views of a Stage I batch on ``device``: A = crop 0 with a, S = crop 1 with a's copy ``recipe_s``, P = crop 1 with b.

    Each (B, T) float32.
    """
    crops = batch["crops"].to(device, non_blocking=True)
    view_a = apply_recipe(crops[:, 0], batch["recipe_a"].to(device, non_blocking=True))
    view_s = apply_recipe(crops[:, 1], batch["recipe_s"].to(device, non_blocking=True))
    view_p = apply_recipe(crops[:, 1], batch["recipe_b"].to(device, non_blocking=True))
    return view_a, view_s, view_p


@torch.no_grad()
def stage2_inputs(batch: dict, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented crops (B, T) float32 and pseudo labels (B,) int64 of a Stage II batch, on ``device``."""
    crops = batch["crops"].to(device, non_blocking=True)
    wave = apply_recipe(crops, batch["recipe"].to(device, non_blocking=True))
    return wave, batch["labels"].to(device, non_blocking=True)


# ----------------------------------------------------------------------------------------------
# Loader
# ----------------------------------------------------------------------------------------------


class EpochSampler(Sampler):
    """Indices in an order shuffled from (seed, epoch), each as an (index, seed, epoch) key for the dataset.

    Call :meth:`set_epoch` before iterating; the sampler lives in the main process, so this works with
    persistent workers too. ``set_epoch(e, skip_batches=k)`` leaves out the epoch's first k global
    batches (an epoch resumed from a mid-epoch checkpoint): items are a pure function of (seed, epoch,
    index), so the rest of the epoch is what an uninterrupted run sees. In a distributed run (``world_size > 1``) the order is the same on every
    rank and rank r takes its share of each global batch of ``global_batch`` items (the r-th slice), so
    W ranks × ``global_batch / W`` see exactly the batches one process with ``global_batch`` sees; the
    last incomplete global batch is left out, as ``drop_last`` does in one process.
    """

    def __init__(
        self,
        n_items: int,
        seed: int = 0,
        shuffle: bool = True,
        global_batch: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.n_items = int(n_items)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.rank, self.world_size = int(rank), int(world_size)
        if self.world_size > 1 and (global_batch is None or global_batch % self.world_size):
            raise ValueError(f"global_batch={global_batch} must be a multiple of world_size={self.world_size}")
        self.global_batch = global_batch
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        if skip_batches and self.global_batch is None:
            raise ValueError("skip_batches needs the sampler's global_batch")
        if skip_batches < 0:
            raise ValueError(f"skip_batches={skip_batches} must be >= 0")
        self.epoch = int(epoch)
        self.skip_batches = int(skip_batches)

    def _positions(self) -> np.ndarray:
        """Which places of the epoch's global order this rank takes (after the skipped global batches)."""
        skipped = self.skip_batches * (self.global_batch or 0)
        if self.world_size == 1:
            return np.arange(skipped, self.n_items)
        share = self.global_batch // self.world_size
        n_batches = self.n_items // self.global_batch
        starts = np.arange(self.skip_batches, n_batches)[:, None] * self.global_batch + self.rank * share
        return (starts + np.arange(share)[None, :]).reshape(-1)

    def __len__(self) -> int:
        return len(self._positions())

    def __iter__(self):
        order = np.arange(self.n_items)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_items)
        return iter([(int(i), self.seed, self.epoch) for i in order[self._positions()]])


def _seed_worker(seed: int, worker_id: int) -> None:
    # A scheduler's SIGTERM reaches every process of the job: a worker that died of it would crash the
    # training process before it writes its checkpoint. The training process decides when to stop, and
    # shuts its workers down itself (they also exit when it is gone).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Items draw from their own generators; this covers any library that uses the global ones.
    worker_seed = (int(seed) * 1_000_003 + worker_id) % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)
    torch.manual_seed(worker_seed)


def make_loader(
    dataset: Stage1Dataset,
    batch_size: int,
    workers: int,
    seed: int,
    device: torch.device | str,
    shuffle: bool = True,
    drop_last: bool = True,
) -> DataLoader:
    """DataLoader over a Stage I or Stage II dataset with an :class:`EpochSampler` (``loader.sampler.set_epoch(e)``).

    ``batch_size`` is the global batch: in a distributed run each rank's loader gives its
    ``batch_size / world_size`` share of it. Per-worker seeding, ``persistent_workers`` when
    ``workers > 0``, pinned memory when ``device`` is CUDA, and (for training) ``drop_last`` so every
    batch has the same size.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be positive")
    if workers < 0:
        raise ValueError(f"workers={workers} must be >= 0")
    if drop_last and batch_size > len(dataset):
        raise ValueError(
            f"batch_size={batch_size} is larger than the {len(dataset)} utterances of the training list: no full batch"
        )
    local_batch = distributed.per_rank_batch(batch_size)
    if distributed.world_size() > 1 and not drop_last:
        raise ValueError("a distributed loader keeps whole global batches only (drop_last=True)")
    sampler = EpochSampler(len(dataset), seed, shuffle, batch_size, distributed.rank(), distributed.world_size())
    device = torch.device(device)
    # Worker seeds differ per rank (rank 0 keeps the one-process seed).
    worker_seed = seed + 7919 * distributed.rank()
    return DataLoader(
        dataset,
        batch_size=local_batch,
        sampler=sampler,
        num_workers=workers,
        collate_fn=dataset.collate,
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
        persistent_workers=workers > 0,
        worker_init_fn=partial(_seed_worker, worker_seed) if workers > 0 else None,
        prefetch_factor=2 if workers > 0 else None,
    )
