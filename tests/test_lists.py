"""List tools: build from a folder, speaker-stratified subsets, checks with every problem reported, fetching."""

from __future__ import annotations

import hashlib
import io
import shutil
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile

from lgl_helpers.app import cli
from lgl_helpers.corpus import lists
from lgl_helpers.corpus.lists import (
    FetchError,
    ListCheckError,
    ListFormatError,
    TrainEntry,
    build_train_list,
    check_list,
    fetch_voxceleb,
    read_train_list,
    read_trials,
    subset_train_list,
    voxceleb,
)


def _tone(seconds: float, sample_rate: int = 16000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.1 * np.sin(2 * np.pi * 220 * t)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


@pytest.fixture
def bad_root(tmp_path) -> Path:
    """A VoxCeleb-layout folder with one good file and one of each kind of unusable file."""
    root = tmp_path / "audio"
    files = {
        "id00001/sessA/00001.wav": (_tone(1.0), 16000),
        "id00001/sessA/00002.wav": (_tone(1.0, channels=2), 16000),
        "id00002/sessB/00001.wav": (_tone(1.0, 8000), 8000),
        "id00002/sessB/00002.wav": (_tone(0.3), 16000),
    }
    for rel, (wave, rate) in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(root / rel), wave, rate, subtype="PCM_16")
    (root / "id00002/sessB/00003.wav").write_bytes(b"RIFF\x00\x00garbage, not a wav file" * 4)
    return root


def test_build_rejects_paths_the_list_format_cannot_hold(tmp_path):
    path = tmp_path / "audio" / "id00001" / "my video" / "00001.wav"
    path.parent.mkdir(parents=True)
    soundfile.write(str(path), _tone(1.0), 16000, subtype="PCM_16")
    with pytest.raises(ListCheckError, match="my video/00001.wav: path contains whitespace"):
        build_train_list(tmp_path / "audio", show_progress=False)


# --- build --------------------------------------------------------------------------------------------


def test_build_reproduces_the_toy_training_list(tiny_corpus, tmp_path):
    out = tmp_path / "built.txt"
    entries = build_train_list(tiny_corpus / "train", out, workers=3, show_progress=False)
    assert out.read_text() == (tiny_corpus / "lists" / "train_list.txt").read_text()
    assert len(entries) == 48 and entries == sorted(entries, key=lambda e: e.path)


def test_build_reports_every_unusable_file_and_writes_nothing(bad_root, tmp_path):
    out = tmp_path / "list.txt"
    with pytest.raises(ListCheckError) as error:
        build_train_list(bad_root, out, show_progress=False)
    message = str(error.value)
    assert "4 problem(s)" in message
    assert "id00001/sessA/00002.wav: has 2 channels, expected mono" in message
    assert "id00002/sessB/00001.wav: sample rate is 8000 Hz, expected 16000 Hz" in message
    assert "id00002/sessB/00002.wav: is 0.300 s long, shorter than the minimum 0.5 s" in message
    assert "id00002/sessB/00003.wav: cannot read wav header" in message
    assert not out.exists() and list(tmp_path.iterdir()) == [bad_root]


def test_build_can_skip_unusable_files(bad_root, tmp_path):
    entries = build_train_list(bad_root, tmp_path / "list.txt", skip_bad=True, show_progress=False)
    assert entries == [TrainEntry("id00001", "id00001/sessA/00001.wav", 1.0)]
    assert (tmp_path / "list.txt").read_text() == "id00001 id00001/sessA/00001.wav 1.000\n"


def test_build_errors_name_the_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="root='.*missing': folder does not exist"):
        build_train_list(tmp_path / "missing")
    (tmp_path / "empty" / "spk" / "sess").mkdir(parents=True)
    with pytest.raises(ListCheckError, match="no wav files in the layout"):
        build_train_list(tmp_path / "empty")


# --- subset -------------------------------------------------------------------------------------------


def _entries(counts: dict[str, int]) -> list[TrainEntry]:
    return [TrainEntry(s, f"{s}/v/{i:05d}.wav", 2.0) for s, n in counts.items() for i in range(n)]


def test_subset_is_stratified_and_fixed_by_the_seed():
    entries = _entries({"a": 10, "b": 2, "c": 7, "d": 30})
    subset = subset_train_list(entries, 15, seed=1)
    assert sorted(Counter(e.speaker for e in subset).values()) == [2, 4, 4, 5]  # equal shares, b capped at 2
    assert subset == subset_train_list(entries, 15, seed=1)
    assert subset != subset_train_list(entries, 15, seed=2)
    assert subset == sorted(subset, key=lambda e: e.path) and len(set(subset)) == 15
    picked = subset_train_list(entries, 6, n_speakers=2, seed=0)
    assert len({e.speaker for e in picked}) == 2 and len(picked) == 6
    proportional = subset_train_list(entries, 20, seed=0, per_speaker="proportional")
    counts = Counter(e.speaker for e in proportional)
    assert len(proportional) == 20 and set(counts) == {"a", "b", "c", "d"} and counts["d"] > counts["b"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_utterances=50), "n_utterances=50"),
        (dict(n_utterances=3), "n_utterances=3"),
        (dict(n_utterances=5, n_speakers=9), "n_speakers=9"),
        (dict(n_utterances=5, per_speaker="random"), "per_speaker='random'"),
    ],
)
def test_subset_errors_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        subset_train_list(_entries({"a": 10, "b": 2, "c": 7, "d": 30}), **kwargs)


# --- check --------------------------------------------------------------------------------------------


def test_check_counts_the_toy_lists(tiny_corpus):
    train = check_list(tiny_corpus / "lists" / "train_list.txt", tiny_corpus / "train", show_progress=False)
    assert train["kind"] == "train" and train["lines"] == 48 and train["speakers"] == 8
    assert train["hours"] == pytest.approx(
        sum(e.duration for e in read_train_list(tiny_corpus / "lists" / "train_list.txt")) / 3600, abs=1e-4
    )
    trials = check_list(tiny_corpus / "lists" / "trials.txt", tiny_corpus / "test", show_progress=False)
    assert trials == {"kind": "trials", "trials": 60, "target": 30, "nontarget": 30, "files": 24, "speakers": 4}


def test_check_reports_every_problem_with_file_and_line(bad_root, tmp_path):
    listing = tmp_path / "train.txt"
    listing.write_text(
        "id00001 id00001/sessA/00001.wav 1.000\n"  # good
        "id00001 id00001/sessA/00001.wav\n"  # 2: wrong field count
        "id00001 id00001/sessA/00002.wav 1.000\n"  # 3: stereo
        "id00002 id00002/sessB/00001.wav 1.000\n"  # 4: 8 kHz
        "id00002 id00002/sessB/00002.wav 0.300\n"  # 5: too short
        "id00002 id00002/sessB/00003.wav 1.000\n"  # 6: corrupt
        "id00002 id00002/sessB/00009.wav 1.000\n"  # 7: missing
        "id00001 id00001/sessA/00001.wav one\n"  # 8: duration not a number
        "id00001 id00001/sessA/00001.wav 3.000\n"  # 9: duration disagrees with the header
        "id00001 /etc/passwd 1.0\n"  # 10: escapes the root
    )
    with pytest.raises(ListCheckError) as error:
        check_list(listing, bad_root, "train", show_progress=False)
    problems = error.value.problems
    expected = [
        (2, "expected 3 fields"),
        (3, "has 2 channels, expected mono"),
        (4, "sample rate is 8000 Hz"),
        (5, "shorter than the minimum 0.5 s"),
        (6, "cannot read wav header"),
        (7, "file does not exist"),
        (8, "duration 'one' is not a number"),
        (9, "listed duration 3.000 s but"),
        (10, "must be relative to root"),
    ]
    assert len(problems) == len(expected)
    for problem, (line, text) in zip(problems, expected):
        assert problem.startswith(f"{listing}:{line}: ") and text in problem, problem


def test_check_trials_reports_labels_and_missing_files(tiny_corpus, tmp_path):
    good = (tiny_corpus / "lists" / "trials.txt").read_text().splitlines()
    listing = tmp_path / "trials.txt"
    listing.write_text(
        "\n".join(
            [good[0], "2 " + good[1].split(" ", 1)[1], "1 id10001/nope/00001.wav " + good[2].split()[2], "0 a.wav"]
        )
        + "\n"
    )
    with pytest.raises(ListCheckError) as error:
        check_list(listing, tiny_corpus / "test", show_progress=False)
    problems = error.value.problems
    assert problems[0] == f"{listing}:2: trial label '2' is not 0 or 1"
    assert problems[1].startswith(f"{listing}:3: ") and "id10001/nope/00001.wav: file does not exist" in problems[1]
    assert problems[2] == f"{listing}:4: expected 3 fields '<1|0> <wav path A> <wav path B>', got 2"


def test_check_needs_both_trial_labels(tiny_corpus, tmp_path):
    listing = tmp_path / "trials.txt"
    listing.write_text(
        "".join(
            line + "\n"
            for line in (tiny_corpus / "lists" / "trials.txt").read_text().splitlines()
            if line.startswith("1 ")
        )
    )
    with pytest.raises(ListCheckError, match="no non-target"):
        check_list(listing, tiny_corpus / "test", "trials", show_progress=False)


def test_check_empty_and_missing_inputs(tiny_corpus, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ListCheckError, match="list is empty"):
        check_list(empty, tiny_corpus / "train", "train", show_progress=False)
    with pytest.raises(ListFormatError, match="list='.*nothing.txt': list file does not exist"):
        check_list(tmp_path / "nothing.txt", tiny_corpus / "train")
    with pytest.raises(FileNotFoundError, match="root='.*no_root': folder does not exist"):
        check_list(tiny_corpus / "lists" / "train_list.txt", tmp_path / "no_root")
    with pytest.raises(ValueError, match="kind='pairs'"):
        check_list(tiny_corpus / "lists" / "train_list.txt", tiny_corpus / "train", "pairs")


def test_check_catches_a_truncated_file(tiny_corpus, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(tiny_corpus / "train" / "id00001", root / "id00001")
    victim = sorted(root.rglob("*.wav"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: 44 + 2000])  # header intact, most samples lost
    rel = victim.relative_to(root).as_posix()
    listing = tmp_path / "one.txt"
    listing.write_text(f"id00001 {rel} {(len(data) - 44) / 32000:.3f}\n")
    with pytest.raises(ListCheckError, match=r"one.txt:1: .* is 0.062 s long, shorter than the minimum 0.5 s"):
        check_list(listing, root, "train", show_progress=False)


# --- fetch --------------------------------------------------------------------------------------------


def _fake_list(n: int) -> bytes:
    return "".join(f"{i % 2} id1{i:04d}/v/00001.wav id1{i + 1:04d}/v/00002.wav\n" for i in range(n)).encode()


class _Opener:
    """Serves ``pages`` (url suffix → bytes or an exception) and records the urls asked for."""

    def __init__(self, pages):
        self.pages, self.urls = pages, []

    def __call__(self, url, timeout):
        self.urls.append(url)
        for base, page in self.pages.items():
            if url.startswith(base):
                if isinstance(page, Exception):
                    raise page
                return io.BytesIO(page)
        raise urllib.error.URLError("no route to host")


def test_official_list_table_matches_the_published_counts():
    assert lists.VOXCELEB_TRIAL_LISTS == {
        "veri_test2.txt": (37611, "0bc0a0fe3e557f1a75fb71e566d862d460709e80a4fe28e80e49bc0ab3a536ea"),
        "list_test_all2.txt": (579818, None),
        "list_test_hard2.txt": (550894, None),
    }


def test_fetch_offline_fails_clearly_and_writes_nothing(tmp_path):
    opener = _Opener({})
    with pytest.raises(FetchError) as error:
        fetch_voxceleb(tmp_path / "vox", opener=opener, timeout=1)
    assert "could not fetch veri_test2.txt (are you offline?)" in str(error.value)
    assert all(base + "veri_test2.txt" in str(error.value) for base in lists.VOXCELEB_META_URLS)
    assert opener.urls == [base + "veri_test2.txt" for base in lists.VOXCELEB_META_URLS]
    assert not (tmp_path / "vox").exists()


def test_fetch_verifies_count_and_sha256_and_falls_back_to_the_next_mirror(tmp_path):
    data = _fake_list(12)
    expected = {"veri_test2.txt": (12, hashlib.sha256(data).hexdigest()), "list_test_all2.txt": (5, None)}
    first, second = lists.VOXCELEB_META_URLS
    opener = _Opener({first: _fake_list(11), second: data})
    with pytest.raises(FetchError, match="could not fetch list_test_all2.txt"):
        fetch_voxceleb(tmp_path, opener=opener, expected=expected)
    assert (tmp_path / "veri_test2.txt").read_bytes() == data  # verified file kept, the other not written
    assert not (tmp_path / "list_test_all2.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["veri_test2.txt"]

    tampered = data.replace(b"id10003", b"id10004")
    with pytest.raises(FetchError, match="sha256 .* differs from the official"):
        lists.verify_trial_list("veri_test2.txt", tampered, expected)
    with pytest.raises(FetchError, match="has 11 trials, expected 12"):
        lists.verify_trial_list("veri_test2.txt", _fake_list(11), expected)
    with pytest.raises(FetchError, match=r"veri_test2.txt:2: not a '<1\|0> <wav A> <wav B>' trial line"):
        lists.verify_trial_list("veri_test2.txt", b"1 a.wav b.wav\n2 a.wav b.wav\n", {"veri_test2.txt": (2, None)})

    offline = _Opener({})  # an already verified file is kept without the network
    assert fetch_voxceleb(tmp_path, names=["veri_test2.txt"], opener=offline, expected=expected) == {
        "veri_test2.txt": tmp_path / "veri_test2.txt"
    }
    assert offline.urls == []


# --- command line -------------------------------------------------------------------------------------


def test_cli_lists_commands(tiny_corpus, tmp_path, capsys):
    built = tmp_path / "built.txt"
    assert cli.main(["lists", "build", "--root", str(tiny_corpus / "train"), "--out", str(built)]) == 0
    assert "48 utterances of 8 speakers" in capsys.readouterr().out
    subset = tmp_path / "mini.txt"
    assert (
        cli.main(
            [
                "lists",
                "subset",
                "--list",
                str(built),
                "--out",
                str(subset),
                "--n-utterances",
                "10",
                "--n-speakers",
                "5",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    assert len(read_train_list(subset)) == 10 and len({e.speaker for e in read_train_list(subset)}) == 5
    capsys.readouterr()
    assert (
        cli.main(
            ["lists", "check", "--list", str(tiny_corpus / "lists" / "trials.txt"), "--root", str(tiny_corpus / "test")]
        )
        == 0
    )
    assert "trials: 60" in capsys.readouterr().out
    assert (
        cli.main(["lists", "check", "--list", str(built), "--root", str(tiny_corpus / "test"), "--kind", "train"]) == 1
    )
    err = capsys.readouterr().err
    assert f"{built}:1: " in err and "48 problem(s)" in err
    assert cli.main(["lists", "build", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "x.txt")]) == 1
    assert "folder does not exist" in capsys.readouterr().err and not (tmp_path / "x.txt").exists()


def test_cli_fetch_offline_exits_non_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(voxceleb.urllib.request, "urlopen", _Opener({}))
    assert cli.main(["lists", "fetch-voxceleb", "--out", str(tmp_path / "vox"), "--timeout", "1"]) == 1
    assert "are you offline?" in capsys.readouterr().err
    assert not (tmp_path / "vox").exists()


def test_check_detects_a_trial_list_whose_first_label_is_bad(tiny_corpus, tmp_path, capsys):
    good = (tiny_corpus / "lists" / "trials.txt").read_text().splitlines()
    listing = tmp_path / "trials.txt"
    listing.write_text("\n".join(["2 " + good[0].split(" ", 1)[1], *good[1:]]) + "\n")
    with pytest.raises(ListCheckError) as error:
        check_list(listing, tiny_corpus / "test", show_progress=False)
    assert error.value.problems == [f"{listing}:1: trial label '2' is not 0 or 1"]
    assert cli.main(["lists", "check", "--list", str(listing), "--root", str(tiny_corpus / "test")]) == 1
    err = capsys.readouterr().err
    assert f"{listing}: 1 problem(s)" in err and "trial label '2'" in err


def test_check_says_which_kind_it_assumed_when_unsure(tiny_corpus, tmp_path, caplog):
    trials = (tiny_corpus / "lists" / "trials.txt").read_text().splitlines()[:3]
    train = (tiny_corpus / "lists" / "train_list.txt").read_text().splitlines()[:3]
    listing = tmp_path / "mixed.txt"
    listing.write_text("\n".join(trials + train) + "\n")
    with pytest.raises(ListCheckError) as error:
        check_list(listing, tiny_corpus / "test", show_progress=False)
    assert str(error.value).startswith(
        f"{listing} (read as a training list: 3 of the first 6 lines look like one, "
        "3 like a trial list; force the kind with --kind trials"
    )
    assert "force the kind with --kind trials" in caplog.text


def test_field_count_errors_hint_at_paths_with_spaces(tiny_corpus, tmp_path):
    listing = tmp_path / "trials.txt"
    listing.write_text("1 id1/my video/00001.wav id2/my video/00002.wav\n0 a.wav b.wav\n")
    with pytest.raises(ListCheckError) as error:
        check_list(listing, tiny_corpus / "test", show_progress=False)
    hint = "does a path contain whitespace, which the space-separated list format cannot hold?"
    assert error.value.problems[0] == f"{listing}:1: expected 3 fields '<1|0> <wav path A> <wav path B>', got 5: {hint}"
    with pytest.raises(ListFormatError, match=f"{listing}:1: .*got 5: does a path contain whitespace"):
        read_trials(listing)
    train = tmp_path / "train.txt"
    train.write_text("id1 id1/my video/00001.wav 1.0\n")
    with pytest.raises(ListFormatError, match=f"{train}:1: .*got 4: does a path contain whitespace"):
        read_train_list(train)
