"""Signal processing of the toy synthesiser: STFT frames, filters and levels (numpy only, deterministic)."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 128  # 8 ms synthesis frames: fine enough for formant transitions and stop bursts
FREQS = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)  # (257,)


def db(value):
    """Decibels → amplitude factor, elementwise (float64)."""
    return 10.0 ** (np.asarray(value, dtype=np.float64) / 20.0)


_WINDOW = np.sqrt(np.hanning(N_FFT + 1)[:N_FFT])  # sqrt-Hann analysis and synthesis: Hann overall


def stft(x: np.ndarray) -> np.ndarray:
    """x: (T,) → (1 + T // HOP, N_FFT // 2 + 1) complex, frames centred on multiples of HOP."""
    padded = np.pad(x, (N_FFT // 2, N_FFT // 2 + HOP))
    n_frames = 1 + len(x) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    return np.fft.rfft(frames * _WINDOW, axis=1)


def istft(spec: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`stft`: (F, 257) complex → (length,)."""
    frames = np.fft.irfft(spec, n=N_FFT, axis=1) * _WINDOW
    n_frames = frames.shape[0]
    blocks = frames.reshape(n_frames, N_FFT // HOP, HOP)
    out = np.zeros((n_frames + N_FFT // HOP, HOP))
    norm = np.zeros((n_frames + N_FFT // HOP, HOP))
    window_blocks = (_WINDOW**2).reshape(N_FFT // HOP, HOP)
    for k in range(N_FFT // HOP):
        out[k : k + n_frames] += blocks[:, k]
        norm[k : k + n_frames] += window_blocks[k]
    out = out.ravel()[N_FFT // 2 : N_FFT // 2 + length]
    norm = norm.ravel()[N_FFT // 2 : N_FFT // 2 + length]
    return out / np.maximum(norm, 1e-3)


def smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Hann-kernel smoothing along axis 0 (edges padded with the edge value)."""
    if width <= 1:
        return values
    kernel = np.hanning(width + 2)[1:-1]
    kernel /= kernel.sum()
    pad = width // 2
    flat = values.reshape(len(values), -1)
    padded = np.pad(flat, ((pad, width - 1 - pad), (0, 0)), mode="edge")
    out = np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(flat.shape[1])], axis=1)
    return out.reshape(values.shape)


def fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Linear convolution truncated to len(x)."""
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]


def shape_noise(rng, n_samples: int, gain: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """White noise shaped by an amplitude response ``gain`` sampled at ``freqs`` (whole-signal FFT)."""
    size = 1 << max(0, n_samples - 1).bit_length()
    spectrum = np.fft.rfft(rng.standard_normal(size))
    grid = np.fft.rfftfreq(size, 1.0 / SAMPLE_RATE)
    return np.fft.irfft(spectrum * np.interp(grid, freqs, gain), size)[:n_samples]


def log_cascade(formants: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """Cascade of second-order resonances, each 1 at DC: (F, 5) Hz, (F, 5) Hz → (F, 257) natural log."""
    ratio_sq = (FREQS[None, None, :] / formants[:, :, None]) ** 2
    damping_sq = ((bandwidths / formants) ** 2)[:, :, None]
    # one log of the product instead of five logs: the envelope is the costliest step of synthesis
    return -0.5 * np.log(((1.0 - ratio_sq) ** 2 + ratio_sq * damping_sq).prod(axis=1))


def log_tilt(db_per_octave: float) -> np.ndarray:
    return db_per_octave / 20.0 * np.log(10.0) * np.log2(np.maximum(FREQS, 100.0) / 100.0)


def log_notch(center: float, depth_db: float, width_octaves: float = 0.25) -> np.ndarray:
    octaves = np.log2(np.maximum(FREQS, 20.0) / center)
    return -depth_db / 20.0 * np.log(10.0) * np.exp(-0.5 * (octaves / width_octaves) ** 2)


def normalise(wave: np.ndarray, level_db: float) -> np.ndarray:
    """(T,) → (T,) float32: zero mean, RMS at ``level_db`` dBFS, peak at most 0.95."""
    wave = wave - wave.mean()
    wave = wave * (db(level_db) / (np.sqrt(np.mean(wave**2)) + 1e-12))
    peak = np.max(np.abs(wave))
    if peak > 0.95:  # keep clear of clipping in 16-bit PCM
        wave *= 0.95 / peak
    return wave.astype(np.float32)
