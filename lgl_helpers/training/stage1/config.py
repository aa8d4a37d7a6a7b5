"""Stage I's notebook config (notebook 01) and the fields a resumed run may change."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lgl_helpers import runs
from lgl_helpers.config import (
    STAGE1_METHOD_NAMES,
    NotebookConfig,
    _is_number,
    check,
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
# contrastive_aat: the reference's contrastive loss with AAT; dino: self-distillation (stage1/dino.py)
STAGE1_METHODS = tuple(STAGE1_METHOD_NAMES)
DINO_OPTIMIZERS = ("sgd", "adamw")
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
    stage1_method: str = "contrastive_aat"
    global_crops: int = 2
    global_frames: int = 150
    local_crops: int = 2
    local_frames: int = 80
    dino_out_dim: int = 4096
    dino_hidden_dim: int = 512
    dino_bottleneck_dim: int = 128
    dino_layers: int = 3
    dino_optimizer: str = "sgd"
    dino_lr: float = 0.2
    dino_min_lr: float = 0.00005
    dino_warmup_epochs: int = 2
    dino_weight_decay: float = 0.00005
    clip_grad: float = 3.0
    freeze_last_layer: int = 1
    teacher_momentum: float = 0.99
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_ratio: float = 0.2
    student_temp: float = 0.1
    center_momentum: float = 0.9
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
        check_choice(self.name_of("stage1_method"), self.stage1_method, STAGE1_METHODS)
        self._validate_dino()
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

    def _validate_dino(self) -> None:
        """DINO's parameters (checked whatever the method, so that a typo shows before a switch to it)."""
        check_int(
            self.name_of("global_crops"), self.global_crops, 2, "an integer >= 2 (each global crop teaches the others)"
        )
        check_int(self.name_of("global_frames"), self.global_frames, 1)
        check_int(self.name_of("local_crops"), self.local_crops, 0)
        check_int(self.name_of("local_frames"), self.local_frames, 1)
        check_int(self.name_of("dino_out_dim"), self.dino_out_dim, 2)
        check_int(self.name_of("dino_hidden_dim"), self.dino_hidden_dim, 1)
        check_int(self.name_of("dino_bottleneck_dim"), self.dino_bottleneck_dim, 1)
        check_int(self.name_of("dino_layers"), self.dino_layers, 1)
        check_choice(self.name_of("dino_optimizer"), self.dino_optimizer, DINO_OPTIMIZERS)
        check_positive(self.name_of("dino_lr"), self.dino_lr)
        check_non_negative(self.name_of("dino_min_lr"), self.dino_min_lr)
        check_int(self.name_of("dino_warmup_epochs"), self.dino_warmup_epochs, 0)
        check_non_negative(self.name_of("dino_weight_decay"), self.dino_weight_decay)
        check_non_negative(self.name_of("clip_grad"), self.clip_grad, "a number >= 0 (0 = no clipping)")
        check_int(self.name_of("freeze_last_layer"), self.freeze_last_layer, 0)
        for name in ("teacher_momentum", "center_momentum"):
            value = getattr(self, name)
            check(self.name_of(name), value, _is_number(value) and 0 <= value < 1, "a number in [0, 1)")
        for name in ("teacher_temp", "warmup_teacher_temp", "student_temp"):
            check_positive(self.name_of(name), getattr(self, name))
        value = self.warmup_teacher_temp_ratio
        check(
            self.name_of("warmup_teacher_temp_ratio"),
            value,
            _is_number(value) and 0 <= value <= 1,
            "a number in [0, 1]",
        )
        if self.stage1_method == "dino" and self.dino_warmup_epochs >= self.epochs:
            check(
                self.name_of("dino_warmup_epochs"), self.dino_warmup_epochs, False, f"fewer than epochs={self.epochs}"
            )


def stage_folder(config: Stage1Config) -> Path:
    return runs.run_folder(config.run_name, config.runs_dir) / STAGE_DIR
