"""What notebooks 03 (baseline) and 04 (LGL) show of a Stage II run; both notebooks call these functions.

The figures come from :mod:`lgl_helpers.notebook.stage2_figures` and
:mod:`lgl_helpers.notebook.stage2_curves`, the gate tuner from :mod:`lgl_helpers.notebook.gate_tuner`;
here they are put in the order the notebooks present them. Only :func:`train` writes the stage's log
file: looking at a run (the gate tuner, the figures) leaves its training log as training left it, and on
a finished run (``recompute = False``) the training cell only shows what was trained.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from IPython.display import Markdown, display

from lgl_helpers import files, runs
from lgl_helpers.core import gate as gate_rules
from lgl_helpers.notebook import gate_tuner, stage2_curves, stage2_figures, tensorboard_log, viewing
from lgl_helpers.training import stage2


def finished(stage_dir: Path) -> bool:
    """Whether the stage in ``stage_dir`` has trained and written its final metrics."""
    state = stage2.read_state(stage_dir)
    return state is not None and state["status"] == "done" and (stage_dir / "metrics.json").is_file()


def open_stage(cfg: stage2.Stage2Config) -> tuple[Path, bool]:
    """The stage folder of ``cfg`` (where the training cell writes and the later cells read), and whether
    the notebook only views it (:func:`lgl_helpers.notebook.viewing.choose_mode`: a finished stage and
    ``recompute = False``). Prints the folder, its status and that mode in one line each; raises in one
    line when the run does not exist (with ``init_model = ""``: its Stage I model)."""
    if not cfg.init_model:
        runs.require_run(cfg.run_name, cfg.runs_dir, needs="stage1/best.model", made_by="notebooks 00 and 01")
    stage_dir = stage2.stage_folder(cfg)
    state = stage2.read_state(stage_dir)
    status = "no run yet" if state is None else f"run status: {state['status']}"
    print(f"stage folder: {stage_dir} ({status})")
    view_only = viewing.choose_mode(finished(stage_dir), cfg.recompute, f"Stage II {cfg.mode}", stage_dir)
    if view_only:
        names = [name for name in cfg.fixed_fields if name not in stage2.PATH_PARAMS and name != "mode"]
        names += ["gates"] if cfg.mode == "lgl" else []
        note = viewing.differing_parameters(dataclasses.asdict(cfg), state["params"], names)
        if note:
            print(note)
    return stage_dir, view_only


def _detach_file_log(path: Path) -> None:
    """Stop writing the kit's log records into ``path`` (attached by :func:`lgl_helpers.runs.add_file_log`)."""
    root = logging.getLogger("lgl_helpers")
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        if Path(handler.baseFilename) == path.resolve():
            root.removeHandler(handler)
            handler.close()


def train(cfg: stage2.Stage2Config, stage_dir: Path, view_only: bool = False) -> dict:
    """Check every input, then run (or resume) the stage: :func:`lgl_helpers.training.stage2.run_stage2`;
    with ``view_only`` (from :func:`open_stage`) only draw the finished run's curves and return its metrics,
    writing nothing.

    While it trains, the log goes to ``<stage>/<stage>.log`` and the cell output (one line per epoch),
    TensorBoard event files to ``<stage>/tensorboard/`` and, when ``cfg.interactive``, the training
    curves are redrawn after every epoch; headless they are drawn once at the end. Returns run_stage2's
    result (in view: ``{"status": "done", **metrics.json}``).
    """
    stage1_val_eer = stage2.stage1_eer(cfg, "val_eer")

    def curves(history):
        return stage2_curves.plot_training_curves(history, cfg.mode, stage1_val_eer=stage1_val_eer)

    if view_only:
        state = stage2.read_state(stage_dir)
        display(curves(state["history"]))
        return {"status": state["status"], **files.read_json(stage_dir / "metrics.json")}
    log_path = runs.add_file_log(stage_dir, stage_dir.name)
    try:
        data = stage2.prepare_data(cfg)
        print(f"{len(data.entries)} training utterances, {len(data.val_trials)} validation trials -> {stage_dir}")
        state = stage2.read_state(stage_dir)
        live = display(curves(state["history"] if state else []), display_id=True) if cfg.interactive else None
        with tensorboard_log.EventLog(stage_dir, start_over=state is None or not cfg.resume) as events:

            def on_epoch(record, state):
                events.stage2_epoch(record, state)
                if live is not None:
                    live.update(curves(state["history"]))

            result = stage2.run_stage2(cfg, on_epoch=on_epoch, data=data)
        if live is None:
            display(curves(result["state"]["history"]))
        return result
    finally:
        _detach_file_log(log_path)


def show_gate_tuner(cfg: stage2.LGLConfig, stage_dir: Path) -> None:
    """The loss histogram with the gate the next phase L will use: when ``cfg.interactive`` a widget
    whose readout follows the slider and whose button sets that gate (disabled, with the reason, when
    no phase L is left to take it); headless the static figure and its readout."""
    tuner, title = gate_tuner.stage2_gate_tuner(stage_dir, cfg)
    pending, note = gate_tuner.button_state(stage2.read_state(stage_dir))
    if cfg.interactive:
        on_apply = (lambda value: stage2.apply_gate(stage_dir, value)) if pending else None
        display(gate_tuner.build_gate_widget(tuner, on_apply=on_apply, title=title, note=note))
    else:
        display(tuner.figure(title))
        print(tuner.summary().text())
        print(note)


def show_gate_evidence(stage_dir: Path) -> None:
    """Per gated iteration: the gate evidence table, and the losses its gate was chosen from, split by
    whether the pseudo label is its cluster's majority speaker, with the gate drawn."""
    state = stage2.read_state(stage_dir)
    entries = [item["gate_evidence"] for item in state["iterations"] if item.get("gate_evidence")]
    if not entries:
        print("no phase L has chosen its gate yet")
        return
    display(Markdown(stage2_figures.gate_evidence_table(entries)))
    print(
        "reliable = the pseudo label is its cluster's majority speaker (true speakers, for diagnosis only); "
        "AUC 0.5: the loss says nothing about reliability, 1.0: every reliable label has a lower loss than "
        "every unreliable one"
    )
    for entry in entries:
        record = stage2.gate_losses_record(state, entry["iteration"])
        losses = stage2.read_epoch_losses(stage_dir / record["losses"])
        title = (
            f"iteration {entry['iteration']}: {record['losses_source']} losses of T epoch {record['epoch']}, "
            "the gate of phase L"
        )
        gmm = entry.get("gate_rule") == "gmm"
        # Beside a GMM gate, the valley rule's on the same losses.
        valley = gmm and (
            "valley rule",
            gate_rules.valley_gate(losses["per_sample_loss"], seed=state["params"]["seed"])[0],
        )
        if entry.get("gate_rule_reason"):
            print(
                f"iteration {entry['iteration']}: GMM gate not used ({entry['gate_rule_reason']}): {entry['gate_rule']}"
            )
        display(
            gate_tuner.plot_loss_histogram(
                losses["per_sample_loss"],
                gate=entry["gate"],
                reliable=losses.get("reliable"),
                title=title,
                mixture=entry.get("gate_mixture") if gmm else None,
                other_gate=valley if gmm else None,
            )
        )
    corrections = [item["label_correction"] for item in state["iterations"] if item.get("label_correction")]
    if corrections:
        display(Markdown(stage2_figures.label_correction_table(corrections)))


def show_selection_precision(stage_dir: Path) -> None:
    """Per gated epoch: how reliable the kept and the dropped pseudo labels are."""
    display(stage2_figures.plot_selection_precision(stage2.read_state(stage_dir)["history"]))


def show_results(cfg: stage2.Stage2Config, stage_dir: Path) -> None:
    """Validation EER per epoch, NMI per iteration, the results table (once done) and the saved files."""
    state = stage2.read_state(stage_dir)
    display(stage2_figures.plot_eer_per_epoch(state["history"], stage1_val_eer=stage2.stage1_eer(cfg, "val_eer")))
    display(stage2_figures.plot_nmi_per_iteration(state["iterations"]))
    metrics = files.read_json(stage_dir / "metrics.json") if state["status"] == "done" else None
    display(
        Markdown(
            stage2_figures.iteration_table(metrics) if metrics else f"run status: {state['status']} (not finished)"
        )
    )
    print(
        f"metrics: {stage_dir / 'metrics.json'}\nbest model: {stage_dir / 'best.model'}\nstate: {stage_dir / 'state.json'}"
    )
