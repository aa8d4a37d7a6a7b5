"""The encoder as a file other runtimes load: ONNX (onnxruntime) or TorchScript, front end included.

An exported model takes ``wave`` (B, T) float32 at 16 kHz, zero-padded, and ``lengths`` (B,) int64,
each item's valid samples in [257, T], with batch and length both dynamic, and returns ``emb``
(B, 192) float32, L2-normalised: per item the embedding :class:`~lgl_helpers.core.encoder.Encoder`
gives the item alone. The graph is the encoder's masked batch pass, pre-emphasis and log-mel
(STFT, mel filterbank) included.

ONNX goes through torch.onnx's dynamo exporter (``torch.export``, opset 20, whose STFT op takes the
front end as it is); the older TorchScript-based ONNX exporter cannot export a complex STFT.
TorchScript is a ``torch.jit.trace`` (deprecated in PyTorch 2.11 but still loadable by
``torch.jit.load``); its constants were traced on the CPU, so it runs on the CPU. Every export is
checked against PyTorch on a probe batch (0.5 s and 8 s of noise, padded together) before the file is
written, atomically; a model off by more than :data:`TOLERANCE` is not written.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lgl_helpers.core.audio import SAMPLE_RATE
from lgl_helpers.core.models import ECAPATDNN
from lgl_helpers.files import atomic_write_bytes

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
OPSET = 20
# Largest |difference| allowed between an exported and the PyTorch embedding (L2-normalised, float32):
# measured 6e-7 (ONNX) and 2e-7 (TorchScript) for the reference C=512 encoder.
TOLERANCE = 1e-5
PROBE_SECONDS = (0.5, 8.0)


class ExportedEncoder(nn.Module):
    """The encoder's masked pass without its Python-side checks, which ``torch.export`` cannot trace.

    wave (B, T), lengths (B,) → emb (B, 192), L2-normalised. The body repeats
    :meth:`ECAPATDNN.forward` after its ``lengths`` checks (a data-dependent ``int(lengths.min())``
    stops ``torch.export``); the parity check of every export compares it with that forward.
    """

    def __init__(self, encoder: ECAPATDNN):
        super().__init__()
        self.encoder = encoder.eval()

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        x, mask = enc._padded_log_mel(wave, lengths)
        n_valid = mask.sum(dim=-1, keepdim=True)
        x = enc.bn1(enc.relu(enc.conv1(x)))
        x1 = enc.layer1(x, mask, n_valid)
        x2 = enc.layer2(x + x1, mask, n_valid)
        x3 = enc.layer3(x + x1 + x2, mask, n_valid)
        x = enc.relu(enc.layer4(torch.cat((x1, x2, x3), dim=1)))
        x = enc._attentive_stats_pool(x, mask, n_valid)
        return F.normalize(enc.bn6(enc.fc6(enc.bn5(x))), dim=1)


def _example_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of two different lengths, so that neither dimension is specialised while tracing."""
    wave = torch.randn(2, SAMPLE_RATE, generator=torch.Generator().manual_seed(0)) * 0.1
    return wave, torch.tensor([SAMPLE_RATE, 3 * SAMPLE_RATE // 4])


def probe_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """wave (2, 128000) float32 and lengths (2,) int64: 0.5 s and 8 s of noise, the short one zero-padded."""
    rng = np.random.default_rng(seed)
    lengths = np.array([int(s * SAMPLE_RATE) for s in PROBE_SECONDS], dtype=np.int64)
    wave = np.zeros((len(lengths), lengths.max()), dtype=np.float32)
    for row, n in enumerate(lengths):
        wave[row, :n] = 0.1 * rng.standard_normal(n)
    return wave, lengths


def reference_embeddings(encoder: ECAPATDNN, wave: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """PyTorch's embeddings of each item alone (its first ``lengths[i]`` samples) → (B, 192), L2-normalised."""
    encoder = encoder.eval()
    with torch.inference_mode():
        rows = [encoder(torch.from_numpy(wave[i : i + 1, :n])) for i, n in enumerate(lengths)]
    return F.normalize(torch.cat(rows).float(), dim=1).numpy()


@contextlib.contextmanager
def _quiet_onnx_exporter():
    """Silence the exporter's warnings about torch internals (and about torchvision, which the kit does not use)."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_log.setLevel(level)


def _onnx_bytes(module: ExportedEncoder) -> bytes:
    with _quiet_onnx_exporter():
        program = torch.onnx.export(
            module,
            _example_inputs(),
            input_names=["wave", "lengths"],
            output_names=["emb"],
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
            dynamic_shapes=({0: "batch", 1: "samples"}, {0: "batch"}),
        )
    return program.model_proto.SerializeToString()


def _torchscript_bytes(module: ExportedEncoder) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, whose files only PyTorch loads; it still works.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*is deprecated")
        # The pre-emphasis unpacks its 2-tap filter, a constant of fixed shape (2,), so the trace is right
        # for any input; the tracer cannot know that and warns. The parity check below covers the rest.
        warnings.filterwarnings(
            "ignore", message=r"Iterating over a tensor might cause the trace", category=torch.jit.TracerWarning
        )
        torch.jit.save(torch.jit.trace(module, _example_inputs(), check_trace=False), buffer)
    return buffer.getvalue()


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of :data:`FORMATS`, else ValueError naming the ``--format`` flag."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is not an export format; choose {' or '.join(FORMATS)}")
    return fmt


def load_exported(source: str | os.PathLike | bytes, fmt: str):
    """A callable ``(wave (B, T) float32, lengths (B,) int64) → emb (B, 192) numpy`` from an exported file or its bytes."""
    if check_format(fmt) == "onnx":
        import onnxruntime

        data = source if isinstance(source, bytes) else str(source)
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        return lambda wave, lengths: session.run(None, {"wave": wave, "lengths": lengths})[0]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*is deprecated")
        module = torch.jit.load(io.BytesIO(source) if isinstance(source, bytes) else str(source))

    def run(wave: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(wave), torch.from_numpy(lengths)).numpy()

    return run


def export_encoder(encoder: ECAPATDNN, out: str | os.PathLike, fmt: str) -> dict:
    """Export ``encoder`` to ``out`` as ``fmt`` (onnx | torchscript) after checking it against PyTorch.

    Returns dict: ``path``, ``format``, ``bytes``, ``export_seconds``, ``max_abs_diff`` (on the probe
    batch). Raises ValueError, writing nothing, for an unknown format or a parity beyond TOLERANCE.
    """
    check_format(fmt)
    encoder = encoder.cpu().eval()
    module = ExportedEncoder(encoder)
    start = time.perf_counter()
    data = _onnx_bytes(module) if fmt == "onnx" else _torchscript_bytes(module)
    seconds = time.perf_counter() - start
    wave, lengths = probe_batch()
    diff = float(np.abs(load_exported(data, fmt)(wave, lengths) - reference_embeddings(encoder, wave, lengths)).max())
    if not diff <= TOLERANCE:
        raise ValueError(f"{out}: the {fmt} export differs from PyTorch by {diff:.2e} > {TOLERANCE:.0e}; not written")
    path = atomic_write_bytes(out, data)
    log.info("exported %s to %s in %.1f s, max |diff| %.1e", fmt, path, seconds, diff)
    return {"path": Path(path), "format": fmt, "bytes": len(data), "export_seconds": seconds, "max_abs_diff": diff}
