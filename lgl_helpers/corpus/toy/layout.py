"""Seeding, names and the on-disk layout of the toy corpus (VoxCeleb, MUSAN and RIRS_NOISES folders)."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lgl_helpers.corpus.toy.config import ToyConfig

MANIFEST = "toy_corpus.json"
MUSAN_CATEGORIES = ("noise", "speech", "music")
MUSAN_SUBSETS = {
    "noise": ("free-sound", "sound-bible"),
    "speech": ("librivox", "us-gov"),
    "music": ("fma", "jamendo"),
}
ROOM_TYPES = ("smallroom", "mediumroom", "largeroom")
ROOM_RT60 = {"smallroom": (0.15, 0.35), "mediumroom": (0.3, 0.6), "largeroom": (0.5, 0.9)}
SPLIT_CODES = {"train": 0, "test": 1, "babble": 2, "val": 3}
HARD_TRIALS = "trials_hard.txt"  # lists/: the VoxCeleb1-H-like test list (corpus/toy/trials.py)
VAL_ID_OFFSET = 15000  # validation speakers id15001..., beside the test speakers id10001... in test/


def _key(value) -> int:
    if isinstance(value, str):
        return zlib.crc32(value.encode())  # stable across processes, unlike hash()
    return int(value)


def generator(seed: int, *keys) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys``: the basis of order independence."""
    return np.random.default_rng(np.random.SeedSequence([seed, *(_key(k) for k in keys)]))


_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def speaker_id(split: str, index: int) -> str:
    """``id00001``... for training, ``id10001``... for test, ``id15001``... for validation (VoxCeleb2 / VoxCeleb1 style)."""
    offset = {"train": 0, "test": 10000, "val": VAL_ID_OFFSET}[split]
    return f"id{offset + index + 1:05d}"


def session_id(seed: int, split: str, speaker: int, session: int) -> str:
    """An 11-character YouTube-like video id, fixed by the seed."""
    rng = generator(seed, "session-name", SPLIT_CODES[split], speaker, session)
    return "".join(_ID_ALPHABET[i] for i in rng.integers(0, len(_ID_ALPHABET), 11))


def utterance_path(config: ToyConfig, split: str, speaker: int, session: int, utterance: int) -> str:
    """Path of one utterance relative to its split root, e.g. ``id00001/aB3dE5fG7hI/00001.wav``."""
    return f"{speaker_id(split, speaker)}/{session_id(config.seed, split, speaker, session)}/{utterance + 1:05d}.wav"


def toy_eval_trials(root: str | os.PathLike) -> dict[str, Path]:
    """The corpus's test lists for ``eval_trials``: ``toy-O`` (``trials.txt``) and, when written,
    ``toy-H`` (:data:`HARD_TRIALS`: cross-session targets, same-sex non-targets). None for a folder
    that is laid out like the toy corpus but is not one (no manifest, which the generator writes last):
    its lists must not be reported under the toy corpus's names."""
    if not is_toy_corpus(root):
        return {}
    lists = Path(root).resolve() / "lists"
    out = {"toy-O": lists / "trials.txt", "toy-H": lists / HARD_TRIALS}
    return {name: path for name, path in out.items() if path.is_file()}


def toy_paths(root: str | os.PathLike) -> dict[str, Path]:
    """The data locations inside a toy corpus, keyed like ``runs.DATA_KEYS``.

    ``val_trials`` is the validation list (speakers disjoint from the test list's) when the corpus
    has one, else the test list.
    """
    root = Path(root).resolve()
    val_trials = root / "lists" / "val_trials.txt"
    return {
        "train_root": root / "train",
        "train_list": root / "lists" / "train_list.txt",
        "test_root": root / "test",
        "trials": root / "lists" / "trials.txt",
        "val_trials": val_trials if val_trials.is_file() else root / "lists" / "trials.txt",
        "musan_root": root / "musan_split",
        "rir_root": root / "rirs",
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
