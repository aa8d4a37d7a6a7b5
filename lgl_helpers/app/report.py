"""Notebook 05: collect a run's metrics into ``report.json`` / ``report.md`` with PNG plots.

The plots are drawn by :mod:`lgl_helpers.notebook.report_figures`; this module only saves them.

Reads only files in the run folder (``stage1/metrics.json`` and ``stage2_<mode>/metrics.json`` with the
``test_scores.txt`` next to each, ``clustering/quality.json``, ``pipeline.json``), so it can be rerun at
any time without touching the models.

Every system's test EER and minDCF get a speaker-bootstrap interval (:mod:`lgl_helpers.core.bootstrap`)
from its ``test_scores.txt``; systems that scored the same trials are compared by the paired difference
of their metrics on the same resamples (``comparisons``). The evaluation on several trial lists, raw and
normalised, with the DET curves, comes from :mod:`lgl_helpers.app.report_eval` (``eval``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lgl_helpers import timings
from lgl_helpers.app import report_eval
from lgl_helpers.config import NotebookConfig, check_int
from lgl_helpers.core import bootstrap
from lgl_helpers.core.evaluation import check_eval_trials
from lgl_helpers.core.gate import valley_gate
from lgl_helpers.core.metrics import TEST_SCORES, TrialScoreReader, match_trials
from lgl_helpers.corpus.lists import Trial
from lgl_helpers.files import atomic_write_text, read_json_object, write_json
from lgl_helpers.notebook.gate_tuner import plot_loss_histogram
from lgl_helpers.notebook.report_figures import report_figures
from lgl_helpers.notebook.stage2_figures import gate_evidence_table, label_correction_table
from lgl_helpers.reproducibility import environment_info
from lgl_helpers.runs import path_in_run, relative_to_run, run_folder
from lgl_helpers.training.stage2.statefile import gate_losses_record, read_epoch_losses, read_state

SYSTEMS = (
    ("stage1", "stage1", "Stage I (contrastive + AAT)"),
    ("baseline", "stage2_baseline", "Stage II baseline (no gate)"),
    ("lgl", "stage2_lgl", "Stage II LGL"),
)
METRIC_KEYS = ("eer", "min_dcf", "min_dcf_0.01")
# Paired differences, each (system, reference): metric(system) - metric(reference).
COMPARISONS = (("lgl", "baseline"), ("baseline", "stage1"), ("lgl", "stage1"))
SHORT_NAMES = {"stage1": "Stage I", "baseline": "baseline", "lgl": "LGL"}
# The notebook that runs each system's stage (whose metrics.json "timings" are that notebook's parts).
NOTEBOOK_OF = {"stage1": "01_stage1_contrastive", "baseline": "03_stage2_baseline", "lgl": "04_stage2_lgl"}


@dataclass
class CompareConfig(NotebookConfig):
    """Parameters of notebook 05_compare (field names equal its parameters cell)."""

    run_name: str = "lab"
    runs_dir: str = "runs"
    bootstrap_resamples: int = bootstrap.N_RESAMPLES
    bootstrap_seed: int = bootstrap.SEED
    eval_trials: dict = field(default_factory=dict)
    interactive: bool = True
    recompute: bool = False  # True: compute again where the run has results (lgl_helpers.notebook.viewing)

    def validate(self) -> None:
        check_int(self.name_of("bootstrap_resamples"), self.bootstrap_resamples, minimum=1)
        check_int(self.name_of("bootstrap_seed"), self.bootstrap_seed)
        check_eval_trials(type(self).__name__, self.eval_trials)


def _read(path: Path) -> dict | None:
    return read_json_object(path, path.name)


def read_report_file(path: str | Path) -> dict:
    """``report.json`` of a run, checked: one-line ValueError naming the file when it is missing, not JSON,
    not an object or holds no system's results."""
    path = Path(path)
    report = read_json_object(path, "report.json")
    if report is None:
        raise FileNotFoundError(f"{path} does not exist; run notebook 05_compare first")
    if not any(isinstance(report.get(key), dict) for key, _, _ in SYSTEMS):
        names = ", ".join(repr(key) for key, _, _ in SYSTEMS)
        raise ValueError(f"{path}: report.json holds no system's results (none of {names}); rerun notebook 05_compare")
    return report


def _read_scores(stage_dir: Path, metrics: dict, read_scores: TrialScoreReader) -> tuple[list[Trial], Any] | str:
    """(trials, scores (M,)) of a stage's ``test_scores.txt``, or why there are none."""
    path = stage_dir / TEST_SCORES
    if "test_scores" not in metrics:
        return f"{stage_dir / 'metrics.json'} names no test_scores (written before scores were kept): rerun the stage"
    if not path.is_file():
        return f"{path} does not exist"
    try:
        return read_scores(path)
    except ValueError as error:
        return str(error)


@dataclass
class _TrialGroup:
    """Systems that scored the same trials, and the one set of speaker resamples they share."""

    trials: list[Trial]
    resamples: bootstrap.SpeakerBootstrap | None
    note: str | None  # why there are no resamples
    members: dict[str, bootstrap.Resampled] = field(default_factory=dict)


def _new_group(trials: list[Trial], n_resamples: int, seed: int) -> _TrialGroup:
    try:
        resamples = bootstrap.SpeakerBootstrap(
            [t.label for t in trials],
            bootstrap.speaker_ids([t.path_a for t in trials], "path A"),
            bootstrap.speaker_ids([t.path_b for t in trials], "path B"),
            n_resamples=n_resamples,
            seed=seed,
        )
    except ValueError as error:
        return _TrialGroup(trials, None, f"no speaker bootstrap of these test trials: {error}")
    return _TrialGroup(trials, resamples, None)


def _comparison(report: dict[str, Any], group_of: dict[str, _TrialGroup], system: str, reference: str) -> dict:
    """metric(system) - metric(reference) with paired intervals, or ``absent``: why not."""
    record = {"system": system, "reference": reference}
    missing = [key for key in (system, reference) if report.get(key) is None]
    unscored = [key for key in (system, reference) if key not in missing and key not in group_of]
    if missing:
        record["absent"] = f"{' and '.join(missing)} has not run"
    elif unscored:
        record["absent"] = "; ".join(f"{key}: {report[key]['ci_note']}" for key in unscored)
    elif group_of[system] is not group_of[reference]:
        record["absent"] = (
            f"{system} and {reference} scored different trial lists ({report[system]['n_trials']} and "
            f"{report[reference]['n_trials']} trials): a paired difference needs the same trials"
        )
    elif group_of[system].resamples is None:
        record["absent"] = group_of[system].note
    else:
        group = group_of[system]
        record.update(group.resamples.paired(group.members[system], group.members[reference]))
    return record


def _add_intervals(report: dict[str, Any], scored: dict[str, tuple], n_resamples: int, seed: int) -> None:
    """Each scored system's intervals into its entry, the paired differences into ``report["comparisons"]``.

    ``scored``: key → (trials, scores) of :func:`_read_scores`. Systems that scored the same trials (in
    any order) share one group, so their intervals come from the same resamples and can be paired.
    """
    groups: list[_TrialGroup] = []
    group_of: dict[str, _TrialGroup] = {}
    for key, (trials, scores) in scored.items():
        for group in groups:
            position = match_trials(group.trials, trials)
            if position is not None:
                scores = scores[position]  # into the group's trial order
                break
        else:
            group = _new_group(trials, n_resamples, seed)
            groups.append(group)
        group_of[key] = group
        entry = report[key]
        entry["n_trials"] = len(trials)
        if group.resamples is None:
            entry["ci_note"] = group.note
            continue
        group.members[key] = group.resamples.evaluate(scores)
        summary = group.resamples.intervals(group.members[key])
        entry.update({f"{metric}_ci": summary[f"{metric}_ci"] for metric in METRIC_KEYS})
        entry["n_speakers"] = summary["n_speakers"]
    report["comparisons"] = [_comparison(report, group_of, system, reference) for system, reference in COMPARISONS]


def _trial_lines(path: Path) -> frozenset[str]:
    """The trials of a list as a set of whitespace-normalised lines: two files with the same trials are the same list."""
    with open(path) as handle:
        return frozenset(" ".join(line.split()) for line in handle if line.strip())


def validation_is_test(run_dir: Path) -> dict[str, str]:
    """System key → the test list, for each stage of the run whose ``val_trials`` (the list its best epoch was
    chosen on) holds the same trials as its test list, by content, under whatever name. The lists are those
    the stage's ``metrics.json`` names (its ``<stage>_params.json`` for a stage of an earlier kit)."""
    same = {}
    for key, folder, _ in SYSTEMS:
        named = _read(run_dir / folder / "metrics.json") or {}
        if not named.get("val_trials"):
            named = (_read(run_dir / folder / f"{folder}_params.json") or {}).get("params") or {}
        val, test = (path_in_run(named.get(name), run_dir) for name in ("val_trials", "trials"))
        if val is None or test is None or not val.is_file() or not test.is_file():
            continue
        if val.resolve() == test.resolve() or _trial_lines(val) == _trial_lines(test):
            same[key] = relative_to_run(test, run_dir)  # inside the run: relative, so a moved run reports the same
    return same


def collect_report(
    run_dir: str | Path,
    n_resamples: int = bootstrap.N_RESAMPLES,
    seed: int = bootstrap.SEED,
    lists: list[str] | None = None,
) -> dict[str, Any]:
    """Gather every stage's metrics of a run into one dict (the content of ``report.json``).

    Stages that have not run are ``None``. EERs are in percent. Each system's entry holds ``eer_ci``,
    ``min_dcf_ci``, ``min_dcf_0.01_ci`` ([lo, hi], speaker bootstrap with ``n_resamples`` and
    ``seed``), ``n_trials`` and ``n_speakers``, or ``ci_note`` saying why there is no interval;
    ``comparisons`` lists the paired differences of :data:`COMPARISONS` (``eer_diff``,
    ``eer_diff_ci``, ...) or, in ``absent``, why one is missing; ``bootstrap`` records the scheme;
    ``eval``: every system on the trial lists ``lists`` (None: all it scored), raw and normalised
    (:func:`lgl_helpers.app.report_eval.collect_eval`).
    """
    run_dir = Path(run_dir)
    report: dict[str, Any] = {"run_name": run_dir.name, "run_dir": str(run_dir)}
    scored = {}
    stage_parts = {}
    read_scores = TrialScoreReader()  # the stages' score files are of the same few lists
    for key, folder, _ in SYSTEMS:
        metrics = _read(run_dir / folder / "metrics.json")
        if metrics is None:
            report[key] = None
            continue
        entry = {k: metrics.get(k) for k in METRIC_KEYS}
        entry.update({f"{k}_ci": None for k in METRIC_KEYS})
        scores = _read_scores(run_dir / folder, metrics, read_scores)
        if isinstance(scores, str):
            entry["ci_note"] = scores
        else:
            scored[key] = scores
        entry["wall_seconds"] = metrics.get("wall_seconds")
        stage_parts[NOTEBOOK_OF[key]] = metrics.get("timings")
        if key == "stage1":
            entry["val_eer"] = metrics.get("val_eer")  # the line Stage II's validation EERs are drawn against
            entry["stage1_method"] = metrics.get("stage1_method", "contrastive_aat")
            entry["untrained_eer"] = metrics.get("untrained_eer")
            entry["untrained_min_dcf"] = metrics.get("untrained_min_dcf")
            entry["best_epoch"] = metrics.get("best_epoch")
        else:
            entry["best"] = metrics.get("best")
            entry["iterations"] = metrics.get("iterations", [])
            entry["evaluations"] = metrics.get("evaluations", [])
            if key == "lgl":
                entry["gate_evidence"] = metrics.get("gate_evidence", [])
                entry["label_correction"] = metrics.get("label_correction", [])
        report[key] = entry
    report["bootstrap"] = {
        "method": "speaker bootstrap (core/bootstrap.py)",
        "n_resamples": n_resamples,
        "seed": seed,
        "confidence": bootstrap.CONFIDENCE,
    }
    _add_intervals(report, scored, n_resamples, seed)
    report["eval"] = report_eval.collect_eval(run_dir, SYSTEMS, lists, n_resamples, seed, read_scores)

    clustering = []
    quality = _read(run_dir / "clustering" / "quality.json")
    if quality is not None:
        clustering.append(
            {
                "mode": "stage1",
                "iteration": 0,
                "nmi": quality.get("nmi"),
                # None when skipped; on a sample, untrained_sample holds its size, k and the trained NMI on it
                "untrained_nmi": quality.get("untrained_nmi"),
                "untrained_sample": quality.get("untrained_sample"),
            }
        )
    for key in ("baseline", "lgl"):
        for item in (report.get(key) or {}).get("iterations", []):
            clustering.append({"mode": key, "iteration": item.get("iteration"), "nmi": item.get("nmi")})
    report["clustering"] = clustering
    report["gates"] = [
        {"iteration": item.get("iteration"), "gate": item.get("gate")}
        for item in (report.get("lgl") or {}).get("iterations", [])
    ]
    pipeline = _read(run_dir / "pipeline.json") or {"notebooks": {}}
    report["timings"] = timings.notebook_timings(run_dir, pipeline, stage_parts)
    report["profile"] = pipeline.get("profile")
    report["validation_is_test"] = validation_is_test(run_dir)
    report["environment"] = environment_info()
    return report


def _fmt(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _fmt_interval(interval: list[float] | None, digits: int = 2) -> str:
    return "–" if interval is None else f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def _confidence_label(report: dict[str, Any]) -> str:
    confidence = (report.get("bootstrap") or {}).get("confidence", bootstrap.CONFIDENCE)
    return f"{confidence * 100:g} % CI"


def results_table(report: dict[str, Any]) -> str:
    """Markdown: :func:`systems_table`, then :func:`comparisons_table` when the report has comparisons
    (a report.json written before the intervals has none), then the gate evidence of an LGL run."""
    parts = [systems_table(report)]
    if report.get("comparisons"):
        parts.append(comparisons_table(report))
    evidence = (report.get("lgl") or {}).get("gate_evidence")
    if evidence:
        parts.append(
            "The loss gate, per LGL iteration (on the losses it was chosen from):\n\n" + gate_evidence_table(evidence)
        )
    corrections = (report.get("lgl") or {}).get("label_correction")
    if corrections:
        parts.append(
            "Label correction of the rejected samples, per LGL iteration:\n\n" + label_correction_table(corrections)
        )
    return "\n\n".join(parts)


def gate_evidence_figures(run_dir: Path, report: dict[str, Any]) -> dict[str, Figure]:
    """Per gated iteration, the histogram of the losses its gate was chosen from, split by reliable
    pseudo labels, with the gate drawn (``gate_evidence_iterNN``)."""
    stage_dir = run_dir / "stage2_lgl"
    state = read_state(stage_dir)
    figures = {}
    for entry in (report.get("lgl") or {}).get("gate_evidence") or []:
        record = gate_losses_record(state, entry["iteration"])
        losses = read_epoch_losses(stage_dir / record["losses"])
        title = (
            f"LGL iteration {entry['iteration']}: {record['losses_source']} losses of T epoch {record['epoch']} "
            "and the gate of phase L"
        )
        mixture, other = None, None
        if entry.get("gate_rule") == "gmm":
            # The GMM gate with its components, and the valley rule's gate on the same losses beside it.
            mixture = entry["gate_mixture"]
            other = ("valley rule", valley_gate(losses["per_sample_loss"], seed=state["params"]["seed"])[0])
        figures[f"gate_evidence_iter{entry['iteration']:02d}"] = plot_loss_histogram(
            losses["per_sample_loss"],
            gate=entry["gate"],
            reliable=losses.get("reliable"),
            title=title,
            mixture=mixture,
            other_gate=other,
        )
    return figures


def systems_table(report: dict[str, Any]) -> str:
    """Markdown table: one row per system with EER (%), its interval and minDCF at p_target 0.05 and 0.01."""
    ci = _confidence_label(report)
    rows = [
        f"| system | EER (%) | EER {ci} | minDCF (p=0.05) | minDCF (p=0.01) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    stage1 = report.get("stage1")
    if stage1 and stage1.get("untrained_eer") is not None:
        rows.append(
            f"| untrained encoder | {_fmt(stage1['untrained_eer'])} | – | {_fmt(stage1.get('untrained_min_dcf'), 3)} | – |"
        )
    for key, _, label in report_eval.named_systems(SYSTEMS, report):
        entry = report.get(key)
        if entry:
            rows.append(
                f"| {label} | {_fmt(entry['eer'])} | {_fmt_interval(entry.get('eer_ci'))} | "
                f"{_fmt(entry['min_dcf'], 3)} | {_fmt(entry['min_dcf_0.01'], 3)} |"
            )
    return "\n".join(rows)


def comparisons_table(report: dict[str, Any]) -> str:
    """Markdown: the paired differences of ``report["comparisons"]`` with their intervals, a sentence on
    how to read them, and why any comparison is absent."""
    ci = _confidence_label(report)
    settings = report.get("bootstrap") or {}
    lines = [
        f"| comparison | ΔEER (points) | ΔEER {ci} | ΔminDCF (p=0.05) | ΔminDCF {ci} |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    absent = []
    for record in report["comparisons"]:
        name = f"{SHORT_NAMES[record['system']]} − {SHORT_NAMES[record['reference']]}"
        if "absent" in record:
            absent.append(f"- {name}: not computed, {record['absent']}.")
            continue
        lines.append(
            f"| {name} | {record['eer_diff']:+.2f} | {_fmt_interval(record['eer_diff_ci'])} | "
            f"{record['min_dcf_diff']:+.3f} | {_fmt_interval(record['min_dcf_diff_ci'], 3)} |"
        )
    out = []
    if len(lines) > 2:
        out += [*lines, ""]
        out.append(
            f"Paired differences on the same test trials, with intervals from resampling test speakers "
            f"({settings.get('n_resamples')} resamples, seed {settings.get('seed')}); below 0, the first "
            "system errs less. An interval that contains 0 is no evidence of a difference."
        )
    if absent:
        out += ["", *absent] if out else absent
    return "\n".join(out)


def write_report(
    run_dir: str | Path,
    figures_dir: str | Path | None = None,
    n_resamples: int = bootstrap.N_RESAMPLES,
    seed: int = bootstrap.SEED,
    lists: list[str] | None = None,
) -> tuple[dict, Path]:
    """Write ``report.json``, ``report.md`` and PNG plots into the run folder; return (report, md path).

    ``n_resamples`` and ``seed``: the speaker bootstrap of the intervals; ``lists``: the trial lists of
    the evaluation tables (:func:`collect_report`).
    """
    run_dir = Path(run_dir)
    figures_dir = Path(figures_dir) if figures_dir else run_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    report = collect_report(run_dir, n_resamples, seed, lists)
    images = {}
    for name, fig in {**report_figures(report), **gate_evidence_figures(run_dir, report)}.items():
        path = figures_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        images[name] = path
    report["figures"] = {name: relative_to_run(path, run_dir) for name, path in images.items()}
    write_json(run_dir / "report.json", report)

    lines = [
        f"# LGL Kit report: run `{report['run_name']}`",
        "",
        f"Profile: `{report['profile']}`",
        "",
        "## Verification results (test trials)",
        "",
        systems_table(report),
        "",
    ]
    notes = [
        f"- {label}: no interval, {report[key]['ci_note']}."
        for key, _, label in report_eval.named_systems(SYSTEMS, report)
        if (report.get(key) or {}).get("ci_note")
    ]
    notes += [
        f"- **{label}: its val_trials is its test list** (the same trials as `{test}`): its best epoch was chosen "
        "on the test trials, so this test EER is optimistic; give notebook 00 a separate val_trials for an unbiased one."
        for key, _, label in SYSTEMS
        if key in report.get("validation_is_test", {}) and report.get(key)
        for test in [report["validation_is_test"][key]]
    ]
    if notes:
        lines += [*notes, ""]
    lines += ["## Paired differences (test trials)", "", comparisons_table(report), ""]
    lines += eval_sections(report)
    lines += [
        "## Clustering (NMI of pseudo labels against true speakers)",
        "",
        "| mode | iteration | NMI |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {c['mode']} | {c['iteration']} | {_fmt(c['nmi'], 3)} |" for c in report["clustering"]]
    evidence = (report.get("lgl") or {}).get("gate_evidence")
    if evidence:
        lines += [
            "",
            "## The loss gate: does it keep the reliable pseudo labels?",
            "",
            "Per LGL iteration, on the per-sample losses its gate was chosen from: the fraction kept, the share of "
            "reliable pseudo labels (equal to their cluster's majority true speaker, a diagnosis only) among the "
            "kept and the dropped samples, and the ROC AUC of −loss as a detector of reliable labels (0.5: none).",
            "",
            gate_evidence_table(evidence),
        ]
    corrections = (report.get("lgl") or {}).get("label_correction")
    if corrections:
        lines += [
            "",
            "## Label correction: are the relabelled samples right?",
            "",
            "Per LGL iteration: the rejected samples whose sharpened clean-pass prediction reached the confidence "
            "were relabelled to the predicted cluster and trained on; the share of them whose new label is reliable "
            "(the majority true speaker of that cluster, a diagnosis only), and the reliable share of phase L's "
            "training set before and after.",
            "",
            label_correction_table(corrections),
        ]
    lines += ["", "## Wall time per notebook", "", timings.summary_line(report["timings"]), ""]
    lines += ["| notebook | seconds | kernel start | where (seconds) |", "| --- | ---: | ---: | --- |"]
    for name, record in report["timings"].items():
        detail = ", ".join(f"{part} {seconds:.1f}" for part, seconds in (record["sections"] or {}).items())
        if record["parts"]:
            detail += "; inside the stage: " + ", ".join(f"{p} {v:.1f}" for p, v in record["parts"].items())
        lines.append(f"| {name} | {_fmt(record['seconds'], 1)} | {_fmt(record['kernel_start'], 1)} | {detail} |")
    env = report["environment"]
    lines += ["", "## Machine", "", ", ".join(f"{k}: {v}" for k, v in env.items() if v is not None), ""]
    lines += [
        f"![{name}]({Path(path).relative_to(run_dir) if Path(path).is_relative_to(run_dir) else path})"
        for name, path in images.items()
    ]
    md_path = atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    return report, md_path


def eval_sections(report: dict[str, Any]) -> list[str]:
    """report.md's lines on the evaluation lists: systems × lists, raw vs normalised, and the notes."""
    evaluation = report.get("eval")
    if not evaluation or not evaluation["lists"]:
        return []
    systems = report_eval.named_systems(SYSTEMS, report)
    lines = ["## Every evaluation list (raw cosine scores)", "", report_eval.lists_table(evaluation, systems), ""]
    lines += ["## Score normalisation without labels", "", report_eval.norm_table(evaluation, systems), ""]
    lines += [f"- {note}" for note in evaluation["notes"]] + ([""] if evaluation["notes"] else [])
    return lines


def report_for_run(config: CompareConfig) -> tuple[dict, Path]:
    """The report of notebook 05's config: :func:`write_report` of its run folder with its bootstrap and lists."""
    run_dir = run_folder(config.run_name, config.runs_dir)
    return write_report(
        run_dir, n_resamples=config.bootstrap_resamples, seed=config.bootstrap_seed, lists=list(config.eval_trials)
    )


def read_report(run_dir: str | Path) -> tuple[dict, Path]:
    """A finished run's report as :func:`write_report` left it: (``report.json``'s content, ``report.md``)."""
    run_dir = Path(run_dir)
    return read_report_file(run_dir / "report.json"), run_dir / "report.md"


def run_status_lines(run_dir: str | Path, runs_dir: str = "runs") -> list[str]:
    """What keeps a run from being complete, one line each (``lgl-kit report`` prints them first): an LGL
    stage paused before its gate, and every notebook that ``pipeline.json`` records as failed or interrupted."""
    from lgl_helpers.app.gate_cli import LGL_STAGE_DIR, waiting_line

    run_dir = Path(run_dir)
    # The stage's state.json, not pipeline.json: it also knows of an interactive run, and of one resumed since.
    waiting = waiting_line(run_dir / LGL_STAGE_DIR, run_dir.name, runs_dir)
    lines = [waiting] if waiting else []
    pipeline = _read(run_dir / "pipeline.json") or {"notebooks": {}}
    for name, record in pipeline["notebooks"].items():
        if record.get("status") in ("failed", "interrupted"):
            error = f" ({record['error']})" if record.get("error") else ""
            lines.append(f"notebook {name} {record['status']}{error}: rerun `lgl-kit run` with the same options")
    return lines
