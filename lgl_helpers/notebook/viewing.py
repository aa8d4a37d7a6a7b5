"""Looking at a finished run without changing it: which mode a notebook is in, and the run it needs.

Every notebook has a ``recompute`` parameter. Where the notebook's results are already in the run
folder and ``recompute`` is False, the notebook only reads them and shows them: nothing is trained,
evaluated or written (not even a log line or a parameters file). Where they are missing (a new or an
interrupted run) the notebook computes them, as ``lgl-kit run`` does, which always sets
``recompute = True`` for the notebooks it executes. The first lines a notebook prints say which of the
two it is doing (:func:`choose_mode`).
"""

from __future__ import annotations

from pathlib import Path


def choose_mode(finished: bool, recompute: bool, what: str, where: str | Path) -> bool:
    """Print the one line that says what the notebook does with ``what`` (e.g. "the clustering") in
    ``where``, and return True when it only shows a finished result (``finished`` and not ``recompute``)."""
    if finished and not recompute:
        print(
            f"viewing: {what} in {where} is finished; it is read and shown, nothing is trained or written "
            "(set recompute = True to compute it again)"
        )
        return True
    if finished:
        print(f"recomputing: recompute = True, so {what} in {where} is computed again and its files rewritten")
    else:
        print(f"computing: {what} in {where} is not finished, so it is computed now")
    return False


def differing_parameters(cell: dict, run: dict, names) -> str:
    """A note on the parameters among ``names`` whose notebook values differ from those the run was
    made with ("" when none): in view mode the run's results are shown, not what the cell would compute."""
    changed = [
        f"{name} = {run[name]!r} (cell: {cell[name]!r})" for name in names if name in run and cell[name] != run[name]
    ]
    if not changed:
        return ""
    return "the run was made with " + ", ".join(changed) + "; its results are shown"
