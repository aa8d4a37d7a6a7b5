"""Margins of the tests' learned-number assertions, over training seeds.

    python benchmarks/ci_margins.py --seeds 0 1 2 3 4          # tests/test_pipeline.py: the `ci` profile per seed
    python benchmarks/ci_margins.py --unit --seeds 0 1 2 3 4   # the unit tests that assert on a learned number

Pipeline mode: every seed trains on the same `small` toy corpus; only the `seed` parameter
(initialisation, crops, batch order, k-means) changes. Unit mode reruns the tests that print a
``MARGIN name value`` line with ``LGL_TEST_SEED`` set (tests/conftest.py). Both print the value per seed
and its worst case, so a threshold can be set inside what every seed showed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from lgl_helpers.app import pipeline
from lgl_helpers.files import read_json


def stage2_loss_drop(run_dir: Path, mode: str) -> float:
    """First T-phase epoch's mean training loss minus the last T-phase epoch's (positive: the loss fell)."""
    history = read_json(run_dir / f"stage2_{mode}" / "state.json")["history"]
    losses = [record["loss"] for record in history if record["phase"] == "T"]
    return losses[0] - losses[-1]


def seed_row(runs_dir: Path, toy_root: Path, seed: int) -> dict[str, float]:
    run_name = f"seed{seed}"
    pipeline.run_pipeline(
        "ci",
        run_name,
        {"seed": seed, "00_data_setup.toy_root": str(toy_root)},
        runs_dir=str(runs_dir),
        echo=lambda _: None,
    )
    run_dir = runs_dir / run_name
    report = read_json(run_dir / "report.json")
    stage1_nmi = next(c for c in report["clustering"] if c["mode"] == "stage1")
    return {
        "untrained": report["stage1"]["untrained_eer"],
        "stage1": report["stage1"]["eer"],
        "baseline": report["baseline"]["eer"],
        "lgl": report["lgl"]["eer"],
        "nmi": stage1_nmi["nmi"],
        "untrained_nmi": stage1_nmi["untrained_nmi"],
        "baseline_loss_drop": stage2_loss_drop(run_dir, "baseline"),
        "lgl_loss_drop": stage2_loss_drop(run_dir, "lgl"),
    }


UNIT_TESTS = (
    "tests/test_stage1.py::test_stage1_lowers_eer_below_the_untrained_encoder",
    "tests/test_cluster.py::test_stage1_encoder_gives_clearly_better_pseudo_labels_than_an_untrained_one",
)


def unit_margins(seed: int) -> dict[str, float]:
    """``MARGIN name value`` lines the unit tests print when run with ``LGL_TEST_SEED=seed``."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", *UNIT_TESTS],
        capture_output=True,
        text=True,
        env={**os.environ, "LGL_TEST_SEED": str(seed)},
    )
    return {name: float(value) for name, value in re.findall(r"^MARGIN (\S+) (\S+)$", result.stdout, re.MULTILINE)}


def print_table(margins: dict[str, list[float]], seeds: list[int]) -> None:
    print(f"\n| quantity | {' | '.join(f'seed {s}' for s in seeds)} | min | mean |")
    print(f"| --- | {' | '.join('---:' for _ in seeds)} | ---: | ---: |")
    for name, values in margins.items():
        cells = " | ".join(f"{v:.3f}" for v in values)
        print(f"| {name} | {cells} | {min(values):.3f} | {sum(values) / len(values):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--runs-dir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--unit", action="store_true", help="measure the unit tests instead of the pipeline")
    args = parser.parse_args()
    if args.unit:
        per_seed = {seed: unit_margins(seed) for seed in args.seeds}
        names = sorted({name for values in per_seed.values() for name in values})
        missing = [seed for seed, values in per_seed.items() if set(values) != set(names) or not values]
        if missing:
            sys.exit(f"seeds {missing}: a unit test failed before printing its margin; run it with LGL_TEST_SEED set")
        print_table({name: [per_seed[s][name] for s in args.seeds] for name in names}, args.seeds)
        return
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = Path(args.runs_dir or scratch)
        rows = {}
        for seed in args.seeds:
            rows[seed] = seed_row(runs_dir, runs_dir / "toy_small", seed)
            print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[seed].items()), flush=True)
    margins = {
        "Stage I EER gain over untrained (points)": [r["untrained"] - r["stage1"] for r in rows.values()],
        "Stage II EER gain over untrained (points, worse system)": [
            r["untrained"] - max(r["baseline"], r["lgl"]) for r in rows.values()
        ],
        "Stage II vs Stage I (points, best system; >0 = better)": [
            r["stage1"] - min(r["baseline"], r["lgl"]) for r in rows.values()
        ],
        "Stage I NMI gain over untrained": [r["nmi"] - r["untrained_nmi"] for r in rows.values()],
        "Stage II T-phase loss drop (worse system)": [
            min(r["baseline_loss_drop"], r["lgl_loss_drop"]) for r in rows.values()
        ],
    }
    print_table(margins, list(rows))


if __name__ == "__main__":
    main()
