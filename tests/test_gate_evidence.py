import numpy as np
import pytest

from lgl_helpers.core.gate_evidence import gate_evidence


def test_hand_computed_case():
    losses = [0.1, 0.2, 0.9, 1.5]
    reliable = [True, True, False, True]
    evidence = gate_evidence(losses, reliable, gate=0.5)
    assert evidence["fraction_kept"] == 0.5
    assert evidence["kept_reliable"] == 1.0 and evidence["dropped_reliable"] == 0.5
    # Reliable losses 0.1, 0.2, 1.5 against the unreliable 0.9: two of three pairs ranked right.
    assert evidence["auc_reliable"] == pytest.approx(2 / 3)


def test_gate_on_a_loss_keeps_it():
    assert gate_evidence([1.0, 2.0], [True, False], gate=1.0)["fraction_kept"] == 0.5


def test_undefined_values_are_none():
    everything = gate_evidence([0.1, 0.2], [True, False], gate=10.0)
    assert everything["fraction_kept"] == 1.0 and everything["dropped_reliable"] is None
    one_class = gate_evidence([0.1, 0.2], [True, True], gate=0.15)
    assert one_class["auc_reliable"] is None and one_class["kept_reliable"] == 1.0
    unknown = gate_evidence([0.1, 0.2], None, gate=0.15)
    assert unknown["fraction_kept"] == 0.5 and unknown["kept_reliable"] is None and unknown["auc_reliable"] is None


def test_a_perfect_separation_has_auc_one():
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.uniform(0, 1, 50), rng.uniform(2, 3, 50)])
    reliable = np.arange(100) < 50
    evidence = gate_evidence(losses, reliable, gate=1.5)
    assert evidence["auc_reliable"] == 1.0 and evidence["kept_reliable"] == 1.0 and evidence["dropped_reliable"] == 0.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="reliable has shape"):
        gate_evidence([0.1, 0.2], [True], gate=1.0)
    with pytest.raises(ValueError, match="per_sample_loss is empty"):
        gate_evidence([], [], gate=1.0)
