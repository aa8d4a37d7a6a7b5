"""DINO Stage I's driver (``stage1_method="dino"``): build or resume student, teacher, heads, centre and
optimizer; the epoch loop with schedules, evaluation, checkpoints and the collapse warning.

The Stage I model is the **teacher's** encoder: ``best.model``'s ``encoder`` (and so what notebook 02,
Stage II's ``init_model``, ``Encoder.from_checkpoint``, embed, verify and export read) is the teacher,
chosen by its validation EER. The teacher is an average of the student's recent weights, which is
smoother than any one of them; DINO's authors found it better than the student throughout training,
and wespeaker evaluates and averages the teacher (``average_dino_model.py`` keeps ``t_model.*``).
The student, both heads, the centre, the optimizer and the step (every schedule is a function of it)
are in every checkpoint for the resume.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lgl_helpers import files, reproducibility, runs
from lgl_helpers.core import distributed
from lgl_helpers.core.data import make_loader
from lgl_helpers.core.models import ECAPATDNN
from lgl_helpers.training.executor import MidEpoch
from lgl_helpers.training.stage1.checkpoints import (
    RunState,
    resume_or_start,
    save_epoch,
    save_mid_epoch,
    thin_checkpoints,
)
from lgl_helpers.training.stage1.config import STAGE_DIR, Stage1Config
from lgl_helpers.training.stage1.dino import DinoHead, DinoLoss, collapse_warning, cosine_value, teacher_temperature
from lgl_helpers.training.stage1.dino_epoch import (
    DinoModels,
    DinoSchedule,
    dino_epoch,
    param_groups,
)
from lgl_helpers.training.stage1.inputs import Stage1Data, multicrop_dataset
from lgl_helpers.training.stage1.scoring import evaluate, evaluate_untrained, final_metrics, scores_text
from lgl_helpers.training.state import module_state
from lgl_helpers.training.step_checkpoints import StepCheckpoints

log = logging.getLogger(__name__)

METHOD = "dino"
# With DINO the number of epochs shapes the cosine schedules: a resume with another value would change them.
SCHEDULE_FIELDS = ("epochs",)


def build_models(config: Stage1Config, device) -> DinoModels:
    """Fresh student and teacher (the same initial weights), heads, loss and optimizer, seeded with ``config.seed``."""
    reproducibility.seed_everything(config.seed)
    student = ECAPATDNN(config.channels, config.mfa_channels).to(device)
    head = DinoHead(
        192, config.dino_out_dim, config.dino_hidden_dim, config.dino_bottleneck_dim, config.dino_layers
    ).to(device)
    groups = param_groups([student, head], config.dino_weight_decay)
    if config.dino_optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=0.0, momentum=0.9)
    else:
        optimizer = torch.optim.AdamW(groups, lr=0.0)
    loss_fn = DinoLoss(config.dino_out_dim, config.student_temp, config.center_momentum).to(device)
    return DinoModels(student, head, copy.deepcopy(student), copy.deepcopy(head), loss_fn, optimizer)


def _load(models: DinoModels, ckpt: dict) -> None:
    models.teacher.load_state_dict(ckpt["encoder"])
    models.student.load_state_dict(ckpt["student"])
    models.student_head.load_state_dict(ckpt["student_head"])
    models.teacher_head.load_state_dict(ckpt["teacher_head"])
    models.loss_fn.load_state_dict(ckpt["dino_loss"])
    models.optimizer.load_state_dict(ckpt["optimizer"])


def _extra(models: DinoModels, state: RunState, params: dict, schedule: dict) -> dict:
    """Everything but the teacher's encoder (the checkpoint's ``encoder``) a resume needs."""
    return {
        "stage": STAGE_DIR,
        "stage1_method": METHOD,
        "student": module_state(models.student),
        "student_head": module_state(models.student_head),
        "teacher_head": module_state(models.teacher_head),
        "dino_loss": module_state(models.loss_fn),  # the centre
        "optimizer": models.optimizer.state_dict(),
        "schedule": schedule,
        "epoch": state.epoch,
        "params": params,
        "history": state.history,
        "best": state.best,
        "untrained": state.untrained,
        "wall_seconds": state.wall_seconds,
        "timings": state.timings.seconds,
    }


class Schedules:
    """The recipe's schedules over ``epochs × steps_per_epoch`` steps (wespeaker's train_dino.py):
    learning rate ``dino_lr · batch_size / 256`` after a linear warm-up from 0 over ``dino_warmup_epochs``,
    cosine down to ``dino_min_lr · batch_size / 256``; teacher momentum cosine from ``teacher_momentum``
    to 1; teacher temperature per epoch (:func:`~lgl_helpers.training.stage1.dino.teacher_temperature`)."""

    def __init__(self, config: Stage1Config, steps_per_epoch: int):
        self.config, self.steps = config, steps_per_epoch
        self.total = config.epochs * steps_per_epoch
        scale = config.batch_size / 256
        self.lr, self.min_lr = config.dino_lr * scale, config.dino_min_lr * scale

    def at(self, epoch: int, batch: int) -> DinoSchedule:
        """Values of (1-based) ``epoch``'s (0-based) ``batch``."""
        c, step = self.config, (epoch - 1) * self.steps + batch
        return DinoSchedule(
            lr=cosine_value(step, self.total, self.lr, self.min_lr, c.dino_warmup_epochs * self.steps),
            teacher_momentum=cosine_value(step, self.total, c.teacher_momentum, 1.0),
            teacher_temp=teacher_temperature(
                epoch, c.epochs, c.warmup_teacher_temp, c.teacher_temp, c.warmup_teacher_temp_ratio
            ),
            freeze_last=epoch <= c.freeze_last_layer,
        )

    def state(self, epoch: int, batches: int) -> dict:
        """What a checkpoint records of the schedules after ``batches`` of ``epoch``: the step and its values."""
        values = self.at(epoch, max(batches - 1, 0)) if epoch else None
        return {
            "step": (epoch - 1) * self.steps + batches if epoch else 0,
            "total_steps": self.total,
            **({} if values is None else vars(values)),
        }


def _finish_epoch(config, data, models, state, epoch, means, n_batches, tic, device) -> tuple[dict, bool, bool]:
    """After an epoch's batches: the teacher on the validation trials on evaluated epochs, history, best, log line."""
    train_seconds = time.perf_counter() - tic
    record = {"epoch": epoch, **means, "samples_per_s": n_batches * config.batch_size / train_seconds}
    evaluated = epoch % config.test_interval == 0 or epoch == config.epochs
    improved = False
    if evaluated:
        with state.timings.part("validation"):
            record.update(evaluate(models.teacher, data.val_trials, data.paths["test_root"], device))
        improved = state.best is None or record["eer"] < state.best["eer"]
        if improved:
            state.best = {key: record[key] for key in ("epoch", "eer", "min_dcf", "min_dcf_0.01")}
    record["seconds"] = time.perf_counter() - tic
    record["collapse"] = collapse_warning(record, config.dino_out_dim)
    state.wall_seconds += record["seconds"]
    state.history.append(record)
    state.epoch = epoch
    log.info(
        "epoch %d/%d lr %.5f loss %.4f teacher entropy %.2f (batch mean %.2f) centre norm %.3f "
        "momentum %.5f temp %.3f %.0f samples/s%s",
        epoch,
        config.epochs,
        record["lr"],
        record["loss"],
        record["teacher_entropy"],
        record["teacher_mean_entropy"],
        record["center_norm"],
        record["teacher_momentum"],
        record["teacher_temp"],
        record["samples_per_s"],
        f" | val EER {record['eer']:.2f}% minDCF {record['min_dcf']:.4f}" if evaluated else "",
    )
    if record["collapse"]:
        log.warning(record["collapse"])
    return record, evaluated, improved


def _describe_epoch(rec: dict) -> str:
    return (
        f"Epoch {rec['epoch']}, LR {rec['lr']:f}, LOSS {rec['loss']:f}, H_TEACHER {rec['teacher_entropy']:.4f}, "
        f"H_MEAN {rec['teacher_mean_entropy']:.4f}, CENTRE {rec['center_norm']:.4f}"
    )


def train_dino(
    config: Stage1Config,
    data: Stage1Data,
    params: dict,
    stage_dir: Path,
    device,
    started: float,
    on_epoch: Callable[[dict, list[dict]], None] | None = None,
) -> dict:
    """DINO Stage I, called by :func:`lgl_helpers.training.stage1.train_stage1` (same result, files and
    resume rules; ``record`` of ``on_epoch`` holds ``loss``, ``teacher_entropy``, ``teacher_mean_entropy``,
    ``student_entropy``, ``center_norm``, ``lr``, ``teacher_momentum``, ``teacher_temp``,
    ``samples_per_s``, ``seconds``, ``collapse`` (None or the warning) and, when evaluated, ``eer``, ``min_dcf``, ``min_dcf_0.01``)."""
    dataset = multicrop_dataset(config, data)  # its crop check fails before any model is built
    models = build_models(config, device)
    state = resume_or_start(config, stage_dir, params, lambda ckpt: _load(models, ckpt), SCHEDULE_FIELDS)
    models.parallelise(device, config.sync_batchnorm)
    runs.open_run(stage_dir, params, STAGE_DIR)
    if state.untrained is None:
        record = evaluate_untrained(models.teacher, data, state, device)
        if on_epoch:
            on_epoch(record, state.history)

    loader = make_loader(dataset, config.batch_size, config.workers, config.seed, device)
    schedules = Schedules(config, len(loader))
    steps_done, completed = 0, True
    with StepCheckpoints(config.checkpoint_minutes) as checkpoints:
        for epoch in range(state.epoch + 1, config.epochs + 1):
            if config.max_steps and steps_done >= config.max_steps:
                completed = False
                break
            resume, state.partial = state.partial, None
            loader.sampler.set_epoch(epoch, skip_batches=resume["batches"] if resume else 0)
            tic = time.perf_counter() - (resume["seconds"] if resume else 0.0)
            checkpoints.epoch_started()

            def write(running: dict, epoch=epoch, tic=tic) -> None:
                partial = {**running, "epoch": epoch, "seconds": time.perf_counter() - tic}
                extra = _extra(models, state, params, schedules.state(epoch, running["batches"]))
                save_mid_epoch(stage_dir, models.teacher, extra, partial)

            with state.timings.part("training"):
                means, n_batches, completed = dino_epoch(
                    models,
                    loader,
                    lambda batch, epoch=epoch: schedules.at(epoch, batch),
                    config.clip_grad,
                    device,
                    config.precision,
                    f"stage1 (DINO) epoch {epoch}/{config.epochs}",
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
                config, data, models, state, epoch, means, n_batches, tic, device
            )
            if distributed.is_main():
                with state.timings.part("checkpoints"):
                    extra = _extra(models, state, params, schedules.state(epoch, n_batches))
                    save_epoch(stage_dir, models.teacher, extra, epoch, evaluated, improved)
                    thin_checkpoints(stage_dir, state, config.keep_every)
            files.atomic_write_text(stage_dir / "scores.txt", scores_text(state.history, _describe_epoch))
            if on_epoch:
                on_epoch(record, state.history)
            checkpoints.after_epoch(f"epoch {epoch}")

    result = {"completed": completed, "stage_dir": str(stage_dir), "history": state.history}
    if not completed or state.best is None:
        result.update(epochs_run=state.epoch, wall_seconds=state.wall_seconds)
        return result
    distributed.barrier()
    result.update(final_metrics(config, stage_dir, data, state, started, device))
    return result
