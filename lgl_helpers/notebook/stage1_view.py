"""Notebook 01's training call: Stage I with its curves redrawn after every epoch and TensorBoard event
files; on a finished run (``recompute = False``) the run's results read back instead, nothing written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from IPython.display import display
from matplotlib.figure import Figure

from lgl_helpers import files, runs
from lgl_helpers.notebook import stage1_figures, tensorboard_log, viewing
from lgl_helpers.training import stage1
from lgl_helpers.training.state import load_checkpoint


def finished(stage_dir: Path) -> bool:
    """Whether Stage I has finished in ``stage_dir``: its final metrics and its last checkpoint."""
    return (stage_dir / "metrics.json").is_file() and (stage_dir / "checkpoints" / "last.model").is_file()


def open_stage(cfg: stage1.Stage1Config) -> tuple[Path, bool]:
    """The Stage I folder of ``cfg`` and whether the notebook only views it (a finished stage and
    ``recompute = False``, :func:`lgl_helpers.notebook.viewing.choose_mode`); raises in one line when the
    run does not exist. While computing, the kit's log lines also go to ``stage1/stage1.log``."""
    if not cfg.train_list:
        runs.require_run(cfg.run_name, cfg.runs_dir)
    stage_dir = stage1.stage_folder(cfg)
    view_only = viewing.choose_mode(finished(stage_dir), cfg.recompute, "Stage I", stage_dir)
    if not view_only:
        runs.add_file_log(stage_dir, stage_dir.name)
    return stage_dir, view_only


def read_finished(stage_dir: Path) -> dict:
    """A finished Stage I as :func:`train` returns it: ``metrics.json`` plus ``history`` (from the last
    checkpoint), ``completed`` and ``stage_dir``."""
    history = load_checkpoint(stage_dir / "checkpoints" / "last.model")["history"]
    return {
        **files.read_json(stage_dir / "metrics.json"),
        "completed": True,
        "stage_dir": str(stage_dir),
        "history": history,
    }


def curves(cfg: stage1.Stage1Config, history: Sequence[Mapping]) -> Figure:
    """The training curves of ``cfg.stage1_method``: DINO's loss, entropies and centre norm, or the
    contrastive and AAT losses and accuracies; the validation EER either way."""
    if cfg.stage1_method == "dino":
        return stage1_figures.plot_dino_curves(history, cfg.dino_out_dim)
    return stage1_figures.plot_training_curves(history)


def collapse_lines(history: Sequence[Mapping]) -> list[str]:
    """The collapse warnings of a DINO history (one per epoch that showed one; empty when none did)."""
    return [record["collapse"] for record in history if record.get("collapse")]


def train(cfg: stage1.Stage1Config, data: stage1.Stage1Data, stage_dir: Path, view_only: bool = False) -> dict:
    """Run (or resume) Stage I: :func:`lgl_helpers.training.stage1.train_stage1`; with ``view_only``
    (from :func:`open_stage`) only :func:`read_finished`.

    Every epoch goes to ``<stage>/tensorboard/`` and, when ``cfg.interactive``, redraws the training
    curves shown in the cell (headless, section 3 of the notebook draws them once). Returns train_stage1's result.
    """
    if view_only:
        return read_finished(stage_dir)
    live = display(curves(cfg, []), display_id=True) if cfg.interactive else None
    with tensorboard_log.EventLog(stage_dir) as events:

        def on_epoch(record, history):
            events.stage1_epoch(record, history)
            if live is not None:
                live.update(curves(cfg, history))

        return stage1.train_stage1(cfg, on_epoch=on_epoch, data=data)
