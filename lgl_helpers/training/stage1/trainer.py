"""Stage I's training loop around :func:`lgl_helpers.training.executor.stage1_epoch`: build or resume,
evaluate, checkpoint, and the final metrics; plus the export to the reference's checkpoint layout."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lgl_helpers import runs
from lgl_helpers.core import distributed
from lgl_helpers.core.data import make_loader
from lgl_helpers.core.embed import evaluate_trials
from lgl_helpers.core.evaluation import final_evaluation, plan_evaluation, store_threshold
from lgl_helpers.core.losses import AATDiscriminator, ContrastiveLoss
from lgl_helpers.core.metrics import TEST_SCORES
from lgl_helpers.core.models import ECAPATDNN, REFERENCE_MFA_CHANNELS, load_encoder
from lgl_helpers.timings import PartTimes
from lgl_helpers.training import launch, retention
from lgl_helpers.training.executor import MidEpoch, Stage1Models, enable_tf32, stage1_epoch
from lgl_helpers.training.stage1.config import RUN_CONTROL_FIELDS, STAGE_DIR, Stage1Config, stage_folder
from lgl_helpers.training.stage1.inputs import Stage1Data, prepare_data
from lgl_helpers.training.state import check_resume, load_checkpoint, module_state, restore_rng, save_checkpoint
from lgl_helpers.training.step_checkpoints import StepCheckpoints

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def export_reference(checkpoint: str | Path, out_path: str | Path) -> Path:
    """Write a Stage I kit checkpoint as the reference code's plain state dict (``Network.*``, ``Loss.w/b``, ``AATNet.*``).

    The result loads with the reference's ``model.load_network`` (and with :func:`load_encoder`).
    """
    obj = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("stage") != STAGE_DIR or "loss" not in obj or "aat" not in obj:
        raise ValueError(
            f"{checkpoint}: not a Stage I kit checkpoint (needs 'stage': 'stage1', 'encoder', 'loss', 'aat')"
        )
    state = {f"Network.{k}": v for k, v in obj["encoder"].items()}
    state.update({f"Loss.{k}": v for k, v in obj["loss"].items()})
    state.update({f"AATNet.{k}": v for k, v in obj["aat"].items()})
    return runs.atomic_torch_save(state, out_path)


def _epoch_path(stage_dir: Path, epoch: int) -> Path:
    return stage_dir / "checkpoints" / f"epoch_{epoch:03d}.model"


# Written inside an epoch (every checkpoint_minutes, on SIGTERM): last.model plus the epoch's partial
# progress; removed once the epoch's own checkpoint is written.
MID_EPOCH = "mid_epoch.model"


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


@dataclass
class _State:
    epoch: int = 0
    history: list = dataclasses.field(default_factory=list)
    best: dict | None = None
    untrained: dict | None = None
    wall_seconds: float = 0.0
    # Seconds per part (untrained_evaluation, training, validation, checkpoints, final_evaluation).
    timings: PartTimes = dataclasses.field(default_factory=PartTimes)
    # The running epoch's progress from a mid-epoch checkpoint (with its "rng"), until that epoch resumes.
    partial: dict | None = None


def _evaluate(model, trials, root, device) -> dict:
    """``eer``, ``min_dcf`` and ``min_dcf_0.01`` of the trials."""
    result = evaluate_trials(model, trials, root, device=device, show_progress=False)
    return {key: float(result[key]) for key in ("eer", "min_dcf", "min_dcf_0.01")}


def _scores_text(history: list[dict]) -> str:
    lines = []
    for rec in history:
        if rec["epoch"] == 0:
            head = "Epoch 0 (untrained)"
        else:
            head = (
                f"Epoch {rec['epoch']}, LR {rec['lr']:f}, Acc {rec['top1']:.2f}, LOSS {rec['loss']:f}, "
                f"AAT {rec['aat_loss']:.4f}, DISC {rec['disc_loss']:.4f}"
            )
        if rec.get("eer") is not None:
            head += f", EER {rec['eer']:.4f}, minDCF {rec['min_dcf']:.4f}, minDCF0.01 {rec['min_dcf_0.01']:.4f}"
        lines.append(head)
    return "\n".join(lines) + "\n"


def _resolved_params(config: Stage1Config, data: Stage1Data) -> dict:
    """The config with its data paths as resolved, those inside the run relative to it (a run folder can move)."""
    params = dataclasses.asdict(config)
    params.update({key: "" if value is None else str(value) for key, value in data.paths.items()})
    return runs.stored_paths(params, data.paths, stage_folder(config).parent)


def _build(config: Stage1Config, device) -> Stage1Models:
    """Fresh models seeded with ``config.seed``: ECAPA-TDNN C=channels, contrastive loss, discriminator, Adam ×2, StepLR."""
    runs.seed_everything(config.seed)
    encoder = ECAPATDNN(config.channels, config.mfa_channels).to(device)
    loss_fn = ContrastiveLoss().to(device)
    aat = AATDiscriminator().to(device)
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(loss_fn.parameters()), lr=config.lr)
    aat_optimizer = torch.optim.Adam(aat.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.decay_every, gamma=config.lr_decay)
    return Stage1Models(encoder, loss_fn, aat, optimizer, aat_optimizer, scheduler)


def _resume_point(ckpt_dir: Path) -> Path | None:
    """The checkpoint a resumed run starts from: a mid-epoch one of the epoch after ``last.model``'s, else ``last.model``.

    A mid-epoch checkpoint of an epoch that is saved already (the run stopped before removing it) is
    ignored; the next epoch's checkpoints replace it.
    """
    last, mid = ckpt_dir / "last.model", ckpt_dir / MID_EPOCH
    if mid.is_file():
        done = load_checkpoint(last)["epoch"] if last.is_file() else 0
        if load_checkpoint(mid)["epoch"] == done:
            return mid
    return last if last.is_file() else None


def _resume_or_start(config: Stage1Config, stage_dir: Path, params: dict, models: Stage1Models) -> _State:
    """Load the resume point (``checkpoints/last.model``, or a mid-epoch checkpoint after it) into
    ``models`` when resuming (after the resume policy's check), or, with ``resume=False``, remove an
    earlier run's files. Returns where the run stands."""
    ckpt_dir = stage_dir / "checkpoints"
    point = _resume_point(ckpt_dir) if config.resume else None
    if point is not None:
        ckpt = load_checkpoint(point)
        for width in ("channels", "mfa_channels"):
            saved = int(ckpt.get(width, REFERENCE_MFA_CHANNELS))
            if saved != getattr(config, width):
                raise ValueError(
                    f"{point}: checkpoint has {width}={saved} but {width}={getattr(config, width)}; "
                    f"use the same {width} or resume=False to start over"
                )
        fixed = [k for k in params if k not in RUN_CONTROL_FIELDS]
        saved = runs.stored_paths(ckpt["params"], runs.DATA_KEYS, stage_dir.parent)
        check_resume(point, saved, params, fixed, config.allow_changed_params)
        models.encoder.load_state_dict(ckpt["encoder"])
        models.loss_fn.load_state_dict(ckpt["loss"])
        models.aat.load_state_dict(ckpt["aat"])
        models.optimizer.load_state_dict(ckpt["optimizer"])
        models.aat_optimizer.load_state_dict(ckpt["aat_optimizer"])
        models.scheduler.load_state_dict(ckpt["scheduler"])
        restore_rng(ckpt["rng"])
        partial = {**ckpt["partial"], "rng": ckpt["rng"]} if "partial" in ckpt else None
        state = _State(
            ckpt["epoch"],
            list(ckpt["history"]),
            ckpt["best"],
            ckpt["untrained"],
            float(ckpt["wall_seconds"]),
            PartTimes(ckpt.get("timings")),
            partial,
        )
        if partial is None:
            log.info("resuming Stage I from %s (epoch %d done)", point, state.epoch)
        else:
            log.info("resuming Stage I from %s: epoch %d at batch %d", point, partial["epoch"], partial["batches"] + 1)
        return state
    if not config.resume and distributed.is_main():
        earlier = [stage_dir / name for name in ("best.model", "metrics.json", "scores.txt", TEST_SCORES)]
        stale = sorted(ckpt_dir.glob("*.model")) + [path for path in earlier if path.is_file()]
        if stale:
            log.warning("resume=False: removing %d file(s) of an earlier run in %s", len(stale), stage_dir)
            for path in stale:
                path.unlink()
    return _State()


def _checkpoint_extra(models: Stage1Models, state: _State, params: dict) -> dict:
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


def _save(stage_dir: Path, models: Stage1Models, state: _State, params: dict, evaluated: bool, improved: bool) -> None:
    """The epoch's checkpoint: ``epoch_XXX.model`` when evaluated, ``best.model`` when improved, always
    ``last.model``; the epoch's mid-epoch checkpoint goes after them."""
    last = stage_dir / "checkpoints" / "last.model"
    first = _epoch_path(stage_dir, state.epoch) if evaluated else last
    save_checkpoint(first, models.encoder, _checkpoint_extra(models, state, params))
    payload = first.read_bytes()
    if improved:
        runs.atomic_write_bytes(stage_dir / "best.model", payload)
    if first != last:
        runs.atomic_write_bytes(last, payload)  # last.model is written after the others: a complete resume point
    (stage_dir / "checkpoints" / MID_EPOCH).unlink(missing_ok=True)


def _save_mid_epoch(stage_dir: Path, models: Stage1Models, state: _State, params: dict, partial: dict) -> None:
    """``checkpoints/mid_epoch.model`` (rank 0): the models inside epoch ``partial["epoch"]``, after ``partial["batches"]``."""
    if distributed.is_main():
        extra = {**_checkpoint_extra(models, state, params), "partial": partial}
        save_checkpoint(stage_dir / "checkpoints" / MID_EPOCH, models.encoder, extra)


def _thin_checkpoints(stage_dir: Path, state: _State, keep_every: int = retention.DEFAULT_KEEP_EVERY) -> None:
    """Remove the ``epoch_XXX.model`` files retention drops: all but the best, the latest and every
    ``keep_every``-th evaluated epoch. ``last.model`` (the resume point) and ``best.model`` are copies and stay."""
    evaluated = [rec["epoch"] for rec in state.history if rec["epoch"] > 0 and "eer" in rec]
    for epoch in evaluated[:-1]:
        path = _epoch_path(stage_dir, epoch)
        if path.is_file() and not retention.keep_epoch(epoch, keep_every, protected=epoch == state.best["epoch"]):
            path.unlink()


def _evaluate_untrained(encoder: ECAPATDNN, data: Stage1Data, state: _State, device) -> dict:
    """Epoch 0: the untrained encoder on the validation (and test) trials. Returns its history record."""
    tic = time.perf_counter()
    with state.timings.part("untrained_evaluation"):
        val = _evaluate(encoder, data.val_trials, data.paths["test_root"], device)
        test = val if data.same_val_test else _evaluate(encoder, data.test_trials, data.paths["test_root"], device)
    state.untrained = {"val": val, "test": test}
    state.wall_seconds += time.perf_counter() - tic
    record = {"epoch": 0, **val, "seconds": time.perf_counter() - tic}
    state.history.append(record)
    log.info("epoch 0 (untrained): EER %.2f%% minDCF %.4f", val["eer"], val["min_dcf"])
    return record


def _finish_epoch(
    config: Stage1Config,
    data: Stage1Data,
    models: Stage1Models,
    state: _State,
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
            metrics = _evaluate(models.encoder, data.val_trials, data.paths["test_root"], device)
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


def _final_metrics(
    config: Stage1Config, stage_dir: Path, data: Stage1Data, state: _State, started: float, device
) -> dict:
    """``metrics.json``: the best epoch's encoder on the test trials, against the untrained one, and on
    every list of ``eval_trials``, raw and normalised, in one embedding pass
    (:func:`~lgl_helpers.core.evaluation.final_evaluation`): per-trial scores in ``test_scores.txt``
    and ``eval/``; the validation list's ``eer_threshold`` is added to ``best.model``."""
    best_path = stage_dir / "best.model"
    scores_path = stage_dir / TEST_SCORES
    plan = plan_evaluation(config, data.paths, data.entries, data.val_trials, data.test_trials)
    with state.timings.part("final_evaluation"):
        result = final_evaluation(
            load_encoder(best_path), plan, data.paths["test_root"], stage_dir, scores_path, device=device
        )
    store_threshold(best_path, result["eer_threshold"])
    test = result["test"]
    untrained = state.untrained["test"]
    metrics = {
        **test,
        "best_epoch": state.best["epoch"],
        "untrained_eer": untrained["eer"],
        "untrained_min_dcf": untrained["min_dcf"],
        "untrained_min_dcf_0.01": untrained["min_dcf_0.01"],
        "val_eer": state.best["eer"],
        "epochs_run": state.epoch,
        "wall_seconds": state.wall_seconds,
        "call_seconds": time.perf_counter() - started,
        "timings": state.timings.seconds,
        "best_checkpoint": runs.relative_to_run(best_path, stage_dir.parent),
        "test_scores": runs.relative_to_run(scores_path, stage_dir.parent),
        "trials": runs.relative_to_run(data.paths["trials"], stage_dir.parent),
        "val_trials": runs.relative_to_run(data.paths["val_trials"], stage_dir.parent),
        "val_is_test": data.same_val_test,
        "eer_threshold": result["eer_threshold"],
        "eval": result["eval"],
    }
    runs.write_json(stage_dir / "metrics.json", metrics)
    log.info(
        "Stage I done: best epoch %d, test EER %.2f%% (untrained %.2f%%), minDCF %.4f; %s",
        metrics["best_epoch"],
        metrics["eer"],
        metrics["untrained_eer"],
        metrics["min_dcf"],
        best_path,
    )
    return metrics


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
    models = _build(config, device)
    state = _resume_or_start(config, stage_dir, params, models)
    models.parallelise(device, config.sync_batchnorm)
    runs.open_run(stage_dir, params, STAGE_DIR)

    if state.untrained is None:
        record = _evaluate_untrained(models.encoder, data, state, device)
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
                _save_mid_epoch(stage_dir, models, state, params, partial)

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
                    _save(stage_dir, models, state, params, evaluated, improved)
                    _thin_checkpoints(stage_dir, state, config.keep_every)
            runs.atomic_write_text(stage_dir / "scores.txt", _scores_text(state.history))
            if on_epoch:
                on_epoch(record, state.history)
            checkpoints.after_epoch(f"epoch {epoch}")

    result = {"completed": completed, "stage_dir": str(stage_dir), "history": state.history}
    if not completed or state.best is None:
        result.update(epochs_run=state.epoch, wall_seconds=state.wall_seconds)
        return result
    distributed.barrier()  # every rank reads best.model, which rank 0 wrote
    result.update(_final_metrics(config, stage_dir, data, state, started, device))
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
    metrics = runs.read_json(metrics_file) if metrics_file.is_file() else {}
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
        f"| Stage I, best epoch {metrics['best_epoch']} of {metrics['epochs_run']} | {metrics['eer']:.2f} | "
        f"{metrics['min_dcf']:.4f} | {metrics['min_dcf_0.01']:.4f} |",
    ]
    note = " (validation = test list: the best epoch was chosen on the test set)" if metrics.get("val_is_test") else ""
    return (
        "\n".join(rows)
        + f"\n\nTest trials: `{metrics['trials']}`{note}; training took {metrics['wall_seconds'] / 60:.1f} min."
    )
