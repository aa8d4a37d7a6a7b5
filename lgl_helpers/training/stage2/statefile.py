"""Stage II's ``state.json`` (the run's commit point), ``scores.txt`` and the per-epoch loss records."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np

from lgl_helpers import files, runs
from lgl_helpers.training.stage2.config import Stage2Config
from lgl_helpers.training.stage2.inputs import Stage2Data

STATE_FORMAT = "lgl-kit-stage2-state"
GATE_OVERRIDES = "gate_overrides.json"  # written by the gate tuner, read when a phase L starts


def read_state(stage_dir: str | Path) -> dict | None:
    path = Path(stage_dir) / "state.json"
    state = files.read_json_object(path, "the Stage II state file")
    if state is None:
        return None
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not a Stage II state file (format {state.get('format')!r})")
    return state


# Parameters added after runs of an earlier kit were started, and the behaviour such a run had:
# k-means seeded with the run's seed, EERs compared as raw floats.
PREDATING_PARAMS = {
    "cluster_seed": lambda saved: saved.get("seed"),
    "compare_raw_eer": lambda saved: True,
    "head_init": lambda saved: "random",
    "ema_decay": lambda saved: 0.0,
    "gate_losses": lambda saved: "training" if saved.get("mode") == "lgl" else None,
    "n_clusters_over": lambda saved: 0,
    "gate_rule": lambda saved: "valley" if saved.get("mode") == "lgl" else None,
    "label_correction": lambda saved: None,
}


def saved_params(state: dict, run_dir: str | Path | None = None) -> dict:
    """The parameters a run was started with; one it predates holds the value of the behaviour it ran with,
    so that the resume check names the value to set to continue it. With ``run_dir`` (the run folder the
    state is in now), paths inside it as :func:`fixed_params` stores them."""
    saved = dict(state["params"])
    for name, value in PREDATING_PARAMS.items():
        saved.setdefault(name, value(saved))
    if run_dir is not None:  # earlier kits stored absolute paths inside the run
        saved = runs.stored_paths(saved, PATH_PARAMS, run_dir)
    return saved


PATH_PARAMS = (*runs.DATA_KEYS, "init_model")


def fixed_params(config: Stage2Config, data: Stage2Data) -> dict:
    """Every parameter of the run as resolved (data paths from data.json, the Stage I checkpoint), plus
    ``mode``; paths inside the run folder relative to it, so that a copied or moved run resumes."""
    params = {"mode": config.mode, **dataclasses.asdict(config)}
    params.update({key: (str(value) if value is not None else "") for key, value in data.paths.items()})
    params["init_model"] = str(data.init_model)
    return runs.stored_paths(params, PATH_PARAMS, runs.run_folder(config.run_name, config.runs_dir))


def new_state(config: Stage2Config, params: dict) -> dict:
    return {
        "format": STATE_FORMAT,
        "version": 1,
        "mode": config.mode,
        "status": "running",
        "iteration": 1,
        "phase": "cluster",
        "epoch": 0,
        "gate": None,
        "params": params,
        "iterations": [],
        "history": [],
        "best": None,
        "paused_iterations": [],
        "wall_seconds": 0.0,
        "paths": {
            "state": "state.json",
            "scores": "scores.txt",
            "best_model": "best.model",
            "metrics": "metrics.json",
            "gate_overrides": GATE_OVERRIDES,
        },
    }


def scores_text(history: list[dict]) -> str:
    lines = []
    for rec in history:
        gate = "none" if rec["gate"] is None else f"{rec['gate']:.3f}"
        lines.append(
            f"Iteration {rec['iteration']}, phase {rec['phase']}, epoch {rec['epoch']}, gate {gate}, "
            f"LOSS {rec['loss']:.4f}, ACC {rec['accuracy']:.2f}, selected {100 * rec['fraction_selected']:.1f}%, "
            f"skipped batches {rec['skipped_batches']}, EER {rec['eer']:.4f}, minDCF {rec['min_dcf']:.4f}, "
            f"minDCF0.01 {rec['min_dcf_0.01']:.4f}"
        )
    return "\n".join(lines) + "\n"


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_epoch_losses(path: str | Path) -> dict[str, np.ndarray]:
    """One epoch's per-sample record: ``index`` (n,), ``per_sample_loss`` (n,), ``selected`` (n,), ``reliable`` (n,) if known."""
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def gate_losses_record(state: dict, iteration: int) -> dict:
    """The history record of the epoch whose per-sample losses choose ``iteration``'s gate: its best T epoch.

    Phase L starts from that epoch's model; the losses of the last T epoch come from a model that
    has had more epochs to memorise the wrong labels. With ``gate_losses="clean"`` the record's
    ``losses`` are that model's clean-pass losses; ``losses_source`` says which ("training" or "clean").
    """
    t_phase = state["iterations"][iteration - 1]["phases"].get("T", {})
    best = t_phase.get("best_epoch")
    if best is None:
        raise ValueError(f"iteration {iteration} has no finished T epoch to choose its gate from")
    record = next(
        r for r in state["history"] if r["iteration"] == iteration and r["phase"] == "T" and r["epoch"] == best
    )
    if t_phase.get("gate_losses"):
        return {**record, "losses": t_phase["gate_losses"], "losses_source": "clean"}
    return {**record, "losses_source": "training"}


def latest_epoch_losses(stage_dir: str | Path, phase: str | None = None) -> dict | None:
    """The per-sample record of the latest trained epoch (of ``phase`` "T"/"L" when given), plus its
    ``iteration``, ``phase``, ``epoch`` and ``gate``; None before the first epoch."""
    state = read_state(stage_dir)
    if state is None:
        return None
    records = [r for r in state["history"] if phase is None or r["phase"] == phase]
    if not records:
        return None
    record = records[-1]
    out = read_epoch_losses(Path(stage_dir) / record["losses"])
    out.update({key: record[key] for key in ("iteration", "phase", "epoch", "gate")})
    return out


def stage1_eer(config: Stage2Config, key: str = "eer") -> float | None:
    """Stage I's EER from ``runs/<run>/stage1/metrics.json`` (None when absent): ``key="eer"`` on the
    test trials, ``"val_eer"`` on the validation trials (the line Stage II's validation EERs are drawn against)."""
    path = runs.run_folder(config.run_name, config.runs_dir) / "stage1" / "metrics.json"
    return files.read_json(path).get(key) if path.is_file() else None
