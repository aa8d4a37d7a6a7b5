"""The ``full`` profile's data path at VoxCeleb size on a CPU, without audio: each step's time and peak memory.

Synthetic inputs stand in for the corpus: a 1,092,009-line training list of 5,994 speakers (VoxCeleb2
dev's size), 192-d unit embeddings of them drawn around one centre per speaker, and Vox1-O / -E / -H
sized trial lists (37,611 / 579,818 / 550,894 trials) over 1,251 test speakers. Each step then runs the
kit's own code on them, in a process of its own so that its peak resident memory (``ru_maxrss``) is
its own:

- ``train_list``: read the training list, its counts, the crop checks of Stage I and II, and
  ``check_list``'s per-line checks (the wav header reads replaced by a fixed header: their cost is
  file-system time, one read per file, measured by ``lgl-kit lists check`` on the real corpus);
- ``sampler``: one epoch's shuffled order and batches for Stage I (300) and Stage II (400), and the
  length-bucketed batches of a clustering pass;
- ``pseudo_labels``: write and read back a pseudo-label file of every utterance;
- ``kmeans``: faiss k-means of every embedding to 6,000 clusters with the profile's settings (25
  iterations, at most 256 training points per centroid, seed 1234, CPU index) and the assignment;
- ``quality``: the cluster quality figures of those labels (NMI, purity, merges and splits, the most
  impure clusters);
- ``merge``: the over-clustering merge of 50,000 synthetic centroids to 7,500;
- ``scoring``: every list scored raw, mean-subtracted and AS-norm (cohort 20,000, top 300) for three
  systems, score files and ``metrics.json`` written as a stage writes them;
- ``report``: ``lgl-kit report``'s work on that run folder (speaker bootstrap, 1,000 resamples, of
  every system, list and variant, paired differences, figures).

Results go to ``OUT/steps/<step>.json`` as each step ends and the table to ``OUT/scale_table.md``;
a step already measured at the same scale is not run again (``--force`` reruns it). ``--scale 0.01``
shrinks every count (k too) for a quick pass.

Usage:
    nice -n 10 python benchmarks/scale_sim.py runs/scale_sim [--scale 1.0] [--steps kmeans quality] [--force]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# VoxCeleb sizes (docs/method.md)
N_TRAIN = 1_092_009
N_TRAIN_SPEAKERS = 5_994
N_TEST_SPEAKERS = 1_251
N_TEST_FILES = 153_516  # VoxCeleb1 dev + test: Vox1-E and -H name dev files too
TRIALS = {"Vox1-O": 37_611, "Vox1-E": 579_818, "Vox1-H": 550_894}
VOX1_O_SPEAKERS = 40
N_CLUSTERS = 6_000
MERGE = (50_000, 7_500)
DIM = 192
SYSTEMS = (("stage1", 2.0), ("stage2_baseline", 1.65), ("stage2_lgl", 1.55))  # folder, noise: EER about 7.7, 2, 1.5 %
IMPORTS = ("faiss", "torch", "lgl_helpers.core.data", "lgl_helpers.clustering.cluster", "lgl_helpers.app.report")
STEPS = ("train_list", "sampler", "pseudo_labels", "kmeans", "quality", "merge", "scoring", "report")


def _scaled(n: int, scale: float, minimum: int = 2) -> int:
    return max(minimum, round(n * scale))


class Sizes:
    def __init__(self, scale: float):
        self.scale = scale
        self.n_train = _scaled(N_TRAIN, scale, 1000)
        self.n_speakers = min(N_TRAIN_SPEAKERS, _scaled(N_TRAIN_SPEAKERS, scale, 20))
        self.n_test_files = _scaled(N_TEST_FILES, scale, 200)
        self.n_test_speakers = min(N_TEST_SPEAKERS, _scaled(N_TEST_SPEAKERS, scale, 20))
        self.trials = {name: _scaled(n, scale, 200) for name, n in TRIALS.items()}
        self.n_clusters = _scaled(N_CLUSTERS, scale)
        self.merge = tuple(_scaled(k, scale) for k in MERGE)
        self.cohort = min(20_000, self.n_train // 2)
        self.top_n = min(300, self.cohort // 2)


# ----------------------------------------------------------------------------------------------
# Synthetic inputs (written once per scale under OUT/data)
# ----------------------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _speaker_emb(rng, speakers: np.ndarray, n_speakers: int, noise: float, chunk: int = 200_000) -> np.ndarray:
    """(N, DIM) float32 unit rows: a unit centre per speaker plus isotropic noise of ``noise`` per dimension × √DIM."""
    centres = _unit(rng.standard_normal((n_speakers, DIM), dtype=np.float32))
    emb = np.empty((speakers.size, DIM), dtype=np.float32)
    for start in range(0, speakers.size, chunk):
        part = speakers[start : start + chunk]
        noise_part = rng.standard_normal((part.size, DIM), dtype=np.float32) * (noise / np.sqrt(DIM))
        emb[start : start + chunk] = _unit(centres[part] + noise_part)
    return emb


def _train_inputs(data: Path, sizes: Sizes) -> None:
    """train_list.txt, speakers.npy (N,), emb.npy (N, DIM)."""
    if (data / "emb.npy").is_file():
        return
    rng = np.random.default_rng(0)
    speakers = np.sort(rng.integers(0, sizes.n_speakers, sizes.n_train))
    # VoxCeleb2 dev utterances: at least 4 s, mean about 7.8 s, a long tail
    durations = np.clip(4.0 + rng.lognormal(1.0, 0.9, sizes.n_train), 4.0, 200.0)
    lines = [
        f"id{s:05d} id{s:05d}/v{i % 97:07d}/{i:07d}.wav {d:.3f}\n"
        for i, (s, d) in enumerate(zip(speakers.tolist(), durations.tolist()))
    ]
    (data / "train_list.txt").write_text("".join(lines))
    np.save(data / "speakers.npy", speakers)
    np.save(data / "emb.npy", _speaker_emb(rng, speakers, sizes.n_speakers, 0.9))


def _trial_inputs(data: Path, sizes: Sizes) -> None:
    """test_keys.txt, test_speakers.npy and one trial list per Vox1 list (half target trials)."""
    if (data / "test_speakers.npy").is_file():
        return
    rng = np.random.default_rng(1)
    speakers = np.sort(rng.integers(0, sizes.n_test_speakers, sizes.n_test_files))
    keys = [f"id1{s:04d}/v{i % 31:07d}/{i:07d}.wav" for i, s in enumerate(speakers.tolist())]
    (data / "test_keys.txt").write_text("\n".join(keys) + "\n")
    np.save(data / "test_speakers.npy", speakers)
    by_speaker = [np.flatnonzero(speakers == s) for s in range(sizes.n_test_speakers)]
    for name, n_trials in sizes.trials.items():
        pool = range(min(VOX1_O_SPEAKERS, sizes.n_test_speakers)) if name == "Vox1-O" else range(sizes.n_test_speakers)
        pool = np.array([s for s in pool if by_speaker[s].size >= 2])
        lines = []
        for i in range(n_trials):
            spk_a = pool[rng.integers(pool.size)]
            if i % 2 == 0:
                a, b = rng.choice(by_speaker[spk_a], 2, replace=False)
            else:
                spk_b = pool[rng.integers(pool.size - 1)]
                spk_b = spk_b if spk_b != spk_a else pool[-1]
                a, b = rng.choice(by_speaker[spk_a]), rng.choice(by_speaker[spk_b])
            lines.append(f"{1 if i % 2 == 0 else 0} {keys[a]} {keys[b]}\n")
        (data / f"{name}.txt").write_text("".join(lines))


# ----------------------------------------------------------------------------------------------
# Steps: each returns a dict of what it measured (sizes, counts); the runner adds time and memory
# ----------------------------------------------------------------------------------------------


def step_train_list(data: Path, sizes: Sizes) -> dict:
    from lgl_helpers.core import audio
    from lgl_helpers.core import data as kit_data
    from lgl_helpers.core.augment import segment_samples
    from lgl_helpers.corpus.lists import check as list_check
    from lgl_helpers.corpus.lists import read_train_list, train_list_counts

    entries = read_train_list(data / "train_list.txt")
    counts = train_list_counts(entries)
    kit_data.check_crop(entries, segment_samples(180), 2)
    kit_data.check_crop(entries, segment_samples(300), 1)
    listed = {e.path: e.duration for e in entries}
    del entries

    root = data / "train"

    def fixed_header(path):  # the header the list names, without a file system
        return audio.WavInfo(
            round(listed[Path(path).relative_to(root).as_posix()] * audio.SAMPLE_RATE), audio.SAMPLE_RATE, 1
        )

    root.mkdir(exist_ok=True)
    list_check.wav_info = fixed_header
    checked = list_check.check_list(data / "train_list.txt", root, "train", show_progress=False)
    return {"lines": counts["lines"], "speakers": counts["speakers"], "hours": counts["hours"], "check": checked}


def step_sampler(data: Path, sizes: Sizes) -> dict:
    from torch.utils.data import BatchSampler

    from lgl_helpers.core.data import EpochSampler, Stage1Dataset, Stage2Dataset
    from lgl_helpers.core.embed import length_batches
    from lgl_helpers.corpus.lists import read_train_list

    entries = read_train_list(data / "train_list.txt")
    out = {}
    labels = np.zeros(len(entries), dtype=np.int64)
    for stage, dataset, batch in (
        ("stage1", Stage1Dataset(entries, data, 180, check_files=False), 300),
        ("stage2", Stage2Dataset(entries, data, labels, 300, check_files=False), 400),
    ):
        sampler = EpochSampler(len(dataset), seed=0, global_batch=batch)
        sampler.set_epoch(3)
        batches = sum(1 for _ in BatchSampler(sampler, batch, drop_last=True))
        out[f"{stage}_batches"] = batches
    lengths = [round(e.duration * 16000) for e in entries]
    out["clustering_batches"] = len(length_batches(lengths, 240 * 16000))
    return out


def step_pseudo_labels(data: Path, sizes: Sizes) -> dict:
    from lgl_helpers.clustering.pseudo_labels import read_pseudo_labels, write_pseudo_labels
    from lgl_helpers.corpus.lists import read_train_list

    entries = read_train_list(data / "train_list.txt")
    labels = np.random.default_rng(2).integers(0, sizes.n_clusters, len(entries))
    path = write_pseudo_labels(data / "pseudo_labels.txt", entries, labels)
    back = read_pseudo_labels(path, entries, sizes.n_clusters)
    if not np.array_equal(back, labels):
        raise AssertionError("pseudo labels read back differ from those written")
    return {"utterances": len(entries), "file_mb": round(path.stat().st_size / 2**20, 1)}


def step_kmeans(data: Path, sizes: Sizes) -> dict:
    import faiss

    from lgl_helpers.clustering.kmeans import kmeans_pseudo_labels

    emb = np.load(data / "emb.npy")
    labels, centroids = kmeans_pseudo_labels(
        emb, sizes.n_clusters, n_iter=25, seed=1234, max_points_per_centroid=256, use_gpu=False
    )
    np.save(data / "kmeans_labels.npy", labels)
    train_points = min(emb.shape[0], sizes.n_clusters * 256)
    return {
        "points": emb.shape[0],
        "k": sizes.n_clusters,
        "train_points": train_points,
        # the distance products of 25 iterations and the final assignment: what k-means costs
        "gmac": round((25 * train_points + emb.shape[0]) * sizes.n_clusters * DIM / 1e9, 1),
        "threads": faiss.omp_get_max_threads(),
        "non_empty": int(np.unique(labels).size),
    }


def _planted_labels(data: Path, sizes: Sizes) -> np.ndarray:
    """(N,) labels in [0, n_clusters) shaped like a clustering's: each speaker's utterances in one of its
    clusters (speakers outnumber the clusters at small scales), 10 % of them in a random cluster."""
    rng = np.random.default_rng(4)
    speakers = np.load(data / "speakers.npy")
    labels = speakers % sizes.n_clusters
    stray = rng.random(labels.size) < 0.1
    labels[stray] = rng.integers(0, sizes.n_clusters, int(stray.sum()))
    return labels


def step_quality(data: Path, sizes: Sizes) -> dict:
    from lgl_helpers.clustering.quality import clustering_quality, most_impure_clusters

    path = data / "kmeans_labels.npy"
    # The figures cost the same whatever the labels: k-means's where this scale has them, else planted ones
    labels, source = (np.load(path), "k-means") if path.is_file() else (_planted_labels(data, sizes), "planted")
    speakers = np.array([f"id{s:05d}" for s in np.load(data / "speakers.npy").tolist()])
    quality = clustering_quality(labels, speakers, sizes.n_clusters)
    impure = most_impure_clusters(labels, speakers, 10)
    return {
        "labels": source,
        "nmi": round(quality["nmi"], 4),
        "purity": round(quality["purity"], 4),
        "most_impure": len(impure),
    }


def step_merge(data: Path, sizes: Sizes) -> dict:
    """The over-clustering merge at VoxCeleb's size: 50,000 fine centroids (k-means of the full set to
    50,000 is a GPU job) around 7,500 planted directions, merged to 7,500 by average linkage on the
    k-NN graph (``lgl_helpers.clustering.merge``); the planted directions measure the merge."""
    from sklearn.metrics import adjusted_rand_score

    from lgl_helpers.clustering.merge import merge_centroids

    n_fine, n_target = sizes.merge
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(n_target, 192))
    truth = np.concatenate([np.arange(n_target), rng.integers(0, n_target, n_fine - n_target)])
    fine = directions[truth] + 0.5 * rng.normal(size=(n_fine, 192)) / np.sqrt(192)
    fine = (fine / np.linalg.norm(fine, axis=1, keepdims=True)).astype(np.float32)
    merged = merge_centroids(fine, n_target)
    return {
        "from": n_fine,
        "to": n_target,
        "non_empty": int(np.unique(merged).size),
        "ari_to_planted": round(float(adjusted_rand_score(truth, merged)), 4),
    }


def _run_dir(data: Path) -> Path:
    return data / "runs" / "scale"


def step_scoring(data: Path, sizes: Sizes) -> dict:
    from lgl_helpers.core import evaluation
    from lgl_helpers.core.metrics import TEST_SCORES, write_trial_scores
    from lgl_helpers.corpus.lists import read_trials
    from lgl_helpers.files import write_json
    from lgl_helpers.runs import relative_to_run

    keys = (data / "test_keys.txt").read_text().split()
    test_speakers = np.load(data / "test_speakers.npy")
    train_emb = np.load(data / "emb.npy", mmap_mode="r")
    cohort_index = np.sort(np.random.default_rng(3).choice(train_emb.shape[0], sizes.cohort, replace=False))
    cohort_emb = np.ascontiguousarray(train_emb[cohort_index])
    cohort = evaluation.Cohort("train", [Path(str(i)) for i in cohort_index], sizes.top_n, None)
    lists = {
        name: evaluation.TrialList(name, data / f"{name}.txt", read_trials(data / f"{name}.txt")) for name in TRIALS
    }
    run_dir = _run_dir(data)
    for number, (folder, noise) in enumerate(SYSTEMS):
        rng = np.random.default_rng(10 + number)
        emb = _speaker_emb(rng, test_speakers, sizes.n_test_speakers, noise)
        scored = evaluation.score_lists(emb, keys, lists, cohort_emb, cohort)
        stage_dir = run_dir / folder
        records = {}
        for name, variants in scored.items():
            labels = np.array([t.label for t in lists[name].trials])
            files, metrics = {}, {}
            for variant, scores in variants.items():
                path = (
                    stage_dir / TEST_SCORES
                    if (name, variant) == ("Vox1-O", "raw")
                    else stage_dir / "eval" / name / f"scores_{variant}.txt"
                )
                write_trial_scores(path, lists[name].trials, scores)
                # stored as a stage stores them: relative to the run folder
                files[variant] = relative_to_run(path, run_dir)
                metrics[variant] = evaluation._metrics(scores, labels)
            records[name] = {
                "trials": relative_to_run(lists[name].path, run_dir),
                "n_trials": labels.size,
                "scores": files,
                "metrics": metrics,
            }
        test = records["Vox1-O"]["metrics"]["raw"]
        metrics = {**test, "test_scores": TEST_SCORES, "eval": {"lists": records, "score_norm": None}}
        write_json(stage_dir / "metrics.json", metrics)
    return {"systems": len(SYSTEMS), "trials": sum(sizes.trials.values()), "cohort": sizes.cohort}


def step_report(data: Path, sizes: Sizes) -> dict:
    from lgl_helpers.app.report import write_report

    run_dir = _run_dir(data)
    if not (run_dir / "stage2_lgl" / "metrics.json").is_file():
        raise FileNotFoundError(f"{run_dir}: run the scoring step first")
    report, _ = write_report(run_dir, lists=list(TRIALS))
    lgl = report["eval"]["results"]["lgl"]["Vox1-O"]["raw"]
    return {"lgl_vox1o_eer": round(lgl["eer"], 3), "eer_ci": [round(x, 3) for x in lgl["eer_ci"]]}


# ----------------------------------------------------------------------------------------------
# Runner
# ----------------------------------------------------------------------------------------------


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_s() -> float:
    """CPU seconds of this process (every thread): on a shared machine a steadier measure than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_one(out: Path, name: str, scale: float) -> None:
    """Run one step in this process and write OUT/steps/<name>.json (time, peak memory, what it found)."""
    sizes = Sizes(scale)
    data = out / f"data_{scale:g}"
    data.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    _train_inputs(data, sizes)
    _trial_inputs(data, sizes)
    synth_s = time.perf_counter() - start
    for module in IMPORTS:  # importing torch and the rest is not the step's cost
        importlib.import_module(module)

    before = _peak_mib()
    cpu_before = _cpu_s()
    start = time.perf_counter()
    record = {"step": name, "scale": scale}
    try:
        record["result"] = globals()[f"step_{name}"](data, sizes)
        record["status"] = "skipped" if "skipped" in record["result"] else "ok"
    except Exception as error:  # one step's failure is recorded; the others still run
        record["status"] = "failed"
        record["error"] = f"{type(error).__name__}: {error}"
    record["seconds"] = round(time.perf_counter() - start, 2)
    record["cpu_seconds"] = round(_cpu_s() - cpu_before, 2)
    record["peak_rss_mib"] = round(_peak_mib(), 1)
    record["rss_before_mib"] = round(before, 1)
    record["synthesis_seconds"] = round(synth_s, 2)
    (out / "steps").mkdir(parents=True, exist_ok=True)
    (out / "steps" / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")


def table(out: Path) -> str:
    rows = [
        "| step | scale | status | wall s | CPU s | peak RSS (GiB) | what |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for name in STEPS:
        path = out / "steps" / f"{name}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        what = r.get("error") or json.dumps(r.get("result", {}))
        rows.append(
            f"| {name} | {r['scale']:g} | {r['status']} | {r['seconds']:.1f} | {r.get('cpu_seconds', float('nan')):.1f} | "
            f"{r['peak_rss_mib'] / 1024:.2f} | {what} |"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder for the synthetic inputs, steps/*.json and scale_table.md")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of VoxCeleb's counts (1.0 = full size)")
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    ap.add_argument("--force", action="store_true", help="rerun steps already measured at this scale")
    ap.add_argument("--one-step", choices=STEPS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if not 0 < a.scale <= 1:
        ap.error(f"--scale={a.scale} must be in (0, 1]")
    if a.one_step:
        run_one(a.out, a.one_step, a.scale)
        return
    for name in a.steps:
        path = a.out / "steps" / f"{name}.json"
        if not a.force and path.is_file() and json.loads(path.read_text())["scale"] == a.scale:
            continue
        print(f"[scale_sim] {name} at scale {a.scale:g} ...", flush=True)
        subprocess.run([sys.executable, __file__, str(a.out), "--scale", str(a.scale), "--one-step", name], check=False)
        (a.out / "scale_table.md").write_text(table(a.out))
        print(table(a.out), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    main()
