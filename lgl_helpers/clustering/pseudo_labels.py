"""Pseudo-label files: one ``<relative wav path> <cluster id>`` a line, in training-list order."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lgl_helpers.corpus.lists import ListFormatError, TrainEntry
from lgl_helpers.files import atomic_write_text


def relative_paths(entries: Sequence[TrainEntry | str]) -> list[str]:
    """The relative wav paths of training-list entries (paths given as strings pass through)."""
    return [e if isinstance(e, str) else e.path for e in entries]


def check_labels(pseudo_labels: np.ndarray, n: int | None = None) -> np.ndarray:
    """(N,) non-negative integer labels (of length ``n`` when given) → int64; ValueError otherwise."""
    labels = np.asarray(pseudo_labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"pseudo_labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}")
    if n is not None and labels.shape[0] != n:
        raise ValueError(f"pseudo_labels has {labels.shape[0]} entries, expected {n}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"pseudo_labels must be non-negative, found {labels.min()}")
    return labels.astype(np.int64)


def write_pseudo_labels(
    path: str | os.PathLike, entries: Sequence[TrainEntry | str], pseudo_labels: np.ndarray
) -> Path:
    """Write ``<relative wav path> <cluster id>`` one a line, in ``entries`` order, atomically.

    entries: training-list entries (or their relative paths); pseudo_labels: (N,) non-negative ints.
    """
    paths = relative_paths(entries)
    labels = check_labels(pseudo_labels, len(paths))
    return atomic_write_text(path, "".join(f"{p} {int(c)}\n" for p, c in zip(paths, labels)))


def read_pseudo_labels(
    path: str | os.PathLike, entries: Sequence[TrainEntry | str], n_clusters: int | None = None
) -> np.ndarray:
    """Read a pseudo-label file written for ``entries``. Returns (N,) int64 in ``entries`` order.

    Line i must name entries[i]'s relative path; every entry must be present exactly once, and with
    ``n_clusters`` every id must be below it. Raises :class:`~lgl_helpers.corpus.lists.ListFormatError`
    naming ``file:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise ListFormatError(f"{path}: pseudo-label file does not exist")
    expected = relative_paths(entries)
    labels = np.empty(len(expected), dtype=np.int64)
    count = 0
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            fields_ = line.split()
            if not fields_:
                continue
            if len(fields_) != 2:
                raise ListFormatError(
                    f"{path}:{number}: expected 2 fields '<relative wav path> <cluster id>', got {len(fields_)}"
                )
            rel_path, label_text = fields_
            if count >= len(expected):
                raise ListFormatError(f"{path}:{number}: more lines than the {len(expected)} training-list entries")
            if rel_path != expected[count]:
                raise ListFormatError(
                    f"{path}:{number}: path {rel_path!r} does not match training-list entry {count + 1} {expected[count]!r}"
                )
            try:
                label = int(label_text)
            except ValueError:
                raise ListFormatError(f"{path}:{number}: cluster id {label_text!r} is not an integer") from None
            if label < 0 or (n_clusters is not None and label >= n_clusters):
                bound = f"[0, {n_clusters})" if n_clusters is not None else "non-negative"
                raise ListFormatError(f"{path}:{number}: cluster id {label} is not {bound}")
            labels[count] = label
            count += 1
    if count != len(expected):
        raise ListFormatError(
            f"{path}: has {count} labels but the training list has {len(expected)} entries "
            f"(first missing: {expected[count]!r})"
        )
    return labels
