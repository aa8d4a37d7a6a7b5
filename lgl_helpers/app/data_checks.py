"""The configuration and data checks of ``lgl-kit doctor``: each notebook's config, free disk, the data it reads.

* Configuration: each notebook's config dataclass is built from its planned parameters, so its field
  validation runs as the notebook's first cell would run it; the runs folder has room for the
  checkpoints the run keeps.
* Data: every data root and list the notebooks read (``eval_trials`` included) exists and is readable; each training notebook's
  configuration fits its training list (the stage's own ``check_inputs`` without reading wav headers,
  which the stage itself does before building any model: n_clusters and batch_size against the number
  of utterances, the crop of ``frames`` against the longest listed duration); the checkpoint a notebook
  starts from loads as an encoder (weights only) or is written by an earlier notebook of the run.

Data that notebook 00 creates (the toy corpus, a list built from ``train_root``) does not exist yet when
a run starts: those checks are *pending* until notebook 00 has run.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lgl_helpers.app.checks import DATA_SETUP, STAGE1, TRAINING, Check, first_line
from lgl_helpers.app.planning import PlannedNotebook, notebook_parameters
from lgl_helpers.runs import DATA_KEYS, resolve_data_paths, resolve_path

# The config dataclass each notebook builds in its first code cell.
CONFIGS = {
    "00_data_setup": ("lgl_helpers.corpus.data_setup", "DataSetupConfig"),
    "01_stage1_contrastive": ("lgl_helpers.training.stage1", "Stage1Config"),
    "02_clustering_umap": ("lgl_helpers.clustering.cluster", "ClusteringConfig"),
    "03_stage2_baseline": ("lgl_helpers.training.stage2", "BaselineConfig"),
    "04_stage2_lgl": ("lgl_helpers.training.stage2", "LGLConfig"),
    "05_compare": ("lgl_helpers.app.report", "CompareConfig"),
}


# The parameter naming the checkpoint a notebook starts from ("" = runs/<run>/stage1/best.model).
START_CHECKPOINT = {
    "02_clustering_umap": "init_model",
    "03_stage2_baseline": "init_model",
    "04_stage2_lgl": "init_model",
}


LIST_KEYS = ("train_list", "trials", "val_trials")


# A checkpoint holds the float32 weights and Adam's two moment estimates of every trained parameter.
CHECKPOINT_COPIES = 3


def planned_values(steps: Sequence[PlannedNotebook]) -> dict[str, dict[str, Any]]:
    """Notebook name → every parameter as the notebook sees it: its parameters cell, the plan's values on top."""
    return {step.name: {**notebook_parameters(step.source), **step.parameters} for step in steps}


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
            checks.append(
                Check(name, False, f"{first_line(error)} (set it in the profile or with --set {name}.NAME=VALUE)")
            )
        else:
            checks.append(Check(name, True, f"parameters pass {CONFIGS[name][1]}'s validation"))
    return configs, checks


def _parameter_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@functools.cache
def _encoder_parameters(channels: int, mfa_channels: int | None = None) -> int:
    """Parameters of an ECAPA-TDNN of widths C, M (built once per width and process; only the count is kept).

    M defaults to the reference's, an upper bound for Stage II, whose width comes from its Stage I model.
    """
    from lgl_helpers.core.models import ECAPATDNN, REFERENCE_MFA_CHANNELS

    return _parameter_count(ECAPATDNN(channels, mfa_channels or REFERENCE_MFA_CHANNELS))


def stage1_checkpoint_bytes(config) -> int:
    """Bytes of the checkpoints Stage I keeps: ``epoch_XXX.model`` of every evaluated epoch, ``last.model``, ``best.model``."""
    from lgl_helpers.core.losses import AATDiscriminator, ContrastiveLoss

    evaluated = sum(1 for e in range(1, config.epochs + 1) if e % config.test_interval == 0 or e == config.epochs)
    parameters = (
        _encoder_parameters(config.channels, config.mfa_channels)
        + _parameter_count(ContrastiveLoss())
        + _parameter_count(AATDiscriminator())
    )
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
        return Check(
            "disk",
            False,
            f"{_size(free)} free at {folder} but the run's checkpoints need about {_size(need)}: "
            "free space there or choose another --runs-dir",
        )
    return Check("disk", True, f"{_size(free)} free at {folder}; the run's checkpoints need about {_size(need)}")


def disk_check(configs: dict[str, Any], run_dir: Path) -> Check | None:
    """:func:`check_disk` for the checkpoints of the planned training notebooks; None when none keeps any."""
    need = stage1_checkpoint_bytes(configs[STAGE1]) if STAGE1 in configs else 0
    for name in ("03_stage2_baseline", "04_stage2_lgl"):
        channels = _start_channels(configs[name], configs, run_dir) if name in configs else None
        need += stage2_checkpoint_bytes(configs[name], channels) if channels else 0
    return check_disk(run_dir.parent, need) if need else None


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
    from lgl_helpers.corpus import data_setup as corpus
    from lgl_helpers.corpus import toy  # here: corpus imports matplotlib, which no other check needs

    given = {key: resolve_path(getattr(config, key)) for key in DATA_KEYS if getattr(config, key)}
    for key, path in given.items():
        uses.add(key, path, DATA_SETUP, f"{DATA_SETUP}.{key}")
    if not all(path.exists() for path in given.values()):
        return None, []
    try:
        paths = corpus.resolve_data_setup(config, generate=False)
    except (ValueError, FileNotFoundError) as error:  # inconsistent paths, no toy corpus, a toy of another preset
        return None, [Check(DATA_SETUP, False, first_line(error))]
    origin = {key: f"{DATA_SETUP}.{key}" if key in given else "toy" for key in DATA_KEYS}
    if "val_trials" not in given:  # notebook 00 then uses the trials as validation trials
        origin["val_trials"] = origin["trials"]
    toy_root = resolve_path(config.toy_root)
    checks, created = [], set()
    if toy_root is not None and corpus.toy_needed(config) and not toy.is_toy_corpus(toy_root):
        created = {key for key, path in paths.items() if path is not None and key not in given}
        checks.append(
            Check(
                "toy_root",
                True,
                f"{toy_root}: notebook 00 generates the {config.toy_preset!r} toy corpus there (make_toy=True)",
                pending=True,
            )
        )
    if paths["train_list"] is None:  # notebook 00 builds it from train_root's wav headers
        paths["train_list"] = run_dir / "lists" / "train_list.txt"
        created.add("train_list")
    return _Base(paths, origin, created), checks


def _eval_list_key(name: str) -> str:
    """The key of one list of ``eval_trials`` in the report, e.g. ``eval_trials['Vox1-H']``."""
    return f"eval_trials[{name!r}]"


def _path_problem(key: str, path: Path) -> str | None:
    if not path.exists():
        return "does not exist"
    if (key in LIST_KEYS or key.startswith("eval_trials[")) and not path.is_file():
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
    value = """'{"NAME": "PATH", ...}'""" if parameter.endswith("eval_trials") else "PATH"
    return f"correct {parameter} in the profile or with --set {parameter}={value}"


def _path_check(key: str, path: Path, use: _Use, run_dir: Path) -> Check:
    notebooks = ", ".join(dict.fromkeys(use.notebooks))
    if use.pending:  # what is there now (if anything) is replaced by notebook 00
        return Check(key, True, f"{path} ({notebooks}): notebook 00 creates it; checked again after it", pending=True)
    problem = _path_problem(key, path)
    if problem is None:
        return Check(key, True, f"{path} ({notebooks})")
    fix = (
        f"make it readable (chmod / chown) or point {key} elsewhere"
        if problem.startswith("is not readable")
        else _fix(key, use.origins, run_dir)
    )
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
        return Check(name, False, first_line(error))
    longest = max(entry.duration for entry in entries)
    return Check(
        name, True, f"configuration fits {paths['train_list']} ({len(entries)} utterances, longest {longest:.2f} s)"
    )


def _checkpoint_check(name: str, config, run_dir: Path, stage1_planned: bool) -> Check:
    parameter = START_CHECKPOINT[name]
    value = getattr(config, parameter)
    path = resolve_path(value) or run_dir / "stage1" / "best.model"
    label = f"{name}.{parameter}"
    if path.is_file():
        from lgl_helpers.core.models import load_encoder

        try:  # loadable weights-only, and an encoder of the kit's architecture: refused now, not in notebook 02
            model = load_encoder(path)
        except (OSError, ValueError) as error:
            return Check(label, False, f"{first_line(error)} (set {parameter} to a Stage I encoder checkpoint)")
        return Check(label, True, f"{path} (encoder C={model.channels})")
    if not value and stage1_planned:
        return Check(label, True, f"{path} is written by {STAGE1} earlier in this run")
    hint = f"set {parameter} to an existing checkpoint" if value else f"run notebook 01 first or set {parameter}"
    return Check(label, False, f"{path} does not exist: {hint}")


def _stage_checks(
    name: str, config, paths: dict, path_checks: dict, run_dir: Path, stage1_planned: bool
) -> list[Check]:
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
        for list_name, path in getattr(config, "eval_trials", {}).items():
            uses.add(_eval_list_key(list_name), resolve_path(path), name, f"{name}.eval_trials")
        if known:
            stages[name] = paths
    path_checks = {pair: _path_check(*pair, use, run_dir) for pair, use in uses.items()}
    checks += path_checks.values()
    for name, paths in stages.items():
        checks += _stage_checks(name, configs[name], paths, path_checks, run_dir, STAGE1 in values)
    return checks
