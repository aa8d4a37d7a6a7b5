"""`lgl-kit doctor` and the preflight of `lgl-kit run`: every problem is one line naming the package,
path or parameter and the fix, and a doomed run stops before any notebook executes."""

import json
import os
import re
import subprocess
import sys
import types

import pytest

from lgl_helpers.app import cli, data_checks, doctor, environment, pipeline, planning
from lgl_helpers.runs import project_root

UNDEFINED_SYMBOL = "/venv/torchaudio/lib/libtorchaudio.so: undefined symbol: _ZN3c104cuda9SetDeviceEab"
FAISS_MISSING = (
    "error faiss: faiss is not installed: `bash scripts/setup.sh`, or pip install -e '.[cpu]' (CPU) / '.[gpu]' (GPU)"
)


def _importer(**modules):
    """An import function for the checks: name → fake module, or an exception to raise."""

    def import_module(name):
        if isinstance(modules[name], BaseException):
            raise modules[name]
        return modules[name]

    return import_module


def _fake_torch(version="2.11.0", gpus=0):
    cuda = types.SimpleNamespace(
        is_available=lambda: gpus > 0, device_count=lambda: gpus, get_device_name=lambda i: "GPU"
    )
    return types.SimpleNamespace(__version__=version, version=types.SimpleNamespace(cuda=None), cuda=cuda)


def _versions(**versions):
    return lambda package: versions[package]


@pytest.fixture
def tiny_data(tiny_corpus):
    """Overrides that point the ci profile's notebook 00 at the shared tiny corpus (48 utterances of 1-2 s)."""
    return {"00_data_setup.toy_root": str(tiny_corpus), "00_data_setup.toy_preset": "tiny"}


def _doctor(capsys, runs_dir, overrides):
    argv = ["doctor", "--profile", "ci", "--run-name", "r", "--runs-dir", str(runs_dir)]
    for key, value in overrides.items():
        argv += ["--set", f"{key}={value}"]
    status = cli.main(argv)
    return status, capsys.readouterr().out.splitlines()


def _errors(lines):
    return [line for line in lines if line.startswith("error")]


def _run_refused(runs_dir, overrides, match):
    """``lgl-kit run`` (in process) must stop with ``match`` before any notebook has executed."""
    with pytest.raises(planning.PipelineError, match=match) as error:
        pipeline.run_pipeline("ci", "r", overrides, runs_dir=str(runs_dir), echo=lambda _: None)
    assert not (runs_dir / "r" / "notebooks").exists(), "a notebook ran although the preflight found a problem"
    return str(error.value)


# --- environment checks with injected modules -------------------------------------------------------


def test_torchaudio_whose_extension_fails_to_load_is_one_line_with_both_versions_and_the_fix():
    check = environment.check_torch(
        _importer(torch=_fake_torch("2.11.0"), torchaudio=OSError(UNDEFINED_SYMBOL)),
        _versions(torch="2.11.0", torchaudio="2.11.1"),
    )
    assert check.line() == (
        f"error torchaudio: torchaudio 2.11.1 does not match torch 2.11.0 ({UNDEFINED_SYMBOL}): reinstall the locked "
        "pair with `bash scripts/setup.sh` (or pip install torchaudio==2.11.0)"
    )


def test_torchaudio_of_another_minor_version_is_refused_and_a_matching_pair_passes():
    mismatch = environment.check_torch(
        _importer(torch=_fake_torch("2.11.0+cu130"), torchaudio=types.SimpleNamespace(__version__="2.10.0"))
    )
    assert not mismatch.ok and "torchaudio 2.10.0 does not match torch 2.11.0+cu130" in mismatch.line()
    assert "pip install torchaudio==2.11.0)" in mismatch.line()
    pair = environment.check_torch(
        _importer(torch=_fake_torch("2.11.0+cu130"), torchaudio=types.SimpleNamespace(__version__="2.11.0+cu130"))
    )
    assert pair.ok, pair.line()


def test_missing_faiss_is_one_line_with_the_install_commands():
    missing = ModuleNotFoundError("No module named 'faiss'", name="faiss")
    assert environment.check_faiss({}, _importer(faiss=missing)).line() == FAISS_MISSING
    broken = environment.check_faiss(
        {}, _importer(faiss=ImportError("libopenblas.so.0: cannot open shared object file"))
    )
    assert not broken.ok and "libopenblas" in broken.line() and "'.[gpu]'" in broken.line()


def test_faiss_without_gpu_support_is_refused_only_when_a_clustering_notebook_asks_for_cuda():
    cpu_build = types.SimpleNamespace(__version__="1.15.1", get_num_gpus=lambda: 0)
    check = environment.check_faiss({"02_clustering_umap": "cuda"}, _importer(faiss=cpu_build))
    assert not check.ok and "\n" not in check.line()
    assert "faiss 1.15.1 has no GPU support" in check.line() and "device='cuda' (02_clustering_umap)" in check.line()
    assert "pip install -e '.[gpu]'" in check.line() and "device=auto" in check.line()
    without_gpu_api = types.SimpleNamespace(__version__="1.7.0")
    assert not environment.check_faiss({"03_stage2_baseline": "cuda:0"}, _importer(faiss=without_gpu_api)).ok
    assert environment.check_faiss({}, _importer(faiss=cpu_build)).ok


def test_cuda_requested_but_unavailable_is_one_line_naming_the_notebooks():
    values = {"01_stage1_contrastive": {"device": "cuda"}, "03_stage2_baseline": {"device": "cuda"}}
    checks = environment.environment_checks(
        values,
        _importer(
            torch=_fake_torch(),
            faiss=types.SimpleNamespace(__version__="1.15.1", get_num_gpus=lambda: 0),
            torchaudio=types.SimpleNamespace(__version__="2.11.0"),
        ),
    )
    cuda = [c for c in checks if c.name == "cuda"]
    assert len(cuda) == 1 and not cuda[0].ok
    assert (
        "device='cuda' (01_stage1_contrastive, 03_stage2_baseline) asks for CUDA but torch.cuda.is_available() is False"
    ) in cuda[0].line()
    assert "set device=auto or cpu" in cuda[0].line()
    assert (
        environment.check_cuda({"01_stage1_contrastive": "cuda:1"}, _fake_torch(gpus=1))
        .line()
        .startswith("error cuda: device='cuda:1' (01_stage1_contrastive) names a GPU beyond the 1 visible")
    )


def test_disk_is_an_error_only_when_clearly_insufficient(tmp_path):
    short = data_checks.check_disk(tmp_path / "runs", 3 * 10**9, usage=lambda folder: types.SimpleNamespace(free=10**9))
    assert short.line() == (
        f"error disk: 1.0 GB free at {tmp_path} but the run's checkpoints need about 3.0 GB: "
        "free space there or choose another --runs-dir"
    )
    enough = data_checks.check_disk(tmp_path, 3 * 10**9, usage=lambda folder: types.SimpleNamespace(free=10**11))
    assert enough.ok and "100.0 GB free" in enough.line() and "3.0 GB" in enough.line()


# --- `lgl-kit doctor` and `lgl-kit run` on the ci profile -------------------------------------------


def test_doctor_passes_the_ci_profile_on_existing_data(capsys, tmp_path, tiny_data):
    status, lines = _doctor(capsys, tmp_path, tiny_data)
    assert status == 0 and not _errors(lines), lines
    assert any(line.startswith("ok    01_stage1_contrastive: configuration fits") for line in lines)
    assert lines[-1].endswith("0 error(s)")


def test_missing_faiss_stops_doctor_and_run_before_any_notebook(monkeypatch, capsys, tmp_path, tiny_data):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now fails as when it is not installed
    status, lines = _doctor(capsys, tmp_path, tiny_data)
    assert status == 1 and _errors(lines) == [FAISS_MISSING]
    assert FAISS_MISSING in _run_refused(tmp_path, tiny_data, "faiss is not installed")


def test_only_05_does_not_need_faiss(monkeypatch, tmp_path, tiny_data):
    monkeypatch.setitem(sys.modules, "faiss", None)
    messages = []
    doctor.Preflight(planning.plan_run("ci", "r", tiny_data, str(tmp_path), ("05_compare",)), messages.append)
    assert messages == ["[preflight] before the first notebook: 3 checks ok"]


@pytest.mark.slow
def test_torch_torchaudio_mismatch_stops_doctor_and_run_before_any_notebook(tmp_path):
    # A torchaudio first on the path whose import fails like a binary built for another torch.
    fake = tmp_path / "fake" / "torchaudio"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise OSError({UNDEFINED_SYMBOL!r})\n")
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    common = [
        "--profile",
        "ci",
        "--run-name",
        "r",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--set",
        f"00_data_setup.toy_root={tmp_path / 'toy'}",
    ]
    for command in ("doctor", "run"):
        done = subprocess.run(
            [sys.executable, "-m", "lgl_helpers.app.cli", command, *common],
            cwd=project_root(),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 1, output
        line = next(line for line in output.splitlines() if line.startswith("error torchaudio:"))
        assert "does not match torch" in line and UNDEFINED_SYMBOL in line and "`bash scripts/setup.sh`" in line
    assert not (tmp_path / "runs" / "r" / "notebooks").exists()
    assert not (tmp_path / "toy").exists()


@pytest.mark.parametrize("key", ["01_stage1_contrastive.train_root", "train_root"])
def test_missing_data_root_stops_doctor_and_run_before_any_notebook(capsys, tmp_path, tiny_data, key):
    missing = tmp_path / "missing"
    overrides = {**tiny_data, key: str(missing)}
    status, lines = _doctor(capsys, tmp_path, overrides)
    errors = _errors(lines)
    assert status == 1 and len(errors) == 1, lines
    assert errors[0].startswith(f"error train_root: {missing} does not exist (used by ")
    assert f"--set {key}=PATH" in errors[0]
    assert errors[0] in _run_refused(tmp_path, overrides, "does not exist")


def test_missing_evaluation_list_stops_doctor_and_run_before_any_notebook(capsys, tmp_path, tiny_data):
    missing = tmp_path / "hard.txt"
    overrides = {**tiny_data, "03_stage2_baseline.eval_trials": {"Vox1-H": str(missing)}}
    status, lines = _doctor(
        capsys,
        tmp_path,
        {**overrides, "03_stage2_baseline.eval_trials": json.dumps(overrides["03_stage2_baseline.eval_trials"])},
    )
    errors = _errors(lines)
    assert status == 1 and errors == [
        f"error eval_trials['Vox1-H']: {missing} does not exist (used by 03_stage2_baseline): "
        "correct 03_stage2_baseline.eval_trials in the profile or with "
        """--set 03_stage2_baseline.eval_trials='{"NAME": "PATH", ...}'"""
    ], lines
    assert errors[0] in _run_refused(tmp_path, overrides, "does not exist")


@pytest.mark.parametrize(
    "overrides, notebook, message",
    [
        (
            {"n_clusters": 100000},
            "02_clustering_umap",
            "n_clusters=100000 is larger than the number of utterances N=48",
        ),
        (
            {"01_stage1_contrastive.batch_size": 1000},
            "01_stage1_contrastive",
            "batch_size=1000 is larger than the 48 utterances",
        ),
        (
            {"03_stage2_baseline.batch_size": 1000},
            "03_stage2_baseline",
            "batch_size=1000 is larger than the 48 utterances",
        ),
        (
            {"01_stage1_contrastive.frames": 1000},
            "01_stage1_contrastive",
            "frames gives a crop of 160240 samples .*, longer than every file of the training list",
        ),
        (
            {"04_stage2_lgl.frames": 1000},
            "04_stage2_lgl",
            "frames gives a crop of 160240 samples .*, longer than every file of the training list",
        ),
    ],
)
def test_configuration_that_does_not_fit_the_training_list_is_refused_before_any_notebook(
    capsys, tmp_path, tiny_data, overrides, notebook, message
):
    overrides = {**tiny_data, **overrides}
    status, lines = _doctor(capsys, tmp_path, overrides)
    assert status == 1
    assert any(line.startswith(f"error {notebook}: ") and re.search(message, line) for line in _errors(lines)), lines
    _run_refused(tmp_path, overrides, message)


def test_without_data_json_a_later_stage_is_refused_naming_what_to_run(tmp_path, tiny_data):
    plan = planning.plan_run("ci", "r", tiny_data, str(tmp_path), ("03_stage2_baseline",))
    with pytest.raises(planning.PipelineError) as error:
        doctor.Preflight(plan, lambda _: None)
    assert "error 03_stage2_baseline: train_list is not set: give it as a parameter or run notebook 00" in str(
        error.value
    )
    assert (
        f"error 03_stage2_baseline.init_model: {tmp_path / 'r' / 'stage1' / 'best.model'} does not exist: "
        "run notebook 01 first or set init_model" in str(error.value)
    )


@pytest.mark.slow
def test_data_checks_wait_for_notebook00_then_stop_the_run_before_01(tmp_path):
    # The toy corpus does not exist yet: notebook 00 generates it, and only then can n_clusters be checked.
    overrides = {
        "00_data_setup.toy_root": str(tmp_path / "toy"),
        "00_data_setup.toy_preset": "tiny",
        "00_data_setup.n_spectrograms": 0,
        "n_clusters": 100000,
    }
    messages = []
    with pytest.raises(
        planning.PipelineError, match="(?s)preflight after 00_data_setup found .*n_clusters=100000"
    ) as error:
        pipeline.run_pipeline("ci", "r", overrides, runs_dir=str(tmp_path), echo=messages.append)
    assert "the data checks run again once 00_data_setup has created the data" in messages[0]
    executed = sorted(p.name for p in (tmp_path / "r" / "notebooks").iterdir())
    assert executed == ["00_data_setup.ipynb"], executed
    state = json.loads((tmp_path / "r" / "pipeline.json").read_text())
    assert list(state["notebooks"]) == ["00_data_setup"]
    assert "error 02_clustering_umap: n_clusters=100000" in str(error.value)
