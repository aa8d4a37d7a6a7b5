"""DINO as a Stage I method: the loss on a hand-computed case, centre and EMA updates, schedules, the
collapse warning, the head, and a run that stops on SIGTERM and resumes bit for bit."""

import dataclasses
import math
import os
import signal

import pytest
import torch
from corpus_params import tiny_data_params

from lgl_helpers.core.models import load_encoder
from lgl_helpers.training import stage1
from lgl_helpers.training.stage1 import dino_epoch
from lgl_helpers.training.stage1.dino import (
    DinoHead,
    DinoLoss,
    WeightNormLinear,
    collapse_warning,
    cosine_value,
    ema_update,
    teacher_temperature,
)
from lgl_helpers.training.state import load_checkpoint
from lgl_helpers.training.step_checkpoints import TrainingStopped


def _softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def test_dino_loss_on_a_hand_computed_case():
    # B = 1 utterance, K = 2 outputs, 2 global crops (g0, g1) and 1 local (l0); centre c = (0.5, 0).
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # g0, g1
    student = torch.tensor([[0.2, 0.0], [0.0, 0.3], [0.1, 0.1]])  # g0, g1, l0
    loss_fn = DinoLoss(2, student_temp=0.5, center_momentum=0.9)
    loss_fn.center.copy_(torch.tensor([[0.5, 0.0]]))
    loss, stats = loss_fn(student, teacher, n_global=2, teacher_temp=0.25)
    # teacher targets softmax((t - c) / 0.25): g0 -> softmax(2, 0), g1 -> softmax(-2, 4)
    q0, q1 = _softmax([2.0, 0.0]), _softmax([-2.0, 4.0])
    # student log-probabilities log softmax(s / 0.5)
    p = [_softmax([0.4, 0.0]), _softmax([0.0, 0.6]), _softmax([0.2, 0.2])]

    def ce(q, p_row):
        return -sum(qk * math.log(pk) for qk, pk in zip(q, p_row))

    # pairs (teacher crop, student crop) with different crops: (g0, g1), (g0, l0), (g1, g0), (g1, l0)
    expected = (ce(q0, p[1]) + ce(q0, p[2]) + ce(q1, p[0]) + ce(q1, p[2])) / 4
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    entropy = lambda q: -sum(v * math.log(v) for v in q)  # noqa: E731
    assert stats["teacher_entropy"] == pytest.approx((entropy(q0) + entropy(q1)) / 2, rel=1e-5)
    assert stats["teacher_mean_entropy"] == pytest.approx(entropy([(a + b) / 2 for a, b in zip(q0, q1)]), rel=1e-5)
    assert stats["center_norm"] == pytest.approx(0.5)
    torch.testing.assert_close(loss_fn.center, torch.tensor([[0.5, 0.0]]))  # forward leaves the centre alone


def test_a_uniform_teacher_and_student_give_log_k():
    loss, stats = DinoLoss(5)(torch.zeros(8, 5), torch.zeros(4, 5), n_global=2, teacher_temp=0.04)
    assert float(loss) == pytest.approx(math.log(5), rel=1e-6)
    assert stats["teacher_entropy"] == pytest.approx(math.log(5), rel=1e-6)


def test_centre_update_is_a_moving_average_of_the_teacher_output():
    loss_fn = DinoLoss(3, center_momentum=0.9)
    loss_fn.center.copy_(torch.tensor([[1.0, 0.0, -1.0]]))
    teacher = torch.tensor([[2.0, 4.0, 0.0], [0.0, 2.0, 2.0]])  # mean (1, 3, 1)
    loss_fn.update_center(teacher)
    torch.testing.assert_close(loss_fn.center, torch.tensor([[1.0, 0.3, -0.8]]))
    assert "center" in loss_fn.state_dict()  # saved with the checkpoint's dino_loss


def test_ema_update_moves_parameters_not_buffers():
    torch.manual_seed(0)
    student, teacher = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    student.weight.data.fill_(2.0)
    teacher.weight.data.fill_(1.0)
    student.running_mean.fill_(5.0)
    ema_update(teacher, student, momentum=0.75)
    torch.testing.assert_close(teacher.weight.data, torch.full((3,), 1.25))
    torch.testing.assert_close(teacher.running_mean, torch.zeros(3))


def test_schedules_match_the_recipe():
    # learning rate: linear warm-up from 0 over 10 steps, then cosine from 1.0 to 0.1 at the last of 110 steps
    assert cosine_value(0, 110, 1.0, 0.1, warmup=10) == 0.0
    assert cosine_value(9, 110, 1.0, 0.1, warmup=10) == pytest.approx(1.0)
    assert cosine_value(10, 110, 1.0, 0.1, warmup=10) == pytest.approx(1.0)
    assert cosine_value(60, 110, 1.0, 0.1, warmup=10) == pytest.approx(0.55)
    assert cosine_value(109, 110, 1.0, 0.1, warmup=10) == pytest.approx(0.1, abs=1e-3)
    # teacher momentum rises from 0.996 towards 1
    assert cosine_value(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine_value(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    # teacher temperature: 0.04 -> 0.07 over the first 20 % of 150 epochs (30), then 0.07
    assert teacher_temperature(1, 150, 0.04, 0.07, 0.2) == pytest.approx(0.04)
    assert teacher_temperature(30, 150, 0.04, 0.07, 0.2) == pytest.approx(0.07)
    assert teacher_temperature(16, 150, 0.04, 0.07, 0.2) == pytest.approx(0.04 + 0.03 * 15 / 29)
    assert teacher_temperature(100, 150, 0.04, 0.07, 0.2) == 0.07


def test_collapse_warning_names_uniform_and_one_dimension_teachers():
    k = 1000
    log_k = math.log(k)
    healthy = {"epoch": 3, "teacher_entropy": 0.2 * log_k, "teacher_mean_entropy": 0.8 * log_k}
    assert collapse_warning(healthy, k) is None
    uniform = {"epoch": 4, "teacher_entropy": 0.97 * log_k, "teacher_mean_entropy": log_k}
    assert "collapse (uniform) in epoch 4" in collapse_warning(uniform, k)
    one_dim = {"epoch": 5, "teacher_entropy": 0.0, "teacher_mean_entropy": 0.01}
    assert "collapse (one dimension) in epoch 5" in collapse_warning(one_dim, k)
    # the statistics of a real forward pass: every utterance's teacher output on the same dimension
    teacher = torch.zeros(8, k)
    teacher[:, 7] = 1.0
    _, stats = DinoLoss(k)(torch.zeros(8, k), teacher, n_global=2, teacher_temp=0.04)
    assert "one dimension" in collapse_warning({"epoch": 1, **stats}, k)
    _, stats = DinoLoss(k)(torch.zeros(8, k), torch.zeros(4, k), n_global=2, teacher_temp=0.04)
    assert "uniform" in collapse_warning({"epoch": 1, **stats}, k)


def test_head_ends_in_a_weight_normalised_layer_of_unit_rows():
    head = DinoHead(192, 64, hidden_dim=32, bottleneck_dim=16, layers=3)
    assert head(torch.randn(5, 192)).shape == (5, 64)
    layer = head.last_layer
    assert isinstance(layer, WeightNormLinear) and "gain" not in dict(layer.named_parameters())
    x = torch.nn.functional.normalize(torch.randn(4, 16), dim=1)
    assert float(layer(x).detach().abs().max()) <= 1.0 + 1e-6  # cosines: unit rows against unit inputs
    assert isinstance(WeightNormLinear(16, 8, fixed_norm=False).gain, torch.nn.Parameter)


def _config(corpus, runs_dir, **overrides):
    params = dict(
        run_name="d",
        runs_dir=str(runs_dir),
        **tiny_data_params(corpus),
        channels=8,
        mfa_channels=32,
        batch_size=8,
        epochs=2,
        test_interval=1,
        workers=0,
        device="cpu",
        interactive=False,
        stage1_method="dino",
        global_frames=30,
        local_crops=1,
        local_frames=20,
        dino_out_dim=32,
        dino_hidden_dim=16,
        dino_bottleneck_dim=8,
        dino_warmup_epochs=1,
        norm_cohort="none",
        checkpoint_minutes=0,
    )
    params.update(overrides)
    return stage1.Stage1Config(**params)


def test_config_names_a_bad_dino_parameter():
    with pytest.raises(ValueError, match=r"Stage1Config.stage1_method='byol' must be"):
        stage1.Stage1Config(stage1_method="byol")
    with pytest.raises(ValueError, match=r"Stage1Config.teacher_momentum=1.0 must be a number in \[0, 1\)"):
        stage1.Stage1Config(teacher_momentum=1.0)
    with pytest.raises(ValueError, match=r"Stage1Config.global_crops=1 must be an integer >= 2"):
        stage1.Stage1Config(global_crops=1)
    with pytest.raises(ValueError, match=r"dino_warmup_epochs=3 must be fewer than epochs=3"):
        stage1.Stage1Config(stage1_method="dino", epochs=3, dino_warmup_epochs=3)


@pytest.mark.slow
def test_dino_stopped_by_sigterm_resumes_bit_for_bit(tiny_corpus, tmp_path, monkeypatch):
    straight = stage1.train_stage1(_config(tiny_corpus, tmp_path / "a"))
    assert straight["completed"] and straight["stage1_method"] == "dino"
    assert [r["epoch"] for r in straight["history"]] == [0, 1, 2]
    record = straight["history"][2]
    for key in ("loss", "teacher_entropy", "teacher_mean_entropy", "center_norm", "teacher_momentum", "eer"):
        assert math.isfinite(record[key])

    step, calls = dino_epoch.dino_step, []

    def sigterm_in_batch_3_of_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6 + 3:  # 6 batches an epoch
            os.kill(os.getpid(), signal.SIGTERM)
        return step(*args, **kwargs)

    monkeypatch.setattr(dino_epoch, "dino_step", sigterm_in_batch_3_of_epoch_2)
    config = _config(tiny_corpus, tmp_path / "b")
    with pytest.raises(TrainingStopped):
        stage1.train_stage1(config)
    stage_dir = stage1.stage_folder(config)
    mid = load_checkpoint(stage_dir / "checkpoints" / "mid_epoch.model")
    assert mid["partial"]["epoch"] == 2 and mid["partial"]["batches"] == 3
    assert mid["schedule"]["step"] == 6 + 3 and mid["stage1_method"] == "dino"
    monkeypatch.setattr(dino_epoch, "dino_step", step)
    resumed = stage1.train_stage1(dataclasses.replace(config))
    assert resumed["completed"]

    a = load_checkpoint(stage1.stage_folder(_config(tiny_corpus, tmp_path / "a")) / "checkpoints" / "last.model")
    b = load_checkpoint(stage_dir / "checkpoints" / "last.model")
    for part in ("encoder", "student", "student_head", "teacher_head", "dino_loss"):
        for key, tensor in a[part].items():
            torch.testing.assert_close(b[part][key], tensor, rtol=0, atol=0, msg=f"{part}.{key}")
    assert a["schedule"] == b["schedule"]
    for rec_a, rec_b in zip(a["history"][1:], b["history"][1:]):
        assert {k: v for k, v in rec_a.items() if "seconds" not in k and k != "samples_per_s"} == {
            k: v for k, v in rec_b.items() if "seconds" not in k and k != "samples_per_s"
        }
    assert resumed["eer"] == straight["eer"]
    # the Stage I model is the teacher's encoder, an ordinary encoder checkpoint
    teacher = load_encoder(stage_dir / "best.model")
    assert teacher.channels == 8
    best = load_checkpoint(stage_dir / "best.model")
    for key, tensor in best["encoder"].items():
        torch.testing.assert_close(teacher.state_dict()[key], tensor, rtol=0, atol=0)
    assert any(not torch.equal(best["encoder"][k], best["student"][k]) for k in best["encoder"])


def test_the_report_names_the_stage1_method():
    from lgl_helpers.app.report import results_table

    entry = {"eer": 19.0, "min_dcf": 0.8, "min_dcf_0.01": 0.9}
    assert "| Stage I (DINO teacher) | 19.00 |" in results_table({"stage1": {**entry, "stage1_method": "dino"}})
    assert "| Stage I (contrastive + AAT) | 19.00 |" in results_table({"stage1": entry})


def test_full_dino_profile_holds_wespeakers_recipe():
    from lgl_helpers.app import planning

    plan = {step.name: step.parameters for step in planning.plan_run("full-dino", "x")}
    nb1 = plan["01_stage1_contrastive"]
    assert nb1["stage1_method"] == "dino" and (nb1["channels"], nb1["epochs"], nb1["batch_size"]) == (512, 150, 128)
    assert (nb1["global_crops"], nb1["global_frames"], nb1["local_crops"], nb1["local_frames"]) == (2, 300, 4, 200)
    assert (nb1["dino_out_dim"], nb1["teacher_momentum"], nb1["dino_warmup_epochs"]) == (65536, 0.996, 20)
    assert plan["04_stage2_lgl"]["gates"] == [1, 3, 3, 5, 6]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_dino_step_on_multicrop_batches(tiny_corpus, tmp_path, precision):
    from functools import partial

    from lgl_helpers.core.data import make_loader
    from lgl_helpers.core.embed import autocast_context
    from lgl_helpers.training.stage1 import dino_trainer

    config = _config(tiny_corpus, tmp_path, precision=precision, local_crops=2)
    data = stage1.prepare_data(config)
    dataset = dino_trainer.multicrop_dataset(config, data)
    loader = make_loader(dataset, config.batch_size, 0, 0, "cpu")
    loader.sampler.set_epoch(1)
    batch = next(iter(loader))
    assert batch["global"].shape == (8, 2, 30 * 160 + 240) and batch["local"].shape == (8, 2, 20 * 160 + 240)
    assert len(batch["global_recipes"]) == 2 and len(batch["local_recipes"]) == 2
    models = dino_trainer.build_models(config, "cpu")
    teacher_before = {k: v.clone() for k, v in models.teacher.state_dict().items()}
    schedule = dino_trainer.Schedules(config, len(loader)).at(2, 0)
    stats = dino_epoch.dino_step(
        models, batch, schedule, 3.0, "cpu", partial(autocast_context, precision, torch.device("cpu"))
    )
    assert math.isfinite(stats["loss"]) and stats["batch_size"] == 8
    assert float(models.loss_fn.center.norm()) > 0  # the centre moved
    moved = [k for k, v in models.teacher.named_parameters() if not torch.equal(v, teacher_before[k])]
    assert moved  # the teacher followed the student
    assert all(p.grad is None for p in models.teacher.parameters())


def _dino_history():
    return [
        {"epoch": 0, "eer": 40.0},
        *(
            {
                "epoch": e,
                "loss": 5.0 - e,
                "teacher_entropy": 3.0 - e,
                "teacher_mean_entropy": 6.0,
                "student_entropy": 4.0,
                "center_norm": 0.5 * e,
                "lr": 0.01,
                "teacher_momentum": 0.99,
                "teacher_temp": 0.05,
                "eer": 40.0 - e,
                "collapse": None,
            }
            for e in (1, 2)
        ),
    ]


def test_notebook_01_draws_dinos_curves_and_lists_collapse_warnings():
    from lgl_helpers.notebook import stage1_view

    config = stage1.Stage1Config(stage1_method="dino", dino_out_dim=1000)
    history = _dino_history()
    fig = stage1_view.curves(config, history)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["training loss", "entropy (nats)", "centre norm", "validation EER (%)"]
    entropy_lines = {line.get_label(): list(line.get_ydata()) for line in fig.axes[1].lines}
    assert entropy_lines["teacher, per utterance"] == [2.0, 1.0]
    assert list(fig.axes[2].lines[0].get_ydata()) == [0.5, 1.0]
    assert stage1_view.curves(config, []).axes  # an empty history draws empty axes
    assert stage1_view.collapse_lines(history) == []
    history[2]["collapse"] = "DINO teacher collapse (uniform) in epoch 2"
    assert stage1_view.collapse_lines(history) == ["DINO teacher collapse (uniform) in epoch 2"]


def test_tensorboard_gets_dinos_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lgl_helpers.notebook import tensorboard_log

    with tensorboard_log.EventLog(tmp_path) as events:
        history = _dino_history()
        for i, record in enumerate(history):
            events.stage1_epoch(record, history[: i + 1])
    accumulator = EventAccumulator(str(tmp_path / tensorboard_log.FOLDER))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    for tag in ("loss/dino", "dino/teacher_entropy", "dino/center_norm", "schedule/teacher_momentum", "val/eer"):
        assert tag in tags
    assert [e.value for e in accumulator.Scalars("dino/teacher_entropy")] == [2.0, 1.0]
    assert "loss/aat" not in tags


def test_a_global_crop_longer_than_every_file_names_global_frames(tiny_corpus):
    from lgl_helpers.core.data import CropError
    from lgl_helpers.corpus.lists import read_train_list

    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    with pytest.raises(
        CropError, match=r"global_frames=400 gives crops of 4.01 s, longer than every file.*global_frames <= 198"
    ):
        dino_epoch.MultiCropDataset(entries, tiny_corpus / "train", 2, 400, 2, 50, check_files=False)
