"""Notebook 02 executed headless with papermill on the tiny toy corpus; asserts on the files it writes."""

import json

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from lgl_helpers.app import pipeline, planning
from lgl_helpers.clustering.pseudo_labels import read_pseudo_labels
from lgl_helpers.clustering.quality import majority_agreement
from lgl_helpers.core import models
from lgl_helpers.corpus.lists import read_train_list
from lgl_helpers.reproducibility import seed_everything
from lgl_helpers.runs import project_root


@pytest.mark.slow
def test_notebook02_writes_pseudo_labels_quality_and_figures(tiny_corpus, tmp_path):
    papermill = pytest.importorskip("papermill")
    # An encoder initialised exactly as the notebook's untrained baseline (C=16, seed 0): both clusterings
    # must then agree, which checks that the comparison is like for like.
    seed_everything(0)
    checkpoint = models.save_encoder(tmp_path / "encoder.model", models.ECAPATDNN(16))
    train_list = tiny_corpus / "lists" / "train_list.txt"
    parameters = {
        "run_name": "nb02",
        "runs_dir": str(tmp_path / "runs"),
        "init_model": str(checkpoint),
        "train_list": str(train_list),
        "train_root": str(tiny_corpus / "train"),
        "n_clusters": 8,
        "cluster_n_iter": 10,
        "umap_sample": 30,
        "untrained_sample": -1,  # every utterance (the demo's default, 600, is more than this corpus has)
        "n_impure": 3,
        "device": "cpu",
        "seed": 0,
        "interactive": False,
    }
    papermill.execute_notebook(
        str(planning.notebook_path("02_clustering_umap")),
        str(tmp_path / "02_out.ipynb"),
        parameters=parameters,
        kernel_name=pipeline.kernel_name(),
        cwd=str(project_root()),
        progress_bar=False,
    )

    out = tmp_path / "runs" / "nb02" / "clustering"
    entries = read_train_list(train_list)
    labels = read_pseudo_labels(out / "pseudo_labels.txt", entries, n_clusters=8)
    quality = json.loads((out / "quality.json").read_text())
    assert quality["nmi"] == pytest.approx(normalized_mutual_info_score([e.speaker for e in entries], labels))
    assert 0 < quality["nmi"] <= 1 and quality["untrained_nmi"] == pytest.approx(quality["nmi"])
    assert "untrained_sample" not in quality  # untrained_sample = -1: every utterance, as before the option
    assert quality["purity"] == pytest.approx(majority_agreement(labels, [e.speaker for e in entries]).mean())
    assert quality["kmeans"]["n_iter"] == 10 and quality["checkpoint"] == str(checkpoint)
    assert np.load(out / "embeddings.npy").shape == (len(entries), 192)
    np.testing.assert_array_equal(read_pseudo_labels(out / "untrained" / "pseudo_labels.txt", entries), labels)
    for name in ("cluster_sizes", "purity_vs_size", "umap"):
        assert (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    params = json.loads((out / "clustering_params.json").read_text())["params"]
    assert params["n_clusters"] == 8 and params["interactive"] is False
