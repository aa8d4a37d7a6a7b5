"""Full-length embedding of wav files in length-bucketed batches, and cosine trial scoring (docs/method.md, "Evaluation").

Files are sorted by length and grouped so that each batch's padded size (items × padded length)
stays within a budget of samples; the encoder's masked pass gives every file the embedding it gets
alone, so batching changes speed, not results. Padded lengths are rounded up to whole
``PAD_QUANTUM`` samples so that batch shapes repeat: cuDNN / cuFFT / oneDNN then reuse their plans
instead of building new ones for every batch. Audio of the next batches is read by worker threads
while the current one runs. On a CPU, where a batch computes no faster per file than one file does
and its padding is wasted work, files are instead embedded one at a time at their exact length, in
as many parallel streams as torch has threads, each stream on one thread (small convolutions scale
poorly over threads, independent files scale well). Clustering (Stage II) uses the same embedder.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lgl_helpers.core import distributed
from lgl_helpers.core.audio import SAMPLE_RATE, check_wav, read_wav
from lgl_helpers.core.distributed import get_device
from lgl_helpers.core.metrics import eer_and_min_dcf
from lgl_helpers.core.models import EMB_DIM
from lgl_helpers.corpus.lists import Trial
from lgl_helpers.progress_log import progress

log = logging.getLogger(__name__)

PAD_QUANTUM = SAMPLE_RATE // 2  # samples: batches are padded to whole half seconds
LENGTH_TOLERANCE = SAMPLE_RATE // 10  # samples a given length may be off before it is reported (list check's 0.1 s)
READ_AHEAD = 2  # batches read ahead of the one being embedded
READ_THREADS = 4


def padded_length(longest: int, quantum: int = PAD_QUANTUM) -> int:
    """``longest`` samples rounded up to a multiple of ``quantum``."""
    return -(-int(longest) // quantum) * quantum


def length_batches(lengths: Sequence[int], budget: int, quantum: int = PAD_QUANTUM) -> list[np.ndarray]:
    """Group item indices into batches of similar length. lengths: (N,) samples → list of index arrays.

    Items are taken from longest to shortest (a batch that does not fit in memory fails first); a batch
    holds ``budget // padded_length(longest)`` items, so items × padded length stays ≤ ``budget``. An
    item longer than half the budget is alone.
    """
    if budget < 1:
        raise ValueError(f"budget={budget} samples must be positive")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        size = max(1, budget // padded_length(lengths[order[start]], quantum))
        batches.append(order[start : start + size])
        start += size
    return batches


def _read_ahead(pool: ThreadPoolExecutor, batches: list[np.ndarray], read):
    """Yield (batch, list of waves) in order, keeping up to ``READ_AHEAD`` further batches being read."""
    pending: deque = deque()
    for batch in batches:
        pending.append((batch, [pool.submit(read, i) for i in batch]))
        if len(pending) > READ_AHEAD:
            head, futures = pending.popleft()
            yield head, [f.result() for f in futures]
    while pending:
        head, futures = pending.popleft()
        yield head, [f.result() for f in futures]


@contextlib.contextmanager
def _float32_convolutions():
    """Full float32 cuDNN convolutions and matmuls inside the block, the previous settings restored after it.

    cuDNN runs float32 convolutions in TF32 by default (and training turns TF32 matmuls on), and GPU
    embeddings then differ from the CPU (reference) ones by ~1e-4; in float32 they agree to ~1e-7.
    """
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return get_device("auto")
    return device if isinstance(device, torch.device) else get_device(str(device))


PRECISIONS = ("fp32", "bf16")


def autocast_context(precision: str, device: torch.device):
    """The forward passes' numeric context: exact float32 (``fp32``) or bfloat16 autocast (``bf16``).

    bf16 autocast runs on CUDA and on CPUs (where it pays only with AVX-512 BF16 / AMX); the
    parameters and the optimizer stay float32 either way.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def embed_files(
    model: torch.nn.Module,
    paths: Sequence[str | os.PathLike],
    *,
    device: str | torch.device | None = None,
    batch_seconds: float = 240.0,
    max_seconds: float | None = None,
    lengths: Sequence[int] | None = None,
    show_progress: bool = True,
    precision: str = "fp32",
    cpu_streams: int | None = None,
) -> np.ndarray:
    """Embed each file at full length (or its first ``max_seconds``).

    Returns emb (N, 192) float32, L2-normalised, rows in ``paths`` order.

    ``batch_seconds`` bounds the padded audio per batch (memory). ``device`` None → CUDA when present.
    ``lengths``: (N,) samples per file known beforehand (a training list's durations), used only to
    group files of similar length; None reads every wav header first. Each file is still read whole,
    so a wrong length changes how full its batch is, never its embedding, and is logged.
    The model runs in eval mode, with full float32 convolutions on CUDA (no TF32) unless
    ``precision="bf16"``, and gets its training flag and device back afterwards. In a distributed run
    each rank embeds a share of the files (similar total duration) and every rank gets all rows.
    ``cpu_streams``: on a CPU, how many files are embedded at once, one thread each (None: torch's
    thread count; 0: length-bucketed batches as on a GPU).
    """
    if cpu_streams is not None and cpu_streams < 0:
        raise ValueError(f"cpu_streams={cpu_streams} must be >= 0 or None")
    if batch_seconds <= 0:
        raise ValueError(f"batch_seconds={batch_seconds} must be positive")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds={max_seconds} must be positive or None")
    autocast_context(precision, torch.device("cpu"))  # checks the name before any file is read
    paths = [Path(p) for p in paths]
    if not paths:
        return np.zeros((0, EMB_DIM), dtype=np.float32)
    crop = None if max_seconds is None else int(round(max_seconds * SAMPLE_RATE))
    if lengths is None:
        lengths = [check_wav(p).frames for p in paths]
    elif len(lengths) != len(paths):
        raise ValueError(f"lengths has {len(lengths)} entries for {len(paths)} paths")
    if crop is not None:
        lengths = [min(int(n), crop) for n in lengths]
    lengths = [int(n) for n in lengths]
    target = _resolve_device(device)
    budget = int(batch_seconds * SAMPLE_RATE)
    if target.type == "cpu":
        streams = torch.get_num_threads() if cpu_streams is None else cpu_streams
        if streams:
            budget = 0  # one file per batch, ``streams`` batches at a time
    else:
        streams = 0
    if not distributed.active():
        return _embed_here(model, paths, lengths, crop, budget, target, show_progress, precision, streams)
    # Dealing the files out in length order gives every rank about the same amount of audio.
    by_length = np.argsort(lengths, kind="stable")
    mine = by_length[distributed.shard(len(paths))]
    part = _embed_here(
        model,
        [paths[i] for i in mine],
        [lengths[i] for i in mine],
        crop,
        budget,
        target,
        show_progress and distributed.is_main(),
        precision,
        streams,
    )
    emb = np.empty((len(paths), part.shape[1]), dtype=np.float32)
    emb[by_length] = distributed.gather_shards(part, len(paths))
    return emb


def _embed_here(
    model: torch.nn.Module,
    paths: list[Path],
    lengths: list[int],
    crop: int | None,
    budget: int,
    target: torch.device,
    show_progress: bool,
    precision: str,
    streams: int,
) -> np.ndarray:
    """This process's part of :func:`embed_files`: emb (len(paths), 192), rows in ``paths`` order.

    ``budget`` 0: one file per batch; ``streams`` > 0: that many batches at once, one thread each (CPU).
    """
    if not paths:
        return np.zeros((0, EMB_DIM), dtype=np.float32)
    batches = length_batches(lengths, budget) if budget else [np.array([i]) for i in np.argsort(lengths)[::-1]]
    first_param = next(model.parameters())
    home, was_training = first_param.device, model.training
    model.to(target).eval()
    bar_kwargs = {"desc": "embed", "total": len(paths), "unit": "file"}
    if not show_progress:
        bar_kwargs["disable"] = True

    off = []  # files whose real length differs from the given one

    def read(i: int) -> np.ndarray:
        wave = read_wav(paths[i], frames=-1 if crop is None else crop, check=False)
        if abs(len(wave) - lengths[i]) > LENGTH_TOLERANCE:
            off.append(i)
        return wave

    emb = np.zeros((len(paths), EMB_DIM), dtype=np.float32)

    def run(batch: np.ndarray, waves: list[np.ndarray]) -> None:
        # A lone item keeps its exact length (the reference's pass); a batch is padded and masked.
        width = len(waves[0]) if len(waves) == 1 else padded_length(max(len(w) for w in waves))
        padded = np.zeros((len(waves), width), dtype=np.float32)
        for row, wave in enumerate(waves):
            padded[row, : len(wave)] = wave
        wave_t = torch.from_numpy(padded).to(target)
        if len(waves) == 1:
            out = model(wave_t)
        else:
            out = model(wave_t, torch.tensor([len(w) for w in waves], device=target))
        emb[batch] = F.normalize(out.float(), dim=1).cpu().numpy()

    def stream(batch: np.ndarray) -> int:
        # Grad mode, autocast and the thread count are per thread: every stream sets its own.
        torch.set_num_threads(1)
        with torch.inference_mode(), autocast_context(precision, target):
            run(batch, [read(i) for i in batch])
        return len(batch)

    threads = torch.get_num_threads()
    try:
        with progress(**bar_kwargs) as bar:
            if streams:
                with ThreadPoolExecutor(streams) as pool:
                    for done in pool.map(stream, batches):
                        bar.update(done)
            else:
                with (
                    torch.inference_mode(),
                    _float32_convolutions() if precision == "fp32" else contextlib.nullcontext(),
                    autocast_context(precision, target),
                    ThreadPoolExecutor(READ_THREADS) as pool,
                ):
                    for batch, waves in _read_ahead(pool, batches, read):
                        run(batch, waves)
                        bar.update(len(batch))
    finally:
        torch.set_num_threads(threads)
        model.to(home).train(was_training)
    if off:
        first = min(off)
        log.warning(
            "%d file(s) are not as long as given, e.g. %s: %d samples given; embedded at their real length",
            len(off),
            paths[first],
            lengths[first],
        )
    return emb


def cosine_scores(emb: np.ndarray, index_a: np.ndarray, index_b: np.ndarray, chunk: int = 100_000) -> np.ndarray:
    """Cosine scores of L2-normalised rows. emb: (N, D); index_a, index_b: (M,) → scores (M,) float64."""
    scores = np.empty(len(index_a), dtype=np.float64)
    for start in range(0, len(index_a), chunk):
        a = emb[index_a[start : start + chunk]]
        b = emb[index_b[start : start + chunk]]
        scores[start : start + chunk] = np.einsum("ij,ij->i", a, b)
    return scores


def evaluate_trials(
    model: torch.nn.Module,
    trials: Sequence[Trial],
    root: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    batch_seconds: float = 240.0,
    max_seconds: float | None = None,
    show_progress: bool = True,
    precision: str = "fp32",
) -> dict:
    """Score a trial list: embed every distinct file once (``root`` / path), cosine-score each trial.

    Returns dict: ``eer`` (%), ``min_dcf`` (p_target 0.05), ``min_dcf_0.01``, ``n_trials``,
    ``n_files``, ``scores`` (M,) float64 and ``labels`` (M,) int64 in trial order.
    """
    if not trials:
        raise ValueError("trial list is empty")
    root = Path(root)
    index: dict[str, int] = {}
    for trial in trials:
        for rel in (trial.path_a, trial.path_b):
            index.setdefault(rel, len(index))
    files = list(index)
    emb = embed_files(
        model,
        [root / rel for rel in files],
        device=device,
        batch_seconds=batch_seconds,
        max_seconds=max_seconds,
        show_progress=show_progress,
        precision=precision,
    )
    index_a = np.array([index[t.path_a] for t in trials])
    index_b = np.array([index[t.path_b] for t in trials])
    scores = cosine_scores(emb, index_a, index_b)
    labels = np.array([int(t.label) for t in trials], dtype=np.int64)
    eer, (min_dcf, min_dcf_01) = eer_and_min_dcf(scores, labels, p_targets=(0.05, 0.01))
    result = {
        "eer": eer,
        "min_dcf": min_dcf,
        "min_dcf_0.01": min_dcf_01,
        "n_trials": len(trials),
        "n_files": len(files),
        "scores": scores,
        "labels": labels,
    }
    log.info(
        "trials %d, files %d: EER %.3f%%, minDCF(0.05) %.4f", len(trials), len(files), result["eer"], result["min_dcf"]
    )
    return result
