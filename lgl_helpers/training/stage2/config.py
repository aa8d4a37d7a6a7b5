"""Stage II's notebook config (notebooks 03 and 04) and the parameters a resumed run must keep."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from lgl_helpers import runs
from lgl_helpers.clustering.cluster import check_n_clusters_over
from lgl_helpers.clustering.kmeans import REFERENCE_MAX_POINTS_PER_CENTROID, REFERENCE_N_ITER, REFERENCE_SEED
from lgl_helpers.config import (
    NotebookConfig,
    check,
    check_channels,
    check_choice,
    check_gate,
    check_int,
    check_n_clusters,
    check_non_negative,
    check_positive,
)
from lgl_helpers.core.embed import PRECISIONS
from lgl_helpers.core.evaluation import check_eval_trials
from lgl_helpers.core.gate import GATE_RULES, REFERENCE_EER_DECIMALS
from lgl_helpers.core.score_norm import check_norm_parameters
from lgl_helpers.training.retention import DEFAULT_KEEP_EVERY
from lgl_helpers.training.stage2.clean_losses import GATE_LOSSES
from lgl_helpers.training.stage2.correction import check_label_correction
from lgl_helpers.training.stage2.head_init import HEAD_INITS
from lgl_helpers.training.step_checkpoints import DEFAULT_MINUTES

REFERENCE_GATES = [1, 3, 3, 5, 6]
REFERENCE_MAX_EPOCHS = 100  # Stage2/main_train.py --max_epoch: all epochs of a run, T and L of every iteration
# Parameters that define the run's results so far; a resumed run must keep them (the others steer
# how far the run goes or how it is shown and may change between calls).
FIXED_FIELDS = (
    "mode",
    "init_model",
    "train_list",
    "train_root",
    "augment",
    "musan_root",
    "rir_root",
    "n_clusters",
    "n_clusters_over",
    "cluster_n_iter",
    "cluster_max_points_per_centroid",
    "cluster_max_seconds",
    "cluster_seed",
    "compare_raw_eer",
    "frames",
    "batch_size",
    "lr",
    "head_init",
    "ema_decay",
    "seed",
)


@dataclass
class Stage2Config(NotebookConfig):
    """The parameters notebooks 03 and 04 share; use :class:`BaselineConfig` or :class:`LGLConfig`.

    Defaults = the demo profile on the toy corpus; ``notebooks/params/full.yaml`` holds the reference's
    VoxCeleb settings (6000 clusters, batch 400, 300 frames). ``mode`` is the subclass's, not a
    parameter: it names the run folder ``stage2_<mode>``. The reference's rules are the defaults:
    k-means seed ``cluster_seed`` 1234 (faiss's), EERs compared at 0.01 % (``compare_raw_eer``
    False) and at most ``max_epochs`` 100 epochs in all; ``keep_every`` only thins the loss records.
    """

    mode: ClassVar[str]
    fixed_fields: ClassVar[tuple[str, ...]] = FIXED_FIELDS

    run_name: str = "lab"
    runs_dir: str = "runs"
    init_model: str = ""
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
    n_clusters: int = 40
    n_clusters_over: int = 0
    cluster_n_iter: int = REFERENCE_N_ITER
    cluster_max_points_per_centroid: int = REFERENCE_MAX_POINTS_PER_CENTROID
    cluster_max_seconds: float = 0.0
    cluster_seed: int = REFERENCE_SEED
    max_iterations: int = 5
    last_channels: int = 0
    frames: int = 200
    batch_size: int = 64
    lr: float = 0.001
    head_init: str = "random"
    ema_decay: float = 0.0
    max_epochs_per_phase: int = 6
    max_epochs: int = REFERENCE_MAX_EPOCHS
    min_evals: int = 4
    patience: int = 3
    compare_raw_eer: bool = False
    keep_every: int = DEFAULT_KEEP_EVERY
    checkpoint_minutes: float = DEFAULT_MINUTES
    resume: bool = True
    allow_changed_params: bool = False
    workers: int = 2
    device: str = "auto"
    precision: str = "fp32"
    nproc: int = 1
    sync_batchnorm: bool = False
    seed: int = 0
    interactive: bool = True
    recompute: bool = False  # True: compute again where the run has results (lgl_helpers.notebook.viewing)

    def validate(self) -> None:
        check_n_clusters(self.n_clusters, name=self.name_of("n_clusters"))
        check_n_clusters_over(self.n_clusters_over, self.n_clusters, name=self.name_of("n_clusters_over"))
        check_int(self.name_of("cluster_n_iter"), self.cluster_n_iter, 1)
        check_int(self.name_of("cluster_max_points_per_centroid"), self.cluster_max_points_per_centroid, 1)
        check_non_negative(self.name_of("cluster_max_seconds"), self.cluster_max_seconds, "0 (full length) or positive")
        check_int(self.name_of("cluster_seed"), self.cluster_seed, 0)
        check_int(self.name_of("max_iterations"), self.max_iterations, 1)
        check_channels(self.name_of("last_channels"), self.last_channels, allow_zero=True)
        check_int(self.name_of("frames"), self.frames, 1)
        check_int(self.name_of("batch_size"), self.batch_size, 1)
        check_positive(self.name_of("lr"), self.lr)
        check(self.name_of("head_init"), self.head_init, self.head_init in HEAD_INITS, f"one of {HEAD_INITS}")
        check(
            self.name_of("ema_decay"),
            self.ema_decay,
            isinstance(self.ema_decay, (int, float))
            and not isinstance(self.ema_decay, bool)
            and 0 <= self.ema_decay < 1,
            "a number in [0, 1) (0: no weight averaging, the reference)",
        )
        check_int(
            self.name_of("max_epochs_per_phase"),
            self.max_epochs_per_phase,
            0,
            "an integer >= 0 (0 = until the stopping rule)",
        )
        check_int(self.name_of("max_epochs"), self.max_epochs, 0, "an integer >= 0 (0 = no cap)")
        check_int(self.name_of("min_evals"), self.min_evals, 1)
        check_int(self.name_of("patience"), self.patience, 1)
        check_int(self.name_of("keep_every"), self.keep_every, 0, "an integer >= 0 (0 = best and last only)")
        check_non_negative(
            self.name_of("checkpoint_minutes"),
            self.checkpoint_minutes,
            "a number of minutes >= 0 (0 = no mid-epoch checkpoints)",
        )
        check_int(self.name_of("workers"), self.workers, 0)
        check_choice(self.name_of("precision"), self.precision, PRECISIONS)
        check_int(self.name_of("nproc"), self.nproc, 1)
        owner = type(self).__name__
        check_eval_trials(owner, self.eval_trials)
        check_norm_parameters(owner, self.norm_cohort, self.norm_cohort_size, self.norm_top_n)
        if self.norm_cohort == "centroids" and self.norm_top_n > self.n_clusters:
            raise ValueError(
                f"{self.name_of('norm_top_n')}={self.norm_top_n} must be at most n_clusters={self.n_clusters} "
                "(the centroids cohort has one member per pseudo label)"
            )

    @property
    def eer_decimals(self) -> int | None:
        """Decimals of the EERs (%) the stopping rule and the best epochs compare; None = raw floats."""
        return None if self.compare_raw_eer else REFERENCE_EER_DECIMALS


@dataclass
class BaselineConfig(Stage2Config):
    """Parameters of notebook 03_stage2_baseline (field names equal its parameters cell): no gate."""

    mode: ClassVar[str] = "baseline"


@dataclass
class LGLConfig(Stage2Config):
    """Parameters of notebook 04_stage2_lgl (field names equal its parameters cell): the shared ones plus the gate's.

    ``gates``: one per iteration, each a number or ``"auto"``, or ``"auto"`` for all; ``pause_before_gate``
    stops the run before every phase L so that the gate tuner can set its gate. ``gate_losses``: which
    per-sample losses the gate is chosen on and applied to: ``"training"`` (the reference: each
    sample's loss in its training batch) or ``"clean"`` (one pass over the whole, unaugmented
    utterances with the model phase L starts from; :mod:`lgl_helpers.training.stage2.clean_losses`).
    ``gate_rule``: how ``"auto"`` places a gate: ``"valley"`` (the histogram valley, else Otsu) or
    ``"gmm"`` (equal posteriors of a two-component GMM on the log losses, else the valley rule).
    ``label_correction``: None (the reference: rejected samples are dropped) or
    ``{"confidence", "temperature"[, "predictor"]}``: rejected samples with a confident clean-pass
    prediction are relabelled and trained on (:mod:`lgl_helpers.training.stage2.correction`);
    it needs ``gate_losses="clean"``.
    """

    mode: ClassVar[str] = "lgl"
    fixed_fields: ClassVar[tuple[str, ...]] = (*FIXED_FIELDS, "gate_losses", "gate_rule", "label_correction")
    gates: list | str = field(default_factory=lambda: list(REFERENCE_GATES))
    pause_before_gate: bool = False
    gate_losses: str = "training"
    gate_rule: str = "valley"
    label_correction: dict | None = None

    def gate_spec(self, iteration: int) -> float | str:
        """The configured gate of ``iteration`` (1-based): a number or ``"auto"``."""
        spec = self.gates if isinstance(self.gates, str) else self.gates[iteration - 1]
        return spec if isinstance(spec, str) else float(spec)

    def validate(self) -> None:
        super().validate()
        check_choice(self.name_of("gate_losses"), self.gate_losses, GATE_LOSSES)
        check_choice(self.name_of("gate_rule"), self.gate_rule, GATE_RULES)
        self.label_correction = check_label_correction(self.label_correction, self.name_of("label_correction"))
        if self.label_correction is not None and self.gate_losses != "clean":
            raise ValueError(
                f"{self.name_of('label_correction')} needs {self.name_of('gate_losses')}='clean' "
                f"(it relabels on the clean pass's predictions), got {self.gate_losses!r}"
            )
        gates_rule = "a list of numbers / 'auto', or 'auto'"
        if isinstance(self.gates, str):
            check(self.name_of("gates"), self.gates, self.gates == "auto", gates_rule)
            return
        check(self.name_of("gates"), self.gates, isinstance(self.gates, (list, tuple)), gates_rule)
        for i, value in enumerate(self.gates):
            if value != "auto":
                check_gate(value, name=f"{self.name_of('gates')}[{i}]")
        if len(self.gates) < self.max_iterations:
            raise ValueError(
                f"{self.name_of('gates')} has {len(self.gates)} value(s) but max_iterations={self.max_iterations}: "
                "give one gate per iteration (or gates='auto')"
            )


CONFIGS = {config.mode: config for config in (BaselineConfig, LGLConfig)}


def stage_folder(config: Stage2Config) -> Path:
    return runs.run_folder(config.run_name, config.runs_dir) / f"stage2_{config.mode}"
