"""What notebooks 01, 03 and 04 show while and after a stage trains: training curves, TensorBoard files, the log file."""

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch
from corpus_params import tiny_data_params

from lgl_helpers.core.models import ECAPATDNN, save_encoder
from lgl_helpers.corpus.lists import read_train_list
from lgl_helpers.notebook import stage1_view, stage2_curves, stage2_view, tensorboard_log
from lgl_helpers.training import stage1, stage2


def _record(iteration, phase, epoch, gate=None, eer=30.0, kept=1.0):
    return {
        "iteration": iteration,
        "phase": phase,
        "epoch": epoch,
        "gate": gate,
        "loss": 10.0 - epoch,
        "accuracy": 10.0 * epoch,
        "eer": eer,
        "fraction_selected": kept,
    }


def test_training_curves_before_the_first_epoch_and_in_both_modes():
    history = [_record(1, "T", 1), _record(1, "T", 2, eer=25.0), _record(1, "L", 1, gate=3.0, eer=20.0, kept=0.6)]
    empty = stage2_curves.plot_training_curves([], "lgl")
    assert "waiting for the first epoch" in empty._suptitle.get_text()
    baseline = stage2_curves.plot_training_curves(history[:2], "baseline", stage1_val_eer=35.0)
    assert len(baseline.axes) == 3
    lgl = stage2_curves.plot_training_curves(history, "lgl")
    assert len(lgl.axes) == 5  # loss, accuracy, EER, kept fraction and the gate's twin axis
    assert "gate 3.000 keeps 60.0 %" in lgl._suptitle.get_text()
    kept_points = np.concatenate([c.get_offsets()[:, 1] for c in lgl.axes[3].collections])
    assert sorted(kept_points.tolist()) == [60.0, 100.0, 100.0]


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory):
    """A tiny LGL run trained through the notebooks' training call: paused before phase L, then finished.

    Returns (config, stage folder, the log file's text when it paused).
    """
    root = tmp_path_factory.mktemp("stage2_view")
    torch.manual_seed(0)
    save_encoder(root / "stage1.model", ECAPATDNN(16).eval())
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    config = stage2.LGLConfig(
        run_name="view",
        runs_dir=str(root / "runs"),
        init_model=str(root / "stage1.model"),
        **tiny_data_params(tiny_corpus, augment=False),
        n_clusters=len({e.speaker for e in entries}),
        cluster_n_iter=5,
        frames=40,
        batch_size=16,
        max_epochs_per_phase=2,
        max_iterations=1,
        gates=["auto"],
        pause_before_gate=True,
        workers=0,
        device="cpu",
        interactive=False,
    )
    stage_dir, view_only = stage2_view.open_stage(config)
    assert not view_only
    assert stage2_view.train(config, stage_dir)["status"] == "paused_before_gate"
    assert not stage2_view.open_stage(config)[1], "a paused run is not finished: the training cell continues it"
    paused_log = (stage_dir / "stage2_lgl.log").read_text()
    assert stage2_view.train(config, stage_dir)["status"] == "done"
    return config, stage_dir, paused_log


@pytest.mark.slow
def test_training_writes_its_log_and_looking_at_the_run_does_not(trained, capsys):
    config, stage_dir, paused_log = trained
    log_file = stage_dir / "stage2_lgl.log"
    assert "iter 1 T epoch 2" in paused_log and "paused before phase L" in paused_log
    assert "iter 1 L epoch 2" in log_file.read_text()
    attached = [h for h in logging.getLogger("lgl_helpers").handlers if isinstance(h, logging.FileHandler)]
    assert not [h for h in attached if h.baseFilename == str(log_file.resolve())], "training leaves its log detached"
    before = log_file.read_text()
    stage2_view.show_gate_tuner(config, stage_dir)
    stage2_view.show_gate_evidence(stage_dir)
    assert log_file.read_text() == before
    printed = capsys.readouterr().out
    assert "kept (" in printed and "no phase L left to train" in printed  # headless: readout and why no button


def test_a_finished_stage_is_viewed_without_writing(trained, capsys, monkeypatch):
    config, stage_dir, _ = trained
    before = {p: p.read_bytes() for p in stage_dir.rglob("*") if p.is_file()}
    shown = []
    monkeypatch.setattr(stage2_view, "display", lambda figure, display_id=False: shown.append(figure))
    stage_dir_again, view_only = stage2_view.open_stage(config)
    assert stage_dir_again == stage_dir and view_only
    printed = capsys.readouterr().out
    assert "viewing: Stage II lgl" in printed and "nothing is trained or written" in printed
    result = stage2_view.train(config, stage_dir, view_only)
    assert result == {"status": "done", **json.loads((stage_dir / "metrics.json").read_text())}
    assert len(shown) == 1
    assert {p: p.read_bytes() for p in stage_dir.rglob("*") if p.is_file()} == before
    # Another value of a parameter that defines the results: the run's results are shown, and it says so.
    stage2_view.open_stage(dataclasses.replace(config, n_clusters=3))
    assert "the run was made with n_clusters = " in capsys.readouterr().out
    # recompute = True: the notebook computes again (here a finished run: its final evaluation).
    assert not stage2_view.open_stage(dataclasses.replace(config, recompute=True))[1]
    assert "recomputing: recompute = True" in capsys.readouterr().out


def test_every_stage2_epoch_is_in_tensorboard(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, stage_dir, _ = trained
    events = EventAccumulator(str(stage_dir / tensorboard_log.FOLDER), size_guidance={"histograms": 0})  # 0: all
    events.Reload()
    tags = events.Tags()
    kept, dropped = "reliability/reliable_among_kept_pct", "reliability/reliable_among_dropped_pct"
    for tag in ("loss/train", "val/eer", "gate/fraction_kept", "gate/value", kept, dropped):
        assert tag in tags["scalars"], tag
    gated = [r for r in stage2.read_state(stage_dir)["history"] if r.get("precision_selected") is not None]
    assert [e.value for e in events.Scalars(kept)] == pytest.approx([100 * r["precision_selected"] for r in gated])
    history = stage2.read_state(stage_dir)["history"]
    eers = events.Scalars("val/eer")
    assert [e.step for e in eers] == list(range(1, len(history) + 1))  # paused and resumed: each epoch once
    assert [e.value for e in eers] == pytest.approx([r["eer"] for r in history])
    assert [e.step for e in events.Scalars("gate/value")] == [i + 1 for i, r in enumerate(history) if r["gate"]]
    assert len(events.Histograms("per_sample_loss/all")) == len(history)
    assert "per_sample_loss/reliable" in tags["histograms"]


def test_a_stage_that_starts_over_starts_its_event_files_over(tmp_path):
    pytest.importorskip("tensorboard")
    stage_dir = tmp_path / "stage1"
    with tensorboard_log.EventLog(stage_dir) as events:
        events.stage1_epoch({"epoch": 0, "eer": 40.0}, [])
        events.stage1_epoch({"epoch": 1, "loss": 2.0, "top1": 10.0}, [])
    first = set((stage_dir / tensorboard_log.FOLDER).iterdir())
    with tensorboard_log.EventLog(stage_dir) as events:
        events.stage1_epoch({"epoch": 2, "loss": 1.5}, [])  # resumed: earlier epochs are kept
    resumed = set((stage_dir / tensorboard_log.FOLDER).iterdir())
    assert first < resumed
    with tensorboard_log.EventLog(stage_dir) as events:
        events.stage1_epoch({"epoch": 0, "eer": 41.0}, [])  # started over
    assert not (set((stage_dir / tensorboard_log.FOLDER).iterdir()) & resumed)


def test_without_tensorboard_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(tensorboard_log, "_summary_writer_class", lambda: None)
    with tensorboard_log.EventLog(tmp_path) as events:
        events.stage1_epoch({"epoch": 0, "eer": 40.0}, [])
    assert not (tmp_path / tensorboard_log.FOLDER).exists()


def test_interactive_training_draws_one_figure_and_redraws_it(trained, monkeypatch):
    config, stage_dir, _ = trained
    shown, updates = [], []

    class Handle:
        def update(self, figure):
            updates.append(figure)

    def fake_display(figure, display_id=False):
        shown.append(figure)
        return Handle() if display_id else None

    monkeypatch.setattr(stage2_view, "display", fake_display)
    resumed = dataclasses.replace(config, interactive=True)
    assert stage2_view.train(resumed, stage_dir)["status"] == "done"  # finished: no epoch, no redraw
    assert len(shown) == 1 and not updates
    assert "latest: iteration 1, phase L, epoch 2" in shown[0]._suptitle.get_text()


@pytest.mark.slow
def test_stage1_epochs_are_in_tensorboard_and_redraw_the_live_curves(tiny_corpus, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    updates = []

    class Handle:
        def update(self, figure):
            updates.append(figure)

    monkeypatch.setattr(stage1_view, "display", lambda figure, display_id=False: Handle())
    config = stage1.Stage1Config(
        run_name="s1",
        runs_dir=str(tmp_path),
        **tiny_data_params(tiny_corpus, augment=False),
        channels=16,
        frames=30,
        batch_size=8,
        epochs=2,
        test_interval=2,
        workers=0,
        device="cpu",
        interactive=True,
    )
    stage_dir = stage1.stage_folder(config)
    result = stage1_view.train(config, stage1.prepare_data(config), stage_dir)
    assert result["completed"] and len(updates) == 3  # epoch 0 (untrained), 1 and 2
    events = EventAccumulator(str(stage_dir / tensorboard_log.FOLDER))
    events.Reload()
    assert [e.step for e in events.Scalars("val/eer")] == [0, 2]
    assert [e.step for e in events.Scalars("loss/total")] == [1, 2]


def test_a_stage2_run_that_starts_over_writes_the_epochs_no_callback_reported(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # LGL's iteration-1 phase T taken over from the baseline: the first callback is the first L epoch.
    # Epoch 1's loss record was thinned by the retention policy (null), epoch 2's file is absent.
    history = [{**_record(1, "T", e), "losses": None if e == 1 else f"none_{e}.npz"} for e in (1, 2)]
    history.append({**_record(1, "L", 1, gate=3.0, kept=0.5), "losses": "none.npz"})
    state = {"history": history, "iterations": [{"iteration": 1, "nmi": 0.5}]}
    (tmp_path / tensorboard_log.FOLDER).mkdir()
    (tmp_path / tensorboard_log.FOLDER / "events.out.tfevents.old").write_bytes(b"")
    with tensorboard_log.EventLog(tmp_path, start_over=True) as events:
        events.stage2_epoch(history[-1], state)
    assert not (tmp_path / tensorboard_log.FOLDER / "events.out.tfevents.old").exists()
    accumulator = EventAccumulator(str(tmp_path / tensorboard_log.FOLDER))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("val/eer")] == [1, 2, 3]
    assert [e.value for e in accumulator.Scalars("gate/fraction_kept")] == [1.0, 1.0, 0.5]
