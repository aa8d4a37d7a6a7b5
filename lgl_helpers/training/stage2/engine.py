"""Stage II's state machine: per iteration cluster → phase T → phase L (LGL only), committed to ``state.json``.

The engine decides what comes next and where it starts from (which model clusters, which models a
phase starts from, which gate phase L uses, when a run pauses or is done); the epochs of a phase
are trained by :mod:`lgl_helpers.training.stage2.executor`. Every step ends with a commit of the
state, so an interrupted run resumes at the step it was in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lgl_helpers import runs
from lgl_helpers.clustering import cluster
from lgl_helpers.clustering.pseudo_labels import read_pseudo_labels
from lgl_helpers.core import gate as gate_rules
from lgl_helpers.core.embed import evaluate_trials
from lgl_helpers.core.losses import AAMSoftmax
from lgl_helpers.core.metrics import TEST_SCORES, write_trial_scores
from lgl_helpers.core.models import ECAPATDNN, load_encoder, save_encoder
from lgl_helpers.training.stage2.config import FIXED_FIELDS, Stage2Config, stage_folder
from lgl_helpers.training.stage2.executor import train_phase
from lgl_helpers.training.stage2.gates import resolve_gate
from lgl_helpers.training.stage2.inputs import Stage2Data, prepare_data
from lgl_helpers.training.stage2.statefile import (
    GATE_OVERRIDES,
    fixed_params,
    new_state,
    read_epoch_losses,
    read_state,
    stage1_eer,
)
from lgl_helpers.training.state import check_resume, encoder_and_head, load_checkpoint

log = logging.getLogger(__name__)


class Engine:
    """One Stage II run: its config, validated data, the state dict and the stage folder.

    ``on_epoch(record, state)`` is called after every committed epoch.
    """

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
        params = fixed_params(self.config, self.data)
        state = read_state(self.stage_dir) if self.config.resume else None
        if state is None:
            if not self.config.resume and self.stage_dir.is_dir():
                self._remove_previous()
            self.state = new_state(self.config, params)
            self.commit()
            return
        check_resume(self.path("state.json"), state["params"], params, FIXED_FIELDS, self.config.allow_changed_params)
        if state["phase"] == "done" and state["iteration"] < self.config.max_iterations:
            # A finished run extended by a larger max_iterations continues with the next clustering.
            state.update(iteration=state["iteration"] + 1, phase="cluster", epoch=0, gate=None, status="running")
        state["params"] = params
        self.state = state
        log.info(
            "resuming Stage II %s: iteration %d, phase %s, epoch %d done, gate %s",
            self.config.mode,
            state["iteration"],
            state["phase"],
            state["epoch"],
            state["gate"],
        )

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
            load_encoder(model_path),
            self.data.entries,
            self.data.paths["train_root"],
            cfg.n_clusters,
            self.path(iter_dir),
            n_iter=cfg.cluster_n_iter,
            seed=cfg.seed,
            max_points_per_centroid=cfg.cluster_max_points_per_centroid,
            max_seconds=cfg.cluster_max_seconds or None,
            device=str(self.device),
            use_gpu=False if self.device.type == "cpu" else "auto",
            show_progress=True,
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
        del self.state["iterations"][iteration - 1 :]
        self.state["iterations"].append(record)
        self.state.update(phase="T", epoch=0, gate=None)
        self.commit()

    def pseudo_labels(self, iteration: int) -> np.ndarray:
        return read_pseudo_labels(
            self.path(self.iteration_record(iteration)["pseudo_labels"]), self.data.entries, self.config.n_clusters
        )

    def resolve_gate(self, iteration: int) -> tuple[float, str]:
        """The gate of ``iteration``'s phase L and its source (:func:`~lgl_helpers.training.stage2.gates.resolve_gate`)."""

        def t_losses() -> np.ndarray:
            t_phase = self.iteration_record(iteration)["phases"]["T"]
            return read_epoch_losses(self.path(t_phase["last_losses"]))["per_sample_loss"]

        return resolve_gate(self.stage_dir, self.config, iteration, t_losses)

    def build_models(self, iteration: int, phase: str) -> tuple[ECAPATDNN, AAMSoftmax]:
        """Starting point of a phase: T = Stage I encoder (or a fresh wider one) + new head; L = best T."""
        cfg = self.config
        if phase == "L":
            best_t = self.iteration_record(iteration)["phases"]["T"]["best_model"]
            return encoder_and_head(load_checkpoint(self.path(best_t)), cfg.n_clusters)
        channels = self.channels_for(iteration)
        # Seeded per iteration so that a new head (and a widened encoder) is reproducible on resume.
        torch.manual_seed(cfg.seed * 1000 + iteration)
        if channels == self.stage1_channels:
            encoder = load_encoder(self.data.init_model)
        else:
            log.info(
                "iteration %d: C=%d encoder trained from random weights (Stage I has C=%d)",
                iteration,
                channels,
                self.stage1_channels,
            )
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
            phase,
            {
                "eers": [],
                "best_epoch": None,
                "best_eer": None,
                "best_model": None,
                "last_model": None,
                "last_losses": None,
                "skipped_batches": 0,
            },
        )
        if not self.phase_over(info):
            train_phase(self, iteration, phase, gate, info)
        log.info(
            "iteration %d: phase %s over after %d epochs; best epoch %d, EER %.2f%%",
            iteration,
            phase,
            len(info["eers"]),
            info["best_epoch"],
            info["best_eer"],
        )
        stale = info["last_model"] if info["last_model"] != info["best_model"] else None
        info["last_model"] = info["best_model"]
        return stale

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
            if (
                phase == "L"
                and self.state["gate"] is None
                and self.config.pause_before_gate
                and iteration not in self.state["paused_iterations"]
            ):
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
        ckpt = load_checkpoint(self.path(best["model"]))
        encoder, _ = encoder_and_head(ckpt, self.config.n_clusters)
        extra = {k: v for k, v in ckpt.items() if k not in ("format", "channels", "encoder", "optimizer", "rng")}
        return save_encoder(self.path("best.model"), encoder, extra)

    def final_metrics(self) -> dict:
        """``metrics.json``: the best encoder on the test trials; its per-trial scores in ``test_scores.txt``."""
        best = self.state["best"]
        self.write_best_model()
        # Evaluated even when the validation list holds the test trials: the epochs' evaluations keep
        # their EERs only, and the report's intervals need the scores of every trial.
        result = evaluate_trials(
            load_encoder(self.path("best.model")),
            self.data.test_trials,
            self.data.paths["test_root"],
            device=self.device,
            show_progress=False,
        )
        test = {k: float(result[k]) for k in ("eer", "min_dcf", "min_dcf_0.01")}
        scores_path = write_trial_scores(self.path(TEST_SCORES), self.data.test_trials, result["scores"])
        iterations = []
        for item in self.state["iterations"]:
            t, l_phase = item["phases"].get("T", {}), item["phases"].get("L", {})
            iterations.append(
                {
                    "iteration": item["iteration"],
                    "nmi": item["nmi"],
                    "purity": item["purity"],
                    "channels": item["channels"],
                    "gate": item["gate"],
                    "gate_source": item["gate_source"],
                    "best_T_eer": t.get("best_eer"),
                    "best_T_epoch": t.get("best_epoch"),
                    "best_L_eer": l_phase.get("best_eer"),
                    "best_L_epoch": l_phase.get("best_epoch"),
                    "epochs": len(t.get("eers", [])) + len(l_phase.get("eers", [])),
                    "skipped_batches": t.get("skipped_batches", 0) + l_phase.get("skipped_batches", 0),
                }
            )
        metrics = {
            "mode": self.config.mode,
            **test,
            "best": {k: best[k] for k in ("iteration", "phase", "epoch")} | {"val_eer": best["eer"]},
            "best_checkpoint": str(self.path("best.model")),
            "test_scores": str(scores_path),
            "stage1_eer": stage1_eer(self.config),
            "iterations": iterations,
            "evaluations": [
                {
                    k: rec.get(k)
                    for k in (
                        "iteration",
                        "phase",
                        "epoch",
                        "gate",
                        "eer",
                        "min_dcf",
                        "min_dcf_0.01",
                        "fraction_selected",
                        "precision_selected",
                        "precision_rejected",
                    )
                }
                for rec in self.state["history"]
            ],
            "trials": str(self.data.paths["trials"]),
            "val_trials": str(self.data.paths["val_trials"]),
            "val_is_test": self.data.same_val_test,
            "wall_seconds": self.state["wall_seconds"],
        }
        runs.write_json(self.path("metrics.json"), metrics)
        return metrics


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
    runs.open_run(stage_dir, fixed_params(config, data), stage_dir.name)
    engine = Engine(config, data, on_epoch)
    engine.load_or_start()
    status = engine.run()
    out = {"status": status, "stage_dir": str(stage_dir), "state": engine.state}
    if status != "done":
        out["iteration"] = engine.state["iteration"]
        return out
    metrics = engine.final_metrics()
    log.info(
        "Stage II %s done: best %s (iteration %d, phase %s, epoch %d), test EER %.2f%%, minDCF %.4f",
        config.mode,
        engine.path("best.model"),
        metrics["best"]["iteration"],
        metrics["best"]["phase"],
        metrics["best"]["epoch"],
        metrics["eer"],
        metrics["min_dcf"],
    )
    out.update(metrics)
    return out
