"""DINO against contrastive + AAT as Stage I on the embedded corpus, at an equal wall-time budget.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/stage1_dino.py --seeds 0 1 2 --runs-dir runs/dino_study
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/stage1_dino.py --profile ci --seeds 0 --runs-dir runs/dino_study \
        --set 01_stage1_contrastive.global_frames=100 --set 01_stage1_contrastive.local_frames=50 \
        --set 01_stage1_contrastive.dino_warmup_epochs=1      # the small corpus (docs/dino.md's table)

Per seed: the demo pipeline (notebooks 00, 01, 02, 04; the baseline 03 is not needed) once with the
reference's Stage I (the demo's 10 epochs) and once with ``stage1_method=dino`` given the same training
time: a calibration first times ``--calibration-steps`` training steps of each method, alternating, in
this process, and DINO's epochs at 1x are ``round(10 · t_contrastive / t_dino)``. Then DINO's Stage I
(and clustering) alone at 2x and 4x that budget. Every row gives the Stage I test EER with its 95 %
speaker-bootstrap interval, the NMI of the pseudo labels clustered from it, and, for the two equal-budget
systems, the LGL test EER; then the paired DINO − contrastive differences. Rows are appended to
``<runs-dir>/table.md`` as they finish (a long study can be read while it runs) and kept in
``rows.jsonl``; a finished run is not retrained. The seconds column is Stage I's wall time with its
evaluations, so a reader can see the budget each method actually got.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from lgl_helpers.app import pipeline
from lgl_helpers.app.planning import parse_overrides, plan_run
from lgl_helpers.app.report import collect_report
from lgl_helpers.core.bootstrap import paired_difference, speaker_ids
from lgl_helpers.core.metrics import read_trial_scores
from lgl_helpers.training import stage1

NB1 = "01_stage1_contrastive"
HEADER = (
    "| seed | Stage I | epochs | Stage I train s | Stage I EER % [95 % CI] | NMI | LGL EER % [95 % CI] | run |\n"
    "| ---: | --- | ---: | ---: | --- | ---: | --- | --- |\n"
)


def _ci(entry: dict | None) -> str:
    if not entry or entry.get("eer") is None:
        return "–"
    ci = entry.get("eer_ci")
    return f"{entry['eer']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{entry['eer']:.2f}"


def calibrate(profile: str, runs_dir: Path, base: dict, steps: int, rounds: int = 2) -> float:
    """Seconds per training step of DINO over contrastive + AAT (median of ``rounds`` alternating timings)."""
    name = f"calibration_seed{base['seed']}"
    pipeline.run_pipeline(profile, name, base, str(runs_dir), only="00", echo=lambda _: None)
    ratios = []
    for round_ in range(rounds):
        seconds = {}
        for method in ("contrastive_aat", "dino"):
            overrides = {**base, f"{NB1}.stage1_method": method}
            params = next(p for p in plan_run(profile, name, overrides, str(runs_dir)) if p.name == NB1).parameters
            config = stage1.Stage1Config(
                **{**params, "max_steps": steps, "resume": False, "interactive": False, "test_interval": 10_000}
            )
            data = stage1.prepare_data(config)
            # epoch 0's evaluation runs first in both; the difference of two calls times the steps alone
            tic = time.perf_counter()
            stage1.train_stage1(_with(config, 1), data=data)
            one = time.perf_counter() - tic
            tic = time.perf_counter()
            stage1.train_stage1(_with(config, steps + 1), data=data)
            seconds[method] = (time.perf_counter() - tic - one) / steps
        ratios.append(seconds["dino"] / seconds["contrastive_aat"])
        print(f"calibration round {round_}: {seconds} ratio {ratios[-1]:.2f}", flush=True)
    return float(np.median(ratios))


def _with(config: stage1.Stage1Config, max_steps: int) -> stage1.Stage1Config:
    return dataclasses.replace(config, max_steps=max_steps, resume=False)


def run_system(profile, runs_dir: Path, run_name: str, overrides: dict, notebooks: tuple[str, ...]) -> Path:
    for nb in notebooks:
        pipeline.run_pipeline(profile, run_name, overrides, str(runs_dir), only=nb, echo=lambda _: None)
    return runs_dir / run_name


def _paired(run_a: Path, run_b: Path, folder: str) -> str:
    """EER(a) − EER(b) on the same test trials with its paired 95 % interval."""
    trials, scores_a = read_trial_scores(run_a / folder / "test_scores.txt")
    trials_b, scores_b = read_trial_scores(run_b / folder / "test_scores.txt")
    if [(t.path_a, t.path_b) for t in trials] != [(t.path_a, t.path_b) for t in trials_b]:
        return "other trials"
    labels = np.array([t.label for t in trials])
    diff = paired_difference(
        scores_a, scores_b, labels, speaker_ids([t.path_a for t in trials]), speaker_ids([t.path_b for t in trials])
    )
    lo, hi = diff["eer_diff_ci"]
    return f"{diff['eer_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 4], help="DINO budgets, multiples of 1x")
    parser.add_argument("--runs-dir", default="runs/dino_study")
    parser.add_argument("--calibration-steps", type=int, default=4)
    parser.add_argument("--epochs-1x", type=int, default=0, help="DINO epochs at 1x (0: from the calibration)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as lgl-kit run, every run")
    args = parser.parse_args()
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    table, jsonl = runs_dir / "table.md", runs_dir / "rows.jsonl"
    if not table.exists():
        table.write_text(HEADER)
    toy_root = str(runs_dir / "toy")
    contrastive_epochs = next(p for p in plan_run(args.profile, "x", {}, str(runs_dir)) if p.name == NB1).parameters[
        "epochs"
    ]
    for seed in args.seeds:
        base = {**parse_overrides(args.set), "seed": seed, "00_data_setup.toy_root": toy_root}
        epochs_1x = args.epochs_1x
        if not epochs_1x:
            ratio = calibrate(args.profile, runs_dir, base, args.calibration_steps)
            epochs_1x = max(2, round(contrastive_epochs / ratio))
            print(f"seed {seed}: DINO step costs {ratio:.2f}x a contrastive one: {epochs_1x} epochs at 1x", flush=True)
        systems = [("contrastive_aat", contrastive_epochs, ("00", "01", "02", "04"))]
        systems += [
            ("dino", b * epochs_1x, ("00", "01", "02", "04") if b == 1 else ("00", "01", "02")) for b in args.budgets
        ]
        finished = {}
        for method, epochs, notebooks in systems:
            name = f"seed{seed}_{method}_{epochs}ep"
            overrides = {**base, f"{NB1}.stage1_method": method, f"{NB1}.epochs": epochs}
            tic = time.perf_counter()
            run_dir = run_system(args.profile, runs_dir, name, overrides, notebooks)
            report = collect_report(run_dir)
            nmi = next((c["nmi"] for c in report["clustering"] if c["mode"] == "stage1"), None)
            row = {
                "seed": seed,
                "method": method,
                "epochs": epochs,
                "budget": "1x" if method != "dino" else f"{epochs // epochs_1x}x",
                "stage1_wall_seconds": report["stage1"]["wall_seconds"],
                "stage1": {k: report["stage1"].get(k) for k in ("eer", "eer_ci")},
                "nmi": nmi,
                "lgl": {k: (report["lgl"] or {}).get(k) for k in ("eer", "eer_ci")},
                "seconds": time.perf_counter() - tic,
                "run": name,
            }
            finished[(method, epochs)] = run_dir
            with jsonl.open("a") as out:
                out.write(json.dumps(row) + "\n")
            label = "contrastive + AAT" if method != "dino" else f"DINO {row['budget']}"
            with table.open("a") as out:
                out.write(
                    f"| {seed} | {label} | {epochs} | {row['stage1_wall_seconds']:.0f} | {_ci(row['stage1'])} | "
                    f"{nmi:.3f} | {_ci(row['lgl'])} | {name} |\n"
                )
            print(f"seed {seed} {label}: done in {row['seconds']:.0f} s", flush=True)
        contrastive = finished[("contrastive_aat", contrastive_epochs)]
        dino = finished[("dino", epochs_1x)]
        with table.open("a") as out:
            out.write(
                f"| {seed} | DINO 1x − contrastive (paired) | | | {_paired(dino, contrastive, 'stage1')} | | "
                f"{_paired(dino, contrastive, 'stage2_lgl')} | |\n"
            )


if __name__ == "__main__":
    main()
