"""Notebook 00's helpers: data locations, list preparation, summaries, augmentation sets."""

from __future__ import annotations

import ast
import json
from types import SimpleNamespace

import pytest

from lgl_helpers import runs
from lgl_helpers.core import evaluation
from lgl_helpers.corpus import data_setup as corpus
from lgl_helpers.corpus.data_setup import DataSetupConfig
from lgl_helpers.corpus.lists import ListCheckError, read_train_list
from lgl_helpers.corpus.toy import toy_paths


def _config(tiny_corpus, **overrides) -> DataSetupConfig:
    values = dict(toy_root=str(tiny_corpus), toy_preset="tiny", make_toy=False, interactive=False)
    values.update(overrides)
    return DataSetupConfig(**values)


def test_config_fields_equal_the_notebook_parameters():
    notebook = json.loads((runs.project_root() / "notebooks" / "00_data_setup.ipynb").read_text())
    cell = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    names = [node.targets[0].id for node in tree.body]
    assert names == DataSetupConfig.field_names()
    defaults = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body}
    assert DataSetupConfig(**defaults) == DataSetupConfig()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(toy_preset="huge"), "toy_preset='huge'"),
        (dict(n_spectrograms=-1), "n_spectrograms=-1"),
        (dict(make_toy="yes"), "make_toy='yes'"),
        (dict(seed=1.5), "seed=1.5"),
    ],
)
def test_config_errors_name_the_parameter(overrides, message):
    with pytest.raises(ValueError, match=message):
        DataSetupConfig(**overrides)


def test_empty_paths_come_from_the_toy_corpus(tiny_corpus):
    assert corpus.resolve_data_setup(_config(tiny_corpus)) == toy_paths(tiny_corpus)


def test_explicit_paths_win_and_a_train_root_alone_means_build(tiny_corpus, tmp_path):
    val = tmp_path / "val.txt"
    val.write_text((tiny_corpus / "lists" / "trials.txt").read_text())
    paths = corpus.resolve_data_setup(
        _config(
            tiny_corpus,
            train_root=str(tiny_corpus / "train"),
            val_trials=str(val),
            toy_root=str(tmp_path / "no_toy"),
            rir_root=str(tiny_corpus / "rirs"),
            musan_root=str(tiny_corpus / "musan_split"),
            test_root=str(tiny_corpus / "test"),
            trials=str(tiny_corpus / "lists" / "trials.txt"),
        )
    )
    assert paths["train_list"] is None and paths["val_trials"] == val
    assert paths["train_root"] == tiny_corpus / "train"
    assert not (tmp_path / "no_toy").exists()  # every path given: no toy corpus needed


def test_resolve_errors_name_the_parameter(tiny_corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="train_root='/nonexistent'"):
        corpus.resolve_data_setup(_config(tiny_corpus, train_root="/nonexistent"))
    with pytest.raises(ValueError, match="train_list is given but train_root is empty"):
        corpus.resolve_data_setup(_config(tiny_corpus, train_list=str(tiny_corpus / "lists" / "train_list.txt")))
    with pytest.raises(ValueError, match="trials is given but test_root is empty"):
        corpus.resolve_data_setup(_config(tiny_corpus, trials=str(tiny_corpus / "lists" / "trials.txt")))
    with pytest.raises(ValueError, match="train_root is empty and there is no toy corpus"):
        corpus.resolve_data_setup(_config(tiny_corpus, toy_root=str(tmp_path / "none")))
    with pytest.raises(ValueError, match=r"differ from toy_preset='default'"):
        corpus.resolve_data_setup(_config(tiny_corpus, toy_preset="default"))


def test_make_toy_generates_a_missing_corpus(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(corpus.toy, "generate_toy_corpus", lambda root, config: calls.append((root, config)))
    assert corpus.ensure_toy_corpus(tmp_path / "toy", "tiny", make=True) == tmp_path / "toy"
    assert calls == [(tmp_path / "toy", corpus.toy.ToyConfig.tiny())]
    assert corpus.ensure_toy_corpus(tmp_path / "toy", "tiny", make=False) is None


def test_prepare_lists_copies_checked_lists_and_writes_data_json(tiny_corpus, tmp_path):
    run_dir = tmp_path / "run"
    setup = corpus.prepare_lists(corpus.resolve_data_setup(_config(tiny_corpus)), run_dir, show_progress=False)
    assert setup["checks"]["train"]["lines"] == 48 and setup["checks"]["trials"]["trials"] == 60
    assert not setup["built_train_list"]
    data = json.loads((run_dir / "data.json").read_text())
    assert list(data) == [*runs.DATA_KEYS, runs.EVAL_TRIALS_KEY]
    assert data["train_list"] == "lists/train_list.txt"  # inside the run: relative to it
    assert data["trials"] == data["val_trials"] == "lists/trials.txt"
    assert data["train_root"] == str(tiny_corpus / "train") and data["rir_root"] == str(tiny_corpus / "rirs")
    assert (run_dir / "lists" / "train_list.txt").read_text() == (tiny_corpus / "lists" / "train_list.txt").read_text()
    assert runs.resolve_data_paths(run_dir)["musan_root"] == tiny_corpus / "musan_split"


def test_the_toy_corpus_s_test_lists_become_the_run_s_evaluation_lists(tiny_corpus, tmp_path):
    """Its O list is the run's test list, its H list is checked and copied: stages with eval_trials = {}
    evaluate both, wherever the run folder lives."""
    run_dir = tmp_path / "runs" / "r"
    setup = corpus.prepare_lists(corpus.resolve_data_setup(_config(tiny_corpus)), run_dir, show_progress=False)
    lists = run_dir.resolve() / "lists"
    expected = {"toy-O": lists / "trials.txt", "toy-H": lists / "trials_hard.txt"}
    assert setup["eval_trials"] == expected and runs.data_eval_trials(run_dir) == expected
    assert setup["checks"]["toy-H"]["trials"] > 0
    assert (lists / "trials_hard.txt").read_text() == (tiny_corpus / "lists" / "trials_hard.txt").read_text()
    stage = SimpleNamespace(eval_trials={}, run_name="r", runs_dir=str(tmp_path / "runs"))
    assert evaluation.list_paths(stage, lists / "trials.txt") == expected
    stage.eval_trials = {"mine": str(lists / "trials.txt")}
    assert evaluation.list_paths(stage, lists / "trials.txt") == {"mine": lists / "trials.txt"}


def test_a_test_list_of_another_corpus_has_no_prepared_evaluation_lists(tiny_corpus, tmp_path):
    own = tmp_path / "trials.txt"
    own.write_text((tiny_corpus / "lists" / "trials.txt").read_text())
    setup = corpus.prepare_lists(
        dict(toy_paths(tiny_corpus), trials=own, val_trials=own), tmp_path / "run", show_progress=False
    )
    assert setup["eval_trials"] == {} and runs.data_eval_trials(tmp_path / "run") == {}
    stage = SimpleNamespace(eval_trials={}, run_name="run", runs_dir=str(tmp_path))
    assert evaluation.list_paths(stage, own) == {"test": own}


def test_prepare_lists_builds_a_missing_train_list(tiny_corpus, tmp_path):
    paths = dict(toy_paths(tiny_corpus), train_list=None)
    setup = corpus.prepare_lists(paths, tmp_path / "run", show_progress=False)
    assert setup["built_train_list"] and setup["checks"]["train"]["lines"] == 48
    assert (tmp_path / "run" / "lists" / "train_list.txt").read_text() == (
        tiny_corpus / "lists" / "train_list.txt"
    ).read_text()
    names = sorted(p.name for p in (tmp_path / "run" / "lists").iterdir())
    assert names == ["train_list.txt", "trials.txt", "trials_hard.txt"]


def test_prepare_lists_writes_nothing_when_a_list_is_bad(tiny_corpus, tmp_path):
    bad = tmp_path / "trials.txt"
    bad.write_text("1 id10001/missing/00001.wav id10002/missing/00002.wav\n0 x.wav\n")
    paths = dict(toy_paths(tiny_corpus), trials=bad, val_trials=bad)
    with pytest.raises(ListCheckError, match=r"trials.txt: \d+ problem"):
        corpus.prepare_lists(paths, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()


def test_summaries_of_the_tiny_corpus(tiny_corpus):
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    summary = corpus.summarize_train_list(entries)
    assert (summary["speakers"], summary["sessions"], summary["utterances"]) == (8, 16, 48)
    assert summary["utterances_per_speaker_min"] == summary["utterances_per_speaker_max"] == 6
    assert 1.0 <= summary["seconds_min"] <= summary["seconds_median"] <= summary["seconds_max"] <= 2.0
    assert summary["hours"] == pytest.approx(sum(e.duration for e in entries) / 3600, abs=1e-4)
    augmentation = corpus.find_augmentation_sets(tiny_corpus / "musan_split", tiny_corpus / "rirs")
    assert augmentation == {
        "musan": {"noise": 4, "speech": 4, "music": 4},
        "musan_files": 12,
        "rirs": 6,
        "rir_room_types": {"largeroom": 2, "mediumroom": 2, "smallroom": 2},
    }
    # rir_root may also name the simulated_rirs folder itself; a missing root counts nothing
    assert corpus.find_augmentation_sets(None, tiny_corpus / "rirs" / "simulated_rirs")["rirs"] == 6
    assert corpus.find_augmentation_sets(None, None)["musan_files"] == 0


def test_write_data_summary(tiny_corpus, tmp_path):
    setup = corpus.prepare_lists(toy_paths(tiny_corpus), tmp_path, show_progress=False)
    entries = read_train_list(setup["paths"]["train_list"])
    summary = corpus.write_data_summary(
        tmp_path,
        setup,
        corpus.summarize_train_list(entries),
        corpus.find_augmentation_sets(tiny_corpus / "musan_split", None),
    )
    assert json.loads((tmp_path / "data_summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["paths"]["trials"] == "lists/trials.txt"  # inside the run: relative to it
