"""Label correction of rejected pseudo labels, end to end in a tiny LGL run, and the GMM gate in the engine."""

import dataclasses

import numpy as np
import pytest
import torch
from test_stage2 import _config

from lgl_helpers.core.models import ECAPATDNN, save_encoder
from lgl_helpers.training import stage2
from lgl_helpers.training.stage2.correction import (
    apply_correction,
    check_label_correction,
    correct_labels,
    correction_evidence,
    kept_centroids,
)


def _hand_made():
    """Two clusters on the unit circle's axes: 0 near (1, 0), 1 near (0, 1); sample 2 sits by cluster 1
    but is labelled 0, sample 5 lies between the clusters (no confident prediction)."""
    emb = np.array(
        [[1.0, 0.0], [0.99, 0.1], [0.1, 0.99], [0.0, 1.0], [0.1, 1.0], [0.7, 0.7]],
        dtype=np.float32,
    )
    labels = np.array([0, 0, 0, 1, 1, 1])
    keep = np.array([True, True, False, True, True, False])
    speakers = np.array(["a", "a", "b", "b", "b", "a"])
    return emb, labels, keep, speakers


def test_correction_relabels_the_confident_rejected_sample_and_leaves_the_ambiguous_one_out():
    emb, labels, keep, speakers = _hand_made()
    correction = correct_labels(emb, labels, keep, 2, confidence=0.5, temperature=0.1)
    # Sample 2 is confidently cluster 1 (its cosine to cluster 1 is ~0.99 vs ~0.18: softmax at T=0.1 ~ 1);
    # sample 5 is equally far from both (p ~ 0.5 each, just below or at 0.5 depending on rounding).
    assert 2 in correction["index"] and correction["new_label"][list(correction["index"]).index(2)] == 1
    strict = correct_labels(emb, labels, keep, 2, confidence=0.9, temperature=0.1)
    np.testing.assert_array_equal(strict["index"], [2])
    np.testing.assert_array_equal(strict["old_label"], [0])
    np.testing.assert_array_equal(strict["new_label"], [1])
    assert strict["confidence"][0] > 0.99
    new_labels, new_keep = apply_correction(labels, keep, strict)
    np.testing.assert_array_equal(new_labels, [0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(new_keep, [True, True, True, True, True, False])
    evidence = correction_evidence(labels, keep, strict, speakers)
    # Original majorities: cluster 0 -> "a" (2 of 3), cluster 1 -> "b" (2 of 3). Kept: 0,1 (a in 0), 3,4 (b in 1).
    assert evidence == {
        "corrected": 1,
        "changed": 1,
        "kept": 4,
        "corrected_accuracy": 1.0,
        "reliable_before": 1.0,
        "reliable_after": 1.0,
    }


def test_a_high_temperature_makes_no_prediction_confident():
    emb, labels, keep, _ = _hand_made()
    assert correct_labels(emb, labels, keep, 2, confidence=0.9, temperature=10.0)["index"].size == 0


def test_kept_centroids_and_the_head_predictor():
    emb, labels, keep, _ = _hand_made()
    centroids = kept_centroids(emb, labels, keep, 3)
    np.testing.assert_allclose(np.linalg.norm(centroids[:2], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(centroids[2], 0.0)  # no kept sample: no prototype, never predicted
    head = np.array([[0.0, 1.0], [1.0, 0.0]])  # the head's rows swapped: predictions follow the head
    by_head = correct_labels(emb, labels, keep, 2, confidence=0.9, temperature=0.1, predictor="head", head_weight=head)
    np.testing.assert_array_equal(by_head["new_label"], [0])
    with pytest.raises(ValueError, match="head_weight"):
        correct_labels(emb, labels, keep, 2, confidence=0.9, temperature=0.1, predictor="head")


@pytest.mark.parametrize(
    "value",
    [
        {"confidence": 0},
        {"confidence": 1.5, "temperature": 0.1},
        {"confidence": 0.5, "temperature": -1},
        0.5,
        {"confidence": 0.5, "temperature": 0.1, "predictor": "knn"},
        {"confidence": 0.5, "temperature": 0.1, "x": 1},
    ],
)
def test_label_correction_settings_are_checked(value):
    with pytest.raises(ValueError, match="label_correction"):
        check_label_correction(value)


@pytest.fixture(scope="module")
def stage1_model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("stage1") / "best.model"
    save_encoder(path, ECAPATDNN(16).eval())
    return path


def test_lgl_config_needs_the_clean_pass_for_correction(tiny_corpus, tmp_path, stage1_model):
    with pytest.raises(ValueError, match=r"label_correction needs LGLConfig.gate_losses='clean'"):
        _config(
            tiny_corpus, tmp_path, stage1_model, label_correction={"confidence": 0.5, "temperature": 0.1}
        ).validate()
    with pytest.raises(ValueError, match="gate_rule"):
        _config(tiny_corpus, tmp_path, stage1_model, gate_rule="otsu").validate()


@pytest.mark.slow
def test_lgl_run_with_gmm_gate_and_correction_trains_on_the_relabelled_samples_and_refuses_changes(
    tiny_corpus, tmp_path, stage1_model
):
    correction = {"confidence": 0.05, "temperature": 0.1}
    config = _config(
        tiny_corpus,
        tmp_path,
        stage1_model,
        gates="auto",
        gate_rule="gmm",
        gate_losses="clean",
        label_correction=correction,
        max_iterations=1,
        max_epochs_per_phase=1,
        keep_every=1,
    )
    config.validate()
    result = stage2.run_stage2(config)
    assert result["status"] == "done"
    stage_dir = tmp_path / "t" / "stage2_lgl"
    item = result["state"]["iterations"][0]
    evidence = item["gate_evidence"]
    assert evidence["gate_rule"] in ("gmm", "valley", "otsu", "constant")
    assert (evidence["gate_rule"] == "gmm") == (evidence["gate_rule_reason"] is None)
    record = item["label_correction"]
    assert record["file"] == "iter_01/T/corrected_labels.npz" and record["predictor"] == "kept_centroids"
    assert result["label_correction"] == [record]
    saved = stage2.read_epoch_losses(stage_dir / record["file"])
    clean = stage2.read_epoch_losses(stage_dir / item["phases"]["T"]["gate_losses"])
    kept = clean["per_sample_loss"] <= np.float32(item["gate"])
    assert record["corrected"] == saved["index"].size and not kept[saved["index"]].any()
    # Phase L trains on the kept samples and the relabelled ones.
    trained = kept.copy()
    trained[saved["index"]] = True
    (l_record,) = [r for r in result["state"]["history"] if r["phase"] == "L"]
    losses = stage2.read_epoch_losses(stage_dir / l_record["losses"])
    np.testing.assert_array_equal(losses["selected"], trained[losses["index"]])
    # The correction and the gate rule define the run: a resume with others is refused.
    for change, message in (
        ({"label_correction": {"confidence": 0.9, "temperature": 0.1}}, "label_correction"),
        ({"label_correction": None}, "label_correction"),
        ({"gate_rule": "valley"}, "gate_rule: 'gmm' → 'valley'"),
        ({"n_clusters_over": config.n_clusters + 2}, "n_clusters_over: 0 →"),
    ):
        other = dataclasses.replace(config, **change)
        other.validate()
        with pytest.raises(ValueError, match=message):
            stage2.Engine(other, stage2.prepare_data(other), None).load_or_start()
