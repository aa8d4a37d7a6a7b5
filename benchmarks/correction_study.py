"""Pseudo labels that correct themselves, against LGL: one comparison on the same Stage I model and clusters per seed.

    python benchmarks/correction_study.py                         # demo profile, seeds 0 1 2, every variant
    python benchmarks/correction_study.py --seeds 0 --variants lgl_clean gmm gmm_correction
    python benchmarks/correction_study.py --table-only            # the tables of what has finished

Per seed, Stage I and the baseline (notebooks 00, 01, 03 of the profile) run once in
``<runs-dir>/seed<S>``; every variant is notebook 04 alone in ``<runs-dir>/seed<S>_<variant>``, which
hard-links that seed's Stage I model, clustering and baseline (so phase T is the baseline's, shared).
The over-clustering variants (``over_*``) share ``<runs-dir>/seed<S>_over``: the same Stage I model,
clustered with ``n_clusters_over`` then merged to ``n_clusters``, and its own baseline (notebook 03).

Variants (on top of the profile; the demo's LGL is ``lgl_clean``):

- ``baseline``: no gate (phase T only); ``lgl_training``: LGL gated on the training-batch losses (the reference);
- ``lgl_clean``: gated on a clean pass (the demo); ``gmm``: the GMM gate on the clean pass;
- ``gmm_correction``: the GMM gate plus label correction of the rejected samples;
- ``over_*``: each of those on the over-clustered, merged pseudo labels.

Each finished variant appends one row to ``<runs-dir>/correction_study.jsonl`` (the test EER with
its 95 % speaker-bootstrap interval, the paired difference against ``lgl_clean`` of the same seed,
the gate evidence and the label-correction record), so an interrupted study keeps what finished
and a rerun skips it. Variants run one after another, in the order given, seed by seed: first the variants on the k-means clusters, then those over-clustered.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from seed_study import SHARED, _link_tree

from lgl_helpers.app import pipeline
from lgl_helpers.app.planning import parse_overrides
from lgl_helpers.core.bootstrap import bootstrap_metrics, paired_difference, speaker_ids
from lgl_helpers.core.metrics import read_trial_scores
from lgl_helpers.files import read_json

CORRECTION = {"confidence": 0.5, "temperature": 0.1}
OVER_FACTOR = 3  # n_clusters_over = this × n_clusters (Miara et al.: 50,000 for 7,500, about 6.7)
LGL = {
    "lgl_training": {"04_stage2_lgl.gate_losses": "training"},
    "lgl_clean": {"04_stage2_lgl.gate_losses": "clean"},
    "gmm": {"04_stage2_lgl.gate_losses": "clean", "04_stage2_lgl.gate_rule": "gmm"},
    "gmm_correction": {
        "04_stage2_lgl.gate_losses": "clean",
        "04_stage2_lgl.gate_rule": "gmm",
        "04_stage2_lgl.label_correction": CORRECTION,
    },
}
VARIANTS = ("baseline", *LGL, "over_baseline", *(f"over_{name}" for name in LGL))
# The reference of the goal and the full new recipe first: on a loaded machine the first rows are what finishes.
DEFAULT_ORDER = (
    "baseline",
    "lgl_clean",
    "gmm_correction",
    "gmm",
    "lgl_training",
    "over_baseline",
    "over_gmm_correction",
    "over_lgl_clean",
    "over_gmm",
    "over_lgl_training",
)
REFERENCE = "lgl_clean"
EXTRA: dict = {}  # --set: parameters on top of the profile for every run of the study


def _quiet(_: str) -> None:
    pass


def _finished(run_dir: Path, notebook: str) -> bool:
    path = run_dir / "pipeline.json"
    return path.is_file() and read_json(path)["notebooks"].get(notebook, {}).get("status") == "done"


def shared_run(profile: str, runs_dir: Path, seed: int, wait: bool = False) -> Path:
    """``seed<S>``: notebooks 00, 01 and 03 of the profile; a finished one is not run again, whatever
    kit version ran it (its outputs are what every variant of the seed shares). ``wait``: another
    process runs them; poll until notebook 03 has finished."""
    run_dir = runs_dir / f"seed{seed}"
    while wait and not _finished(run_dir, "03_stage2_baseline"):
        time.sleep(30)
    overrides = {**EXTRA, "seed": seed, "00_data_setup.toy_root": str(runs_dir / "toy")}
    for notebook in ("00_data_setup", "01_stage1_contrastive", "03_stage2_baseline"):
        if not _finished(run_dir, notebook):
            pipeline.run_pipeline(profile, run_dir.name, overrides, runs_dir=str(runs_dir), only=notebook, echo=_quiet)
    return run_dir


def over_run(profile: str, runs_dir: Path, seed: int, n_clusters_over: int, wait: bool = False) -> Path:
    """``seed<S>_over``: the seed's Stage I model, over-clustered and merged, and its baseline."""
    source = shared_run(profile, runs_dir, seed, wait)
    target = runs_dir / f"seed{seed}_over"
    target.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        if name != "clustering" and (source / name).exists():
            _link_tree(source / name, target / name)
    overrides = {
        **EXTRA,
        "seed": seed,
        "00_data_setup.toy_root": str(runs_dir / "toy"),
        "n_clusters_over": n_clusters_over,
    }
    pipeline.run_pipeline(profile, target.name, overrides, runs_dir=str(runs_dir), only="03", echo=_quiet)
    return target


def lgl_run(profile: str, runs_dir: Path, seed: int, variant: str, n_clusters_over: int, wait: bool = False) -> Path:
    """``seed<S>_<variant>``: notebook 04 with the variant's settings on the shared Stage I, clusters and baseline."""
    over = variant.startswith("over_")
    if over:
        source = over_run(profile, runs_dir, seed, n_clusters_over, wait)
    else:
        source = shared_run(profile, runs_dir, seed, wait)
    target = runs_dir / f"seed{seed}_{variant}"
    target.mkdir(parents=True, exist_ok=True)
    for name in (*SHARED, "stage2_baseline"):
        if (source / name).exists():  # notebook 02's clustering/ is not run: notebook 03 clusters itself
            _link_tree(source / name, target / name)
    overrides = {
        **EXTRA,
        "seed": seed,
        "00_data_setup.toy_root": str(runs_dir / "toy"),
        **LGL[variant.removeprefix("over_")],
    }
    if over:
        overrides["n_clusters_over"] = n_clusters_over
    pipeline.run_pipeline(profile, target.name, overrides, runs_dir=str(runs_dir), only="04", echo=_quiet)
    return target


def stage_dir(runs_dir: Path, seed: int, variant: str) -> Path:
    if variant == "baseline":
        return runs_dir / f"seed{seed}" / "stage2_baseline"
    if variant == "over_baseline":
        return runs_dir / f"seed{seed}_over" / "stage2_baseline"
    return runs_dir / f"seed{seed}_{variant}" / "stage2_lgl"


def _scores(folder: Path):
    trials, scores = read_trial_scores(folder / "test_scores.txt")
    return [(t.label, t.path_a, t.path_b) for t in trials], scores


def variant_row(runs_dir: Path, seed: int, variant: str) -> dict:
    """One finished variant's numbers: EER with its interval, paired differences, gate and correction evidence."""
    folder = stage_dir(runs_dir, seed, variant)
    metrics = read_json(folder / "metrics.json")
    trials, scores = _scores(folder)
    labels = np.array([t[0] for t in trials])
    speakers = speaker_ids([t[1] for t in trials]), speaker_ids([t[2] for t in trials])
    row = {
        "seed": seed,
        "variant": variant,
        **{k: v for k, v in bootstrap_metrics(scores, labels, *speakers).items() if k in ("eer", "eer_ci")},
        "epochs": metrics.get("epochs_run"),
        "best": metrics.get("best"),
        "nmi": metrics["iterations"][0]["nmi"],
        "purity": metrics["iterations"][0]["purity"],
    }
    for name, other in (("vs_lgl_clean", REFERENCE), ("vs_baseline", "baseline")):
        other_dir = stage_dir(runs_dir, seed, other)
        if other == variant or not (other_dir / "test_scores.txt").is_file():
            continue
        other_trials, other_scores = _scores(other_dir)
        if other_trials != trials:
            raise RuntimeError(f"{folder} and {other_dir} scored other trials")
        diff = paired_difference(scores, other_scores, labels, *speakers)
        row[name], row[f"{name}_ci"] = diff["eer_diff"], diff["eer_diff_ci"]
    evidence = metrics.get("gate_evidence") or []
    if evidence:
        keys = ("gate", "gate_rule", "gate_rule_reason", "fraction_kept", "kept_reliable", "dropped_reliable")
        row["gate"] = {k: evidence[0].get(k) for k in (*keys, "auc_reliable")}
    corrections = metrics.get("label_correction") or []
    if corrections:
        row["correction"] = corrections[0]
    return row


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _ci(value, ci, signed=False) -> str:
    f = "+.2f" if signed else ".2f"
    return f"{value:{f}} [{ci[0]:{f}}, {ci[1]:{f}}]"


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def print_tables(rows: list[dict]) -> None:
    print(
        "| variant | seed | NMI | test EER % [95 % CI] | − LGL-clean [95 % CI] | − baseline [95 % CI] | gate (rule) "
        "| kept % | reliable kept / dropped % | AUC | relabelled (accuracy %) | reliable before → after % |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    order = {v: i for i, v in enumerate(VARIANTS)}
    for r in sorted(rows, key=lambda r: (order[r["variant"]], r["seed"])):
        g, c = r.get("gate"), r.get("correction")
        print(
            f"| {r['variant']} | {r['seed']} | {r['nmi']:.3f} | {_ci(r['eer'], r['eer_ci'])} | "
            + (_ci(r["vs_lgl_clean"], r["vs_lgl_clean_ci"], True) if "vs_lgl_clean" in r else "–")
            + " | "
            + (_ci(r["vs_baseline"], r["vs_baseline_ci"], True) if "vs_baseline" in r else "–")
            + " | "
            + (
                "– | – | – | –"
                if g is None
                else f"{g['gate']:.3f} ({g['gate_rule']}) | {_pct(g['fraction_kept'])} | "
                f"{_pct(g['kept_reliable'])} / {_pct(g['dropped_reliable'])} | {g['auc_reliable']:.3f}"
            )
            + " | "
            + ("–" if c is None else f"{c['corrected']} ({_pct(c['corrected_accuracy'])})")
            + " | "
            + ("–" if c is None else f"{_pct(c['reliable_before'])} → {_pct(c['reliable_after'])}")
            + " |"
        )
    print("\nMeans over the seeds that finished (n = seeds):\n")
    print("| variant | n | EER % | − LGL-clean | seeds with the paired interval below 0 | − baseline |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        if not mine:
            continue
        diffs = [r for r in mine if "vs_lgl_clean" in r]
        base = [r for r in mine if "vs_baseline" in r]
        print(
            f"| {variant} | {len(mine)} | {statistics.fmean(r['eer'] for r in mine):.2f} | "
            + (f"{statistics.fmean(r['vs_lgl_clean'] for r in diffs):+.2f}" if diffs else "–")
            + f" | {sum(r['vs_lgl_clean_ci'][1] < 0 for r in diffs)} of {len(diffs)} | "
            + (f"{statistics.fmean(r['vs_baseline'] for r in base):+.2f}" if base else "–")
            + " |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="demo", help="profile name in notebooks/params/ or a YAML path")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_ORDER), choices=VARIANTS)
    parser.add_argument("--runs-dir", default="runs/correction_study")
    parser.add_argument("--n-clusters", type=int, default=64, help="the profile's n_clusters (for n_clusters_over)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter on top of the profile, as lgl-kit run",
    )
    parser.add_argument("--table-only", action="store_true", help="print the tables of the finished rows and stop")
    parser.add_argument(
        "--wait-for-shared", action="store_true", help="another process runs each seed's notebooks 00-03: wait for them"
    )
    args = parser.parse_args()
    EXTRA.update(parse_overrides(args.set))
    runs_dir = Path(args.runs_dir).resolve()
    table = runs_dir / "correction_study.jsonl"
    if not args.table_only:
        done = {(r["seed"], r["variant"]) for r in read_rows(table)}
        groups = [[v for v in args.variants if v.startswith("over_") == over] for over in (False, True)]
        todo = [(seed, variant) for group in groups for seed in args.seeds for variant in group]
        for seed, variant in todo:
            if (seed, variant) in done:
                continue
            tic = time.perf_counter()
            n_over, wait = OVER_FACTOR * args.n_clusters, args.wait_for_shared
            if variant == "baseline":
                shared_run(args.profile, runs_dir, seed, wait)
            elif variant == "over_baseline":
                over_run(args.profile, runs_dir, seed, n_over, wait)
            else:
                lgl_run(args.profile, runs_dir, seed, variant, n_over, wait)
            row = variant_row(runs_dir, seed, variant) | {"seconds": time.perf_counter() - tic}
            with table.open("a") as out:
                out.write(json.dumps(row) + "\n")
            print(f"seed {seed} {variant}: EER {row['eer']:.2f} in {row['seconds']:.0f} s", flush=True)
    # Recomputed from the run folders: a variant that finished before its reference has its paired differences now.
    print_tables([variant_row(runs_dir, r["seed"], r["variant"]) | {"seconds": r["seconds"]} for r in read_rows(table)])


if __name__ == "__main__":
    main()
