"""Notebook 01's training call: Stage I with its curves redrawn after every epoch and TensorBoard event files."""

from __future__ import annotations

from pathlib import Path

from IPython.display import display

from lgl_helpers.notebook import stage1_figures, tensorboard_log
from lgl_helpers.training import stage1


def train(cfg: stage1.Stage1Config, data: stage1.Stage1Data, stage_dir: Path) -> dict:
    """Run (or resume) Stage I: :func:`lgl_helpers.training.stage1.train_stage1`.

    Every epoch goes to ``<stage>/tensorboard/`` and, when ``cfg.interactive``, redraws the training
    curves shown in the cell (headless, section 3 of the notebook draws them once). Returns train_stage1's result.
    """
    live = display(stage1_figures.plot_training_curves([]), display_id=True) if cfg.interactive else None
    with tensorboard_log.EventLog(stage_dir) as events:

        def on_epoch(record, history):
            events.stage1_epoch(record, history)
            if live is not None:
                live.update(stage1_figures.plot_training_curves(history))

        return stage1.train_stage1(cfg, on_epoch=on_epoch, data=data)
