"""Every stage refuses bad input before any compute: a stereo file in an overridden list (file:line), a
batch larger than the list, a crop longer than every file. A model or clustering started before the
refusal fails these tests."""

import re
import shutil

import numpy as np
import pytest
import soundfile
from corpus_params import tiny_data_params

from lgl_helpers.clustering import cluster
from lgl_helpers.core.data import CropError
from lgl_helpers.corpus.lists import ListCheckError
from lgl_helpers.training import stage1, stage2

STEREO = "id99999/s1/00001.wav"


def _forbidden(*args, **kwargs):
    raise AssertionError("compute started before the inputs were validated")


@pytest.fixture
def stereo_list(tiny_corpus, tmp_path):
    """A copy of the tiny training audio with one stereo file, listed at line 4 of a new training list."""
    root = tmp_path / "train"
    shutil.copytree(tiny_corpus / "train", root)
    (root / STEREO).parent.mkdir(parents=True)
    soundfile.write(root / STEREO, np.zeros((24000, 2), dtype=np.float32), 16000)
    lines = (tiny_corpus / "lists" / "train_list.txt").read_text().splitlines()
    listed = tmp_path / "train_list.txt"
    listed.write_text("\n".join(lines[:3] + [f"id99999 {STEREO} 1.500"] + lines[3:]) + "\n")
    return listed, root


def _stage1_config(corpus, runs_dir, **overrides):
    params = dict(
        run_name="t",
        runs_dir=str(runs_dir),
        **tiny_data_params(corpus, augment=False),
        channels=16,
        frames=30,
        batch_size=8,
        epochs=1,
        workers=0,
        device="cpu",
        interactive=False,
    )
    params.update(overrides)
    return stage1.Stage1Config(**params)


def _stage2_config(corpus, runs_dir, **overrides):
    init_model = runs_dir / "stage1.model"
    init_model.parent.mkdir(parents=True, exist_ok=True)
    init_model.write_bytes(b"never loaded: the inputs are refused first")
    params = dict(
        run_name="t",
        runs_dir=str(runs_dir),
        init_model=str(init_model),
        **tiny_data_params(corpus, augment=False),
        n_clusters=8,
        frames=40,
        batch_size=8,
        max_iterations=1,
        workers=0,
        device="cpu",
        interactive=False,
    )
    params.update(overrides)
    return stage2.LGLConfig(**params)


def test_stage1_refuses_a_stereo_file_of_an_overridden_list_before_building_a_model(
    tiny_corpus, tmp_path, stereo_list, monkeypatch
):
    listed, root = stereo_list
    monkeypatch.setattr(stage1.trainer, "ECAPATDNN", _forbidden)
    config = _stage1_config(tiny_corpus, tmp_path / "runs", train_list=str(listed), train_root=str(root))
    with pytest.raises(ListCheckError, match=rf"{re.escape(str(listed))}:4: .*{STEREO}: has 2 channels, expected mono"):
        stage1.train_stage1(config)
    assert not (stage1.stage_folder(config) / "stage1_params.json").exists()


def test_stage1_refuses_a_batch_larger_than_the_list_before_building_a_model(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(stage1.trainer, "ECAPATDNN", _forbidden)
    with pytest.raises(ValueError, match="batch_size=49 is larger than the 48 utterances of .*train_list.txt"):
        stage1.train_stage1(_stage1_config(tiny_corpus, tmp_path, batch_size=49))


def test_stage1_refuses_a_stereo_test_file_before_the_untrained_evaluation(tiny_corpus, tmp_path, monkeypatch):
    test_root = tmp_path / "test"
    shutil.copytree(tiny_corpus / "test", test_root)
    first = (tiny_corpus / "lists" / "trials.txt").read_text().splitlines()[0].split()[1]
    soundfile.write(test_root / first, np.zeros((24000, 2), dtype=np.float32), 16000)
    monkeypatch.setattr(stage1.trainer, "ECAPATDNN", _forbidden)
    with pytest.raises(ListCheckError, match=rf"trials.txt:1: .*{re.escape(first)}: has 2 channels, expected mono"):
        stage1.train_stage1(_stage1_config(tiny_corpus, tmp_path / "runs", test_root=str(test_root)))


def test_stage2_refuses_a_crop_longer_than_every_file_before_clustering(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(stage2.engine, "Engine", _forbidden)
    with pytest.raises(CropError, match="frames gives a crop of 160240 samples .* longer than every file"):
        stage2.run_stage2(_stage2_config(tiny_corpus, tmp_path, frames=1000))


def test_stage2_refuses_a_stereo_file_of_an_overridden_list_before_clustering(
    tiny_corpus, tmp_path, stereo_list, monkeypatch
):
    listed, root = stereo_list
    monkeypatch.setattr(stage2.engine, "Engine", _forbidden)
    config = _stage2_config(tiny_corpus, tmp_path / "runs", train_list=str(listed), train_root=str(root))
    with pytest.raises(ListCheckError, match=rf"{re.escape(str(listed))}:4: .*has 2 channels, expected mono"):
        stage2.run_stage2(config)


def test_clustering_refuses_a_stereo_file_before_embedding(tmp_path, stereo_list):
    listed, root = stereo_list
    checkpoint = tmp_path / "c.model"
    checkpoint.write_bytes(b"never loaded: the inputs are refused first")
    cfg = cluster.ClusteringConfig(
        run_name="r",
        runs_dir=str(tmp_path),
        init_model=str(checkpoint),
        train_list=str(listed),
        train_root=str(root),
        n_clusters=8,
    )
    with pytest.raises(ListCheckError, match=rf"{re.escape(str(listed))}:4: .*has 2 channels, expected mono"):
        cluster.resolve_inputs(cfg)
