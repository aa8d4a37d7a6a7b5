"""A trained encoder for reuse: load any checkpoint, embed audio files or arrays, score pairs (docs/method.md, "Evaluation").

    from lgl_helpers import Encoder
    encoder = Encoder.from_checkpoint("runs/demo/stage2/best.model")
    emb = encoder.embed("a.wav")            # (192,) float32, L2-normalised
    score = encoder.score("a.wav", "b.wav")  # cosine

The embedding is the evaluation's: the whole utterance through the encoder's masked batch pass,
L2-normalised, batched by length under a budget of samples as in
:func:`~lgl_helpers.core.embed.embed_files`, so batching changes speed, not results. Unlike the
training and trial lists, which must be 16 kHz mono (:mod:`lgl_helpers.core.audio`), audio given here
may be any file soundfile reads: it is mixed to mono and resampled to 16 kHz
(``torchaudio.functional.resample``), and the log says how many files were converted. Samples follow
the kit's audio rule (:mod:`lgl_helpers.core.audio`): a NaN or inf sample is refused naming the input,
and an input without signal is named in a warning (:meth:`Encoder.embed_with_silence` returns them).

Checkpoints: every layout :func:`~lgl_helpers.core.models.load_encoder` accepts. A kit checkpoint may
carry ``eer_threshold``, the cosine score at which the validation list's false-accept and
false-reject rates meet; :meth:`Encoder.decide` then accepts a pair whose score reaches it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile
import torch
import torch.nn.functional as F
import torchaudio

from lgl_helpers.core.audio import MIN_SECONDS, SAMPLE_RATE, AudioError, check_samples, is_silent
from lgl_helpers.core.distributed import get_device
from lgl_helpers.core.embed import READ_THREADS, _float32_convolutions, _read_ahead, length_batches, padded_length
from lgl_helpers.core.models import ECAPATDNN, EMB_DIM, KIT_FORMAT, load_encoder, load_weights
from lgl_helpers.progress_log import progress

log = logging.getLogger(__name__)

THRESHOLD_KEY = "eer_threshold"
# Extensions of the formats this libsndfile reads, to tell "unsupported format" from "corrupt file".
_AUDIO_EXTENSIONS = {name.lower() for name in soundfile.available_formats()} | {"aif", "oga", "opus", "wave"}

Audio = str | os.PathLike | np.ndarray


def _audio_problem(path: Path, error: Exception) -> AudioError:
    """The one-line error for a file soundfile cannot open: missing, of a format it does not read, or corrupt."""
    if not path.exists():
        return AudioError(f"{path}: audio file does not exist")
    if path.is_dir():
        return AudioError(f"{path}: is a folder, not an audio file")
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in _AUDIO_EXTENSIONS:
        return AudioError(
            f"{path}: unsupported audio format '.{suffix}' (soundfile reads WAV, FLAC, OGG/Opus, MP3, AIFF and the "
            "other libsndfile formats); convert it first, e.g. ffmpeg -i IN -ac 1 -ar 16000 OUT.wav"
        )
    return AudioError(f"{path}: cannot read as {suffix.upper()} audio, the file is corrupt or truncated ({error})")


def _resampled_length(frames: int, sample_rate: int) -> int:
    """Samples at 16 kHz of ``frames`` samples at ``sample_rate`` (torchaudio's output length)."""
    return math.ceil(frames * SAMPLE_RATE / sample_rate)


def _check_length(name: str, samples: int) -> None:
    seconds = samples / SAMPLE_RATE
    if seconds < MIN_SECONDS:
        raise AudioError(f"{name}: is {seconds:.3f} s long, shorter than the minimum {MIN_SECONDS} s")


def to_mono_16k(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """wave (T,) or (T, channels) at ``sample_rate`` → (T',) float32 at 16 kHz: channels averaged, then resampled."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2:
        wave = wave.mean(axis=1)
    if sample_rate != SAMPLE_RATE:
        wave = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(wave)), sample_rate, SAMPLE_RATE)
        wave = wave.numpy()
    return np.ascontiguousarray(wave, dtype=np.float32)


class _Item:
    """One input of :meth:`Encoder.embed`: a file (read when its batch comes) or an array, with its length at 16 kHz."""

    def __init__(self, audio: Audio, index: int, sample_rate: int):
        if not isinstance(audio, (str, os.PathLike, np.ndarray)):
            raise TypeError(f"audio input {index} is a {type(audio).__name__}: expected a path or a (T,) numpy array")
        if isinstance(audio, np.ndarray):
            if audio.ndim != 1:
                raise ValueError(
                    f"audio array {index} has shape {audio.shape}: expected one waveform (T,); pass a list for several"
                )
            self.name, self.path, self.array = f"<array {index}>", None, audio
            self.sample_rate, self.channels = int(sample_rate), 1
            self.length = _resampled_length(len(audio), self.sample_rate)
        else:
            self.path, self.array = Path(audio), None
            self.name = str(self.path)
            try:
                info = soundfile.info(self.name)
            except Exception as error:  # soundfile raises several types for missing, foreign and corrupt files
                raise _audio_problem(self.path, error) from error
            self.sample_rate, self.channels = int(info.samplerate), int(info.channels)
            self.length = _resampled_length(int(info.frames), self.sample_rate)
        _check_length(self.name, self.length)

    def read(self) -> np.ndarray:
        """(T,) float32 at 16 kHz, mono; non-finite samples raise AudioError naming the input."""
        if self.array is not None:
            return to_mono_16k(check_samples(self.name, self.array), self.sample_rate)
        try:
            wave, sample_rate = soundfile.read(self.name, dtype="float32", always_2d=True)
        except Exception as error:
            raise _audio_problem(self.path, error) from error
        wave = to_mono_16k(check_samples(self.name, wave), int(sample_rate))
        _check_length(self.name, len(wave))
        return wave


def _log_conversions(items: Sequence[_Item]) -> None:
    """One INFO line per converted file, one WARNING line in all: the encoder was trained on 16 kHz mono only."""
    resampled = [item for item in items if item.sample_rate != SAMPLE_RATE]
    mixed = [item for item in items if item.channels > 1]
    for item in resampled:
        log.info("%s: resampled from %d Hz to %d Hz", item.name, item.sample_rate, SAMPLE_RATE)
    for item in mixed:
        log.info("%s: %d channels mixed to mono", item.name, item.channels)
    converted = sum(item.sample_rate != SAMPLE_RATE or item.channels > 1 for item in items)
    if converted:
        rates = ", ".join(f"{rate} Hz" for rate in sorted({item.sample_rate for item in resampled})) or "-"
        log.warning(
            "%d of %d file(s) converted for the 16 kHz mono encoder: %d resampled (from %s), %d mixed to mono",
            converted,
            len(items),
            len(resampled),
            rates,
            len(mixed),
        )


def checkpoint_threshold(path: str | os.PathLike) -> float | None:
    """The ``eer_threshold`` a kit checkpoint stores, or None (reference checkpoints and kit ones without it)."""
    obj = load_weights(path)
    if not isinstance(obj, dict) or obj.get("format") != KIT_FORMAT or obj.get(THRESHOLD_KEY) is None:
        return None
    value = obj[THRESHOLD_KEY]
    value = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: '{THRESHOLD_KEY}' must be a finite number, got {value!r}")
    return float(value)


def silence_note(names: Sequence[str]) -> str:
    """The one warning about inputs without signal (zeros or a constant), naming them."""
    return f"no signal (silence or a constant) in {', '.join(names)}"


class Encoder:
    """An ECAPA-TDNN encoder in eval mode on one device, with the threshold of its checkpoint when it has one."""

    def __init__(
        self,
        model: ECAPATDNN,
        device: str | torch.device = "cpu",
        *,
        eer_threshold: float | None = None,
        checkpoint: Path | None = None,
    ):
        self.device = device if isinstance(device, torch.device) else get_device(str(device))
        self.model = model.to(self.device).eval()
        self.eer_threshold = eer_threshold
        self.checkpoint = checkpoint

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Encoder:
        """Load a reference Stage I/II, ``module.``-prefixed, bare or kit checkpoint (``device``: cpu, cuda, auto)."""
        path = Path(path)
        model = load_encoder(path)
        return cls(model, device, eer_threshold=checkpoint_threshold(path), checkpoint=path)

    def embed(
        self,
        audio: Audio | Sequence[Audio],
        *,
        sample_rate: int = SAMPLE_RATE,
        batch_seconds: float = 240.0,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed one input → (192,), or a list of inputs → (N, 192); float32, L2-normalised.

        An input is a path to any file soundfile reads, or a (T,) array at ``sample_rate``. Every file's
        header is read (and every length checked, at least 0.5 s) before the first embedding, so a bad
        file fails fast; ``batch_seconds`` bounds the padded audio per batch (memory). An input with a
        NaN or inf sample raises AudioError; inputs without signal are named in one warning.
        """
        emb, silent = self.embed_with_silence(
            audio, sample_rate=sample_rate, batch_seconds=batch_seconds, show_progress=show_progress
        )
        if silent:
            log.warning("%s: an embedding of it says nothing about a speaker", silence_note(silent))
        return emb

    def embed_with_silence(
        self,
        audio: Audio | Sequence[Audio],
        *,
        sample_rate: int = SAMPLE_RATE,
        batch_seconds: float = 240.0,
        show_progress: bool = False,
    ) -> tuple[np.ndarray, list[str]]:
        """:meth:`embed` without the warning: (the embedding(s), the names of the inputs that hold no signal
        (:func:`~lgl_helpers.core.audio.is_silent`), in input order)."""
        if batch_seconds <= 0:
            raise ValueError(f"batch_seconds={batch_seconds} must be positive")
        single = isinstance(audio, (str, os.PathLike, np.ndarray))
        items = [_Item(a, i, sample_rate) for i, a in enumerate([audio] if single else audio)]
        if not items:
            return np.zeros((0, EMB_DIM), dtype=np.float32), []
        _log_conversions([item for item in items if item.path is not None])
        start = time.perf_counter()
        emb, silent = self._embed_items(items, int(batch_seconds * SAMPLE_RATE), show_progress)
        seconds, audio_seconds = time.perf_counter() - start, sum(item.length for item in items) / SAMPLE_RATE
        log.info(
            "embedded %d input(s), %.1f s of audio, in %.1f s (%.0fx real time) on %s",
            len(items),
            audio_seconds,
            seconds,
            audio_seconds / max(seconds, 1e-9),
            self.device,
        )
        names = [item.name for item, flag in zip(items, silent) if flag]
        return (emb[0] if single else emb), names

    def _embed_items(self, items: list[_Item], budget: int, show_progress: bool) -> tuple[np.ndarray, np.ndarray]:
        """The length-batched masked pass of :func:`~lgl_helpers.core.embed.embed_files` over decoded items.

        Batches are planned from the header lengths; the padding and masks use the decoded lengths.
        Returns (emb (N, 192), silent (N,) bool: the inputs without signal).
        """
        emb = np.zeros((len(items), EMB_DIM), dtype=np.float32)
        silent = np.zeros(len(items), dtype=bool)
        bar_kwargs = {"desc": "embed", "total": len(items), "unit": "file"}
        if not show_progress:
            bar_kwargs["disable"] = True
        with (
            torch.inference_mode(),
            _float32_convolutions(),
            progress(**bar_kwargs) as bar,
            ThreadPoolExecutor(READ_THREADS) as pool,
        ):
            batches = length_batches([item.length for item in items], budget)
            for batch, waves in _read_ahead(pool, batches, lambda i: items[i].read()):
                # A lone item keeps its exact length (the reference's pass); a batch is padded and masked.
                width = len(waves[0]) if len(waves) == 1 else padded_length(max(len(w) for w in waves))
                padded = np.zeros((len(waves), width), dtype=np.float32)
                for row, wave in enumerate(waves):
                    padded[row, : len(wave)] = wave
                silent[batch] = [is_silent(wave) for wave in waves]
                wave_t = torch.from_numpy(padded).to(self.device)
                if len(waves) == 1:
                    out = self.model(wave_t)
                else:
                    out = self.model(wave_t, torch.tensor([len(w) for w in waves], device=self.device))
                emb[batch] = F.normalize(out.float(), dim=1).cpu().numpy()
                bar.update(len(batch))
        return emb, silent

    def score(self, a: Audio, b: Audio, *, sample_rate: int = SAMPLE_RATE) -> float:
        """Cosine score of two inputs (paths or (T,) arrays at ``sample_rate``), embedded in one batch."""
        emb = self.embed([a, b], sample_rate=sample_rate)
        return float(np.dot(emb[0].astype(np.float64), emb[1].astype(np.float64)))

    def score_with_silence(self, a: Audio, b: Audio, *, sample_rate: int = SAMPLE_RATE) -> tuple[float, list[str]]:
        """:meth:`score` and the names of the inputs without signal (its score then says nothing about speakers)."""
        emb, silent = self.embed_with_silence([a, b], sample_rate=sample_rate)
        return float(np.dot(emb[0].astype(np.float64), emb[1].astype(np.float64))), silent

    def decide(self, score: float) -> bool | None:
        """True (same speaker) when ``score`` reaches the checkpoint's ``eer_threshold``; None without one."""
        return None if self.eer_threshold is None else bool(score >= self.eer_threshold)
