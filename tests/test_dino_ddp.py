"""DINO under torchrun (2 ranks, gloo on CPUs): the loss and centre over ranks equal one process on the
global batch, and a 2-rank DINO Stage I finishes with a teacher checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from corpus_params import tiny_data_params
from ddp_dino_worker import GLOBAL_BATCH, N_GLOBAL, OUT_DIM, global_batch, rank_rows

from lgl_helpers.core.models import load_encoder
from lgl_helpers.training import stage1
from lgl_helpers.training.stage1.dino import DinoLoss

WORLD = 2


@pytest.fixture(scope="module")
def worker_results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dino_ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LGL_DIST_TIMEOUT_MINUTES": "3"}
    worker = Path(__file__).with_name("ddp_dino_worker.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}", str(worker)]
    done = subprocess.run([*command, str(out)], capture_output=True, text=True, timeout=300, env=env, cwd=out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_two_ranks_dino_loss_and_centre_equal_one_process(worker_results):
    student, teacher = global_batch()
    student.requires_grad_(True)
    loss_fn = DinoLoss(OUT_DIM, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.fill_(0.1)
    loss, _ = loss_fn(student, teacher, N_GLOBAL, teacher_temp=0.04)
    loss.backward()
    loss_fn.update_center(teacher)
    ranks = [torch.load(worker_results / f"dino_rank{r}.pt") for r in range(WORLD)]
    assert ranks[0]["mean_loss"] == pytest.approx(float(loss.detach()), rel=1e-6)
    # every rank keeps the centre of the whole batch (all-reduced), the one process's
    for part in ranks:
        torch.testing.assert_close(part["center"], loss_fn.center, rtol=1e-6, atol=1e-7)
    # DDP averages the ranks' gradients: 1/W of each rank's gradient is the one process's for its rows
    grad = torch.zeros_like(student)
    for r, part in enumerate(ranks):
        grad[rank_rows(student.shape[0] // GLOBAL_BATCH, r, WORLD)] = part["grad"] / WORLD
    torch.testing.assert_close(grad, student.grad, rtol=1e-5, atol=1e-8)


@pytest.mark.slow
def test_dino_stage1_on_two_ranks_finishes_with_the_teacher(tiny_corpus, tmp_path):
    config = stage1.Stage1Config(
        run_name="ddp",
        runs_dir=str(tmp_path),
        **tiny_data_params(tiny_corpus),
        channels=8,
        mfa_channels=32,
        batch_size=8,
        epochs=2,
        test_interval=1,
        workers=0,
        device="cpu",
        interactive=False,
        nproc=WORLD,
        stage1_method="dino",
        global_frames=30,
        local_crops=1,
        local_frames=20,
        dino_out_dim=32,
        dino_hidden_dim=16,
        dino_bottleneck_dim=8,
        dino_warmup_epochs=1,
        norm_cohort="none",
    )
    result = stage1.train_stage1(config)
    assert result["completed"] and result["stage1_method"] == "dino"
    assert [r["epoch"] for r in result["history"]] == [0, 1, 2]
    assert load_encoder(stage1.stage_folder(config) / "best.model").channels == 8
