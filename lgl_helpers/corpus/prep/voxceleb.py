"""VoxCeleb audio in the kit's layout (docs/method.md, "Data and list formats"): ``lgl-kit prep voxceleb``.

VoxCeleb2 dev ships as ``aac/<speaker>/<video>/<nnnnn>.m4a``, VoxCeleb1 dev and test as
``wav/<speaker>/<video>/<nnnnn>.wav``. :func:`prepare_voxceleb` writes every utterance of one or more
such sources as ``<dst>/<speaker>/<video>/<nnnnn>.wav``, 16 kHz mono 16-bit PCM: m4a (and wav in any
other format) decoded by ffmpeg, wav already in that format copied as it is. Several sources are
merged into one root, which is how VoxCeleb1 dev + test become the test root of Vox1-E/H; a speaker
found in two sources is an error, since its utterances would be mixed under one folder.

Resumable: each file is written under a temp name next to its target and renamed once complete and
checked, so an existing target is a finished one, skipped on a rerun when its header says 16 kHz mono
16-bit PCM (any other file there is converted again), and a temp file left by an interrupted run is
simply overwritten. ``--dst`` may not be (or lie inside) a source's audio folder: its files would be
their own targets. One run at a time may write into a root (a lock file in it,
released by the system when a run ends in any way): two runs would share those temp names. Files are
converted in parallel, one ffmpeg process per worker thread; the order of the work does not change
any output.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import soundfile

from lgl_helpers.core.audio import SAMPLE_RATE
from lgl_helpers.corpus.prep.ffmpeg import (
    ConversionError,
    PrepError,
    convert_to_wav,
    find_ffmpeg,
    missing_ffmpeg_message,
)
from lgl_helpers.files import atomic_write_text
from lgl_helpers.progress_log import progress

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".m4a", ".wav")
SOURCE_LAYOUT = "<src>/[aac/ or wav/]<speaker>/<video>/<nnnnn>.m4a|.wav"
FAILURES_FILE = "prep_failed.txt"
LOCK_FILE = ".prep.lock"
# The naming of the kit's atomic writes (lgl_helpers.files), so remove_stale_temp_files recognises it;
# fixed rather than random, so a rerun overwrites exactly what an interrupted run left.
TEMP_TAG = "prep_tmp"
_SHOWN_FAILURES = 20


@dataclass
class PrepSummary:
    """What :func:`prepare_voxceleb` did. ``failed``: (source file, reason) pairs, in source order."""

    dst: Path
    n_speakers: int = 0
    converted: int = 0
    copied: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    failures_file: Path | None = None

    @property
    def n_files(self) -> int:
        return self.converted + self.copied + self.skipped + len(self.failed)

    def line(self) -> str:
        return (
            f"{self.n_files} files of {self.n_speakers} speaker{'s' if self.n_speakers != 1 else ''} in "
            f"{self.seconds:.1f} s: {self.converted} converted, "
            f"{self.copied} copied, {self.skipped} already done, {len(self.failed)} failed -> {self.dst}"
        )


def default_workers() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------


def _entries(folder: str | os.PathLike) -> list[os.DirEntry]:
    """Entries of ``folder`` by name, hidden ones (``.DS_Store``, ``._00001.m4a``) left out."""
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _describe(root: Path, limit: int = 5) -> str:
    """Top-level entries of ``root`` and the first audio file below it, for layout errors."""
    entries = [e.name + ("/" if e.is_dir() else "") for e in _entries(root)]
    shown = ", ".join(entries[:limit]) + (f", ... ({len(entries)} entries)" if len(entries) > limit else "")
    for folder, _, names in os.walk(root):
        audio = sorted(n for n in names if n.lower().endswith(AUDIO_SUFFIXES))
        if audio:
            example = (Path(folder) / audio[0]).relative_to(root)
            return f"found {example} (depth {len(example.parts)}); top level: [{shown}]"
    return f"found no .m4a or .wav file; top level: [{shown}]"


def audio_root(src: str | os.PathLike) -> Path:
    """The folder that holds the speaker folders: ``src/aac``, ``src/wav`` or ``src`` itself."""
    src = Path(src)
    if not src.is_dir():
        raise PrepError(f"--src {src} is not a folder; expected {SOURCE_LAYOUT}")
    inner = [src / name for name in ("aac", "wav") if (src / name).is_dir()]
    if len(inner) == 2:
        raise PrepError(f"--src {src} holds both aac/ and wav/; give the one to convert as --src")
    return inner[0] if inner else src


def scan_source(src: str | os.PathLike) -> Iterator[tuple[str, Path]]:
    """``(target, source file)`` for every utterance of one source, sorted; ``target`` is ``<spk>/<video>/<utt>.wav``.

    Only files at ``<speaker>/<video>/<utterance>`` with a suffix of :data:`AUDIO_SUFFIXES` count;
    raises :class:`PrepError` naming the expected layout and what was found when there is none.
    """
    root = audio_root(src)
    found = False
    for speaker in _entries(root):
        if not speaker.is_dir():
            continue
        for video in _entries(speaker.path):
            if not video.is_dir():
                continue
            for utterance in _entries(video.path):
                stem, suffix = os.path.splitext(utterance.name)
                if suffix.lower() in AUDIO_SUFFIXES and utterance.is_file():
                    found = True
                    yield f"{speaker.name}/{video.name}/{stem}.wav", Path(utterance.path)
    if not found:
        raise PrepError(f"--src {src}: no audio at {SOURCE_LAYOUT}; {_describe(root)}")


def plan_voxceleb(
    sources: Sequence[str | os.PathLike],
    ffmpeg_path: str | None,
    ffmpeg: str = "ffmpeg",
    dst: str | os.PathLike | None = None,
) -> tuple[list[tuple[str, Path]], int]:
    """Every utterance of all ``sources`` as ``(target, source file)``, and the number of speakers.

    Raises :class:`PrepError` when a source is given twice, ``dst`` lies inside a source's audio folder,
    a speaker is in two sources, two files
    map to one target, or an m4a file is found while ffmpeg is not installed (``ffmpeg_path`` None;
    ``ffmpeg`` is the name looked for). The last is raised at the first such file, so a VoxCeleb2
    source without ffmpeg fails at once.
    """
    resolved = [Path(src).resolve() for src in sources]
    if len(set(resolved)) < len(resolved):
        raise PrepError(f"a --src is given twice: {[str(s) for s in sources]}")
    if dst is not None:
        for src in sources:
            root = audio_root(src).resolve()
            if Path(dst).resolve().is_relative_to(root):
                raise PrepError(
                    f"--dst {dst} is inside the audio folder {root} of --src {src}: its files would be their own "
                    "targets; write to another folder"
                )
    owner: dict[str, Path] = {}
    clashes: dict[str, tuple[Path, Path]] = {}
    jobs: list[tuple[str, Path]] = []
    targets: set[str] = set()
    for src in map(Path, sources):
        for target, path in scan_source(src):
            speaker = target.split("/", 1)[0]
            first = owner.setdefault(speaker, src)
            if first != src:
                clashes.setdefault(speaker, (first, src))
                continue
            if target in targets:
                raise PrepError(f"{path}: another file of {src} also becomes {target} (an .m4a and a .wav?)")
            if ffmpeg_path is None and path.suffix.lower() != ".wav":
                raise PrepError(missing_ffmpeg_message(ffmpeg, f"decoding {path}"))
            targets.add(target)
            jobs.append((target, path))
    if clashes:
        names = sorted(clashes)
        first, second = clashes[names[0]]
        shown = ", ".join(names[:5]) + (f", ... ({len(names)} speakers)" if len(names) > 5 else "")
        raise PrepError(
            f"speaker {shown} is in more than one --src (e.g. {first} and {second}); merged sources must hold "
            "disjoint speakers, as VoxCeleb1 dev and test do"
        )
    return jobs, len(owner)


# ----------------------------------------------------------------------------------------------
# One file
# ----------------------------------------------------------------------------------------------


def _is_kit_wav(path: Path) -> bool:
    """Whether ``path`` is already 16 kHz mono 16-bit PCM wav (then it is copied, not decoded)."""
    try:
        info = soundfile.info(str(path))
    except Exception:  # unreadable headers go to ffmpeg, which reports why
        return False
    return (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", SAMPLE_RATE, 1)


def _check_output(path: Path) -> None:
    try:
        info = soundfile.info(str(path))
    except Exception as error:
        raise ConversionError(f"the written wav is unreadable ({error})") from error
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        raise ConversionError(f"the written wav is {info.samplerate} Hz with {info.channels} channels")
    if info.frames < 1:
        raise ConversionError("decoded to no audio")


def prepare_file(source: Path, target: Path, ffmpeg: str | None) -> str:
    """Write ``target`` from ``source`` through a temp file; returns ``"converted"``, ``"copied"`` or ``"skipped"``.

    Raises :class:`ConversionError` (or OSError) with the reason; the temp file is then removed.
    """
    if target.exists():
        if target.resolve() == source.resolve():
            raise ConversionError("is its own target: --dst must not be a source's audio folder")
        if _is_kit_wav(target):
            return "skipped"
        log.info("%s: exists but is not 16 kHz mono 16-bit PCM wav; converting it again", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{TEMP_TAG}.tmp")
    try:
        if source.suffix.lower() == ".wav" and _is_kit_wav(source):
            shutil.copyfile(source, temp)
            status = "copied"
        elif ffmpeg is None:
            raise ConversionError(missing_ffmpeg_message("ffmpeg", "a wav that is not 16 kHz mono 16-bit"))
        else:
            convert_to_wav(ffmpeg, source, temp)
            status = "converted"
        _check_output(temp)
        descriptor = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # the rename must never publish a file whose data is still in flight
        finally:
            os.close(descriptor)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return status


# ----------------------------------------------------------------------------------------------
# The whole corpus
# ----------------------------------------------------------------------------------------------


@contextmanager
def _exclusive(dst: Path):
    """Hold the lock of ``dst`` (created) for the duration; :class:`PrepError` when another run holds it."""
    dst.mkdir(parents=True, exist_ok=True)
    with open(dst / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise PrepError(
                f"another lgl-kit prep is writing into {dst}; wait for it to end (a rerun then resumes its work)"
            ) from error
        yield


def _run_job(dst: Path, ffmpeg: str | None, job: tuple[str, Path]) -> tuple[str, str, str]:
    target, source = job
    try:
        return prepare_file(source, dst / target, ffmpeg), str(source), ""
    except (ConversionError, OSError) as error:
        return "failed", str(source), str(error)


def prepare_voxceleb(
    sources: Sequence[str | os.PathLike],
    dst: str | os.PathLike,
    workers: int | None = None,
    ffmpeg: str = "ffmpeg",
    show_progress: bool = True,
) -> PrepSummary:
    """Convert and merge VoxCeleb ``sources`` into ``dst`` (module docstring); returns the :class:`PrepSummary`.

    ``workers``: files converted at once (default: every usable core). ``ffmpeg``: executable name or
    path. Raises :class:`PrepError` before writing anything when the sources are unusable or m4a files
    are found without ffmpeg. Files that fail are listed in the summary and, all of them, in
    ``<dst>/prep_failed.txt``; a later run without failures removes that file.
    """
    if not sources:
        raise PrepError("no --src given")
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise PrepError(f"--workers={workers} must be at least 1")
    dst = Path(dst)
    started = time.perf_counter()
    ffmpeg_path = find_ffmpeg(ffmpeg)
    if ffmpeg_path is None and ffmpeg != "ffmpeg":
        raise PrepError(f"--ffmpeg {ffmpeg} is not an executable file")
    jobs, n_speakers = plan_voxceleb(sources, ffmpeg_path, ffmpeg, dst)
    with _exclusive(dst):
        summary = _convert_all(jobs, dst, ffmpeg_path, workers, show_progress)
    summary.n_speakers = n_speakers
    summary.seconds = time.perf_counter() - started
    return summary


def _convert_all(
    jobs: Sequence[tuple[str, Path]], dst: Path, ffmpeg_path: str | None, workers: int, show_progress: bool
) -> PrepSummary:
    """Run every job on ``workers`` threads; the summary's counts and failures, the latter also in ``FAILURES_FILE``."""
    summary = PrepSummary(dst=dst)
    failed: list[tuple[int, str, str]] = []
    bar = progress(total=len(jobs), unit="file", desc="prep voxceleb", **({} if show_progress else {"disable": True}))
    pool = ThreadPoolExecutor(max_workers=workers)
    pending: dict[Future, int] = {}

    def collect(done) -> None:
        for future in done:
            index = pending.pop(future)
            status, source, reason = future.result()
            if status == "failed":
                failed.append((index, source, reason))
            else:
                setattr(summary, status, getattr(summary, status) + 1)
            bar.update(1)

    try:
        # A bounded window of submitted jobs, so a million-file corpus never holds a million futures.
        for index, job in enumerate(jobs):
            pending[pool.submit(_run_job, dst, ffmpeg_path, job)] = index
            if len(pending) >= 4 * workers:
                collect(wait(pending, return_when=FIRST_COMPLETED).done)
        while pending:
            collect(wait(pending, return_when=FIRST_COMPLETED).done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    summary.failed = [(source, reason) for _, source, reason in sorted(failed)]
    failures = dst / FAILURES_FILE
    if summary.failed:
        atomic_write_text(failures, "".join(f"{source}\t{reason}\n" for source, reason in summary.failed))
        summary.failures_file = failures
    else:
        failures.unlink(missing_ok=True)
    return summary


def failure_lines(summary: PrepSummary) -> list[str]:
    """The failed files with their reasons for a terminal: the first few, then where the full list is."""
    lines = [f"  {source}: {reason}" for source, reason in summary.failed[:_SHOWN_FAILURES]]
    if len(summary.failed) > _SHOWN_FAILURES:
        lines.append(f"  ... {len(summary.failed) - _SHOWN_FAILURES} more, all in {summary.failures_file}")
    return lines
