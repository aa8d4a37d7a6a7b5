"""MUSAN-like non-speech recordings: synthetic noise of several kinds and music."""

from __future__ import annotations

import numpy as np

from lgl_helpers.corpus.toy.dsp import SAMPLE_RATE, fft_convolve, normalise, shape_noise, smooth


def synthesize_noise(rng: np.random.Generator, n_samples: int) -> np.ndarray:
    """A non-speech noise recording (one of several kinds): (n_samples,) float32."""
    t = np.arange(n_samples) / SAMPLE_RATE
    kind = rng.choice(["coloured", "hum", "machine", "clicks", "wind", "beeps", "rain"])
    grid = np.array([0.0, 100.0, 500.0, 2000.0, 8000.0])
    if kind == "coloured":
        alpha = rng.uniform(0.0, 2.0)
        wave = shape_noise(rng, n_samples, (np.maximum(grid, 20.0) / 1000.0) ** (-alpha / 2), grid)
    elif kind == "hum":
        base = rng.choice([50.0, 60.0])
        amps = rng.uniform(0.1, 1.0, 12) / np.arange(1, 13) ** rng.uniform(0.3, 1.2)
        wave = (
            amps[:, None] * np.sin(2 * np.pi * base * np.arange(1, 13)[:, None] * t + rng.uniform(0, 6.3, (12, 1)))
        ).sum(0) + 0.05 * rng.standard_normal(n_samples)
    elif kind == "machine":
        fc = rng.uniform(200.0, 3000.0)
        band = shape_noise(rng, n_samples, np.exp(-0.5 * ((grid - fc) / (0.3 * fc)) ** 2) + 0.05, grid)
        wave = band * (1.0 + 0.8 * np.sin(2 * np.pi * rng.uniform(2.0, 30.0) * t)) + 0.5 * np.sin(
            2 * np.pi * rng.uniform(80.0, 400.0) * t
        ) * np.std(band)
    elif kind in ("clicks", "rain"):
        rate = rng.uniform(2.0, 20.0) if kind == "clicks" else rng.uniform(200.0, 1500.0)
        impulses = np.zeros(n_samples)
        count = rng.poisson(rate * n_samples / SAMPLE_RATE)
        impulses[rng.integers(0, n_samples, count)] = rng.uniform(0.3, 1.0, count) * rng.choice([-1.0, 1.0], count)
        decay = np.exp(-np.arange(int(0.02 * SAMPLE_RATE)) / (rng.uniform(0.0005, 0.004) * SAMPLE_RATE))
        ring = decay * np.sin(2 * np.pi * rng.uniform(800.0, 5000.0) * np.arange(len(decay)) / SAMPLE_RATE)
        wave = fft_convolve(impulses, ring) + 0.02 * rng.standard_normal(n_samples)
    elif kind == "wind":
        low = shape_noise(rng, n_samples, np.array([1.0, 1.0, 0.3, 0.05, 0.01]), grid)
        gust = smooth(rng.standard_normal(n_samples // 800 + 2), 6)
        wave = low * np.interp(t, np.arange(len(gust)) * 800 / SAMPLE_RATE, 1.0 + np.abs(gust) * 2.0)
    else:  # beeps: an alarm or phone tone, on and off
        tone = np.sin(2 * np.pi * rng.uniform(400.0, 3000.0) * t)
        gate = (np.floor(t * rng.uniform(0.5, 4.0)) % 2 == 0).astype(np.float64)
        wave = tone * smooth(gate, 80) + 0.02 * rng.standard_normal(n_samples)
    return normalise(wave, rng.uniform(-28.0, -18.0))


def synthesize_music(rng: np.random.Generator, n_samples: int) -> np.ndarray:
    """A music recording: melody and chords from a scale with a random timbre, optional drums."""
    t_total = n_samples / SAMPLE_RATE
    beat = 60.0 / rng.uniform(70.0, 160.0)
    root = int(rng.integers(45, 60))
    scale = np.array([0, 2, 4, 5, 7, 9, 11] if rng.random() < 0.5 else [0, 2, 3, 5, 7, 8, 10])
    n_harmonics = int(rng.integers(4, 12))
    harmonic_amps = np.arange(1, n_harmonics + 1) ** -rng.uniform(0.6, 2.0)
    if rng.random() < 0.3:  # clarinet-like odd harmonics
        harmonic_amps[1::2] *= 0.1
    wave = np.zeros(n_samples)

    def add_note(start, length, midi, gain, amps):
        i0, n = int(start * SAMPLE_RATE), int(length * SAMPLE_RATE)
        n = min(n, n_samples - i0)
        if n <= 0:
            return
        t = np.arange(n) / SAMPLE_RATE
        freq = 440.0 * 2.0 ** ((midi - 69) / 12.0)
        k = np.arange(1, len(amps) + 1)[:, None]
        keep = (k[:, 0] * freq) < 7500.0
        partials = (amps[keep, None] * np.sin(2 * np.pi * freq * k[keep] * t)).sum(0)
        envelope = np.minimum(1.0, t / 0.01) * np.exp(-t / (0.3 + length))
        wave[i0 : i0 + n] += gain * partials * envelope

    degree, start = int(rng.integers(0, 7)), 0.0
    while start < t_total:
        length = beat * rng.choice([0.5, 1.0, 1.0, 2.0])
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, 13))
        add_note(start, length, root + 12 + scale[degree % 7] + 12 * (degree // 7), 1.0, harmonic_amps)
        start += length
    for bar_start in np.arange(0.0, t_total, 4 * beat):
        chord_root = int(rng.choice([0, 3, 4, 5]))
        for step in (0, 2, 4):
            d = chord_root + step
            add_note(bar_start, 4 * beat, root + scale[d % 7] + 12 * (d // 7), 0.35, harmonic_amps[:4])
    if rng.random() < 0.6:
        for k, beat_start in enumerate(np.arange(0.0, t_total, beat / 2)):
            i0 = int(beat_start * SAMPLE_RATE)
            n = min(int(0.15 * SAMPLE_RATE), n_samples - i0)
            t = np.arange(n) / SAMPLE_RATE
            if k % 4 == 0:  # kick: a falling sine
                wave[i0 : i0 + n] += 1.5 * np.sin(2 * np.pi * (50 + 80 * np.exp(-t / 0.03)) * t) * np.exp(-t / 0.08)
            hat = rng.standard_normal(n) * np.exp(-t / 0.015)
            wave[i0 : i0 + n] += 0.3 * np.diff(hat, prepend=0.0)
    return normalise(wave, rng.uniform(-26.0, -16.0))
