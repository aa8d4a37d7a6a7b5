"""Margins of the learned-number assertions of tests/test_pipeline.py, over training seeds.

    python benchmarks/ci_margins.py --seeds 0 1 2 3 4       # the `ci` profile once per seed (minutes each)

Every seed trains on the same `small` toy corpus; only the `seed` parameter (initialisation, crops,
batch order, k-means) changes. Prints one row per seed and the worst case of each quantity the
pipeline test asserts on, so a threshold can be set inside what every seed showed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from lgl_helpers.app import pipeline
from lgl_helpers.runs import read_json


def stage2_loss_drop(run_dir: Path, mode: str) -> float:
    """First T-phase epoch's mean training loss minus the last T-phase epoch's (positive: the loss fell)."""
    history = read_json(run_dir / f"stage2_{mode}" / "state.json")["history"]
    losses = [record["loss"] for record in history if record["phase"] == "T"]
    return losses[0] - losses[-1]


def seed_row(runs_dir: Path, toy_root: Path, seed: int) -> dict[str, float]:
    run_name = f"seed{seed}"
    pipeline.run_pipeline("ci", run_name, {"seed": seed, "00_data_setup.toy_root": str(toy_root)},
                          runs_dir=str(runs_dir), echo=lambda _: None)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--runs-dir", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = Path(args.runs_dir or scratch)
        rows = {}
        for seed in args.seeds:
            rows[seed] = seed_row(runs_dir, runs_dir / "toy_small", seed)
            print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[seed].items()), flush=True)
    margins = {
        "Stage I EER gain over untrained (points)": [r["untrained"] - r["stage1"] for r in rows.values()],
        "Stage II EER gain over untrained (points, worse system)": [r["untrained"] - max(r["baseline"], r["lgl"]) for r in rows.values()],
        "Stage II vs Stage I (points, best system; >0 = better)": [r["stage1"] - min(r["baseline"], r["lgl"]) for r in rows.values()],
        "Stage I NMI gain over untrained": [r["nmi"] - r["untrained_nmi"] for r in rows.values()],
        "Stage II T-phase loss drop (worse system)": [min(r["baseline_loss_drop"], r["lgl_loss_drop"]) for r in rows.values()],
    }
    print(f"\n| quantity | {' | '.join(f'seed {s}' for s in rows)} | min | mean |")
    print(f"| --- | {' | '.join('---:' for _ in rows)} | ---: | ---: |")
    for name, values in margins.items():
        cells = " | ".join(f"{v:.3f}" for v in values)
        print(f"| {name} | {cells} | {min(values):.3f} | {sum(values) / len(values):.3f} |")


if __name__ == "__main__":
    main()
