"""What notebooks 03 (baseline) and 04 (LGL) show of a Stage II run; both notebooks call these functions.

The figures come from :mod:`lgl_helpers.notebook.stage2_figures` and the gate tuner from
:mod:`lgl_helpers.notebook.gate_tuner`; here they are put in the order the notebooks present them.
"""

from __future__ import annotations

from pathlib import Path

from IPython.display import Markdown, display

from lgl_helpers import runs
from lgl_helpers.notebook import gate_tuner, stage2_figures
from lgl_helpers.training import stage2


def open_stage(cfg: stage2.Stage2Config) -> tuple[stage2.Stage2Data, Path]:
    """Check every input (before any model is built) and log into the stage folder. Returns (data, stage folder)."""
    data = stage2.prepare_data(cfg)
    stage_dir = stage2.stage_folder(cfg)
    runs.add_file_log(stage_dir, stage_dir.name)
    print(f"{len(data.entries)} training utterances, {len(data.val_trials)} validation trials -> {stage_dir}")
    return data, stage_dir


def show_gate_tuner(cfg: stage2.LGLConfig, stage_dir: Path) -> None:
    """The latest epoch's loss histogram with the gate the next phase L will use: a widget whose button
    sets that gate when ``cfg.interactive``, else the static figure; then the gate's readout."""
    tuner, title = gate_tuner.stage2_gate_tuner(stage_dir, cfg)
    if cfg.interactive:
        display(
            gate_tuner.build_gate_widget(tuner, on_apply=lambda value: stage2.apply_gate(stage_dir, value), title=title)
        )
    else:
        display(tuner.figure(title))
    print(tuner.summary().text())


def show_selection_precision(stage_dir: Path) -> None:
    """Per gated epoch: how reliable the kept and the dropped pseudo labels are."""
    display(stage2_figures.plot_selection_precision(stage2.read_state(stage_dir)["history"]))


def show_results(cfg: stage2.Stage2Config, stage_dir: Path) -> None:
    """Validation EER per epoch, NMI per iteration, the results table (once done) and the saved files."""
    state = stage2.read_state(stage_dir)
    display(stage2_figures.plot_eer_per_epoch(state["history"], stage1_eer=stage2.stage1_eer(cfg)))
    display(stage2_figures.plot_nmi_per_iteration(state["iterations"]))
    metrics = runs.read_json(stage_dir / "metrics.json") if state["status"] == "done" else None
    display(
        Markdown(
            stage2_figures.iteration_table(metrics) if metrics else f"run status: {state['status']} (not finished)"
        )
    )
    print(
        f"metrics: {stage_dir / 'metrics.json'}\nbest model: {stage_dir / 'best.model'}\nstate: {stage_dir / 'state.json'}"
    )
