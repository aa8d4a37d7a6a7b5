"""The kit's GPU check: one command that measures what a VoxCeleb run on one GPU needs, each step timed and isolated.

Steps, in order (each in a process of its own with a time limit, so that a failure or a hang is
recorded and the rest still run):

- ``environment``: GPU, driver, torch / CUDA / cuDNN, which faiss build, torchaudio, CPU cores;
- ``cuda_tests``: ``pytest -m cuda tests/test_cuda.py`` (CUDA RNG capture/restore, TF32 and bf16 paths,
  ``sync_batchnorm``, a 1-rank NCCL group, the faiss GPU index when present);
- ``corpus``: the toy corpus the data steps read (the ``ci`` profile's ``small`` preset);
- ``train_eager``: Stage I and Stage II train steps at the ``full`` profile's shapes (C = 512, Stage I
  batch 300 × two 1.8 s crops, Stage II batch 400 × 3 s) in fp32 (TF32 off), TF32 and bf16:
  samples/s and peak GPU memory;
- ``loader``: Stage II batches (400 × 3 s, augmented as the profile trains) with 0 / 4 / 8 / 15 workers;
- ``embed``: embedding throughput (files/s of 8 s files) in fp32, TF32 and bf16, and how far the
  TF32 / bf16 embeddings are from the fp32 ones;
- ``kmeans``: 1,092,009 × 192 → 6,000 clusters as the ``full`` profile configures it (25 iterations,
  at most 256 points per centroid) with the faiss build installed;
- ``pipeline``: ``lgl-kit run --profile ci --set device=cuda`` (every notebook, headless), then ``lgl-kit report``;
- ``precision_eer``: one short Stage I run per precision (fp32, TF32, bf16; same seed and data), the
  Vox-style EER of each with its speaker-bootstrap interval and the paired difference to fp32;
- ``train_compiled``: the train steps again under ``torch.compile``.

Results: ``OUT/gpu_check.json`` and ``OUT/gpu_check.md``, rewritten after every step. The check stops
starting new steps once ``--budget-s`` is spent (a step left out says so). ``--dry-run`` runs every
step on the CPU at tiny sizes in seconds (CI runs it, so the script cannot rot).

Usage:
    python benchmarks/gpu_check.py OUT [--dry-run] [--budget-s 430] [--steps ...]
    bash scripts/gpu_check.sh OUT      # on the GPU machine: offline install from wheelhouse/gpu, then this
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STEPS = (
    "environment",
    "cuda_tests",
    "corpus",
    "train_eager",
    "loader",
    "embed",
    "kmeans",
    "pipeline",
    "precision_eer",
    "train_compiled",
)
# Seconds a step may take at most on the GPU (the budget may leave it less).
CAPS = {
    "environment": 30,
    "cuda_tests": 60,
    "corpus": 45,
    "train_eager": 75,
    "loader": 60,
    "embed": 45,
    "kmeans": 150,
    "pipeline": 150,
    "precision_eer": 90,
    "train_compiled": 240,
}
PRECISIONS = (
    "fp32",
    "tf32",
    "bf16",
)  # fp32: TF32 off; tf32: TF32 matmuls and convolutions (the kit's training default on CUDA)


class Sizes:
    """The shapes of a real check (the ``full`` profile's) or of a dry run."""

    def __init__(self, dry: bool):
        self.dry = dry
        self.device = "cpu" if dry else "cuda"
        self.channels, self.mfa_channels = (16, 64) if dry else (512, 1536)
        self.stage1_batch, self.stage1_frames = (4, 40) if dry else (300, 180)
        self.stage2_batch, self.stage2_frames = (4, 40) if dry else (400, 300)
        self.n_clusters_head = 20 if dry else 6000
        self.train_steps, self.warmup_steps = (1, 1) if dry else (5, 2)
        self.workers = (0, 1) if dry else (0, 4, 8, 15)
        self.loader_batch, self.loader_batches = (4, 2) if dry else (400, 6)
        self.embed_files, self.embed_seconds = (4, 1.0) if dry else (400, 8.0)
        self.kmeans_points, self.kmeans_k = (3000, 10) if dry else (1_092_009, 6000)
        self.compile_backend = "eager" if dry else "inductor"  # a dry run traces without generating code


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _sync(device) -> float:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


@contextlib.contextmanager
def _numerics(precision: str, device):
    """TF32 on for ``tf32``, off for ``fp32`` and ``bf16`` (bf16 autocast around the forward is the caller's)."""
    import torch

    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def _autocast(precision: str, device):
    from lgl_helpers.core.embed import autocast_context

    return autocast_context("bf16" if precision == "bf16" else "fp32", device)


def _peak_mib(device) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.device(device).type == "cuda" else None


def _reset_peak(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _toy(out: Path) -> Path:
    return out / "toy_small"


# ----------------------------------------------------------------------------------------------
# Steps: each returns a JSON-able dict
# ----------------------------------------------------------------------------------------------


def step_environment(out: Path, sizes: Sizes) -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_cores": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "cudnn": torch.backends.cudnn.version(),
            "nccl": ".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else None,
        }
    if shutil.which("nvidia-smi"):
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"], capture_output=True, text=True
        )
        info["driver"] = query.stdout.strip() or query.stderr.strip()
    for module in ("torchaudio", "faiss", "soundfile"):  # the compiled ones: do they load?
        try:
            info[module] = getattr(__import__(module), "__version__", "present")
        except Exception as error:  # a missing or broken package is a finding, not a crash
            info[module] = f"missing: {type(error).__name__}: {error}"
    from importlib import metadata

    for package in ("papermill", "ipykernel", "ipywidgets", "umap-learn", "pytest"):  # the pipeline step imports these
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "missing"
    try:
        from lgl_helpers.clustering.kmeans import faiss_gpu_available

        info["faiss_build"] = "GPU" if faiss_gpu_available() else "CPU"
    except Exception as error:
        info["faiss_build"] = f"unusable: {error}"
    if sizes.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"torch {torch.__version__} sees no CUDA device: {info}")
    return info


def step_cuda_tests(out: Path, sizes: Sizes) -> dict:
    junit = out / "cuda_tests.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
         str(ROOT / "tests" / "test_cuda.py")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    import xml.etree.ElementTree as ET

    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    cases = []
    for case in suite.iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                outcome += f": {(child.get('message') or '')[:160]}"
        cases.append({"test": case.get("name"), "outcome": outcome})
    result = {
        "passed": sum(c["outcome"] == "passed" for c in cases),
        "skipped": sum(c["outcome"].startswith("skipped") for c in cases),
        "failed": sum(c["outcome"].startswith(("failed", "error")) for c in cases),
        "tests": cases,
    }
    if proc.returncode not in (0, 5) or result["failed"]:
        raise RuntimeError(f"{result['failed']} CUDA test(s) failed: {proc.stdout[-1500:]}")
    return result


def step_corpus(out: Path, sizes: Sizes) -> dict:
    from lgl_helpers.corpus.data_setup import ensure_toy_corpus

    root = ensure_toy_corpus(_toy(out), "small")
    n_train = sum(1 for _ in open(root / "lists" / "train_list.txt"))
    return {"root": str(root), "train_utterances": n_train}


def _stage1_models(sizes: Sizes, device):
    import torch

    from lgl_helpers.core.losses import AATDiscriminator, ContrastiveLoss
    from lgl_helpers.core.models import ECAPATDNN
    from lgl_helpers.training.executor import Stage1Models

    torch.manual_seed(0)
    encoder = ECAPATDNN(sizes.channels, sizes.mfa_channels).to(device)
    loss_fn, aat = ContrastiveLoss().to(device), AATDiscriminator().to(device)
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(loss_fn.parameters()), lr=1e-3)
    aat_optimizer = torch.optim.Adam(aat.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.9)
    return Stage1Models(encoder, loss_fn, aat, optimizer, aat_optimizer, scheduler)


def _train_rate(stage: str, precision: str, compiled: bool, sizes: Sizes) -> dict:
    """Samples/s and peak GPU memory of one stage's train steps, random audio, clean recipes."""
    import torch

    from lgl_helpers.core.augment import clean_recipe, collate_recipes, segment_samples
    from lgl_helpers.core.losses import AAMSoftmax
    from lgl_helpers.core.models import ECAPATDNN
    from lgl_helpers.training.executor import EncoderWithHead, stage1_step

    device = torch.device(sizes.device)
    _reset_peak(device)
    if stage == "stage1":
        batch_size, length = sizes.stage1_batch, segment_samples(sizes.stage1_frames)
        models = _stage1_models(sizes, device)
        if compiled:
            models.views = torch.compile(models.views, backend=sizes.compile_backend)
        recipes = collate_recipes([clean_recipe(length)] * batch_size)
        batch = {
            "crops": torch.randn(batch_size, 2, length),
            "recipe_a": recipes,
            "recipe_s": recipes,
            "recipe_b": recipes,
        }

        def step():
            stage1_step(models, batch, 3.0, device, lambda: _autocast(precision, device))
    else:
        batch_size, length = sizes.stage2_batch, segment_samples(sizes.stage2_frames)
        torch.manual_seed(0)
        model = EncoderWithHead(ECAPATDNN(sizes.channels, sizes.mfa_channels), AAMSoftmax(sizes.n_clusters_head))
        model = model.to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        forward = torch.compile(model, backend=sizes.compile_backend) if compiled else model
        wave = torch.randn(batch_size, length, device=device)
        labels = torch.randint(0, sizes.n_clusters_head, (batch_size,), device=device)

        def step():
            with _autocast(precision, device):
                output = forward(wave, labels, float("inf"))
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            optimizer.step()

    with _numerics(precision, device):
        start = time.perf_counter()
        for _ in range(sizes.warmup_steps):  # kernels chosen, allocator pools and (compiled) graphs built
            step()
        first_s = _sync(device) - start
        start = _sync(device)
        for _ in range(sizes.train_steps):
            step()
        seconds = _sync(device) - start
    return {
        "stage": stage,
        "precision": precision,
        "compiled": compiled,
        "batch": batch_size,
        "samples_per_s": round(sizes.train_steps * batch_size / seconds, 1),
        "step_s": round(seconds / sizes.train_steps, 4),
        "warmup_s": round(first_s, 1),
        "peak_gpu_mib": _peak_mib(device),
    }


def _rows_file(out: Path, name: str) -> Path:
    """Where a step appends its rows as they come, so that a step stopped at its limit keeps what it measured."""
    return out / "steps" / f"{name}.rows.jsonl"


def _keep(out: Path, name: str, row: dict) -> None:
    path = _rows_file(out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(row, default=str) + "\n")
    print(json.dumps(row, default=str), flush=True)


def _train_table(out: Path, sizes: Sizes, compiled: bool) -> dict:
    rows = []
    name = "train_compiled" if compiled else "train_eager"
    # compiled: the precisions a run would use first, since compiling may not finish within the limit
    order = ("tf32", "bf16", "fp32") if compiled else PRECISIONS
    if compiled and sizes.dry:
        order = order[:1]  # the same code for every precision; tracing costs a dry run most of its time
    for stage in ("stage1", "stage2"):
        for precision in order:
            try:
                rows.append(_train_rate(stage, precision, compiled, sizes))
            except Exception as error:  # one configuration's failure (out of memory, a compiler error) is a row
                rows.append(
                    {
                        "stage": stage,
                        "precision": precision,
                        "compiled": compiled,
                        "error": f"{type(error).__name__}: {str(error)[:300]}",
                    }
                )
            _keep(out, name, rows[-1])
    return {"rows": rows}


def step_train_eager(out: Path, sizes: Sizes) -> dict:
    return _train_table(out, sizes, compiled=False)


def step_train_compiled(out: Path, sizes: Sizes) -> dict:
    return _train_table(out, sizes, compiled=True)


def step_loader(out: Path, sizes: Sizes) -> dict:
    import torch

    from lgl_helpers.core import augment, data
    from lgl_helpers.corpus.lists import read_train_list

    root = _toy(out)
    entries = read_train_list(root / "lists" / "train_list.txt")
    sources = augment.AugmentSources.from_roots(root / "musan_split", root / "rirs")
    # As many items as the batches read, so that every worker count reads the same files
    needed = sizes.loader_batch * (sizes.loader_batches + 2)
    entries = (entries * (needed // len(entries) + 1))[:needed]
    dataset = data.Stage2Dataset(
        entries, root / "train", np.zeros(len(entries), dtype=np.int64), sizes.stage2_frames, sources=sources
    )
    rows = []
    for workers in sizes.workers:
        loader = data.make_loader(dataset, sizes.loader_batch, workers, seed=0, device=sizes.device)
        loader.sampler.set_epoch(0)
        iterator = iter(loader)
        start = time.perf_counter()
        data.stage2_inputs(next(iterator), sizes.device)  # workers started, the first batches in flight
        first_s = time.perf_counter() - start
        start = _sync(sizes.device)
        for _ in range(sizes.loader_batches):
            wave, _ = data.stage2_inputs(next(iterator), sizes.device)  # augmentation applied where training applies it
        seconds = _sync(sizes.device) - start
        rows.append(
            {
                "workers": workers,
                "samples_per_s": round(sizes.loader_batches * sizes.loader_batch / seconds, 1),
                "first_batch_s": round(first_s, 1),
            }
        )
        _keep(out, "loader", rows[-1])
        del iterator, loader
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return {"batch": sizes.loader_batch, "rows": rows}


def step_embed(out: Path, sizes: Sizes) -> dict:
    import soundfile
    import torch

    from lgl_helpers.core import embed
    from lgl_helpers.core.models import ECAPATDNN

    folder = out / "embed_wavs"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = round(sizes.embed_seconds * 16000)
    paths = []
    for i in range(sizes.embed_files):
        path = folder / f"{i:05d}.wav"
        if not path.is_file():
            soundfile.write(path, (0.1 * rng.standard_normal(n)).astype(np.float32), 16000, subtype="PCM_16")
        paths.append(path)
    torch.manual_seed(0)
    model = ECAPATDNN(sizes.channels, sizes.mfa_channels).eval()
    rows, reference = [], None
    for precision in PRECISIONS:
        # embed_files runs fp32 with TF32 off; "tf32" keeps the TF32 settings the training turns on
        keep_tf32 = contextlib.nullcontext if precision == "tf32" else embed._float32_convolutions
        original = embed._float32_convolutions
        embed._float32_convolutions = keep_tf32
        try:
            with _numerics(precision, sizes.device):
                embed.embed_files(model, paths[:2], device=sizes.device, show_progress=False)  # warm-up
                start = _sync(sizes.device)
                emb = embed.embed_files(model, paths, device=sizes.device, show_progress=False,
                                        precision="bf16" if precision == "bf16" else "fp32")  # fmt: skip
                seconds = _sync(sizes.device) - start
        finally:
            embed._float32_convolutions = original
        reference = emb if reference is None else reference
        cosine = np.sum(emb * reference, axis=1)
        rows.append(
            {
                "precision": precision,
                "files_per_s": round(len(paths) / seconds, 1),
                "audio_hours_per_min": round(len(paths) * sizes.embed_seconds / 3600 / seconds * 60, 2),
                "min_cosine_to_fp32": round(float(cosine.min()), 6),
            }
        )
        _keep(out, "embed", rows[-1])
    return {"files": len(paths), "seconds_each": sizes.embed_seconds, "rows": rows}


def step_kmeans(out: Path, sizes: Sizes) -> dict:
    import faiss

    from lgl_helpers.clustering.kmeans import faiss_gpu_available, kmeans_pseudo_labels

    rng = np.random.default_rng(0)
    n, d = sizes.kmeans_points, 192
    speakers = rng.integers(0, max(2, sizes.kmeans_k), n)
    centres = rng.standard_normal((max(2, sizes.kmeans_k), d), dtype=np.float32)
    emb = centres[speakers] + rng.standard_normal((n, d), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    start = time.perf_counter()
    labels, _ = kmeans_pseudo_labels(
        emb, sizes.kmeans_k, n_iter=25, seed=1234, max_points_per_centroid=256, use_gpu="auto"
    )
    seconds = time.perf_counter() - start
    return {
        "points": n,
        "k": sizes.kmeans_k,
        "index": "GPU" if faiss_gpu_available() else "CPU",
        "threads": faiss.omp_get_max_threads(),
        "seconds": round(seconds, 1),
        "non_empty": int(np.unique(labels).size),
    }


def step_pipeline(out: Path, sizes: Sizes) -> dict:
    runs_dir = out / "runs"
    command = [
        sys.executable, "-c", "from lgl_helpers.app.cli import main; main()", "run", "--profile", "ci",
        "--run-name", "gpu_ci", "--runs-dir", str(runs_dir), "--set", f"device={sizes.device}",
        "--set", f"00_data_setup.toy_root={_toy(out)}",
    ]  # fmt: skip
    if sizes.dry:
        command += ["--only", "00_data_setup"]  # the rest of the pipeline is the tests' (tests/test_pipeline*.py)
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    run_s = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"lgl-kit run exited {proc.returncode}: {(proc.stdout + proc.stderr)[-1500:]}")
    result = {"run_s": round(run_s, 1)}
    pipeline = json.loads((runs_dir / "gpu_ci" / "pipeline.json").read_text())
    result["notebooks"] = {name: r.get("wall_seconds") for name, r in pipeline["notebooks"].items()}
    if not sizes.dry:
        report = subprocess.run(
            [sys.executable, "-c", "from lgl_helpers.app.cli import main; main()", "report", "--run-name", "gpu_ci",
             "--runs-dir", str(runs_dir)],
            capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        if report.returncode:
            raise RuntimeError(f"lgl-kit report exited {report.returncode}: {report.stderr[-800:]}")
        summary = json.loads((runs_dir / "gpu_ci" / "report.json").read_text())
        result["eer"] = {key: (summary.get(key) or {}).get("eer") for key in ("stage1", "baseline", "lgl")}
    return result


def step_precision_eer(out: Path, sizes: Sizes) -> dict:
    """Stage I of the ``ci`` profile (dry run: one epoch of a narrower model) once per precision, same seed."""
    from lgl_helpers.app.planning import load_profile
    from lgl_helpers.core import bootstrap
    from lgl_helpers.core.metrics import TEST_SCORES, read_trial_scores
    from lgl_helpers.training.stage1 import trainer
    from lgl_helpers.training.stage1.config import Stage1Config

    profile = load_profile("ci")
    params = {**profile.get("common", {}), **profile.get("01_stage1_contrastive", {})}
    fields = set(Stage1Config.__dataclass_fields__)
    root = _toy(out)
    params = {k: v for k, v in params.items() if k in fields} | {
        "runs_dir": str(out / "runs"),
        "train_list": str(root / "lists" / "train_list.txt"),
        "train_root": str(root / "train"),
        "test_root": str(root / "test"),
        "trials": str(root / "lists" / "trials.txt"),
        "musan_root": str(root / "musan_split"),
        "rir_root": str(root / "rirs"),
        "device": sizes.device,
        "interactive": False,
        "norm_cohort": "none",
    }
    if sizes.dry:
        params |= {"channels": 8, "mfa_channels": 32, "epochs": 1, "test_interval": 1, "batch_size": 16, "frames": 20}
    rows, scored = [], {}
    for precision in PRECISIONS:
        config = Stage1Config(
            **params, run_name=f"precision_{precision}", precision="bf16" if precision == "bf16" else "fp32"
        )
        original = trainer.enable_tf32
        if precision != "tf32":  # the trainer turns TF32 on for CUDA; fp32 and bf16 runs keep it off
            trainer.enable_tf32 = lambda device: None
        try:
            with _numerics(precision, sizes.device):
                start = time.perf_counter()
                metrics = trainer.train_stage1(config)
                seconds = time.perf_counter() - start
        finally:
            trainer.enable_tf32 = original
        scored[precision] = read_trial_scores(Path(metrics["stage_dir"]) / TEST_SCORES)
        rows.append({"precision": precision, "eer": round(metrics["eer"], 3), "seconds": round(seconds, 1)})
        _keep(out, "precision_eer", rows[-1])
    trials = scored["fp32"][0]
    resamples = bootstrap.SpeakerBootstrap(
        [t.label for t in trials],
        bootstrap.speaker_ids([t.path_a for t in trials]),
        bootstrap.speaker_ids([t.path_b for t in trials]),
    )
    evaluated = {p: resamples.evaluate(scored[p][1]) for p in PRECISIONS}
    for row in rows:
        row["eer_ci"] = [round(x, 3) for x in resamples.intervals(evaluated[row["precision"]])["eer_ci"]]
        if row["precision"] != "fp32":
            paired = resamples.paired(evaluated[row["precision"]], evaluated["fp32"])
            row["eer_diff_vs_fp32"] = round(paired["eer_diff"], 3)
            row["eer_diff_ci"] = [round(x, 3) for x in paired["eer_diff_ci"]]
    return {"trials": len(trials), "rows": rows}


# ----------------------------------------------------------------------------------------------
# Runner and report
# ----------------------------------------------------------------------------------------------


def run_one(out: Path, name: str, dry: bool) -> None:
    """Run one step in this process; write OUT/steps/<name>.json."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    record = {"step": name}
    start = time.perf_counter()
    try:
        record["result"] = globals()[f"step_{name}"](out, Sizes(dry))
        record["status"] = "ok"
    except Exception as error:
        import traceback

        record["status"] = "failed"
        record["error"] = f"{type(error).__name__}: {error}"[:2000]
        record["traceback"] = traceback.format_exc()[-3000:]
    record["seconds"] = round(time.perf_counter() - start, 1)
    (out / "steps").mkdir(parents=True, exist_ok=True)
    (out / "steps" / f"{name}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")


def _fmt_rows(rows: list[dict], keys: list[str]) -> list[str]:
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
    return lines


def _summary(record: dict) -> str:
    if record["status"] == "partial":
        return f"{len(record['result']['rows'])} rows below, then " + record.get("error", "").replace("\n", " ")[:200]
    if record["status"] != "ok":
        return record.get("error", "").replace("\n", " ")[:300]
    result = record["result"]
    if "rows" in result:
        return f"{len(result['rows'])} rows below"
    return json.dumps({k: v for k, v in result.items() if k != "tests"}, default=str)[:300]


def write_report(out: Path, records: dict, meta: dict) -> None:
    (out / "gpu_check.json").write_text(json.dumps({"meta": meta, "steps": records}, indent=2, default=str) + "\n")
    lines = [f"# GPU check ({'dry run, CPU' if meta['dry_run'] else 'CUDA'})", ""]
    lines += [", ".join(f"{k}: {v}" for k, v in meta.items()), ""]
    lines += ["| step | status | seconds | result |", "| --- | --- | ---: | --- |"]
    for name in STEPS:
        record = records.get(name)
        if record is None:
            continue
        lines.append(f"| {name} | {record['status']} | {record.get('seconds', '')} | {_summary(record)} |")
    tables = {
        "train_eager": [
            "stage",
            "precision",
            "compiled",
            "batch",
            "samples_per_s",
            "step_s",
            "warmup_s",
            "peak_gpu_mib",
            "error",
        ],
        "train_compiled": [
            "stage",
            "precision",
            "compiled",
            "batch",
            "samples_per_s",
            "step_s",
            "warmup_s",
            "peak_gpu_mib",
            "error",
        ],
        "loader": ["workers", "samples_per_s", "first_batch_s"],
        "embed": ["precision", "files_per_s", "audio_hours_per_min", "min_cosine_to_fp32"],
        "precision_eer": ["precision", "eer", "eer_ci", "eer_diff_vs_fp32", "eer_diff_ci", "seconds"],
    }
    for name, keys in tables.items():
        record = records.get(name)
        if record and record["status"] in ("ok", "partial"):
            lines += ["", f"## {name}", "", *_fmt_rows(record["result"]["rows"], keys)]
    tests = (records.get("cuda_tests") or {}).get("result", {}).get("tests")
    if tests:
        lines += ["", "## cuda_tests", "", *_fmt_rows(tests, ["test", "outcome"])]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder for gpu_check.md, gpu_check.json and the steps' files")
    ap.add_argument("--dry-run", action="store_true", help="every step on the CPU at tiny sizes, in seconds")
    ap.add_argument(
        "--budget-s", type=float, help="no step starts after this many seconds (default 430; none in a dry run)"
    )
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    ap.add_argument("--one", choices=STEPS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.budget_s is None:
        a.budget_s = float("inf") if a.dry_run else 430.0
    if a.one:
        run_one(a.out, a.one, a.dry_run)
        return
    start = time.perf_counter()
    meta = {
        "dry_run": a.dry_run,
        "budget_s": a.budget_s,
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    records: dict[str, dict] = {}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if a.dry_run:
        # Tiny tensors gain nothing from threads, and on a busy machine OpenMP's waiting threads stall every op
        env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for name in a.steps:
        left = a.budget_s - (time.perf_counter() - start)
        if left < 5:
            records[name] = {"step": name, "status": "not run", "error": f"the {a.budget_s:g} s budget was spent"}
            continue
        limit = left if a.dry_run else min(CAPS[name], left)
        print(f"[gpu_check] {name} (limit {limit:.0f} s) ...", flush=True)
        path = a.out / "steps" / f"{name}.json"
        path.unlink(missing_ok=True)
        _rows_file(a.out, name).unlink(missing_ok=True)
        tic = time.perf_counter()
        log = a.out / f"{name}.log"
        command = [sys.executable, __file__, str(a.out), "--one", name] + (["--dry-run"] if a.dry_run else [])
        with open(log, "w") as handle:
            proc = subprocess.Popen(
                command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
            )
            try:
                proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)  # the step's own process group: its workers and kernels too
                proc.wait()
        if path.is_file():
            records[name] = json.loads(path.read_text())
        else:
            tail = log.read_text()[-1500:] if log.is_file() else ""
            why = f"stopped at its {limit:.0f} s limit" if proc.returncode == -9 else f"exited {proc.returncode}"
            records[name] = {"step": name, "status": "failed", "error": f"{why}; log tail: {tail}"}
            rows = _rows_file(a.out, name)
            if rows.is_file():  # what it measured before it stopped
                records[name]["status"] = "partial"
                records[name]["result"] = {"rows": [json.loads(line) for line in rows.read_text().splitlines()]}
        records[name]["seconds"] = round(time.perf_counter() - tic, 1)
        print(f"[gpu_check] {name}: {records[name]['status']} in {records[name]['seconds']} s", flush=True)
        meta["total_s"] = round(time.perf_counter() - start, 1)
        write_report(a.out, records, meta)
    write_report(a.out, records, meta)
    print((a.out / "gpu_check.md").read_text())


if __name__ == "__main__":
    main()
