"""The toy corpus: layout, sizes, trials, determinism, speaker vs session information, CLI."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from lgl_helpers.app import cli
from lgl_helpers.corpus import toy
from lgl_helpers.corpus.lists import read_train_list, read_trials
from lgl_helpers.corpus.toy import ToyConfig, generate_toy_corpus, speaker_traits, writer

LAYOUT = [
    re.compile(r"train/id0\d{4}/[A-Za-z0-9]{11}/\d{5}\.wav"),
    re.compile(r"test/id1\d{4}/[A-Za-z0-9]{11}/\d{5}\.wav"),
    re.compile(r"musan_split/(noise|speech|music)/[a-z-]+/(noise|speech|music)-[a-z-]+-\d{4}/\d{5}\.wav"),
    re.compile(r"rirs/simulated_rirs/(smallroom|mediumroom|largeroom)/Room\d{3}/Room\d{3}-\d{5}\.wav"),
]


def _files(root: Path) -> dict[str, str]:
    """relative path → sha256 of every file under root."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _long_term_log_spectrum(path: Path) -> np.ndarray:
    wave, _ = soundfile.read(str(path))
    frames = np.lib.stride_tricks.sliding_window_view(wave, 512)[::160] * np.hanning(512)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    loud = power.sum(axis=1) > np.median(power.sum(axis=1))  # speech frames, not pauses
    bands = np.add.reduceat(power[loud], np.geomspace(2, 256, 25).astype(int), axis=1)
    return np.log(bands.mean(axis=0) + 1e-10)


def test_layout_is_voxceleb_musan_rirs(tiny_corpus):
    wavs = [p for p in _files(tiny_corpus) if p.endswith(".wav")]
    unmatched = [p for p in wavs if not any(pattern.fullmatch(p) for pattern in LAYOUT)]
    assert not unmatched
    assert {p.split("/")[0] for p in _files(tiny_corpus)} == {
        "train",
        "test",
        "musan_split",
        "rirs",
        "lists",
        toy.MANIFEST,
    }
    # the MUSAN category is the 4th path part from the end, as the augmentation reads it
    categories = {Path(p).parts[-4] for p in wavs if p.startswith("musan_split/")}
    assert categories == {"noise", "speech", "music"}


def test_sizes_follow_the_config(tiny_corpus, tiny_config):
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    n_train = tiny_config.n_train_speakers * tiny_config.sessions_per_speaker * tiny_config.utterances_per_session
    assert len(entries) == n_train == 48
    assert len({e.speaker for e in entries}) == tiny_config.n_train_speakers
    assert len({e.path.rsplit("/", 1)[0] for e in entries}) == tiny_config.n_train_speakers * 2
    assert entries == sorted(entries, key=lambda e: e.path)
    test_files = list((tiny_corpus / "test").rglob("*.wav"))
    assert len(test_files) == tiny_config.n_test_speakers * 2 * 3
    test_speakers = {p.relative_to(tiny_corpus / "test").parts[0] for p in test_files}
    assert len(test_speakers) == tiny_config.n_test_speakers
    assert not test_speakers & {e.speaker for e in entries}
    summary = toy.read_toy_manifest(tiny_corpus)["summary"]
    assert summary["musan_chunks"] == {"noise": 4, "speech": 4, "music": 4}
    assert summary["n_rirs"] == 3 * tiny_config.rir_rooms * tiny_config.rirs_per_room == 6
    assert summary["n_train_utterances"] == 48 and summary["n_test_files"] == 24


def test_audio_is_16k_mono_pcm16_and_durations_match_the_list(tiny_corpus, tiny_config):
    for path in tiny_corpus.rglob("*.wav"):
        info = soundfile.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), path
        assert info.duration >= 0.1
    for entry in read_train_list(tiny_corpus / "lists" / "train_list.txt"):
        info = soundfile.info(str(tiny_corpus / "train" / entry.path))
        assert abs(info.duration - entry.duration) < 0.0006
        assert tiny_config.min_seconds - 1e-3 <= info.duration <= tiny_config.max_seconds + 1e-3
    chunk = soundfile.info(str(next((tiny_corpus / "musan_split" / "speech").rglob("*.wav"))))
    assert chunk.duration == pytest.approx(tiny_config.musan_chunk_seconds)
    wave, _ = soundfile.read(str(next((tiny_corpus / "train").rglob("*.wav"))))
    assert 0.005 < np.sqrt(np.mean(wave**2)) < 0.3 and np.max(np.abs(wave)) < 1.0


def test_trials_are_balanced_with_same_and_cross_session_targets(tiny_corpus, tiny_config):
    trials = read_trials(tiny_corpus / "lists" / "trials.txt")
    assert len(trials) == tiny_config.n_trials == 60
    targets = [t for t in trials if t.label == 1]
    assert len(targets) == 30
    same = [t for t in targets if t.path_a.split("/")[1] == t.path_b.split("/")[1]]
    assert len(same) == 30 // 4 and len(targets) - len(same) == 23
    assert all(t.path_a.split("/")[0] == t.path_b.split("/")[0] for t in targets)
    assert all(t.path_a.split("/")[0] != t.path_b.split("/")[0] for t in trials if t.label == 0)
    pairs = {frozenset((t.path_a, t.path_b)) for t in trials}
    assert len(pairs) == len(trials) and all(len(p) == 2 for p in pairs)
    assert all((tiny_corpus / "test" / p).is_file() for t in trials for p in (t.path_a, t.path_b))


def test_same_seed_gives_identical_bytes_with_any_number_of_workers(tiny_corpus, tiny_config, tmp_path):
    generate_toy_corpus(tmp_path / "again", tiny_config, workers=2, show_progress=False)
    assert _files(tmp_path / "again") == _files(tiny_corpus)
    generate_toy_corpus(tmp_path / "other", ToyConfig.tiny(seed=1), workers=1, show_progress=False)
    other = _files(tmp_path / "other")
    assert len(other) == len(_files(tiny_corpus))
    assert (tmp_path / "other" / "lists" / "train_list.txt").read_text() != (
        tiny_corpus / "lists" / "train_list.txt"
    ).read_text()


F0_CANDIDATES = np.geomspace(60.0, 500.0, 150)


def _median_f0(path: Path) -> float:
    """Median log f0 of the most clearly voiced half of the frames (harmonic-sum pitch estimate)."""
    wave, _ = soundfile.read(str(path))
    frames = np.lib.stride_tricks.sliding_window_view(wave, 1024)[::128] * np.hanning(1024)
    magnitude = np.abs(np.fft.rfft(frames, 4096, axis=1))
    log_magnitude = np.log(magnitude + 1e-4 * magnitude.max())
    log_magnitude -= log_magnitude.mean(axis=1, keepdims=True)
    bins = np.round(F0_CANDIDATES[:, None] * np.arange(1, 6)[None] * 4096 / 16000).astype(int)
    score = log_magnitude[:, bins].mean(axis=-1)  # (frames, candidates)
    voiced = score.max(axis=1) > np.median(score.max(axis=1))
    return float(np.median(np.log(F0_CANDIDATES[score.argmax(axis=1)][voiced])))


def test_speaker_identity_survives_a_change_of_session(tiny_corpus):
    """Pitch, which no channel changes, finds the same speaker in another session well above chance."""
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    f0 = np.array([_median_f0(tiny_corpus / "train" / e.path) for e in entries])
    sessions = np.array([e.path.rsplit("/", 1)[0] for e in entries])
    speakers = np.array([e.speaker for e in entries])
    distance = np.abs(f0[:, None] - f0[None, :])
    distance[sessions[:, None] == sessions[None, :]] = np.inf  # only other sessions may answer
    accuracy = np.mean(speakers[distance.argmin(axis=1)] == speakers)
    assert accuracy >= 2.0 / len(set(speakers.tolist()))  # twice chance (0.29 against 0.125 on the tiny corpus)
    true_f0 = np.array([np.log(speaker_traits(0, "train", int(e.speaker[2:]) - 1).f0_hz) for e in entries])
    assert np.median(np.abs(f0 - true_f0)) < np.log(2.0) / 12 * 1.5  # within 1.5 semitones of the speaker's f0


def test_sessions_differ_in_channel(tiny_corpus):
    """Utterances of one session resemble each other more than the same speaker's other sessions."""
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    features = {e.path: _long_term_log_spectrum(tiny_corpus / "train" / e.path) for e in entries}
    within, across = [], []
    for a in entries:
        for b in entries:
            if a.path < b.path and a.speaker == b.speaker:
                distance = np.linalg.norm(features[a.path] - features[b.path])
                same_session = a.path.rsplit("/", 1)[0] == b.path.rsplit("/", 1)[0]
                (within if same_session else across).append(distance)
    assert np.mean(within) < 0.7 * np.mean(across)


def test_speakers_have_distinct_traits_and_babble_talkers_are_outside_both_splits():
    train = [speaker_traits(0, "train", i).vector() for i in range(40)]
    test = [speaker_traits(0, "test", i).vector() for i in range(20)]
    babble = [speaker_traits(0, "babble", i).vector() for i in range(6)]
    vectors = np.stack(train + test + babble)
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    assert np.min(distances[np.triu_indices(len(vectors), 1)]) > 1.0
    np.testing.assert_array_equal(speaker_traits(0, "train", 3).vector(), train[3])  # stable per seed


def test_refuses_a_non_empty_output_and_force_replaces_it(tmp_path):
    out = tmp_path / "toy"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    config = ToyConfig.tiny(n_train_speakers=2, n_test_speakers=2, n_trials=8)
    with pytest.raises(FileExistsError, match="not empty"):
        generate_toy_corpus(out, config, workers=1, show_progress=False)
    assert (out / "keep.txt").read_text() == "user data"
    summary = generate_toy_corpus(out, config, workers=1, overwrite=True, show_progress=False)
    assert not (out / "keep.txt").exists() and summary["n_train_speakers"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]  # no staging or old folders left


def test_an_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []

    def failing_job(job):
        calls.append(job)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        return original(job)

    original = writer._run_job
    monkeypatch.setattr(writer, "_run_job", failing_job)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_toy_corpus(tmp_path / "toy", ToyConfig.tiny(), workers=1, show_progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_trials=10_000), "n_trials=10000"),
        (dict(sessions_per_speaker=1), "sessions_per_speaker"),
        (dict(min_seconds=3.0, max_seconds=2.0), "min_seconds"),
        (dict(min_seconds=0.2), "min_seconds"),
        (dict(n_train_speakers=0), "n_train_speakers"),
        (dict(seed=-1), "seed"),
        (dict(n_val_speakers=1), "n_val_speakers=1"),
        (dict(n_val_speakers=2, n_val_trials=10_000), "n_val_trials=10000"),
        (dict(n_trials=-1), "n_trials=-1"),
    ],
)
def test_config_errors_name_the_parameter(overrides, message):
    with pytest.raises(ValueError, match=message):
        ToyConfig.tiny(**overrides)


def test_validation_split_is_disjoint_and_all_pairs_cover_every_pair(tmp_path):
    config = ToyConfig.tiny(n_train_speakers=2, n_test_speakers=3, n_trials=0, n_val_speakers=2)
    generate_toy_corpus(tmp_path / "toy", config, workers=1, show_progress=False)
    paths = toy.toy_paths(tmp_path / "toy")
    assert paths["val_trials"].name == "val_trials.txt"
    test, val = read_trials(paths["trials"]), read_trials(paths["val_trials"])
    test_files = {p for t in test for p in (t.path_a, t.path_b)}
    val_files = {p for t in val for p in (t.path_a, t.path_b)}
    assert {p.split("/")[0] for p in val_files} == {"id15001", "id15002"}
    assert not {p.split("/")[0] for p in test_files} & {p.split("/")[0] for p in val_files}
    assert all((tmp_path / "toy" / "test" / p).is_file() for p in val_files)
    per_split = config.sessions_per_speaker * config.utterances_per_session
    for trials, n_speakers in ((test, 3), (val, 2)):
        n_files = n_speakers * per_split
        assert len(trials) == len({(t.path_a, t.path_b) for t in trials}) == n_files * (n_files - 1) // 2
        assert sum(t.label for t in trials) == n_speakers * per_split * (per_split - 1) // 2
    # Without validation speakers the validation list is the test list.
    assert ToyConfig.tiny().n_val_speakers == 0


def test_presets():
    assert ToyConfig.preset("default") == ToyConfig()
    assert ToyConfig.preset("tiny", seed=3) == ToyConfig.tiny(seed=3)
    with pytest.raises(ValueError, match="unknown toy preset 'huge'"):
        ToyConfig.preset("huge")


def test_cli_toy_writes_a_corpus_and_reports_counts(tmp_path, capsys):
    out = tmp_path / "cli_toy"
    status = cli.main(
        ["toy", str(out), "--preset", "tiny", "--n-train-speakers", "3", "--n-trials", "20", "--workers", "1"]
    )
    assert status == 0
    assert "n_train_utterances: 18" in capsys.readouterr().out
    manifest = json.loads((out / toy.MANIFEST).read_text())
    assert manifest["config"]["n_train_speakers"] == 3 and manifest["config"]["min_seconds"] == 1.0
    assert cli.main(["toy", str(out), "--preset", "tiny"]) == 1
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["toy", "--help"],
        ["lists", "--help"],
        ["lists", "build", "--help"],
        ["lists", "subset", "--help"],
        ["lists", "check", "--help"],
        ["lists", "fetch-voxceleb", "--help"],
    ],
)
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    assert "usage: lgl-kit" in capsys.readouterr().out
