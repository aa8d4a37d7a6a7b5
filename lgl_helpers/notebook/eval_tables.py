"""The final evaluation of one stage (notebooks 01, 03, 04): each list of ``eval_trials``, raw and
normalised, from the stage's ``metrics.json`` (:mod:`lgl_helpers.core.evaluation`). Point values only;
notebook 05's report adds the speaker-bootstrap intervals."""

from __future__ import annotations

from typing import Any

from lgl_helpers.core.score_norm import METHOD_LABELS, METHODS


def lists_table(metrics: dict[str, Any] | None) -> str:
    """Markdown: one row per evaluated list, EER (%) and minDCF (p=0.05) of each score variant, and
    the cohort the normalised ones used; a sentence when ``metrics`` has no final evaluation."""
    evaluation = (metrics or {}).get("eval")
    if not evaluation:
        return "no final evaluation on several lists (run not finished, or finished before eval_trials existed)"
    variants = [v for v in METHODS if any(v in r["metrics"] for r in evaluation["lists"].values())]
    header = ["list", "trials"]
    header += [f"EER {METHOD_LABELS[v]} (%)" for v in variants]
    header += [f"minDCF {METHOD_LABELS[v]}" for v in variants]
    rows = ["| " + " | ".join(header) + " |", "| --- | " + " | ".join("---:" for _ in header[1:]) + " |"]
    for name, record in evaluation["lists"].items():
        cells = [name, f"{record['n_trials']:,}"]
        cells += [_cell(record["metrics"].get(v), "eer", 2) for v in variants]
        cells += [_cell(record["metrics"].get(v), "min_dcf", 3) for v in variants]
        rows.append("| " + " | ".join(cells) + " |")
    norm = evaluation.get("score_norm")
    if norm:
        what = "training utterances" if norm["cohort"] == "train" else "pseudo-label centroids of training utterances"
        rows.append(
            f"\nCohort: {norm['n_members']} {what} ({norm['n_utterances']} utterances embedded), AS-norm top "
            f"{norm['top_n']}; {evaluation['n_files_embedded']:,} files embedded once in {evaluation['seconds']:.0f} s."
        )
    return "\n".join(rows)


def _cell(values: dict | None, key: str, digits: int) -> str:
    return "–" if values is None else f"{values[key]:.{digits}f}"
