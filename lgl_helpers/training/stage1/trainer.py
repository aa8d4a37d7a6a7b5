"""Stage I's training loop around :func:`lgl_helpers.training.executor.stage1_epoch`: build or resume,
evaluate, checkpoint, and the final metrics; plus the export to the reference's checkpoint layout.
``stage1_method="dino"`` hands the run to :mod:`lgl_helpers.training.stage1.dino_trainer` after the
inputs are checked."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lgl_helpers import files, reproducibility, runs
from lgl_helpers.config import STAGE1_METHOD_NAMES
from lgl_helpers.core import distributed
from lgl_helpers.core.data import make_loader
from lgl_helpers.core.losses import AATDiscriminator, ContrastiveLoss
from lgl_helpers.core.models import ECAPATDNN, load_weights
from lgl_helpers.training import launch
from lgl_helpers.training.executor import MidEpoch, Stage1Models, enable_tf32, stage1_epoch
from lgl_helpers.training.stage1.checkpoints import (
    MID_EPOCH,  # noqa: F401  (read here by the tests)
    RunState,
    resume_or_start,
    save_epoch,
    save_mid_epoch,
    thin_checkpoints,
)
from lgl_helpers.training.stage1.config import STAGE_DIR, Stage1Config, stage_folder
from lgl_helpers.training.stage1.dino_trainer import train_dino
from lgl_helpers.training.stage1.inputs import Stage1Data, prepare_data
from lgl_helpers.training.stage1.scoring import evaluate, evaluate_untrained, final_metrics, scores_text
from lgl_helpers.training.state import load_checkpoint, module_state
from lgl_helpers.training.step_checkpoints import StepCheckpoints

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def export_reference(checkpoint: str | Path, out_path: str | Path) -> Path:
    """Write a Stage I kit checkpoint as the reference code's plain state dict (``Network.*``, ``Loss.w/b``, ``AATNet.*``).

    The result loads with the reference's ``model.load_network`` (and with :func:`load_encoder`).
    """
    obj = load_weights(checkpoint)
    if not isinstance(obj, dict) or obj.get("stage") != STAGE_DIR or "loss" not in obj or "aat" not in obj:
        raise ValueError(
            f"{checkpoint}: not a Stage I kit checkpoint (needs 'stage': 'stage1', 'encoder', 'loss', 'aat')"
        )
    state = {f"Network.{k}": v for k, v in obj["encoder"].items()}
    state.update({f"Loss.{k}": v for k, v in obj["loss"].items()})
    state.update({f"AATNet.{k}": v for k, v in obj["aat"].items()})
    return files.atomic_torch_save(state, out_path)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def _describe_epoch(rec: dict) -> str:
    return (
        f"Epoch {rec['epoch']}, LR {rec['lr']:f}, Acc {rec['top1']:.2f}, LOSS {rec['loss']:f}, "
        f"AAT {rec['aat_loss']:.4f}, DISC {rec['disc_loss']:.4f}"
    )


def _resolved_params(config: Stage1Config, data: Stage1Data) -> dict:
    """The config with its data paths as resolved, those inside the run relative to it (a run folder can move)."""
    params = dataclasses.asdict(config)
    params.update({key: "" if value is None else str(value) for key, value in data.paths.items()})
    return runs.stored_paths(params, data.paths, stage_folder(config).parent)


def _build(config: Stage1Config, device) -> Stage1Models:
    """Fresh models seeded with ``config.seed``: ECAPA-TDNN C=channels, contrastive loss, discriminator, Adam ×2, StepLR."""
    reproducibility.seed_everything(config.seed)
    encoder = ECAPATDNN(config.channels, config.mfa_channels).to(device)
    loss_fn = ContrastiveLoss().to(device)
    aat = AATDiscriminator().to(device)
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(loss_fn.parameters()), lr=config.lr)
    aat_optimizer = torch.optim.Adam(aat.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.decay_every, gamma=config.lr_decay)
    return Stage1Models(encoder, loss_fn, aat, optimizer, aat_optimizer, scheduler)


def _load_models(models: Stage1Models, ckpt: dict) -> None:
    models.encoder.load_state_dict(ckpt["encoder"])
    models.loss_fn.load_state_dict(ckpt["loss"])
    models.aat.load_state_dict(ckpt["aat"])
    models.optimizer.load_state_dict(ckpt["optimizer"])
    models.aat_optimizer.load_state_dict(ckpt["aat_optimizer"])
    models.scheduler.load_state_dict(ckpt["scheduler"])


def _checkpoint_extra(models: Stage1Models, state: RunState, params: dict) -> dict:
    """Everything but the encoder a resume needs after ``state.epoch`` epochs (save_checkpoint adds the RNG states)."""
    return {
        "stage": STAGE_DIR,
        "loss": module_state(models.loss_fn),
        "aat": module_state(models.aat),
        "optimizer": models.optimizer.state_dict(),
        "aat_optimizer": models.aat_optimizer.state_dict(),
        "scheduler": models.scheduler.state_dict(),
        "epoch": state.epoch,
        "params": params,
        "history": state.history,
        "best": state.best,
        "untrained": state.untrained,
        "wall_seconds": state.wall_seconds,
        "timings": state.timings.seconds,
    }


def _finish_epoch(
    config: Stage1Config,
    data: Stage1Data,
    models: Stage1Models,
    state: RunState,
    epoch: int,
    lr: float,
    means: dict,
    n_batches: int,
    tic: float,
    device,
) -> tuple[dict, bool, bool]:
    """After an epoch's batches: scheduler step, evaluation on evaluated epochs, history and best.

    Returns (the epoch's history record, evaluated, improved).
    """
    train_seconds = time.perf_counter() - tic
    models.scheduler.step()
    record = {"epoch": epoch, "lr": lr, **means, "samples_per_s": n_batches * config.batch_size / train_seconds}
    evaluated = epoch % config.test_interval == 0 or epoch == config.epochs
    improved = False
    if evaluated:
        with state.timings.part("validation"):
            metrics = evaluate(models.encoder, data.val_trials, data.paths["test_root"], device)
        record.update(metrics)
        improved = state.best is None or record["eer"] < state.best["eer"]
        if improved:
            state.best = {
                "epoch": epoch,
                "eer": record["eer"],
                "min_dcf": record["min_dcf"],
                "min_dcf_0.01": record["min_dcf_0.01"],
            }
    record["seconds"] = time.perf_counter() - tic
    state.wall_seconds += record["seconds"]
    state.history.append(record)
    state.epoch = epoch
    log.info(
        "epoch %d/%d lr %.6f loss %.4f top1 %.1f%% aat %.4f disc %.4f (acc %.0f%%) %.0f samples/s%s",
        epoch,
        config.epochs,
        lr,
        record["loss"],
        record["top1"],
        record["aat_loss"],
        record["disc_loss"],
        record["disc_acc"],
        record["samples_per_s"],
        f" | val EER {record['eer']:.2f}% minDCF {record['min_dcf']:.4f}" if evaluated else "",
    )
    return record, evaluated, improved


@runs.holds_run_folder("Stage I training")
def train_stage1(
    config: Stage1Config,
    on_epoch: Callable[[dict, list[dict]], None] | None = None,
    data: Stage1Data | None = None,
) -> dict:
    """Train Stage I as configured; resumes from ``checkpoints/last.model`` when ``config.resume``.

    ``on_epoch(record, history)`` is called after epoch 0 (untrained evaluation) and every epoch;
    ``record`` holds ``epoch``, ``lr``, ``loss``, ``contrastive_loss``, ``top1``, ``aat_loss``,
    ``disc_loss``, ``disc_acc``, ``samples_per_s``, ``seconds`` and, on evaluated epochs, ``eer``,
    ``min_dcf``, ``min_dcf_0.01``. ``data`` from :func:`prepare_data` (built here when None).
    Resuming with other values of a parameter that defines the results so far is an error naming
    them, unless ``allow_changed_params`` (:func:`lgl_helpers.training.state.check_resume`).

    Returns the content of ``metrics.json`` plus ``history``, ``completed`` (False when ``max_steps``
    stopped the call; the running epoch is then not saved, as after an interruption) and ``stage_dir``.
    Inside an epoch a mid-epoch checkpoint is written every ``checkpoint_minutes``; SIGTERM writes one
    at the next batch and raises :class:`~lgl_helpers.training.step_checkpoints.TrainingStopped`. A
    resumed call continues that epoch at the next batch.
    """
    if config.nproc > 1 and not distributed.launched():
        return _train_under_torchrun(config, on_epoch)
    started = time.perf_counter()
    device = distributed.init(config.device)
    enable_tf32(device)
    stage_dir = stage_folder(config)
    runs.add_file_log(stage_dir, STAGE_DIR)
    data = data if data is not None else prepare_data(config)
    params = _resolved_params(config, data)
    if config.stage1_method == "dino":
        return train_dino(config, data, params, stage_dir, device, started, on_epoch)
    models = _build(config, device)
    state = resume_or_start(config, stage_dir, params, lambda ckpt: _load_models(models, ckpt))
    models.parallelise(device, config.sync_batchnorm)
    runs.open_run(stage_dir, params, STAGE_DIR)

    if state.untrained is None:
        record = evaluate_untrained(models.encoder, data, state, device)
        if on_epoch:
            on_epoch(record, state.history)

    loader = None
    steps_done = 0
    completed = True
    with StepCheckpoints(config.checkpoint_minutes) as checkpoints:
        for epoch in range(state.epoch + 1, config.epochs + 1):
            if config.max_steps and steps_done >= config.max_steps:
                completed = False
                break
            resume, state.partial = state.partial, None
            loader = loader or make_loader(data.dataset, config.batch_size, config.workers, config.seed, device)
            loader.sampler.set_epoch(epoch, skip_batches=resume["batches"] if resume else 0)
            lr = models.optimizer.param_groups[0]["lr"]
            # A resumed epoch's time counts from its start before the interruption.
            tic = time.perf_counter() - (resume["seconds"] if resume else 0.0)
            checkpoints.epoch_started()

            def write(running: dict, epoch=epoch, tic=tic) -> None:
                partial = {**running, "epoch": epoch, "seconds": time.perf_counter() - tic}
                save_mid_epoch(stage_dir, models.encoder, _checkpoint_extra(models, state, params), partial)

            with state.timings.part("training"):
                means, n_batches, completed = stage1_epoch(
                    models,
                    loader,
                    config.aat_weight,
                    device,
                    config.precision,
                    f"stage1 epoch {epoch}/{config.epochs}",
                    max_batches=config.max_steps - steps_done if config.max_steps else None,
                    mid=MidEpoch(checkpoints, write, f"epoch {epoch}", resume),
                )
            steps_done += n_batches - (resume["batches"] if resume else 0)
            if not completed:
                log.info(
                    "max_steps=%d reached during epoch %d: stopping; the epoch is not saved", config.max_steps, epoch
                )
                break
            record, evaluated, improved = _finish_epoch(
                config, data, models, state, epoch, lr, means, n_batches, tic, device
            )
            if distributed.is_main():
                with state.timings.part("checkpoints"):
                    extra = _checkpoint_extra(models, state, params)
                    save_epoch(stage_dir, models.encoder, extra, state.epoch, evaluated, improved)
                    thin_checkpoints(stage_dir, state, config.keep_every)
            files.atomic_write_text(stage_dir / "scores.txt", scores_text(state.history, _describe_epoch))
            if on_epoch:
                on_epoch(record, state.history)
            checkpoints.after_epoch(f"epoch {epoch}")

    result = {"completed": completed, "stage_dir": str(stage_dir), "history": state.history}
    if not completed or state.best is None:
        result.update(epochs_run=state.epoch, wall_seconds=state.wall_seconds)
        return result
    distributed.barrier()  # every rank reads best.model, which rank 0 wrote
    result.update(final_metrics(config, stage_dir, data, state, started, device))
    return result


def _train_under_torchrun(config: Stage1Config, on_epoch: Callable | None) -> dict:
    """``train_stage1`` on ``config.nproc`` local ranks; the result read back from the stage's files."""
    stage_dir = stage_folder(config)
    launch.run_under_torchrun(STAGE_DIR, config, stage_dir)
    history = load_checkpoint(stage_dir / "checkpoints" / "last.model")["history"]
    if on_epoch:
        for i, record in enumerate(history):
            on_epoch(record, history[: i + 1])
    result = {"completed": False, "stage_dir": str(stage_dir), "history": history}
    metrics_file = stage_dir / "metrics.json"
    metrics = files.read_json(metrics_file) if metrics_file.is_file() else {}
    if history[-1]["epoch"] == config.epochs and metrics.get("epochs_run") == config.epochs:
        result.update(metrics, completed=True)
    else:
        result.update(epochs_run=history[-1]["epoch"])
    return result


def results_table(metrics: dict) -> str:
    """Markdown table of ``metrics.json``: the untrained encoder against the best Stage I epoch on the test trials."""
    rows = [
        "| encoder | EER (%) | minDCF (p=0.05) | minDCF (p=0.01) |",
        "| --- | ---: | ---: | ---: |",
        f"| untrained (epoch 0) | {metrics['untrained_eer']:.2f} | {metrics['untrained_min_dcf']:.4f} | "
        f"{metrics['untrained_min_dcf_0.01']:.4f} |",
        f"| Stage I ({STAGE1_METHOD_NAMES[metrics.get('stage1_method', 'contrastive_aat')]}), best epoch "
        f"{metrics['best_epoch']} of {metrics['epochs_run']} | {metrics['eer']:.2f} | "
        f"{metrics['min_dcf']:.4f} | {metrics['min_dcf_0.01']:.4f} |",
    ]
    note = " (validation = test list: the best epoch was chosen on the test set)" if metrics.get("val_is_test") else ""
    return (
        "\n".join(rows)
        + f"\n\nTest trials: `{metrics['trials']}`{note}; training took {metrics['wall_seconds'] / 60:.1f} min."
    )
