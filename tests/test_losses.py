"""Contrastive loss, AAT discriminator, gradient reversal and gated AAM-softmax against the reference fixtures."""

import math

import pytest
import torch
from reference import load_reference

from lgl_helpers.core.losses import AAMSoftmax, AATDiscriminator, ContrastiveLoss, grad_reverse

TOL = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(scope="module")
def stage1():
    return load_reference("stage1_checkpoint.model"), load_reference("stage1_io.pt")


@pytest.fixture(scope="module")
def stage2():
    return load_reference("stage2_checkpoint.model"), load_reference("stage2_io.pt")


def _aam(stage2):
    state, io = stage2
    aam = AAMSoftmax(io["n_cluster"])
    aam.load_state_dict({"weight": state["Loss.weight"]})
    return aam, io


def test_contrastive_loss_and_top1_equal_reference(stage1):
    state, io = stage1
    loss_fn = ContrastiveLoss()
    assert dict(loss_fn.named_parameters()).keys() == {"w", "b"}
    assert loss_fn.w.item() == 10.0 and loss_fn.b.item() == -5.0
    loss_fn.load_state_dict({"w": state["Loss.w"], "b": state["Loss.b"]})
    loss, top1 = loss_fn(io["contrastive_features"])
    torch.testing.assert_close(loss, io["contrastive_loss"], **TOL)
    assert top1 == pytest.approx(io["contrastive_prec1"].item(), abs=1e-4)


def test_contrastive_loss_trains_w():
    features = torch.randn(5, 2, 192, requires_grad=True)
    loss_fn = ContrastiveLoss()
    loss, _ = loss_fn(features)
    loss.backward()
    assert loss_fn.w.grad.abs() > 0 and torch.isfinite(features.grad).all()
    with pytest.raises(ValueError, match="2 views"):
        loss_fn(torch.randn(4, 3, 192))


def test_aat_discriminator_equals_reference(stage1):
    state, io = stage1
    aat_state = {k[len("AATNet.") :]: v for k, v in state.items() if k.startswith("AATNet.")}
    disc = AATDiscriminator()
    assert set(disc.state_dict()) == set(aat_state)
    disc.load_state_dict(aat_state)
    with torch.no_grad():
        torch.testing.assert_close(disc.eval()(io["aat_input"]), io["aat_logits"], **TOL)


def test_grad_reverse_equals_reference(stage1):
    _, io = stage1
    x = torch.randn(4, 384, requires_grad=True)
    out = grad_reverse(x)
    assert torch.equal(out, x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, io["revgrad_grad"], rtol=0, atol=0)
    x.grad = None
    grad_reverse(x, scale=0.5).sum().backward()
    assert torch.all(x.grad == -0.5)


def test_aam_loss_and_selection_for_every_gate(stage2):
    aam, io = _aam(stage2)
    for gate, expected in zip(io["gates"], io["results"]):
        out = aam(io["x"], io["label"], gate=gate)
        assert torch.isfinite(out.loss), gate
        torch.testing.assert_close(out.loss, expected["loss"], **TOL, msg=f"gate {gate}")
        assert out.n_selected == int(expected["nselect"]), gate
        assert int(out.selected.sum()) == out.n_selected
        assert out.per_sample.shape == (32,) and not out.per_sample.requires_grad
        assert torch.equal(out.selected, out.per_sample <= gate)


def test_aam_selection_given_beforehand_replaces_the_gate(stage2):
    aam, io = _aam(stage2)
    x = io["x"].clone().requires_grad_(True)
    keep = torch.zeros(32, dtype=torch.bool)
    keep[::3] = True
    # gate 0 would keep 13 samples; the given selection decides alone.
    out = aam(x, io["label"], gate=0.0, keep=keep)
    assert torch.equal(out.selected, keep) and out.n_selected == 11
    torch.testing.assert_close(out.loss, out.per_sample[keep].mean())
    out.loss.backward()
    assert torch.count_nonzero(x.grad[~keep]) == 0 and torch.count_nonzero(x.grad[keep].abs().sum(1)) == 11
    with pytest.raises(ValueError, match=r"keep must be \(B,\) = \(32,\), got \(31,\)"):
        aam(io["x"], io["label"], keep=keep[:31])


def test_aam_accuracy_counts_selected_samples_only(stage2):
    aam, io = _aam(stage2)
    batch = io["x"].shape[0]
    everyone = aam(io["x"], io["label"])
    # With every sample selected the reference's prec1 (scaled by the batch size) is the plain accuracy.
    assert everyone.accuracy == pytest.approx(io["results"][-1]["prec1"].item() / batch)
    assert everyone.n_selected == batch
    # Gate 0 selects only the samples with an exactly zero loss: all correctly classified.
    at_zero = aam(io["x"], io["label"], gate=0.0)
    assert at_zero.n_selected == 13 and at_zero.accuracy == 100.0 and at_zero.loss.item() == 0.0


def test_aam_gate_nobody_passes_is_zero_without_weight_change(stage2):
    aam, io = _aam(stage2)
    x = io["x"].clone().requires_grad_(True)
    before = aam.weight.detach().clone()
    optimizer = torch.optim.Adam(aam.parameters(), lr=0.001)
    out = aam(x, io["label"], gate=-1.0)
    assert out.n_selected == 0 and out.accuracy == 0.0 and not out.selected.any()
    assert out.loss.item() == 0.0 and not math.isnan(out.loss.item())
    out.loss.backward()
    assert torch.count_nonzero(aam.weight.grad) == 0 and torch.count_nonzero(x.grad) == 0
    optimizer.step()
    assert torch.equal(aam.weight.detach(), before)
    assert torch.isfinite(out.per_sample).all() and out.per_sample.min() >= 0


def test_aam_weight_init_and_label_check():
    torch.manual_seed(0)
    aam = AAMSoftmax(6000)
    assert aam.weight.shape == (6000, 192)
    # xavier-normal: std = sqrt(2 / (fan_in + fan_out))
    assert aam.weight.std().item() == pytest.approx(math.sqrt(2 / (6000 + 192)), rel=0.02)
    with pytest.raises(ValueError, match="labels must lie"):
        aam(torch.randn(2, 192), torch.tensor([0, 6000]))
