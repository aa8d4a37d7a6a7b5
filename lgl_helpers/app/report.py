"""Notebook 05: collect a run's metrics into ``report.json`` / ``report.md`` with PNG plots.

The plots are drawn by :mod:`lgl_helpers.notebook.report_figures`; this module only saves them.

Reads only files in the run folder (``stage1/metrics.json``, ``clustering/quality.json``,
``stage2_<mode>/metrics.json``, ``pipeline.json``), so it can be rerun at any time without
touching the models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lgl_helpers.config import NotebookConfig
from lgl_helpers.notebook.report_figures import report_figures
from lgl_helpers.runs import atomic_write_text, environment_info, read_json, run_folder, write_json

SYSTEMS = (
    ("stage1", "stage1", "Stage I (contrastive + AAT)"),
    ("baseline", "stage2_baseline", "Stage II baseline (no gate)"),
    ("lgl", "stage2_lgl", "Stage II LGL"),
)
METRIC_KEYS = ("eer", "min_dcf", "min_dcf_0.01")


@dataclass
class CompareConfig(NotebookConfig):
    """Parameters of notebook 05_compare (field names equal its parameters cell)."""

    run_name: str = "demo"
    runs_dir: str = "runs"
    interactive: bool = True


def _read(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def collect_report(run_dir: str | Path) -> dict[str, Any]:
    """Gather every stage's metrics of a run into one dict (the content of ``report.json``).

    Stages that have not run are ``None``. EERs are in percent.
    """
    run_dir = Path(run_dir)
    report: dict[str, Any] = {"run_name": run_dir.name, "run_dir": str(run_dir)}
    for key, folder, _ in SYSTEMS:
        metrics = _read(run_dir / folder / "metrics.json")
        if metrics is None:
            report[key] = None
            continue
        entry = {k: metrics.get(k) for k in METRIC_KEYS}
        entry["wall_seconds"] = metrics.get("wall_seconds")
        if key == "stage1":
            entry["untrained_eer"] = metrics.get("untrained_eer")
            entry["untrained_min_dcf"] = metrics.get("untrained_min_dcf")
            entry["best_epoch"] = metrics.get("best_epoch")
        else:
            entry["iterations"] = metrics.get("iterations", [])
            entry["evaluations"] = metrics.get("evaluations", [])
        report[key] = entry

    clustering = []
    quality = _read(run_dir / "clustering" / "quality.json")
    if quality is not None:
        clustering.append(
            {"mode": "stage1", "iteration": 0, "nmi": quality.get("nmi"), "untrained_nmi": quality.get("untrained_nmi")}
        )
    for key in ("baseline", "lgl"):
        for item in (report.get(key) or {}).get("iterations", []):
            clustering.append({"mode": key, "iteration": item.get("iteration"), "nmi": item.get("nmi")})
    report["clustering"] = clustering
    report["gates"] = [
        {"iteration": item.get("iteration"), "gate": item.get("gate")}
        for item in (report.get("lgl") or {}).get("iterations", [])
    ]
    pipeline = _read(run_dir / "pipeline.json") or {"notebooks": {}}
    report["timings"] = {name: record.get("wall_seconds") for name, record in pipeline["notebooks"].items()}
    report["profile"] = pipeline.get("profile")
    report["environment"] = environment_info()
    return report


def _fmt(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def results_table(report: dict[str, Any]) -> str:
    """Markdown table: one row per system with EER (%) and minDCF at p_target 0.05 and 0.01."""
    rows = ["| system | EER (%) | minDCF (p=0.05) | minDCF (p=0.01) |", "| --- | ---: | ---: | ---: |"]
    stage1 = report.get("stage1")
    if stage1 and stage1.get("untrained_eer") is not None:
        rows.append(
            f"| untrained encoder | {_fmt(stage1['untrained_eer'])} | {_fmt(stage1.get('untrained_min_dcf'), 3)} | – |"
        )
    for key, _, label in SYSTEMS:
        entry = report.get(key)
        if entry:
            rows.append(
                f"| {label} | {_fmt(entry['eer'])} | {_fmt(entry['min_dcf'], 3)} | {_fmt(entry['min_dcf_0.01'], 3)} |"
            )
    return "\n".join(rows)


def write_report(run_dir: str | Path, figures_dir: str | Path | None = None) -> tuple[dict, Path]:
    """Write ``report.json``, ``report.md`` and PNG plots into the run folder; return (report, md path)."""
    run_dir = Path(run_dir)
    figures_dir = Path(figures_dir) if figures_dir else run_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    report = collect_report(run_dir)
    images = {}
    for name, fig in report_figures(report).items():
        path = figures_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        images[name] = path
    report["figures"] = {name: str(path) for name, path in images.items()}
    write_json(run_dir / "report.json", report)

    lines = [
        f"# LGL Kit report: run `{report['run_name']}`",
        "",
        f"Profile: `{report['profile']}`",
        "",
        "## Verification results (test trials)",
        "",
        results_table(report),
        "",
    ]
    lines += [
        "## Clustering (NMI of pseudo labels against true speakers)",
        "",
        "| mode | iteration | NMI |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {c['mode']} | {c['iteration']} | {_fmt(c['nmi'], 3)} |" for c in report["clustering"]]
    if report["gates"]:
        lines += ["", "## Loss gate per LGL iteration", "", "| iteration | gate |", "| ---: | ---: |"]
        lines += [f"| {g['iteration']} | {_fmt(g['gate'])} |" for g in report["gates"]]
    lines += ["", "## Wall time per notebook", "", "| notebook | seconds |", "| --- | ---: |"]
    lines += [f"| {name} | {_fmt(seconds, 1)} |" for name, seconds in report["timings"].items()]
    env = report["environment"]
    lines += ["", "## Machine", "", ", ".join(f"{k}: {v}" for k, v in env.items() if v is not None), ""]
    lines += [
        f"![{name}]({Path(path).relative_to(run_dir) if Path(path).is_relative_to(run_dir) else path})"
        for name, path in images.items()
    ]
    md_path = atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    return report, md_path


def report_for_run(run_name: str, runs_dir: str = "runs") -> tuple[dict, Path]:
    return write_report(run_folder(run_name, runs_dir))
