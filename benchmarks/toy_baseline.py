"""Difficulty of the toy corpus: generation time and the EER of non-learned and simple learned baselines.

    python benchmarks/toy_baseline.py                 # generate the default corpus in a temp folder
    python benchmarks/toy_baseline.py --root runs/toy # measure an existing toy corpus

Systems, all scored by cosine similarity on the corpus' trials:
- ``mfcc_cosine``: mean and standard deviation over time of MFCCs 1-19 (c0 is only the level),
  each dimension standardised over the test files. Non-learned: the number data_lists/README.md quotes.
- ``mfcc_lda``: the same statistics projected by an LDA fitted on the *training* split with its speaker
  labels: a learned model reaching far below the cosine baseline shows the speaker traits are learnable.
- ``oracle_traits``: the generator's true per-speaker trait vectors (sanity check, near 0 %).
EERs are also split by target type (same-session / cross-session targets against all non-targets),
which shows how much the session channel misleads each system.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from lgl_helpers.core.metrics import compute_eer
from lgl_helpers.corpus.lists import read_train_list, read_trials
from lgl_helpers.corpus.toy import ToyConfig, generate_toy_corpus, read_toy_manifest, speaker_traits, toy_paths

MFCC = torchaudio.transforms.MFCC(
    sample_rate=16000,
    n_mfcc=20,
    melkwargs=dict(n_fft=512, win_length=400, hop_length=160, f_min=20.0, f_max=7600.0, n_mels=40),
)


def mfcc_stats(path: Path) -> np.ndarray:
    """(38,) mean and std over time of MFCCs 1-19 of one wav."""
    wave, _ = soundfile.read(str(path), dtype="float32")
    with torch.no_grad():
        mfcc = MFCC(torch.from_numpy(wave))[1:]  # (19, frames)
    return torch.cat([mfcc.mean(dim=1), mfcc.std(dim=1)]).numpy().astype(np.float64)


def cosine_scores(emb: dict[str, np.ndarray], trials) -> np.ndarray:
    a = np.stack([emb[t.path_a] for t in trials])
    b = np.stack([emb[t.path_b] for t in trials])
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def eer_table(scores: np.ndarray, trials) -> dict[str, float]:
    labels = np.array([t.label for t in trials])
    same = np.array([t.path_a.split("/")[1] == t.path_b.split("/")[1] for t in trials])
    non = labels == 0
    return {
        "all": compute_eer(scores, labels),
        "same-session targets": compute_eer(scores[non | (same & (labels == 1))], labels[non | (same & (labels == 1))]),
        "cross-session targets": compute_eer(
            scores[non | (~same & (labels == 1))], labels[non | (~same & (labels == 1))]
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="an existing toy corpus (default: generate one in a temp folder)")
    parser.add_argument("--preset", default="default", choices=["default", "tiny"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)  # MFCC of a few seconds is too small to gain from threads

    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        if args.root:
            root = Path(args.root)
        else:
            root = Path(tmp) / "toy"
            summary = generate_toy_corpus(
                root, ToyConfig.preset(args.preset, seed=args.seed), workers=args.workers, show_progress=False
            )
            rows.append(
                (
                    "generation",
                    f"{summary['seconds']:.1f} s",
                    f"{summary['n_train_utterances']} train utts, {summary['n_test_files']} test files, "
                    f"{summary['n_trials']} trials, {summary['train_hours'] * 60:.1f} min train audio",
                )
            )
        config = read_toy_manifest(root)["config"]
        paths = toy_paths(root)
        trials = read_trials(paths["trials"])
        train = read_train_list(paths["train_list"])

        started = time.perf_counter()
        test_files = sorted({p for t in trials for p in (t.path_a, t.path_b)})
        test_stats = {p: mfcc_stats(paths["test_root"] / p) for p in test_files}
        train_stats = np.stack([mfcc_stats(paths["train_root"] / e.path) for e in train])
        rows.append(
            ("mfcc features", f"{time.perf_counter() - started:.1f} s", f"{len(test_files) + len(train)} files")
        )

        matrix = np.stack([test_stats[p] for p in test_files])
        mean, std = matrix.mean(axis=0), matrix.std(axis=0) + 1e-9
        standardised = {p: (v - mean) / std for p, v in test_stats.items()}
        systems = {"mfcc_cosine": cosine_scores(standardised, trials)}

        lda = LinearDiscriminantAnalysis().fit(train_stats, [e.speaker for e in train])
        projected = {p: lda.transform(v[None])[0] for p, v in test_stats.items()}
        systems["mfcc_lda (train labels)"] = cosine_scores(projected, trials)

        traits = {p: speaker_traits(config["seed"], "test", int(p[2:7]) - 10001).vector() for p in test_files}
        systems["oracle_traits"] = cosine_scores(traits, trials)

    print(f"toy corpus: {root if args.root else args.preset + ' preset, seed ' + str(args.seed)}")
    print(f"{'step':<26}{'time':>10}  notes")
    for name, value, note in rows:
        print(f"{name:<26}{value:>10}  {note}")
    print()
    print(f"{'system':<26}{'EER all':>10}{'same-sess':>12}{'cross-sess':>12}   (%)")
    for name, scores in systems.items():
        table = eer_table(scores, trials)
        print(
            f"{name:<26}{table['all']:>10.2f}{table['same-session targets']:>12.2f}"
            f"{table['cross-session targets']:>12.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
