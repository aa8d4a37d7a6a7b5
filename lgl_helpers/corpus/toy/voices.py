"""Speakers and their speech: stable voice traits, a phone plan per utterance, source-filter synthesis."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lgl_helpers.corpus.toy.channel import Session
from lgl_helpers.corpus.toy.dsp import (
    FREQS,
    HOP,
    SAMPLE_RATE,
    db,
    fft_convolve,
    istft,
    log_cascade,
    log_notch,
    log_tilt,
    normalise,
    smooth,
    stft,
)
from lgl_helpers.corpus.toy.layout import SPLIT_CODES, generator


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
    female: bool  # the sex drawn first, which sets the means of f0 and vocal-tract length

    def vector(self) -> np.ndarray:
        """(D,) float64 standardised trait vector, for the oracle check of the benchmark."""
        values = [
            np.log(self.f0_hz / 150.0) / 0.35,
            (self.f0_range_st - 2.8) / 1.0,
            (self.vtl_scale - 1.08) / 0.1,
            *((np.array(self.formant_offsets) - 1.0) / 0.04),
            *((np.array(self.vowel_offsets).ravel() - 1.0) / 0.05),
            np.log(self.bandwidth_scale) / 0.25,
            (self.tilt_db_per_octave + 7.0) / 0.9,
            np.log(self.breathiness / 0.08) / 1.2,
            np.log(self.jitter / 0.008) / 0.8,
            np.log(self.shimmer / 0.04) / 0.8,
            (self.rate - 4.6) / 1.0,
            np.log(self.notch_hz / 3500.0) / 0.3,
            (self.notch_db - 10.0) / 4.0,
        ]
        return np.asarray(values, dtype=np.float64)


def speaker_traits(seed: int, split: str, index: int) -> SpeakerTraits:
    """Draw the traits of speaker ``index`` of ``split`` ("train", "test", "val" or "babble")."""
    rng = generator(seed, "speaker", SPLIT_CODES[split], index)
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
        female=bool(female),
    )


# ---------------------------------------------------------------------------------------------
# Phones: formant targets (Peterson & Barney, adult male) and consonant classes

_VOWELS = np.array(
    [
        [270, 2290, 3010],
        [390, 1990, 2550],
        [530, 1840, 2480],
        [660, 1720, 2410],
        [730, 1090, 2440],
        [570, 840, 2410],
        [440, 1020, 2240],
        [300, 870, 2240],
        [640, 1190, 2390],
        [490, 1350, 1690],
    ],
    dtype=np.float64,
)
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


class _Plan:
    """Per-frame synthesis parameters, filled segment by segment then expanded with np.repeat."""

    def __init__(self):
        self.frames, self.formants, self.bw_mult = [], [], []
        self.voiced_db, self.noise_db, self.noise_fc, self.noise_bw, self.aspirated = [], [], [], [], []
        self.accent = []

    def add(
        self,
        frames,
        formants,
        voiced_db=-99.0,
        noise_db=-99.0,
        noise_fc=0.0,
        noise_bw=1.0,
        aspirated=0.0,
        bw_mult=1.0,
        accent=0.0,
    ):
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
            "formants": rep(self.formants),
            "bw_mult": rep(self.bw_mult),
            "voiced_db": rep(self.voiced_db),
            "noise_db": rep(self.noise_db),
            "noise_fc": rep(self.noise_fc),
            "noise_bw": rep(self.noise_bw),
            "aspirated": rep(self.aspirated),
            "accent": rep(self.accent),
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
                _add_consonant(
                    plan,
                    rng,
                    _CONSONANT_NAMES[rng.choice(len(_CONSONANT_NAMES), p=_ONSET_WEIGHTS)],
                    vowel,
                    speed,
                    frames_per_ms,
                )
            length = rng.lognormal(np.log(115.0), 0.25) * (1.45 if stressed else 1.0) / speed
            plan.add(
                length * frames_per_ms,
                vowel,
                voiced_db=(3.0 if stressed else 0.0) + rng.normal(0, 1.5),
                accent=float(stressed),
            )
            if rng.random() < 0.4:
                _add_consonant(
                    plan, rng, _CONSONANT_NAMES[rng.integers(len(_CONSONANT_NAMES))], vowel, speed, frames_per_ms
                )
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
            plan.add(
                ms * 0.4 * frames_per_ms, vowel, noise_db=noise_db - 6, noise_fc=2000, noise_bw=4000, aspirated=1.0
            )
    elif kind == "fricative":
        plan.add(
            ms * frames_per_ms,
            locus,
            voiced_db=voiced_db,
            noise_db=noise_db,
            noise_fc=fc,
            noise_bw=bw,
            aspirated=aspirated,
        )
    else:
        plan.add(ms * frames_per_ms, locus, voiced_db=voiced_db, bw_mult=2.5 if kind == "nasal" else 1.3)


def synthesize_speech(rng: np.random.Generator, traits: SpeakerTraits, session: Session, n_samples: int) -> np.ndarray:
    """One utterance of ``traits`` recorded in ``session``: (n_samples,) float32 in [-1, 1]."""
    plan = _phone_plan(rng, traits, 1 + n_samples // HOP)
    n_frames = len(plan["voiced_db"])
    frames_per_s = SAMPLE_RATE / HOP

    # intonation (semitones): phrase declination, accents on stressed vowels, slow wander
    accents = smooth(
        plan["accent"] * rng.normal(2.0, 0.6, n_frames).clip(0.5, 4.0) * traits.f0_range_st / 3.0,
        int(0.15 * frames_per_s),
    )
    wander = smooth(rng.standard_normal(n_frames), int(0.4 * frames_per_s))
    wander *= 0.6 * traits.f0_range_st / (np.std(wander) + 1e-9)
    declination = np.linspace(1.0, -1.0, n_frames) * traits.f0_range_st / 2.0
    f0 = traits.f0_hz * session.f0_shift * 2.0 ** ((accents + wander + declination + rng.normal(0, 0.25)) / 12.0)
    f0_samples = np.interp(np.arange(n_samples), np.arange(n_frames) * HOP, f0)

    # glottal pulses with jitter and shimmer, unit power per sample (amplitude sqrt(period))
    phase = np.cumsum(f0_samples / SAMPLE_RATE)
    onsets = np.flatnonzero(np.diff(np.floor(phase))) + 1
    periods = SAMPLE_RATE / f0_samples[onsets]
    positions = np.clip(
        np.round(onsets + rng.normal(0.0, traits.jitter, len(onsets)) * periods), 0, n_samples - 1
    ).astype(np.int64)
    pulses = np.zeros(n_samples)
    np.add.at(
        pulses, positions, np.sqrt(periods) * np.clip(1.0 + rng.normal(0.0, traits.shimmer, len(onsets)), 0.2, None)
    )
    noise = rng.standard_normal(n_samples)

    # vocal tract: coarticulated formant tracks scaled by the speaker's tract
    formants = np.empty((n_frames, 5))
    formants[:, :3] = smooth(plan["formants"], int(0.045 * frames_per_s))
    formants[:, 3:] = _F45
    formants *= traits.vtl_scale * np.asarray(traits.formant_offsets)
    formants = np.minimum(formants, 0.95 * SAMPLE_RATE / 2)
    bandwidths = (_BANDWIDTHS * traits.bandwidth_scale)[None, :] * smooth(plan["bw_mult"], 5)[:, None]
    tract = np.exp(log_cascade(formants, bandwidths))  # (F, 257)
    notch = np.exp(log_notch(traits.notch_hz, traits.notch_db))  # (257,)
    source = np.exp(log_tilt(traits.tilt_db_per_octave + session.tilt_shift))  # glottis + lip radiation
    aspiration = np.exp(log_tilt(-3.0))  # turbulence noise is flatter than the glottal pulses
    smooth_width = int(0.012 * frames_per_s)
    voiced = smooth(db(plan["voiced_db"]), smooth_width)[:, None]
    noise_level = smooth(db(plan["noise_db"]), smooth_width)[:, None]
    fric = np.exp(-0.5 * ((FREQS[None, :] - plan["noise_fc"][:, None]) / plan["noise_bw"][:, None]) ** 2)
    aspirated = plan["aspirated"][:, None]
    env_voiced = voiced * tract * (source * notch)
    env_noise = noise_level * (
        (1.0 - aspirated) * fric + aspirated * 0.3 * tract * notch
    ) + traits.breathiness * 0.3 * voiced * tract * (aspiration * notch)
    spec = stft(pulses) * env_voiced + stft(noise) * env_noise
    spec *= np.exp(session.log_eq)

    # noise floor at the session SNR (relative to the speech's mean power), drawn in the STFT domain
    speech_power = np.mean(np.abs(spec) ** 2)
    floor = (rng.standard_normal(spec.shape) + 1j * rng.standard_normal(spec.shape)) / np.sqrt(2.0)
    spec += floor * np.exp(session.log_noise) * np.sqrt(speech_power / 10.0 ** (session.snr_db / 10.0))
    wave = istft(spec, n_samples)
    if session.rir is not None:
        wet = fft_convolve(wave, session.rir)
        wet *= np.sqrt(np.mean(wave**2) / (np.mean(wet**2) + 1e-12))
        wave = (1.0 - session.wet) * wave + session.wet * wet
    return normalise(wave, session.level_db + rng.normal(0.0, 1.5))
