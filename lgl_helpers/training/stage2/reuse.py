"""Phase T of LGL's first iteration taken from the baseline of the same run folder, when it is the same phase.

Iteration 1 of both modes clusters with the Stage I model and trains phase T from it on the same
pseudo labels with the same parameters, so with the same seed it is the same computation (bitwise
on the CPU). Notebook 04 therefore hard-links the baseline's finished phase T (checkpoints, loss
records, history) instead of training it again: the LGL run then differs from the baseline only
by its gated phase L, and the pipeline saves one phase of training.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from lgl_helpers import files
from lgl_helpers.core import distributed
from lgl_helpers.training.stage2.config import FIXED_FIELDS
from lgl_helpers.training.stage2.statefile import read_state, saved_params, scores_text

if TYPE_CHECKING:
    from lgl_helpers.training.stage2.engine import Engine

log = logging.getLogger(__name__)

# Besides the fixed fields, what decides where phase T ends.
PHASE_FIELDS = ("max_epochs_per_phase", "min_evals", "patience", "max_epochs", "keep_every", "compare_raw_eer")


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:  # another file system: copy
        files.atomic_write_bytes(target, source.read_bytes())


def baseline_phase_t(engine: Engine) -> tuple[Path, dict] | None:
    """The baseline's finished iteration-1 phase T that equals this LGL run's, as (baseline folder, state); else None."""
    base_dir = engine.stage_dir.parent / "stage2_baseline"
    base = read_state(base_dir)
    if base is None or not base["iterations"]:
        return None
    mine, theirs = saved_params(engine.state), saved_params(base)
    differ = [k for k in (*FIXED_FIELDS, *PHASE_FIELDS) if k != "mode" and mine.get(k) != theirs.get(k)]
    if differ:
        log.info("phase T of iteration 1 is trained: the baseline in %s differs in %s", base_dir, ", ".join(differ))
        return None
    t_phase = base["iterations"][0]["phases"].get("T")
    past_t = base["iteration"] > 1 or base["phase"] == "done"
    if not t_phase or not past_t or not (base_dir / t_phase["last_model"]).is_file():
        return None
    # The baseline's parameters are those of its latest call; the phase itself must end where this run's
    # rules end it (an earlier call may have trained it with another epoch limit).
    eers = t_phase["eers"]
    ends_here = engine.phase_over({"eers": eers}) and not any(
        engine.phase_over({"eers": eers[:k]}) for k in range(1, len(eers))
    )
    if not ends_here:
        log.info(
            "phase T of iteration 1 is trained: the baseline's ended after %d epochs, this run's rules differ",
            len(eers),
        )
        return None
    labels = engine.path(engine.iteration_record(1)["pseudo_labels"])
    if (base_dir / base["iterations"][0]["pseudo_labels"]).read_bytes() != labels.read_bytes():
        return None
    return base_dir, base


def reuse_baseline_phase_t(engine: Engine, info: dict) -> bool:
    """Fill ``info`` (iteration 1's T record, still empty) and the history from the baseline's phase T.

    Returns False, changing nothing, when the baseline has no such phase. The files are hard-linked
    before the state that names them is committed.
    """
    found = baseline_phase_t(engine)
    if found is None:
        return False
    base_dir, base = found
    t_phase = base["iterations"][0]["phases"]["T"]
    records = [r for r in base["history"] if r["iteration"] == 1 and r["phase"] == "T"]
    for rel in {t_phase["best_model"], t_phase["last_model"], *(r["losses"] for r in records if r["losses"])}:
        if (base_dir / rel).is_file() and distributed.is_main():
            _link(base_dir / rel, engine.path(rel))
    info.update({key: value for key, value in t_phase.items()})
    engine.state["history"].extend(dict(r) for r in records)
    engine.state["epoch"] = len(info["eers"])
    best = next(r for r in records if r["epoch"] == info["best_epoch"])
    engine.state["best"] = {
        **{k: best[k] for k in ("eer", "min_dcf", "min_dcf_0.01", "iteration", "phase", "epoch")},
        "model": info["best_model"],
    }
    engine.state["phase_t_from"] = str(base_dir)
    files.atomic_write_text(engine.path("scores.txt"), scores_text(engine.state["history"]))
    engine.commit()
    log.info(
        "iteration 1: phase T is the baseline's (%s: same Stage I model, pseudo labels and parameters): "
        "%d epochs, best epoch %d, EER %.2f%%; not trained again",
        base_dir,
        len(info["eers"]),
        info["best_epoch"],
        info["best_eer"],
    )
    return True
