"""Stage I's evaluations, shared by both methods: the validation EER of an epoch, the untrained encoder
(epoch 0), and the final metrics of the best epoch (``metrics.json``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lgl_helpers import files, runs
from lgl_helpers.core.embed import evaluate_trials
from lgl_helpers.core.evaluation import final_evaluation, plan_evaluation, store_threshold
from lgl_helpers.core.metrics import TEST_SCORES
from lgl_helpers.core.models import ECAPATDNN, load_encoder
from lgl_helpers.training.stage1.checkpoints import RunState
from lgl_helpers.training.stage1.config import Stage1Config
from lgl_helpers.training.stage1.inputs import Stage1Data

log = logging.getLogger(__name__)


def evaluate(model, trials, root, device) -> dict:
    """``eer``, ``min_dcf`` and ``min_dcf_0.01`` of the trials."""
    result = evaluate_trials(model, trials, root, device=device, show_progress=False)
    return {key: float(result[key]) for key in ("eer", "min_dcf", "min_dcf_0.01")}


def evaluate_untrained(encoder: ECAPATDNN, data: Stage1Data, state: RunState, device) -> dict:
    """Epoch 0: the untrained encoder on the validation (and test) trials. Returns its history record."""
    tic = time.perf_counter()
    with state.timings.part("untrained_evaluation"):
        val = evaluate(encoder, data.val_trials, data.paths["test_root"], device)
        test = val if data.same_val_test else evaluate(encoder, data.test_trials, data.paths["test_root"], device)
    state.untrained = {"val": val, "test": test}
    state.wall_seconds += time.perf_counter() - tic
    record = {"epoch": 0, **val, "seconds": time.perf_counter() - tic}
    state.history.append(record)
    log.info("epoch 0 (untrained): EER %.2f%% minDCF %.4f", val["eer"], val["min_dcf"])
    return record


def final_metrics(
    config: Stage1Config, stage_dir: Path, data: Stage1Data, state: RunState, started: float, device
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
        "stage1_method": config.stage1_method,
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
    files.write_json(stage_dir / "metrics.json", metrics)
    log.info(
        "Stage I done: best epoch %d, test EER %.2f%% (untrained %.2f%%), minDCF %.4f; %s",
        metrics["best_epoch"],
        metrics["eer"],
        metrics["untrained_eer"],
        metrics["min_dcf"],
        best_path,
    )
    return metrics


def scores_text(history: list[dict], describe_epoch) -> str:
    """``scores.txt``: a line per history record, the reference's layout. ``describe_epoch(record)`` words a
    trained epoch's own figures (each method has its losses); the untrained encoder and the EERs read alike."""
    lines = []
    for rec in history:
        head = "Epoch 0 (untrained)" if rec["epoch"] == 0 else describe_epoch(rec)
        if rec.get("eer") is not None:
            head += f", EER {rec['eer']:.4f}, minDCF {rec['min_dcf']:.4f}, minDCF0.01 {rec['min_dcf_0.01']:.4f}"
        lines.append(head)
    return "\n".join(lines) + "\n"
