"""The epochs of one Stage II phase: train, evaluate, save and commit each, until the phase is over.

Each (iteration, phase, epoch) has its own data order and augmentation draws (the sampler's epoch),
and every epoch ends with a commit, so an interrupted phase resumes after its last saved epoch with
the same numbers as an uninterrupted run; inside an epoch, mid-epoch checkpoints (every
``checkpoint_minutes`` and on SIGTERM, :mod:`lgl_helpers.training.step_checkpoints`) let it continue
at the next batch. A phase keeps the checkpoints of its best and its latest
epoch; the per-sample loss records of the best and latest epoch of every phase and of every
``keep_every``-th epoch of the run (:mod:`lgl_helpers.training.retention`).
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from lgl_helpers import files
from lgl_helpers.clustering.quality import majority_agreement
from lgl_helpers.core import distributed
from lgl_helpers.core import gate as gate_rules
from lgl_helpers.core.data import Stage2Dataset, make_loader
from lgl_helpers.core.embed import evaluate_trials
from lgl_helpers.core.gate_evidence import gate_evidence
from lgl_helpers.training import retention
from lgl_helpers.training.executor import EncoderWithHead, MidEpoch, stage2_epoch
from lgl_helpers.training.stage2.averaging import EncoderAverage
from lgl_helpers.training.stage2.correction import apply_correction, corrected_reliability
from lgl_helpers.training.stage2.statefile import npz_bytes, read_epoch_losses, scores_text
from lgl_helpers.training.state import encoder_and_head, load_checkpoint, module_state, restore_rng, save_checkpoint

if TYPE_CHECKING:
    from lgl_helpers.training.stage2.engine import Engine

log = logging.getLogger(__name__)

# A phase's mid-epoch checkpoint (iter_XX/<phase>/mid_epoch.model): the running epoch's models and
# progress; removed once that epoch is committed.
MID_EPOCH = "mid_epoch.model"


def _mid_epoch(engine: Engine, rel_dir: str, epoch: int) -> dict | None:
    """The phase's mid-epoch checkpoint when it belongs to ``epoch``, the next one of the committed state."""
    path = engine.path(f"{rel_dir}/{MID_EPOCH}")
    if not path.is_file():
        return None
    ckpt = load_checkpoint(path)
    partial = ckpt["partial"]
    # A checkpoint of an epoch committed since (the run stopped before removing it) is left for the next one to replace.
    return ckpt if (partial["epoch"], partial["epochs_done"]) == (epoch, engine.epochs_done()) else None


def train_phase(engine: Engine, iteration: int, phase: str, gate: float, info: dict) -> None:
    """Train epochs of ``phase`` (``gate``: ``inf`` in phase T) until the phase is over or the run
    reaches ``max_epochs``, committing each.

    ``info``: the phase's record in ``state["iterations"]``; with epochs in it already, training
    resumes after the last one from its checkpoint (encoder, head, optimizer and RNG states).
    A new phase starts from :meth:`Engine.build_models` and :meth:`Engine.start_optimizer_state`.
    """
    cfg = engine.config
    rel_dir = f"iter_{iteration:02d}/{phase}"
    ckpt = _mid_epoch(engine, rel_dir, len(info["eers"]) + 1)
    resume = None
    if ckpt is not None:
        # Inside an epoch: its models, optimizer and average at the checkpoint, its progress, its RNG states.
        resume = {**ckpt["partial"], "rng": ckpt["rng"]}
        encoder, head = encoder_and_head(ckpt, cfg.n_clusters)
        engine.last_commit -= resume["seconds"]  # the epoch's time before the interruption counts in wall_seconds
        log.info(
            "iteration %d %s: resuming epoch %d at batch %d", iteration, phase, resume["epoch"], resume["batches"] + 1
        )
    elif info["eers"]:
        # Resume after the last committed epoch: its model, head, optimizer and RNG state.
        ckpt = load_checkpoint(engine.path(info["last_model"]))
        encoder, head = encoder_and_head(ckpt, cfg.n_clusters)
        restore_rng(ckpt["rng"])
    else:
        encoder, head = engine.build_models(iteration, phase)
    encoder.to(engine.device)
    head.to(engine.device)
    averaged = EncoderAverage(encoder, cfg.ema_decay).to(engine.device)
    if ckpt is not None:
        averaged.restore(ckpt)
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(head.parameters()), lr=cfg.lr)
    start_state = ckpt["optimizer"] if ckpt is not None else engine.start_optimizer_state(iteration, phase)
    if start_state is not None:
        optimizer.load_state_dict(start_state)
    labels = engine.pseudo_labels(iteration)
    reliable = majority_agreement(labels, engine.speakers) if engine.speakers is not None else None
    keep = None
    record = engine.iteration_record(iteration)
    t_info = record["phases"].get("T", {})
    if phase == "L" and t_info.get("gate_losses"):
        # The clean-pass gate: the phase trains on the samples whose clean loss passes, chosen once.
        keep = read_epoch_losses(engine.path(t_info["gate_losses"]))["per_sample_loss"] <= np.float32(gate)
        if record.get("label_correction"):
            # Relabelled rejected samples join the kept ones; reliable still means "equals the majority
            # speaker of that cluster in the clustering".
            correction = read_epoch_losses(engine.path(record["label_correction"]["file"]))
            if reliable is not None:
                reliable = corrected_reliability(labels, correction, engine.speakers)
            labels, keep = apply_correction(labels, keep, correction)
    dataset = Stage2Dataset(
        engine.data.entries,
        engine.data.paths["train_root"],
        labels,
        cfg.frames,
        engine.data.sources,
        seed=cfg.seed,
        check_files=False,
    )
    loader = make_loader(dataset, cfg.batch_size, cfg.workers, cfg.seed, engine.device)
    model = distributed.wrap(EncoderWithHead(encoder, head), engine.device, cfg.sync_batchnorm)
    # Each (iteration, phase, epoch) gets its own data order and augmentation draws.
    phase_offset = {"T": 0, "L": 5_000}[phase]
    while not engine.phase_over(info) and not engine.at_epoch_cap():
        epoch = len(info["eers"]) + 1
        # A resumed epoch's time counts from its start before the interruption.
        tic = time.perf_counter() - (resume["seconds"] if resume else 0.0)
        loader.sampler.set_epoch(
            iteration * 10_000 + phase_offset + epoch, skip_batches=resume["batches"] if resume else 0
        )
        engine.checkpoints.epoch_started()

        def write(running: dict, epoch=epoch, tic=tic) -> None:
            if distributed.is_main():
                partial = {
                    **running,
                    "epoch": epoch,
                    "epochs_done": engine.epochs_done(),
                    "seconds": time.perf_counter() - tic,
                }
                extra = checkpoint_extra(engine, iteration, phase, epoch, gate, averaged, head, optimizer)
                save_checkpoint(engine.path(f"{rel_dir}/{MID_EPOCH}"), averaged.model, {**extra, "partial": partial})

        where = f"iteration {iteration} {phase} epoch {epoch}"
        with engine.times.part("training"):
            stats, arrays = stage2_epoch(
                model,
                optimizer,
                loader,
                gate,
                engine.device,
                f"iter {iteration} {phase} epoch {epoch}",
                after_step=averaged.update,
                precision=cfg.precision,
                mid=MidEpoch(engine.checkpoints, write, where, resume),
                keep=keep,
            )
        resume = None
        if reliable is not None:
            arrays["reliable"] = reliable[arrays["index"]]
        with engine.times.part("validation"):
            result = evaluate_trials(
                averaged.model,
                engine.data.val_trials,
                engine.data.paths["test_root"],
                device=engine.device,
                show_progress=False,
            )
        evaluation = {k: float(result[k]) for k in ("eer", "min_dcf", "min_dcf_0.01")}
        with engine.times.part("checkpoints"):
            save_epoch(
                engine,
                iteration,
                phase,
                epoch,
                averaged,
                head,
                optimizer,
                info,
                stats,
                arrays,
                evaluation,
                gate,
                time.perf_counter() - tic,
            )
        if engine.on_epoch:
            engine.on_epoch(engine.state["history"][-1], engine.state)
        engine.checkpoints.after_epoch(where)


def checkpoint_extra(engine: Engine, iteration, phase, epoch, gate, averaged, head, optimizer) -> dict:
    """What a Stage II checkpoint holds besides the encoder (save_checkpoint adds the RNG states):
    the head, Adam's state, the weight average's and where in the run it was written."""
    return {
        "stage": "stage2",
        "mode": engine.config.mode,
        "iteration": iteration,
        "phase": phase,
        "epoch": epoch,
        "gate": None if math.isinf(gate) else gate,
        "head": module_state(head),
        "optimizer": optimizer.state_dict(),
        "n_clusters": engine.config.n_clusters,
        **averaged.state(),
    }


def save_epoch(
    engine: Engine, iteration, phase, epoch, averaged, head, optimizer, info, stats, arrays, evaluation, gate, seconds
) -> None:
    """Write the epoch's checkpoint and loss record, update the phase and the run's best, then commit.

    averaged: the :class:`~lgl_helpers.training.stage2.averaging.EncoderAverage` of the training
    encoder; its ``model`` is the checkpoint's encoder (with EMA: the average, plus the raw weights).

    arrays: the epoch's per-sample record (``index``, ``per_sample_loss``, ``selected`` and, when
    the list has speaker ids, ``reliable``), each (n,).
    """
    rel_dir = f"iter_{iteration:02d}/{phase}"
    model_rel = f"{rel_dir}/epoch_{epoch:03d}.model"
    losses_rel = f"{rel_dir}/losses_epoch_{epoch:03d}.npz"
    extra = checkpoint_extra(engine, iteration, phase, epoch, gate, averaged, head, optimizer)
    save_checkpoint(engine.path(model_rel), averaged.model, extra)
    files.atomic_write_bytes(engine.path(losses_rel), npz_bytes(arrays))
    previous_best = info["best_eer"]
    info["eers"].append(evaluation["eer"])
    info["skipped_batches"] += stats["skipped_batches"]
    decimals = engine.config.eer_decimals
    previous = {info["best_model"], info["last_model"]}
    if gate_rules.best_index(info["eers"], decimals) + 1 == epoch:
        info.update(best_epoch=epoch, best_eer=evaluation["eer"], best_model=model_rel)
    info.update(last_model=model_rel, last_losses=losses_rel)
    keep = {info["best_model"], info["last_model"], None}
    if phase == "L" and epoch == 1:
        # Phase L has its own resume point now: phase T's last checkpoint, kept for the Adam state
        # L started from (Engine.start_optimizer_state), can go.
        t_info = engine.iteration_record(iteration)["phases"]["T"]
        previous.add(t_info["last_model"])
        t_info["last_model"] = t_info["best_model"]
        keep.add(t_info["best_model"])
    stale = previous - keep
    record = {
        "iteration": iteration,
        "phase": phase,
        "epoch": epoch,
        "gate": None if math.isinf(gate) else gate,
        **stats,
        **evaluation,
        "seconds": seconds,
        "model": model_rel,
        "losses": losses_rel,
    }
    if "reliable" in arrays:
        selected, reliable = arrays["selected"], arrays["reliable"]
        record["precision_selected"] = float(reliable[selected].mean()) if selected.any() else None
        record["precision_rejected"] = float(reliable[~selected].mean()) if (~selected).any() else None
        # How well this epoch's losses would rank reliable labels first, whatever the gate.
        record["auc_reliable"] = gate_evidence(arrays["per_sample_loss"], reliable, gate)["auc_reliable"]
    engine.state["history"].append(record)
    engine.state["epoch"] = epoch
    best_run = engine.state["best"]
    if best_run is None or gate_rules.best_index([best_run["eer"], evaluation["eer"]], decimals) == 1:
        # Compared as the phases compare, the run's best is its phase's best, whose checkpoint is never pruned.
        engine.state["best"] = {
            "eer": evaluation["eer"],
            "min_dcf": evaluation["min_dcf"],
            "min_dcf_0.01": evaluation["min_dcf_0.01"],
            "iteration": iteration,
            "phase": phase,
            "epoch": epoch,
            "model": model_rel,
        }
    stale |= set(thin_loss_records(engine.state, engine.config.keep_every)) | {f"{rel_dir}/{MID_EPOCH}"}
    files.atomic_write_text(engine.path("scores.txt"), scores_text(engine.state["history"]))
    engine.commit()
    # Files the state no longer points at go only after the commit.
    for rel in stale if distributed.is_main() else ():
        if engine.path(rel).is_file():
            engine.path(rel).unlink()
    log.info(
        "iter %d %s epoch %d: loss %.4f acc %.1f%% selected %.1f%% skipped %d | val EER %.2f%% minDCF %.4f%s",
        iteration,
        phase,
        epoch,
        stats["loss"],
        stats["accuracy"],
        100 * stats["fraction_selected"],
        stats["skipped_batches"],
        evaluation["eer"],
        evaluation["min_dcf"],
        " (best of phase)" if previous_best is not None and info["best_epoch"] == epoch else "",
    )


def thin_loss_records(state: dict, keep_every: int) -> list[str]:
    """Drop per-epoch loss records from ``state``'s history: their ``losses`` becomes None; returns their paths.

    Kept (:func:`lgl_helpers.training.retention.keep_epoch`): the best and the latest epoch of every
    phase (a gate is chosen on its iteration's best T epoch, the gate tuner shows the latest epoch)
    and every ``keep_every``-th epoch of the run, counted over all phases as the reference numbers them.
    """
    dropped = []
    for number, record in enumerate(state["history"], start=1):
        if record["losses"] is None:
            continue
        info = state["iterations"][record["iteration"] - 1]["phases"][record["phase"]]
        protected = record["epoch"] in (info["best_epoch"], len(info["eers"]))
        if not retention.keep_epoch(number, keep_every, protected=protected):
            dropped.append(record["losses"])
            record["losses"] = None
    return dropped
