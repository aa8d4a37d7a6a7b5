"""Stage I's run state and checkpoints, shared by both methods (contrastive + AAT and DINO): where a run
stands, its resume point, the epoch and mid-epoch checkpoints, and which epoch files stay."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lgl_helpers import files, runs
from lgl_helpers.core import distributed
from lgl_helpers.core.metrics import TEST_SCORES
from lgl_helpers.core.models import ECAPATDNN, REFERENCE_MFA_CHANNELS
from lgl_helpers.timings import PartTimes
from lgl_helpers.training import retention
from lgl_helpers.training.stage1.config import RUN_CONTROL_FIELDS, Stage1Config
from lgl_helpers.training.state import check_resume, load_checkpoint, restore_rng, save_checkpoint

log = logging.getLogger(__name__)


def epoch_path(stage_dir: Path, epoch: int) -> Path:
    return stage_dir / "checkpoints" / f"epoch_{epoch:03d}.model"


# Written inside an epoch (every checkpoint_minutes, on SIGTERM): last.model plus the epoch's partial
# progress; removed once the epoch's own checkpoint is written.
MID_EPOCH = "mid_epoch.model"


@dataclass
class RunState:
    epoch: int = 0
    history: list = dataclasses.field(default_factory=list)
    best: dict | None = None
    untrained: dict | None = None
    wall_seconds: float = 0.0
    # Seconds per part (untrained_evaluation, training, validation, checkpoints, final_evaluation).
    timings: PartTimes = dataclasses.field(default_factory=PartTimes)
    # The running epoch's progress from a mid-epoch checkpoint (with its "rng"), until that epoch resumes.
    partial: dict | None = None


def resume_point(ckpt_dir: Path) -> Path | None:
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


def resume_or_start(
    config: Stage1Config, stage_dir: Path, params: dict, load: Callable[[dict], None], fixed_extra: tuple = ()
) -> RunState:
    """Load the resume point (``checkpoints/last.model``, or a mid-epoch checkpoint after it) with
    ``load(checkpoint)`` when resuming (after the resume policy's check on every parameter but the run
    controls, plus ``fixed_extra``), or, with ``resume=False``, remove an earlier run's files. Returns
    where the run stands."""
    ckpt_dir = stage_dir / "checkpoints"
    point = resume_point(ckpt_dir) if config.resume else None
    if point is not None:
        ckpt = load_checkpoint(point)
        for width in ("channels", "mfa_channels"):
            saved = int(ckpt.get(width, REFERENCE_MFA_CHANNELS))
            if saved != getattr(config, width):
                raise ValueError(
                    f"{point}: checkpoint has {width}={saved} but {width}={getattr(config, width)}; "
                    f"use the same {width} or resume=False to start over"
                )
        fixed = [k for k in params if k not in RUN_CONTROL_FIELDS or k in fixed_extra]
        saved = runs.stored_paths(ckpt["params"], runs.DATA_KEYS, stage_dir.parent)
        check_resume(point, saved, params, fixed, config.allow_changed_params)
        load(ckpt)
        restore_rng(ckpt["rng"])
        partial = {**ckpt["partial"], "rng": ckpt["rng"]} if "partial" in ckpt else None
        state = RunState(
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
    return RunState()


def save_epoch(stage_dir: Path, encoder: ECAPATDNN, extra: dict, epoch: int, evaluated: bool, improved: bool) -> None:
    """The checkpoint of ``epoch`` (``encoder`` plus ``extra``): ``epoch_XXX.model`` when evaluated,
    ``best.model`` when improved, always ``last.model``; the epoch's mid-epoch checkpoint goes after them."""
    last = stage_dir / "checkpoints" / "last.model"
    first = epoch_path(stage_dir, epoch) if evaluated else last
    save_checkpoint(first, encoder, extra)
    payload = first.read_bytes()
    if improved:
        files.atomic_write_bytes(stage_dir / "best.model", payload)
    if first != last:
        files.atomic_write_bytes(last, payload)  # last.model is written after the others: a complete resume point
    (stage_dir / "checkpoints" / MID_EPOCH).unlink(missing_ok=True)


def save_mid_epoch(stage_dir: Path, encoder: ECAPATDNN, extra: dict, partial: dict) -> None:
    """``checkpoints/mid_epoch.model`` (rank 0): the models inside epoch ``partial["epoch"]``, after ``partial["batches"]``."""
    if distributed.is_main():
        save_checkpoint(stage_dir / "checkpoints" / MID_EPOCH, encoder, {**extra, "partial": partial})


def thin_checkpoints(stage_dir: Path, state: RunState, keep_every: int = retention.DEFAULT_KEEP_EVERY) -> None:
    """Remove the ``epoch_XXX.model`` files retention drops: all but the best, the latest and every
    ``keep_every``-th evaluated epoch. ``last.model`` (the resume point) and ``best.model`` are copies and stay."""
    evaluated = [rec["epoch"] for rec in state.history if rec["epoch"] > 0 and "eer" in rec]
    for epoch in evaluated[:-1]:
        path = epoch_path(stage_dir, epoch)
        if path.is_file() and not retention.keep_epoch(epoch, keep_every, protected=epoch == state.best["epoch"]):
            path.unlink()
