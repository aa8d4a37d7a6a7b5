"""The embedded toy corpus: a small VoxCeleb-shaped data set made on the spot, no downloads.

It stands in for VoxCeleb2 dev (training), VoxCeleb1 (test trials), MUSAN and RIRS_NOISES in the
exact on-disk layout of METHOD.md ("Data and list formats"), so every later stage runs through the
same code paths on it as on the real data:

    OUT/train/<idNNNNN>/<session>/<nnnnn>.wav          training speakers (id0....)
    OUT/test/<idNNNNN>/<session>/<nnnnn>.wav           disjoint test speakers (id1....)
    OUT/musan_split/<noise|speech|music>/<subset>/<recording>/<chunk>.wav
    OUT/rirs/simulated_rirs/<room type>/<room>/<rir>.wav
    OUT/lists/train_list.txt                           <speaker> <path under train/> <seconds>
    OUT/lists/trials.txt                               <1|0> <path under test/> <path under test/>

Speech comes from a source-filter model computed frame by frame in the STFT domain:
- per speaker (stable traits): median f0 and intonation range, vocal-tract length (scales all
  formants), per-formant and per-vowel idiosyncrasies, formant bandwidths, spectral tilt,
  breathiness, jitter, shimmer, speaking rate and a fixed spectral notch;
- per utterance (content): a random syllable sequence of vowels, fricatives, stops, nasals and
  approximants with coarticulated formant tracks, stress, phrase pauses and declination;
- per session (channel): an EQ curve with band limits, a coloured noise floor at a session SNR,
  mild reverberation, a level, and a small shift of the speaker's pitch and vocal effort.
So two utterances of one session share speaker *and* channel, and a model has to learn the speaker
rather than the channel to match cross-session trials. MUSAN-like "speech" is talk by speakers
outside both splits (babble once the augmentation mixes several), "noise" and "music" are
synthetic, and the RIRs are exponentially decaying noise tails with early reflections.

Every file is drawn from its own ``numpy.random.Generator`` seeded by (seed, split, speaker,
session, utterance), so generation is parallel and order independent: the same config gives
byte-identical files with any number of workers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
import uuid
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from lgl_helpers.corpus.lists import Trial, TrainEntry, write_train_list, write_trials
from lgl_helpers.runs import progress, write_json

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 128  # 8 ms synthesis frames: fine enough for formant transitions and stop bursts
FREQS = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)  # (257,)
MANIFEST = "toy_corpus.json"
MUSAN_CATEGORIES = ("noise", "speech", "music")
MUSAN_SUBSETS = {
    "noise": ("free-sound", "sound-bible"),
    "speech": ("librivox", "us-gov"),
    "music": ("fma", "jamendo"),
}
ROOM_TYPES = ("smallroom", "mediumroom", "largeroom")
ROOM_RT60 = {"smallroom": (0.15, 0.35), "mediumroom": (0.3, 0.6), "largeroom": (0.5, 0.9)}
SPLIT_CODES = {"train": 0, "test": 1, "babble": 2}


@dataclass(frozen=True)
class ToyConfig:
    """Sizes and difficulty of the toy corpus. Every file follows from these values and ``seed``."""

    n_train_speakers: int = 60  # training speakers (ids id00001...)
    n_test_speakers: int = 24  # test speakers, disjoint from training (ids id10001...)
    sessions_per_speaker: int = 3  # "videos" per speaker, each with its own channel
    utterances_per_session: int = 3  # utterances per session
    min_seconds: float = 2.0  # utterance length drawn uniformly in [min_seconds, max_seconds]
    max_seconds: float = 4.0
    n_trials: int = 800  # half targets (a quarter of them same-session, the rest cross-session), half non-targets
    musan_recordings: int = 3  # recordings per MUSAN subset (speech recordings = babble speakers)
    musan_chunks: int = 3  # chunks per recording, as musan_split cuts them
    musan_chunk_seconds: float = 5.0  # chunk length (chunks start every 60 % of it)
    rir_rooms: int = 3  # rooms per room type (small/medium/large)
    rirs_per_room: int = 3  # impulse responses per room
    rir_max_seconds: float = 1.0  # longest impulse response (large rooms)
    channel_strength: float = 1.0  # scales the session EQ, noise floor and reverb (difficulty knob)
    seed: int = 0

    def __post_init__(self):
        positive = ("n_train_speakers", "n_test_speakers", "utterances_per_session", "n_trials",
                    "musan_recordings", "musan_chunks", "rir_rooms", "rirs_per_room")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"ToyConfig.{name}={getattr(self, name)!r} must be a positive integer")
        if not isinstance(self.sessions_per_speaker, int) or self.sessions_per_speaker < 2:
            raise ValueError(
                f"ToyConfig.sessions_per_speaker={self.sessions_per_speaker!r} must be >= 2 "
                "(cross-session target trials need two sessions)"
            )
        if self.n_train_speakers > 9999 or self.n_test_speakers > 9999:
            raise ValueError("ToyConfig: at most 9999 speakers per split (ids idNNNNN)")
        if not 0.5 <= self.min_seconds <= self.max_seconds:
            raise ValueError(
                f"ToyConfig: need 0.5 <= min_seconds ({self.min_seconds}) <= max_seconds ({self.max_seconds})"
            )
        if self.musan_chunk_seconds < 1.0:
            raise ValueError(f"ToyConfig.musan_chunk_seconds={self.musan_chunk_seconds} must be >= 1")
        if not 0.1 <= self.rir_max_seconds <= 4.0:
            raise ValueError(f"ToyConfig.rir_max_seconds={self.rir_max_seconds} must be in [0.1, 4]")
        if not 0.0 <= self.channel_strength <= 3.0:
            raise ValueError(f"ToyConfig.channel_strength={self.channel_strength} must be in [0, 3]")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"ToyConfig.seed={self.seed!r} must be a non-negative integer")
        _trial_plan(self)  # raises if the test split cannot hold n_trials distinct trials

    @classmethod
    def tiny(cls, **overrides) -> "ToyConfig":
        """A corpus for unit tests: generates in about a second."""
        values = dict(n_train_speakers=8, n_test_speakers=4, sessions_per_speaker=2, utterances_per_session=3,
                      min_seconds=1.0, max_seconds=2.0, n_trials=60, musan_recordings=1, musan_chunks=2,
                      musan_chunk_seconds=2.0, rir_rooms=1, rirs_per_room=2, rir_max_seconds=0.4)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def small(cls, **overrides) -> "ToyConfig":
        """The CI pipeline's corpus: tiny utterances but 40 training speakers, enough for a model to generalise."""
        values = dict(n_train_speakers=40, n_test_speakers=10, n_trials=200)
        values.update(overrides)
        return cls.tiny(**values)

    @classmethod
    def preset(cls, name: str, **overrides) -> "ToyConfig":
        """``"default"`` (the demo corpus), ``"small"`` (the CI pipeline) or ``"tiny"`` (unit tests), with field overrides on top."""
        if name == "default":
            return cls(**overrides)
        if name == "tiny":
            return cls.tiny(**overrides)
        if name == "small":
            return cls.small(**overrides)
        raise ValueError(f"unknown toy preset {name!r}; choose one of {PRESETS}")


PRESETS = ("default", "small", "tiny")


# ---------------------------------------------------------------------------------------------
# Seeding and names


def _key(value) -> int:
    if isinstance(value, str):
        return zlib.crc32(value.encode())  # stable across processes, unlike hash()
    return int(value)


def _rng(seed: int, *keys) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys``: the basis of order independence."""
    return np.random.default_rng(np.random.SeedSequence([seed, *(_key(k) for k in keys)]))


_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def speaker_id(split: str, index: int) -> str:
    """``id00001``... for training, ``id10001``... for test (VoxCeleb2 / VoxCeleb1 style)."""
    return f"id{(0 if split == 'train' else 10000) + index + 1:05d}"


def session_id(seed: int, split: str, speaker: int, session: int) -> str:
    """An 11-character YouTube-like video id, fixed by the seed."""
    rng = _rng(seed, "session-name", SPLIT_CODES[split], speaker, session)
    return "".join(_ID_ALPHABET[i] for i in rng.integers(0, len(_ID_ALPHABET), 11))


# ---------------------------------------------------------------------------------------------
# Speakers


@dataclass(frozen=True)
class SpeakerTraits:
    """Stable voice of one speaker (the ground truth that a speaker encoder should recover)."""

    f0_hz: float  # median fundamental frequency
    f0_range_st: float  # intonation range, semitones
    vtl_scale: float  # formant scale factor (shorter vocal tract → larger)
    formant_offsets: tuple  # (5,) multiplicative offsets of F1..F5
    vowel_offsets: tuple  # (n_vowels, 3) multiplicative offsets of each vowel's F1..F3 ("accent")
    bandwidth_scale: float  # formant bandwidths
    tilt_db_per_octave: float  # source + radiation spectral slope above 100 Hz
    breathiness: float  # aspiration noise relative to the glottal pulses
    jitter: float  # period perturbation, fraction of the period
    shimmer: float  # pulse amplitude perturbation, fraction
    rate: float  # syllables per second
    notch_hz: float  # a fixed anti-resonance (sinus / nasal coupling)
    notch_db: float  # its depth

    def vector(self) -> np.ndarray:
        """(D,) float64 standardised trait vector, for the oracle check of the benchmark."""
        values = [
            np.log(self.f0_hz / 150.0) / 0.35, (self.f0_range_st - 2.8) / 1.0, (self.vtl_scale - 1.08) / 0.1,
            *((np.array(self.formant_offsets) - 1.0) / 0.04), *((np.array(self.vowel_offsets).ravel() - 1.0) / 0.05),
            np.log(self.bandwidth_scale) / 0.25, (self.tilt_db_per_octave + 7.0) / 0.9,
            np.log(self.breathiness / 0.08) / 1.2, np.log(self.jitter / 0.008) / 0.8,
            np.log(self.shimmer / 0.04) / 0.8, (self.rate - 4.6) / 1.0, np.log(self.notch_hz / 3500.0) / 0.3,
            (self.notch_db - 10.0) / 4.0,
        ]
        return np.asarray(values, dtype=np.float64)


def speaker_traits(seed: int, split: str, index: int) -> SpeakerTraits:
    """Draw the traits of speaker ``index`` of ``split`` ("train", "test" or "babble")."""
    rng = _rng(seed, "speaker", SPLIT_CODES[split], index)
    female = rng.random() < 0.5
    # f0 and vocal-tract length are correlated through sex, but vary continuously within it; the
    # voice-source traits are spread wide (log-uniform) because they survive any channel
    f0 = float(np.exp(rng.normal(np.log(210.0 if female else 118.0), 0.2)))
    vtl = float(rng.normal(1.16 if female else 1.0, 0.06))
    return SpeakerTraits(
        f0_hz=f0,
        f0_range_st=float(rng.uniform(1.2, 4.5)),
        vtl_scale=vtl,
        formant_offsets=tuple(float(v) for v in rng.normal(1.0, 0.04, 5)),
        vowel_offsets=tuple(tuple(float(v) for v in row) for row in rng.normal(1.0, 0.05, (len(_VOWELS), 3))),
        bandwidth_scale=float(np.exp(rng.normal(0.0, 0.25))),
        tilt_db_per_octave=float(rng.uniform(-8.5, -5.5)),
        breathiness=float(np.exp(rng.uniform(np.log(0.01), np.log(0.6)))),
        jitter=float(np.exp(rng.uniform(np.log(0.002), np.log(0.03)))),
        shimmer=float(np.exp(rng.uniform(np.log(0.01), np.log(0.15)))),
        rate=float(rng.uniform(2.8, 6.5)),
        notch_hz=float(np.exp(rng.uniform(np.log(2200.0), np.log(5500.0)))),
        notch_db=float(rng.uniform(4.0, 16.0)),
    )


# ---------------------------------------------------------------------------------------------
# Phones: formant targets (Peterson & Barney, adult male) and consonant classes

_VOWELS = np.array([
    [270, 2290, 3010], [390, 1990, 2550], [530, 1840, 2480], [660, 1720, 2410], [730, 1090, 2440],
    [570, 840, 2410], [440, 1020, 2240], [300, 870, 2240], [640, 1190, 2390], [490, 1350, 1690],
], dtype=np.float64)
_SCHWA = np.array([500.0, 1500.0, 2500.0])
_BANDWIDTHS = np.array([80.0, 100.0, 130.0, 180.0, 250.0])
_F45 = np.array([3400.0, 4400.0])

# kind, voiced, formant locus (F1, F2, F3; None = the syllable's vowel), duration ms, voiced level dB,
# noise level dB, noise centre Hz, noise bandwidth Hz, share of the noise shaped by the formants
# (aspiration). Voiceless stops are followed by an aspiration segment of their own.
_CONSONANTS = {
    "p": ("stop", False, (300, 800, 2200), 70, -99, -14, 1000, 1500, 0.0),
    "t": ("stop", False, (300, 1800, 2700), 65, -99, -10, 4500, 2500, 0.0),
    "k": ("stop", False, (300, 2000, 2400), 75, -99, -12, 2500, 1200, 0.0),
    "b": ("stop", True, (300, 800, 2200), 60, -28, -18, 1000, 1500, 0.0),
    "d": ("stop", True, (300, 1800, 2700), 55, -28, -15, 4500, 2500, 0.0),
    "g": ("stop", True, (300, 2000, 2400), 65, -28, -16, 2500, 1200, 0.0),
    "s": ("fricative", False, (320, 1700, 2600), 110, -99, -11, 6200, 1800, 0.0),
    "sh": ("fricative", False, (320, 1900, 2400), 115, -99, -9, 3600, 1500, 0.0),
    "f": ("fricative", False, (320, 900, 2300), 100, -99, -24, 5000, 5000, 0.0),
    "h": ("fricative", False, None, 70, -99, -16, 2000, 4000, 1.0),
    "z": ("fricative", True, (320, 1700, 2600), 90, -14, -16, 6200, 1800, 0.0),
    "v": ("fricative", True, (320, 900, 2300), 80, -12, -26, 5000, 5000, 0.0),
    "m": ("nasal", True, (250, 1100, 2300), 75, -9, -99, 0, 1, 0.0),
    "n": ("nasal", True, (250, 1600, 2500), 70, -9, -99, 0, 1, 0.0),
    "l": ("approximant", True, (360, 1200, 2800), 65, -5, -99, 0, 1, 0.0),
    "r": ("approximant", True, (310, 1060, 1380), 70, -5, -99, 0, 1, 0.0),
    "w": ("approximant", True, (290, 610, 2150), 60, -5, -99, 0, 1, 0.0),
    "j": ("approximant", True, (260, 2070, 3020), 60, -5, -99, 0, 1, 0.0),
}
_CONSONANT_NAMES = tuple(_CONSONANTS)
_ONSET_WEIGHTS = np.array([0.6 if c == "h" else 1.0 for c in _CONSONANT_NAMES])
_ONSET_WEIGHTS /= _ONSET_WEIGHTS.sum()


def _db(value):
    return 10.0 ** (np.asarray(value, dtype=np.float64) / 20.0)


class _Plan:
    """Per-frame synthesis parameters, filled segment by segment then expanded with np.repeat."""

    def __init__(self):
        self.frames, self.formants, self.bw_mult = [], [], []
        self.voiced_db, self.noise_db, self.noise_fc, self.noise_bw, self.aspirated = [], [], [], [], []
        self.accent = []

    def add(self, frames, formants, voiced_db=-99.0, noise_db=-99.0, noise_fc=0.0, noise_bw=1.0,
            aspirated=0.0, bw_mult=1.0, accent=0.0):
        frames = max(1, int(round(frames)))
        self.frames.append(frames)
        self.formants.append(formants)
        self.voiced_db.append(voiced_db)
        self.noise_db.append(noise_db)
        self.noise_fc.append(noise_fc)
        self.noise_bw.append(noise_bw)
        self.aspirated.append(aspirated)
        self.bw_mult.append(bw_mult)
        self.accent.append(accent)

    @property
    def length(self) -> int:
        return int(sum(self.frames))

    def expand(self, n_frames: int) -> dict:
        reps = np.asarray(self.frames)

        def rep(values):
            return np.repeat(np.asarray(values, dtype=np.float64), reps, axis=0)[:n_frames]

        return {
            "formants": rep(self.formants), "bw_mult": rep(self.bw_mult), "voiced_db": rep(self.voiced_db),
            "noise_db": rep(self.noise_db), "noise_fc": rep(self.noise_fc), "noise_bw": rep(self.noise_bw),
            "aspirated": rep(self.aspirated), "accent": rep(self.accent),
        }


def _phone_plan(rng: np.random.Generator, traits: SpeakerTraits, n_frames: int) -> dict:
    """Syllables, phrases and pauses for ``n_frames`` frames: dict of (n_frames, ...) arrays."""
    frames_per_ms = SAMPLE_RATE / HOP / 1000.0
    speed = traits.rate / 4.5
    vowels = _VOWELS * np.asarray(traits.vowel_offsets)
    plan = _Plan()
    plan.add(rng.uniform(60, 250) * frames_per_ms, _SCHWA)
    while plan.length < n_frames:
        for _ in range(int(rng.integers(3, 9))):
            stressed = rng.random() < 0.35
            vowel = vowels[rng.integers(len(vowels))]
            if rng.random() < 0.85:
                _add_consonant(plan, rng, _CONSONANT_NAMES[rng.choice(len(_CONSONANT_NAMES), p=_ONSET_WEIGHTS)],
                               vowel, speed, frames_per_ms)
            length = rng.lognormal(np.log(115.0), 0.25) * (1.45 if stressed else 1.0) / speed
            plan.add(length * frames_per_ms, vowel, voiced_db=(3.0 if stressed else 0.0) + rng.normal(0, 1.5),
                     accent=float(stressed))
            if rng.random() < 0.4:
                _add_consonant(plan, rng, _CONSONANT_NAMES[rng.integers(len(_CONSONANT_NAMES))], vowel, speed,
                               frames_per_ms)
        plan.add(rng.uniform(120, 450) * frames_per_ms, _SCHWA)  # phrase pause
    return plan.expand(n_frames)


def _add_consonant(plan: _Plan, rng, name, vowel, speed, frames_per_ms):
    kind, voiced, locus, ms, voiced_db, noise_db, fc, bw, aspirated = _CONSONANTS[name]
    locus = vowel if locus is None else np.asarray(locus, dtype=np.float64)
    ms = ms * rng.lognormal(0.0, 0.2) / speed
    if kind == "stop":
        plan.add(ms * 0.7 * frames_per_ms, locus, voiced_db=voiced_db)  # closure (voice bar when voiced)
        plan.add(12 * frames_per_ms, locus, noise_db=noise_db, noise_fc=fc, noise_bw=bw)  # burst
        if not voiced:  # aspiration before the vowel: noise through the vowel's formants
            plan.add(ms * 0.4 * frames_per_ms, vowel, noise_db=noise_db - 6, noise_fc=2000, noise_bw=4000,
                     aspirated=1.0)
    elif kind == "fricative":
        plan.add(ms * frames_per_ms, locus, voiced_db=voiced_db, noise_db=noise_db, noise_fc=fc, noise_bw=bw,
                 aspirated=aspirated)
    else:
        plan.add(ms * frames_per_ms, locus, voiced_db=voiced_db, bw_mult=2.5 if kind == "nasal" else 1.3)


# ---------------------------------------------------------------------------------------------
# Signal processing helpers (numpy only, deterministic)

_WINDOW = np.sqrt(np.hanning(N_FFT + 1)[:N_FFT])  # sqrt-Hann analysis and synthesis: Hann overall


def _stft(x: np.ndarray) -> np.ndarray:
    """x: (T,) → (1 + T // HOP, N_FFT // 2 + 1) complex, frames centred on multiples of HOP."""
    padded = np.pad(x, (N_FFT // 2, N_FFT // 2 + HOP))
    n_frames = 1 + len(x) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    return np.fft.rfft(frames * _WINDOW, axis=1)


def _istft(spec: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`_stft`: (F, 257) complex → (length,)."""
    frames = np.fft.irfft(spec, n=N_FFT, axis=1) * _WINDOW
    n_frames = frames.shape[0]
    blocks = frames.reshape(n_frames, N_FFT // HOP, HOP)
    out = np.zeros((n_frames + N_FFT // HOP, HOP))
    norm = np.zeros((n_frames + N_FFT // HOP, HOP))
    window_blocks = (_WINDOW**2).reshape(N_FFT // HOP, HOP)
    for k in range(N_FFT // HOP):
        out[k:k + n_frames] += blocks[:, k]
        norm[k:k + n_frames] += window_blocks[k]
    out = out.ravel()[N_FFT // 2:N_FFT // 2 + length]
    norm = norm.ravel()[N_FFT // 2:N_FFT // 2 + length]
    return out / np.maximum(norm, 1e-3)


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
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


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Linear convolution truncated to len(x)."""
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[:len(x)]


def _shape_noise(rng, n_samples: int, gain: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """White noise shaped by an amplitude response ``gain`` sampled at ``freqs`` (whole-signal FFT)."""
    size = 1 << max(0, n_samples - 1).bit_length()
    spectrum = np.fft.rfft(rng.standard_normal(size))
    grid = np.fft.rfftfreq(size, 1.0 / SAMPLE_RATE)
    return np.fft.irfft(spectrum * np.interp(grid, freqs, gain), size)[:n_samples]


def _log_cascade(formants: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """Cascade of second-order resonances, each 1 at DC: (F, 5) Hz, (F, 5) Hz → (F, 257) natural log."""
    ratio_sq = (FREQS[None, None, :] / formants[:, :, None]) ** 2
    damping_sq = ((bandwidths / formants) ** 2)[:, :, None]
    # one log of the product instead of five logs: the envelope is the costliest step of synthesis
    return -0.5 * np.log(((1.0 - ratio_sq) ** 2 + ratio_sq * damping_sq).prod(axis=1))


def _log_tilt(db_per_octave: float) -> np.ndarray:
    return db_per_octave / 20.0 * np.log(10.0) * np.log2(np.maximum(FREQS, 100.0) / 100.0)


def _log_notch(center: float, depth_db: float, width_octaves: float = 0.25) -> np.ndarray:
    octaves = np.log2(np.maximum(FREQS, 20.0) / center)
    return -depth_db / 20.0 * np.log(10.0) * np.exp(-0.5 * (octaves / width_octaves) ** 2)


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
    np.add.at(rir, early, rng.uniform(0.2, 0.6, len(early)) * rng.choice([-1.0, 1.0], len(early))
              * np.exp(-6.9 * (early - delay) / SAMPLE_RATE / rt60))
    tail_t = np.maximum(t - delay / SAMPLE_RATE, 0.0)
    low = _shape_noise(rng, n_samples, np.array([1.0, 1.0, 0.0, 0.0]), np.array([0, 1500, 3000, 8000]))
    high = _shape_noise(rng, n_samples, np.array([0.0, 0.0, 1.0, 1.0]), np.array([0, 1500, 3000, 8000]))
    tail = low * np.exp(-6.9 * tail_t / rt60) + high * np.exp(-6.9 * tail_t / (0.6 * rt60))
    tail[:delay] = 0.0
    tail *= 0.25 / np.sqrt(np.mean(tail[delay:delay + int(0.01 * SAMPLE_RATE)] ** 2) + 1e-12)
    return rir + tail


# ---------------------------------------------------------------------------------------------
# Sessions (channels) and utterances


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


def synthesize_speech(rng: np.random.Generator, traits: SpeakerTraits, session: Session, n_samples: int) -> np.ndarray:
    """One utterance of ``traits`` recorded in ``session``: (n_samples,) float32 in [-1, 1]."""
    plan = _phone_plan(rng, traits, 1 + n_samples // HOP)
    n_frames = len(plan["voiced_db"])
    frames_per_s = SAMPLE_RATE / HOP

    # intonation (semitones): phrase declination, accents on stressed vowels, slow wander
    accents = _smooth(plan["accent"] * rng.normal(2.0, 0.6, n_frames).clip(0.5, 4.0) * traits.f0_range_st / 3.0,
                      int(0.15 * frames_per_s))
    wander = _smooth(rng.standard_normal(n_frames), int(0.4 * frames_per_s))
    wander *= 0.6 * traits.f0_range_st / (np.std(wander) + 1e-9)
    declination = np.linspace(1.0, -1.0, n_frames) * traits.f0_range_st / 2.0
    f0 = traits.f0_hz * session.f0_shift * 2.0 ** ((accents + wander + declination + rng.normal(0, 0.25)) / 12.0)
    f0_samples = np.interp(np.arange(n_samples), np.arange(n_frames) * HOP, f0)

    # glottal pulses with jitter and shimmer, unit power per sample (amplitude sqrt(period))
    phase = np.cumsum(f0_samples / SAMPLE_RATE)
    onsets = np.flatnonzero(np.diff(np.floor(phase))) + 1
    periods = SAMPLE_RATE / f0_samples[onsets]
    positions = np.clip(np.round(onsets + rng.normal(0.0, traits.jitter, len(onsets)) * periods), 0,
                        n_samples - 1).astype(np.int64)
    pulses = np.zeros(n_samples)
    np.add.at(pulses, positions, np.sqrt(periods) * np.clip(1.0 + rng.normal(0.0, traits.shimmer, len(onsets)),
                                                                0.2, None))
    noise = rng.standard_normal(n_samples)

    # vocal tract: coarticulated formant tracks scaled by the speaker's tract
    formants = np.empty((n_frames, 5))
    formants[:, :3] = _smooth(plan["formants"], int(0.045 * frames_per_s))
    formants[:, 3:] = _F45
    formants *= traits.vtl_scale * np.asarray(traits.formant_offsets)
    formants = np.minimum(formants, 0.95 * SAMPLE_RATE / 2)
    bandwidths = (_BANDWIDTHS * traits.bandwidth_scale)[None, :] * _smooth(plan["bw_mult"], 5)[:, None]
    tract = np.exp(_log_cascade(formants, bandwidths))  # (F, 257)
    notch = np.exp(_log_notch(traits.notch_hz, traits.notch_db))  # (257,)
    source = np.exp(_log_tilt(traits.tilt_db_per_octave + session.tilt_shift))  # glottis + lip radiation
    aspiration = np.exp(_log_tilt(-3.0))  # turbulence noise is flatter than the glottal pulses
    smooth_width = int(0.012 * frames_per_s)
    voiced = _smooth(_db(plan["voiced_db"]), smooth_width)[:, None]
    noise_level = _smooth(_db(plan["noise_db"]), smooth_width)[:, None]
    fric = np.exp(-0.5 * ((FREQS[None, :] - plan["noise_fc"][:, None]) / plan["noise_bw"][:, None]) ** 2)
    aspirated = plan["aspirated"][:, None]
    env_voiced = voiced * tract * (source * notch)
    env_noise = (noise_level * ((1.0 - aspirated) * fric + aspirated * 0.3 * tract * notch)
                 + traits.breathiness * 0.3 * voiced * tract * (aspiration * notch))
    spec = _stft(pulses) * env_voiced + _stft(noise) * env_noise
    spec *= np.exp(session.log_eq)

    # noise floor at the session SNR (relative to the speech's mean power), drawn in the STFT domain
    speech_power = np.mean(np.abs(spec) ** 2)
    floor = (rng.standard_normal(spec.shape) + 1j * rng.standard_normal(spec.shape)) / np.sqrt(2.0)
    spec += floor * np.exp(session.log_noise) * np.sqrt(speech_power / 10.0 ** (session.snr_db / 10.0))
    wave = _istft(spec, n_samples)
    if session.rir is not None:
        wet = _fft_convolve(wave, session.rir)
        wet *= np.sqrt(np.mean(wave**2) / (np.mean(wet**2) + 1e-12))
        wave = (1.0 - session.wet) * wave + session.wet * wet
    return _normalise(wave, session.level_db + rng.normal(0.0, 1.5))


def _normalise(wave: np.ndarray, level_db: float) -> np.ndarray:
    wave = wave - wave.mean()
    wave = wave * (_db(level_db) / (np.sqrt(np.mean(wave**2)) + 1e-12))
    peak = np.max(np.abs(wave))
    if peak > 0.95:  # keep clear of clipping in 16-bit PCM
        wave *= 0.95 / peak
    return wave.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# MUSAN-like noise and music, RIRs


def synthesize_noise(rng: np.random.Generator, n_samples: int) -> np.ndarray:
    """A non-speech noise recording (one of several kinds): (n_samples,) float32."""
    t = np.arange(n_samples) / SAMPLE_RATE
    kind = rng.choice(["coloured", "hum", "machine", "clicks", "wind", "beeps", "rain"])
    grid = np.array([0.0, 100.0, 500.0, 2000.0, 8000.0])
    if kind == "coloured":
        alpha = rng.uniform(0.0, 2.0)
        wave = _shape_noise(rng, n_samples, (np.maximum(grid, 20.0) / 1000.0) ** (-alpha / 2), grid)
    elif kind == "hum":
        base = rng.choice([50.0, 60.0])
        amps = rng.uniform(0.1, 1.0, 12) / np.arange(1, 13) ** rng.uniform(0.3, 1.2)
        wave = (amps[:, None] * np.sin(2 * np.pi * base * np.arange(1, 13)[:, None] * t + rng.uniform(0, 6.3, (12, 1)))
                ).sum(0) + 0.05 * rng.standard_normal(n_samples)
    elif kind == "machine":
        fc = rng.uniform(200.0, 3000.0)
        band = _shape_noise(rng, n_samples, np.exp(-0.5 * ((grid - fc) / (0.3 * fc)) ** 2) + 0.05, grid)
        wave = band * (1.0 + 0.8 * np.sin(2 * np.pi * rng.uniform(2.0, 30.0) * t)) + 0.5 * np.sin(
            2 * np.pi * rng.uniform(80.0, 400.0) * t) * np.std(band)
    elif kind in ("clicks", "rain"):
        rate = rng.uniform(2.0, 20.0) if kind == "clicks" else rng.uniform(200.0, 1500.0)
        impulses = np.zeros(n_samples)
        count = rng.poisson(rate * n_samples / SAMPLE_RATE)
        impulses[rng.integers(0, n_samples, count)] = rng.uniform(0.3, 1.0, count) * rng.choice([-1.0, 1.0], count)
        decay = np.exp(-np.arange(int(0.02 * SAMPLE_RATE)) / (rng.uniform(0.0005, 0.004) * SAMPLE_RATE))
        ring = decay * np.sin(2 * np.pi * rng.uniform(800.0, 5000.0) * np.arange(len(decay)) / SAMPLE_RATE)
        wave = _fft_convolve(impulses, ring) + 0.02 * rng.standard_normal(n_samples)
    elif kind == "wind":
        low = _shape_noise(rng, n_samples, np.array([1.0, 1.0, 0.3, 0.05, 0.01]), grid)
        gust = _smooth(rng.standard_normal(n_samples // 800 + 2), 6)
        wave = low * np.interp(t, np.arange(len(gust)) * 800 / SAMPLE_RATE, 1.0 + np.abs(gust) * 2.0)
    else:  # beeps: an alarm or phone tone, on and off
        tone = np.sin(2 * np.pi * rng.uniform(400.0, 3000.0) * t)
        gate = (np.floor(t * rng.uniform(0.5, 4.0)) % 2 == 0).astype(np.float64)
        wave = tone * _smooth(gate, 80) + 0.02 * rng.standard_normal(n_samples)
    return _normalise(wave, rng.uniform(-28.0, -18.0))


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
        wave[i0:i0 + n] += gain * partials * envelope

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
                wave[i0:i0 + n] += 1.5 * np.sin(2 * np.pi * (50 + 80 * np.exp(-t / 0.03)) * t) * np.exp(-t / 0.08)
            hat = rng.standard_normal(n) * np.exp(-t / 0.015)
            wave[i0:i0 + n] += 0.3 * np.diff(hat, prepend=0.0)
    return _normalise(wave, rng.uniform(-26.0, -16.0))


# ---------------------------------------------------------------------------------------------
# Layout, trials and jobs


def _trial_plan(config: ToyConfig) -> tuple[int, int, int]:
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
    for name, need, have in (("same-session target", n_same, available_same),
                             ("cross-session target", n_cross, available_cross),
                             ("non-target", n_non, available_non)):
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
    n_same, n_cross, n_non = _trial_plan(config)
    rng = _rng(config.seed, "trials")
    speakers = np.array([f[0] for f in test_files])
    sessions = np.array([f[0] + "/" + f[1] for f in test_files])
    i, j = np.triu_indices(len(test_files), 1)
    same_speaker = speakers[i] == speakers[j]
    same_session = sessions[i] == sessions[j]
    groups = ((1, same_speaker & same_session, n_same), (1, same_speaker & ~same_session, n_cross),
              (0, ~same_speaker, n_non))
    trials = []
    for label, mask, count in groups:
        candidates = np.flatnonzero(mask)
        for pick in np.sort(rng.choice(len(candidates), size=count, replace=False)):
            a, b = i[candidates[pick]], j[candidates[pick]]
            if rng.random() < 0.5:
                a, b = b, a
            trials.append(Trial(label, test_files[a][2], test_files[b][2]))
    return sorted(trials, key=lambda t: (t.path_a, t.path_b))


def _speech_files(config: ToyConfig, split: str) -> list[tuple[int, int, int]]:
    n_speakers = config.n_train_speakers if split == "train" else config.n_test_speakers
    return [(s, u, k) for s in range(n_speakers) for u in range(config.sessions_per_speaker)
            for k in range(config.utterances_per_session)]


def utterance_path(config: ToyConfig, split: str, speaker: int, session: int, utterance: int) -> str:
    """Path of one utterance relative to its split root, e.g. ``id00001/aB3dE5fG7hI/00001.wav``."""
    return f"{speaker_id(split, speaker)}/{session_id(config.seed, split, speaker, session)}/{utterance + 1:05d}.wav"


def _duration_samples(rng, config: ToyConfig) -> int:
    return int(round(rng.uniform(config.min_seconds, config.max_seconds) * SAMPLE_RATE))


def _write(path: Path, wave: np.ndarray) -> None:
    """16-bit PCM with our own rounding, so the bytes depend on nothing but the samples."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16)
    soundfile.write(str(path), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def _musan_chunk_starts(config: ToyConfig) -> list[int]:
    stride = max(1, int(round(0.6 * config.musan_chunk_seconds)))
    return [k * stride for k in range(config.musan_chunks)]


def _run_job(job: tuple) -> list[tuple]:
    """Generate the files of one job under ``root``; returns [(kind, split/category, relative path, frames)]."""
    root, config_dict, kind, args = job
    config = ToyConfig(**config_dict)
    root = Path(root)
    if kind == "utterance":
        split, speaker, session, utterance = args
        traits = speaker_traits(config.seed, split, speaker)
        channel = make_session(_rng(config.seed, "channel", SPLIT_CODES[split], speaker, session),
                               config.channel_strength)
        rng = _rng(config.seed, "utterance", SPLIT_CODES[split], speaker, session, utterance)
        wave = synthesize_speech(rng, traits, channel, _duration_samples(rng, config))
        rel = utterance_path(config, split, speaker, session, utterance)
        _write(root / split / rel, wave)
        return [(kind, split, rel, len(wave))]
    if kind == "musan":
        category, subset, recording = args
        starts = _musan_chunk_starts(config)
        chunk = int(round(config.musan_chunk_seconds * SAMPLE_RATE))
        n_samples = starts[-1] * SAMPLE_RATE + chunk
        rng = _rng(config.seed, "musan", category, subset, recording)
        if category == "speech":  # one talker per recording; the augmentation mixes several into babble
            babble_index = subset * config.musan_recordings + recording
            wave = synthesize_speech(rng, speaker_traits(config.seed, "babble", babble_index),
                                     make_session(rng, config.channel_strength), n_samples)
        elif category == "music":
            wave = synthesize_music(rng, n_samples)
        else:
            wave = synthesize_noise(rng, n_samples)
        subset_name = MUSAN_SUBSETS[category][subset]
        folder = f"musan_split/{category}/{subset_name}/{category}-{subset_name}-{recording:04d}"
        out = []
        for start in starts:
            rel = f"{folder}/{start:05d}.wav"
            piece = wave[start * SAMPLE_RATE:start * SAMPLE_RATE + chunk]
            _write(root / rel, piece)
            out.append((kind, category, rel, len(piece)))
        return out
    room_type, room = args
    rng = _rng(config.seed, "rir", room_type, room)
    low, high = ROOM_RT60[ROOM_TYPES[room_type]]
    rt60 = rng.uniform(low, high)
    n_samples = int(min(config.rir_max_seconds, rt60 * 1.2) * SAMPLE_RATE)
    room_name = f"Room{room + 1:03d}"
    out = []
    for k in range(config.rirs_per_room):
        rir = make_rir(rng, rt60, n_samples)
        rir = (0.9 / np.max(np.abs(rir)) * rir).astype(np.float32)
        rel = f"rirs/simulated_rirs/{ROOM_TYPES[room_type]}/{room_name}/{room_name}-{k + 1:05d}.wav"
        _write(root / rel, rir)
        out.append(("rir", ROOM_TYPES[room_type], rel, len(rir)))
    return out


def _jobs(root: Path, config: ToyConfig) -> list[tuple]:
    config_dict = dataclasses.asdict(config)
    jobs = []
    for category in MUSAN_CATEGORIES:  # longest jobs first, for load balance
        for subset in range(len(MUSAN_SUBSETS[category])):
            for recording in range(config.musan_recordings):
                jobs.append((str(root), config_dict, "musan", (category, subset, recording)))
    for split in ("train", "test"):
        for speaker, session, utterance in _speech_files(config, split):
            jobs.append((str(root), config_dict, "utterance", (split, speaker, session, utterance)))
    for room_type in range(len(ROOM_TYPES)):
        for room in range(config.rir_rooms):
            jobs.append((str(root), config_dict, "rir", (room_type, room)))
    return jobs


def toy_paths(root: str | os.PathLike) -> dict[str, Path]:
    """The data locations inside a toy corpus, keyed like ``runs.DATA_KEYS`` (val_trials = trials)."""
    root = Path(root).resolve()
    return {
        "train_root": root / "train", "train_list": root / "lists" / "train_list.txt", "test_root": root / "test",
        "trials": root / "lists" / "trials.txt", "val_trials": root / "lists" / "trials.txt",
        "musan_root": root / "musan_split", "rir_root": root / "rirs",
    }


def is_toy_corpus(root: str | os.PathLike) -> bool:
    """True when ``root`` holds a complete toy corpus (its manifest is written last)."""
    return (Path(root) / MANIFEST).is_file()


def read_toy_manifest(root: str | os.PathLike) -> dict:
    """The ``toy_corpus.json`` of a generated corpus: {"config": {...}, "summary": {...}}."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{root}: not a toy corpus (no {MANIFEST}); generate one with `lgl-kit toy {root}`")
    with open(path) as handle:
        return json.load(handle)


def generate_toy_corpus(out_dir: str | os.PathLike, config: ToyConfig | None = None, *, workers: int | None = None,
                        overwrite: bool = False, show_progress: bool = True) -> dict:
    """Generate the toy corpus into ``out_dir`` and return its summary.

    The corpus is built in a hidden sibling folder and moved into place at the end, so an interrupted
    run never leaves a half-written corpus. ``workers`` processes (default: all cores; 1 = in this
    process) do not change the result. An existing non-empty ``out_dir`` is an error unless
    ``overwrite``.

    Returns a dict: absolute paths (``root`` and the keys of :func:`toy_paths`), counts
    (``n_train_speakers``, ``n_train_utterances``, ``train_hours``, ``n_test_speakers``,
    ``n_test_files``, ``n_trials``, ``n_target``, ``n_target_same_session``,
    ``n_target_cross_session``, ``n_nontarget``, ``musan_chunks`` per category, ``n_rirs``) and
    ``seconds`` of generation time.
    """
    config = config or ToyConfig()
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists and is not empty; pass overwrite=True (--force) to replace it")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    started = time.perf_counter()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        jobs = _jobs(staging, config)
        bar = dict(total=len(jobs), desc="toy corpus", unit="job", **({} if show_progress else {"disable": True}))
        if workers == 1:
            results = [_run_job(job) for job in progress(jobs, **bar)]
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = list(progress(pool.map(_run_job, jobs, chunksize=max(1, len(jobs) // (8 * workers))),
                                        **bar))
        records = [record for result in results for record in result]
        summary = _write_lists_and_manifest(staging, config, records)
        if out_dir.exists():
            trash = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, trash)
            os.replace(staging, out_dir)
            shutil.rmtree(trash)
        else:
            os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    log.info("toy corpus: %d train utterances, %d test files, %d trials in %.1f s -> %s",
             summary["n_train_utterances"], summary["n_test_files"], summary["n_trials"], seconds, out_dir)
    paths = {key: str(value) for key, value in toy_paths(out_dir).items()}
    return {"root": str(out_dir), **paths, **summary, "seconds": seconds}


def _write_lists_and_manifest(root: Path, config: ToyConfig, records: list[tuple]) -> dict:
    train = sorted((r for r in records if r[0] == "utterance" and r[1] == "train"), key=lambda r: r[2])
    test = sorted((r for r in records if r[0] == "utterance" and r[1] == "test"), key=lambda r: r[2])
    entries = [TrainEntry(rel.split("/")[0], rel, frames / SAMPLE_RATE) for _, _, rel, frames in train]
    write_train_list(root / "lists" / "train_list.txt", entries)
    test_files = [(rel.split("/")[0], rel.split("/")[1], rel) for _, _, rel, _ in test]
    trials = make_trials(config, test_files)
    write_trials(root / "lists" / "trials.txt", trials)
    same_session = sum(1 for t in trials if t.label == 1 and t.path_a.split("/")[1] == t.path_b.split("/")[1])
    summary = {
        "n_train_speakers": len({e.speaker for e in entries}),
        "n_train_utterances": len(entries),
        "train_hours": round(sum(e.duration for e in entries) / 3600.0, 4),
        "n_test_speakers": len({f[0] for f in test_files}),
        "n_test_files": len(test_files),
        "n_trials": len(trials),
        "n_target": sum(t.label for t in trials),
        "n_target_same_session": same_session,
        "n_target_cross_session": sum(t.label for t in trials) - same_session,
        "n_nontarget": sum(1 - t.label for t in trials),
        "musan_chunks": {c: sum(1 for r in records if r[0] == "musan" and r[1] == c) for c in MUSAN_CATEGORIES},
        "n_rirs": sum(1 for r in records if r[0] == "rir"),
    }
    write_json(root / MANIFEST, {"generator": "lgl_helpers.corpus.toy", "config": config, "summary": summary})
    return summary
