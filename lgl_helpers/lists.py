"""The list formats of the field (METHOD.md, "Data and list formats").

Training list, one utterance a line: ``<speaker id> <relative wav path> <duration in seconds>``.
Trial list, one trial a line: ``<1|0> <relative wav path A> <relative wav path B>``.
Speaker ids in the training list are used only to report clustering quality, never for training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from lgl_helpers.runs import atomic_write_text


class ListFormatError(ValueError):
    """A list file that cannot be used. The message names the file and, where it applies, the line."""


@dataclass(frozen=True)
class TrainEntry:
    speaker: str
    path: str
    duration: float


@dataclass(frozen=True)
class Trial:
    label: int
    path_a: str
    path_b: str


def _lines(path: str | os.PathLike) -> Iterable[tuple[int, list[str]]]:
    path = Path(path)
    if not path.is_file():
        raise ListFormatError(f"{path}: list file does not exist")
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if fields:
                yield number, fields


def read_train_list(path: str | os.PathLike) -> list[TrainEntry]:
    """Parse a training list; raises :class:`ListFormatError` naming ``file:line`` on any bad line."""
    entries = []
    for number, fields in _lines(path):
        if len(fields) != 3:
            raise ListFormatError(
                f"{path}:{number}: expected 3 fields '<speaker> <relative wav path> <seconds>', got {len(fields)}"
            )
        speaker, rel_path, duration_text = fields
        try:
            duration = float(duration_text)
        except ValueError:
            raise ListFormatError(f"{path}:{number}: duration {duration_text!r} is not a number") from None
        if not duration > 0:
            raise ListFormatError(f"{path}:{number}: duration {duration_text!r} must be positive")
        entries.append(TrainEntry(speaker, rel_path, duration))
    if not entries:
        raise ListFormatError(f"{path}: training list is empty")
    return entries


def read_trials(path: str | os.PathLike) -> list[Trial]:
    """Parse a trial list; raises :class:`ListFormatError` naming ``file:line`` on any bad line."""
    trials = []
    for number, fields in _lines(path):
        if len(fields) != 3:
            raise ListFormatError(
                f"{path}:{number}: expected 3 fields '<1|0> <wav path A> <wav path B>', got {len(fields)}"
            )
        if fields[0] not in ("0", "1"):
            raise ListFormatError(f"{path}:{number}: trial label {fields[0]!r} is not 0 or 1")
        trials.append(Trial(int(fields[0]), fields[1], fields[2]))
    if not trials:
        raise ListFormatError(f"{path}: trial list is empty")
    return trials


def write_train_list(path: str | os.PathLike, entries: Iterable[TrainEntry]) -> Path:
    """Write a training list atomically (durations with 3 decimals, as the reference's lists)."""
    text = "".join(f"{e.speaker} {e.path} {e.duration:.3f}\n" for e in entries)
    return atomic_write_text(path, text)


def write_trials(path: str | os.PathLike, trials: Iterable[Trial]) -> Path:
    """Write a trial list atomically."""
    return atomic_write_text(path, "".join(f"{t.label} {t.path_a} {t.path_b}\n" for t in trials))
