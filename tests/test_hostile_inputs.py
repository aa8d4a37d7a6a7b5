"""What a careless or hostile user throws at the kit: non-finite and silent audio, two writers of one run,
parameters it cannot use, broken state files, untrusted checkpoints, and the report's quiet misreports.

Each refusal is one line naming the file, line or parameter; silence is a warning in the output itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import types
import warnings

import numpy as np
import pytest
import soundfile
import torch
from tiny_encoder import tiny_encoder, write_checkpoints, write_noise

from lgl_helpers import files, run_lock, runs
from lgl_helpers.app import cli, pipeline, planning
from lgl_helpers.app.data_checks import _checkpoint_check
from lgl_helpers.app.doctor import runs_folder_check
from lgl_helpers.app.report import validation_is_test, write_report
from lgl_helpers.app.train_cli import read_params
from lgl_helpers.core.audio import AudioError, check_samples, is_silent, read_wav
from lgl_helpers.core.models import load_encoder
from lgl_helpers.corpus.data_setup import toy_test_lists
from lgl_helpers.corpus.lists import ListCheckError, check_list
from lgl_helpers.corpus.toy import toy_eval_trials, toy_paths
from lgl_helpers.training.stage1 import Stage1Config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("ckpt"), tiny_encoder(), eer_threshold=0.5)["kit"]


def _float_wav(path, wave):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.asarray(wave, dtype=np.float32), 16000, subtype="FLOAT")
    return path


def _bad_wavs(folder):
    """A float wav full of NaN, one with a single inf sample, one of zeros and one of a DC offset."""
    noise = np.random.default_rng(0).normal(0, 0.1, 24000)
    with_inf = noise.copy()
    with_inf[100] = np.inf
    return {
        "nan": _float_wav(folder / "nan.wav", np.full(24000, np.nan)),
        "inf": _float_wav(folder / "inf.wav", with_inf),
        "zeros": _float_wav(folder / "zeros.wav", np.zeros(24000)),
        "dc": _float_wav(folder / "dc.wav", np.full(24000, 0.1)),
    }


def _cli(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


# --- one audio rule ------------------------------------------------------------------------------------------


def test_the_sample_rule_refuses_non_finite_and_recognises_no_signal():
    speech = np.random.default_rng(1).normal(0, 0.05, 16000)
    assert check_samples("a.wav", speech) is speech
    for bad in (np.nan, np.inf, -np.inf):
        wave = speech.copy()
        wave[5] = bad
        with pytest.raises(AudioError, match=r"^a\.wav: 1 of its 16000 samples are NaN or infinite"):
            check_samples("a.wav", wave)
    assert is_silent(np.zeros(16000)) and is_silent(np.full(16000, -0.3)) and is_silent(np.array([]))
    assert not is_silent(speech) and not is_silent(speech * 0.01)  # -60 dBFS is quiet, not silent


def test_training_reads_refuse_a_non_finite_file(tmp_path):
    wavs = _bad_wavs(tmp_path)
    for name in ("nan", "inf"):
        with pytest.raises(AudioError, match=f"^{wavs[name]}: .* NaN or infinite"):
            read_wav(wavs[name])
    assert read_wav(wavs["zeros"]).shape == (24000,)  # silence is a valid file to train on, if useless


def test_list_check_names_the_line_of_a_non_finite_file(tmp_path):
    wavs = _bad_wavs(tmp_path / "spk" / "v")
    lines = [f"spk spk/v/{name}.wav 1.5" for name in ("zeros", "inf", "dc")]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ListCheckError) as caught:
        check_list(tmp_path / "list.txt", tmp_path, "train", show_progress=False)
    assert caught.value.problems == [
        f"{tmp_path / 'list.txt'}:2: {wavs['inf']}: 1 of its 24000 samples are NaN or infinite; repair or re-export the file (an embedding of it would be NaN)"
    ]


def test_embed_and_verify_refuse_non_finite_audio_in_one_line(tmp_path, capsys, checkpoint):
    wavs = _bad_wavs(tmp_path)
    out = tmp_path / "emb.npy"
    status, _, err = _cli(capsys, "embed", "--checkpoint", str(checkpoint), str(wavs["nan"]), "--out", str(out))
    assert status == 1 and err.count("\n") == 1
    assert err.startswith(f"lgl-kit embed: error: {wavs['nan']}: 24000 of its 24000 samples are NaN or infinite")
    assert not out.exists()
    speech = write_noise(tmp_path / "speech.wav", 1.5)
    status, out_text, err = _cli(capsys, "verify", "--checkpoint", str(checkpoint), str(wavs["inf"]), str(speech))
    assert status == 1 and out_text == "" and f"error: {wavs['inf']}: 1 of its 24000 samples" in err


def test_verify_of_silence_warns_in_the_verdict_line(tmp_path, capsys, checkpoint):
    wavs = _bad_wavs(tmp_path)
    status, out, _ = _cli(capsys, "verify", "--checkpoint", str(checkpoint), str(wavs["zeros"]), str(wavs["dc"]))
    score_line, verdict = out.splitlines()
    assert status == 0 and score_line.startswith("score ")
    assert "at threshold 0.500000" in verdict
    assert f"WARNING: no signal (silence or a constant) in {wavs['zeros']}, {wavs['dc']}" in verdict
    speech = write_noise(tmp_path / "speech.wav", 1.5)
    status, out, _ = _cli(capsys, "verify", "--checkpoint", str(checkpoint), str(speech), str(wavs["dc"]))
    assert f"in {wavs['dc']}, so this score says nothing" in out.splitlines()[1] and str(speech) not in out


def test_embed_keeps_a_row_per_argument_and_names_silent_files(tmp_path, capsys, checkpoint):
    wavs = _bad_wavs(tmp_path)
    speech = write_noise(tmp_path / "speech.wav", 1.5)
    out = tmp_path / "emb.npy"
    files = [str(speech), str(wavs["zeros"]), str(speech)]
    status, stdout, err = _cli(capsys, "embed", "--checkpoint", str(checkpoint), *files, "--out", str(out))
    emb = np.load(out)
    assert status == 0 and f"{out}: 3 x 192 embeddings" in stdout and emb.shape == (3, 192)
    assert (tmp_path / "emb.keys.txt").read_text().splitlines() == files
    np.testing.assert_array_equal(emb[0], emb[2])
    assert f"warning: no signal (silence or a constant) in {wavs['zeros']}" in err


# --- one writer per run folder -------------------------------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import subprocess, sys, time
    from lgl_helpers import run_lock
    with run_lock.hold_run_folder(sys.argv[1], "a test holder"):
        print("held", flush=True)
        if len(sys.argv) > 2:  # a child process writes on the holder's behalf, as a notebook kernel does
            code = "import sys; from lgl_helpers import runs; runs.open_run(sys.argv[1], {}, 'child'); print('ok')"
            print(subprocess.run([sys.executable, "-c", code, sys.argv[1]], capture_output=True, text=True).stdout.strip(), flush=True)
        time.sleep(60)
    """
)


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock of ``tmp_path/r`` (and, with ``child=True``, whose child opened the run)."""
    started = []

    def start(child: bool = False):
        args = [sys.executable, "-c", _HOLDER, str(tmp_path / "r")] + (["child"] if child else [])
        process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_a_second_writer_is_refused_naming_the_holder_pid(tmp_path, holder):
    process = holder()
    with pytest.raises(
        run_lock.RunFolderBusy, match=f"run folder {tmp_path / 'r'} is in use by pid {process.pid} \\(a test holder\\)"
    ):
        with run_lock.hold_run_folder(tmp_path / "r", "another"):
            pass
    with pytest.raises(planning.PipelineError, match=f"is in use by pid {process.pid}"):
        pipeline.run_pipeline("ci", "r", runs_dir=str(tmp_path), only="05", echo=lambda _: None)
    assert not (tmp_path / "r" / "pipeline.json").exists()
    process.kill()
    process.wait()
    with run_lock.hold_run_folder(tmp_path / "r", "after the holder ended"):  # the system released it
        assert (tmp_path / "r" / run_lock.LOCK_FILE).read_text().split(" ", 1)[0] == str(os.getpid())


def test_a_holders_child_writes_on_its_behalf(tmp_path, holder):
    process = holder(child=True)
    assert process.stdout.readline().strip() == "ok"
    assert (tmp_path / "r" / "child_params.json").is_file()


def test_stale_temp_files_are_kept_while_another_process_writes(tmp_path, holder):
    holder()
    in_flight = tmp_path / "r" / "stage1" / ".last.model.k3j9x0qa.tmp"
    in_flight.parent.mkdir(parents=True)
    in_flight.write_bytes(b"another run's checkpoint, being written")
    with pytest.raises(run_lock.RunFolderBusy):
        runs.open_run(tmp_path / "r" / "stage1", {"run_name": "r", "runs_dir": str(tmp_path)}, "stage1")
    assert in_flight.is_file()


def test_a_notebook_record_is_written_into_pipeline_json_as_it_is_now(tmp_path, monkeypatch):
    import papermill

    state_path = tmp_path / "r" / "pipeline.json"

    def execute(source, output, **kwargs):
        # Meanwhile another writer (a run of an earlier kit, an edit) records notebook 00 as done.
        state = json.loads(state_path.read_text())
        state["notebooks"]["00_data_setup"] = {"status": "done", "wall_seconds": 1.0}
        state_path.write_text(json.dumps(state))

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    pipeline.run_pipeline("ci", "r", runs_dir=str(tmp_path), only="05", echo=lambda _: None)
    notebooks = json.loads(state_path.read_text())["notebooks"]
    assert notebooks["00_data_setup"]["status"] == "done" and notebooks["05_compare"]["status"] == "done"


def test_a_failed_notebook_keeps_the_file_and_cause(tmp_path, monkeypatch):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    evalue = f"{tmp_path}/evil.model: refused: not a weights-only torch checkpoint (GLOBAL posix.system)\nsee https://pytorch.org/docs"

    def execute(source, output, **kwargs):
        raise PapermillExecutionError(3, 3, "cfg = ...", "ValueError", evalue, ["Traceback", evalue])

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    with pytest.raises(planning.PipelineError):
        pipeline.run_pipeline("ci", "r", runs_dir=str(tmp_path), only="05", echo=lambda _: None)
    record = json.loads((tmp_path / "r" / "pipeline.json").read_text())["notebooks"]["05_compare"]
    assert record["status"] == "failed"
    assert (
        record["error"]
        == f"ValueError: {tmp_path}/evil.model: refused: not a weights-only torch checkpoint (GLOBAL posix.system)"
    )


# --- one parameter validator ---------------------------------------------------------------------------------


def _params_file(tmp_path, **params):
    path = tmp_path / "params.json"
    path.write_text(json.dumps({"params": {"run_name": "r", "runs_dir": str(tmp_path), **params}}))
    return path


def test_params_file_refuses_an_unknown_key_naming_the_closest(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"--params .*params\.json: 'epoch' is not a parameter of Stage1Config; did you mean 'epochs'\?",
    ):
        read_params(_params_file(tmp_path, epoch=3), Stage1Config)
    # what the stages themselves write beside their fields is no typo
    written = _params_file(tmp_path, epochs=3, musan_root="", rir_root="", val_trials="")
    assert read_params(written, Stage1Config).epochs == 3


@pytest.mark.parametrize("name", ["augment", "resume", "sync_batchnorm"])
def test_booleans_must_be_booleans_everywhere(tmp_path, name):
    with pytest.raises(ValueError, match=f"--params .*: Stage1Config.{name}='false' must be true or false"):
        read_params(_params_file(tmp_path, **{name: "false"}), Stage1Config)
    with pytest.raises(ValueError, match=f"^Stage1Config.{name}=1 must be true or false"):
        Stage1Config(**{name: 1})  # a notebook's parameters cell
    assert getattr(Stage1Config(**{name: False}), name) is False


def test_set_names_the_closest_parameter():
    with pytest.raises(
        planning.PipelineError, match=r"--set 'epochz': no notebook has this parameter; did you mean 'epochs'\?"
    ):
        planning.plan_run("ci", "x", {"epochz": 3})
    with pytest.raises(planning.PipelineError, match=r"must be bool"):
        planning.plan_run("ci", "x", {"augment": "false"})


# --- state files, the runs folder ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{\n  "stage1": {"eer": 1.0,\n  "base', "report.json is not valid JSON at line 3 column"),
        ("[]", "report.json must hold a JSON object, found a list"),
        ("{}", "report.json holds no system's results"),
    ],
)
def test_a_broken_report_json_is_one_line_naming_it(tmp_path, capsys, content, problem):
    path = tmp_path / "r" / "report.json"
    path.parent.mkdir()
    path.write_text(content)
    status, out, err = _cli(capsys, "report", "--run-name", "r", "--runs-dir", str(tmp_path))
    assert status == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"lgl-kit report: error: {path}: {problem}")


def test_a_truncated_state_json_is_named(tmp_path, capsys):
    path = tmp_path / "r" / "stage2_lgl" / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"format": "lgl-kit-stage2", "status": "paused_')
    status, _, err = _cli(
        capsys, "gate", "--run-name", "r", "--runs-dir", str(tmp_path), "--iteration", "1", "--value", "2"
    )
    assert status == 1 and err.startswith(f"lgl-kit gate: error: {path}: the Stage II state file is not valid JSON")


def test_doctor_and_run_agree_on_an_unwritable_runs_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    run_dir = blocker / "runs" / "r"  # root may write anywhere, but no folder can exist below a file
    check = runs_folder_check(run_dir)
    assert not check.ok and "cannot be written" in check.line()
    with pytest.raises(planning.PipelineError, match=f"run folder {run_dir} cannot be written"):
        pipeline.run_pipeline("ci", "r", runs_dir=str(blocker / "runs"), only="05", echo=lambda _: None)
    assert runs_folder_check(tmp_path / "new" / "r").ok and not (tmp_path / "new").exists()  # checks, creates nothing


# --- checkpoints ---------------------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_an_untrusted_checkpoint_is_refused_without_torchs_advice(tmp_path):
    evil = tmp_path / "evil.model"
    torch.save({"Network.conv1.weight": _Payload(tmp_path / "ran")}, evil)
    with pytest.raises(ValueError) as caught:
        load_encoder(evil)
    message = str(caught.value)
    assert message.startswith(f"{evil}: refused: not a weights-only torch checkpoint (") and "\n" not in message
    assert "weights_only" not in message and "Re-running" not in message and "posix.system" in message
    assert not (tmp_path / "ran").exists()
    check = _checkpoint_check("02_clustering_umap", types.SimpleNamespace(init_model=str(evil)), tmp_path, True)
    assert not check.ok and f"{evil}: refused" in check.line()  # at preflight, not in notebook 02


def test_torchscript_export_prints_no_tracer_warning(tmp_path):
    from lgl_helpers.core.export import export_encoder

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_encoder(tiny_encoder(), tmp_path / "encoder.pt", "torchscript")
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]


@pytest.mark.parametrize(("umask", "mode"), [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_outputs_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        path = files.write_json(tmp_path / "out.json", {"a": 1})
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == mode


# --- the report's misreports ---------------------------------------------------------------------------------


def test_a_corpus_laid_out_like_the_toy_is_not_called_toy(tmp_path, tiny_corpus):
    mine = tmp_path / "mine"
    for folder in ("train", "test", "lists"):
        (mine / folder).mkdir(parents=True)
    (mine / "lists" / "trials.txt").write_text((tiny_corpus / "lists" / "trials.txt").read_text())
    assert toy_eval_trials(mine) == {} and toy_test_lists(toy_paths(mine)) == {}
    assert sorted(toy_test_lists(toy_paths(tiny_corpus))) == sorted(
        toy_eval_trials(tiny_corpus)
    ) and "toy-O" in toy_eval_trials(tiny_corpus)


def test_report_says_when_validation_is_the_test_list_by_content(tmp_path, tiny_corpus):
    run = tmp_path / "run"
    (run / "stage1").mkdir(parents=True)
    trials = tiny_corpus / "lists" / "trials.txt"
    copy = tmp_path / "my_val.txt"
    copy.write_text(trials.read_text().replace(" ", "  "))  # same trials, another name and spacing
    (run / "stage1" / "metrics.json").write_text(json.dumps({"eer": 10.0, "min_dcf": 0.5, "min_dcf_0.01": 0.7}))
    params = run / "stage1" / "stage1_params.json"
    params.write_text(json.dumps({"params": {"trials": str(trials), "val_trials": str(copy)}}))
    assert validation_is_test(run) == {"stage1": str(trials)}
    _, md = write_report(run, n_resamples=10)
    assert (
        f"Stage I (contrastive + AAT): its val_trials is its test list** (the same trials as `{trials}`)"
        in md.read_text()
    )
    other = tmp_path / "other_val.txt"
    other.write_text("".join(trials.read_text().splitlines(keepends=True)[:-1]))  # one trial fewer
    params.write_text(json.dumps({"params": {"trials": str(trials), "val_trials": str(other)}}))
    _, md = write_report(run, n_resamples=10)
    assert validation_is_test(run) == {} and "val_trials is its test list" not in md.read_text()


def test_lock_is_released_however_the_holder_ends(tmp_path):
    code = "import os, sys; from pathlib import Path; from lgl_helpers import run_lock; run_lock._acquire(Path(sys.argv[1]), 'killed'); os._exit(9)"
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")]).returncode == 9
    start = time.monotonic()
    with run_lock.hold_run_folder(tmp_path / "r", "next"):
        assert time.monotonic() - start < 5
