"""Stage II's inputs, resolved and checked before any model is built or clustering starts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from lgl_helpers import runs
from lgl_helpers.config import check_n_clusters
from lgl_helpers.core.augment import AugmentSources
from lgl_helpers.core.data import check_training_list
from lgl_helpers.core.metrics import match_trials
from lgl_helpers.corpus.lists import TrainEntry, Trial, check_list, read_eval_trials
from lgl_helpers.training.stage2.config import Stage2Config

log = logging.getLogger(__name__)


@dataclass
class Stage2Data:
    """Everything Stage II reads, validated before any work."""

    paths: dict
    init_model: Path
    entries: list[TrainEntry]
    val_trials: list[Trial]
    test_trials: list[Trial]
    sources: AugmentSources | None

    @cached_property
    def same_val_test(self) -> bool:
        """The validation list holds the test list's trials (any file path or line order,
        :func:`~lgl_helpers.core.metrics.match_trials`): model selection saw the test set."""
        return match_trials(self.test_trials, self.val_trials) is not None

    @property
    def speakers(self) -> np.ndarray | None:
        """(N,) true speaker ids for analysis, or None when the list carries a single dummy id."""
        speakers = np.array([e.speaker for e in self.entries])
        return speakers if np.unique(speakers).size > 1 else None


def check_inputs(config: Stage2Config, paths: dict, *, audio: bool = True) -> list[TrainEntry]:
    """The checks of Stage II's training data that need no model; returns the training list's entries.

    ``paths`` as from :func:`lgl_helpers.runs.resolve_data_paths`. The list must be set and well formed,
    hold at least ``n_clusters`` and ``batch_size`` utterances and a file as long as one crop of
    ``frames``; with ``audio`` every listed wav must also be usable (:func:`lgl_helpers.corpus.lists.check_list`,
    header reads, problems as ``file:line``). ``lgl-kit doctor`` calls this with ``audio=False``. Raises
    ValueError (ListCheckError, CropError) naming the parameter, file or line.
    """
    entries = check_training_list(
        paths, runs.run_folder(config.run_name, config.runs_dir), batch_size=config.batch_size, frames=config.frames
    )
    check_n_clusters(config.n_clusters, len(entries), source=str(paths["train_list"]))
    if audio:
        check_list(paths["train_list"], paths["train_root"], "train")
    return entries


def prepare_data(config: Stage2Config) -> Stage2Data:
    """Resolve and check every input before any model is built or clustering starts: Stage I checkpoint,
    lists, wav headers, n_clusters / batch / crop against the list, augmentation roots, trial files.

    Empty data parameters come from ``runs/<run>/data.json``; ``init_model`` ``""`` is
    ``runs/<run>/stage1/best.model``. Raises ValueError / FileNotFoundError naming the parameter.
    """
    run_dir = runs.run_folder(config.run_name, config.runs_dir)
    paths = runs.resolve_data_paths(run_dir, **{key: getattr(config, key) for key in runs.DATA_KEYS})
    init_model = runs.resolve_path(config.init_model) or run_dir / "stage1" / "best.model"
    if not init_model.is_file():
        hint = "set init_model" if config.init_model else "run notebook 01 first or set init_model"
        raise FileNotFoundError(f"init_model={config.init_model!r}: {init_model} does not exist ({hint})")
    entries = check_inputs(config, paths)
    sources = AugmentSources.from_roots(paths["musan_root"], paths["rir_root"]) if config.augment else None
    if not config.augment:
        log.info("augment=False: training on clean crops")
    val_trials, test_trials = read_eval_trials(paths)
    data = Stage2Data(paths, init_model, entries, val_trials, test_trials, sources)
    if data.same_val_test and paths["val_trials"] != paths["trials"]:
        # read_eval_trials warns when both name one file; a copy of the test list is the same leak
        log.warning(
            "val_trials %s holds the same trials as the test list %s: model selection (best epoch) sees the "
            "test set; give a separate val_trials for an unbiased test EER",
            paths["val_trials"],
            paths["trials"],
        )
    return data
