"""The toy test trials: balanced targets (same- and cross-session) and non-targets, no pair twice."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lgl_helpers.corpus.lists import Trial
from lgl_helpers.corpus.toy.layout import generator

if TYPE_CHECKING:
    from lgl_helpers.corpus.toy.config import ToyConfig


def trial_plan(config: ToyConfig) -> tuple[int, int, int]:
    """(same-session targets, cross-session targets, non-targets); raises if the split is too small."""
    n_target = config.n_trials // 2
    n_same = n_target // 4  # most VoxCeleb1 target trials pair different videos
    n_cross = n_target - n_same
    n_non = config.n_trials - n_target
    s, u, k = config.n_test_speakers, config.sessions_per_speaker, config.utterances_per_session
    available_same = s * u * k * (k - 1) // 2
    available_cross = s * (u * (u - 1) // 2) * k * k
    n_files = s * u * k
    available_non = n_files * (n_files - u * k) // 2
    for name, need, have in (
        ("same-session target", n_same, available_same),
        ("cross-session target", n_cross, available_cross),
        ("non-target", n_non, available_non),
    ):
        if need > have:
            raise ValueError(
                f"ToyConfig.n_trials={config.n_trials} needs {need} distinct {name} trials but the test split "
                f"({s} speakers x {u} sessions x {k} utterances) holds only {have}; lower n_trials or enlarge the split"
            )
    return n_same, n_cross, n_non


def make_trials(config: ToyConfig, test_files: list[tuple[str, str, str]]) -> list[Trial]:
    """Balanced trials over ``test_files`` = [(speaker, session, relative path)], sorted by path.

    Half targets (a quarter of them same-session pairs, the rest cross-session), half non-targets;
    no pair appears twice.
    """
    n_same, n_cross, n_non = trial_plan(config)
    rng = generator(config.seed, "trials")
    speakers = np.array([f[0] for f in test_files])
    sessions = np.array([f[0] + "/" + f[1] for f in test_files])
    i, j = np.triu_indices(len(test_files), 1)
    same_speaker = speakers[i] == speakers[j]
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
            trials.append(Trial(label, test_files[a][2], test_files[b][2]))
    return sorted(trials, key=lambda t: (t.path_a, t.path_b))
