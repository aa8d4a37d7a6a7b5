"""Training lists from audio: a VoxCeleb-layout folder scanned into a list (durations from the wav
headers), and speaker-stratified subsets of a list (the reference's "train_mini").
"""

from __future__ import annotations

import logging
import os

import numpy as np

from lgl_helpers.core.audio import MIN_SECONDS
from lgl_helpers.corpus.lists.check import check_wavs, require_folder
from lgl_helpers.corpus.lists.formats import WHITESPACE, ListCheckError, TrainEntry, write_train_list

log = logging.getLogger(__name__)


def scan_wavs(root: str | os.PathLike) -> list[str]:
    """Relative paths ``<speaker>/<session>/<name>.wav`` under ``root``, sorted (os.scandir, 3 levels)."""
    root = require_folder(root, "root")
    found = []
    with os.scandir(root) as speakers:
        for speaker in speakers:
            if not speaker.is_dir() or speaker.name.startswith("."):
                continue
            with os.scandir(speaker.path) as sessions:
                for session in sessions:
                    if not session.is_dir() or session.name.startswith("."):
                        continue
                    with os.scandir(session.path) as files:
                        found.extend(
                            f"{speaker.name}/{session.name}/{f.name}"
                            for f in files
                            if f.name.lower().endswith(".wav") and f.is_file()
                        )
    return sorted(found)


def build_train_list(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    workers: int = 8,
    min_seconds: float = MIN_SECONDS,
    skip_bad: bool = False,
    show_progress: bool = True,
) -> list[TrainEntry]:
    """Scan a VoxCeleb-layout folder into training-list entries (durations from wav headers only).

    ``root/<speaker>/<session>/<utterance>.wav``; the speaker id is the first folder. Unusable files
    (unreadable, not 16 kHz mono, shorter than ``min_seconds``) raise :class:`ListCheckError` listing
    all of them, or are left out with a warning when ``skip_bad``. With ``out`` the list is written
    atomically, and only when it is complete. Returns the entries sorted by path.
    """
    root = require_folder(root, "root")
    rel_paths = scan_wavs(root)
    if not rel_paths:
        raise ListCheckError(f"root={str(root)!r}", ["no wav files in the layout <speaker>/<session>/<utterance>.wav"])
    checks = check_wavs([root / p for p in rel_paths], min_seconds, workers=workers, show_progress=show_progress)
    entries, problems = [], []
    for rel, (duration, problem) in zip(rel_paths, checks):
        if problem is None and any(c.isspace() for c in rel):
            problem = f"path contains whitespace, which {WHITESPACE}"
        if problem:
            problems.append(f"{root / rel}: {problem}")
        else:
            entries.append(TrainEntry(rel.split("/")[0], rel, duration))
    if problems and not skip_bad:
        raise ListCheckError(f"root={str(root)!r}", problems)
    for problem in problems:
        log.warning("left out: %s", problem)
    if not entries:
        raise ListCheckError(f"root={str(root)!r}", ["no usable wav files"])
    if out is not None:
        write_train_list(out, entries)
    return entries


def subset_train_list(
    entries: list[TrainEntry],
    n_utterances: int,
    *,
    n_speakers: int | None = None,
    seed: int = 0,
    per_speaker: str = "equal",
) -> list[TrainEntry]:
    """A speaker-stratified subset, fixed by ``seed`` (e.g. the reference's 100 k utterances of 4,082 speakers).

    ``n_speakers`` speakers are drawn at random (all when None); ``n_utterances`` are then split
    among them ``"equal"``-ly (as evenly as each speaker's count allows) or ``"proportional"``-ly
    (a uniform draw, at least one per speaker). Returns entries sorted by path.
    """
    by_speaker: dict[str, list[TrainEntry]] = {}
    for entry in entries:
        by_speaker.setdefault(entry.speaker, []).append(entry)
    speakers = sorted(by_speaker)
    if per_speaker not in ("equal", "proportional"):
        raise ValueError(f"per_speaker={per_speaker!r} must be 'equal' or 'proportional'")
    if n_speakers is not None and not 1 <= n_speakers <= len(speakers):
        raise ValueError(f"n_speakers={n_speakers} must be between 1 and the list's {len(speakers)} speakers")
    rng = np.random.default_rng(seed)
    if n_speakers is not None:
        speakers = sorted(rng.choice(speakers, size=n_speakers, replace=False).tolist())
    counts = np.array([len(by_speaker[s]) for s in speakers])
    if not len(speakers) <= n_utterances <= counts.sum():
        raise ValueError(
            f"n_utterances={n_utterances} must be between the number of chosen speakers "
            f"({len(speakers)}) and their utterances ({int(counts.sum())})"
        )
    if per_speaker == "equal":
        # water-filling: the largest level L with sum(min(count, L)) <= n, the remainder one each at random
        level = 0
        while np.minimum(counts, level + 1).sum() <= n_utterances:
            level += 1
        quotas = np.minimum(counts, level)
        spare = np.flatnonzero(counts > level)
        quotas[rng.choice(spare, size=n_utterances - int(quotas.sum()), replace=False)] += 1
    else:
        owner = np.repeat(np.arange(len(speakers)), counts - 1)
        quotas = np.ones(len(speakers), dtype=np.int64)
        np.add.at(quotas, rng.choice(owner, size=n_utterances - len(speakers), replace=False), 1)
    chosen = []
    for speaker, quota in zip(speakers, quotas):
        pool = by_speaker[speaker]
        chosen.extend(pool[i] for i in rng.permutation(len(pool))[:quota])
    return sorted(chosen, key=lambda e: e.path)
