"""Notebook 00 executed headlessly by papermill on the tiny toy corpus."""

from __future__ import annotations

import json

import papermill
import pytest

from lgl_helpers import runs

NOTEBOOK = runs.project_root() / "notebooks" / "00_data_setup.ipynb"


def _execute(tmp_path, **parameters):
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(tmp_path / "executed.ipynb"),
        parameters=dict(interactive=False, **parameters),
        kernel_name="python3",
        cwd=str(NOTEBOOK.parent),
        progress_bar=False,
    )
    return tmp_path / "runs" / parameters["run_name"]


@pytest.mark.slow
def test_notebook00_sets_up_the_toy_corpus(tiny_corpus, tiny_config, tmp_path):
    run_dir = _execute(
        tmp_path,
        run_name="nb00",
        runs_dir=str(tmp_path / "runs"),
        toy_root=str(tiny_corpus),
        toy_preset="tiny",
        make_toy=False,
        n_spectrograms=2,
    )
    summary = json.loads((run_dir / "data_summary.json").read_text())
    n_utterances = tiny_config.n_train_speakers * tiny_config.sessions_per_speaker * tiny_config.utterances_per_session
    assert summary["train"]["utterances"] == n_utterances == 48
    assert summary["train"]["speakers"] == tiny_config.n_train_speakers
    assert summary["train"]["sessions"] == tiny_config.n_train_speakers * tiny_config.sessions_per_speaker
    assert summary["checks"]["trials"] == {
        "kind": "trials",
        "trials": 60,
        "target": 30,
        "nontarget": 30,
        "files": 24,
        "speakers": 4,
    }
    assert summary["augmentation"]["musan"] == {"noise": 4, "speech": 4, "music": 4}
    assert summary["augmentation"]["rirs"] == 6
    assert summary["built_train_list"] is False

    data = json.loads((run_dir / "data.json").read_text())
    assert list(data) == [*runs.DATA_KEYS, runs.EVAL_TRIALS_KEY]
    lists = run_dir / "lists"
    # inside the run: relative to it (the run folder can be moved); the corpus outside it: absolute
    assert data[runs.EVAL_TRIALS_KEY] == {"toy-O": "lists/trials.txt", "toy-H": "lists/trials_hard.txt"}
    assert data["train_root"] == str(tiny_corpus / "train")
    assert data["train_list"] == "lists/train_list.txt"
    assert data["val_trials"] == data["trials"] == "lists/trials.txt"
    assert runs.data_eval_trials(run_dir) == {"toy-O": lists / "trials.txt", "toy-H": lists / "trials_hard.txt"}
    assert (run_dir / "lists" / "trials.txt").read_text() == (tiny_corpus / "lists" / "trials.txt").read_text()
    params = json.loads((run_dir / "data_setup_params.json").read_text())
    assert params["params"]["toy_root"] == str(tiny_corpus) and params["params"]["interactive"] is False


@pytest.mark.slow
def test_notebook00_builds_the_list_from_a_given_train_root(tiny_corpus, tmp_path):
    root = str(tiny_corpus)
    run_dir = _execute(
        tmp_path,
        run_name="built",
        runs_dir=str(tmp_path / "runs"),
        toy_root=str(tmp_path / "none"),
        make_toy=False,
        train_root=root + "/train",
        test_root=root + "/test",
        trials=root + "/lists/trials.txt",
        musan_root=root + "/musan_split",
        rir_root=root + "/rirs",
    )
    summary = json.loads((run_dir / "data_summary.json").read_text())
    assert summary["built_train_list"] is True and summary["train"]["utterances"] == 48
    assert (run_dir / "lists" / "train_list.txt").read_text() == (tiny_corpus / "lists" / "train_list.txt").read_text()
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
def test_notebook00_stops_on_a_bad_list_without_writing_lists(tiny_corpus, tmp_path):
    bad = tmp_path / "trials.txt"
    bad.write_text("1 id10001/none/00001.wav\n")
    with pytest.raises(papermill.PapermillExecutionError, match="expected 3 fields"):
        _execute(
            tmp_path,
            run_name="bad",
            runs_dir=str(tmp_path / "runs"),
            toy_root=str(tiny_corpus),
            toy_preset="tiny",
            make_toy=False,
            test_root=str(tiny_corpus / "test"),
            trials=str(bad),
        )
    assert not (tmp_path / "runs" / "bad" / "lists").exists()
    assert not (tmp_path / "runs" / "bad" / "data.json").exists()
