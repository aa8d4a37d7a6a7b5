"""Which predictor can correct rejected pseudo labels? An offline look at a finished baseline's phase T.

    python benchmarks/correction_predictors.py runs/correction_study/seed0

For the run's Stage II baseline (iteration 1), each of its kept phase-T checkpoints (the best epoch,
the one LGL's phase L starts from, and the last) scores every training utterance once, clean and
whole (the ``gate_losses="clean"`` pass); the valley and the GMM gates are placed on those losses;
then, per predictor (``head``: the checkpoint's classifier rows; ``kept_centroids``: the mean clean
embedding of each cluster's kept samples), temperature and confidence, the table gives how many
rejected samples would be relabelled, how many of them to a reliable label (their cluster's
majority true speaker: a diagnosis, never used for training) and the reliable share of phase L's
training set before and after. Nothing is trained.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lgl_helpers.clustering.pseudo_labels import read_pseudo_labels
from lgl_helpers.core.audio import SAMPLE_RATE
from lgl_helpers.core.gate import gmm_gate, valley_gate
from lgl_helpers.corpus.lists import read_train_list
from lgl_helpers.files import read_json
from lgl_helpers.training.stage2.clean_losses import clean_pass
from lgl_helpers.training.stage2.correction import correct_labels, correction_evidence
from lgl_helpers.training.state import encoder_and_head, load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run folder with a finished stage2_baseline")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.1, 0.05])
    parser.add_argument("--confidences", type=float, nargs="+", default=[0.5, 0.8])
    args = parser.parse_args()
    run_dir = Path(args.run_dir)
    stage_dir = run_dir / "stage2_baseline"
    state = read_json(stage_dir / "state.json")
    data = read_json(run_dir / "data.json")
    entries = read_train_list(data["train_list"])
    speakers = np.array([e.speaker for e in entries])
    n_clusters = int(state["params"]["n_clusters"])
    labels = read_pseudo_labels(stage_dir / state["iterations"][0]["pseudo_labels"], entries, n_clusters)
    t_phase = state["iterations"][0]["phases"]["T"]
    root = Path(data["train_root"])
    print(
        "| T checkpoint | gate rule | gate | kept % | predictor | T | confidence | relabelled (changed) "
        "| to a reliable label % | reliable before → after % |"
    )
    print("| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for name in dict.fromkeys([t_phase["best_model"], t_phase["last_model"]]):
        encoder, head = encoder_and_head(load_checkpoint(stage_dir / name), n_clusters)
        losses, emb = clean_pass(
            encoder,
            head,
            [root / e.path for e in entries],
            labels,
            lengths=[round(e.duration * SAMPLE_RATE) for e in entries],
            device="cpu",
        )
        gmm = gmm_gate(losses)
        for rule, gate in (("valley", valley_gate(losses)[0]), (f"gmm ({gmm.rule})", gmm.gate)):
            keep = losses <= np.float32(gate)
            for predictor in ("head", "kept_centroids"):
                for temperature in args.temperatures:
                    for confidence in args.confidences:
                        correction = correct_labels(
                            emb,
                            labels,
                            keep,
                            n_clusters,
                            confidence=confidence,
                            temperature=temperature,
                            predictor=predictor,
                            head_weight=head.weight.detach().numpy(),
                        )
                        e = correction_evidence(labels, keep, correction, speakers)
                        acc = "–" if e["corrected_accuracy"] is None else f"{100 * e['corrected_accuracy']:.1f}"
                        print(
                            f"| {name} | {rule} | {gate:.3f} | {100 * keep.mean():.1f} | {predictor} | {temperature:g} "
                            f"| {confidence:g} | {e['corrected']} ({e['changed']}) | {acc} | "
                            f"{100 * e['reliable_before']:.1f} → {100 * e['reliable_after']:.1f} |",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
