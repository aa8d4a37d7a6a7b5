"""The two list formats: reading and writing training lists and trial lists, with ``file:line`` errors.

Training list, one utterance a line: ``<speaker id> <relative wav path> <duration in seconds>``.
Trial list, one trial a line: ``<1|0> <relative wav path A> <relative wav path B>``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lgl_helpers.files import atomic_write_text


class ListFormatError(ValueError):
    """A list file that cannot be used. The message names the file and, where it applies, the line."""


# Shared by `build` (a file with whitespace in its path) and the field-count checks (such a path in a list line).
WHITESPACE = "the space-separated list format cannot hold"


TRAIN_FORMAT = "<speaker> <relative wav path> <seconds>"


TRIAL_FORMAT = "<1|0> <wav path A> <wav path B>"


def field_count_problem(expected: str, count: int) -> str:
    """Message for a line without 3 fields; more than 3 most often means a path with spaces in it."""
    message = f"expected 3 fields '{expected}', got {count}"
    return message + f": does a path contain whitespace, which {WHITESPACE}?" if count > 3 else message


@dataclass(frozen=True)
class TrainEntry:
    speaker: str
    path: str
    duration: float


class Trial(NamedTuple):
    """One trial: ``label`` 1 (same speaker) or 0, and the two wav paths. A named tuple rather than a frozen
    dataclass: a report builds and compares millions of them, and a tuple is built in less than half the
    time and compared in about a quarter."""

    label: int
    path_a: str
    path_b: str


def numbered_fields(path: str | os.PathLike) -> Iterable[tuple[int, list[str]]]:
    path = Path(path)
    if not path.is_file():
        raise ListFormatError(f"{path}: list file does not exist")
    with open(path) as handle:
        yield from numbered_line_fields(handle)


def numbered_line_fields(lines: Iterable[str]) -> Iterable[tuple[int, list[str]]]:
    """(line number from 1, whitespace-split fields) of each non-blank line of ``lines``."""
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if fields:
            yield number, fields


def read_train_list(path: str | os.PathLike) -> list[TrainEntry]:
    """Parse a training list; raises :class:`ListFormatError` naming ``file:line`` on any bad line."""
    entries = []
    for number, fields in numbered_fields(path):
        if len(fields) != 3:
            raise ListFormatError(f"{path}:{number}: {field_count_problem(TRAIN_FORMAT, len(fields))}")
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
    for number, fields in numbered_fields(path):
        if len(fields) != 3:
            raise ListFormatError(f"{path}:{number}: {field_count_problem(TRIAL_FORMAT, len(fields))}")
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


class ListCheckError(ListFormatError):
    """Every problem found in a list or a folder of audio; ``problems`` holds one message per problem."""

    def __init__(self, subject: str, problems: list[str], shown: int = 20):
        self.problems = list(problems)
        lines = self.problems[:shown]
        more = len(self.problems) - len(lines)
        text = f"{subject}: {len(self.problems)} problem(s)\n  " + "\n  ".join(lines)
        super().__init__(text + (f"\n  ... and {more} more" if more > 0 else ""))


def train_list_counts(entries: list[TrainEntry]) -> dict:
    """Summary counts of training entries: lines, speakers, hours, min/mean/max_seconds."""
    durations = np.array([e.duration for e in entries])
    return {
        "kind": "train",
        "lines": len(entries),
        "speakers": len({e.speaker for e in entries}),
        "hours": round(float(durations.sum()) / 3600.0, 4),
        "min_seconds": round(float(durations.min()), 3),
        "mean_seconds": round(float(durations.mean()), 3),
        "max_seconds": round(float(durations.max()), 3),
    }
