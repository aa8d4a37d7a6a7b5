"""Stage II engine: configuration checks, gate overrides, skipped batches, end-to-end runs and resume in phase L."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from corpus_params import tiny_data_params

from lgl_helpers.clustering import cluster
from lgl_helpers.core import gate
from lgl_helpers.core.data import Stage2Dataset, make_loader
from lgl_helpers.core.losses import AAMSoftmax
from lgl_helpers.core.models import ECAPATDNN, load_encoder, save_encoder
from lgl_helpers.corpus.lists import read_train_list
from lgl_helpers.notebook import gate_tuner
from lgl_helpers.training import stage2
from lgl_helpers.training.executor import EncoderWithHead, stage2_epoch
from lgl_helpers.training.stage2 import executor as stage2_executor
from lgl_helpers.training.stage2.clean_losses import clean_pass_losses
from lgl_helpers.training.stage2.statefile import gate_losses_record


@pytest.fixture(scope="module")
def stage1_model(tmp_path_factory):
    """A small untrained encoder standing in for the Stage I checkpoint."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("stage1") / "best.model"
    save_encoder(path, ECAPATDNN(16).eval())
    return path


def _config(corpus, runs_dir, stage1_model, **overrides):
    entries = read_train_list(corpus / "lists" / "train_list.txt")
    n_speakers = len({e.speaker for e in entries})
    params = dict(
        run_name="t",
        runs_dir=str(runs_dir),
        init_model=str(stage1_model),
        **tiny_data_params(corpus),
        n_clusters=max(2, min(n_speakers, len(entries) // 2)),
        cluster_n_iter=5,
        frames=40,
        batch_size=min(16, len(entries)),
        max_epochs_per_phase=2,
        workers=0,
        device="cpu",
        interactive=False,
    )
    params.update(overrides)
    return stage2.CONFIGS[params.pop("mode", "lgl")](**params)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _positions(history):
    return [(r["iteration"], r["phase"], r["epoch"]) for r in history]


# --- configuration and overrides (no training) -------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"gates": [1, 3]}, "gates has 2 value"),
        ({"gates": [1, -3, 3, 5, 6]}, r"gates\[1\]"),
        ({"gates": "valley"}, "gates="),
        ({"n_clusters": 1}, "n_clusters"),
        ({"last_channels": 100}, "last_channels"),
        ({"max_epochs_per_phase": -1}, "max_epochs_per_phase"),
        ({"max_epochs": -1}, "max_epochs=-1"),
        ({"keep_every": -1}, "keep_every=-1"),
        ({"cluster_seed": -1}, "cluster_seed=-1"),
    ],
)
def test_config_validation_names_the_parameter(changes, message):
    with pytest.raises(ValueError, match=message):
        stage2.LGLConfig(**changes)


def test_baseline_has_no_gate_parameters_and_auto_is_accepted():
    baseline, lgl = stage2.BaselineConfig.field_names(), stage2.LGLConfig.field_names()
    assert (
        set(lgl) - set(baseline)
        == {
            "gates",
            "gate_losses",
            "gate_rule",
            "label_correction",
            "pause_before_gate",
        }
        and "mode" not in lgl
    )
    assert (stage2.BaselineConfig.mode, stage2.LGLConfig.mode) == ("baseline", "lgl")
    config = stage2.LGLConfig(gates="auto")
    assert config.gate_spec(3) == "auto"
    assert stage2.LGLConfig(gates=[1, "auto", 3, 5, 6]).gate_spec(1) == 1.0


def test_prepare_data_rejects_too_many_clusters(tiny_corpus, tmp_path, stage1_model):
    n = len(read_train_list(tiny_corpus / "lists" / "train_list.txt"))
    with pytest.raises(ValueError, match=f"n_clusters={n + 1} is larger than the number of utterances N={n} in "):
        stage2.prepare_data(_config(tiny_corpus, tmp_path, stage1_model, n_clusters=n + 1))
    with pytest.raises(FileNotFoundError, match="init_model"):
        stage2.prepare_data(_config(tiny_corpus, tmp_path, tmp_path / "missing.model"))


def test_gate_overrides_and_pending_iteration(tmp_path):
    assert stage2.read_gate_overrides(tmp_path) == {}
    stage2.write_gate_override(tmp_path, 2, 4.5)
    stage2.write_gate_override(tmp_path, 1, 2)
    assert stage2.read_gate_overrides(tmp_path) == {1: 2.0, 2: 4.5}
    with pytest.raises(ValueError, match="gate"):
        stage2.write_gate_override(tmp_path, 1, float("nan"))
    (tmp_path / stage2.GATE_OVERRIDES).write_text(json.dumps({"x": 1}))
    with pytest.raises(ValueError, match="gate_overrides.json"):
        stage2.read_gate_overrides(tmp_path)

    state = {"mode": "lgl", "iteration": 2, "phase": "T", "gate": None, "params": {"max_iterations": 3}}
    assert stage2.next_gate_iteration(state) == 2
    assert stage2.next_gate_iteration({**state, "phase": "L", "gate": 3.0}) == 3
    assert stage2.next_gate_iteration({**state, "iteration": 3, "phase": "L", "gate": 3.0}) is None
    assert stage2.next_gate_iteration({**state, "phase": "done"}) is None
    assert stage2.next_gate_iteration({**state, "mode": "baseline"}) is None


def test_batches_where_no_sample_passes_are_skipped_without_nan(tiny_corpus):
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    labels = np.arange(len(entries)) % 3
    dataset = Stage2Dataset(entries, tiny_corpus / "train", labels, frames=40)
    loader = make_loader(dataset, batch_size=min(8, len(entries)), workers=0, seed=0, device="cpu")
    torch.manual_seed(0)
    encoder, head = ECAPATDNN(16), AAMSoftmax(3)
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(head.parameters()), lr=1e-3)
    weights = [p.detach().clone() for p in encoder.parameters()] + [head.weight.detach().clone()]
    stats, arrays = stage2_epoch(EncoderWithHead(encoder, head), optimizer, loader, 0.0, torch.device("cpu"), "gate 0")
    assert stats["skipped_batches"] == len(loader) and stats["n_selected"] == 0
    assert stats["loss"] == 0.0 and stats["fraction_selected"] == 0.0
    assert not arrays["selected"].any() and np.isfinite(arrays["per_sample_loss"]).all()
    after = list(encoder.parameters()) + [head.weight]
    assert all(torch.equal(a, b) for a, b in zip(weights, after))
    assert sorted(arrays["index"].tolist()) == sorted(set(arrays["index"].tolist()))


# --- end to end on the tiny corpus -------------------------------------------------------------


@pytest.mark.slow
def test_baseline_two_iterations_end_to_end(tiny_corpus, tmp_path, stage1_model):
    config = _config(tiny_corpus, tmp_path, stage1_model, mode="baseline", max_iterations=2)
    result = stage2.run_stage2(config)
    stage_dir = tmp_path / "t" / "stage2_baseline"
    assert result["status"] == "done"

    state = json.loads((stage_dir / "state.json").read_text())
    assert (state["phase"], state["status"], state["mode"]) == ("done", "done", "baseline")
    assert _positions(state["history"]) == [(1, "T", 1), (1, "T", 2), (2, "T", 1), (2, "T", 2)]
    eers = [r["eer"] for r in state["history"]]
    assert all(np.isfinite(e) and 0 <= e <= 100 for e in eers)
    assert all(
        r["gate"] is None and r["fraction_selected"] == 1.0 and r["skipped_batches"] == 0 for r in state["history"]
    )
    # Iteration 2 clusters with iteration 1's best T model, whose checkpoint is the one kept.
    first = state["iterations"][0]["phases"]["T"]
    assert state["iterations"][1]["cluster_model"] == str(stage_dir / first["best_model"])
    assert first["best_eer"] == min(first["eers"]) and first["best_epoch"] == int(np.argmin(first["eers"])) + 1
    # Iteration 1 keeps its last T checkpoint beside the best: an LGL run of this folder continues from it.
    assert sorted(p.name for p in (stage_dir / "iter_01" / "T").glob("*.model")) == sorted(
        {f"epoch_{first['best_epoch']:03d}.model", "epoch_002.model"}
    )
    assert sorted(p.name for p in (stage_dir / "iter_02" / "T").glob("*.model")) == [
        f"epoch_{state['iterations'][1]['phases']['T']['best_epoch']:03d}.model"
    ]
    assert len((stage_dir / "scores.txt").read_text().splitlines()) == 4

    record = stage2.read_epoch_losses(stage_dir / state["history"][0]["losses"])
    assert set(record) == {"index", "per_sample_loss", "selected", "reliable"}
    assert record["per_sample_loss"].shape == record["index"].shape and record["selected"].all()

    metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert metrics["eer"] == pytest.approx(min(eers))  # val trials = test trials here
    assert [it["iteration"] for it in metrics["iterations"]] == [1, 2]
    assert all(0 <= it["nmi"] <= 1 and it["gate"] is None and it["best_L_eer"] is None for it in metrics["iterations"])
    assert [it["epochs"] for it in metrics["iterations"]] == [2, 2]
    assert metrics["wall_seconds"] > 0 and len(metrics["evaluations"]) == 4
    assert load_encoder(stage_dir / "best.model").channels == 16


@pytest.mark.slow
def test_lgl_pause_tune_interrupt_in_phase_l_and_resume_exactly(tiny_corpus, tmp_path, stage1_model):
    # keep_every=1: every epoch's loss record stays, so that each gated epoch's selection can be checked.
    config = _config(
        tiny_corpus,
        tmp_path / "a",
        stage1_model,
        mode="lgl",
        max_iterations=1,
        gates=[1000.0],
        pause_before_gate=True,
        keep_every=1,
    )
    stage_dir = tmp_path / "a" / "t" / "stage2_lgl"

    # 1. The run pauses after phase T so that the gate of phase L can be tuned.
    paused = stage2.run_stage2(config)
    assert (paused["status"], paused["iteration"]) == ("paused_before_gate", 1)
    assert _positions(paused["state"]["history"]) == [(1, "T", 1), (1, "T", 2)]

    # 2. The tuner starts from the configured gate; its button writes the override for iteration 1.
    tuner, title = gate_tuner.stage2_gate_tuner(stage_dir, config)
    assert tuner.gate == 1000.0 and "gate for iteration 1" in title
    tuned = float(np.median(tuner.per_sample_loss))
    summary = tuner.set_gate(tuned)
    assert 0.3 < summary.fraction_selected < 0.7
    message = tuner.apply(lambda g: stage2.apply_gate(stage_dir, g))
    assert "iteration 1" in message and stage2.read_gate_overrides(stage_dir) == {1: tuned}

    # 3. Interrupted after the first epoch of phase L.
    def crash(record, state):
        if record["phase"] == "L":
            raise KeyboardInterrupt("simulated interruption")

    with pytest.raises(KeyboardInterrupt):
        stage2.run_stage2(config, on_epoch=crash)
    before = json.loads((stage_dir / "state.json").read_text())
    labels_sha = _sha(stage_dir / "iter_01" / "pseudo_labels.txt")
    assert (before["iteration"], before["phase"], before["epoch"], before["gate"]) == (1, "L", 1, tuned)
    assert before["iterations"][0]["gate_source"] == "override"

    # 4. The rerun continues with the same iteration, phase, gate and pseudo labels.
    seen = []
    done = stage2.run_stage2(
        config,
        on_epoch=lambda record, state: seen.append(
            (record["iteration"], record["phase"], record["epoch"], record["gate"])
        ),
    )
    assert done["status"] == "done"
    assert seen == [(1, "L", 2, tuned)]
    after = json.loads((stage_dir / "state.json").read_text())
    assert after["history"][:3] == before["history"]
    assert _positions(after["history"]) == [(1, "T", 1), (1, "T", 2), (1, "L", 1), (1, "L", 2)]
    assert _sha(stage_dir / "iter_01" / "pseudo_labels.txt") == labels_sha
    gated = after["history"][2:]
    assert all(r["gate"] == tuned and 0 < r["fraction_selected"] < 1 for r in gated)
    for r in gated:
        losses = stage2.read_epoch_losses(stage_dir / r["losses"])
        np.testing.assert_array_equal(losses["selected"], losses["per_sample_loss"] <= np.float32(tuned))
    assert done["iterations"][0]["gate"] == tuned and done["iterations"][0]["best_L_eer"] is not None

    # 5. Same numbers as a run that was never interrupted (nor paused).
    plain = _config(tiny_corpus, tmp_path / "b", stage1_model, mode="lgl", max_iterations=1, gates=[tuned])
    reference = stage2.run_stage2(plain)
    plain_history = reference["state"]["history"]
    for resumed, uninterrupted in zip(after["history"], plain_history, strict=True):
        assert resumed["eer"] == pytest.approx(uninterrupted["eer"], abs=1e-9)
        assert resumed["loss"] == pytest.approx(uninterrupted["loss"], rel=1e-5)
        assert resumed["n_selected"] == uninterrupted["n_selected"]


def _best_t_losses(engine, iteration, epoch, losses):
    """Make ``losses`` the per-sample record of iteration ``iteration``'s best T epoch ``epoch``."""
    rel = f"iter_{iteration:02d}/T/losses_epoch_{epoch:03d}.npz"
    (engine.stage_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    n = losses.size
    np.savez(engine.stage_dir / rel, index=np.arange(n), per_sample_loss=losses, selected=np.ones(n, bool))
    while len(engine.state["iterations"]) < iteration:
        engine.state["iterations"].append({"phases": {}})
    engine.state["iterations"][iteration - 1] = {"phases": {"T": {"best_epoch": epoch, "last_losses": rel}}}
    engine.state["history"].append({"iteration": iteration, "phase": "T", "epoch": epoch, "gate": None, "losses": rel})


def test_gate_resolution_auto_config_and_override(tiny_corpus, tmp_path, stage1_model):
    config = _config(tiny_corpus, tmp_path, stage1_model, mode="lgl", gates=[2.5, "auto", 3, 5, 6])
    engine = stage2.Engine(config, stage2.prepare_data(config), None)
    engine.load_or_start()
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.exponential(0.4, 300), rng.normal(9.0, 1.5, 100)]).astype(np.float32)
    _best_t_losses(engine, 1, 2, losses)
    _best_t_losses(engine, 2, 3, losses)

    def gate_and_source(iteration):
        resolved = engine.resolve_gate(iteration)
        assert resolved["losses_epoch"] == (2, 3)[iteration - 1]
        return resolved["gate"], resolved["gate_source"]

    assert gate_and_source(1) == (2.5, "config")
    value, source = gate_and_source(2)
    assert source == "auto" and value == pytest.approx(gate.auto_gate(losses, seed=config.seed))
    assert 2.0 < value < 6.5  # the valley between the two loss modes
    stage2.write_gate_override(engine.stage_dir, 2, 4.0)
    assert gate_and_source(2) == (4.0, "override")


def test_tuner_starts_at_the_gate_the_engine_uses_with_a_nonzero_seed(tiny_corpus, tmp_path, stage1_model):
    config = _config(tiny_corpus, tmp_path, stage1_model, mode="lgl", gates="auto", seed=7)
    engine = stage2.Engine(config, stage2.prepare_data(config), None)
    engine.load_or_start()
    # Many overlapping losses: auto_gate subsamples them (with its seed) and lands elsewhere for seed 0.
    rng = np.random.default_rng(3)
    losses = np.concatenate([rng.exponential(1.0, 25_000), rng.normal(5.0, 1.0, 15_000).clip(min=0)]).astype(np.float32)
    _best_t_losses(engine, 1, 1, losses)
    engine.state.update(phase="L", gate=None)
    engine.commit()

    value = engine.resolve_gate(1)["gate"]
    tuner, _ = gate_tuner.stage2_gate_tuner(engine.stage_dir, config)
    assert engine.resolve_gate(1)["gate_source"] == "auto" and tuner.gate == value == gate.auto_gate(losses, seed=7)
    assert gate.auto_gate(losses, seed=0) != value  # the seed matters here: the tuner must use the engine's


def test_last_iteration_widens_the_encoder_from_scratch(tiny_corpus, tmp_path, stage1_model):
    config = _config(tiny_corpus, tmp_path, stage1_model, mode="baseline", max_iterations=2, last_channels=32)
    engine = stage2.Engine(config, stage2.prepare_data(config), None)
    assert (engine.channels_for(1), engine.channels_for(2)) == (16, 32)
    first, _ = engine.build_models(1, "T")
    stage1 = load_encoder(stage1_model)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), stage1.state_dict().values()))
    wide, head = engine.build_models(2, "T")
    assert wide.channels == 32 and head.weight.shape == (config.n_clusters, 192)


def test_resume_refuses_changed_parameters(tiny_corpus, tmp_path, stage1_model):
    config = _config(tiny_corpus, tmp_path, stage1_model, mode="baseline")
    data = stage2.prepare_data(config)
    engine = stage2.Engine(config, data, None)
    engine.load_or_start()
    changed = _config(
        tiny_corpus, tmp_path, stage1_model, mode="baseline", n_clusters=config.n_clusters + 1, frames=config.frames + 8
    )
    with pytest.raises(ValueError, match=r"n_clusters: \d+ → \d+, frames: 40 → 48.*allow_changed_params=True"):
        stage2.Engine(changed, stage2.prepare_data(changed), None).load_or_start()
    # The explicit override continues the run with the new values (and says so in the log).
    allowed = _config(
        tiny_corpus,
        tmp_path,
        stage1_model,
        mode="baseline",
        n_clusters=config.n_clusters + 1,
        allow_changed_params=True,
    )
    engine = stage2.Engine(allowed, stage2.prepare_data(allowed), None)
    engine.load_or_start()
    assert engine.state["params"]["n_clusters"] == config.n_clusters + 1


@pytest.mark.slow
def test_clean_pass_gate_chooses_and_selects_on_one_pass_of_the_best_t_model(tiny_corpus, tmp_path, stage1_model):
    config = _config(
        tiny_corpus,
        tmp_path,
        stage1_model,
        mode="lgl",
        max_iterations=1,
        gates="auto",
        gate_losses="clean",
        keep_every=1,
    )
    stage_dir = tmp_path / "t" / "stage2_lgl"
    result = stage2.run_stage2(config)
    assert result["status"] == "done"
    state = result["state"]
    t_phase = state["iterations"][0]["phases"]["T"]
    assert t_phase["gate_losses"] == "iter_01/T/clean_losses.npz"
    clean = stage2.read_epoch_losses(stage_dir / t_phase["gate_losses"])

    # The losses are the best T checkpoint's, on each whole utterance without augmentation.
    ckpt = torch.load(stage_dir / t_phase["best_model"], map_location="cpu", weights_only=False)
    encoder, head = ECAPATDNN(16), AAMSoftmax(config.n_clusters)
    encoder.load_state_dict(ckpt["encoder"])
    head.load_state_dict(ckpt["head"])
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    engine = stage2.Engine(config, stage2.prepare_data(config), None)
    engine.load_or_start()
    pseudo = engine.pseudo_labels(1)
    expected = clean_pass_losses(encoder, head, [tiny_corpus / "train" / e.path for e in entries], pseudo, device="cpu")
    np.testing.assert_allclose(clean["per_sample_loss"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(clean["index"], np.arange(len(entries)))

    # The gate is chosen on them, its evidence measured on them, and every L epoch trains on what they keep.
    evidence = state["iterations"][0]["gate_evidence"]
    gate_value = state["iterations"][0]["gate"]
    assert evidence["losses_source"] == "clean" and evidence["gate_source"] == "auto"
    assert gate_value == pytest.approx(gate.auto_gate(clean["per_sample_loss"], seed=config.seed))
    kept = clean["per_sample_loss"] <= np.float32(gate_value)
    assert evidence["fraction_kept"] == pytest.approx(kept.mean())
    assert gate_losses_record(state, 1)["losses_source"] == "clean"
    gated = [r for r in state["history"] if r["phase"] == "L"]
    assert len(gated) == 2
    for record in gated:
        losses = stage2.read_epoch_losses(stage_dir / record["losses"])
        np.testing.assert_array_equal(losses["selected"], kept[losses["index"]])

    # Once phase L is done, the tuner shows the clean losses its samples were kept by, with its gate.
    tuner, title = gate_tuner.stage2_gate_tuner(stage_dir, config)
    assert title == f"iteration 1, phase T, epoch {t_phase['best_epoch']} (clean pass)"
    assert tuner.gate == pytest.approx(gate_value)
    assert tuner.set_gate(gate_value).fraction_selected == pytest.approx(kept.mean())

    # The choice is fixed for the run: a resume with the reference's training-batch losses is refused.
    other = dataclasses.replace(config, gate_losses="training")
    with pytest.raises(ValueError, match=r"gate_losses: 'clean' → 'training'"):
        stage2.Engine(other, stage2.prepare_data(other), None).load_or_start()


def test_clean_pass_losses_checks_the_labels_shape(tiny_corpus):
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    paths = [tiny_corpus / "train" / e.path for e in entries[:3]]
    with pytest.raises(ValueError, match=r"labels has shape \(2,\) for 3 files"):
        clean_pass_losses(ECAPATDNN(16), AAMSoftmax(4), paths, np.zeros(2, int), device="cpu")


def test_resuming_a_run_of_an_earlier_kit_names_the_values_it_ran_with(tiny_corpus, tmp_path, stage1_model):
    config = _config(tiny_corpus, tmp_path, stage1_model, mode="baseline", seed=3)
    engine = stage2.Engine(config, stage2.prepare_data(config), None)
    engine.load_or_start()
    # A state.json written before cluster_seed and compare_raw_eer existed: k-means then used the
    # run's seed and phases compared raw EERs.
    for name in ("cluster_seed", "compare_raw_eer", "head_init", "ema_decay"):
        del engine.state["params"][name]
    engine.commit()
    with pytest.raises(ValueError, match=r"cluster_seed: 3 → 1234, compare_raw_eer: True → False"):
        stage2.Engine(config, stage2.prepare_data(config), None).load_or_start()
    same = _config(tiny_corpus, tmp_path, stage1_model, mode="baseline", seed=3, cluster_seed=3, compare_raw_eer=True)
    stage2.Engine(same, stage2.prepare_data(same), None).load_or_start()


# --- the reference's run rules, on scripted validation EERs ----------------------------------------


def _script_eers(monkeypatch, eers):
    """Validation EERs in epoch order instead of evaluating, so that the run's rules act on known numbers."""
    values = iter(eers)
    monkeypatch.setattr(
        stage2_executor,
        "evaluate_trials",
        lambda *args, **kwargs: {"eer": next(values), "min_dcf": 0.5, "min_dcf_0.01": 0.5},
    )


@pytest.mark.slow
@pytest.mark.parametrize("raw, epochs, best", [(False, 7, 1), (True, 5, 2)])
def test_phases_compare_eers_rounded_to_0_01_percent_as_the_reference(
    tiny_corpus, tmp_path, stage1_model, monkeypatch, raw, epochs, best
):
    # The reference's check_clustering reads these back from score.txt as 5.00, 5.00, 5.00, 5.00, 5.02, ...:
    # four ties, so it trains on until epoch 7 and keeps epoch 1 (the earliest 5.00). Raw floats end the
    # phase at epoch 5 with epoch 2 (5.001) as the best.
    eers = [5.004, 5.001, 5.003, 5.002, 5.02, 5.03, 5.04]
    _script_eers(monkeypatch, eers)
    config = _config(
        tiny_corpus,
        tmp_path,
        stage1_model,
        mode="baseline",
        max_iterations=1,
        max_epochs_per_phase=0,
        compare_raw_eer=raw,
    )
    result = stage2.run_stage2(config)
    stage_dir = tmp_path / "t" / "stage2_baseline"
    t_phase = result["state"]["iterations"][0]["phases"]["T"]
    assert t_phase["eers"] == eers[:epochs] and t_phase["best_epoch"] == best
    # The run's best (best.model) is chosen by the same comparison, so it is the phase's kept checkpoint.
    assert result["best"]["epoch"] == best and result["best"]["val_eer"] == eers[best - 1]
    assert sorted(p.name for p in (stage_dir / "iter_01" / "T").glob("*.model")) == sorted(
        {f"epoch_{best:03d}.model", f"epoch_{epochs:03d}.model"}
    )


def _adam_steps(path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["optimizer"]["state"][0]["step"])


@pytest.mark.slow
def test_lgl_run_keeps_the_adam_across_t_and_l_stops_at_max_epochs_and_thins_loss_records(
    tiny_corpus, tmp_path, stage1_model, monkeypatch
):
    # T: epoch 1 best, three worse → T ends after 4 epochs; L starts from epoch 1's weights.
    _script_eers(monkeypatch, [5.0, 6.0, 7.0, 8.0, 4.0, 4.5])
    config = _config(
        tiny_corpus,
        tmp_path,
        stage1_model,
        mode="lgl",
        max_iterations=1,
        gates=[1000.0],
        max_epochs_per_phase=0,
        max_epochs=6,
        keep_every=3,
    )
    stage_dir = tmp_path / "t" / "stage2_lgl"
    seen = {}

    def look(record, state):
        seen[(record["phase"], record["epoch"])] = _adam_steps(stage_dir / record["model"])
        if (record["phase"], record["epoch"]) == ("L", 1):
            seen["T files at L 1"] = sorted(p.name for p in (stage_dir / "iter_01" / "T").glob("*.model"))

    capped = stage2.run_stage2(config, on_epoch=look)
    per_epoch = seen[("T", 1)]
    # The reference's one Adam: L's first epoch continues the moments and step count of T's last (4th) epoch,
    # not a fresh Adam (1 epoch of steps) nor the best T epoch's (2 epochs).
    assert [seen[("T", e)] for e in (2, 3, 4)] == [2 * per_epoch, 3 * per_epoch, 4 * per_epoch]
    assert seen[("L", 1)] == 5 * per_epoch
    # T's last checkpoint, kept for that Adam state, goes once L's first epoch is committed.
    assert seen["T files at L 1"] == ["epoch_001.model"]

    # max_epochs=6 (the reference's --max_epoch, over all phases) ends the run inside phase L, with its best so far.
    assert capped["status"] == "done" and capped["max_epochs_reached"] and capped["epochs_run"] == 6
    assert (capped["state"]["phase"], capped["state"]["epoch"]) == ("L", 2)
    assert capped["best"] == {"iteration": 1, "phase": "L", "epoch": 1, "val_eer": 4.0}
    assert load_encoder(stage_dir / "best.model").channels == 16

    # Loss records: each phase's best and last epoch and every 3rd epoch of the run (T3, L2 = epoch 6) stay.
    kept = sorted(str(p.relative_to(stage_dir)) for p in stage_dir.glob("iter_01/*/*.npz"))
    assert kept == [
        f"iter_01/{name}"
        for name in (
            "L/losses_epoch_001.npz",
            "L/losses_epoch_002.npz",
            "T/losses_epoch_001.npz",
            "T/losses_epoch_003.npz",
            "T/losses_epoch_004.npz",
        )
    ]
    assert [r["losses"] is None for r in capped["state"]["history"]] == [False, True, False, False, False, False]
    assert gate_losses_record(capped["state"], 1)["losses"] == "iter_01/T/losses_epoch_001.npz"

    # A larger cap continues phase L where it stopped, until the stopping rule ends the run.
    _script_eers(monkeypatch, [4.6, 4.7])
    done = stage2.run_stage2(dataclasses.replace(config, max_epochs=0))
    assert done["status"] == "done" and not done["max_epochs_reached"] and done["epochs_run"] == 8
    assert done["state"]["iterations"][0]["phases"]["L"]["eers"] == [4.0, 4.5, 4.6, 4.7]


@pytest.mark.slow
def test_iteration_1_reuses_the_other_modes_clustering(tiny_corpus, tmp_path, stage1_model, monkeypatch):
    common = dict(max_iterations=1, max_epochs_per_phase=1)
    baseline = stage2.run_stage2(_config(tiny_corpus, tmp_path, stage1_model, mode="baseline", **common))
    first = tmp_path / "t" / "stage2_baseline" / "iter_01"
    assert baseline["state"]["iterations"][0]["clustering_reused_from"] is None
    assert json.loads((first / "quality.json").read_text())["kmeans"]["seed"] == 1234  # faiss's, not seed=0

    def no_kmeans(*args, **kwargs):
        raise AssertionError("k-means ran although a matching clustering exists")

    monkeypatch.setattr(cluster, "kmeans_pseudo_labels", no_kmeans)
    lgl = stage2.run_stage2(_config(tiny_corpus, tmp_path, stage1_model, mode="lgl", gates=[1000.0], **common))
    second = tmp_path / "t" / "stage2_lgl" / "iter_01"
    assert lgl["status"] == "done" and lgl["state"]["iterations"][0]["clustering_reused_from"] == str(first)
    assert (second / "pseudo_labels.txt").read_text() == (first / "pseudo_labels.txt").read_text()
    assert (second / "embeddings.npy").stat().st_ino == (first / "embeddings.npy").stat().st_ino  # linked
    assert json.loads((second / "quality.json").read_text())["reused_from"] == str(first)
    # Phase T is the baseline's too: same history, the same checkpoint files, no T epoch trained again.
    base_t = [r for r in baseline["state"]["history"] if r["phase"] == "T"]
    assert [r for r in lgl["state"]["history"] if r["phase"] == "T"] == base_t
    assert lgl["state"]["phase_t_from"] == str(tmp_path / "t" / "stage2_baseline")
    best_t = lgl["state"]["iterations"][0]["phases"]["T"]["best_model"]
    assert (second.parent / best_t).stat().st_ino == (first.parent / best_t).stat().st_ino
    assert [r["phase"] for r in lgl["state"]["history"]] == ["T", "L"]


@pytest.mark.parametrize(
    "baseline_change, baseline_rerun",
    [(dict(frames=36), {}), ({}, dict(max_epochs_per_phase=1))],
    ids=["other frames", "an earlier call trained a longer phase"],
)
@pytest.mark.slow
def test_lgl_trains_its_own_phase_t_when_the_baseline_differs(
    tiny_corpus, tmp_path, stage1_model, baseline_change, baseline_rerun
):
    common = dict(max_iterations=1, max_epochs_per_phase=1)
    first = dict(common, **baseline_change)
    if baseline_rerun:
        first["max_epochs_per_phase"] = 2
    stage2.run_stage2(_config(tiny_corpus, tmp_path, stage1_model, mode="baseline", **first))
    if baseline_rerun:
        # The finished run is called again with a smaller limit: its state now names 1, its phase T has 2 epochs.
        stage2.run_stage2(_config(tiny_corpus, tmp_path, stage1_model, mode="baseline", **common))
    lgl = stage2.run_stage2(_config(tiny_corpus, tmp_path, stage1_model, mode="lgl", gates=[1000.0], **common))
    assert "phase_t_from" not in lgl["state"]
    t_phase = lgl["state"]["iterations"][0]["phases"]["T"]
    assert len(t_phase["eers"]) == 1
    assert (tmp_path / "t" / "stage2_lgl" / t_phase["best_model"]).stat().st_nlink == 1


@pytest.mark.slow
def test_notebook04_runs_headless_and_draws_the_gate_histogram(tiny_corpus, tmp_path, stage1_model):
    papermill = pytest.importorskip("papermill")
    from lgl_helpers.app import pipeline, planning
    from lgl_helpers.runs import project_root

    config = _config(tiny_corpus, tmp_path / "runs", stage1_model, max_iterations=1, gates="auto")
    parameters = {name: getattr(config, name) for name in stage2.LGLConfig.field_names()}
    parameters.update(run_name="nb04", pause_before_gate=True)
    out = tmp_path / "04_out.ipynb"
    papermill.execute_notebook(
        str(planning.notebook_path("04_stage2_lgl")),
        str(out),
        parameters=parameters,
        kernel_name=pipeline.kernel_name(),
        cwd=str(project_root()),
        progress_bar=False,
    )
    # pause_before_gate stops before phase L; the rest of the notebook still runs (nothing blocks headless).
    state = stage2.read_state(tmp_path / "runs" / "nb04" / "stage2_lgl")
    assert (state["status"], state["phase"], state["gate"]) == ("paused_before_gate", "L", None)
    cells = json.loads(out.read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    texts = "".join("".join(o.get("text", "")) for o in outputs)
    assert "selected" in texts and "not finished" in json.dumps(outputs)
    # training curves, histogram, precision, EER, NMI (no gate evidence: the gate is not chosen yet)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 5
