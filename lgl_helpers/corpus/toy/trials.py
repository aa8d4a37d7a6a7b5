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


def make_trials(config: ToyConfig, files: list[tuple[str, str, str]], split: str = "test") -> list[Trial]:
    """Trials over ``files`` = [(speaker, session, relative path)] of ``split``, sorted by path.

    All pairs when the split's trial count is 0; otherwise half targets (a quarter of them
    same-session pairs, the rest cross-session), half non-targets, no pair twice.
    """
    plan = config.trial_plan(split)
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
