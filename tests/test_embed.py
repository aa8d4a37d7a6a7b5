"""Length-bucketed embedding equals one-by-one embedding; trial scoring on top of it."""

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F

from lgl_helpers.core.embed import embed_files, evaluate_trials, length_batches, padded_length
from lgl_helpers.core.metrics import compute_eer
from lgl_helpers.core.models import ECAPATDNN
from lgl_helpers.corpus.lists import Trial

SECONDS = [0.6, 2.2, 1.0, 3.05, 1.37, 4.0]


@pytest.fixture(scope="module")
def wav_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate(SECONDS):
        n = int(seconds * 16000) + i  # odd lengths, not multiples of the hop
        t = np.arange(n) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (120 + 40 * i) * t) + 0.05 * rng.standard_normal(n)
        path = folder / f"spk{i % 2}" / f"utt{i}.wav"
        path.parent.mkdir(exist_ok=True)
        soundfile.write(path, wave.astype(np.float32), 16000, subtype="PCM_16")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    encoder = ECAPATDNN(64)
    with torch.no_grad():  # move BN statistics away from their defaults
        encoder.train()(torch.randn(4, 16000) * 0.1)
    return encoder.eval()


def _alone(model, path, max_samples=None):
    wave, _ = soundfile.read(path, dtype="float32")
    with torch.no_grad():
        emb = model(torch.from_numpy(wave[:max_samples])[None])
    return F.normalize(emb, dim=1)[0].numpy()


def test_batched_equals_one_by_one(model, wav_files):
    threads = torch.get_num_threads()
    batched = embed_files(model, wav_files, device="cpu", batch_seconds=60.0, show_progress=False, cpu_streams=0)
    single = embed_files(model, wav_files, device="cpu", batch_seconds=0.1, show_progress=False, cpu_streams=0)
    direct = np.stack([_alone(model, path) for path in wav_files])
    assert batched.shape == (len(wav_files), 192) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(batched, direct, atol=1e-4)
    np.testing.assert_allclose(single, direct, atol=1e-5)
    for streams in (1, 3):  # the CPU's default: one file at a time per stream
        emb = embed_files(model, wav_files, device="cpu", show_progress=False, cpu_streams=streams)
        np.testing.assert_allclose(emb, direct, atol=1e-5)
    assert torch.get_num_threads() == threads


def test_max_seconds_crops_from_the_start(model, wav_files):
    emb = embed_files(model, wav_files, device="cpu", max_seconds=1.5, show_progress=False)
    direct = np.stack([_alone(model, path, max_samples=24000) for path in wav_files])
    np.testing.assert_allclose(emb, direct, atol=1e-4)


def test_model_and_backend_state_are_restored(wav_files):
    encoder = ECAPATDNN(64).train()
    tf32 = torch.backends.cudnn.allow_tf32
    embed_files(encoder, wav_files[:2], device="cpu", show_progress=False)
    assert encoder.training and next(encoder.parameters()).device.type == "cpu"
    assert torch.backends.cudnn.allow_tf32 == tf32


@pytest.mark.parametrize("quantum", [1, 8000])
def test_length_batches_respect_budget(quantum):
    lengths = [16000, 48000, 8001, 64000, 31000, 8000, 200000, 20000]
    batches = length_batches(lengths, budget=100000, quantum=quantum)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * padded_length(longest, quantum) <= 100000
    assert [6] in [b.tolist() for b in batches]  # longer than the budget: alone
    assert [b.tolist() for b in batches][:2] == [[6], [3]]  # longest first


def test_padded_length():
    assert padded_length(8000) == 8000 and padded_length(8001) == 16000 and padded_length(7, 5) == 10


def test_evaluate_trials(model, wav_files):
    root = wav_files[0].parents[1]
    rel = [str(p.relative_to(root)) for p in wav_files]
    pairs = [(1, 0, 2), (0, 0, 1), (1, 1, 3), (0, 4, 5), (1, 3, 5), (0, 2, 3)]  # (label, file a, file b)
    trials = [Trial(label, rel[a], rel[b]) for label, a, b in pairs]
    result = evaluate_trials(model, trials, root, device="cpu", show_progress=False)
    emb = embed_files(model, wav_files, device="cpu", show_progress=False)
    expected = np.array([emb[a] @ emb[b] for _, a, b in pairs])
    np.testing.assert_allclose(result["scores"], expected, atol=1e-6)
    assert result["labels"].tolist() == [1, 0, 1, 0, 1, 0]
    assert result["n_trials"] == 6 and result["n_files"] == 6
    assert result["eer"] == pytest.approx(compute_eer(result["scores"], result["labels"]))
    assert {"min_dcf", "min_dcf_0.01"} <= set(result)


def test_bad_arguments(model, wav_files):
    with pytest.raises(ValueError, match="batch_seconds"):
        embed_files(model, wav_files, batch_seconds=0)
    with pytest.raises(ValueError, match="empty"):
        evaluate_trials(model, [], wav_files[0].parent)
