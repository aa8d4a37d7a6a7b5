"""Where a pipeline run's time went: per notebook, its kernel start, its sections and its stage's parts.

Runs a profile once (``lgl-kit run --force``) and prints the table of its ``timings`` (report.json's,
with notebook 05's own time added); with ``--runs`` it only reads finished run folders and prints them side by
side (before/after a change, one column each), with the difference of the last two.

Usage:
    python benchmarks/profile_run.py --profile demo --run-name profile_demo [--json out.json]
    python benchmarks/profile_run.py --runs runs/demo_before runs/demo_after
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from lgl_helpers.app.report import NOTEBOOK_OF, SYSTEMS
from lgl_helpers.files import read_json
from lgl_helpers.timings import SETUP_SECTION, notebook_timings


def run_timings(folder: Path) -> dict[str, dict]:
    """The run's ``timings`` as report.json holds them, notebook 05's included (pipeline.json knows it
    only once the report is written)."""
    parts = {}
    for key, stage, _ in SYSTEMS:
        metrics = folder / stage / "metrics.json"
        parts[NOTEBOOK_OF[key]] = read_json(metrics).get("timings") if metrics.is_file() else None
    return notebook_timings(folder, read_json(folder / "pipeline.json"), parts)


def _rows(timings: dict[str, dict]) -> dict[str, float]:
    """(notebook, where) label → seconds, in the run's order: the notebook's total, its kernel start
    plus setup cells, every other section, and inside its stage every part."""
    rows: dict[str, float] = {}
    for name, record in timings.items():
        short = name.split("_", 1)[0]
        if record.get("seconds") is None:
            continue
        rows[f"{name}"] = record["seconds"]
        sections = dict(record.get("sections") or {})
        if record.get("kernel_start") is not None:
            rows[f"{short} · kernel start + setup cells"] = record["kernel_start"] + sections.pop(SETUP_SECTION, 0.0)
        for section, seconds in sections.items():
            rows[f"{short} · {section[:48]}"] = seconds
        for part, seconds in (record.get("parts") or {}).items():
            rows[f"{short} ·· stage: {part}"] = seconds
    rows["all notebooks"] = sum(r["seconds"] or 0.0 for r in timings.values())
    return rows


def _table(names: list[str], tables: list[dict[str, float]]) -> str:
    # Every run's rows grouped by notebook (a run recorded before the stage parts has fewer), totals last.
    seen = list(dict.fromkeys(label for table in sorted(tables, key=len, reverse=True) for label in table))
    labels = sorted(seen, key=lambda label: (label[:2] if label[:2].isdigit() else "~", seen.index(label)))
    head = "| where | " + " | ".join(names) + (" | last − first |" if len(tables) > 1 else " |")
    lines = [head, "| --- |" + " ---: |" * (len(tables) + (len(tables) > 1))]
    for label in labels:
        values = [table.get(label) for table in tables]
        cells = ["–" if v is None else f"{v:.1f}" for v in values]
        if len(tables) > 1:
            first, last = values[0], values[-1]
            cells.append("–" if first is None or last is None else f"{last - first:+.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--run-name", default="profile_demo")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--runs", nargs="+", default=None, help="finished run folders to print side by side")
    parser.add_argument("--json", default=None, help="write the rows here as JSON")
    args = parser.parse_args()
    if args.runs is None:
        kit = str(Path(sys.executable).with_name("lgl-kit"))
        common = ["--run-name", args.run_name, "--runs-dir", args.runs_dir]
        subprocess.run([kit, "run", "--profile", args.profile, *common, "--force"], check=True)
        folders = [Path(args.runs_dir) / args.run_name]
    else:
        folders = [Path(folder) for folder in args.runs]
    tables = [_rows(run_timings(folder)) for folder in folders]
    print(_table([folder.name for folder in folders], tables))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(zip([str(f) for f in folders], tables, strict=True)), indent=1))


if __name__ == "__main__":
    main()
