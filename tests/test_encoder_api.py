"""``Encoder``: every checkpoint layout, files of any rate and channel count, arrays, scores, thresholds, bad input."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
import torchaudio
from reference import load_reference, reference_path
from tiny_encoder import tiny_encoder, write_checkpoints, write_noise

import lgl_helpers
from lgl_helpers.core.audio import AudioError, read_wav
from lgl_helpers.core.embed import embed_files
from lgl_helpers.core.encoder import Encoder

TOL = {"rtol": 1e-4, "atol": 1e-5}  # the reference fixtures' float32 tolerance
SECONDS = [0.5, 2.3, 1.1, 8.0, 0.77]


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, encoder):
    return write_checkpoints(tmp_path_factory.mktemp("ckpt"), encoder, eer_threshold=0.25)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wavs")
    return [write_noise(folder / f"utt{i}.wav", s, seed=i) for i, s in enumerate(SECONDS)]


def _alone(model, wave: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return F.normalize(model(torch.from_numpy(wave)[None]), dim=1)[0].numpy()


def test_package_exports_encoder():
    from lgl_helpers import Encoder as exported

    assert exported is Encoder
    with pytest.raises(AttributeError, match="no attribute 'Decoder'"):
        lgl_helpers.Decoder  # noqa: B018


def test_embed_equals_embed_files_and_each_file_alone(checkpoints, encoder, wavs):
    model = Encoder.from_checkpoint(checkpoints["kit"])
    emb = model.embed(wavs)
    assert emb.shape == (len(wavs), 192) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(emb, embed_files(encoder, wavs, device="cpu", show_progress=False), atol=1e-6)
    for row, path in zip(emb, wavs):
        np.testing.assert_allclose(row, _alone(encoder, read_wav(path)), atol=1e-5)


def test_one_path_or_array_gives_one_row(checkpoints, wavs):
    model = Encoder.from_checkpoint(checkpoints["kit"])
    emb = model.embed(wavs[1])
    assert emb.shape == (192,)
    np.testing.assert_allclose(model.embed(str(wavs[1])), emb, atol=1e-7)
    np.testing.assert_allclose(model.embed(read_wav(wavs[1])), emb, atol=1e-7)
    np.testing.assert_allclose(model.embed([read_wav(wavs[1]), wavs[2]])[0], emb, atol=1e-5)
    assert model.embed([]).shape == (0, 192)


@pytest.mark.parametrize("layout", ["network", "module", "bare"])
def test_every_checkpoint_layout_gives_the_same_embeddings(checkpoints, wavs, layout):
    expected = Encoder.from_checkpoint(checkpoints["kit"]).embed(wavs[:3])
    np.testing.assert_array_equal(Encoder.from_checkpoint(checkpoints[layout]).embed(wavs[:3]), expected)


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_reference_checkpoints_reproduce_reference_embeddings(stage):
    model = Encoder.from_checkpoint(reference_path(f"{stage}_checkpoint.model"))
    io = load_reference(f"{stage}_io.pt")
    expected = F.normalize(io["emb_eval"], dim=1)
    torch.testing.assert_close(torch.from_numpy(model.embed(list(io["wave"].numpy()))), expected, **TOL)
    if "wave_long" in io:
        emb_long = model.embed(io["wave_long"][0].numpy())
        torch.testing.assert_close(torch.from_numpy(emb_long), F.normalize(io["emb_long"], dim=1)[0], **TOL)
    assert model.eer_threshold is None and model.decide(0.9) is None


def test_other_rates_and_stereo_are_converted_with_a_note(tmp_path, checkpoints, wavs, caplog):
    model = Encoder.from_checkpoint(checkpoints["kit"])
    wave = read_wav(wavs[1])
    wave_44k = torchaudio.functional.resample(torch.from_numpy(wave), 16000, 44100).numpy()
    stereo = tmp_path / "stereo_44k.flac"
    soundfile.write(stereo, np.stack([wave_44k, 0.5 * wave_44k], axis=1), 44100, subtype="PCM_24")
    with caplog.at_level(logging.INFO, logger="lgl_helpers"):
        emb = model.embed([stereo, wavs[2]])
    assert f"{stereo}: resampled from 44100 Hz to 16000 Hz" in caplog.text
    assert f"{stereo}: 2 channels mixed to mono" in caplog.text
    assert "1 of 2 file(s) converted" in caplog.text
    mixed = soundfile.read(stereo, dtype="float32")[0].mean(axis=1)
    expected = model.embed(mixed, sample_rate=44100)
    np.testing.assert_allclose(emb[0], expected, atol=1e-5)
    # The 16 kHz → 44.1 kHz → 16 kHz round trip (and the 3/4 gain) keep the embedding.
    assert float(emb[0] @ model.embed(wave)) > 0.99


def test_score_is_the_cosine_and_the_threshold_decides(checkpoints, wavs):
    model = Encoder.from_checkpoint(checkpoints["kit"])
    assert model.eer_threshold == 0.25
    emb = model.embed(wavs[:2])
    assert model.score(wavs[0], wavs[1]) == pytest.approx(float(emb[0] @ emb[1]), abs=1e-5)
    assert model.score(wavs[0], wavs[0]) == pytest.approx(1.0, abs=1e-5)
    assert model.decide(0.25) is True and model.decide(0.2499) is False


def test_kit_checkpoint_without_threshold(tmp_path, encoder):
    path = write_checkpoints(tmp_path, encoder)["kit"]
    model = Encoder.from_checkpoint(path)
    assert model.eer_threshold is None and model.decide(1.0) is None


def test_a_threshold_that_is_not_a_number_is_named(tmp_path, encoder):
    path = write_checkpoints(tmp_path, encoder, eer_threshold="high")["kit"]
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}: 'eer_threshold' must be a finite number"):
        Encoder.from_checkpoint(path)


def test_bad_audio_is_named(tmp_path, checkpoints, wavs):
    model = Encoder.from_checkpoint(checkpoints["kit"])
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    foreign = tmp_path / "clip.m4a"
    foreign.write_bytes(b"\x00\x00\x00\x20ftypM4A ")
    short = write_noise(tmp_path / "short.wav", 0.3)
    cases = [
        (tmp_path / "missing.wav", "audio file does not exist"),
        (corrupt, "cannot read as WAV audio, the file is corrupt or truncated"),
        (foreign, "unsupported audio format '.m4a'"),
        (short, "is 0.300 s long, shorter than the minimum 0.5 s"),
        (tmp_path, "is a folder, not an audio file"),
    ]
    for path, message in cases:
        with pytest.raises(AudioError, match=f"^{re.escape(str(path))}: {re.escape(message)}") as error:
            model.embed([wavs[0], path])
        assert "\n" not in str(error.value)
    with pytest.raises(AudioError, match=r"^<array 0>: is 0.250 s long"):
        model.embed(np.zeros(4000, dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 16000\): expected one waveform"):
        model.embed(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(TypeError, match="audio input 0 is a int"):
        model.embed([3])


def test_a_checkpoint_that_is_not_an_encoder_is_named(tmp_path):
    other = tmp_path / "optimizer.pt"
    torch.save({"step": torch.tensor(3), "lr": 0.1}, other)
    with pytest.raises(ValueError, match=f"^{re.escape(str(other))}: no encoder tensors found"):
        Encoder.from_checkpoint(other)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match=f"^{re.escape(str(text))}: refused: not a weights-only torch checkpoint"):
        Encoder.from_checkpoint(text)
    with pytest.raises(FileNotFoundError, match="checkpoint file does not exist"):
        Encoder.from_checkpoint(tmp_path / "missing.model")
