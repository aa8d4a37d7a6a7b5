"""Does loss-gated learning beat the baseline on the embedded default? The demo pipeline over training seeds.

    python benchmarks/seed_study.py                          # the demo profile, seeds 0 1 2
    python benchmarks/seed_study.py --set gate_losses=training   # the demo with the reference's gate losses
    python benchmarks/seed_study.py --profile demo-long --seeds 0 1 2 3 --runs-dir runs/seed_study

Every seed trains on the same generated corpus; only the ``seed`` parameter (initialisation, crops,
augmentation draws, batch order) changes. Per seed the table gives the test EER of Stage I, the
baseline and LGL with their 95 % bootstrap intervals over test speakers, the paired LGL − baseline
difference, and the gate evidence of the first gated phase; then the means and the goals checked
against them. Runs are kept in ``--runs-dir`` (a finished seed is not retrained).

LGL trains phase L on top of the baseline's phase T, so it gets more epochs. With short phases that
are still improving when they hit ``max_epochs_per_phase``, part of a gain could be those epochs, not
the gate. The *equal-budget baseline* controls for that: the same Stage I model and clustering (hard
links of the seed's run), notebook 03 alone with ``max_epochs_per_phase`` = every epoch LGL trained.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from lgl_helpers.app import pipeline
from lgl_helpers.app.planning import parse_overrides
from lgl_helpers.core.bootstrap import paired_difference, speaker_ids
from lgl_helpers.core.metrics import compute_eer, read_trial_scores
from lgl_helpers.files import read_json

SHARED = ("stage1", "clustering", "lists", "data.json", "data_summary.json", "data_setup_params.json")

GOALS = (
    ("auc_reliable >= 0.80 in the first gated phase (every seed)", lambda rows: all(r["auc"] >= 0.80 for r in rows)),
    (
        "kept_reliable - dropped_reliable >= 0.20 in the first gated phase (every seed)",
        lambda rows: all(r["gap"] >= 0.20 for r in rows),
    ),
    ("LGL - baseline <= -1 EER point on the mean of the seeds", lambda rows: _mean(rows, "diff") <= -1.0),
    ("LGL <= baseline on every seed", lambda rows: all(r["lgl"] <= r["baseline"] for r in rows)),
    ("LGL <= equal-budget baseline on the mean of the seeds", lambda rows: _mean(rows, "diff_long") <= 0.0),
    (
        "Stage II below Stage I on every seed",
        lambda rows: all(max(r["baseline"], r["lgl"]) < r["stage1"] for r in rows),
    ),
)


def _mean(rows: list[dict], key: str) -> float:
    return statistics.fmean(r[key] for r in rows)


def seed_row(report: dict) -> dict:
    """The numbers of one seed's ``report.json``."""
    evidence = report["lgl"]["gate_evidence"][0]
    comparison = next(c for c in report["comparisons"] if (c["system"], c["reference"]) == ("lgl", "baseline"))
    row = {
        "nmi": next(c["nmi"] for c in report["clustering"] if c["mode"] == "stage1"),
        "gate": evidence["gate"],
        "kept": evidence["fraction_kept"],
        "kept_reliable": evidence["kept_reliable"],
        "dropped_reliable": evidence["dropped_reliable"],
        "gap": evidence["kept_reliable"] - evidence["dropped_reliable"],
        "auc": evidence["auc_reliable"],
        "diff": comparison["eer_diff"],
        "diff_ci": comparison["eer_diff_ci"],
        "lgl_best": f"{report['lgl']['best']['phase']}{report['lgl']['best']['epoch']}",
    }
    for key in ("stage1", "baseline", "lgl"):
        row[key] = report[key]["eer"]
        row[f"{key}_ci"] = report[key]["eer_ci"]
    return row


def _link_tree(source: Path, target: Path) -> None:
    if source.is_dir():
        for path in source.rglob("*"):
            if path.is_file():
                (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
                if not (target / path.relative_to(source)).exists():
                    os.link(path, target / path.relative_to(source))
    elif not target.exists():
        os.link(source, target)


def equal_budget_baseline(profile: str, runs_dir: Path, run_name: str, overrides: dict) -> dict:
    """The baseline of ``run_name`` retrained with every epoch LGL trained; its test EER and the paired
    LGL − it difference."""
    run_dir = runs_dir / run_name
    lgl = read_json(run_dir / "stage2_lgl" / "state.json")
    epochs = len(lgl["history"])
    control = f"{run_name}_equal_budget"
    (runs_dir / control).mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        _link_tree(run_dir / name, runs_dir / control / name)
    pipeline.run_pipeline(
        profile,
        control,
        {**overrides, "max_epochs_per_phase": epochs},
        runs_dir=str(runs_dir),
        only="03",
        echo=lambda _: None,
    )
    trials, long_scores = read_trial_scores(runs_dir / control / "stage2_baseline" / "test_scores.txt")
    lgl_trials, lgl_scores = read_trial_scores(run_dir / "stage2_lgl" / "test_scores.txt")
    if [(t.label, t.path_a, t.path_b) for t in trials] != [(t.label, t.path_a, t.path_b) for t in lgl_trials]:
        raise RuntimeError(f"{control}: the equal-budget baseline scored other trials than LGL")
    labels = np.array([t.label for t in trials])
    diff = paired_difference(
        lgl_scores,
        long_scores,
        labels,
        speaker_ids([t.path_a for t in trials]),
        speaker_ids([t.path_b for t in trials]),
    )
    return {
        "epochs": epochs,
        "baseline_long": compute_eer(long_scores, labels),
        "diff_long": diff["eer_diff"],
        "diff_long_ci": diff["eer_diff_ci"],
    }


def _with_ci(value: float, ci) -> str:
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def print_table(rows: dict[int, dict]) -> None:
    print(
        "\n| seed | NMI | Stage I EER % [95 % CI] | baseline | LGL | LGL − baseline [95 % CI] | LGL best "
        "| equal-budget baseline (epochs allowed) | LGL − it [95 % CI] | gate | kept % | reliable kept / dropped % | AUC |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for seed, r in rows.items():
        print(
            f"| {seed} | {r['nmi']:.3f} | {_with_ci(r['stage1'], r['stage1_ci'])} | "
            f"{_with_ci(r['baseline'], r['baseline_ci'])} | {_with_ci(r['lgl'], r['lgl_ci'])} | "
            f"{r['diff']:+.2f} [{r['diff_ci'][0]:+.2f}, {r['diff_ci'][1]:+.2f}] | {r['lgl_best']} | "
            f"{r['baseline_long']:.2f} ({r['epochs']}) | "
            f"{r['diff_long']:+.2f} [{r['diff_long_ci'][0]:+.2f}, {r['diff_long_ci'][1]:+.2f}] | {r['gate']:.2f} | "
            f"{100 * r['kept']:.1f} | {100 * r['kept_reliable']:.1f} / {100 * r['dropped_reliable']:.1f} | "
            f"{r['auc']:.3f} |"
        )
    values = list(rows.values())
    print(
        f"| mean | {_mean(values, 'nmi'):.3f} | {_mean(values, 'stage1'):.2f} | {_mean(values, 'baseline'):.2f} | "
        f"{_mean(values, 'lgl'):.2f} | {_mean(values, 'diff'):+.2f} | | {_mean(values, 'baseline_long'):.2f} | "
        f"{_mean(values, 'diff_long'):+.2f} | {_mean(values, 'gate'):.2f} | "
        f"{100 * _mean(values, 'kept'):.1f} | {100 * _mean(values, 'kept_reliable'):.1f} / "
        f"{100 * _mean(values, 'dropped_reliable'):.1f} | {_mean(values, 'auc'):.3f} |"
    )
    print("\nGoals:")
    for text, check in GOALS:
        print(f"  [{'x' if check(values) else ' '}] {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="demo", help="profile name in notebooks/params/ or a YAML path")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs-dir", default="runs/seed_study", help="where the per-seed runs are kept")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter on top of the profile, as lgl-kit run",
    )
    args = parser.parse_args()
    runs_dir = Path(args.runs_dir)
    changes = parse_overrides(args.set)
    # Runs with other parameters get other folders, so a finished seed is only reused for the same study.
    study = Path(args.profile).stem + "".join(f"_{key}-{value}" for key, value in changes.items()).replace("/", "-")
    rows, seconds = {}, {}
    for seed in args.seeds:
        run_name = f"{study}_seed{seed}"
        overrides = {**changes, "seed": seed, "00_data_setup.toy_root": str(runs_dir / "toy")}
        tic = time.perf_counter()
        pipeline.run_pipeline(args.profile, run_name, overrides, runs_dir=str(runs_dir), echo=lambda _: None)
        seconds[seed] = time.perf_counter() - tic
        rows[seed] = seed_row(read_json(runs_dir / run_name / "report.json"))
        rows[seed].update(equal_budget_baseline(args.profile, runs_dir, run_name, overrides))
        print(f"seed {seed} done in {seconds[seed]:.0f} s", flush=True)
    print_table(rows)
    out = runs_dir / f"{study}_seed_study.json"
    record = {"profile": args.profile, "set": changes, "rows": rows, "seconds": seconds}
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nper-seed numbers: {out}")


if __name__ == "__main__":
    main()
