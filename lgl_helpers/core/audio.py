"""Reading and writing 16 kHz mono wav files, with the checks every stage relies on.

VoxCeleb, MUSAN and RIR files are all 16 kHz mono; anything else is reported with the file's path
rather than silently resampled, so a wrongly converted corpus is caught before training starts.

The samples themselves follow one rule (:func:`check_samples`, :func:`is_silent`), applied wherever
audio is decoded (training crops, evaluation, ``lgl-kit embed``/``verify``) and by the list checks:
a NaN or inf sample is refused, because one such sample turns an embedding, or a training step's
weights, into NaN; a waveform without signal (all zeros, a constant offset) is recognised, so that a
score computed from it can say so. Only float-coded files can hold non-finite values (a PCM sample is
an integer), so header-only scans decode those files and no others.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from lgl_helpers.files import atomic_write_bytes

SAMPLE_RATE = 16000
MIN_SECONDS = 0.5
# Standard deviation (the DC offset removed) below which a waveform holds no signal: -80 dBFS, a third
# of one 16-bit step, far below any recording's noise floor (VoxCeleb's quietest files sit near -60 dBFS).
SILENCE_RMS = 1e-4
# libsndfile subtypes that store floats: the only ones whose samples can be NaN or inf.
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")


class AudioError(ValueError):
    """A wav file that is unreadable, not 16 kHz mono, or too short. The message names the file."""


def check_samples(name: str | os.PathLike, wave: np.ndarray) -> np.ndarray:
    """Return ``wave`` (any shape) unchanged, or raise :class:`AudioError` naming ``name`` when a sample is NaN or inf."""
    finite = np.isfinite(wave)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise AudioError(
            f"{name}: {bad} of its {finite.size} samples are NaN or infinite; "
            "repair or re-export the file (an embedding of it would be NaN)"
        )
    return wave


def is_silent(wave: np.ndarray) -> bool:
    """True when (T,) ``wave`` has no signal: empty, or a standard deviation below :data:`SILENCE_RMS`
    (zeros and a constant DC offset alike)."""
    wave = np.asarray(wave, dtype=np.float64)
    return wave.size == 0 or float(wave.std()) < SILENCE_RMS


def decoded_problem(path: str | os.PathLike, info: WavInfo) -> str | None:
    """The sample rule for a file whose header ``info`` a scan accepted: None when fine, else the reason
    (without the path). Only float-coded files are decoded (:data:`FLOAT_SUBTYPES`): PCM samples are
    finite by construction, so a scan of PCM files stays header-only.
    """
    if info.subtype not in FLOAT_SUBTYPES:
        return None
    try:
        check_samples(path, soundfile.read(str(path), dtype="float32", always_2d=True)[0])
    except AudioError as error:
        return str(error).removeprefix(f"{path}: ")
    except Exception as error:  # soundfile raises several types for corrupt data
        return f"cannot decode audio ({error})"
    return None


@dataclass(frozen=True)
class WavInfo:
    frames: int
    sample_rate: int
    channels: int
    subtype: str = ""  # libsndfile's sample coding: PCM_16, FLOAT, ...

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def wav_info(path: str | os.PathLike) -> WavInfo:
    """Header-only information (no decoding), so scanning a million files stays cheap."""
    try:
        info = soundfile.info(str(path))
    except Exception as error:  # soundfile raises several types for missing/corrupt files
        raise AudioError(f"{path}: cannot read wav header ({error})") from error
    return WavInfo(
        frames=int(info.frames), sample_rate=int(info.samplerate), channels=int(info.channels), subtype=info.subtype
    )


def check_wav(path: str | os.PathLike, min_seconds: float = MIN_SECONDS) -> WavInfo:
    """Return the header of ``path`` or raise :class:`AudioError` if it is not usable by the kit."""
    return _checked(path, wav_info(path), min_seconds)


def _checked(path, info: WavInfo, min_seconds: float) -> WavInfo:
    if info.sample_rate != SAMPLE_RATE:
        raise AudioError(f"{path}: sample rate is {info.sample_rate} Hz, expected {SAMPLE_RATE} Hz")
    if info.channels != 1:
        raise AudioError(f"{path}: has {info.channels} channels, expected mono")
    if info.duration < min_seconds:
        raise AudioError(f"{path}: is {info.duration:.3f} s long, shorter than the minimum {min_seconds} s")
    return info


def read_wav(path: str | os.PathLike, start: int = 0, frames: int = -1, check: bool = True) -> np.ndarray:
    """Read ``frames`` samples (all with -1) from sample ``start``.

    Returns: (T,) float32 in [-1, 1]. With ``check`` the file must be 16 kHz mono and at least
    ``MIN_SECONDS`` long; partial reads only decode the requested range (long noise files).
    """
    return read_wav_part(path, lambda info: (start, frames), check)[0]


def read_wav_part(
    path: str | os.PathLike, part: Callable[[WavInfo], tuple[int, int]], check: bool = True
) -> tuple[np.ndarray, WavInfo]:
    """Open the file once, let ``part(header)`` choose ``(start, frames)`` (frames -1: to the end), read only that.

    Returns ((T,) float32 in [-1, 1], the header). A random crop thus needs one open instead of a
    header read plus a data read. ``check`` as in :func:`read_wav`; the file must be 16 kHz mono either way,
    and a float-coded file's samples finite (:func:`check_samples`), whatever ``check`` says.
    """
    try:
        handle = soundfile.SoundFile(str(path))
    except Exception as error:  # soundfile raises several types for missing/corrupt files
        raise AudioError(f"{path}: cannot read wav header ({error})") from error
    with handle:
        info = WavInfo(frames=int(handle.frames), sample_rate=int(handle.samplerate), channels=int(handle.channels))
        _checked(path, info, MIN_SECONDS if check else 0.0)
        start, frames = part(info)
        try:
            if start:
                handle.seek(start)
            wave = handle.read(frames, dtype="float32", always_2d=False)
        except Exception as error:
            raise AudioError(f"{path}: cannot decode audio ({error})") from error
        if handle.subtype in FLOAT_SUBTYPES:
            check_samples(path, wave)
    return wave, info


def write_wav(path: str | os.PathLike, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write (T,) float audio in [-1, 1] as 16-bit PCM, atomically."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"{path}: expected a 1-D waveform, got shape {wave.shape}")
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(wave, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return atomic_write_bytes(path, buffer.getvalue())
