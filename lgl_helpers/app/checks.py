"""One line of a doctor report: what was checked, whether it is fine, and the fix when it is not."""

from __future__ import annotations

from dataclasses import dataclass

# The notebooks the checks single out: 00 creates data, 01 writes the checkpoint Stage II starts from.
DATA_SETUP = "00_data_setup"
STAGE1 = "01_stage1_contrastive"
TRAINING = ("01_stage1_contrastive", "02_clustering_umap", "03_stage2_baseline", "04_stage2_lgl")


@dataclass(frozen=True)
class Check:
    """One line of the report. ``name``: what was checked (package, notebook, parameter or data key)."""

    name: str
    ok: bool
    message: str
    pending: bool = False  # depends on data notebook 00 creates: checked again once 00 has run

    def line(self) -> str:
        text = "; ".join(part.strip() for part in self.message.splitlines() if part.strip())
        return f"{'ok' if self.ok else 'error':<5} {self.name}: {text}"


def first_line(error: BaseException) -> str:
    """First line of an exception's message (one-line reports)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
