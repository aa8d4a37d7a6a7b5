"""``lgl-kit prep voxceleb``: layout, output format, merging, resuming, and the errors a user meets (no ffmpeg, bad files)."""

import fcntl
import shutil
import subprocess

import numpy as np
import pytest
import soundfile

from lgl_helpers.app import cli
from lgl_helpers.core.audio import check_wav, read_wav, write_wav
from lgl_helpers.corpus.prep import PrepError, prepare_voxceleb
from lgl_helpers.corpus.prep.voxceleb import FAILURES_FILE, LOCK_FILE, TEMP_TAG

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None,
    reason="ffmpeg is not installed, so no m4a can be encoded or decoded "
    "(apt-get install ffmpeg, or conda install -c conda-forge ffmpeg)",
)


def _speech_like(seconds, sample_rate=16000, channels=1, seed=0):
    """(T,) or (T, channels) float audio: a few harmonics plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = sum(0.2 / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 5)) + 0.01 * rng.standard_normal(t.size)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def _write_m4a(path, seconds, sample_rate=16000, channels=1, seed=0):
    """Encode a generated signal to AAC in an m4a container, as VoxCeleb2 ships its audio."""
    path.parent.mkdir(parents=True, exist_ok=True)
    source = path.with_suffix(".src.wav")
    soundfile.write(source, _speech_like(seconds, sample_rate, channels, seed), sample_rate, subtype="PCM_16")
    subprocess.run(
        [FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-c:a", "aac", "-b:a", "64k", str(path)],
        check=True,
    )
    source.unlink()
    return path


def _vox1_like(root, speakers=("id10001", "id10002"), seconds=1.0):
    """``root/wav/<speaker>/<video>/<nnnnn>.wav`` at 16 kHz mono 16-bit, two utterances per speaker."""
    paths = []
    for s, speaker in enumerate(speakers):
        for u in range(2):
            path = root / "wav" / speaker / f"vid{s}" / f"{u + 1:05d}.wav"
            write_wav(path, _speech_like(seconds, seed=10 * s + u))
            paths.append(path)
    return paths


def _outputs(dst):
    return sorted(str(p.relative_to(dst)) for p in dst.rglob("*.wav"))


@pytest.fixture(scope="module")
def vox2_src(tmp_path_factory):
    """VoxCeleb2 dev as distributed: ``aac/<speaker>/<video>/<nnnnn>.m4a`` (one file 44.1 kHz stereo)."""
    if FFMPEG is None:
        pytest.skip(needs_ffmpeg.kwargs["reason"])
    root = tmp_path_factory.mktemp("vox2") / "dev"
    _write_m4a(root / "aac" / "id00012" / "21Uxsk56VDQ" / "00001.m4a", 1.5, seed=1)
    _write_m4a(root / "aac" / "id00012" / "21Uxsk56VDQ" / "00002.m4a", 1.0, seed=2)
    _write_m4a(root / "aac" / "id00015" / "0fijmz4vTVU" / "00001.m4a", 2.0, sample_rate=44100, channels=2, seed=3)
    return root


# --- conversion -------------------------------------------------------------------------------


@needs_ffmpeg
def test_m4a_become_16k_mono_16bit_wav_in_the_kit_layout(vox2_src, tmp_path):
    dst = tmp_path / "vox2_wav"
    summary = prepare_voxceleb([vox2_src], dst, workers=2, show_progress=False)
    assert (summary.converted, summary.copied, summary.skipped, summary.failed) == (3, 0, 0, [])
    assert summary.n_speakers == 2
    assert _outputs(dst) == [
        "id00012/21Uxsk56VDQ/00001.wav",
        "id00012/21Uxsk56VDQ/00002.wav",
        "id00015/0fijmz4vTVU/00001.wav",
    ]
    for relative, seconds in zip(_outputs(dst), (1.5, 1.0, 2.0)):
        info = soundfile.info(dst / relative)
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", 16000, 1)
        assert abs(info.duration - seconds) < 0.05  # AAC priming is trimmed by the container's edit list
        assert check_wav(dst / relative).frames == info.frames
    # the decoded audio is the encoded signal (AAC at 64 kbit/s is close to, not equal to, the input)
    decoded = read_wav(dst / "id00012/21Uxsk56VDQ/00001.wav").astype(np.float64)
    original = _speech_like(1.5, seed=1)
    assert np.corrcoef(decoded[: len(original)], original[: len(decoded)])[0, 1] > 0.95
    again = prepare_voxceleb([vox2_src / "aac"], dst, workers=2, show_progress=False)  # the aac/ folder itself
    assert (again.converted, again.skipped) == (0, 3)


def test_vox1_wav_copied_as_is_from_speaker_folders(tmp_path):
    sources = _vox1_like(tmp_path / "vox1")
    dst = tmp_path / "out"
    summary = prepare_voxceleb([tmp_path / "vox1" / "wav"], dst, workers=2, show_progress=False)
    assert (summary.converted, summary.copied, summary.failed) == (0, 4, [])
    for source in sources:
        target = dst / source.relative_to(tmp_path / "vox1" / "wav")
        assert target.read_bytes() == source.read_bytes()


@needs_ffmpeg
def test_wav_in_another_format_is_reencoded(tmp_path):
    source = tmp_path / "src" / "id10001" / "vid" / "00001.wav"
    source.parent.mkdir(parents=True)
    soundfile.write(source, _speech_like(1.0, 44100, channels=2), 44100, subtype="FLOAT")
    summary = prepare_voxceleb([tmp_path / "src"], tmp_path / "out", workers=1, show_progress=False)
    assert (summary.converted, summary.copied) == (1, 0)
    info = soundfile.info(tmp_path / "out" / "id10001" / "vid" / "00001.wav")
    assert (info.subtype, info.samplerate, info.channels) == ("PCM_16", 16000, 1)
    assert abs(info.duration - 1.0) < 0.01


# --- resuming ---------------------------------------------------------------------------------


def test_rerun_skips_finished_files_and_redoes_an_interrupted_one(tmp_path):
    _vox1_like(tmp_path / "vox1")
    dst = tmp_path / "out"
    prepare_voxceleb([tmp_path / "vox1"], dst, workers=2, show_progress=False)
    finished = {p: p.stat().st_mtime_ns for p in dst.rglob("*.wav")}
    # an interrupted run: the target is missing and a half-written temp file sits next to it
    target = dst / "id10002" / "vid1" / "00002.wav"
    target.unlink()
    temp = target.with_name(f".{target.name}.{TEMP_TAG}.tmp")
    temp.write_bytes(b"RIFF\x00\x00")
    summary = prepare_voxceleb([tmp_path / "vox1"], dst, workers=2, show_progress=False)
    assert (summary.copied, summary.skipped, summary.failed) == (1, 3, [])
    assert not temp.exists() and check_wav(target).frames == 16000
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in finished.items() if p != target)
    assert not list(dst.rglob("*.tmp"))


def test_one_run_at_a_time_per_destination(tmp_path):
    _vox1_like(tmp_path / "vox1", speakers=("id10001",))
    dst = tmp_path / "out"
    dst.mkdir()
    with open(dst / LOCK_FILE, "a") as other_run:
        fcntl.flock(other_run, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(PrepError, match=f"another lgl-kit prep is writing into {dst}"):
            prepare_voxceleb([tmp_path / "vox1"], dst, show_progress=False)
    assert _outputs(dst) == []
    assert prepare_voxceleb([tmp_path / "vox1"], dst, show_progress=False).copied == 2  # released: it runs


# --- errors -----------------------------------------------------------------------------------


def test_missing_ffmpeg_fails_at_once_with_how_to_install(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "vox2" / "aac" / "id00012" / "21Uxsk56VDQ" / "00001.m4a"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"never decoded")
    (tmp_path / "no_tools").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "no_tools"))
    message = r"ffmpeg was not found.*00001\.m4a.*apt-get install ffmpeg.*conda install -c conda-forge ffmpeg"
    with pytest.raises(PrepError, match=message):
        prepare_voxceleb([tmp_path / "vox2"], tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()
    assert cli.main(["prep", "voxceleb", "--src", str(tmp_path / "vox2"), "--dst", str(tmp_path / "out")]) == 1
    assert "lgl-kit prep: error: ffmpeg was not found" in capsys.readouterr().err
    with pytest.raises(PrepError, match=r"--ffmpeg /opt/none/ffmpeg is not an executable file"):
        prepare_voxceleb([tmp_path / "vox2"], tmp_path / "out", ffmpeg="/opt/none/ffmpeg", show_progress=False)
    # VoxCeleb1's wav need no decoder; a wav in another format is reported with the same hint
    _vox1_like(tmp_path / "vox1", speakers=("id10001",))
    odd = tmp_path / "vox1" / "wav" / "id10001" / "vid0" / "00003.wav"
    soundfile.write(odd, _speech_like(0.6, 8000), 8000, subtype="PCM_16")
    summary = prepare_voxceleb([tmp_path / "vox1"], tmp_path / "out1", show_progress=False)
    assert summary.copied == 2 and [s for s, _ in summary.failed] == [str(odd)]
    assert "apt-get install ffmpeg" in summary.failed[0][1]


@needs_ffmpeg
def test_corrupt_input_is_reported_by_name_and_redone_once_fixed(vox2_src, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(vox2_src, src)
    corrupt = src / "aac" / "id00012" / "21Uxsk56VDQ" / "00002.m4a"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(range(256)) * 4)  # a truncated, garbled download
    dst = tmp_path / "out"
    assert cli.main(["prep", "voxceleb", "--src", str(src), "--dst", str(dst), "--workers", "2"]) == 1
    captured = capsys.readouterr()
    assert "2 converted" in captured.out and "1 failed" in captured.out
    assert f"{corrupt}: ffmpeg exit status" in captured.err
    assert (dst / FAILURES_FILE).read_text().startswith(f"{corrupt}\tffmpeg exit status")
    assert not (dst / "id00012" / "21Uxsk56VDQ" / "00002.wav").exists() and not list(dst.rglob("*.tmp"))
    shutil.copyfile(vox2_src / "aac" / "id00012" / "21Uxsk56VDQ" / "00002.m4a", corrupt)  # downloaded again
    summary = prepare_voxceleb([src], dst, workers=2, show_progress=False)
    assert (summary.converted, summary.skipped, summary.failed) == (1, 2, [])
    assert not (dst / FAILURES_FILE).exists()


def test_merge_of_vox1_dev_and_test_and_a_speaker_in_both(tmp_path, capsys):
    _vox1_like(tmp_path / "dev", speakers=("id10001", "id10002"))
    _vox1_like(tmp_path / "test", speakers=("id10270",))
    dst = tmp_path / "vox1_all"
    argv = ["prep", "voxceleb", "--src", str(tmp_path / "dev"), "--src", str(tmp_path / "test"), "--dst", str(dst)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "6 files of 3 speakers" in out and f"lists build --root {dst}" in out
    assert {p.split("/")[0] for p in _outputs(dst)} == {"id10001", "id10002", "id10270"}
    _vox1_like(tmp_path / "other", speakers=("id10002", "id10300"))
    with pytest.raises(PrepError, match=r"speaker id10002 is in more than one --src \(e\.g\. .*dev and .*other\)"):
        prepare_voxceleb([tmp_path / "dev", tmp_path / "other"], tmp_path / "x", show_progress=False)
    with pytest.raises(PrepError, match="a --src is given twice"):
        prepare_voxceleb([tmp_path / "dev", tmp_path / "dev" / ".." / "dev"], tmp_path / "x", show_progress=False)
    assert not (tmp_path / "x").exists()


def test_wrong_source_layouts_name_expected_and_found(tmp_path):
    deep = tmp_path / "voxceleb2" / "dev" / "aac" / "id00012" / "21Uxsk56VDQ" / "00001.m4a"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b"x")
    expected = r"no audio at <src>/\[aac/ or wav/\]<speaker>/<video>/<nnnnn>\.m4a\|\.wav; found dev/aac/.*\(depth 5\)"
    with pytest.raises(PrepError, match=expected):
        prepare_voxceleb([tmp_path / "voxceleb2"], tmp_path / "out", show_progress=False)
    (tmp_path / "both" / "aac").mkdir(parents=True)
    (tmp_path / "both" / "wav").mkdir()
    with pytest.raises(PrepError, match="holds both aac/ and wav/"):
        prepare_voxceleb([tmp_path / "both"], tmp_path / "out", show_progress=False)
    with pytest.raises(PrepError, match="is not a folder"):
        prepare_voxceleb([tmp_path / "nowhere"], tmp_path / "out", show_progress=False)


@pytest.mark.parametrize("argv", [["prep", "--help"], ["prep", "voxceleb", "--help"]])
def test_prep_commands_have_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    assert "usage: lgl-kit prep" in capsys.readouterr().out


# --- a decoder that carries on, and targets that are not what they seem ----------------------------------


@needs_ffmpeg
def test_truncated_m4a_is_refused_not_shortened(tmp_path, capsys):
    # ffmpeg decodes the first 15 kB of a +faststart m4a to 1.6 s of its 3.5 s, logs the errors and exits 0.
    source = tmp_path / "src" / "aac" / "id00001" / "vid" / "00001.m4a"
    source.parent.mkdir(parents=True)
    signal = tmp_path / "signal.wav"
    soundfile.write(signal, _speech_like(3.52, seed=4), 16000, subtype="PCM_16")
    full = tmp_path / "full.m4a"
    encode = [FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-i", str(signal), "-c:a", "aac", "-b:a", "64k"]
    subprocess.run([*encode, "-movflags", "+faststart", str(full)], check=True)
    source.write_bytes(full.read_bytes()[:15000])
    status = cli.main(["prep", "voxceleb", "--src", str(tmp_path / "src"), "--dst", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 1 and f"{source}: ffmpeg exit status 1: " in err and "(a truncated or corrupt file?)" in err
    assert _outputs(tmp_path / "out") == []  # nothing shorter published, no temp file left
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix == ".tmp"]


def test_dst_inside_a_source_audio_folder_is_refused(tmp_path):
    _vox1_like(tmp_path / "vox1")
    with pytest.raises(PrepError, match=r"--dst .* is inside the audio folder .* of --src"):
        prepare_voxceleb([tmp_path / "vox1"], tmp_path / "vox1" / "wav", workers=1, show_progress=False)


def test_an_existing_target_of_the_wrong_format_is_redone_not_counted_done(tmp_path):
    sources = _vox1_like(tmp_path / "vox1")
    dst = tmp_path / "out"
    target = dst / sources[0].relative_to(tmp_path / "vox1" / "wav")
    target.parent.mkdir(parents=True)
    soundfile.write(target, _speech_like(1.0, 192000), 192000, subtype="PCM_16")  # a stray 192 kHz file
    summary = prepare_voxceleb([tmp_path / "vox1"], dst, workers=1, show_progress=False)
    assert (summary.copied, summary.skipped, summary.failed) == (4, 0, [])
    assert target.read_bytes() == sources[0].read_bytes()
    again = prepare_voxceleb([tmp_path / "vox1"], dst, workers=1, show_progress=False)
    assert (again.copied, again.skipped) == (0, 4)


def test_a_decoder_that_logs_an_error_and_exits_0_is_not_trusted(tmp_path):
    # What ffmpeg without -xerror does with a truncated file: the rest decoded, the error logged, exit 0.
    source = tmp_path / "src" / "id10001" / "vid" / "00001.wav"
    source.parent.mkdir(parents=True)
    soundfile.write(source, _speech_like(1.0), 16000, subtype="FLOAT")  # not the kit's format: decoded
    decoder = tmp_path / "ffmpeg"
    decoder.write_text(
        f"#!/bin/sh\ncp {source} \"$(eval echo \\${{$#}})\"\necho 'Invalid data found when processing input' >&2\n"
    )
    decoder.chmod(0o755)
    summary = prepare_voxceleb(
        [tmp_path / "src"], tmp_path / "out", workers=1, ffmpeg=str(decoder), show_progress=False
    )
    assert summary.failed == [
        (
            str(source),
            "ffmpeg logged a decoding error: Invalid data found when processing input (a truncated or corrupt file?)",
        )
    ]
    assert _outputs(tmp_path / "out") == []
