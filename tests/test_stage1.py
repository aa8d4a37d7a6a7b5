"""Stage I training: EER falls, run-folder artefacts, resume after an interruption, reference export, bad input."""

import dataclasses
import json
import logging
import shutil

import numpy as np
import pytest
import torch
from corpus_params import tiny_data_params
from reference import reference_path

from lgl_helpers.core.augment import AugmentError
from lgl_helpers.core.data import CropError
from lgl_helpers.core.models import load_encoder
from lgl_helpers.corpus.lists import Trial, read_trials, write_trials
from lgl_helpers.corpus.toy import ToyConfig, generate_toy_corpus
from lgl_helpers.training import stage1

# EER points by which 3 epochs must beat the untrained encoder: 7-16 points over training seeds 0-4
# (`python benchmarks/ci_margins.py --unit`; 200 trials, so one point is one target trial).
STAGE1_EER_GAIN = 3.0


def _config(corpus, runs_dir, **overrides):
    params = dict(
        run_name="t",
        runs_dir=str(runs_dir),
        **tiny_data_params(corpus),
        channels=16,
        frames=30,
        batch_size=8,
        epochs=2,
        test_interval=2,
        workers=0,
        device="cpu",
        interactive=False,
    )
    params.update(overrides)
    return stage1.Stage1Config(**params)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """40 training speakers (240 utterances of 1-2 s), 10 test speakers, 200 trials: enough to generalise a little."""
    root = tmp_path_factory.mktemp("toy") / "small"
    generate_toy_corpus(
        root, ToyConfig.tiny(n_train_speakers=40, n_test_speakers=10, n_trials=200), workers=1, show_progress=False
    )
    return root


@pytest.fixture(scope="module")
def trained(small_corpus, tmp_path_factory, training_seed):
    """A tiny Stage I run: C=32, 0.6 s crops, batch 32, 3 epochs (21 steps), evaluated at epochs 0 and 3.

    Clean views (augment=False): at this budget the augmented task learns too slowly to beat the
    untrained encoder reliably; the demo profile shows the full method's gain.
    """
    config = _config(
        small_corpus,
        tmp_path_factory.mktemp("runs"),
        channels=32,
        frames=60,
        batch_size=32,
        epochs=3,
        test_interval=3,
        augment=False,
        seed=training_seed,
    )
    records = []
    root = logging.getLogger("lgl_helpers")
    handler = _ListHandler()
    root.addHandler(handler)
    try:
        result = stage1.train_stage1(config, on_epoch=lambda record, history: records.append(record))
    finally:
        root.removeHandler(handler)
    return config, result, records, handler.messages


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.slow
def test_stage1_lowers_eer_below_the_untrained_encoder(trained):
    _, result, _, _ = trained
    assert result["completed"] and result["epochs_run"] == 3 and result["best_epoch"] == 3
    print(f"MARGIN stage1_eer_gain {result['untrained_eer'] - result['eer']:.3f}")
    assert result["eer"] < result["untrained_eer"] - STAGE1_EER_GAIN, (result["untrained_eer"], result["eer"])


@pytest.mark.slow
def test_run_folder_holds_metrics_scores_and_loadable_checkpoints(trained):
    config, result, records, messages = trained
    stage_dir = stage1.stage_folder(config)
    metrics = json.loads((stage_dir / "metrics.json").read_text())
    for key in (
        "eer",
        "min_dcf",
        "min_dcf_0.01",
        "best_epoch",
        "untrained_eer",
        "untrained_min_dcf",
        "epochs_run",
        "wall_seconds",
        "best_checkpoint",
    ):
        assert metrics[key] == result[key]
    assert 0 <= metrics["min_dcf"] <= 1 and metrics["wall_seconds"] > 0
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert [r["epoch"] for r in records if "eer" in r] == [0, 3]
    assert records[-1]["eer"] == metrics["eer"]
    scores = (stage_dir / "scores.txt").read_text().splitlines()
    assert (
        len(scores) == 4
        and scores[0].startswith("Epoch 0 (untrained)")
        and "EER" in scores[3]
        and "EER" not in scores[1]
    )
    assert sorted(p.name for p in (stage_dir / "checkpoints").iterdir()) == ["epoch_003.model", "last.model"]
    # stored relative to the run folder, so that the run can be moved
    assert metrics["best_checkpoint"] == "stage1/best.model"
    encoder = load_encoder(stage_dir.parent / metrics["best_checkpoint"])
    assert encoder.channels == 32
    ckpt = torch.load(stage_dir.parent / metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["params"]["frames"] == 60 and ckpt["params"]["train_root"] == config.train_root
    for key in ("loss", "aat", "optimizer", "aat_optimizer", "scheduler", "rng", "history"):
        assert key in ckpt
    assert (stage_dir / "stage1_params.json").is_file() and (stage_dir / "stage1.log").is_file()
    assert sum("model selection" in m for m in messages) == 1  # val_trials == trials is said once


@pytest.mark.slow
def test_export_to_reference_format(trained, tmp_path):
    config, result, _, _ = trained
    best = stage1.stage_folder(config) / "best.model"
    out = stage1.export_reference(best, tmp_path / "ref.model")
    exported = torch.load(out, map_location="cpu", weights_only=True)
    reference = torch.load(reference_path("stage1_checkpoint.model"), map_location="cpu", weights_only=True)
    assert set(exported) == set(reference)
    for key in ("Loss.w", "Loss.b", *[k for k in reference if k.startswith("AATNet.")]):
        assert exported[key].shape == reference[key].shape
    kit = torch.load(best, map_location="cpu", weights_only=True)
    torch.testing.assert_close(exported["Network.conv1.weight"], kit["encoder"]["conv1.weight"], rtol=0, atol=0)
    assert load_encoder(out).channels == 32


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_resume_after_interruption_continues_with_identical_parameters(tiny_corpus, tmp_path):
    steps_per_epoch = 48 // 8
    straight = stage1.train_stage1(_config(tiny_corpus, tmp_path / "a"))
    assert straight["completed"]

    config = _config(tiny_corpus, tmp_path / "b", max_steps=steps_per_epoch + 2)  # stops inside epoch 2
    stopped = stage1.train_stage1(config)
    assert not stopped["completed"] and stopped["epochs_run"] == 1
    stage_dir = stage1.stage_folder(config)
    saved = _state(stage_dir / "checkpoints" / "last.model")
    assert saved["epoch"] == 1 and not (stage_dir / "metrics.json").exists()

    seen = []
    resumed = stage1.train_stage1(
        _config(tiny_corpus, tmp_path / "b"), on_epoch=lambda record, history: seen.append(record["epoch"])
    )
    assert resumed["completed"] and seen == [2]  # no second untrained evaluation, no repeated epoch 1
    assert [r["epoch"] for r in resumed["history"]] == [0, 1, 2]
    assert resumed["history"][1] == saved["history"][1]
    final_b = _state(stage_dir / "checkpoints" / "last.model")
    final_a = _state(stage1.stage_folder(_config(tiny_corpus, tmp_path / "a")) / "checkpoints" / "last.model")
    for part in ("encoder", "loss", "aat"):
        for key, tensor in final_a[part].items():
            torch.testing.assert_close(final_b[part][key], tensor, rtol=0, atol=0, msg=f"{part}.{key}")
    assert resumed["eer"] == straight["eer"]


def test_config_validation_names_the_parameter():
    for changes, name in (
        ({"channels": 12}, "channels"),
        ({"batch_size": 1}, "batch_size"),
        ({"lr_decay": 0}, "lr_decay"),
    ):
        with pytest.raises(ValueError, match=f"Stage1Config.{name}="):
            stage1.Stage1Config(**changes).validate()


def test_bad_input_fails_before_training(tiny_corpus, tmp_path):
    bad_musan = tmp_path / "musan"
    shutil.copytree(tiny_corpus / "musan_split" / "noise", bad_musan / "noise")  # speech and music missing
    cases = [
        ({"musan_root": str(bad_musan)}, AugmentError, r"expected <musan_root>/<noise\|speech\|music>"),
        (
            {"rir_root": str(tiny_corpus / "lists")},
            AugmentError,
            r"no RIRs found; expected one of: <rir_root>/simulated_rirs",
        ),
        ({"frames": 400}, CropError, "longer than every file"),
        ({"train_list": ""}, ValueError, "train_list is not set"),
    ]
    trials = read_trials(tiny_corpus / "lists" / "trials.txt")
    broken = tmp_path / "trials.txt"
    write_trials(broken, trials[:-1] + [Trial(1, trials[0].path_a, "id99999/gone/00001.wav")])
    cases.append(
        ({"val_trials": str(broken)}, FileNotFoundError, r"val_trials .*1 of its \d+ files are missing.*id99999/gone")
    )
    for overrides, error, message in cases:
        config = _config(tiny_corpus, tmp_path / "runs", **overrides)
        with pytest.raises(error, match=message):
            stage1.train_stage1(config)
        assert not (stage1.stage_folder(config) / "checkpoints").exists()
        assert not (stage1.stage_folder(config) / "stage1_params.json").exists()


def test_preview_views_shapes(tiny_corpus, tmp_path):
    data = stage1.prepare_data(_config(tiny_corpus, tmp_path))
    preview = stage1.preview_views(data, n_items=3)
    for name in ("crop0", "crop1", "A", "S", "P"):
        assert preview[name].shape == (3, 30 * 160 + 240) and np.isfinite(preview[name]).all()
    assert len(preview["captions"]) == 3 and all(c.startswith("a: ") for c in preview["captions"])


@pytest.mark.slow
def test_resume_refuses_changed_parameters_unless_allowed(tiny_corpus, tmp_path):
    config = _config(tiny_corpus, tmp_path, epochs=1)
    stage1.train_stage1(config)
    # Run-control fields (here epochs) may change; a field that defines the results so far may not.
    changed = dataclasses.replace(config, epochs=2, lr=config.lr * 2, aat_weight=1.0)
    with pytest.raises(
        ValueError, match=r"last\.model: .*lr: .* → .*, aat_weight: 3\.0 → 1\.0.*allow_changed_params=True"
    ):
        stage1.train_stage1(changed)
    resumed = stage1.train_stage1(dataclasses.replace(changed, allow_changed_params=True))
    assert resumed["completed"] and [r["epoch"] for r in resumed["history"]] == [0, 1, 2]
