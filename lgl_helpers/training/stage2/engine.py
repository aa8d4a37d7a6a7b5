"""Stage II's state machine: per iteration cluster → phase T → phase L (LGL only), committed to ``state.json``.

The engine decides what comes next and where it starts from (which model clusters, which models and
optimizer state a phase starts from, which gate phase L uses, when a run pauses or is done); the
epochs of a phase are trained by :mod:`lgl_helpers.training.stage2.executor`. Every step ends with a
commit of the state, so an interrupted run resumes at the step it was in. As in the reference
(``Stage2/main_train.py``), the run ends after ``max_epochs`` epochs in all (``--max_epoch 100``)
even inside a phase; a larger ``max_epochs`` later continues it from there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lgl_helpers import files, runs
from lgl_helpers.clustering import cluster
from lgl_helpers.clustering.pseudo_labels import read_pseudo_labels
from lgl_helpers.clustering.quality import majority_agreement
from lgl_helpers.core import distributed
from lgl_helpers.core import gate as gate_rules
from lgl_helpers.core.audio import SAMPLE_RATE
from lgl_helpers.core.evaluation import final_evaluation, plan_evaluation, store_threshold
from lgl_helpers.core.gate_evidence import gate_evidence
from lgl_helpers.core.losses import AAMSoftmax
from lgl_helpers.core.metrics import TEST_SCORES
from lgl_helpers.core.models import CHECKPOINT_KEYS, ECAPATDNN, load_encoder, save_encoder
from lgl_helpers.timings import PartTimes
from lgl_helpers.training import launch
from lgl_helpers.training.stage2.clean_losses import clean_pass
from lgl_helpers.training.stage2.config import Stage2Config, stage_folder
from lgl_helpers.training.stage2.correction import CORRECTED_LABELS, correct_labels, correction_evidence
from lgl_helpers.training.stage2.executor import train_phase
from lgl_helpers.training.stage2.gates import choose_gate
from lgl_helpers.training.stage2.head_init import init_head_from_centroids
from lgl_helpers.training.stage2.inputs import Stage2Data, prepare_data
from lgl_helpers.training.stage2.reuse import reuse_baseline_phase_t
from lgl_helpers.training.stage2.statefile import (
    GATE_OVERRIDES,
    fixed_params,
    gate_losses_record,
    new_state,
    npz_bytes,
    read_epoch_losses,
    read_state,
    saved_params,
    stage1_eer,
)
from lgl_helpers.training.state import check_resume, encoder_and_head, load_checkpoint
from lgl_helpers.training.step_checkpoints import StepCheckpoints

log = logging.getLogger(__name__)


class Engine:
    """One Stage II run: its config, validated data, the state dict and the stage folder.

    ``on_epoch(record, state)`` is called after every committed epoch. ``checkpoints`` decides when
    an epoch writes a mid-epoch checkpoint; :func:`run_stage2` enters it (the SIGTERM handler) around
    :meth:`run`.
    """

    def __init__(self, config: Stage2Config, data: Stage2Data, on_epoch: Callable | None):
        self.config = config
        self.data = data
        self.on_epoch = on_epoch
        self.stage_dir = stage_folder(config)
        self.device = distributed.init(config.device)
        self.speakers = data.speakers
        stage1 = load_encoder(data.init_model)
        self.stage1_channels, self.mfa_channels = stage1.channels, stage1.mfa_channels
        self.last_commit = time.perf_counter()
        self.state: dict = {}
        # Seconds per part (clustering, training, validation, checkpoints, clean_pass, final_evaluation),
        # committed with the state as its "timings".
        self.times = PartTimes()
        self.checkpoints = StepCheckpoints(config.checkpoint_minutes)

    # -- bookkeeping ------------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        return self.stage_dir / rel

    def commit(self) -> None:
        """Write state.json (atomic): everything written before it is part of the run.

        In a distributed run rank 0 writes and every rank waits here, so that all of them see the
        files the state names. Their states stay equal without being sent: every decision is made
        from gathered (equal) numbers; only the clustering's record comes from rank 0.
        """
        now = time.perf_counter()
        self.state["wall_seconds"] += now - self.last_commit
        self.last_commit = now
        self.state["timings"] = self.times.seconds
        files.write_json(self.path("state.json"), self.state)
        distributed.barrier()

    def iteration_record(self, iteration: int) -> dict:
        return self.state["iterations"][iteration - 1]

    def epochs_done(self) -> int:
        """Epochs trained in the whole run (T and L of every iteration), the count ``max_epochs`` caps."""
        return len(self.state["history"])

    def at_epoch_cap(self) -> bool:
        return bool(self.config.max_epochs) and self.epochs_done() >= self.config.max_epochs

    def channels_for(self, iteration: int) -> int:
        last = self.config.last_channels
        if last and iteration == self.config.max_iterations and last != self.stage1_channels:
            return last
        return self.stage1_channels

    # -- steps --------------------------------------------------------------------------------
    def load_or_start(self) -> None:
        params = fixed_params(self.config, self.data)
        # Rank 0's reading, so that no rank reads a state.json rank 0 has already rewritten.
        state = distributed.broadcast(
            read_state(self.stage_dir) if self.config.resume and distributed.is_main() else None
        )
        if state is None:
            if not self.config.resume and self.stage_dir.is_dir():
                self._remove_previous()
            self.state = new_state(self.config, params)
            self.commit()
            return
        check_resume(
            self.path("state.json"),
            saved_params(state, self.stage_dir.parent),
            params,
            self.config.fixed_fields,
            self.config.allow_changed_params,
        )
        if state["phase"] == "done" and state["iteration"] < self.config.max_iterations:
            # A finished run extended by a larger max_iterations continues with the next clustering.
            state.update(iteration=state["iteration"] + 1, phase="cluster", epoch=0, gate=None, status="running")
        state["params"] = params
        self.state = state
        self.times = PartTimes(state.get("timings"))
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
        if stale and distributed.is_main():
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
        # Iteration 1 clusters with the Stage I model, as notebook 02 and the other mode do: a matching
        # clustering in the run folder is reused instead of embedding the corpus again.
        result = cluster.cluster_utterances(
            load_encoder(model_path),
            self.data.entries,
            self.data.paths["train_root"],
            cfg.n_clusters,
            self.path(iter_dir),
            n_iter=cfg.cluster_n_iter,
            seed=cfg.cluster_seed,
            max_points_per_centroid=cfg.cluster_max_points_per_centroid,
            max_seconds=cfg.cluster_max_seconds or None,
            device=str(self.device),
            use_gpu=False if self.device.type == "cpu" else "auto",
            reuse_from=cluster.clustering_folders(runs.run_folder(cfg.run_name, cfg.runs_dir)),
            show_progress=True,
            n_clusters_over=cfg.n_clusters_over,
        )
        # Rank 0 clustered (the other ranks embedded their share of the list): its record is every rank's.
        record = distributed.broadcast(None if result is None else self._cluster_record(iteration, model_path, result))
        del self.state["iterations"][iteration - 1 :]
        self.state["iterations"].append(record)
        self.state.update(phase="T", epoch=0, gate=None)
        self.commit()

    def _cluster_record(self, iteration: int, model_path, result) -> dict:
        iter_dir = f"iter_{iteration:02d}"
        return {
            "iteration": iteration,
            "channels": self.channels_for(iteration),
            "cluster_model": str(model_path),
            "pseudo_labels": f"{iter_dir}/pseudo_labels.txt",
            "nmi": result.quality["nmi"] if self.speakers is not None else None,
            "purity": result.quality["purity"] if self.speakers is not None else None,
            "n_clusters_used": result.quality["n_nonempty_clusters"],
            "clustering_reused_from": None if result.reused_from is None else str(result.reused_from),
            "gate": None,
            "gate_source": None,
            "phases": {},
        }

    def pseudo_labels(self, iteration: int) -> np.ndarray:
        return read_pseudo_labels(
            self.path(self.iteration_record(iteration)["pseudo_labels"]), self.data.entries, self.config.n_clusters
        )

    def resolve_gate(self, iteration: int) -> dict:
        """The gate of ``iteration``'s phase L, its source and its evidence (the ``gate_evidence`` entry).

        The gate is chosen (:func:`~lgl_helpers.training.stage2.gates.choose_gate`) on the per-sample
        losses of the best T epoch, the model phase L starts from (its training-batch losses, or its
        clean-pass losses with ``gate_losses="clean"``); the evidence says, on those same losses, how
        well the gate separates reliable from unreliable pseudo labels, and ``gate_rule`` which rule
        placed it (``gate_rule_reason``: why a GMM gate fell back; ``gate_mixture``: its components).
        """
        record = gate_losses_record(self.state, iteration)
        losses = read_epoch_losses(self.path(record["losses"]))
        choice = choose_gate(self.stage_dir, self.config, iteration, lambda: losses["per_sample_loss"])
        evidence = gate_evidence(losses["per_sample_loss"], losses.get("reliable"), choice["gate"])
        return {
            "iteration": iteration,
            **choice,
            "losses_epoch": record["epoch"],
            "losses_source": record["losses_source"],
            **evidence,
        }

    def correct_labels_step(self, iteration: int, gate: float) -> dict:
        """Write ``iter_XX/T/corrected_labels.npz`` (atomic) for phase L of ``iteration`` and return its
        evidence (:func:`~lgl_helpers.training.stage2.correction.correction_evidence`) with the file's path.

        The rejected samples of the clean-pass gate whose sharpened prediction reaches the confidence
        are relabelled (:func:`~lgl_helpers.training.stage2.correction.correct_labels`).
        """
        settings = self.config.label_correction
        t_info = self.iteration_record(iteration)["phases"]["T"]
        losses = read_epoch_losses(self.path(t_info["gate_losses"]))
        labels = self.pseudo_labels(iteration)
        keep = losses["per_sample_loss"] <= np.float32(gate)
        head_weight = None
        if settings["predictor"] == "head":
            _, head = encoder_and_head(load_checkpoint(self.path(t_info["best_model"])), self.config.n_clusters)
            head_weight = head.weight.detach().cpu().numpy()
        correction = correct_labels(
            losses["embedding"],
            labels,
            keep,
            self.config.n_clusters,
            confidence=settings["confidence"],
            temperature=settings["temperature"],
            predictor=settings["predictor"],
            head_weight=head_weight,
        )
        rel = f"iter_{iteration:02d}/T/{CORRECTED_LABELS}"
        files.atomic_write_bytes(self.path(rel), npz_bytes(correction))
        evidence = correction_evidence(labels, keep, correction, self.speakers)
        log.info(
            "iteration %d: label correction relabels %d of %d rejected samples (%d changed)%s",
            iteration,
            evidence["corrected"],
            int((~keep).sum()),
            evidence["changed"],
            ""
            if evidence["corrected_accuracy"] is None
            else f", {100 * evidence['corrected_accuracy']:.1f} % of them reliable; training set reliable "
            f"{100 * evidence['reliable_before']:.1f} % -> {100 * evidence['reliable_after']:.1f} %",
        )
        return {"iteration": iteration, "file": rel, **settings, **evidence}

    def score_clean_losses(self, iteration: int, model_rel: str) -> str:
        """Write ``iter_XX/T/clean_losses.npz``: every training sample's clean-pass loss under the
        checkpoint ``model_rel`` (:mod:`~lgl_helpers.training.stage2.clean_losses`), with the keys of
        an epoch's loss record (``selected`` all True); returns its path relative to the stage folder."""
        encoder, head = encoder_and_head(load_checkpoint(self.path(model_rel)), self.config.n_clusters)
        labels = self.pseudo_labels(iteration)
        entries = self.data.entries
        root = Path(self.data.paths["train_root"])
        tic = time.perf_counter()
        losses, emb = clean_pass(
            encoder,
            head.to(self.device),
            [root / e.path for e in entries],
            labels,
            lengths=[round(e.duration * SAMPLE_RATE) for e in entries],
            device=self.device,
            precision=self.config.precision,
        )
        record = {"index": np.arange(len(entries)), "per_sample_loss": losses, "selected": np.ones(len(entries), bool)}
        if self.config.label_correction is not None:
            record["embedding"] = emb  # the predictions of the label correction come from these
        if self.speakers is not None:
            record["reliable"] = majority_agreement(labels, self.speakers)
        rel = f"iter_{iteration:02d}/T/clean_losses.npz"
        files.atomic_write_bytes(self.path(rel), npz_bytes(record))
        log.info(
            "iteration %d: clean-pass losses of %d utterances under %s in %.1f s",
            iteration,
            len(entries),
            model_rel,
            time.perf_counter() - tic,
        )
        return rel

    def start_optimizer_state(self, iteration: int, phase: str) -> dict | None:
        """The Adam state a phase starts with: None (a new Adam) for T; for L that after the last T epoch.

        The reference trains T and L with one Adam and, for L, loads only the best T weights into the
        model (``load_parameters`` copies parameters): L continues T's moments and step count. Phase T
        keeps its last checkpoint for this until L's first epoch is committed.
        """
        if phase != "L":
            return None
        return load_checkpoint(self.path(self.iteration_record(iteration)["phases"]["T"]["last_model"]))["optimizer"]

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
            encoder = ECAPATDNN(channels, self.mfa_channels)
        head = AAMSoftmax(cfg.n_clusters)
        if cfg.head_init == "centroids":
            self._centroid_head(head, iteration, channels)
        return encoder, head

    def _centroid_head(self, head: AAMSoftmax, iteration: int, channels: int) -> None:
        """Head rows = the iteration's pseudo-label centroids of the Stage I embeddings (iteration 1's
        clustering pass embedded the training list with the Stage I model, the encoder T starts from)."""
        if channels != self.stage1_channels:
            log.warning(
                "iteration %d: head_init='centroids' needs the Stage I encoder; a random head is used", iteration
            )
            return
        emb = np.load(self.path(f"{self.iteration_record(1)['pseudo_labels'].split('/')[0]}/embeddings.npy"))
        n_set = init_head_from_centroids(head, emb, self.pseudo_labels(iteration))
        log.info(
            "iteration %d: head initialised at %d pseudo-label centroids of the Stage I embeddings", iteration, n_set
        )

    def phase_over(self, info: dict) -> bool:
        """The stopping rule (EERs compared as ``eer_decimals``), or the epoch limit of ``max_epochs_per_phase``."""
        cfg = self.config
        over = bool(cfg.max_epochs_per_phase) and len(info["eers"]) >= cfg.max_epochs_per_phase
        return over or gate_rules.phase_should_stop(info["eers"], cfg.min_evals, cfg.patience, cfg.eer_decimals)

    def run_phase(self, iteration: int, phase: str) -> dict:
        """Train ``phase`` of ``iteration`` from where the state says until it is over or the run
        reaches ``max_epochs``. Returns the phase's record (``state["iterations"][k]["phases"][phase]``)."""
        record = self.iteration_record(iteration)
        if phase == "L" and self.state["gate"] is None:
            evidence = self.resolve_gate(iteration)
            record.update(gate=evidence["gate"], gate_source=evidence["gate_source"], gate_evidence=evidence)
            if self.config.label_correction is not None:
                # Written before the commit that fixes the gate: a resumed phase L reads the same file.
                record["label_correction"] = self.correct_labels_step(iteration, evidence["gate"])
            self.state["gate"] = evidence["gate"]
            log.info(
                "iteration %d: phase L with gate %.4f (%s, rule %s%s) on the %s losses of T epoch %d: keeps %s%s",
                iteration,
                evidence["gate"],
                evidence["gate_source"],
                evidence["gate_rule"],
                f": {evidence['gate_rule_reason']}" if evidence["gate_rule_reason"] else "",
                evidence["losses_source"],
                evidence["losses_epoch"],
                f"{100 * evidence['fraction_kept']:.1f} %",
                ""
                if evidence["kept_reliable"] is None
                else f", reliable labels {100 * evidence['kept_reliable']:.1f} % kept vs "
                + ("–" if evidence["dropped_reliable"] is None else f"{100 * evidence['dropped_reliable']:.1f} %")
                + " dropped, AUC "
                + ("–" if evidence["auc_reliable"] is None else f"{evidence['auc_reliable']:.3f}"),
            )
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
        if phase == "T" and iteration == 1 and self.config.mode == "lgl" and not info["eers"]:
            reuse_baseline_phase_t(self, info)
        if not self.phase_over(info):
            train_phase(self, iteration, phase, gate, info)
        return info

    def advance(self, iteration: int, phase: str, info: dict) -> None:
        """Move the state past a finished phase (and past the iteration when it was its last phase).

        The phase's last checkpoint, when not its best, goes once the state no longer points at it;
        phase T of LGL keeps it until phase L has its first epoch (:meth:`start_optimizer_state`).
        """
        log.info(
            "iteration %d: phase %s over after %d epochs; best epoch %d, EER %.2f%%",
            iteration,
            phase,
            len(info["eers"]),
            info["best_epoch"],
            info["best_eer"],
        )
        stale = None
        # The baseline's first phase T keeps its last checkpoint too: an LGL run of the same run folder
        # continues from it (lgl_helpers.training.stage2.reuse).
        keeps_last = phase == "T" and (self.config.mode == "lgl" or iteration == 1)
        if info["last_model"] != info["best_model"] and not keeps_last:
            stale = info["last_model"]
            info["last_model"] = info["best_model"]
        if phase == "T" and self.config.mode == "lgl":
            if self.config.gate_losses == "clean":
                with self.times.part("clean_pass"):
                    info["gate_losses"] = self.score_clean_losses(iteration, info["best_model"])
            self.state.update(phase="L", epoch=0, gate=None)
        elif iteration < self.config.max_iterations:
            self.state.update(iteration=iteration + 1, phase="cluster", epoch=0, gate=None)
        else:
            self.state.update(phase="done", epoch=0)
        self.commit()
        # Rank 0 alone, as it alone writes: two ranks unlinking one file race, and the loser fails.
        if stale and distributed.is_main() and self.path(stale).is_file():
            self.path(stale).unlink()

    def run(self) -> str:
        """Run until done (returns "done") or paused before a gate (returns "paused_before_gate").

        Done means the last iteration is over, or ``max_epochs`` epochs have been trained (then the
        state keeps the iteration and phase it stopped in, and the best model so far is the result).
        """
        while self.state["phase"] != "done":
            if self.at_epoch_cap():
                log.info(
                    "max_epochs=%d reached in iteration %d, phase %s: the run ends with its best model so far",
                    self.config.max_epochs,
                    self.state["iteration"],
                    self.state["phase"],
                )
                break
            iteration, phase = self.state["iteration"], self.state["phase"]
            if phase == "cluster":
                with self.times.part("clustering"):
                    self.cluster_step(iteration)
                self.checkpoints.after_epoch(f"the clustering of iteration {iteration}")
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
            info = self.run_phase(iteration, phase)
            if self.phase_over(info):
                self.advance(iteration, phase, info)
        self.state["status"] = "done"
        self.commit()
        return "done"

    def write_best_model(self) -> Path:
        """``best.model``: the encoder of the lowest validation EER of the run (kit checkpoint, with its head)."""
        best = self.state["best"]
        ckpt = load_checkpoint(self.path(best["model"]))
        encoder, _ = encoder_and_head(ckpt, self.config.n_clusters)
        extra = {k: v for k, v in ckpt.items() if k not in (*CHECKPOINT_KEYS, "optimizer", "rng")}
        return save_encoder(self.path("best.model"), encoder, extra)

    def final_metrics(self) -> dict:
        """``metrics.json``: the best encoder on the test trials and on every list of ``eval_trials``, raw
        and normalised, in one embedding pass (:func:`~lgl_helpers.core.evaluation.final_evaluation`):
        per-trial scores in ``test_scores.txt`` and ``eval/``; the validation list's ``eer_threshold``
        is added to ``best.model``."""
        best = self.state["best"]
        best_path = self.write_best_model()
        distributed.barrier()  # every rank evaluates best.model, which rank 0 wrote
        # Evaluated even when the validation list holds the test trials: the epochs' evaluations keep
        # their EERs only, and the report's intervals need the scores of every trial.
        cfg, data = self.config, self.data
        # The centroids cohort takes the pseudo labels of the run's last clustering.
        labels = self.pseudo_labels(len(self.state["iterations"])) if cfg.norm_cohort == "centroids" else None
        plan = plan_evaluation(cfg, data.paths, data.entries, data.val_trials, data.test_trials, labels)
        scores_path = self.path(TEST_SCORES)
        with self.times.part("final_evaluation"):
            result = final_evaluation(
                load_encoder(best_path), plan, data.paths["test_root"], self.stage_dir, scores_path, device=self.device
            )
        store_threshold(best_path, result["eer_threshold"])
        test = result["test"]
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
            "best_checkpoint": runs.relative_to_run(self.path("best.model"), self.stage_dir.parent),
            "test_scores": runs.relative_to_run(scores_path, self.stage_dir.parent),
            "eer_threshold": result["eer_threshold"],
            "eval": result["eval"],
            "stage1_eer": stage1_eer(self.config),
            "stage1_val_eer": stage1_eer(self.config, "val_eer"),
            "iterations": iterations,
            "gate_evidence": [item["gate_evidence"] for item in self.state["iterations"] if item.get("gate_evidence")],
            "label_correction": [
                item["label_correction"] for item in self.state["iterations"] if item.get("label_correction")
            ],
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
                        "auc_reliable",
                    )
                }
                for rec in self.state["history"]
            ],
            "trials": runs.relative_to_run(self.data.paths["trials"], self.stage_dir.parent),
            "val_trials": runs.relative_to_run(self.data.paths["val_trials"], self.stage_dir.parent),
            "val_is_test": self.data.same_val_test,
            "epochs_run": self.epochs_done(),
            # The run ended at max_epochs (inside an iteration) rather than after its last iteration.
            "max_epochs_reached": self.state["phase"] != "done",
            "wall_seconds": self.state["wall_seconds"],
            "timings": self.times.seconds,
        }
        files.write_json(self.path("metrics.json"), metrics)
        return metrics


@runs.holds_run_folder("Stage II training")
def run_stage2(
    config: Stage2Config,
    on_epoch: Callable[[dict, dict], None] | None = None,
    data: Stage2Data | None = None,
) -> dict:
    """Run (or resume) Stage II as configured.

    ``on_epoch(record, state)`` is called after every epoch has been committed (``record``: that
    epoch's entry of ``state["history"]``); an exception raised there interrupts the run like a crash,
    and the next call resumes after that epoch. SIGTERM writes a mid-epoch checkpoint at the next batch
    (or stops after the step in progress is saved) and raises
    :class:`~lgl_helpers.training.step_checkpoints.TrainingStopped`; the next call continues there.
    Returns ``{"status": "done", **metrics.json}`` or ``{"status": "paused_before_gate", "iteration": k}``
    when ``pause_before_gate`` stopped before phase L of iteration k (call again to continue); both
    with ``stage_dir`` and ``state``.
    """
    if config.nproc > 1 and not distributed.launched():
        return _run_under_torchrun(config, on_epoch)
    distributed.init(config.device)
    data = data if data is not None else prepare_data(config)
    stage_dir = stage_folder(config)
    runs.add_file_log(stage_dir, stage_dir.name)
    runs.open_run(stage_dir, fixed_params(config, data), stage_dir.name)
    engine = Engine(config, data, on_epoch)
    engine.load_or_start()
    with engine.checkpoints:
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


def _run_under_torchrun(config: Stage2Config, on_epoch: Callable | None) -> dict:
    """``run_stage2`` on ``config.nproc`` local ranks; the result read back from the stage's files."""
    stage_dir = stage_folder(config)
    launch.run_under_torchrun("stage2", config, stage_dir)
    state = read_state(stage_dir)
    if on_epoch:
        for record in state["history"]:
            on_epoch(record, state)
    out = {"status": state["status"], "stage_dir": str(stage_dir), "state": state}
    if state["status"] == "done":
        out.update(files.read_json(stage_dir / "metrics.json"))
    else:
        out["iteration"] = state["iteration"]
    return out
