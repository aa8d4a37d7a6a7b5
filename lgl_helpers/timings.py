"""Where a run's time goes: seconds per part of a stage, and per section of an executed notebook.

A stage adds the seconds of its parts (training, validation, clustering, clean pass, checkpoints, final
evaluation) to a :class:`PartTimes` it keeps with its resumable state, and writes them as ``timings``
into its ``metrics.json``. Papermill records every cell's duration in the executed notebook;
:func:`notebook_sections` sums them per numbered section, so the time a notebook spends outside its
stage (imports, figures, a UMAP fit) is measured without code in the notebooks.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

# Cells before a notebook's first "## " heading: imports, parameters and the setup cell.
SETUP_SECTION = "setup"


class PartTimes:
    """Seconds per named part, added up over calls (and, through :attr:`seconds`, over resumes)."""

    def __init__(self, seconds: dict[str, float] | None = None):
        self.seconds: dict[str, float] = dict(seconds or {})

    def add(self, part: str, seconds: float) -> None:
        self.seconds[part] = self.seconds.get(part, 0.0) + seconds

    @contextlib.contextmanager
    def part(self, name: str):
        """Add the wall time of the ``with`` block to part ``name`` (also when it raises)."""
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - tic)


def notebook_sections(path: str | Path) -> dict[str, float] | None:
    """Seconds per section of a notebook papermill executed, in the notebook's order, or None when
    ``path`` is missing or holds no cell durations (a notebook run by hand).

    A section is a "## " heading's text up to its first line end; the cells above the first heading
    count as :data:`SETUP_SECTION`.
    """
    path = Path(path)
    if not path.is_file():
        return None
    cells = json.loads(path.read_text())["cells"]
    sections: dict[str, float] = {}
    current = SETUP_SECTION
    timed = False
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and source.startswith("## "):
            current = source[3:].split("\n", 1)[0].strip()
        duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if duration is not None:
            timed = True
            sections[current] = sections.get(current, 0.0) + float(duration)
    return sections if timed else None


def notebook_timings(run_dir: str | Path, pipeline: dict, stage_parts: dict[str, dict]) -> dict[str, dict]:
    """report.json's ``timings``: per notebook of ``pipeline.json`` (``pipeline``), ``seconds`` (its
    wall time), ``sections`` (:func:`notebook_sections`, None when unknown), ``kernel_start`` (the wall
    time no cell accounts for: starting the kernel, papermill) and ``parts``, the ``timings`` of the
    stage it ran (``stage_parts``: notebook name → that stage's parts), else None."""
    out = {}
    for name, record in pipeline["notebooks"].items():
        seconds = record.get("wall_seconds")
        sections = notebook_sections(Path(run_dir) / "notebooks" / f"{name}.ipynb")
        start = None
        if seconds is not None and sections is not None and record.get("status") == "done":
            start = max(seconds - sum(sections.values()), 0.0)
        out[name] = {"seconds": seconds, "kernel_start": start, "sections": sections, "parts": stage_parts.get(name)}
    return out


def summary_line(timings: dict[str, dict]) -> str:
    """One line: the notebooks' seconds in all, then per notebook its seconds and its three largest parts
    (the stage's parts, else the notebook's sections; "start" = kernel start + the setup cells)."""
    total = sum(record.get("seconds") or 0.0 for record in timings.values())
    pieces = []
    for name, record in timings.items():
        if record.get("seconds") is None:
            continue
        sections = record.get("sections") or {}
        parts = dict(record.get("parts") or {k: v for k, v in sections.items() if k != SETUP_SECTION})
        if record.get("kernel_start") is not None:
            parts["start"] = record["kernel_start"] + sections.get(SETUP_SECTION, 0.0)
        largest = sorted(parts.items(), key=lambda item: -item[1])[:3]
        detail = ", ".join(f"{_short(part)} {value:.0f}" for part, value in largest if value >= 0.5)
        pieces.append(f"{name.split('_', 1)[0]} {record['seconds']:.0f} s" + (f" ({detail})" if detail else ""))
    return f"Time: {total:.0f} s of notebooks; " + "; ".join(pieces)


def _short(section: str) -> str:
    """A section's heading up to its first colon or parenthesis ("7. UMAP of a sample: pseudo labels …" → "7. UMAP of a sample")."""
    for mark in (":", " ("):
        section = section.split(mark, 1)[0]
    return section
