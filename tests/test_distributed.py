"""Data-parallel training (lgl_helpers.core.distributed): the sampler's shares in one process, and real
2-rank runs under torchrun with the gloo backend on CPUs: the contrastive loss over ranks, the loss gate
when a rank selects nothing, Stage I and Stage II end to end, and resuming at an epoch boundary.

The torchrun tests take about 3 minutes on 2 cores (each launch starts two Python processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus_params import tiny_data_params

from lgl_helpers.core import distributed
from lgl_helpers.core.data import EpochSampler
from lgl_helpers.core.losses import ContrastiveLoss
from lgl_helpers.timings import PartTimes
from lgl_helpers.training import launch
from lgl_helpers.training import stage1 as stage1_pkg
from lgl_helpers.training import stage2 as stage2_pkg
from lgl_helpers.training.stage2.engine import Engine
from lgl_helpers.training.state import load_checkpoint

WORLD = 2
LAUNCH_TIMEOUT = 300  # seconds: a hang (a rank left out of a collective) fails the test instead of CI


def _torchrun(args: list[str], out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LGL_DIST_TIMEOUT_MINUTES": "3"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT, env=env, cwd=out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_sampler_shares_are_slices_of_the_one_process_batches():
    one = [key[0] for key in EpochSampler(21, seed=3, global_batch=8)]
    shares = []
    for rank in range(WORLD):
        sampler = EpochSampler(21, seed=3, global_batch=8, rank=rank, world_size=WORLD)
        sampler.set_epoch(0)
        shares.append([key[0] for key in sampler])
        assert len(sampler) == 8  # 2 whole global batches of 8, 4 items each per rank
    for batch in range(2):
        merged = shares[0][4 * batch : 4 * batch + 4] + shares[1][4 * batch : 4 * batch + 4]
        assert merged == one[8 * batch : 8 * batch + 8]


def test_sampler_rejects_a_batch_the_ranks_cannot_share():
    with pytest.raises(ValueError, match="global_batch=9 must be a multiple of world_size=2"):
        EpochSampler(20, global_batch=9, rank=0, world_size=2)


@pytest.fixture(scope="module")
def worker_results(tiny_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp_worker")
    _torchrun([str(Path(__file__).with_name("ddp_worker.py")), str(out), str(tiny_corpus)], out)
    return out


def test_a_failed_launch_names_the_ranks_error_above_torchruns_traceback(capsys):
    # A rank's one-line error, then more lines of torchrun's report than the tail keeps.
    script = (
        "import sys; print('lgl-kit train: error: FileNotFoundError: iter_01/T/epoch_001.model', file=sys.stderr); "
        f"[print('torchrun report', i) for i in range({launch.TAIL_LINES + 10})]; sys.exit(1)"
    )
    with pytest.raises(RuntimeError) as failed:
        launch.stream([sys.executable, "-c", script])
    message = str(failed.value)
    assert "exited with status 1; the ranks' errors:\nlgl-kit train: error: FileNotFoundError: iter_01" in message
    tail = message.split("its last lines:\n", 1)[1]
    assert tail.count("torchrun report") == launch.TAIL_LINES and "error:" not in tail  # it scrolled out of the tail
    assert "lgl-kit train: error:" in capsys.readouterr().out  # and the output was streamed as it came


@pytest.mark.parametrize("main_rank", [False, True])
def test_only_rank_0_deletes_a_finished_phase_s_last_checkpoint(tmp_path, monkeypatch, main_rank):
    # A finished phase L whose last epoch is not its best: that checkpoint goes, deleted by rank 0 only
    # (two ranks deleting it at once raced; the one that found it gone failed the run).
    engine = Engine.__new__(Engine)  # the bookkeeping alone: no data, no model
    engine.config = stage2_pkg.LGLConfig(max_iterations=1)
    engine.stage_dir, engine.last_commit, engine.times = tmp_path, time.perf_counter(), PartTimes()
    engine.state = {"wall_seconds": 0.0, "phase": "L"}
    for epoch in (1, 2):
        (tmp_path / f"epoch_00{epoch}.model").write_bytes(b"checkpoint")
    info = {"eers": [30.0, 31.0], "best_epoch": 1, "best_eer": 30.0}
    info |= {"best_model": "epoch_001.model", "last_model": "epoch_002.model"}
    monkeypatch.setattr(distributed, "is_main", lambda: main_rank)
    engine.advance(1, "L", info)
    assert info["last_model"] == "epoch_001.model" and engine.state["phase"] == "done"
    assert (tmp_path / "epoch_002.model").exists() is not main_rank
    assert (tmp_path / "epoch_001.model").exists()


@pytest.mark.slow
def test_two_ranks_contrastive_loss_equals_one_process_on_the_global_batch(worker_results):
    features = torch.randn(8, 2, 192, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    loss_fn = ContrastiveLoss()
    loss, _ = loss_fn(features)
    loss.backward()
    loss = float(loss.detach())
    ranks = [torch.load(worker_results / f"contrastive_rank{r}.pt") for r in range(WORLD)]
    mean_loss = json.loads((worker_results / "contrastive_rank0.json").read_text())["mean_loss"]
    assert mean_loss == pytest.approx(loss, rel=1e-6)
    # Each rank's gradient holds every rank's loss terms (all-gather with gradient); DDP's average is 1/W of it.
    gathered = torch.cat([r["grad"] for r in ranks]) / WORLD
    torch.testing.assert_close(gathered, features.grad, rtol=1e-5, atol=1e-7)
    w_grad = sum(r["w_grad"] for r in ranks) / WORLD
    torch.testing.assert_close(w_grad, loss_fn.w.grad, rtol=1e-5, atol=1e-7)


def _gate_results(out: Path, case: str) -> tuple[list[dict], list[dict]]:
    stats = [json.loads((out / f"{case}_rank{r}.json").read_text()) for r in range(WORLD)]
    weights = [torch.load(out / f"{case}_rank{r}.pt") for r in range(WORLD)]
    return stats, weights


def test_a_rank_that_selects_nothing_still_trains_with_the_others(worker_results):
    stats, weights = _gate_results(worker_results, "gate_one_rank_empty")
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0)
    for rank_stats in stats:
        assert rank_stats["skipped_batches"] == 0  # rank 0's samples pass: no batch is skipped anywhere
        assert rank_stats["n_selected"] * 2 == rank_stats["n_samples"]  # counted over both ranks
        assert rank_stats["n_records"] == rank_stats["n_samples"]  # every rank's per-sample losses gathered
        assert rank_stats["max_change"] > 0


def test_a_batch_no_rank_selects_is_skipped_everywhere(worker_results):
    stats, _ = _gate_results(worker_results, "gate_all_empty")
    for rank_stats in stats:
        assert rank_stats["skipped_batches"] == rank_stats["n_batches"] > 0
        assert rank_stats["max_change"] == 0.0


def _stage1_config(corpus: Path, runs_dir: Path, run_name: str, **overrides) -> stage1_pkg.Stage1Config:
    params = dict(
        run_name=run_name,
        runs_dir=str(runs_dir),
        **tiny_data_params(corpus),
        channels=16,
        mfa_channels=64,
        frames=30,
        batch_size=8,
        epochs=2,
        test_interval=1,
        workers=0,
        device="cpu",
        interactive=False,
        nproc=WORLD,
    )
    params.update(overrides)
    return stage1_pkg.Stage1Config(**params)


@pytest.fixture(scope="module")
def stage1_two_ranks(tiny_corpus, tmp_path_factory):
    """Stage I on 2 ranks launched from a kernel-like call (nproc=2), as notebook 01 does: 2 epochs."""
    runs_dir = tmp_path_factory.mktemp("ddp_runs")
    config = _stage1_config(tiny_corpus, runs_dir, "straight")
    seen = []
    result = stage1_pkg.train_stage1(config, on_epoch=lambda record, history: seen.append(record["epoch"]))
    return config, result, seen


@pytest.mark.slow
def test_stage1_under_torchrun_finishes_and_reports(stage1_two_ranks):
    config, result, seen = stage1_two_ranks
    stage_dir = Path(result["stage_dir"])
    assert result["completed"] and result["epochs_run"] == 2
    assert seen == [0, 1, 2]
    assert 0 <= result["eer"] <= 100
    assert (stage_dir / launch.LAUNCH_FILE).is_file() and (stage_dir / "stage1_params.json").is_file()
    # Rank 1 logs errors only (into its own file), and had none.
    assert all(path.stat().st_size == 0 for path in stage_dir.glob("stage1.rank*.log"))


@pytest.mark.slow
def test_stage1_resumed_at_an_epoch_boundary_equals_the_straight_run(stage1_two_ranks, tiny_corpus):
    config, result, _ = stage1_two_ranks
    runs_dir = Path(config.runs_dir)
    stage1_pkg.train_stage1(_stage1_config(tiny_corpus, runs_dir, "resumed", epochs=1))
    resumed = stage1_pkg.train_stage1(_stage1_config(tiny_corpus, runs_dir, "resumed"))
    assert resumed["completed"]
    straight = load_checkpoint(Path(result["stage_dir"]) / "checkpoints" / "last.model")
    again = load_checkpoint(Path(resumed["stage_dir"]) / "checkpoints" / "last.model")
    for key, value in straight["encoder"].items():
        torch.testing.assert_close(again["encoder"][key], value, rtol=0, atol=0)
    assert [r.get("eer") for r in again["history"]] == [r.get("eer") for r in straight["history"]]


@pytest.mark.slow
def test_stage2_lgl_under_torchrun_finishes(stage1_two_ranks, tiny_corpus):
    config, result, _ = stage1_two_ranks
    lgl = stage2_pkg.LGLConfig(
        run_name="straight",
        runs_dir=config.runs_dir,
        init_model=str(Path(result["stage_dir"]) / "best.model"),
        train_list=config.train_list,
        train_root=config.train_root,
        test_root=config.test_root,
        trials=config.trials,
        musan_root=config.musan_root,
        rir_root=config.rir_root,
        n_clusters=8,
        max_iterations=1,
        max_epochs_per_phase=2,
        frames=30,
        batch_size=8,
        gates=[0.5],
        workers=0,
        device="cpu",
        interactive=False,
        nproc=WORLD,
    )
    out = stage2_pkg.run_stage2(lgl)
    assert out["status"] == "done"
    phases = [(r["phase"], r["epoch"]) for r in out["state"]["history"]]
    assert phases == [("T", 1), ("T", 2), ("L", 1), ("L", 2)]
    stage_dir = Path(out["stage_dir"])
    labels = np.loadtxt(stage_dir / "iter_01" / "pseudo_labels.txt", dtype=str)
    assert len(labels) == 48  # rank 0 clustered the whole list
    assert (stage_dir / "best.model").is_file() and 0 <= out["eer"] <= 100
