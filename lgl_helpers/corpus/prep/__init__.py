"""Data preparation: downloaded corpora turned into the layouts the kit reads.

:mod:`~lgl_helpers.corpus.prep.voxceleb` converts VoxCeleb2's m4a and VoxCeleb1's wav into
``<root>/<speaker>/<video>/<nnnnn>.wav`` at 16 kHz mono 16-bit, and merges several sources (VoxCeleb1
dev + test) into one root (``lgl-kit prep voxceleb``); :mod:`~lgl_helpers.corpus.prep.ffmpeg` wraps the
decoder it uses. MUSAN needs no preparation: the augmentation reads it as distributed or split into
chunks (:func:`lgl_helpers.core.augment.find_noise_files`).
"""

from lgl_helpers.corpus.prep.ffmpeg import INSTALL_HINT, ConversionError, PrepError, convert_to_wav, find_ffmpeg
from lgl_helpers.corpus.prep.voxceleb import (
    PrepSummary,
    failure_lines,
    plan_voxceleb,
    prepare_file,
    prepare_voxceleb,
    scan_source,
)

__all__ = [
    "INSTALL_HINT",
    "ConversionError",
    "PrepError",
    "PrepSummary",
    "convert_to_wav",
    "failure_lines",
    "find_ffmpeg",
    "plan_voxceleb",
    "prepare_file",
    "prepare_voxceleb",
    "scan_source",
]
