"""Stage I's inputs, resolved and checked before any model is built, and a preview of the views (contrastive)
or crops (DINO)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from lgl_helpers import runs
from lgl_helpers.core.augment import AugmentSources, describe_recipe
from lgl_helpers.core.data import Stage1Dataset, check_training_list, make_loader, stage1_views
from lgl_helpers.core.metrics import match_trials
from lgl_helpers.corpus.lists import TrainEntry, Trial, check_list, read_eval_trials
from lgl_helpers.training.stage1.config import Stage1Config
from lgl_helpers.training.stage1.dino_epoch import MultiCropDataset, multicrop_views

log = logging.getLogger(__name__)


@dataclass
class Stage1Data:
    """Everything Stage I reads, validated: resolved paths, lists, augmentation sets and the dataset."""

    paths: dict
    entries: list[TrainEntry]
    val_trials: list[Trial]
    test_trials: list[Trial]
    sources: AugmentSources | None
    dataset: Stage1Dataset

    @cached_property
    def test_in_val(self) -> np.ndarray | None:
        """(M,) position in ``val_trials`` of each test trial when both lists hold the same trials (any
        file path or line order, :func:`~lgl_helpers.core.metrics.match_trials`), else None."""
        return match_trials(self.test_trials, self.val_trials)

    @property
    def same_val_test(self) -> bool:
        """The validation list holds the test list's trials: model selection saw the test set, and the
        validation scores of the best epoch are its test scores."""
        return self.test_in_val is not None


def check_inputs(config: Stage1Config, paths: dict, *, audio: bool = True) -> list[TrainEntry]:
    """The checks of Stage I's training data that need no model; returns the training list's entries.

    ``paths`` as from :func:`lgl_helpers.runs.resolve_data_paths`. The list must be set and well formed,
    hold a full batch of ``batch_size`` utterances and a file as long as one crop of ``frames``; with
    ``audio`` every listed wav must also be usable (:func:`lgl_helpers.corpus.lists.check_list`, header reads,
    problems as ``file:line``). ``lgl-kit doctor`` calls this with ``audio=False``. Raises ValueError
    (ListCheckError, CropError) naming the parameter, file or line.
    """
    entries = check_training_list(
        paths, runs.run_folder(config.run_name, config.runs_dir), batch_size=config.batch_size, frames=config.frames
    )
    if audio:
        check_list(paths["train_list"], paths["train_root"], "train")
    return entries


def prepare_data(config: Stage1Config) -> Stage1Data:
    """Resolve and check every input before any model is built: lists, wav headers, batch and crop
    against the list, augmentation roots, trial files.

    Empty data parameters come from ``runs/<run>/data.json``. Raises ValueError / FileNotFoundError /
    :class:`lgl_helpers.core.augment.AugmentError` / :class:`lgl_helpers.core.data.CropError` naming the problem.
    """
    run_dir = runs.run_folder(config.run_name, config.runs_dir)
    paths = runs.resolve_data_paths(run_dir, **{key: getattr(config, key) for key in runs.DATA_KEYS})
    entries = check_inputs(config, paths)
    if config.augment:
        sources = AugmentSources.from_roots(paths["musan_root"], paths["rir_root"])
    else:
        log.info("augment=False: training on clean views")
        sources = None
    # check_inputs has read every file's header: the dataset need not look for them again.
    dataset = Stage1Dataset(entries, paths["train_root"], config.frames, sources, seed=config.seed, check_files=False)
    val_trials, test_trials = read_eval_trials(paths)
    log.info(
        "Stage I data: %d utterances, %d validation trials, %d test trials, augmentation: %s",
        len(entries),
        len(val_trials),
        len(test_trials),
        sources.summary() if sources else "none (clean views)",
    )
    data = Stage1Data(paths, entries, val_trials, test_trials, sources, dataset)
    if data.same_val_test and paths["val_trials"] != paths["trials"]:
        # read_eval_trials warns when both name one file; a copy of the test list is the same leak
        log.warning(
            "val_trials %s holds the same trials as the test list %s: model selection (best epoch) sees the "
            "test set; give a separate val_trials for an unbiased test EER",
            paths["val_trials"],
            paths["trials"],
        )
    return data


def preview_views(data: Stage1Data, n_items: int = 4, epoch: int = 0) -> dict:
    """The first ``n_items`` items of an epoch's first batch as Stage I sees them.

    Returns dict of numpy arrays (n, T): ``crop0``, ``crop1`` (clean), ``A``, ``S``, ``P``; and
    ``captions``: per item, the augmentations a and b in words.
    """
    loader = make_loader(data.dataset, min(n_items, len(data.dataset)), 0, data.dataset.seed, "cpu")
    loader.sampler.set_epoch(epoch)
    batch = next(iter(loader))
    views = stage1_views(batch, "cpu")
    captions = [
        f"a: {describe_recipe(batch['recipe_a'], i)} | b: {describe_recipe(batch['recipe_b'], i)}"
        for i in range(batch["crops"].shape[0])
    ]
    out = {"crop0": batch["crops"][:, 0].numpy(), "crop1": batch["crops"][:, 1].numpy()}
    out.update({name: view.numpy() for name, view in zip("ASP", views)})
    out["captions"] = captions
    return out


def preview_crops(data: Stage1Data, config: Stage1Config, n_items: int = 4, epoch: int = 0) -> dict:
    """The first ``n_items`` items of a DINO epoch's first batch: every crop as the networks see it.

    Returns dict ``global`` (n, n_global, Tg) and ``local`` (n, n_local, Tl) numpy arrays of the augmented
    crops and ``captions``: per item, the augmentation of each crop in words (globals first).
    """
    dataset = multicrop_dataset(config, data)
    loader = make_loader(dataset, min(n_items, len(dataset)), 0, dataset.seed, "cpu")
    loader.sampler.set_epoch(epoch)
    batch = next(iter(loader))
    n = batch["global"].shape[0]
    global_wave, local_wave = multicrop_views(batch, "cpu")
    out = {"global": global_wave.reshape(-1, n, global_wave.shape[-1]).transpose(0, 1).numpy()}
    out["local"] = (
        local_wave.reshape(-1, n, local_wave.shape[-1]).transpose(0, 1).numpy()
        if local_wave is not None
        else np.zeros((n, 0, 0), dtype=np.float32)
    )
    recipes = batch["global_recipes"] + batch["local_recipes"]
    out["captions"] = [[describe_recipe(recipe, i) for recipe in recipes] for i in range(n)]
    return out


def multicrop_dataset(config: Stage1Config, data: Stage1Data) -> MultiCropDataset:
    return MultiCropDataset(
        data.entries,
        data.paths["train_root"],
        config.global_crops,
        config.global_frames,
        config.local_crops,
        config.local_frames,
        data.sources,
        seed=config.seed,
        check_files=False,
    )
