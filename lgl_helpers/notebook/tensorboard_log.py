"""TensorBoard event files of a training stage, written from the notebooks' per-epoch callbacks.

Each stage writes into ``<stage folder>/tensorboard/`` (``tensorboard --logdir runs/<run>`` shows every
stage of a run side by side): Stage I its losses, accuracies (DINO: teacher entropies, centre norm and
schedules) and validation EER per epoch; Stage II,
per epoch in run order, loss, accuracy, validation EER / minDCF, the fraction the gate keeps, the
share of reliable pseudo labels among the kept and among the dropped samples (%), the ROC AUC of
−loss as a detector of reliable labels on that epoch's training-batch losses, the gate, and the
per-sample loss histogram, where the
gate's valley can be watched forming during a long run. The ``tensorboard`` package is optional
(``pip install tensorboard``, part of the kit's ``dev`` extra): without it :class:`EventLog` writes nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FOLDER = "tensorboard"
STAGE1_SCALARS = {
    "loss/total": "loss",
    "loss/contrastive": "contrastive_loss",
    "loss/aat": "aat_loss",
    "accuracy/contrastive_top1": "top1",
    "accuracy/aat_discriminator": "disc_acc",
    "val/eer": "eer",
    "val/min_dcf": "min_dcf",
    "speed/samples_per_s": "samples_per_s",
}
DINO_SCALARS = {
    "loss/dino": "loss",
    "dino/teacher_entropy": "teacher_entropy",
    "dino/teacher_batch_mean_entropy": "teacher_mean_entropy",
    "dino/student_entropy": "student_entropy",
    "dino/center_norm": "center_norm",
    "schedule/lr": "lr",
    "schedule/teacher_momentum": "teacher_momentum",
    "schedule/teacher_temp": "teacher_temp",
    "val/eer": "eer",
    "val/min_dcf": "min_dcf",
    "speed/samples_per_s": "samples_per_s",
}
STAGE2_SCALARS = {
    "loss/train": "loss",
    "accuracy/train": "accuracy",
    "val/eer": "eer",
    "val/min_dcf": "min_dcf",
    "gate/fraction_kept": "fraction_selected",
    "gate/value": "gate",
    # The words of notebook 04 and the report; the AUC is of this epoch's training-batch losses, while the
    # gate evidence table's AUC is of the losses the gate was chosen from (the clean pass with
    # gate_losses="clean"), so the two can differ.
    "reliability/reliable_among_kept_pct": "precision_selected",
    "reliability/reliable_among_dropped_pct": "precision_rejected",
    "reliability/auc_of_training_batch_losses": "auc_reliable",
    "batches/skipped": "skipped_batches",
}


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard is not installed: no event files (pip install tensorboard to get them)")
        return None
    return SummaryWriter


class EventLog:
    """One stage's TensorBoard writer; a no-op when the ``tensorboard`` package is missing.

    A stage that starts over removes its earlier event files first, so the curves of a discarded run
    do not mix with the new one: Stage I when its epoch 0 (the untrained encoder) comes again, Stage II
    when ``start_over`` (a new run, or ``resume=False``). Use as a context manager.
    """

    def __init__(self, stage_dir: str | Path, start_over: bool = False):
        self.folder = Path(stage_dir) / FOLDER
        self.start_over = start_over
        self.writer = None
        self._writer_class = _summary_writer_class()

    def _scalars(self, names: dict[str, str], record: dict, step: int) -> None:
        for tag, key in names.items():
            value = record.get(key)
            if value is not None:
                self.writer.add_scalar(tag, float(value) * (100.0 if tag.endswith("_pct") else 1.0), step)

    def _open(self, start_over: bool) -> bool:
        if self._writer_class is None:
            return False
        if self.writer is None:
            if start_over and self.folder.is_dir():
                for old in self.folder.glob("events.out.tfevents.*"):
                    old.unlink()
            self.writer = self._writer_class(str(self.folder), flush_secs=30)
        return True

    def stage1_epoch(self, record: dict, history: list[dict]) -> None:
        """Stage I ``on_epoch`` callback: ``record`` is the epoch's history entry (epoch 0: the untrained encoder)."""
        if not self._open(start_over=record["epoch"] == 0):
            return
        # a DINO record holds teacher statistics; the contrastive one the AAT discriminator's
        self._scalars(DINO_SCALARS if "teacher_entropy" in record else STAGE1_SCALARS, record, record["epoch"])
        self.writer.flush()

    def stage2_epoch(self, record: dict, state: dict) -> None:
        """Stage II ``on_epoch`` callback: ``record`` = ``state["history"][-1]``; step = its position in the run.

        In a run that starts over, the first call also writes the epochs before it that no callback
        reported (LGL's iteration-1 phase T taken over from the baseline run of the same folder).
        """
        history = state["history"]
        first = self.writer is None
        if not self._open(start_over=self.start_over):
            return
        steps = range(1, len(history) + 1) if first and self.start_over else [len(history)]
        for step in steps:
            self._stage2_record(history[step - 1], state, step)
        self.writer.flush()

    def _stage2_record(self, record: dict, state: dict, step: int) -> None:
        """One epoch's scalars and, while its loss record is kept (``record["losses"]``, relative to the stage
        folder), the histograms of its per-sample losses: all, and by reliable / unreliable pseudo label."""
        self._scalars(STAGE2_SCALARS, record, step)
        self.writer.add_scalar("run/iteration", record["iteration"], step)
        iteration = state["iterations"][record["iteration"] - 1]
        if record["phase"] == "T" and record["epoch"] == 1 and iteration.get("nmi") is not None:
            self.writer.add_scalar("clustering/nmi", iteration["nmi"], record["iteration"])
        # A loss record thinned by the retention policy (keep_every) is null in the history.
        losses_path = self.folder.parent / record["losses"] if record.get("losses") else None
        if losses_path is not None and losses_path.is_file():
            with np.load(losses_path, allow_pickle=False) as arrays:
                losses = arrays["per_sample_loss"]
                self.writer.add_histogram("per_sample_loss/all", losses, step)
                if "reliable" in arrays.files:
                    reliable = arrays["reliable"]
                    for tag, mask in (("reliable", reliable), ("unreliable", ~reliable)):
                        if mask.any():
                            self.writer.add_histogram(f"per_sample_loss/{tag}", losses[mask], step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
