"""Generation of the whole toy corpus: one job per file group, in parallel, staged and moved into place."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile

from lgl_helpers.corpus.lists import TrainEntry, write_train_list, write_trials
from lgl_helpers.corpus.toy.channel import make_rir, make_session
from lgl_helpers.corpus.toy.config import ToyConfig
from lgl_helpers.corpus.toy.dsp import SAMPLE_RATE
from lgl_helpers.corpus.toy.layout import (
    HARD_TRIALS,
    MANIFEST,
    MUSAN_CATEGORIES,
    MUSAN_SUBSETS,
    ROOM_RT60,
    ROOM_TYPES,
    SPLIT_CODES,
    generator,
    speaker_id,
    toy_paths,
    utterance_path,
)
from lgl_helpers.corpus.toy.sources import synthesize_music, synthesize_noise
from lgl_helpers.corpus.toy.trials import make_hard_trials, make_trials
from lgl_helpers.corpus.toy.voices import speaker_traits, synthesize_speech
from lgl_helpers.files import write_json
from lgl_helpers.progress_log import progress

log = logging.getLogger(__name__)


def _speech_files(config: ToyConfig, split: str) -> list[tuple[int, int, int]]:
    return [
        (s, u, k)
        for s in range(config.n_speakers(split))
        for u in range(config.sessions_per_speaker)
        for k in range(config.utterances_per_session)
    ]


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
        channel = make_session(
            generator(config.seed, "channel", SPLIT_CODES[split], speaker, session), config.channel_strength
        )
        rng = generator(config.seed, "utterance", SPLIT_CODES[split], speaker, session, utterance)
        wave = synthesize_speech(rng, traits, channel, _duration_samples(rng, config))
        rel = utterance_path(config, split, speaker, session, utterance)
        # Validation files live in test/ beside the test files, as VoxCeleb1 holds the files of all its lists.
        _write(root / ("train" if split == "train" else "test") / rel, wave)
        return [(kind, split, rel, len(wave))]
    if kind == "musan":
        category, subset, recording = args
        starts = _musan_chunk_starts(config)
        chunk = int(round(config.musan_chunk_seconds * SAMPLE_RATE))
        n_samples = starts[-1] * SAMPLE_RATE + chunk
        rng = generator(config.seed, "musan", category, subset, recording)
        if category == "speech":  # one talker per recording; the augmentation mixes several into babble
            babble_index = subset * config.musan_recordings + recording
            wave = synthesize_speech(
                rng,
                speaker_traits(config.seed, "babble", babble_index),
                make_session(rng, config.channel_strength),
                n_samples,
            )
        elif category == "music":
            wave = synthesize_music(rng, n_samples)
        else:
            wave = synthesize_noise(rng, n_samples)
        subset_name = MUSAN_SUBSETS[category][subset]
        folder = f"musan_split/{category}/{subset_name}/{category}-{subset_name}-{recording:04d}"
        out = []
        for start in starts:
            rel = f"{folder}/{start:05d}.wav"
            piece = wave[start * SAMPLE_RATE : start * SAMPLE_RATE + chunk]
            _write(root / rel, piece)
            out.append((kind, category, rel, len(piece)))
        return out
    room_type, room = args
    rng = generator(config.seed, "rir", room_type, room)
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
    for split in ("train", "test", "val"):
        for speaker, session, utterance in _speech_files(config, split):
            jobs.append((str(root), config_dict, "utterance", (split, speaker, session, utterance)))
    for room_type in range(len(ROOM_TYPES)):
        for room in range(config.rir_rooms):
            jobs.append((str(root), config_dict, "rir", (room_type, room)))
    return jobs


def generate_toy_corpus(
    out_dir: str | os.PathLike,
    config: ToyConfig | None = None,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict:
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
        raise FileExistsError(
            f"{out_dir}: already exists and is not empty; pass overwrite=True (--force) to replace it"
        )
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
                results = list(progress(pool.map(_run_job, jobs, chunksize=max(1, len(jobs) // (8 * workers))), **bar))
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
    log.info(
        "toy corpus: %d train utterances, %d test files, %d trials in %.1f s -> %s",
        summary["n_train_utterances"],
        summary["n_test_files"],
        summary["n_trials"],
        seconds,
        out_dir,
    )
    paths = {key: str(value) for key, value in toy_paths(out_dir).items()}
    return {"root": str(out_dir), **paths, **summary, "seconds": seconds}


def _write_lists_and_manifest(root: Path, config: ToyConfig, records: list[tuple]) -> dict:
    train = sorted((r for r in records if r[0] == "utterance" and r[1] == "train"), key=lambda r: r[2])
    entries = [TrainEntry(rel.split("/")[0], rel, frames / SAMPLE_RATE) for _, _, rel, frames in train]
    write_train_list(root / "lists" / "train_list.txt", entries)

    def split_files(split: str) -> list[tuple[str, str, str]]:
        rels = sorted(r[2] for r in records if r[0] == "utterance" and r[1] == split)
        return [(rel.split("/")[0], rel.split("/")[1], rel) for rel in rels]

    test_files = split_files("test")
    trials = make_trials(config, test_files)
    write_trials(root / "lists" / "trials.txt", trials)
    female = {
        speaker_id("test", k): speaker_traits(config.seed, "test", k).female for k in range(config.n_test_speakers)
    }
    hard_trials = make_hard_trials(config, test_files, female)
    if hard_trials:
        write_trials(root / "lists" / HARD_TRIALS, hard_trials)
    val_files = split_files("val")
    val_trials = make_trials(config, val_files, "val") if val_files else []
    if val_trials:
        write_trials(root / "lists" / "val_trials.txt", val_trials)
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
        "n_hard_trials": len(hard_trials),
        "n_hard_target": sum(t.label for t in hard_trials),
        "n_val_speakers": len({f[0] for f in val_files}),
        "n_val_files": len(val_files),
        "n_val_trials": len(val_trials),
        "n_val_target": sum(t.label for t in val_trials),
        "musan_chunks": {c: sum(1 for r in records if r[0] == "musan" and r[1] == c) for c in MUSAN_CATEGORIES},
        "n_rirs": sum(1 for r in records if r[0] == "rir"),
    }
    write_json(root / MANIFEST, {"generator": "lgl_helpers.corpus.toy", "config": config, "summary": summary})
    return summary
