"""Stage II: iterative clustering + classification, without (baseline) or with the loss gate (LGL).

METHOD.md, "Stage II". One engine runs both modes; an iteration is

1. **cluster** the training utterances with the current model (iteration 1: the Stage I model; later:
   the previous iteration's best L model, or best T model in baseline mode) → pseudo labels;
2. **phase T**: the encoder is re-initialised from the Stage I checkpoint and a fresh AAM-softmax
   head (margin 0.2, scale 30) classifies the pseudo labels; Adam at a fixed ``lr``, ``frames``-frame
   crops with the Stage II augmentation (reverb p 0.5 at unit RIR energy, noise p 0.5, babble of 3-8
   files); validation EER after every epoch; the stopping rule (:func:`lgl_helpers.core.gate.phase_should_stop`)
   or ``max_epochs_per_phase`` ends the phase and its best epoch is kept;
3. **phase L** (LGL mode only): training continues from the best T epoch (encoder and head; a fresh
   Adam, the learning rate being fixed) with the iteration's gate: the loss averages the samples whose
   per-sample cross-entropy is ≤ gate; a batch where none passes is counted and skipped. Same stopping
   rule; the best L epoch is kept.

With ``last_channels`` set (1024 in the paper), the last iteration trains an encoder of that width;
C=512 Stage I weights cannot initialise it, so that encoder starts from random weights.

The gate of iteration k is, in order of precedence: a value in ``gate_overrides.json`` (written by the
gate tuner of notebook 04), else ``gates[k-1]``; ``"auto"`` places it with
:func:`lgl_helpers.core.gate.auto_gate` on the per-sample losses of the last T epoch of iteration k.

Run folder ``runs/<run>/stage2_<mode>/``:

- ``state.json``: the machine-readable state, written atomically after every step (the commit
  point): current iteration / phase / epoch / gate, every evaluation, per-iteration results, the best
  model so far and the paths of every artefact (relative to the folder). A rerun resumes from it:
  same iteration, phase, gate and pseudo labels, from the last completed epoch.
- ``scores.txt``: one human-readable line per evaluated epoch.
- ``iter_XX/``: the clustering (``pseudo_labels.txt``, ``embeddings.npy``, ``quality.json``) and
  ``T/``, ``L/`` with ``epoch_XXX.model`` (kit checkpoints with the AAM head and optimizer; the
  best and the latest epoch of each phase are kept) and ``losses_epoch_XXX.npz`` for every epoch:
  ``index`` (n,) training-list index, ``per_sample_loss`` (n,) float32, ``selected`` (n,) bool and,
  when the list has speaker ids, ``reliable`` (n,) bool = the pseudo label agrees with the majority
  speaker of its cluster (analysis only, never used for training).
- ``best.model``: the model with the lowest validation EER of the whole run, ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lgl_helpers import runs
from lgl_helpers.config import (
    NotebookConfig, check, check_channels, check_choice, check_gate, check_int, check_n_clusters, check_non_negative,
    check_positive,
)
from lgl_helpers.clustering import cluster
from lgl_helpers.clustering.kmeans import REFERENCE_MAX_POINTS_PER_CENTROID, REFERENCE_N_ITER
from lgl_helpers.clustering.pseudo_labels import read_pseudo_labels
from lgl_helpers.clustering.quality import majority_agreement
from lgl_helpers.core import gate as gate_rules
from lgl_helpers.core.augment import AugmentSources
from lgl_helpers.core.data import Stage2Dataset, check_training_list, make_loader, stage2_inputs
from lgl_helpers.core.embed import evaluate_trials
from lgl_helpers.corpus.lists import Trial, TrainEntry, check_list, read_eval_trials
from lgl_helpers.core.losses import AAMSoftmax
from lgl_helpers.core.models import ECAPATDNN, load_encoder, save_encoder

log = logging.getLogger(__name__)

MODES = ("baseline", "lgl")
REFERENCE_GATES = [1, 3, 3, 5, 6]
STATE_FORMAT = "lgl-kit-stage2-state"
GATE_OVERRIDES = "gate_overrides.json"
# Parameters that define the run's results so far; a resumed run must keep them (the others steer
# how far the run goes or how it is shown and may change between calls).
FIXED_FIELDS = (
    "mode", "init_model", "train_list", "train_root", "augment", "musan_root", "rir_root", "n_clusters",
    "cluster_n_iter", "cluster_max_points_per_centroid", "cluster_max_seconds", "frames", "batch_size", "lr", "seed",
)


@dataclass
class Stage2Config(NotebookConfig):
    """Parameters of notebooks 03_stage2_baseline and 04_stage2_lgl (field names equal their parameters cells).

    Defaults = the demo profile on the toy corpus; ``notebooks/params/full.yaml`` holds the reference's
    VoxCeleb settings (6000 clusters, batch 400, 300 frames).
    """

    run_name: str = "demo"
    runs_dir: str = "runs"
    mode: str = "lgl"
    init_model: str = ""
    train_list: str = ""
    train_root: str = ""
    test_root: str = ""
    trials: str = ""
    val_trials: str = ""
    musan_root: str = ""
    rir_root: str = ""
    augment: bool = True
    n_clusters: int = 40
    cluster_n_iter: int = REFERENCE_N_ITER
    cluster_max_points_per_centroid: int = REFERENCE_MAX_POINTS_PER_CENTROID
    cluster_max_seconds: float = 0.0
    max_iterations: int = 5
    gates: list | str = field(default_factory=lambda: list(REFERENCE_GATES))
    last_channels: int = 0
    frames: int = 200
    batch_size: int = 64
    lr: float = 0.001
    max_epochs_per_phase: int = 6
    min_evals: int = 4
    patience: int = 3
    pause_before_gate: bool = False
    resume: bool = True
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    interactive: bool = True

    def gate_spec(self, iteration: int) -> float | str:
        """The configured gate of ``iteration`` (1-based): a number or ``"auto"``."""
        spec = self.gates if isinstance(self.gates, str) else self.gates[iteration - 1]
        return spec if isinstance(spec, str) else float(spec)

    def validate(self) -> None:
        check_choice(self.name_of("mode"), self.mode, MODES)
        check_n_clusters(self.n_clusters, name=self.name_of("n_clusters"))
        check_int(self.name_of("cluster_n_iter"), self.cluster_n_iter, 1)
        check_int(self.name_of("cluster_max_points_per_centroid"), self.cluster_max_points_per_centroid, 1)
        check_non_negative(self.name_of("cluster_max_seconds"), self.cluster_max_seconds, "0 (full length) or positive")
        check_int(self.name_of("max_iterations"), self.max_iterations, 1)
        check_channels(self.name_of("last_channels"), self.last_channels, allow_zero=True)
        check_int(self.name_of("frames"), self.frames, 1)
        check_int(self.name_of("batch_size"), self.batch_size, 1)
        check_positive(self.name_of("lr"), self.lr)
        check_int(self.name_of("max_epochs_per_phase"), self.max_epochs_per_phase, 0,
                  "an integer >= 0 (0 = until the stopping rule)")
        check_int(self.name_of("min_evals"), self.min_evals, 1)
        check_int(self.name_of("patience"), self.patience, 1)
        check_int(self.name_of("workers"), self.workers, 0)
        gates_rule = "a list of numbers / 'auto', or 'auto'"
        if isinstance(self.gates, str):
            check(self.name_of("gates"), self.gates, self.gates == "auto", gates_rule)
            return
        check(self.name_of("gates"), self.gates, isinstance(self.gates, (list, tuple)), gates_rule)
        for i, value in enumerate(self.gates):
            if value != "auto":
                check_gate(value, name=f"{self.name_of('gates')}[{i}]")
        if self.mode == "lgl" and len(self.gates) < self.max_iterations:
            raise ValueError(
                f"{self.name_of('gates')} has {len(self.gates)} value(s) but max_iterations={self.max_iterations}: "
                "give one gate per iteration (or gates='auto')"
            )


def stage_folder(config: Stage2Config) -> Path:
    return runs.run_folder(config.run_name, config.runs_dir) / f"stage2_{config.mode}"


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


@dataclass
class Stage2Data:
    """Everything Stage II reads, validated before any work."""

    paths: dict
    init_model: Path
    entries: list[TrainEntry]
    val_trials: list[Trial]
    test_trials: list[Trial]
    sources: AugmentSources | None

    @property
    def same_val_test(self) -> bool:
        return self.paths["val_trials"] == self.paths["trials"]

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
    entries = check_training_list(paths, runs.run_folder(config.run_name, config.runs_dir),
                                  batch_size=config.batch_size, frames=config.frames)
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
    return Stage2Data(paths, init_model, entries, val_trials, test_trials, sources)


# ----------------------------------------------------------------------------------------------
# Gate overrides (written by the gate tuner, read when a phase L starts)
# ----------------------------------------------------------------------------------------------


def read_gate_overrides(stage_dir: str | Path) -> dict[int, float]:
    """``{iteration: gate}`` from ``stage_dir/gate_overrides.json`` (empty when absent)."""
    path = Path(stage_dir) / GATE_OVERRIDES
    if not path.is_file():
        return {}
    raw = runs.read_json(path)
    overrides = {}
    for key, value in raw.items():
        try:
            overrides[int(key)] = check_gate(value, name=f"gate of iteration {key}")
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: entry {key!r}: {error}") from None
    return overrides


def write_gate_override(stage_dir: str | Path, iteration: int, gate: float) -> Path:
    """Set the gate of ``iteration``'s phase L (takes precedence over ``gates``); atomic."""
    gate = check_gate(gate)
    overrides = read_gate_overrides(stage_dir)
    overrides[int(iteration)] = gate
    return runs.write_json(Path(stage_dir) / GATE_OVERRIDES, {str(k): v for k, v in sorted(overrides.items())})


def next_gate_iteration(state: dict) -> int | None:
    """The iteration whose phase L has not fixed its gate yet (the one a tuned gate applies to), or None."""
    if state.get("mode") != "lgl" or state.get("phase") == "done":
        return None
    iteration = int(state["iteration"])
    if state["phase"] == "L" and state.get("gate") is not None:
        iteration += 1
    return iteration if iteration <= int(state["params"].get("max_iterations", iteration)) else None


def apply_gate(stage_dir: str | Path, gate: float) -> str:
    """Gate-tuner button: make ``gate`` the gate of the next phase L that has not started. Returns a message."""
    state = read_state(stage_dir)
    target = None if state is None else next_gate_iteration(state)
    if target is None:
        return "no phase L is pending (the run is finished or not in LGL mode): set gates / max_iterations instead"
    write_gate_override(stage_dir, target, gate)
    return f"gate {float(gate):.3f} will be used by phase L of iteration {target}; run the training cell again"


# ----------------------------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------------------------


def read_state(stage_dir: str | Path) -> dict | None:
    path = Path(stage_dir) / "state.json"
    if not path.is_file():
        return None
    state = runs.read_json(path)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not a Stage II state file (format {state.get('format')!r})")
    return state


def _fixed_params(config: Stage2Config, data: Stage2Data) -> dict:
    params = dataclasses.asdict(config)
    params.update({key: (str(value) if value is not None else "") for key, value in data.paths.items()})
    params["init_model"] = str(data.init_model)
    return params


def _new_state(config: Stage2Config, params: dict) -> dict:
    return {
        "format": STATE_FORMAT,
        "version": 1,
        "mode": config.mode,
        "status": "running",
        "iteration": 1,
        "phase": "cluster",
        "epoch": 0,
        "gate": None,
        "params": params,
        "iterations": [],
        "history": [],
        "best": None,
        "paused_iterations": [],
        "wall_seconds": 0.0,
        "paths": {"state": "state.json", "scores": "scores.txt", "best_model": "best.model", "metrics": "metrics.json",
                  "gate_overrides": GATE_OVERRIDES},
    }


def _scores_text(history: list[dict]) -> str:
    lines = []
    for rec in history:
        gate = "none" if rec["gate"] is None else f"{rec['gate']:.3f}"
        lines.append(
            f"Iteration {rec['iteration']}, phase {rec['phase']}, epoch {rec['epoch']}, gate {gate}, "
            f"LOSS {rec['loss']:.4f}, ACC {rec['accuracy']:.2f}, selected {100 * rec['fraction_selected']:.1f}%, "
            f"skipped batches {rec['skipped_batches']}, EER {rec['eer']:.4f}, minDCF {rec['min_dcf']:.4f}, "
            f"minDCF0.01 {rec['min_dcf_0.01']:.4f}"
        )
    return "\n".join(lines) + "\n"


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])


def _cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def read_epoch_losses(path: str | Path) -> dict[str, np.ndarray]:
    """One epoch's per-sample record: ``index`` (n,), ``per_sample_loss`` (n,), ``selected`` (n,), ``reliable`` (n,) if known."""
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def latest_epoch_losses(stage_dir: str | Path, phase: str | None = None) -> dict | None:
    """The per-sample record of the latest trained epoch (of ``phase`` "T"/"L" when given), plus its
    ``iteration``, ``phase``, ``epoch`` and ``gate``; None before the first epoch."""
    state = read_state(stage_dir)
    if state is None:
        return None
    records = [r for r in state["history"] if phase is None or r["phase"] == phase]
    if not records:
        return None
    record = records[-1]
    out = read_epoch_losses(Path(stage_dir) / record["losses"])
    out.update({key: record[key] for key in ("iteration", "phase", "epoch", "gate")})
    return out


def gate_tuner(stage_dir: str | Path, config: Stage2Config) -> tuple[gate_rules.GateTuner, str]:
    """A :class:`~lgl_helpers.core.gate.GateTuner` on the latest epoch's per-sample losses, and a figure title.

    The starting gate is the one the next pending phase L would use (its override, else its configured
    number); with ``"auto"`` or no pending phase, the latest epoch's gate or else the automatic gate.
    """
    latest = latest_epoch_losses(stage_dir)
    if latest is None:
        raise ValueError(f"{stage_dir}: no Stage II epoch has been trained yet; run the training cell first")
    state = read_state(stage_dir)
    target = next_gate_iteration(state)
    start = None
    if target is not None:
        spec = read_gate_overrides(stage_dir).get(target, config.gate_spec(target))
        start = None if spec == "auto" else float(spec)
    elif latest["gate"] is not None:
        start = float(latest["gate"])
    tuner = gate_rules.GateTuner(latest["per_sample_loss"], latest.get("reliable"), gate=start)
    title = (f"iteration {latest['iteration']}, phase {latest['phase']}, epoch {latest['epoch']}"
             + (f" → gate for iteration {target}" if target is not None else ""))
    return tuner, title


def stage1_eer(config: Stage2Config) -> float | None:
    """Test EER of Stage I from ``runs/<run>/stage1/metrics.json`` (None when absent)."""
    path = runs.run_folder(config.run_name, config.runs_dir) / "stage1" / "metrics.json"
    return runs.read_json(path).get("eer") if path.is_file() else None


# ----------------------------------------------------------------------------------------------
# The engine
# ----------------------------------------------------------------------------------------------


class _Engine:
    def __init__(self, config: Stage2Config, data: Stage2Data, on_epoch: Callable | None):
        self.config = config
        self.data = data
        self.on_epoch = on_epoch
        self.stage_dir = stage_folder(config)
        self.device = runs.get_device(config.device)
        self.speakers = data.speakers
        self.stage1_channels = load_encoder(data.init_model).channels
        self.last_commit = time.perf_counter()
        self.state: dict = {}

    # -- bookkeeping ------------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        return self.stage_dir / rel

    def commit(self) -> None:
        """Write state.json (atomic): everything written before it is part of the run."""
        now = time.perf_counter()
        self.state["wall_seconds"] += now - self.last_commit
        self.last_commit = now
        runs.write_json(self.path("state.json"), self.state)

    def iteration_record(self, iteration: int) -> dict:
        return self.state["iterations"][iteration - 1]

    def channels_for(self, iteration: int) -> int:
        last = self.config.last_channels
        if last and iteration == self.config.max_iterations and last != self.stage1_channels:
            return last
        return self.stage1_channels

    # -- steps --------------------------------------------------------------------------------
    def load_or_start(self) -> None:
        params = _fixed_params(self.config, self.data)
        state = read_state(self.stage_dir) if self.config.resume else None
        if state is None:
            if not self.config.resume and self.stage_dir.is_dir():
                self._remove_previous()
            self.state = _new_state(self.config, params)
            self.commit()
            return
        changed = {k: (state["params"].get(k), params[k]) for k in FIXED_FIELDS if state["params"].get(k) != params[k]}
        if changed:
            shown = ", ".join(f"{k}: {old!r} → {new!r}" for k, (old, new) in changed.items())
            raise ValueError(
                f"{self.path('state.json')}: the run was started with other values of {shown}; "
                "use the same values, another run_name, or resume=False to start over"
            )
        if state["phase"] == "done" and state["iteration"] < self.config.max_iterations:
            # A finished run extended by a larger max_iterations continues with the next clustering.
            state.update(iteration=state["iteration"] + 1, phase="cluster", epoch=0, gate=None, status="running")
        state["params"] = params
        self.state = state
        log.info("resuming Stage II %s: iteration %d, phase %s, epoch %d done, gate %s",
                 self.config.mode, state["iteration"], state["phase"], state["epoch"], state["gate"])

    def _remove_previous(self) -> None:
        stale = [self.path(name) for name in ("state.json", "metrics.json", "best.model", "scores.txt", GATE_OVERRIDES)]
        stale = [p for p in stale if p.is_file()] + sorted(self.stage_dir.glob("iter_*/*/*.model"))
        stale += sorted(self.stage_dir.glob("iter_*/*/*.npz"))
        if stale:
            log.warning("resume=False: removing %d file(s) of an earlier run in %s", len(stale), self.stage_dir)
            for path in stale:
                path.unlink()

    def cluster_step(self, iteration: int) -> None:
        cfg = self.config
        if iteration == 1:
            model_path = self.data.init_model
        else:
            previous = self.iteration_record(iteration - 1)
            phase = "L" if cfg.mode == "lgl" else "T"
            model_path = self.path(previous["phases"][phase]["best_model"])
        iter_dir = f"iter_{iteration:02d}"
        log.info("iteration %d: clustering with %s", iteration, model_path)
        result = cluster.cluster_utterances(
            load_encoder(model_path), self.data.entries, self.data.paths["train_root"], cfg.n_clusters,
            self.path(iter_dir), n_iter=cfg.cluster_n_iter, seed=cfg.seed,
            max_points_per_centroid=cfg.cluster_max_points_per_centroid,
            max_seconds=cfg.cluster_max_seconds or None, device=str(self.device),
            use_gpu=False if self.device.type == "cpu" else "auto", show_progress=True,
        )
        record = {
            "iteration": iteration,
            "channels": self.channels_for(iteration),
            "cluster_model": str(model_path),
            "pseudo_labels": f"{iter_dir}/pseudo_labels.txt",
            "nmi": result.quality["nmi"] if self.speakers is not None else None,
            "purity": result.quality["purity"] if self.speakers is not None else None,
            "n_clusters_used": result.quality["n_nonempty_clusters"],
            "gate": None,
            "gate_source": None,
            "phases": {},
        }
        del self.state["iterations"][iteration - 1:]
        self.state["iterations"].append(record)
        self.state.update(phase="T", epoch=0, gate=None)
        self.commit()

    def pseudo_labels(self, iteration: int) -> np.ndarray:
        return read_pseudo_labels(
            self.path(self.iteration_record(iteration)["pseudo_labels"]), self.data.entries, self.config.n_clusters
        )

    def resolve_gate(self, iteration: int) -> tuple[float, str]:
        overrides = read_gate_overrides(self.stage_dir)
        if iteration in overrides:
            return overrides[iteration], "override"
        spec = self.config.gate_spec(iteration)
        if spec == "auto":
            t_phase = self.iteration_record(iteration)["phases"]["T"]
            losses = read_epoch_losses(self.path(t_phase["last_losses"]))["per_sample_loss"]
            return float(gate_rules.auto_gate(losses, seed=self.config.seed)), "auto"
        return float(spec), "config"

    def build_models(self, iteration: int, phase: str) -> tuple[ECAPATDNN, AAMSoftmax]:
        """Starting point of a phase: T = Stage I encoder (or a fresh wider one) + new head; L = best T."""
        cfg = self.config
        if phase == "L":
            ckpt = torch.load(self.path(self.iteration_record(iteration)["phases"]["T"]["best_model"]),
                              map_location="cpu", weights_only=True)
            encoder = ECAPATDNN(int(ckpt["channels"]))
            encoder.load_state_dict(ckpt["encoder"])
            head = AAMSoftmax(cfg.n_clusters)
            head.load_state_dict(ckpt["head"])
            return encoder, head
        channels = self.channels_for(iteration)
        # Seeded per iteration so that a new head (and a widened encoder) is reproducible on resume.
        torch.manual_seed(cfg.seed * 1000 + iteration)
        if channels == self.stage1_channels:
            encoder = load_encoder(self.data.init_model)
        else:
            log.info("iteration %d: C=%d encoder trained from random weights (Stage I has C=%d)",
                     iteration, channels, self.stage1_channels)
            encoder = ECAPATDNN(channels)
        return encoder, AAMSoftmax(cfg.n_clusters)

    def phase_over(self, info: dict) -> bool:
        """The stopping rule, or the epoch limit of ``max_epochs_per_phase``."""
        cfg = self.config
        over = bool(cfg.max_epochs_per_phase) and len(info["eers"]) >= cfg.max_epochs_per_phase
        return over or gate_rules.phase_should_stop(info["eers"], cfg.min_evals, cfg.patience)

    def run_phase(self, iteration: int, phase: str) -> str | None:
        """Train ``phase`` of ``iteration`` from where the state says until it ends.

        Returns the checkpoint that becomes stale once the phase's end is committed (its last epoch,
        when that is not its best), or None.
        """
        record = self.iteration_record(iteration)
        if phase == "L" and self.state["gate"] is None:
            gate, source = self.resolve_gate(iteration)
            record.update(gate=gate, gate_source=source)
            self.state["gate"] = gate
            log.info("iteration %d: phase L with gate %.4f (%s)", iteration, gate, source)
            self.commit()
        gate = float("inf") if phase == "T" else float(self.state["gate"])
        info = record["phases"].setdefault(
            phase, {"eers": [], "best_epoch": None, "best_eer": None, "best_model": None, "last_model": None,
                    "last_losses": None, "skipped_batches": 0},
        )
        if not self.phase_over(info):
            self.train_until_over(iteration, phase, gate, info)
        log.info("iteration %d: phase %s over after %d epochs; best epoch %d, EER %.2f%%", iteration, phase,
                 len(info["eers"]), info["best_epoch"], info["best_eer"])
        stale = info["last_model"] if info["last_model"] != info["best_model"] else None
        info["last_model"] = info["best_model"]
        return stale

    def train_until_over(self, iteration: int, phase: str, gate: float, info: dict) -> None:
        cfg = self.config
        ckpt = None
        if info["eers"]:
            # Resume after the last committed epoch: its model, head, optimizer and RNG state.
            ckpt = torch.load(self.path(info["last_model"]), map_location="cpu", weights_only=True)
            encoder = ECAPATDNN(int(ckpt["channels"]))
            encoder.load_state_dict(ckpt["encoder"])
            head = AAMSoftmax(cfg.n_clusters)
            head.load_state_dict(ckpt["head"])
            _set_rng_state(ckpt["rng"])
        else:
            encoder, head = self.build_models(iteration, phase)
        encoder.to(self.device)
        head.to(self.device)
        optimizer = torch.optim.Adam(list(encoder.parameters()) + list(head.parameters()), lr=cfg.lr)
        if ckpt is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
        labels = self.pseudo_labels(iteration)
        reliable = majority_agreement(labels, self.speakers) if self.speakers is not None else None
        dataset = Stage2Dataset(self.data.entries, self.data.paths["train_root"], labels, cfg.frames,
                                self.data.sources, seed=cfg.seed, check_files=False)
        loader = make_loader(dataset, cfg.batch_size, cfg.workers, cfg.seed, self.device)
        # Each (iteration, phase, epoch) gets its own data order and augmentation draws.
        phase_offset = {"T": 0, "L": 5_000}[phase]
        while not self.phase_over(info):
            epoch = len(info["eers"]) + 1
            tic = time.perf_counter()
            loader.sampler.set_epoch(iteration * 10_000 + phase_offset + epoch)
            stats, arrays = _train_epoch(encoder, head, optimizer, loader, gate, self.device,
                                         f"iter {iteration} {phase} epoch {epoch}")
            if reliable is not None:
                arrays["reliable"] = reliable[arrays["index"]]
            result = evaluate_trials(encoder, self.data.val_trials, self.data.paths["test_root"],
                                     device=self.device, show_progress=False)
            evaluation = {k: float(result[k]) for k in ("eer", "min_dcf", "min_dcf_0.01")}
            self.save_epoch(iteration, phase, epoch, encoder, head, optimizer, info, stats, arrays, evaluation,
                            gate, time.perf_counter() - tic)
            if self.on_epoch:
                self.on_epoch(self.state["history"][-1], self.state)

    def save_epoch(self, iteration, phase, epoch, encoder, head, optimizer, info, stats, arrays, evaluation,
                   gate, seconds) -> None:
        rel_dir = f"iter_{iteration:02d}/{phase}"
        model_rel = f"{rel_dir}/epoch_{epoch:03d}.model"
        losses_rel = f"{rel_dir}/losses_epoch_{epoch:03d}.npz"
        extra = {
            "stage": "stage2", "mode": self.config.mode, "iteration": iteration, "phase": phase, "epoch": epoch,
            "gate": None if math.isinf(gate) else gate, "head": _cpu_state(head),
            "optimizer": optimizer.state_dict(), "rng": _rng_state(), "n_clusters": self.config.n_clusters,
        }
        save_encoder(self.path(model_rel), encoder, extra)
        runs.atomic_write_bytes(self.path(losses_rel), _npz_bytes(arrays))
        previous_best = info["best_eer"]
        info["eers"].append(evaluation["eer"])
        info["skipped_batches"] += stats["skipped_batches"]
        previous = {info["best_model"], info["last_model"]}
        if gate_rules.best_index(info["eers"]) + 1 == epoch:
            info.update(best_epoch=epoch, best_eer=evaluation["eer"], best_model=model_rel)
        info.update(last_model=model_rel, last_losses=losses_rel)
        stale = previous - {info["best_model"], info["last_model"], None}
        record = {
            "iteration": iteration, "phase": phase, "epoch": epoch,
            "gate": None if math.isinf(gate) else gate, **stats, **evaluation,
            "seconds": seconds, "model": model_rel, "losses": losses_rel,
        }
        if "reliable" in arrays:
            selected, reliable = arrays["selected"], arrays["reliable"]
            record["precision_selected"] = float(reliable[selected].mean()) if selected.any() else None
            record["precision_rejected"] = float(reliable[~selected].mean()) if (~selected).any() else None
        self.state["history"].append(record)
        self.state["epoch"] = epoch
        best_run = self.state["best"]
        if best_run is None or evaluation["eer"] < best_run["eer"]:
            # The run's best is its phase's best, whose checkpoint is never pruned.
            self.state["best"] = {"eer": evaluation["eer"], "min_dcf": evaluation["min_dcf"],
                                  "min_dcf_0.01": evaluation["min_dcf_0.01"], "iteration": iteration,
                                  "phase": phase, "epoch": epoch, "model": model_rel}
        runs.atomic_write_text(self.path("scores.txt"), _scores_text(self.state["history"]))
        self.commit()
        # Checkpoints the state no longer points at go only after the commit.
        for rel in stale:
            if rel and self.path(rel).is_file():
                self.path(rel).unlink()
        log.info(
            "iter %d %s epoch %d: loss %.4f acc %.1f%% selected %.1f%% skipped %d | val EER %.2f%% minDCF %.4f%s",
            iteration, phase, epoch, stats["loss"], stats["accuracy"], 100 * stats["fraction_selected"],
            stats["skipped_batches"], evaluation["eer"], evaluation["min_dcf"],
            "" if previous_best is None or evaluation["eer"] >= previous_best else " (best of phase)",
        )

    def advance(self, iteration: int, phase: str, stale: str | None) -> None:
        """Move the state past a finished phase (and past the iteration when it was its last phase)."""
        if phase == "T" and self.config.mode == "lgl":
            self.state.update(phase="L", epoch=0, gate=None)
        elif iteration < self.config.max_iterations:
            self.state.update(iteration=iteration + 1, phase="cluster", epoch=0, gate=None)
        else:
            self.state.update(phase="done", epoch=0)
        self.commit()
        # The phase's last checkpoint goes only once the state no longer points at it.
        if stale and self.path(stale).is_file():
            self.path(stale).unlink()

    def run(self) -> str:
        """Run until done (returns "done") or paused before a gate (returns "paused_before_gate")."""
        while self.state["phase"] != "done":
            iteration, phase = self.state["iteration"], self.state["phase"]
            if phase == "cluster":
                self.cluster_step(iteration)
                continue
            if (phase == "L" and self.state["gate"] is None and self.config.pause_before_gate
                    and iteration not in self.state["paused_iterations"]):
                self.state["paused_iterations"].append(iteration)
                self.state["status"] = "paused_before_gate"
                self.commit()
                log.info("paused before phase L of iteration %d: choose its gate, then run again", iteration)
                return "paused_before_gate"
            self.state["status"] = "running"
            stale = self.run_phase(iteration, phase)
            self.advance(iteration, phase, stale)
        self.state["status"] = "done"
        self.commit()
        return "done"

    def write_best_model(self) -> Path:
        """``best.model``: the encoder of the lowest validation EER of the run (kit checkpoint, with its head)."""
        best = self.state["best"]
        ckpt = torch.load(self.path(best["model"]), map_location="cpu", weights_only=True)
        encoder = ECAPATDNN(int(ckpt["channels"]))
        encoder.load_state_dict(ckpt["encoder"])
        extra = {k: v for k, v in ckpt.items() if k not in ("format", "channels", "encoder", "optimizer", "rng")}
        return save_encoder(self.path("best.model"), encoder, extra)

    def final_metrics(self) -> dict:
        best = self.state["best"]
        self.write_best_model()
        if self.data.same_val_test:
            test = {k: best[k] for k in ("eer", "min_dcf", "min_dcf_0.01")}
        else:
            result = evaluate_trials(load_encoder(self.path("best.model")), self.data.test_trials,
                                     self.data.paths["test_root"], device=self.device, show_progress=False)
            test = {k: float(result[k]) for k in ("eer", "min_dcf", "min_dcf_0.01")}
        iterations = []
        for item in self.state["iterations"]:
            t, l_phase = item["phases"].get("T", {}), item["phases"].get("L", {})
            iterations.append({
                "iteration": item["iteration"], "nmi": item["nmi"], "purity": item["purity"],
                "channels": item["channels"], "gate": item["gate"], "gate_source": item["gate_source"],
                "best_T_eer": t.get("best_eer"), "best_T_epoch": t.get("best_epoch"),
                "best_L_eer": l_phase.get("best_eer"), "best_L_epoch": l_phase.get("best_epoch"),
                "epochs": len(t.get("eers", [])) + len(l_phase.get("eers", [])),
                "skipped_batches": t.get("skipped_batches", 0) + l_phase.get("skipped_batches", 0),
            })
        metrics = {
            "mode": self.config.mode,
            **test,
            "best": {k: best[k] for k in ("iteration", "phase", "epoch")} | {"val_eer": best["eer"]},
            "best_checkpoint": str(self.path("best.model")),
            "stage1_eer": stage1_eer(self.config),
            "iterations": iterations,
            "evaluations": [
                {k: rec.get(k) for k in ("iteration", "phase", "epoch", "gate", "eer", "min_dcf", "min_dcf_0.01",
                                         "fraction_selected", "precision_selected", "precision_rejected")}
                for rec in self.state["history"]
            ],
            "trials": str(self.data.paths["trials"]),
            "val_trials": str(self.data.paths["val_trials"]),
            "val_is_test": self.data.same_val_test,
            "wall_seconds": self.state["wall_seconds"],
        }
        runs.write_json(self.path("metrics.json"), metrics)
        return metrics


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _train_epoch(encoder, head, optimizer, loader, gate: float, device, desc: str) -> tuple[dict, dict]:
    """One pass over the loader. Returns (stats, per-sample arrays ``index``, ``per_sample_loss``, ``selected``).

    A batch in which no sample passes the gate is counted in ``skipped_batches`` and makes no update.
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


def run_stage2(
    config: Stage2Config,
    on_epoch: Callable[[dict, dict], None] | None = None,
    data: Stage2Data | None = None,
) -> dict:
    """Run (or resume) Stage II as configured.

    ``on_epoch(record, state)`` is called after every epoch has been committed (``record``: that
    epoch's entry of ``state["history"]``); an exception raised there interrupts the run like a crash,
    and the next call resumes after that epoch. Returns ``{"status": "done", **metrics.json}`` or
    ``{"status": "paused_before_gate", "iteration": k}`` when ``pause_before_gate`` stopped before
    phase L of iteration k (call again to continue); both with ``stage_dir`` and ``state``.
    """
    data = data if data is not None else prepare_data(config)
    stage_dir = stage_folder(config)
    runs.add_file_log(stage_dir, stage_dir.name)
    runs.open_run(stage_dir, _fixed_params(config, data), stage_dir.name)
    engine = _Engine(config, data, on_epoch)
    engine.load_or_start()
    status = engine.run()
    out = {"status": status, "stage_dir": str(stage_dir), "state": engine.state}
    if status != "done":
        out["iteration"] = engine.state["iteration"]
        return out
    metrics = engine.final_metrics()
    log.info("Stage II %s done: best %s (iteration %d, phase %s, epoch %d), test EER %.2f%%, minDCF %.4f",
             config.mode, engine.path("best.model"), metrics["best"]["iteration"], metrics["best"]["phase"],
             metrics["best"]["epoch"], metrics["eer"], metrics["min_dcf"])
    out.update(metrics)
    return out


# ----------------------------------------------------------------------------------------------
# Notebook figures and tables
# ----------------------------------------------------------------------------------------------


def plot_eer_per_epoch(history: list[dict], stage1_eer: float | None = None, ax=None):
    """Validation EER of every Stage II epoch in run order; T and L phases marked, iterations separated.

    history: ``state["history"]``. Returns the matplotlib Figure (not displayed).
    """
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(8, 3.6))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    from matplotlib.ticker import MaxNLocator

    steps = np.arange(1, len(history) + 1)
    eers = np.array([rec["eer"] for rec in history], dtype=float)
    # One line per phase of an iteration: phase L restarts from the best T epoch, not from the last one.
    segment = [(rec["iteration"], rec["phase"]) for rec in history]
    for key in dict.fromkeys(segment):
        mask = np.array([s == key for s in segment], dtype=bool)
        ax.plot(steps[mask], eers[mask], color="0.6", linewidth=1)
    for phase, marker, color in (("T", "o", "tab:blue"), ("L", "s", "tab:green")):
        mask = np.array([rec["phase"] == phase for rec in history], dtype=bool)
        if mask.any():
            ax.scatter(steps[mask], eers[mask], marker=marker, color=color, s=22, zorder=3,
                       label="phase T (all samples)" if phase == "T" else "phase L (gated)")
    for i in range(1, len(history)):
        if history[i]["iteration"] != history[i - 1]["iteration"]:
            ax.axvline(i + 0.5, color="black", linestyle="--", linewidth=0.8, alpha=0.6)
    for i, rec in enumerate(history):
        if i == 0 or rec["iteration"] != history[i - 1]["iteration"]:
            ax.annotate(f"it {rec['iteration']}", (i + 1, 1.0), xycoords=("data", "axes fraction"),
                        va="top", fontsize=8)
    if stage1_eer is not None:
        ax.axhline(stage1_eer, color="tab:red", linestyle=":", label=f"Stage I ({stage1_eer:.2f} %)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Stage II epoch (run order; dashed lines separate iterations)")
    ax.set_ylabel("validation EER (%)")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_nmi_per_iteration(iterations: list[dict], ax=None):
    """NMI of each iteration's pseudo labels (iterations: ``metrics["iterations"]`` or ``state["iterations"]``)."""
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(4.5, 3.2))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    points = [(it["iteration"], it["nmi"]) for it in iterations if it.get("nmi") is not None]
    if points:
        ax.plot(*zip(*points), marker="o")
    ax.set_xlabel("iteration")
    ax.set_ylabel("NMI of pseudo labels")
    ax.set_xticks([it["iteration"] for it in iterations])
    fig.tight_layout()
    return fig


def plot_selection_precision(history: list[dict], ax=None):
    """Per gated epoch: the fraction of kept and of dropped samples whose pseudo label is reliable.

    A working gate keeps mostly reliable labels (upper curve) and drops mostly unreliable ones.
    """
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(6, 3.2))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    gated = [rec for rec in history if rec["phase"] == "L" and rec.get("precision_selected") is not None]
    labels = [f"{rec['iteration']}.{rec['epoch']}" for rec in gated]
    x = np.arange(len(gated))
    ax.plot(x, [rec["precision_selected"] for rec in gated], marker="o", label="kept samples")
    ax.plot(x, [np.nan if rec["precision_rejected"] is None else rec["precision_rejected"] for rec in gated],
            marker="x", label="dropped samples")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_xlabel("iteration.epoch of phase L")
    ax.set_ylabel("pseudo-label precision")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def iteration_table(metrics: dict) -> str:
    """Markdown table: one row per iteration with NMI, gate, best T / L EER and epochs, then the test result."""
    def fmt(value, digits=2):
        return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    rows = ["| iteration | C | NMI | gate | best T EER (%) | best L EER (%) | epochs | skipped batches |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for it in metrics["iterations"]:
        gate = "–" if it["gate"] is None else f"{it['gate']:.2f} ({it['gate_source']})"
        rows.append(f"| {it['iteration']} | {it['channels']} | {fmt(it['nmi'], 3)} | {gate} | {fmt(it['best_T_eer'])} | "
                    f"{fmt(it['best_L_eer'])} | {it['epochs']} | {it['skipped_batches']} |")
    best = metrics["best"]
    rows += ["", f"Best model: iteration {best['iteration']}, phase {best['phase']}, epoch {best['epoch']} "
                 f"(validation EER {best['val_eer']:.2f} %). Test trials: EER {metrics['eer']:.2f} %, "
                 f"minDCF(0.05) {metrics['min_dcf']:.4f}, minDCF(0.01) {metrics['min_dcf_0.01']:.4f}"
                 + ("" if metrics.get("stage1_eer") is None else f"; Stage I EER {metrics['stage1_eer']:.2f} %.")]
    return "\n".join(rows)
