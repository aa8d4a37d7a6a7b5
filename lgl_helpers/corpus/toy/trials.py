"""The toy test trials: balanced targets (same- and cross-session) and non-targets, no pair twice; and a
harder list in the manner of VoxCeleb1-H.

VoxCeleb1-H (``list_test_hard2.txt``) keeps only target pairs from different videos and non-target pairs
of the same nationality and gender. The toy speakers have no nationality, so the hard list
(``lists/trials_hard.txt``) pairs targets across sessions only (no shared channel to match) and
non-targets of the same sex only (f0 and vocal-tract length, the strongest cues, overlap).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lgl_helpers.corpus.lists import Trial
from lgl_helpers.corpus.toy.layout import generator

if TYPE_CHECKING:
    from lgl_helpers.corpus.toy.config import ToyConfig


def n_speakers(config: ToyConfig, split: str) -> int:
    return {"train": config.n_train_speakers, "test": config.n_test_speakers, "val": config.n_val_speakers}[split]


def trial_plan(config: ToyConfig, split: str = "test") -> tuple[int, int, int] | None:
    """(same-session targets, cross-session targets, non-targets) of the ``split``'s trial list, or None
    for all pairs; raises if the split is too small."""
    n_trials = config.n_trials if split == "test" else config.n_val_trials
    if n_trials == 0:
        return None
    n_target = n_trials // 2
    n_same = n_target // 4  # most VoxCeleb1 target trials pair different videos
    n_cross = n_target - n_same
    n_non = n_trials - n_target
    s, u, k = n_speakers(config, split), config.sessions_per_speaker, config.utterances_per_session
    available_same = s * u * k * (k - 1) // 2
    available_cross = s * (u * (u - 1) // 2) * k * k
    n_files = s * u * k
    available_non = n_files * (n_files - u * k) // 2
    name = "n_trials" if split == "test" else "n_val_trials"
    for kind, need, have in (
        ("same-session target", n_same, available_same),
        ("cross-session target", n_cross, available_cross),
        ("non-target", n_non, available_non),
    ):
        if need > have:
            raise ValueError(
                f"ToyConfig.{name}={n_trials} needs {need} distinct {kind} trials but the {split} split "
                f"({s} speakers x {u} sessions x {k} utterances) holds only {have}; lower {name} or enlarge the split"
            )
    return n_same, n_cross, n_non


def make_trials(config: ToyConfig, files: list[tuple[str, str, str]], split: str = "test") -> list[Trial]:
    """Trials over ``files`` = [(speaker, session, relative path)] of ``split``, sorted by path.

    All pairs when the split's trial count is 0; otherwise half targets (a quarter of them
    same-session pairs, the rest cross-session), half non-targets, no pair twice.
    """
    plan = trial_plan(config, split)
    speakers = np.array([f[0] for f in files])
    sessions = np.array([f[0] + "/" + f[1] for f in files])
    i, j = np.triu_indices(len(files), 1)
    same_speaker = speakers[i] == speakers[j]
    if plan is None:
        trials = [Trial(int(same), files[a][2], files[b][2]) for a, b, same in zip(i, j, same_speaker)]
        return sorted(trials, key=lambda t: (t.path_a, t.path_b))
    n_same, n_cross, n_non = plan
    rng = generator(config.seed, "trials") if split == "test" else generator(config.seed, "trials", split)
    same_session = sessions[i] == sessions[j]
    groups = (
        (1, same_speaker & same_session, n_same),
        (1, same_speaker & ~same_session, n_cross),
        (0, ~same_speaker, n_non),
    )
    trials = []
    for label, mask, count in groups:
        candidates = np.flatnonzero(mask)
        for pick in np.sort(rng.choice(len(candidates), size=count, replace=False)):
            a, b = i[candidates[pick]], j[candidates[pick]]
            if rng.random() < 0.5:
                a, b = b, a
            trials.append(Trial(label, files[a][2], files[b][2]))
    return sorted(trials, key=lambda t: (t.path_a, t.path_b))


def make_hard_trials(config: ToyConfig, files: list[tuple[str, str, str]], female: dict[str, bool]) -> list[Trial]:
    """The VoxCeleb1-H-like list over ``files`` = [(speaker, session, relative path)] of the test split,
    sorted by path: cross-session targets and same-sex non-targets (``female``: speaker → sex).

    All such pairs when ``config.n_trials`` is 0; otherwise ``n_trials // 2`` targets and the rest
    non-targets, each as many as the split holds. Empty when the split has no pair of one class
    (e.g. no two speakers of one sex).
    """
    speakers = np.array([f[0] for f in files])
    sessions = np.array([f[0] + "/" + f[1] for f in files])
    sexes = np.array([female[s] for s in speakers])
    i, j = np.triu_indices(len(files), 1)
    same_speaker = speakers[i] == speakers[j]
    groups = (
        (1, same_speaker & (sessions[i] != sessions[j]), config.n_trials // 2),
        (0, ~same_speaker & (sexes[i] == sexes[j]), config.n_trials - config.n_trials // 2),
    )
    if not all(mask.any() for _, mask, _ in groups):
        return []
    rng = generator(config.seed, "trials", "hard")
    trials = []
    for label, mask, count in groups:
        candidates = np.flatnonzero(mask)
        if config.n_trials:
            candidates = np.sort(rng.choice(candidates, size=min(count, len(candidates)), replace=False))
        for pick in candidates:
            a, b = i[pick], j[pick]
            if config.n_trials and rng.random() < 0.5:
                a, b = b, a
            trials.append(Trial(label, files[a][2], files[b][2]))
    return sorted(trials, key=lambda t: (t.path_a, t.path_b))
