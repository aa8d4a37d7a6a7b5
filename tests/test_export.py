"""``lgl-kit export``: the ONNX (onnxruntime) and TorchScript files reproduce PyTorch's embeddings.

Parity is asserted to ``export.TOLERANCE`` (1e-5, max |difference| of L2-normalised embeddings) on a
0.5 s and an 8 s input alone, a padded batch of the two, and a batch of three; measured ~6e-7 for
ONNX and ~2e-7 for TorchScript. One ONNX export (~15-25 s on two CPU cores) serves the module.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from reference import reference_path
from tiny_encoder import tiny_encoder, write_checkpoints

from lgl_helpers.app import cli
from lgl_helpers.core import export
from lgl_helpers.core.encoder import Encoder
from lgl_helpers.core.models import load_encoder


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, encoder):
    return write_checkpoints(tmp_path_factory.mktemp("ckpt"), encoder)["kit"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, checkpoint):
    """Both formats, written by the CLI: {format: path}."""
    folder = tmp_path_factory.mktemp("exported")
    paths = {"onnx": folder / "encoder.onnx", "torchscript": folder / "encoder.pt"}
    for fmt, path in paths.items():
        assert cli.main(["export", "--checkpoint", str(checkpoint), "--format", fmt, "--out", str(path)]) == 0
    return paths


def _batch(seconds: list[float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """wave (B, T) zero-padded noise and lengths (B,) int64."""
    rng = np.random.default_rng(seed)
    lengths = np.array([int(s * 16000) + i for i, s in enumerate(seconds)], dtype=np.int64)
    wave = np.zeros((len(lengths), lengths.max()), dtype=np.float32)
    for row, n in enumerate(lengths):
        wave[row, :n] = 0.1 * rng.standard_normal(n)
    return wave, lengths


@pytest.mark.slow
@pytest.mark.parametrize("fmt", export.FORMATS)
@pytest.mark.parametrize("seconds", [[0.5], [8.0], [0.5, 8.0], [2.0, 2.0, 1.3]], ids=["short", "long", "pair", "three"])
def test_exported_model_reproduces_pytorch(exported, encoder, fmt, seconds):
    wave, lengths = _batch(seconds)
    run = export.load_exported(exported[fmt], fmt)
    emb = run(wave, lengths)
    expected = Encoder(encoder).embed([wave[i, :n] for i, n in enumerate(lengths)])
    assert emb.shape == (len(seconds), 192) and emb.dtype == np.float32
    assert np.abs(emb - expected).max() <= export.TOLERANCE


def test_onnx_inputs_have_dynamic_batch_and_length(exported):
    graph = onnx.load(exported["onnx"]).graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input}
    assert dims == {"wave": ["batch", "samples"], "lengths": ["batch"]}
    assert [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == ["batch", 192]


def test_cli_reports_the_parity(tmp_path, checkpoint, capsys):
    out = tmp_path / "encoder.pt"
    assert cli.main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{out}: torchscript, ") and "parity with PyTorch on a 0.5 s + 8 s batch" in lines[2]


def test_reference_checkpoint_exports_to_torchscript(tmp_path):
    model = load_encoder(reference_path("stage2_checkpoint.model"))
    result = export.export_encoder(model, tmp_path / "stage2.pt", "torchscript")
    assert result["max_abs_diff"] <= export.TOLERANCE
    wave, lengths = _batch([0.5, 3.0])
    expected = Encoder(model).embed([wave[i, :n] for i, n in enumerate(lengths)])
    assert (
        np.abs(export.load_exported(result["path"], "torchscript")(wave, lengths) - expected).max() <= export.TOLERANCE
    )


def test_export_beyond_tolerance_writes_nothing(tmp_path, encoder, monkeypatch):
    monkeypatch.setattr(export, "TOLERANCE", -1.0)
    out = tmp_path / "encoder.pt"
    with pytest.raises(ValueError, match="the torchscript export differs from PyTorch by .* not written"):
        export.export_encoder(encoder, out, "torchscript")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "fmt, ckpt, named",
    [
        ("tflite", "kit", "--format 'tflite' is not an export format; choose onnx or torchscript"),
        ("onnx", "other", "no encoder tensors found"),
        ("onnx", "missing", "checkpoint file does not exist"),
    ],
)
def test_bad_format_or_checkpoint_is_one_line(tmp_path, capsys, checkpoint, fmt, ckpt, named):
    other = tmp_path / "other.pt"
    torch.save({"step": 3}, other)
    ckpt_path = {"kit": checkpoint, "other": other, "missing": tmp_path / "missing.model"}[ckpt]
    out = tmp_path / "encoder.onnx"
    assert cli.main(["export", "--checkpoint", str(ckpt_path), "--format", fmt, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lgl-kit export: error: ") and err.count("\n") == 1 and named in err, err
    assert not out.exists()
