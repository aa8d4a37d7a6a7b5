"""Recording conditions: a session's channel (EQ, band limits, noise floor, reverb, level) and room impulse responses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lgl_helpers.corpus.toy.dsp import FREQS, SAMPLE_RATE, shape_noise


def make_rir(rng: np.random.Generator, rt60: float, n_samples: int) -> np.ndarray:
    """A room impulse response: direct path, sparse early reflections, a decaying diffuse tail.

    Returns (n_samples,) float64 with the direct path at 1. High frequencies decay faster than low
    ones, as in real rooms.
    """
    t = np.arange(n_samples) / SAMPLE_RATE
    delay = int(rng.integers(int(0.001 * SAMPLE_RATE), int(0.004 * SAMPLE_RATE)))
    rir = np.zeros(n_samples)
    rir[delay] = 1.0
    n_early = int(rng.integers(6, 14))
    early = delay + rng.integers(int(0.002 * SAMPLE_RATE), int(0.05 * SAMPLE_RATE), n_early)
    early = early[early < n_samples]
    np.add.at(
        rir,
        early,
        rng.uniform(0.2, 0.6, len(early))
        * rng.choice([-1.0, 1.0], len(early))
        * np.exp(-6.9 * (early - delay) / SAMPLE_RATE / rt60),
    )
    tail_t = np.maximum(t - delay / SAMPLE_RATE, 0.0)
    low = shape_noise(rng, n_samples, np.array([1.0, 1.0, 0.0, 0.0]), np.array([0, 1500, 3000, 8000]))
    high = shape_noise(rng, n_samples, np.array([0.0, 0.0, 1.0, 1.0]), np.array([0, 1500, 3000, 8000]))
    tail = low * np.exp(-6.9 * tail_t / rt60) + high * np.exp(-6.9 * tail_t / (0.6 * rt60))
    tail[:delay] = 0.0
    tail *= 0.25 / np.sqrt(np.mean(tail[delay : delay + int(0.01 * SAMPLE_RATE)] ** 2) + 1e-12)
    return rir + tail


@dataclass(frozen=True)
class Session:
    """One recording session: the channel and the speaker's state on that day."""

    log_eq: np.ndarray  # (257,) natural-log amplitude response
    log_noise: np.ndarray  # (257,) natural-log shape of the noise floor
    snr_db: float
    rir: np.ndarray | None  # (L,) or None for a dry session
    wet: float  # reverberant share
    level_db: float  # RMS level, dBFS
    f0_shift: float  # multiplicative
    tilt_shift: float  # dB per octave added to the speaker's tilt


def make_session(rng: np.random.Generator, strength: float) -> Session:
    """Draw a session channel; ``strength`` scales EQ depth, noise floor and reverb."""
    anchors = np.array([60.0, 150.0, 300.0, 600.0, 1200.0, 2400.0, 4800.0, 8000.0])
    eq_db = np.interp(np.log2(np.maximum(FREQS, 60.0)), np.log2(anchors), rng.normal(0.0, 5.0 * strength, 8))
    # band limits: many VoxCeleb videos are low-passed by their codec or high-passed by their mic
    low_cut = rng.uniform(50.0, 50.0 + 250.0 * strength)
    high_cut = 8000.0 if rng.random() < 0.4 else rng.uniform(3800.0, 7500.0)
    eq_db += -10.0 * np.log10(1.0 + (low_cut / np.maximum(FREQS, 1.0)) ** 4)
    eq_db += -10.0 * np.log10(1.0 + (FREQS / high_cut) ** 8)
    alpha = rng.uniform(0.0, 2.0)
    log_noise = -0.5 * alpha * np.log(np.maximum(FREQS, 50.0) / 1000.0)
    log_noise -= 0.5 * np.log(np.mean(np.exp(2 * log_noise)))
    reverberant = rng.random() < min(1.0, 0.5 * strength)
    rt60 = rng.uniform(0.12, 0.45)
    rir = make_rir(rng, rt60, int(rt60 * SAMPLE_RATE)) if reverberant else None
    return Session(
        log_eq=eq_db / 20.0 * np.log(10.0),
        log_noise=log_noise,
        snr_db=float(rng.uniform(40.0 - 22.0 * strength, 45.0 - 15.0 * strength)),
        rir=rir,
        wet=float(rng.uniform(0.2, 0.6)),
        level_db=float(rng.uniform(-30.0, -18.0)),
        f0_shift=float(2.0 ** (rng.normal(0.0, 0.4) / 12.0)),
        tilt_shift=float(rng.normal(0.0, 0.5)),
    )
