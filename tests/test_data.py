"""Crops (non-overlap, wrap-padding), crop-length checks, Stage I/II datasets and the seeded loader."""

import os
import signal
import time

import numpy as np
import pytest
import torch

from lgl_helpers.core.audio import read_wav, write_wav
from lgl_helpers.core.augment import AugmentSources, apply_recipe, segment_samples
from lgl_helpers.core.data import (
    CropError,
    Stage1Dataset,
    Stage2Dataset,
    check_crop,
    make_loader,
    random_crop,
    stage1_views,
    two_crops,
)
from lgl_helpers.corpus.lists import TrainEntry, read_train_list


@pytest.fixture(scope="module")
def ramp(tmp_path_factory):
    """A 3 s wav whose samples are all distinct after 16-bit quantisation, so a crop's values give its start."""
    path = tmp_path_factory.mktemp("ramp") / "ramp.wav"
    n = 48000
    write_wav(path, np.linspace(-0.9, 0.9, n))
    return path, n


def _starts(crops, wave):
    return [int(np.flatnonzero(wave == crop[0])[0]) for crop in crops]


def test_two_crops_do_not_overlap_and_are_contiguous(ramp):
    path, n = ramp
    wave = read_wav(path)
    length = 20000
    seen_order = set()
    for seed in range(40):
        crops = two_crops(path, length, np.random.default_rng(seed))
        assert crops.shape == (2, length) and crops.dtype == np.float32
        starts = _starts(crops, wave)
        for crop, start in zip(crops, starts):
            np.testing.assert_array_equal(crop, wave[start : start + length])
        assert abs(starts[0] - starts[1]) >= length
        seen_order.add(starts[0] < starts[1])
    assert seen_order == {True, False}  # the anchor is sometimes the later segment


@pytest.mark.parametrize("seconds", [0.5, 1.3])
def test_short_files_are_wrap_padded(tmp_path, seconds):
    """Shorter than one crop (0.5 s) and than two crops (1.3 s): both work, and every sample comes from the file."""
    n = int(seconds * 16000)
    path = tmp_path / "short.wav"
    write_wav(path, np.linspace(-0.9, 0.9, n))
    wave = read_wav(path)
    length = segment_samples(100)
    for seed in range(5):
        crops = two_crops(path, length, np.random.default_rng(seed))
        assert crops.shape == (2, length)
        assert np.isin(crops, wave).all()
        crop = random_crop(path, segment_samples(300), np.random.default_rng(seed))
        assert crop.shape == (segment_samples(300),) and np.isin(crop, wave).all()
        # consecutive samples follow the file circularly
        steps = np.diff(np.searchsorted(wave, crop))
        assert set(np.unique(steps)) <= {1, -(n - 1)}


def test_crop_longer_than_every_file_is_an_error():
    entries = [TrainEntry("a", "a.wav", 1.5), TrainEntry("b", "b.wav", 2.0)]
    with pytest.raises(
        CropError, match=r"frames gives a crop of 40240 samples \(2\.52 s\), longer than every file.*frames <= 198"
    ):
        check_crop(entries, segment_samples(250), n_crops=2)
    assert check_crop(entries, segment_samples(90), n_crops=2) == 1  # 1.5 s < two crops of 0.915 s: wrap-padded


def test_dataset_checks_files_before_training(tiny_corpus):
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    broken = entries + [TrainEntry("id9", "id9/none/00001.wav", 1.0)]
    with pytest.raises(FileNotFoundError, match=r"1 of \d+ files of the training list are missing.*id9/none/00001.wav"):
        Stage1Dataset(broken, tiny_corpus / "train", frames=50)
    with pytest.raises(CropError, match="longer than every file"):
        Stage1Dataset(entries, tiny_corpus / "train", frames=300)


def test_loader_workers_outlive_a_sigterm(tiny_corpus):
    """A scheduler's SIGTERM reaches the workers too; they ignore it, so the training process gets its next
    batches and can checkpoint and stop as it decides (a worker killed by it would crash the step)."""
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    dataset = Stage1Dataset(entries, tiny_corpus / "train", frames=40, sources=None, seed=3)
    loader = make_loader(dataset, batch_size=8, workers=1, seed=3, device="cpu")
    batches = iter(loader)
    next(batches)
    worker = batches._workers[0]  # the process a scheduler's SIGTERM would also reach
    os.kill(worker.pid, signal.SIGTERM)
    time.sleep(0.5)
    assert worker.is_alive() and len(list(batches)) == len(loader) - 1


def test_stage1_batches_views_and_worker_independence(tiny_corpus):
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    sources = AugmentSources.from_roots(tiny_corpus / "musan_split", tiny_corpus / "rirs")
    dataset = Stage1Dataset(entries, tiny_corpus / "train", frames=40, sources=sources, seed=3)
    batches = {}
    for workers in (0, 1):
        loader = make_loader(dataset, batch_size=8, workers=workers, seed=3, device="cpu")
        assert loader.drop_last and loader.persistent_workers == (workers > 0) and not loader.pin_memory
        loader.sampler.set_epoch(2)
        batches[workers] = next(iter(loader))
    first, other = batches[0], batches[1]
    length = segment_samples(40)
    assert first["crops"].shape == (8, 2, length) and first["recipe_a"].noise.shape == (8, length)
    torch.testing.assert_close(first["crops"], other["crops"], rtol=0, atol=0)
    for name in ("recipe_a", "recipe_s", "recipe_b"):
        torch.testing.assert_close(first[name].noise, other[name].noise, rtol=0, atol=0)
    view_a, view_s, view_p = stage1_views(first, "cpu")
    assert view_a.shape == view_s.shape == view_p.shape == (8, length)
    # S shares A's augmentation (RIR, gain, noise category, SNR) but not its noise samples
    recipe_a, recipe_s = first["recipe_a"], first["recipe_s"]
    for name in ("rir", "has_rir", "has_noise", "category", "snr_db", "rir_gain_db"):
        torch.testing.assert_close(getattr(recipe_a, name), getattr(recipe_s, name), rtol=0, atol=0, equal_nan=True)
    noisy = recipe_a.has_noise
    assert bool(noisy.any()) and all(
        not torch.equal(a, s) for a, s in zip(recipe_a.noise[noisy], recipe_s.noise[noisy])
    )
    # with crop 1 replaced by crop 0 and S's noise by A's, S equals A exactly
    same = dict(first, crops=first["crops"][:, [0, 0]], recipe_s=recipe_a)
    view_a2, view_s2, view_p2 = stage1_views(same, "cpu")
    torch.testing.assert_close(view_a2, view_s2, rtol=0, atol=0)
    assert not torch.equal(view_s2, view_p2)
    torch.testing.assert_close(view_s, apply_recipe(first["crops"][:, 1], recipe_s), rtol=0, atol=0)


def test_epochs_change_order_and_crops_deterministically(tiny_corpus):
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    dataset = Stage1Dataset(entries, tiny_corpus / "train", frames=40, seed=0)
    loader = make_loader(dataset, batch_size=4, workers=0, seed=0, device="cpu")

    def first_batch(epoch):
        loader.sampler.set_epoch(epoch)
        return next(iter(loader))

    one, again, two = first_batch(1), first_batch(1), first_batch(2)
    torch.testing.assert_close(one["crops"], again["crops"], rtol=0, atol=0)
    assert not torch.equal(one["index"], two["index"])
    assert one["recipe_a"].has_rir.sum() == 0 and one["recipe_a"].noise.abs().sum() == 0  # no sources: clean


def test_stage2_dataset_labels_and_errors(tiny_corpus):
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    labels = np.arange(len(entries)) % 5
    dataset = Stage2Dataset(entries, tiny_corpus / "train", labels, frames=150)  # longer than the 1-2 s files' shortest
    loader = make_loader(dataset, batch_size=6, workers=0, seed=0, device="cpu")
    loader.sampler.set_epoch(1)
    batch = next(iter(loader))
    assert batch["crops"].shape == (6, segment_samples(150))
    torch.testing.assert_close(batch["labels"], torch.from_numpy(labels[batch["index"].numpy()]))
    with pytest.raises(ValueError, match=r"pseudo_labels must be \(\d+,\) integers"):
        Stage2Dataset(entries, tiny_corpus / "train", labels[:-1], frames=150)
    with pytest.raises(ValueError, match="batch_size=1000 is larger than"):
        make_loader(dataset, batch_size=1000, workers=0, seed=0, device="cpu")
