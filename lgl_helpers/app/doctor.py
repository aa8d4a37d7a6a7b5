"""``lgl-kit doctor`` and the preflight of ``lgl-kit run``: the problems that would doom a run, found in seconds.

Each check is one line, ``ok`` or ``error``; an error names the package, parameter or path and the fix.

* Environment: torch and torchaudio import as a matching pair (torchaudio loads its C extension at
  import); faiss imports, and has GPU support where a clustering notebook asks for CUDA; CUDA is
  available where a notebook asks for it.
* Configuration: each notebook's config dataclass is built from its planned parameters, so its field
  validation runs as the notebook's first cell would run it; the runs folder has room for the
  checkpoints the run keeps.
* Data: every data root and list the notebooks read exists and is readable; each training notebook's
  configuration fits its training list (the stage's own ``check_inputs`` without reading wav headers,
  which the stage itself does before building any model: n_clusters and batch_size against the number
  of utterances, the crop of ``frames`` against the longest listed duration); the checkpoint a notebook
  starts from exists or is written by an earlier notebook of the run.

Data that notebook 00 creates (the toy corpus, a list built from ``train_root``) does not exist yet when
a run starts: those checks are *pending*, and :class:`Preflight` repeats the data checks right after
notebook 00, before the next notebook starts.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

from lgl_helpers.app import pipeline
from lgl_helpers.runs import DATA_KEYS, resolve_data_paths, resolve_path, run_folder

DATA_SETUP = "00_data_setup"
STAGE1 = "01_stage1_contrastive"
TRAINING = ("01_stage1_contrastive", "02_clustering_umap", "03_stage2_baseline", "04_stage2_lgl")
# Packages each notebook imports beyond the pure-Python stack (05 only records torch's version).
REQUIRES = {
    "00_data_setup": ("torch", "torchaudio"),
    "01_stage1_contrastive": ("torch", "torchaudio"),
    "02_clustering_umap": ("torch", "torchaudio", "faiss"),
    "03_stage2_baseline": ("torch", "torchaudio", "faiss"),
    "04_stage2_lgl": ("torch", "torchaudio", "faiss"),
    "05_compare": ("torch",),
}
# The config dataclass each notebook builds in its first code cell.
CONFIGS = {
    "00_data_setup": ("lgl_helpers.corpus.data_setup", "DataSetupConfig"),
    "01_stage1_contrastive": ("lgl_helpers.training.stage1", "Stage1Config"),
    "02_clustering_umap": ("lgl_helpers.clustering.cluster", "ClusteringConfig"),
    "03_stage2_baseline": ("lgl_helpers.training.stage2", "Stage2Config"),
    "04_stage2_lgl": ("lgl_helpers.training.stage2", "Stage2Config"),
    "05_compare": ("lgl_helpers.app.report", "CompareConfig"),
}
# The parameter naming the checkpoint a notebook starts from ("" = runs/<run>/stage1/best.model).
START_CHECKPOINT = {"02_clustering_umap": "init_model", "03_stage2_baseline": "init_model", "04_stage2_lgl": "init_model"}
LIST_KEYS = ("train_list", "trials", "val_trials")
SETUP_FIX = "`bash scripts/setup.sh`"
FAISS_FIX = "`bash scripts/setup.sh`, or pip install -e '.[cpu]' (CPU) / '.[gpu]' (GPU)"
# A checkpoint holds the float32 weights and Adam's two moment estimates of every trained parameter.
CHECKPOINT_COPIES = 3

Importer = Callable[[str], ModuleType]


@dataclass(frozen=True)
class Check:
    """One line of the report. ``name``: what was checked (package, notebook, parameter or data key)."""

    name: str
    ok: bool
    message: str
    pending: bool = False  # depends on data notebook 00 creates: checked again once 00 has run

    def line(self) -> str:
        text = "; ".join(part.strip() for part in self.message.splitlines() if part.strip())
        return f"{'ok' if self.ok else 'error':<5} {self.name}: {text}"


def _reason(error: BaseException) -> str:
    """First line of an exception's message (one-line reports)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _not_installed(error: BaseException, package: str) -> bool:
    """True for the package itself missing, not for a module it fails to import."""
    return isinstance(error, ModuleNotFoundError) and error.name == package


# ---------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------


def _installed_version(package: str, version_of: Callable[[str], str]) -> str:
    try:
        return version_of(package)
    except importlib.metadata.PackageNotFoundError:
        return "(no package metadata)"


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


def check_torch(import_module: Importer = importlib.import_module,
                version_of: Callable[[str], str] = importlib.metadata.version, torchaudio: bool = True) -> Check:
    """torch imports and, with ``torchaudio``, so does torchaudio (C extension included) at torch's major.minor.

    ``import_module`` / ``version_of`` are injectable so that tests can simulate a broken pair.
    """
    try:
        torch = import_module("torch")
    except Exception as error:  # a broken install raises ImportError, OSError, RuntimeError ...
        return Check("torch", False, f"torch {_installed_version('torch', version_of)} does not import "
                                     f"({_reason(error)}): reinstall the locked environment with {SETUP_FIX}")
    if not torchaudio:
        return Check("torch", True, f"torch {torch.__version__} imports")
    fix = f"reinstall the locked pair with {SETUP_FIX} (or pip install torchaudio=={torch.__version__.split('+')[0]})"
    try:
        audio = import_module("torchaudio")
    except Exception as error:  # typically OSError: libtorchaudio.so: undefined symbol ...
        if _not_installed(error, "torchaudio"):
            return Check("torchaudio", False, f"torchaudio is not installed: {fix}")
        return Check("torchaudio", False, f"torchaudio {_installed_version('torchaudio', version_of)} does not match "
                                          f"torch {torch.__version__} ({_reason(error)}): {fix}")
    if _major_minor(audio.__version__) != _major_minor(torch.__version__):
        return Check("torchaudio", False, f"torchaudio {audio.__version__} does not match torch {torch.__version__} "
                                          f"(their major.minor versions differ): {fix}")
    return Check("torch", True, f"torch {torch.__version__} and torchaudio {audio.__version__} import as a pair")


def _devices(notebook_devices: dict[str, str]) -> str:
    """``{"02_...": "cuda"}`` → ``device='cuda' (02_...)``, one group per device value."""
    groups: dict[str, list[str]] = {}
    for name, device in notebook_devices.items():
        groups.setdefault(device, []).append(name)
    return "; ".join(f"device={device!r} ({', '.join(names)})" for device, names in groups.items())


def check_cuda(cuda_notebooks: dict[str, str], torch: ModuleType) -> Check:
    """Every notebook whose ``device`` asks for CUDA (notebook → device) gets a GPU torch can use."""
    if not torch.cuda.is_available():
        return Check("cuda", False, f"{_devices(cuda_notebooks)} asks for CUDA but torch.cuda.is_available() is False "
                                    f"(torch {torch.__version__}, CUDA build {torch.version.cuda}): set device=auto or "
                                    "cpu, or install a CUDA build of torch on a machine whose GPU driver works (nvidia-smi)")
    count = torch.cuda.device_count()
    index = {name: device.partition(":")[2] for name, device in cuda_notebooks.items()}
    beyond = {name: cuda_notebooks[name] for name, i in index.items() if i.isdigit() and int(i) >= count}
    if beyond:
        return Check("cuda", False, f"{_devices(beyond)} names a GPU beyond the {count} visible: "
                                    f"use device=cuda or cuda:0 ... cuda:{count - 1}")
    return Check("cuda", True, f"{count} GPU(s) visible, cuda:0 is {torch.cuda.get_device_name(0)}")


def check_faiss(cuda_notebooks: dict[str, str], import_module: Importer = importlib.import_module) -> Check:
    """faiss imports; clustering notebooks whose ``device`` asks for CUDA (notebook → device) need its GPU build."""
    try:
        faiss = import_module("faiss")
    except Exception as error:
        if _not_installed(error, "faiss"):
            return Check("faiss", False, f"faiss is not installed: {FAISS_FIX}")
        return Check("faiss", False, f"faiss does not import ({_reason(error)}): reinstall it with {FAISS_FIX}")
    version = getattr(faiss, "__version__", "(unknown version)")
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if cuda_notebooks and not gpus:
        return Check("faiss", False, f"faiss {version} has no GPU support or sees no GPU, but {_devices(cuda_notebooks)} "
                                     "asks for CUDA: pip install -e '.[gpu]' (or LGL_FAISS=gpu bash scripts/setup.sh), "
                                     "or set device=auto to run k-means on the CPU")
    return Check("faiss", True, f"faiss {version}, " + (f"GPU index on {gpus} GPU(s)" if gpus else "CPU index"))


def environment_checks(values: dict[str, dict], import_module: Importer = importlib.import_module,
                       version_of: Callable[[str], str] = importlib.metadata.version) -> list[Check]:
    """The packages and devices the planned notebooks (name → parameter values) need."""
    needs = {package for name in values for package in REQUIRES[name]}
    if not needs:
        return []
    checks = [check_torch(import_module, version_of, torchaudio="torchaudio" in needs)]
    cuda = {name: v["device"] for name, v in values.items() if str(v.get("device", "")).startswith("cuda")}
    if cuda and checks[0].ok:
        checks.append(check_cuda(cuda, import_module("torch")))
    if "faiss" in needs:
        checks.append(check_faiss({n: d for n, d in cuda.items() if "faiss" in REQUIRES[n]}, import_module))
    return checks


# ---------------------------------------------------------------------------------------------------
# Configuration and disk
# ---------------------------------------------------------------------------------------------------


def planned_values(steps: Sequence[pipeline.PlannedNotebook]) -> dict[str, dict[str, Any]]:
    """Notebook name → every parameter as the notebook sees it: its parameters cell, the plan's values on top."""
    return {step.name: {**pipeline.notebook_parameters(step.source), **step.parameters} for step in steps}


def build_config(name: str, values: dict[str, Any]) -> Any:
    """Notebook ``name``'s config dataclass from its parameter values, as its first cell builds it, validated."""
    module_name, class_name = CONFIGS[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_parameters(values)


def configuration_checks(values: dict[str, dict]) -> tuple[dict[str, Any], list[Check]]:
    """Build every planned notebook's config; returns the configs that are valid and one check per notebook."""
    configs, checks = {}, []
    for name, params in values.items():
        try:
            configs[name] = build_config(name, params)
        except (TypeError, ValueError) as error:
            checks.append(Check(name, False, f"{_reason(error)} (set it in the profile or with --set {name}.NAME=VALUE)"))
        else:
            checks.append(Check(name, True, f"parameters pass {CONFIGS[name][1]}'s validation"))
    return configs, checks


def _parameter_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@functools.lru_cache(maxsize=None)
def _encoder_parameters(channels: int) -> int:
    """Parameters of an ECAPA-TDNN of width C (built once per width and process; only the count is kept)."""
    from lgl_helpers.core.models import ECAPATDNN

    return _parameter_count(ECAPATDNN(channels))


def stage1_checkpoint_bytes(config) -> int:
    """Bytes of the checkpoints Stage I keeps: ``epoch_XXX.model`` of every evaluated epoch, ``last.model``, ``best.model``."""
    from lgl_helpers.core.losses import AATDiscriminator, ContrastiveLoss

    evaluated = sum(1 for e in range(1, config.epochs + 1) if e % config.test_interval == 0 or e == config.epochs)
    parameters = _encoder_parameters(config.channels) + _parameter_count(ContrastiveLoss()) + _parameter_count(AATDiscriminator())
    return (evaluated + 2) * parameters * 4 * CHECKPOINT_COPIES


def stage2_checkpoint_bytes(config, stage1_channels: int) -> int:
    """Bytes of the checkpoints one Stage II mode keeps: each phase's best epoch, and while a phase runs
    also its previous best and latest epoch; ``best.model`` at the end. The head is (n_clusters, 192)."""
    from lgl_helpers.core.models import EMB_DIM

    def size(channels: int) -> int:
        return (_encoder_parameters(channels) + config.n_clusters * EMB_DIM) * 4 * CHECKPOINT_COPIES

    widths = [stage1_channels] * (config.max_iterations - 1) + [config.last_channels or stage1_channels]
    phases = 2 if config.mode == "lgl" else 1
    return sum(phases * size(width) for width in widths) + 3 * size(max(widths))


def _start_channels(config, configs: dict[str, Any], run_dir: Path) -> int | None:
    """C of the Stage I encoder a Stage II notebook starts from: the planned Stage I's, else its checkpoint's."""
    from lgl_helpers.core.models import load_encoder

    if not config.init_model and STAGE1 in configs:
        return configs[STAGE1].channels
    try:
        return load_encoder(resolve_path(config.init_model) or run_dir / "stage1" / "best.model").channels
    except (OSError, ValueError):  # a missing or unreadable checkpoint is reported by the data checks
        return None


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.1f} MB"


def check_disk(runs_dir: Path, need: int, usage: Callable = shutil.disk_usage) -> Check:
    """Free space of the runs folder (its nearest existing parent) against ``need`` bytes of checkpoints."""
    folder = runs_dir
    while not folder.exists():
        folder = folder.parent
    free = usage(folder).free
    if free < need:
        return Check("disk", False, f"{_size(free)} free at {folder} but the run's checkpoints need about {_size(need)}: "
                                    "free space there or choose another --runs-dir")
    return Check("disk", True, f"{_size(free)} free at {folder}; the run's checkpoints need about {_size(need)}")


def disk_check(configs: dict[str, Any], run_dir: Path) -> Check | None:
    """:func:`check_disk` for the checkpoints of the planned training notebooks; None when none keeps any."""
    need = stage1_checkpoint_bytes(configs[STAGE1]) if STAGE1 in configs else 0
    for name in ("03_stage2_baseline", "04_stage2_lgl"):
        channels = _start_channels(configs[name], configs, run_dir) if name in configs else None
        need += stage2_checkpoint_bytes(configs[name], channels) if channels else 0
    return check_disk(run_dir.parent, need) if need else None


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Base:
    """The data locations the training notebooks start from: what notebook 00 will write to data.json when
    it is planned (``paths``; None = the run's data.json), where each comes from, and which 00 creates."""

    paths: dict[str, Path | None] | None
    origin: dict[str, str]  # key → "NOTEBOOK.key" parameter, "toy" or "data.json" (for the fix in a message)
    created: set[str] = field(default_factory=set)


@dataclass
class _Use:
    """A data path with the notebooks that read it."""

    notebooks: list[str]
    origins: set[str]
    pending: bool


class _Uses(dict):
    """(key, path) → :class:`_Use`, so that a path shared by several notebooks is checked in one line."""

    def add(self, key: str, path: Path, notebook: str, origin: str, pending: bool = False) -> None:
        use = self.setdefault((key, Path(path)), _Use([], set(), pending))
        use.notebooks.append(notebook)
        use.origins.add(origin)


def _setup_base(config, run_dir: Path, uses: _Uses) -> tuple[_Base | None, list[Check]]:
    """What notebook 00 will write to data.json, predicted from its configuration without generating anything.

    Adds 00's own paths to ``uses``; None when one of them is missing (the path checks report it).
    """
    from lgl_helpers.corpus import toy  # here: corpus imports matplotlib, which no other check needs
    from lgl_helpers.corpus import data_setup as corpus

    given = {key: resolve_path(getattr(config, key)) for key in DATA_KEYS if getattr(config, key)}
    for key, path in given.items():
        uses.add(key, path, DATA_SETUP, f"{DATA_SETUP}.{key}")
    if not all(path.exists() for path in given.values()):
        return None, []
    try:
        paths = corpus.resolve_data_setup(config, generate=False)
    except (ValueError, FileNotFoundError) as error:  # inconsistent paths, no toy corpus, a toy of another preset
        return None, [Check(DATA_SETUP, False, _reason(error))]
    origin = {key: f"{DATA_SETUP}.{key}" if key in given else "toy" for key in DATA_KEYS}
    if "val_trials" not in given:  # notebook 00 then uses the trials as validation trials
        origin["val_trials"] = origin["trials"]
    toy_root = resolve_path(config.toy_root)
    checks, created = [], set()
    if toy_root is not None and corpus.toy_needed(config) and not toy.is_toy_corpus(toy_root):
        created = {key for key, path in paths.items() if path is not None and key not in given}
        checks.append(Check("toy_root", True, f"{toy_root}: notebook 00 generates the {config.toy_preset!r} toy corpus "
                                              "there (make_toy=True)", pending=True))
    if paths["train_list"] is None:  # notebook 00 builds it from train_root's wav headers
        paths["train_list"] = run_dir / "lists" / "train_list.txt"
        created.add("train_list")
    return _Base(paths, origin, created), checks


def _path_problem(key: str, path: Path) -> str | None:
    if not path.exists():
        return "does not exist"
    if key in LIST_KEYS and not path.is_file():
        return "is not a file"
    if key in ("train_root", "test_root") and not path.is_dir():
        return "is not a folder"
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        return "is not readable by this user"
    return None


def _fix(key: str, origins: set[str], run_dir: Path) -> str:
    if "data.json" in origins:
        return f"{run_dir / 'data.json'} (written by notebook 00) points there: run notebook 00 again or set {key}"
    if "toy" in origins:
        return "the toy corpus is incomplete: delete its folder and let notebook 00 generate it again"
    parameter = next(iter(origins)) if len(origins) == 1 else key
    return f"correct {parameter} in the profile or with --set {parameter}=PATH"


def _path_check(key: str, path: Path, use: _Use, run_dir: Path) -> Check:
    notebooks = ", ".join(dict.fromkeys(use.notebooks))
    if use.pending:  # what is there now (if anything) is replaced by notebook 00
        return Check(key, True, f"{path} ({notebooks}): notebook 00 creates it; checked again after it", pending=True)
    problem = _path_problem(key, path)
    if problem is None:
        return Check(key, True, f"{path} ({notebooks})")
    fix = (f"make it readable (chmod / chown) or point {key} elsewhere" if problem.startswith("is not readable")
           else _fix(key, use.origins, run_dir))
    return Check(key, False, f"{path} {problem} (used by {notebooks}): {fix}")


def _paths_used(name: str, config, paths: dict) -> dict[str, Path]:
    """The set data paths notebook ``name`` reads; val_trials only when it is not the trials file itself."""
    if name == "02_clustering_umap":
        keys = ("train_list", "train_root")
    else:
        keys = ("train_list", "train_root", "test_root", "trials", "val_trials")
        keys += ("musan_root", "rir_root") if config.augment else ()
    used = {key: paths[key] for key in keys if paths[key] is not None}
    if used.get("val_trials") == used.get("trials"):
        used.pop("val_trials", None)
    return used


def _fit_check(name: str, config, paths: dict) -> Check:
    """The stage's own ``check_inputs`` without wav headers: its configuration against its training list."""
    module = importlib.import_module(CONFIGS[name][0])
    try:
        entries = module.check_inputs(config, paths, audio=False)
    except (ValueError, FileNotFoundError) as error:
        return Check(name, False, _reason(error))
    longest = max(entry.duration for entry in entries)
    return Check(name, True, f"configuration fits {paths['train_list']} ({len(entries)} utterances, longest {longest:.2f} s)")


def _checkpoint_check(name: str, config, run_dir: Path, stage1_planned: bool) -> Check:
    parameter = START_CHECKPOINT[name]
    value = getattr(config, parameter)
    path = resolve_path(value) or run_dir / "stage1" / "best.model"
    label = f"{name}.{parameter}"
    if path.is_file():
        return Check(label, True, str(path))
    if not value and stage1_planned:
        return Check(label, True, f"{path} is written by {STAGE1} earlier in this run")
    hint = f"set {parameter} to an existing checkpoint" if value else f"run notebook 01 first or set {parameter}"
    return Check(label, False, f"{path} does not exist: {hint}")


def _stage_checks(name: str, config, paths: dict, path_checks: dict, run_dir: Path, stage1_planned: bool) -> list[Check]:
    """A training notebook's configuration against its training list, and the checkpoint it starts from."""
    own = [path_checks[pair] for pair in _paths_used(name, config, paths).items()]
    if not all(check.ok for check in own):
        return []  # its missing path is reported already
    if any(check.pending and check.name == "train_list" for check in own):
        checks = [Check(name, True, "checked against its training list once notebook 00 has written it", pending=True)]
    else:
        checks = [_fit_check(name, config, paths)]
    if name in START_CHECKPOINT:
        checks.append(_checkpoint_check(name, config, run_dir, stage1_planned))
    return checks


def data_checks(values: dict[str, dict], configs: dict[str, Any], run_dir: Path) -> list[Check]:
    """Data roots and lists of the planned notebooks, each training notebook's configuration against its
    training list, and the checkpoints they start from (``configs``: the valid ones only)."""
    uses, checks = _Uses(), []
    base = _Base(None, {key: "data.json" for key in DATA_KEYS})
    if DATA_SETUP in values:
        base, setup_checks = _setup_base(configs[DATA_SETUP], run_dir, uses) if DATA_SETUP in configs else (None, [])
        checks += setup_checks
    # Without notebook 00's locations (its problem is reported) only the stages' own paths can be checked.
    known, base = base is not None, base or _Base({}, {})
    stages = {}
    for name in (n for n in TRAINING if n in configs):
        config = configs[name]
        own = {key: getattr(config, key) for key in DATA_KEYS if hasattr(config, key)}
        paths = resolve_data_paths(run_dir, base=base.paths, **own)
        for key, path in _paths_used(name, config, paths).items():
            if own.get(key):
                origin = f"{name}.{key}"
            else:  # from the base; a val_trials it does not give defaults to the stage's own trials
                origin = base.origin.get(key, f"{name}.trials")
            uses.add(key, path, name, origin, pending=not own.get(key) and key in base.created)
        if known:
            stages[name] = paths
    path_checks = {pair: _path_check(*pair, use, run_dir) for pair, use in uses.items()}
    checks += path_checks.values()
    for name, paths in stages.items():
        checks += _stage_checks(name, configs[name], paths, path_checks, run_dir, STAGE1 in values)
    return checks


# ---------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------


def diagnose(steps: Sequence[pipeline.PlannedNotebook], *, environment: bool = True, data: bool = True,
             import_module: Importer = importlib.import_module,
             version_of: Callable[[str], str] = importlib.metadata.version) -> list[Check]:
    """Every check of the planned ``steps`` (from :func:`lgl_helpers.app.pipeline.plan_run`), in report order."""
    values = planned_values(steps)
    checks = environment_checks(values, import_module, version_of) if environment else []
    if any(not check.ok and check.name in ("torch", "torchaudio") for check in checks):
        # Every config module imports torch: nothing further can be checked until it imports.
        return checks + [Check("configuration", False, "not checked: it needs torch and torchaudio to import (see above)")]
    configs, config_checks = configuration_checks(values)
    checks += config_checks
    first = next(iter(values.values()))  # every notebook has the pipeline's run_name and runs_dir
    run_dir = run_folder(first["run_name"], first["runs_dir"])
    disk = disk_check(configs, run_dir)
    checks += [disk] if disk else []
    return checks + (data_checks(values, configs, run_dir) if data else [])


class Preflight:
    """The doctor inside ``lgl-kit run``: stops the run with :class:`~lgl_helpers.app.pipeline.PipelineError`,
    one line per problem, before the notebook that would fail.

    Created before the first notebook, it checks the environment, every planned notebook's configuration
    and, when the plan holds a training notebook (01-04), the data as far as it exists. When notebook 00
    creates data (the toy corpus, a built list), :meth:`before` repeats the data checks once 00 has run.
    A plan of 00 or 05 alone gets no data checks: 00 validates its own inputs, 05 only reads results.
    """

    def __init__(self, plan: Sequence[pipeline.PlannedNotebook], echo: Callable[[str], Any] = print):
        self.plan = list(plan)
        self.echo = echo
        self.deferred = self._run(self.plan, environment=True, when="before the first notebook")

    def before(self, name: str) -> None:
        """Call before running notebook ``name``: runs the deferred data checks once notebook 00 is behind."""
        if self.deferred and name != DATA_SETUP:
            self.deferred = False
            self._run([s for s in self.plan if s.name != DATA_SETUP], environment=False, when=f"after {DATA_SETUP}")

    def _run(self, steps: list[pipeline.PlannedNotebook], environment: bool, when: str) -> bool:
        """Run the checks; raise on any error, else return whether some wait for notebook 00's data."""
        checks = diagnose(steps, environment=environment, data=any(s.name in TRAINING for s in steps))
        errors = [check.line() for check in checks if not check.ok]
        if errors:
            raise pipeline.PipelineError(
                f"preflight {when} found {len(errors)} problem(s) (`lgl-kit doctor` with the same options lists "
                "every check):\n" + "\n".join(errors)
            )
        pending = any(check.pending for check in checks)
        self.echo(f"[preflight] {when}: {len(checks)} checks ok"
                  + (f"; the data checks run again once {DATA_SETUP} has created the data" if pending else ""))
        return pending


def _cmd_doctor(args: argparse.Namespace) -> int:
    try:
        plan = pipeline.plan_run(args.profile, args.run_name, pipeline.parse_overrides(args.set), runs_dir=args.runs_dir)
    except pipeline.PipelineError as error:
        print(f"lgl-kit doctor: {error}", file=sys.stderr)
        return 1
    checks = diagnose(plan)
    for check in checks:
        print(check.line())
    errors = sum(not check.ok for check in checks)
    pending = " (`lgl-kit run` repeats the pending data checks after notebook 00)" if any(c.pending for c in checks) else ""
    print(f"{len(checks)} checks, {errors} error(s){pending}")
    return 1 if errors else 0


def add_doctor_parser(subparsers) -> argparse.ArgumentParser:
    """``lgl-kit doctor``: the options of ``lgl-kit run`` that decide what a run reads and needs."""
    parser = subparsers.add_parser(
        "doctor", help="check the environment, data and configuration of a run without running it",
        description="Check what `lgl-kit run` with the same options needs: torch/torchaudio/faiss, CUDA, every "
                    "data root and list, each notebook's configuration against the data, and free disk. One line "
                    "per check; exits non-zero on any error.",
    )
    parser.add_argument("--profile", default="demo", help="profile name in notebooks/params/ (ci, demo, full) or a YAML path")
    parser.add_argument("--run-name", default="demo", help="folder under --runs-dir for every output")
    parser.add_argument("--runs-dir", default="runs", help="where run folders live (default: runs/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter of every notebook that has it, or NOTEBOOK.KEY=VALUE for one; repeatable")
    parser.set_defaults(func=_cmd_doctor)
    return parser
