"""The external decoder of data preparation: locating ffmpeg and converting one file to 16 kHz mono 16-bit wav."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from lgl_helpers.core.audio import SAMPLE_RATE

INSTALL_HINT = (
    "install it with `sudo apt-get install ffmpeg` (Debian/Ubuntu), `conda install -c conda-forge ffmpeg` "
    "(conda) or `brew install ffmpeg` (macOS), or give its path with --ffmpeg"
)
# A VoxCeleb2 utterance decodes in well under a second; a stuck decoder must not hold a worker forever.
TIMEOUT_S = 300


class PrepError(ValueError):
    """A preparation that cannot start: a missing decoder, a wrong source layout, a speaker in two sources."""


class ConversionError(RuntimeError):
    """One file that could not be converted; the message is the reason reported next to its name."""


def find_ffmpeg(executable: str = "ffmpeg") -> str | None:
    """Absolute path of ``executable`` (a name looked up on PATH, or a path), None when there is none."""
    return shutil.which(executable)


def missing_ffmpeg_message(executable: str, needed_for: str) -> str:
    """Why a preparation cannot go on without ffmpeg, and how to install it."""
    return f"ffmpeg was not found (looked for {executable!r} on PATH); {needed_for} needs it; {INSTALL_HINT}"


def convert_to_wav(ffmpeg: str, src: str | os.PathLike, out: str | os.PathLike) -> None:
    """Decode ``src`` (any format ffmpeg reads) into ``out`` as 16 kHz mono 16-bit PCM wav.

    Only the first audio stream is kept; channels are averaged to mono and the audio resampled when
    needed. Metadata is dropped so the header holds only the format and data chunks. Raises
    :class:`ConversionError` with ffmpeg's last message when it fails, and also when it logged an error
    but exited 0: ffmpeg skips the packets it cannot decode and carries on, so a truncated m4a would
    otherwise become a shorter wav. ``-xerror`` makes it stop at the first such error.
    """
    command = [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-xerror",
        "-y",
        "-i",
        str(src),
        "-map",
        "0:a:0",
        "-map_metadata",
        "-1",
        "-ac",
        "1",
        "-ar",
        str(SAMPLE_RATE),
        "-c:a",
        "pcm_s16le",
        "-fflags",
        "+bitexact",
        "-flags:a",
        "+bitexact",
        "-f",
        "wav",
        str(out),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        raise ConversionError(f"ffmpeg did not finish within {TIMEOUT_S} s") from error
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    if result.returncode != 0 or lines:
        # ffmpeg prefixes its message with the input's path, which the report already names
        reason = lines[-1].removeprefix(f"{src}: ") if lines else "no message"
        status = f"exit status {result.returncode}" if result.returncode else "logged a decoding error"
        raise ConversionError(f"ffmpeg {status}: {reason} (a truncated or corrupt file?)")
    if not Path(out).is_file():
        raise ConversionError("ffmpeg reported success but wrote no file")
