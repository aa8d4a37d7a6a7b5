"""Each stage keeps its final test scores (``test_scores.txt``, recorded in metrics.json), and
"validation = test" is decided by the lists' trials, not their paths."""

import json
import logging

import numpy as np
import pytest
import torch
from corpus_params import tiny_data_params

from lgl_helpers.core.metrics import compute_eer, compute_min_dcf, read_trial_scores
from lgl_helpers.core.models import ECAPATDNN, save_encoder
from lgl_helpers.corpus.lists import Trial, read_train_list, read_trials, write_trials
from lgl_helpers.training import stage1, stage2
from lgl_helpers.training.stage1 import scoring as stage1_scoring

TRIALS = [
    Trial(1, "id1/s/1.wav", "id1/t/2.wav"),
    Trial(0, "id1/s/1.wav", "id2/u/1.wav"),
    Trial(0, "id2/u/1.wav", "id3/v/1.wav"),
]


def _stage1_data(val_trials, test_trials):
    return stage1.Stage1Data({}, [], val_trials, test_trials, None, None)


def _stage2_data(val_trials, test_trials):
    return stage2.Stage2Data({}, None, [], val_trials, test_trials, None)


@pytest.mark.parametrize("make", [_stage1_data, _stage2_data])
def test_val_is_test_by_content_not_path(make):
    assert make(TRIALS, TRIALS).same_val_test
    assert make(list(reversed(TRIALS)), list(TRIALS)).same_val_test  # another file, another line order
    assert not make(TRIALS[:2], TRIALS).same_val_test
    assert not make([TRIALS[0], TRIALS[0], TRIALS[1]], TRIALS).same_val_test  # a repeated trial counts twice
    assert not make([Trial(0, TRIALS[0].path_a, TRIALS[0].path_b), *TRIALS[1:]], TRIALS).same_val_test


def test_stage1_maps_test_trials_into_the_validation_order():
    data = _stage1_data(list(reversed(TRIALS)), TRIALS)
    assert [data.val_trials[i] for i in data.test_in_val] == TRIALS
    assert _stage1_data(TRIALS[:2], TRIALS).test_in_val is None


def _stage1_config(corpus, runs_dir, **overrides):
    params = dict(
        run_name="t",
        runs_dir=str(runs_dir),
        **tiny_data_params(corpus, augment=False),
        channels=16,
        frames=30,
        batch_size=8,
        epochs=1,
        workers=0,
        device="cpu",
        interactive=False,
    )
    params.update(overrides)
    return stage1.Stage1Config(**params)


def test_a_copy_of_the_test_list_is_the_test_list(tiny_corpus, tmp_path, caplog):
    trials = read_trials(tiny_corpus / "lists" / "trials.txt")
    copy = write_trials(tmp_path / "copy_of_trials.txt", list(reversed(trials)))
    with caplog.at_level(logging.WARNING, logger="lgl_helpers"):
        data = stage1.prepare_data(_stage1_config(tiny_corpus, tmp_path / "runs", val_trials=str(copy)))
    assert data.same_val_test
    assert any("holds the same trials as the test list" in r.getMessage() for r in caplog.records)
    other = write_trials(tmp_path / "other.txt", trials[: len(trials) // 2])
    data = stage1.prepare_data(_stage1_config(tiny_corpus, tmp_path / "runs", val_trials=str(other)))
    assert not data.same_val_test


def _check_scores_file(metrics, trials_path, run_dir):
    """The file lists the test trials in order, and its scores give metrics.json's numbers."""
    trials, scores = read_trial_scores(run_dir / metrics["test_scores"])
    assert trials == read_trials(trials_path)
    labels = np.array([t.label for t in trials])
    assert compute_eer(scores, labels) == pytest.approx(metrics["eer"], abs=1e-9)
    assert compute_min_dcf(scores, labels) == pytest.approx(metrics["min_dcf"], abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("separate_val", [False, True])
def test_stage1_keeps_its_test_scores(tiny_corpus, tmp_path, monkeypatch, separate_val):
    trials_path = tiny_corpus / "lists" / "trials.txt"
    overrides = {}
    if separate_val:  # a validation list in another order under another name: still val = test
        overrides["val_trials"] = str(write_trials(tmp_path / "val.txt", list(reversed(read_trials(trials_path)))))
    calls = []
    original = stage1_scoring.evaluate_trials
    monkeypatch.setattr(
        stage1_scoring, "evaluate_trials", lambda *args, **kwargs: calls.append(args[1]) or original(*args, **kwargs)
    )
    config = _stage1_config(tiny_corpus, tmp_path / "runs", **overrides)
    stage1.train_stage1(config)
    metrics = json.loads((stage1.stage_folder(config) / "metrics.json").read_text())
    assert metrics["val_is_test"] and metrics["test_scores"] == "stage1/test_scores.txt"  # relative to the run
    assert len(calls) == 2  # untrained and epoch 1, each once: validation = test is not scored twice
    _check_scores_file(metrics, trials_path, stage1.stage_folder(config).parent)


@pytest.mark.slow
def test_stage1_with_a_separate_validation_list_scores_the_test_list_at_the_end(tiny_corpus, tmp_path):
    trials = read_trials(tiny_corpus / "lists" / "trials.txt")
    val = write_trials(tmp_path / "val.txt", trials[: len(trials) // 2])
    config = _stage1_config(tiny_corpus, tmp_path / "runs", val_trials=str(val))
    stage1.train_stage1(config)
    metrics = json.loads((stage1.stage_folder(config) / "metrics.json").read_text())
    assert not metrics["val_is_test"]
    _check_scores_file(metrics, tiny_corpus / "lists" / "trials.txt", stage1.stage_folder(config).parent)


@pytest.mark.slow
def test_stage2_keeps_its_test_scores(tiny_corpus, tmp_path):
    torch.manual_seed(0)
    init_model = tmp_path / "stage1.model"
    save_encoder(init_model, ECAPATDNN(16).eval())
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    config = stage2.CONFIGS["baseline"](
        run_name="t",
        runs_dir=str(tmp_path / "runs"),
        init_model=str(init_model),
        **tiny_data_params(tiny_corpus, augment=False),
        n_clusters=max(2, min(len({e.speaker for e in entries}), len(entries) // 2)),
        cluster_n_iter=5,
        frames=40,
        batch_size=min(16, len(entries)),
        max_iterations=1,
        max_epochs_per_phase=1,
        workers=0,
        device="cpu",
        interactive=False,
    )
    result = stage2.run_stage2(config)
    assert result["status"] == "done" and result["val_is_test"]
    metrics = json.loads((stage2.stage_folder(config) / "metrics.json").read_text())
    assert metrics["test_scores"] == f"{stage2.stage_folder(config).name}/test_scores.txt"  # relative to the run
    assert metrics["eer"] == pytest.approx(metrics["best"]["val_eer"], abs=1e-9)  # val = test: the same model
    _check_scores_file(metrics, tiny_corpus / "lists" / "trials.txt", stage2.stage_folder(config).parent)
