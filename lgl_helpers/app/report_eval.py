"""The report's evaluation on several trial lists: systems × lists, raw against label-free normalised
scores, and the DET points of every system (notebook 05; the stages write the score files,
:mod:`lgl_helpers.core.evaluation`).

Reads each stage's ``metrics.json`` ``eval`` entry and the score files it names. Per list, one speaker
bootstrap (:class:`~lgl_helpers.core.bootstrap.SpeakerBootstrap`) serves every system and score variant
that scored its trials, so each value gets an interval and each normalisation its paired difference
to the raw scores on the same resamples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtri

from lgl_helpers.config import STAGE1_METHOD_NAMES
from lgl_helpers.core import bootstrap
from lgl_helpers.core.metrics import TrialScoreReader, det_points, match_trials
from lgl_helpers.core.score_norm import METHOD_LABELS, METHODS
from lgl_helpers.files import read_json
from lgl_helpers.runs import path_in_run

METRIC_KEYS = ("eer", "min_dcf", "min_dcf_0.01")
DET_STEP = 0.02  # DET points kept: one per this step in probit units along either axis
DET_LIMIT = 4.0  # probit units (FPR or FNR of 3e-5): points beyond are clipped


def named_systems(systems: tuple, report: dict) -> tuple:
    """``systems`` ((key, folder, label) of each stage) with Stage I named by the method it trained with
    (``report["stage1"]["stage1_method"]``; reports of older runs have none: the reference's)."""
    method = STAGE1_METHOD_NAMES[(report.get("stage1") or {}).get("stage1_method", "contrastive_aat")]
    return tuple((key, folder, f"Stage I ({method})" if key == "stage1" else label) for key, folder, label in systems)


def thin_det(fpr: np.ndarray, fnr: np.ndarray) -> dict[str, list[float]]:
    """The DET curve (M,) → at most a few hundred points for ``report.json``: the first point of each
    ``DET_STEP`` cell of the probit plane, and the last point."""
    x = np.clip(ndtri(np.clip(fpr, 1e-12, 1 - 1e-12)), -DET_LIMIT, DET_LIMIT)
    y = np.clip(ndtri(np.clip(fnr, 1e-12, 1 - 1e-12)), -DET_LIMIT, DET_LIMIT)
    cells = np.stack([np.floor(x / DET_STEP), np.floor(y / DET_STEP)], axis=1)
    _, first = np.unique(cells, axis=0, return_index=True)
    keep = np.union1d(first, [len(fpr) - 1])
    return {"fpr": fpr[keep].tolist(), "fnr": fnr[keep].tolist()}


def _scored(
    run_dir: Path, systems: tuple, names: list[str], read_scores: TrialScoreReader
) -> tuple[dict, dict, list[str]]:
    """(system → list → {"trials", "path", "variants": variant → (trials, scores)}, system → cohort
    record, notes) from the stages' ``metrics.json``; ``names`` empty = every list scored."""
    scored: dict[str, dict] = {}
    cohorts: dict[str, Any] = {}
    notes: list[str] = []
    for key, folder, label in systems:
        path = run_dir / folder / "metrics.json"
        evaluation = read_json(path).get("eval") if path.is_file() else None
        if not evaluation:
            if path.is_file():
                notes.append(f"{label}: {path} has no evaluation on several lists (written before eval_trials)")
            continue
        cohorts[key] = evaluation.get("score_norm")
        for name, record in evaluation["lists"].items():
            if names and name not in names:
                continue
            variants = {}
            for variant, score_path in record["scores"].items():
                try:
                    # stored relative to the run folder (earlier kits: absolute)
                    variants[variant] = read_scores(path_in_run(score_path, run_dir))
                except (OSError, ValueError) as error:
                    notes.append(f"{label}, {name}, {variant}: {error}")
            scored.setdefault(key, {})[name] = {"trials": record["trials"], "variants": variants}
    for name in names:
        if not any(name in lists for lists in scored.values()):
            notes.append(f"list {name}: no stage of this run scored it (eval_trials of notebooks 01, 03, 04)")
    return scored, cohorts, notes


def collect_eval(
    run_dir: str | Path,
    systems: tuple,
    names: list[str] | None = None,
    n_resamples: int = bootstrap.N_RESAMPLES,
    seed: int = bootstrap.SEED,
    read_scores: TrialScoreReader | None = None,
) -> dict[str, Any]:
    """The ``eval`` part of ``report.json``.

    ``systems``: (key, folder, label) of each stage; ``names``: the lists to show, in order (None or
    empty: every list any stage scored). Returns ``lists`` (names), ``results``: system → list →
    variant → metric values with ``_ci`` intervals, and ``<metric>_diff`` / ``_diff_ci`` against raw
    for the normalised variants; ``cohorts``: system → the cohort used; ``det``: list → system →
    variant → thinned ``fpr`` / ``fnr``; ``notes``: why something is absent. ``read_scores``: a
    reader that has read score files of these lists already (None: a new one).
    """
    run_dir = Path(run_dir)
    scored, cohorts, notes = _scored(run_dir, systems, list(names or []), read_scores or TrialScoreReader())
    order = list(names or []) or list(dict.fromkeys(name for lists in scored.values() for name in lists))
    results: dict[str, dict] = {}
    det: dict[str, dict] = {}
    for name in order:
        resamples, reference = None, None
        for key, _, label in systems:
            entry = scored.get(key, {}).get(name)
            if entry is None or "raw" not in entry["variants"]:
                continue
            trials = entry["variants"]["raw"][0]
            if reference is None:
                reference = trials
                resamples = _bootstrap(trials, n_resamples, seed, notes, name)
            position = match_trials(reference, trials)
            if position is None:
                notes.append(f"{label}, {name}: scored other trials than the first system ({entry['trials']})")
                continue
            evaluated = {}
            for variant in METHODS:
                if variant not in entry["variants"]:
                    continue
                variant_trials, scores = entry["variants"][variant]
                order_in = match_trials(reference, variant_trials)
                scores = scores[order_in]  # into the reference's trial order
                labels = np.array([t.label for t in reference])
                points = det_points(scores, labels)
                det.setdefault(name, {}).setdefault(key, {})[variant] = thin_det(points["fpr"], points["fnr"])
                if resamples is None:
                    continue
                evaluated[variant] = resamples.evaluate(scores, f"{key} {name} {variant}")
                record = resamples.intervals(evaluated[variant])
                values = {m: record[m] for m in METRIC_KEYS} | {f"{m}_ci": record[f"{m}_ci"] for m in METRIC_KEYS}
                if variant != "raw" and "raw" in evaluated:
                    paired = resamples.paired(evaluated[variant], evaluated["raw"])
                    values |= {k: v for k, v in paired.items() if k.endswith(("_diff", "_diff_ci"))}
                results.setdefault(key, {}).setdefault(name, {})[variant] = values
    return {"lists": order, "results": results, "cohorts": cohorts, "det": det, "notes": notes}


def _bootstrap(trials, n_resamples: int, seed: int, notes: list[str], name: str):
    try:
        return bootstrap.SpeakerBootstrap(
            [t.label for t in trials],
            bootstrap.speaker_ids([t.path_a for t in trials], "path A"),
            bootstrap.speaker_ids([t.path_b for t in trials], "path B"),
            n_resamples=n_resamples,
            seed=seed,
        )
    except ValueError as error:
        notes.append(f"list {name}: no speaker bootstrap ({error})")
        return None


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _with_ci(values: dict | None, metric: str, digits: int) -> str:
    if not values:
        return "–"
    interval = values.get(f"{metric}_ci")
    text = _fmt(values.get(metric), digits)
    return text if interval is None else f"{text} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def lists_table(evaluation: dict[str, Any], systems: tuple) -> str:
    """Markdown: one row per system, per list its raw EER (%) with the 95 % interval and its minDCF at
    p_target 0.05 and 0.01."""
    header = ["system"]
    for name in evaluation["lists"]:
        header += [f"{name} EER (%) [95 % CI]", f"{name} minDCF 0.05", f"{name} minDCF 0.01"]
    rows = ["| " + " | ".join(header) + " |", "| --- | " + " | ".join("---:" for _ in header[1:]) + " |"]
    for key, _, label in systems:
        lists = evaluation["results"].get(key)
        if not lists:
            continue
        cells = [label]
        for name in evaluation["lists"]:
            raw = lists.get(name, {}).get("raw")
            cells += [
                _with_ci(raw, "eer", 2),
                _fmt((raw or {}).get("min_dcf"), 3),
                _fmt((raw or {}).get("min_dcf_0.01"), 3),
            ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def norm_table(evaluation: dict[str, Any], systems: tuple) -> str:
    """Markdown: per system and list, the EER (%) of every score variant, the paired difference of each
    normalisation to the raw scores with its interval, and the minDCF (p=0.05) of every variant."""
    normalised = [v for v in METHODS if v != "raw"]
    header = ["system", "list", *(f"EER {METHOD_LABELS[v]}" for v in METHODS)]
    header += [f"ΔEER {METHOD_LABELS[v]} − raw [95 % CI]" for v in normalised]
    header += [f"minDCF {METHOD_LABELS[v]}" for v in METHODS]
    rows = ["| " + " | ".join(header) + " |", "| --- | --- | " + " | ".join("---:" for _ in header[2:]) + " |"]
    for key, _, label in systems:
        for name in evaluation["lists"]:
            variants = evaluation["results"].get(key, {}).get(name)
            if not variants or len(variants) == 1:
                continue
            cells = [label, name, *(_fmt(variants.get(v, {}).get("eer"), 2) for v in METHODS)]
            for v in normalised:
                diff = variants.get(v, {})
                interval = diff.get("eer_diff_ci")
                cells.append(
                    "–"
                    if "eer_diff" not in diff
                    else f"{diff['eer_diff']:+.2f} [{interval[0]:+.2f}, {interval[1]:+.2f}]"
                )
            cells += [_fmt(variants.get(v, {}).get("min_dcf"), 3) for v in METHODS]
            rows.append("| " + " | ".join(cells) + " |")
    if len(rows) == 2:
        return 'No normalised scores (norm_cohort = "none", or no stage evaluated several lists).'
    cohorts = "; ".join(
        f"{label}: {c['n_members']} {'training utterances' if c['cohort'] == 'train' else 'pseudo-label centroids'}, "
        f"top {c['top_n']}"
        for key, _, label in systems
        if (c := evaluation["cohorts"].get(key))
    )
    rows += [
        "",
        f"Cohorts (no speaker labels): {cohorts}. Below 0 the normalisation errs less than the raw cosine; an "
        "interval that contains 0 is no evidence that it helps.",
    ]
    return "\n".join(rows)
