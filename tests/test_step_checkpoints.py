"""Mid-epoch checkpoints: the sampler's skip, timed checkpoints and SIGTERM in Stage I and Stage II,
each resumed run equal to an uninterrupted one (bitwise on the CPU)."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus_params import tiny_data_params

from lgl_helpers.core.augment import AugmentSources
from lgl_helpers.core.data import EpochSampler, Stage1Dataset, make_loader
from lgl_helpers.core.models import ECAPATDNN, save_encoder
from lgl_helpers.corpus.lists import read_train_list
from lgl_helpers.training import executor, stage1, stage2, step_checkpoints
from lgl_helpers.training.stage1 import scoring as stage1_scoring
from lgl_helpers.training.stage1 import trainer as stage1_trainer
from lgl_helpers.training.stage2 import executor as stage2_executor
from lgl_helpers.training.state import load_checkpoint
from lgl_helpers.training.step_checkpoints import StepCheckpoints, TrainingStopped

# Statistics of an epoch's record that depend on the training numbers only (not on timing).
STAGE1_STATS = ("loss", "contrastive_loss", "top1", "aat_loss", "disc_loss", "disc_acc", "lr")
STAGE2_STATS = ("loss", "accuracy", "n_samples", "n_selected", "fraction_selected", "skipped_batches", "eer")


class _FakeClock:
    """A stand-in for the ``time`` module whose ``monotonic`` seconds advance by ``step`` at every reading."""

    perf_counter = staticmethod(time.perf_counter)

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def monotonic(self) -> float:
        self.now += self.step
        return self.now


def _assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}.{key}"


def _assert_same_optimizer(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    for index, state in a["state"].items():
        _assert_same_tensors(state, b["state"][index], f"optimizer.state[{index}]")


# --- the data side --------------------------------------------------------------------------------


def test_sampler_skip_leaves_out_the_first_global_batches_on_every_rank():
    full = [key[0] for key in EpochSampler(21, seed=3, global_batch=4)]
    sampler = EpochSampler(21, seed=3, global_batch=4)
    sampler.set_epoch(0, skip_batches=2)
    assert [key[0] for key in sampler] == full[8:]
    for rank in range(2):
        whole = EpochSampler(21, seed=3, global_batch=4, rank=rank, world_size=2)
        part = EpochSampler(21, seed=3, global_batch=4, rank=rank, world_size=2)
        whole.set_epoch(5)
        part.set_epoch(5, skip_batches=3)
        assert list(part) == list(whole)[3 * 2 :] and len(part) == 2 * (5 - 3)
    sampler.set_epoch(1)
    assert len(sampler) == 21  # the skip holds for one epoch only
    with pytest.raises(ValueError, match="global_batch"):
        EpochSampler(21).set_epoch(0, skip_batches=1)


def test_skipped_loader_gives_the_rest_of_the_epoch_with_the_same_crops_and_augmentation(tiny_corpus):
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    sources = AugmentSources.from_roots(tiny_corpus / "musan_split", tiny_corpus / "rirs")
    dataset = Stage1Dataset(entries, tiny_corpus / "train", 30, sources, seed=4, check_files=False)
    loader = make_loader(dataset, 8, workers=0, seed=4, device="cpu")
    loader.sampler.set_epoch(2)
    full = list(loader)
    loader.sampler.set_epoch(2, skip_batches=4)
    rest = list(loader)
    assert len(rest) == len(full) - 4
    for a, b in zip(full[4:], rest, strict=True):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["crops"], b["crops"])
        for key in ("recipe_a", "recipe_s", "recipe_b"):
            for name, value in vars(a[key]).items():
                if isinstance(value, torch.Tensor):  # NaN: a part of the recipe that is not drawn
                    torch.testing.assert_close(value, getattr(b[key], name), rtol=0, atol=0, equal_nan=True)


# --- the checkpoint rule and the handler ----------------------------------------------------------


def test_timed_checkpoints_and_the_sigterm_handler_is_restored(monkeypatch):
    clock = _FakeClock(30.0)
    writes = []
    previous = signal.getsignal(signal.SIGTERM)
    with StepCheckpoints(1.5, clock.monotonic) as checkpoints:
        assert signal.getsignal(signal.SIGTERM) != previous
        checkpoints.epoch_started()
        for batch in range(1, 7):
            checkpoints.after_batch("epoch 1", batch, lambda batch=batch: writes.append(batch))
        assert writes == [3, 6]  # every 90 s of the fake clock
        os.kill(os.getpid(), signal.SIGTERM)
        assert checkpoints.signalled
        with pytest.raises(TrainingStopped, match="SIGTERM: checkpoint written at epoch 1 batch 7, rerun to resume"):
            checkpoints.after_batch("epoch 1", 7, lambda: writes.append(7))
        assert writes == [3, 6, 7]
        with pytest.raises(TrainingStopped, match="epoch 1 is saved") as stopped:
            checkpoints.after_epoch("epoch 1")
        assert stopped.value.code == step_checkpoints.EXIT_STOPPED
    assert signal.getsignal(signal.SIGTERM) == previous

    # Off the main thread no handler is installed (Python allows none there); the timer still works.
    seen = []

    def off_main():
        with StepCheckpoints(0, clock.monotonic) as checkpoints:
            seen.append(signal.getsignal(signal.SIGTERM))
            checkpoints.after_batch("epoch 1", 1, lambda: seen.append("written"))

    thread = threading.Thread(target=off_main)
    thread.start()
    thread.join()
    assert seen == [previous]


def test_checkpoint_minutes_is_validated_in_both_stages():
    with pytest.raises(ValueError, match="checkpoint_minutes=-1"):
        stage1.Stage1Config(checkpoint_minutes=-1).validate()
    with pytest.raises(ValueError, match="checkpoint_minutes"):
        stage2.LGLConfig(checkpoint_minutes="often").validate()
    assert stage1.Stage1Config().checkpoint_minutes == stage2.BaselineConfig().checkpoint_minutes == 20


# --- Stage I --------------------------------------------------------------------------------------


def _stage1_config(corpus, runs_dir, **overrides):
    # epochs 2 and max_steps = one epoch: the compared runs end after epoch 1, before any evaluation but epoch 0's.
    params = dict(
        run_name="t",
        runs_dir=str(runs_dir),
        **tiny_data_params(corpus),
        channels=8,
        mfa_channels=32,
        frames=30,
        batch_size=8,
        epochs=2,
        max_steps=6,
        workers=0,
        device="cpu",
        interactive=False,
    )
    params.update(overrides)
    return stage1.Stage1Config(**params)


@pytest.fixture
def no_stage1_evaluation(monkeypatch):
    """Epoch 0's evaluation as fixed numbers: these tests compare training, not embedding."""
    metrics = {"eer": 50.0, "min_dcf": 1.0, "min_dcf_0.01": 1.0}
    for module in (stage1_scoring, stage1_trainer):  # the untrained encoder's and the epochs' evaluations
        monkeypatch.setattr(module, "evaluate", lambda *args: dict(metrics))


def test_stage1_timed_checkpoint_then_a_crash_resumes_mid_epoch_bitwise(
    tiny_corpus, tmp_path, monkeypatch, no_stage1_evaluation
):
    straight = stage1.train_stage1(_stage1_config(tiny_corpus, tmp_path / "a"))
    assert straight["epochs_run"] == 1

    # checkpoint_minutes=1 on a clock that moves 30 s a reading: a checkpoint after batches 2 and 4 of
    # epoch 1 (the timer starts with the epoch), then the run dies in batch 5 before its next one.
    monkeypatch.setattr(step_checkpoints, "time", _FakeClock(30.0))
    calls = []
    step = executor.stage1_step

    def dies_in_batch_5(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")
        return step(*args)

    monkeypatch.setattr(executor, "stage1_step", dies_in_batch_5)
    config = _stage1_config(tiny_corpus, tmp_path / "b", checkpoint_minutes=1)
    with pytest.raises(KeyboardInterrupt):
        stage1.train_stage1(config)
    stage_dir = stage1.stage_folder(config)
    mid = load_checkpoint(stage_dir / "checkpoints" / stage1_trainer.MID_EPOCH)
    assert (mid["epoch"], mid["partial"]["epoch"], mid["partial"]["batches"]) == (0, 1, 4)
    assert not (stage_dir / "checkpoints" / "last.model").exists()

    monkeypatch.setattr(executor, "stage1_step", step)
    # The 2 batches left of epoch 1 (max_steps counts this call's steps), without timed checkpoints.
    resumed = stage1.train_stage1(_stage1_config(tiny_corpus, tmp_path / "b", checkpoint_minutes=0, max_steps=2))
    assert (
        resumed["epochs_run"] == 1 and len(calls) == 5 and not (stage_dir / "checkpoints" / "mid_epoch.model").exists()
    )
    a, b = straight["history"][1], resumed["history"][1]
    assert {k: a[k] for k in STAGE1_STATS} == {k: b[k] for k in STAGE1_STATS}  # exactly equal floats
    final_a = load_checkpoint(
        stage1.stage_folder(_stage1_config(tiny_corpus, tmp_path / "a")) / "checkpoints" / "last.model"
    )
    final_b = load_checkpoint(stage_dir / "checkpoints" / "last.model")
    for part in ("encoder", "loss", "aat"):
        _assert_same_tensors(final_a[part], final_b[part], part)
    _assert_same_optimizer(final_a["optimizer"], final_b["optimizer"])
    _assert_same_optimizer(final_a["aat_optimizer"], final_b["aat_optimizer"])


# --- Stage II -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stage1_model(tmp_path_factory):
    """A small untrained encoder standing in for the Stage I checkpoint."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("stage1") / "best.model"
    save_encoder(path, ECAPATDNN(8, 32).eval())
    return path


def _stage2_config(corpus, runs_dir, stage1_model, **overrides):
    # LGL paused before its gate: cluster, one T epoch with weight averaging, no final evaluation.
    params = dict(
        run_name="t",
        runs_dir=str(runs_dir),
        init_model=str(stage1_model),
        **tiny_data_params(corpus),
        n_clusters=4,
        cluster_n_iter=5,
        max_iterations=1,
        frames=30,
        batch_size=8,
        ema_decay=0.5,
        max_epochs_per_phase=1,
        pause_before_gate=True,
        workers=0,
        device="cpu",
        interactive=False,
    )
    params.update(overrides)
    return stage2.LGLConfig(**params)


def test_stage2_sigterm_writes_a_mid_epoch_checkpoint_and_the_resumed_epoch_is_bitwise_equal(
    tiny_corpus, tmp_path, stage1_model, monkeypatch
):
    monkeypatch.setattr(
        stage2_executor, "evaluate_trials", lambda *args, **kwargs: {"eer": 40.0, "min_dcf": 0.5, "min_dcf_0.01": 0.5}
    )
    straight = stage2.run_stage2(_stage2_config(tiny_corpus, tmp_path / "a", stage1_model))
    assert straight["status"] == "paused_before_gate"

    # SIGTERM arrives while batch 3 trains (48 utterances, batch 8: 6 batches): the checkpoint follows it.
    inputs = executor.stage2_inputs
    calls = []

    def sigterm_in_batch_3(*args):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return inputs(*args)

    monkeypatch.setattr(executor, "stage2_inputs", sigterm_in_batch_3)
    config = _stage2_config(tiny_corpus, tmp_path / "b", stage1_model)
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingStopped, match="checkpoint written at iteration 1 T epoch 1 batch 3, rerun to resume"):
        stage2.run_stage2(config)
    assert signal.getsignal(signal.SIGTERM) == previous and len(calls) == 3
    stage_dir = stage2.stage_folder(config)
    mid = load_checkpoint(stage_dir / "iter_01" / "T" / stage2_executor.MID_EPOCH)
    assert (mid["partial"]["epoch"], mid["partial"]["batches"]) == (1, 3) and "train_encoder" in mid
    assert stage2.read_state(stage_dir)["history"] == []

    monkeypatch.setattr(executor, "stage2_inputs", inputs)
    resumed = stage2.run_stage2(config)
    assert resumed["status"] == "paused_before_gate"
    assert not (stage_dir / "iter_01" / "T" / stage2_executor.MID_EPOCH).exists()
    (a,), (b,) = straight["state"]["history"], resumed["state"]["history"]
    assert {k: a[k] for k in STAGE2_STATS} == {k: b[k] for k in STAGE2_STATS}
    losses_a = stage2.read_epoch_losses(tmp_path / "a" / "t" / "stage2_lgl" / a["losses"])
    losses_b = stage2.read_epoch_losses(stage_dir / b["losses"])
    for key in ("index", "per_sample_loss", "selected"):
        np.testing.assert_array_equal(losses_a[key], losses_b[key])
    final_a = load_checkpoint(tmp_path / "a" / "t" / "stage2_lgl" / a["model"])
    final_b = load_checkpoint(stage_dir / b["model"])
    for part in ("encoder", "train_encoder", "head"):
        _assert_same_tensors(final_a[part], final_b[part], part)
    assert final_a["ema_n_averaged"] == final_b["ema_n_averaged"]
    _assert_same_optimizer(final_a["optimizer"], final_b["optimizer"])


@pytest.mark.slow
def test_two_ranks_agree_to_stop_on_one_rank_s_sigterm_and_resume_to_the_same_weights(
    tiny_corpus, tmp_path, stage1_model, monkeypatch
):
    """Under torchrun (2 ranks, gloo) only rank 1 gets SIGTERM: both stop at the same boundary, rank 0
    writes, and the resumed run ends with the weights of the uninterrupted one (same world size); one
    process resumes the same checkpoint too (another world size)."""
    config = _stage2_config(tiny_corpus, tmp_path / "runs", stage1_model)
    params = {k: v for k, v in dataclasses.asdict(config).items() if k != "run_name"}
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(params))
    worker = Path(__file__).with_name("ddp_step_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LGL_DIST_TIMEOUT_MINUTES": "3"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*command, str(worker), str(tmp_path), str(config_file)], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for result in ranks:
        assert result["stopped"] == "SIGTERM: checkpoint written at iteration 1 T epoch 1 batch 2, rerun to resume"
        assert result["batches_before_stop"] == 2
    (a,), (b,) = ranks[0]["straight"], ranks[0]["resumed"]
    assert {k: a[k] for k in STAGE2_STATS if k != "loss"} == {k: b[k] for k in STAGE2_STATS if k != "loss"}
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-12)  # the carried sums are added in another order
    runs = tmp_path / "runs"
    losses_a = stage2.read_epoch_losses(runs / "a" / "stage2_lgl" / a["losses"])
    losses_b = stage2.read_epoch_losses(runs / "b" / "stage2_lgl" / b["losses"])
    for key in ("index", "per_sample_loss", "selected"):
        np.testing.assert_array_equal(losses_a[key], losses_b[key])
    final_a = load_checkpoint(runs / "a" / "stage2_lgl" / a["model"])
    final_b = load_checkpoint(runs / "b" / "stage2_lgl" / b["model"])
    for part in ("encoder", "train_encoder", "head"):
        _assert_same_tensors(final_a[part], final_b[part], part)

    # The same stopped run resumed by one process: the 2 ranks' batches are kept as they trained them,
    # and the one process trains the rest of the epoch's samples, each once.
    c_stage = runs / "c" / "stage2_lgl"
    before = load_checkpoint(c_stage / "iter_01" / "T" / stage2_executor.MID_EPOCH)["partial"]
    assert (len(before["arrays"]), before["batches"]) == (2, 2)  # one part per rank
    trained_before = np.concatenate([part["index"].numpy() for part in before["arrays"]])
    monkeypatch.setattr(
        stage2_executor, "evaluate_trials", lambda *args, **kwargs: {"eer": 40.0, "min_dcf": 0.5, "min_dcf_0.01": 0.5}
    )
    resumed = stage2.run_stage2(dataclasses.replace(config, run_name="c"))
    (c,) = resumed["state"]["history"]
    assert (c["n_samples"], c["skipped_batches"]) == (a["n_samples"], a["skipped_batches"])
    losses_c = stage2.read_epoch_losses(c_stage / c["losses"])
    assert sorted(losses_c["index"]) == sorted(losses_a["index"])  # every sample once
    loss_a = dict(zip(losses_a["index"].tolist(), losses_a["per_sample_loss"].tolist()))
    loss_c = dict(zip(losses_c["index"].tolist(), losses_c["per_sample_loss"].tolist()))
    assert len(trained_before) == 16 and all(loss_c[i] == loss_a[i] for i in trained_before.tolist())
