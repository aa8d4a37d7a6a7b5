"""Stage I's notebook config (notebook 01) and the fields a resumed run may change."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lgl_helpers import runs
from lgl_helpers.config import (
    NotebookConfig,
    check_channels,
    check_choice,
    check_fraction,
    check_int,
    check_non_negative,
    check_positive,
)
from lgl_helpers.core.embed import PRECISIONS
from lgl_helpers.core.evaluation import check_eval_trials
from lgl_helpers.core.models import REFERENCE_MFA_CHANNELS
from lgl_helpers.core.score_norm import check_norm_parameters
from lgl_helpers.training.retention import DEFAULT_KEEP_EVERY
from lgl_helpers.training.step_checkpoints import DEFAULT_MINUTES

STAGE_DIR = "stage1"
# Fields that only steer one call (where to stop, how to show it) and may change when a run is resumed.
RUN_CONTROL_FIELDS = (
    "run_name",  # where the run is (a copied run folder resumes), not what it computed
    "runs_dir",
    "recompute",
    "epochs",
    "resume",
    "allow_changed_params",
    "max_steps",
    "interactive",
    "workers",
    "device",
    "precision",
    "nproc",
    "sync_batchnorm",
    "keep_every",
    "checkpoint_minutes",
    # the final evaluation's lists and normalisation: they change no training result
    "eval_trials",
    "norm_cohort",
    "norm_cohort_size",
    "norm_top_n",
)


@dataclass
class Stage1Config(NotebookConfig):
    """Parameters of notebook 01_stage1_contrastive (field names equal its parameters cell); defaults = demo profile."""

    run_name: str = "lab"
    runs_dir: str = "runs"
    train_list: str = ""
    train_root: str = ""
    test_root: str = ""
    trials: str = ""
    val_trials: str = ""
    eval_trials: dict = field(default_factory=dict)
    norm_cohort: str = "train"
    norm_cohort_size: int = 600
    norm_top_n: int = 100
    musan_root: str = ""
    rir_root: str = ""
    augment: bool = True
    channels: int = 128
    mfa_channels: int = REFERENCE_MFA_CHANNELS
    frames: int = 100
    batch_size: int = 32
    epochs: int = 12
    lr: float = 0.001
    lr_decay: float = 0.90
    decay_every: int = 5
    test_interval: int = 2
    aat_weight: float = 3.0
    workers: int = 1
    device: str = "auto"
    precision: str = "fp32"
    nproc: int = 1
    sync_batchnorm: bool = False
    resume: bool = True
    allow_changed_params: bool = False
    max_steps: int = 0
    keep_every: int = DEFAULT_KEEP_EVERY
    checkpoint_minutes: float = DEFAULT_MINUTES
    seed: int = 0
    interactive: bool = True
    recompute: bool = False  # True: compute again where the run has results (lgl_helpers.notebook.viewing)

    def validate(self) -> None:
        check_channels(self.name_of("channels"), self.channels)
        check_int(self.name_of("mfa_channels"), self.mfa_channels, 8)
        check_int(self.name_of("frames"), self.frames, 1)
        check_int(
            self.name_of("batch_size"), self.batch_size, 2, "an integer >= 2 (the contrastive loss needs negatives)"
        )
        check_int(self.name_of("epochs"), self.epochs, 1)
        check_positive(self.name_of("lr"), self.lr)
        check_fraction(self.name_of("lr_decay"), self.lr_decay)
        check_int(self.name_of("decay_every"), self.decay_every, 1)
        check_int(self.name_of("test_interval"), self.test_interval, 1)
        check_non_negative(self.name_of("aat_weight"), self.aat_weight)
        check_int(self.name_of("workers"), self.workers, 0)
        check_choice(self.name_of("precision"), self.precision, PRECISIONS)
        check_int(self.name_of("nproc"), self.nproc, 1)
        check_int(self.name_of("max_steps"), self.max_steps, 0, "an integer >= 0 (0 = no limit)")
        check_int(self.name_of("keep_every"), self.keep_every, 0, "an integer >= 0 (0 = best and last only)")
        check_non_negative(
            self.name_of("checkpoint_minutes"),
            self.checkpoint_minutes,
            "a number of minutes >= 0 (0 = no mid-epoch checkpoints)",
        )
        owner = type(self).__name__
        check_eval_trials(owner, self.eval_trials)
        # Stage I runs before any clustering: no pseudo-label centroids to normalise with yet
        check_norm_parameters(owner, self.norm_cohort, self.norm_cohort_size, self.norm_top_n, ("none", "train"))


def stage_folder(config: Stage1Config) -> Path:
    return runs.run_folder(config.run_name, config.runs_dir) / STAGE_DIR
