"""ECAPA-TDNN and checkpoint loading against the reference fixtures; masked (padded-batch) pass."""

import pytest
import torch
import torch.nn.functional as F
from reference import load_reference, reference_path

from lgl_helpers.core.models import ECAPATDNN, PreEmphasis, load_encoder, save_encoder

TOL = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(scope="module")
def stage1_encoder():
    return load_encoder(reference_path("stage1_checkpoint.model"))


@pytest.fixture(scope="module")
def stage2_encoder():
    return load_encoder(reference_path("stage2_checkpoint.model"))


def test_stage1_checkpoint_embeddings(stage1_encoder):
    io = load_reference("stage1_io.pt")
    assert not stage1_encoder.training
    with torch.no_grad():
        torch.testing.assert_close(stage1_encoder(io["wave"]), io["emb_eval"], **TOL)
        torch.testing.assert_close(stage1_encoder(io["wave_long"]), io["emb_long"], **TOL)


def test_stage2_checkpoint_embeddings(stage2_encoder):
    io = load_reference("stage2_io.pt")
    with torch.no_grad():
        torch.testing.assert_close(stage2_encoder(io["wave"]), io["emb_eval"], **TOL)


def test_state_dict_keys_and_shapes_equal_reference():
    reference = load_reference("stage1_checkpoint.model")
    expected = {k[len("Network.") :]: tuple(v.shape) for k, v in reference.items() if k.startswith("Network.")}
    ours = {k: tuple(v.shape) for k, v in ECAPATDNN(512).state_dict().items()}
    assert ours == expected


def test_front_end_buffers_equal_reference():
    reference = load_reference("stage1_checkpoint.model")
    ours = ECAPATDNN(64).state_dict()
    for key in ("torchfbank.0.flipped_filter", "torchfbank.1.spectrogram.window", "torchfbank.1.mel_scale.fb"):
        torch.testing.assert_close(ours[key], reference["Network." + key])


def test_pre_emphasis_equals_the_reference_filter_bit_for_bit():
    # The reference filters with conv1d over the reflect-padded wave; the kit shifts and multiply-adds.
    pre_emphasis = PreEmphasis()
    generator = torch.Generator().manual_seed(0)
    for shape in [(1, 48_000), (16, 19_440), (3, 2)]:
        wave = 0.3 * torch.randn(*shape, generator=generator)
        padded = F.pad(wave.unsqueeze(1), (1, 0), "reflect")
        expected = F.conv1d(padded, pre_emphasis.flipped_filter).squeeze(1)
        assert torch.equal(pre_emphasis(wave), expected), shape


def test_module_prefix_is_stripped(tmp_path, stage1_encoder):
    state = load_reference("stage1_checkpoint.model")
    path = tmp_path / "dataparallel.model"
    torch.save({"module." + k: v for k, v in state.items()}, path)
    model = load_encoder(path)
    for key, value in stage1_encoder.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_missing_encoder_tensor_is_named(tmp_path):
    state = load_reference("stage2_checkpoint.model")
    del state["Network.layer2.convs.3.weight"]
    path = tmp_path / "missing.model"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing\.model.*layer2\.convs\.3\.weight"):
        load_encoder(path)


def test_misshaped_encoder_tensor_is_named(tmp_path):
    state = load_reference("stage2_checkpoint.model")
    state["Network.fc6.bias"] = torch.zeros(191)
    path = tmp_path / "misshaped.model"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"misshaped\.model.*'fc6\.bias' has shape \(191,\), expected \(192,\)"):
        load_encoder(path)


def test_unexpected_encoder_tensor_is_named(tmp_path):
    state = load_reference("stage2_checkpoint.model")
    state["Network.layer5.weight"] = torch.zeros(3)
    path = tmp_path / "extra.model"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"extra\.model.*layer5\.weight"):
        load_encoder(path)


def test_requested_channels_must_match_file():
    with pytest.raises(ValueError, match="channels=1024.*C=512"):
        load_encoder(reference_path("stage1_checkpoint.model"), channels=1024)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.model"
    torch.save({"weights": [1, 2, 3]}, path)
    with pytest.raises(ValueError, match=r"notes\.model: no encoder tensors"):
        load_encoder(path)
    with pytest.raises(FileNotFoundError, match="absent.model"):
        load_encoder(tmp_path / "absent.model")


def test_kit_checkpoint_round_trip_infers_channels(tmp_path):
    torch.manual_seed(0)
    model = ECAPATDNN(64)
    with torch.no_grad():  # non-default BN statistics, so the round trip must carry buffers too
        model.train()(torch.randn(3, 8000))
    path = save_encoder(tmp_path / "kit.model", model, extra={"epoch": 7, "eer": 12.5})
    stored = torch.load(path, weights_only=True)
    assert stored["format"] == "lgl-kit" and stored["channels"] == 64 and stored["epoch"] == 7
    loaded = load_encoder(path)
    assert loaded.channels == 64 and not loaded.training
    wave = torch.randn(2, 12000)
    with torch.no_grad():
        torch.testing.assert_close(loaded(wave), model.eval()(wave), rtol=0, atol=0)
    with pytest.raises(ValueError, match="reserved"):
        save_encoder(tmp_path / "bad.model", model, extra={"channels": 3})


def test_narrow_mfa_round_trip_infers_both_widths(tmp_path):
    torch.manual_seed(0)
    model = ECAPATDNN(32, mfa_channels=96).eval()
    assert model.layer4.weight.shape == (96, 96, 1)
    assert model.attention[0].weight.shape == (256, 288, 1) and model.fc6.weight.shape == (192, 192)
    path = save_encoder(tmp_path / "narrow.model", model)
    assert torch.load(path, weights_only=True)["mfa_channels"] == 96
    loaded = load_encoder(path)
    assert (loaded.channels, loaded.mfa_channels) == (32, 96)
    wave = torch.randn(2, 8000)
    with torch.no_grad():
        torch.testing.assert_close(loaded(wave), model(wave), rtol=0, atol=0)
    # A bare state dict carries no widths: both are read from the tensors.
    torch.save(model.state_dict(), tmp_path / "bare.model")
    assert load_encoder(tmp_path / "bare.model").mfa_channels == 96


def test_recorded_mfa_width_must_match_tensors(tmp_path):
    stored = torch.load(save_encoder(tmp_path / "kit.model", ECAPATDNN(16, mfa_channels=64)), weights_only=True)
    stored["mfa_channels"] = 128
    torch.save(stored, tmp_path / "kit.model")
    with pytest.raises(ValueError, match="'mfa_channels' says 128 but layer4.weight has 64"):
        load_encoder(tmp_path / "kit.model")


def test_channels_1024_shapes():
    model = ECAPATDNN(1024).eval()
    assert model.conv1.weight.shape == (1024, 80, 5)
    assert model.layer1.convs[0].weight.shape == (128, 128, 3)
    assert model.layer4.weight.shape == (1536, 3072, 1)
    with torch.no_grad():
        assert model(torch.randn(2, 16000)).shape == (2, 192)


def test_masked_pass_equals_each_item_alone():
    torch.manual_seed(1)
    model = ECAPATDNN(64)
    with torch.no_grad():
        model.train()(torch.randn(4, 16000))
    model.eval()
    lengths = [8000, 23999, 16160, 40000]
    waves = [torch.randn(n) * 0.1 for n in lengths]
    padded = torch.zeros(len(waves), max(lengths))
    for i, wave in enumerate(waves):
        padded[i, : len(wave)] = wave
    with torch.no_grad():
        batched = model(padded, torch.tensor(lengths))
        alone = torch.cat([model(wave[None]) for wave in waves])
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)


def test_masked_pass_refuses_train_mode_and_bad_lengths():
    model = ECAPATDNN(64)
    with pytest.raises(ValueError, match="eval mode"):
        model.train()(torch.randn(2, 8000), torch.tensor([8000, 4000]))
    with pytest.raises(ValueError, match="lengths"):
        model.eval()(torch.randn(2, 8000), torch.tensor([9000, 4000]))
    with pytest.raises(ValueError, match=r"values in \[257, 8000\]"):
        model.eval()(torch.randn(2, 8000), torch.tensor([8000, 256]))
