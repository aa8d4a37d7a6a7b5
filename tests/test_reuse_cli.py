"""``lgl-kit embed`` and ``lgl-kit verify`` as a user meets them: files, lists, every checkpoint layout, bad input.

Every failure is one line on stderr naming the file or flag, exit status 1, no traceback, and no
output file written or changed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import reference_path
from tiny_encoder import tiny_encoder, write_checkpoints, write_noise

from lgl_helpers.app import cli
from lgl_helpers.app.reuse import keys_path, read_audio_keys
from lgl_helpers.core.embed import embed_files
from lgl_helpers.core.encoder import Encoder
from lgl_helpers.corpus.lists import ListFormatError, read_train_list, read_trials


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, encoder):
    return write_checkpoints(tmp_path_factory.mktemp("ckpt"), encoder)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    return [
        write_noise(folder / "a.wav", 1.2, seed=1),
        write_noise(folder / "b.flac", 2.5, sample_rate=44100, channels=2, seed=2),
        write_noise(folder / "c.wav", 0.8, sample_rate=8000, seed=3),
    ]


def _embed(capsys, *args: str) -> tuple[int, str, str]:
    status = cli.main(["embed", *args, "--device", "cpu"])
    out, err = capsys.readouterr()
    return status, out, err


def test_embed_files_writes_rows_and_keys(tmp_path, capsys, checkpoints, wavs):
    out = tmp_path / "emb.npy"
    files = [str(p) for p in (*wavs, wavs[0])]  # a repeated file keeps its row: row i is argument i
    status, stdout, _ = _embed(capsys, "--checkpoint", str(checkpoints["kit"]), *files, "--out", str(out))
    assert status == 0 and f"{out}: 4 x 192 embeddings" in stdout
    emb = np.load(out)
    assert emb.shape == (4, 192) and emb.dtype == np.float32
    assert keys_path(out) == tmp_path / "emb.keys.txt"
    assert keys_path(out).read_text().splitlines() == files
    np.testing.assert_allclose(emb[:3], Encoder.from_checkpoint(checkpoints["kit"]).embed(wavs), atol=1e-6)
    np.testing.assert_array_equal(emb[3], emb[0])


@pytest.mark.parametrize("kind", ["trials", "train", "paths"])
def test_embed_a_list_relative_to_its_root(tmp_path, capsys, checkpoints, encoder, tiny_corpus, kind):
    train_list = tiny_corpus / "lists" / "train_list.txt"
    if kind == "trials":
        listed, root = tiny_corpus / "lists" / "trials.txt", tiny_corpus / "test"
        expected = list(dict.fromkeys(p for t in read_trials(listed) for p in (t.path_a, t.path_b)))
    elif kind == "train":
        listed, root = train_list, tiny_corpus / "train"
        expected = [e.path for e in read_train_list(train_list)]
    else:
        listed, root = tmp_path / "paths.txt", tiny_corpus / "train"
        expected = [e.path for e in read_train_list(train_list)][:7]
        listed.write_text("".join(f"{p}\n" for p in expected))
    assert read_audio_keys(listed) == expected
    out = tmp_path / "emb.npy"
    args = ["--checkpoint", str(checkpoints["kit"]), "--list", str(listed), "--root", str(root), "--out", str(out)]
    status, _, _ = _embed(capsys, *args)
    assert status == 0
    assert keys_path(out).read_text().splitlines() == expected
    reference = embed_files(encoder, [root / p for p in expected], device="cpu", show_progress=False)
    np.testing.assert_allclose(np.load(out), reference, atol=1e-6)


@pytest.mark.parametrize("layout", ["network", "module", "bare", "stage1", "stage2"])
def test_embed_and_verify_take_every_checkpoint_layout(tmp_path, capsys, checkpoints, wavs, layout):
    ckpt = reference_path(f"{layout}_checkpoint.model") if layout.startswith("stage") else checkpoints[layout]
    out = tmp_path / "emb.npy"
    status, _, _ = _embed(capsys, "--checkpoint", str(ckpt), *map(str, wavs[:2]), "--out", str(out))
    assert status == 0
    emb = np.load(out)
    assert cli.main(["verify", "--checkpoint", str(ckpt), str(wavs[0]), str(wavs[1]), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"score {float(emb[0] @ emb[1]):.6f}"
    assert lines[1] == f"no decision: {ckpt} stores no 'eer_threshold' (the threshold of its validation EER)"


def test_verify_decides_at_the_stored_threshold(tmp_path, capsys, encoder, wavs):
    score = Encoder(encoder).score(wavs[0], wavs[2])
    for threshold, verdict in [(score - 0.01, "accept (same speaker)"), (score + 0.01, "reject (different speakers)")]:
        ckpt = write_checkpoints(tmp_path / f"t{threshold:.3f}", encoder, eer_threshold=threshold)["kit"]
        assert cli.main(["verify", "--checkpoint", str(ckpt), str(wavs[0]), str(wavs[2])]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines == [f"score {score:.6f}", f"{verdict} at threshold {threshold:.6f}, the validation EER's"]


def _fails_in_one_line(capsys, argv: list[str], *named: str) -> str:
    status = cli.main(argv)
    out, err = capsys.readouterr()
    assert status == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"lgl-kit {argv[0]}: error: "), err
    for text in named:
        assert text in err, err
    return err


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, checkpoints, wavs):
    out = tmp_path / "emb.npy"
    out.write_bytes(b"earlier")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    foreign = tmp_path / "talk.aac"
    foreign.write_bytes(b"\xff\xf1junk")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    bad_list = tmp_path / "bad_list.txt"
    bad_list.write_text("a.wav\nb.wav c.wav\n")
    kit = str(checkpoints["kit"])
    good = str(wavs[0])
    cases = [
        (["--checkpoint", kit, good, str(tmp_path / "missing.wav")], ["missing.wav: audio file does not exist"]),
        (["--checkpoint", kit, good, str(corrupt)], [f"{corrupt}: cannot read as WAV audio"]),
        (["--checkpoint", kit, str(foreign), good], [f"{foreign}: unsupported audio format '.aac'"]),
        (["--checkpoint", str(other), good], [f"{other}: no encoder tensors found"]),
        (["--checkpoint", str(tmp_path / "none.model"), good], ["none.model: checkpoint file does not exist"]),
        (["--checkpoint", kit, "--list", str(bad_list)], [f"{bad_list}:2: expected one path a line"]),
        (["--checkpoint", kit, "--list", str(tmp_path / "no_list.txt")], ["no_list.txt: list file does not exist"]),
        (["--checkpoint", kit, good, "--list", str(bad_list)], ["FILES or --list LIST, not both"]),
        (["--checkpoint", kit, good, "--root", str(tmp_path)], ["--root"]),
        (["--checkpoint", kit], ["nothing to embed"]),
    ]
    for args, named in cases:
        _fails_in_one_line(capsys, ["embed", *args, "--out", str(out), "--device", "cpu"], *named)
        assert out.read_bytes() == b"earlier" and not keys_path(out).exists()
    _fails_in_one_line(capsys, ["embed", "--checkpoint", kit, good, "--out", str(tmp_path / "emb.bin")], "--out")
    _fails_in_one_line(capsys, ["verify", "--checkpoint", kit, good, str(corrupt)], str(corrupt))
    _fails_in_one_line(capsys, ["verify", "--checkpoint", str(other), good, good], str(other))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["emb.npy", "corrupt.wav", "talk.aac", "other.pt", "bad_list.txt"]
    )


def test_a_list_of_no_known_kind_is_named(tmp_path):
    listed = tmp_path / "scores.txt"
    listed.write_text("0.31 a.wav b.wav target\n")
    with pytest.raises(ListFormatError, match=r"scores.txt:1: not a list of audio files"):
        read_audio_keys(listed)
    listed.write_text("\n\n")
    with pytest.raises(ListFormatError, match=r"scores.txt: list is empty"):
        read_audio_keys(listed)
