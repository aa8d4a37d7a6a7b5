"""bfloat16 autocast on the CPU: finite losses and gradients in both stages, embeddings close to float32."""

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F

from lgl_helpers.core.embed import PRECISIONS, autocast_context, embed_files
from lgl_helpers.core.losses import AAMSoftmax, ContrastiveLoss
from lgl_helpers.core.models import ECAPATDNN
from lgl_helpers.training.executor import EncoderWithHead

# Measured on this encoder and these files: cosine between a file's bf16 and fp32 embeddings ≥ 0.99998,
# largest difference of one coordinate of the unit vectors 1.2e-3; the bounds leave a margin of ~10x.
MIN_COSINE = 0.9999
MAX_ABS = 1e-2


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    model = ECAPATDNN(32)
    with torch.no_grad():  # move BN statistics away from their defaults
        model.train()(torch.randn(4, 16000) * 0.1)
    return model


def test_precision_names():
    assert PRECISIONS == ("fp32", "bf16")
    with pytest.raises(ValueError, match="precision='fp16'"):
        autocast_context("fp16", torch.device("cpu"))


def test_bf16_stage2_step_is_finite(encoder):
    torch.manual_seed(1)
    model = EncoderWithHead(encoder, AAMSoftmax(10)).train()
    wave, labels = torch.randn(4, 8240) * 0.1, torch.randint(0, 10, (4,))
    with autocast_context("bf16", torch.device("cpu")):
        out = model(wave, labels, float("inf"))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.n_selected == 4
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)


def test_bf16_stage1_loss_is_finite(encoder):
    encoder.train()
    views = torch.randn(8, 8240) * 0.1
    with autocast_context("bf16", torch.device("cpu")):
        emb = encoder(views)
    assert emb.dtype == torch.bfloat16
    loss, _ = ContrastiveLoss()(emb.float().view(4, 2, -1))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)
    encoder.zero_grad(set_to_none=True)


def test_bf16_embeddings_close_to_fp32(encoder, tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate([0.8, 1.5, 2.3, 3.1]):
        n = int(seconds * 16000)
        t = np.arange(n) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (110 + 50 * i) * t) + 0.05 * rng.standard_normal(n)
        paths.append(tmp_path / f"utt{i}.wav")
        soundfile.write(paths[-1], wave.astype(np.float32), 16000, subtype="PCM_16")
    encoder.eval()
    full = embed_files(encoder, paths, device="cpu", show_progress=False)
    half = embed_files(encoder, paths, device="cpu", show_progress=False, precision="bf16")
    assert half.dtype == np.float32 and np.isfinite(half).all()
    cosine = F.cosine_similarity(torch.from_numpy(full), torch.from_numpy(half), dim=1)
    assert cosine.min().item() > MIN_COSINE, cosine
    assert np.abs(full - half).max() < MAX_ABS
    assert not np.array_equal(full, half)  # the bf16 path really ran
