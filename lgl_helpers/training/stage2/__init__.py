"""Stage II: iterative clustering + classification, without (baseline) or with the loss gate (LGL).

docs/method.md, "Stage II: classification on pseudo labels". One engine runs both modes; an iteration is

1. **cluster** the training utterances with the current model (iteration 1: the Stage I model; later:
   the previous iteration's best L model, or best T model in baseline mode) → pseudo labels;
2. **phase T**: the encoder is re-initialised from the Stage I checkpoint and a fresh AAM-softmax
   head (margin 0.2, scale 30; random, or with ``head_init="centroids"`` the pseudo-label centroids of
   the Stage I embeddings) classifies the pseudo labels; Adam at a fixed ``lr``, ``frames``-frame
   crops with the Stage II augmentation (reverb p 0.5 at unit RIR energy, noise p 0.5, babble of 3-8
   files); validation EER after every epoch; the stopping rule (:func:`lgl_helpers.core.gate.phase_should_stop`)
   or ``max_epochs_per_phase`` ends the phase and its best epoch is kept;
3. **phase L** (LGL mode only): training continues from the best T epoch (encoder and head) with the
   Adam state of the last T epoch, as the reference's one optimizer does, and the iteration's gate: the loss averages the samples whose
   per-sample cross-entropy is ≤ gate; a batch where none passes is counted and skipped. Same stopping
   rule; the best L epoch is kept. LGL's phase T of iteration 1 is the baseline's of the same run
   folder when that has run with the same parameters (:mod:`lgl_helpers.training.stage2.reuse`).

With ``last_channels`` set (1024 in the paper), the last iteration trains an encoder of that width;
C=512 Stage I weights cannot initialise it, so that encoder starts from random weights.

The gate of iteration k is, in order of precedence: a value in ``gate_overrides.json`` (written by the
gate tuner of notebook 04), else ``gates[k-1]``; ``"auto"`` places it with
:func:`lgl_helpers.core.gate.auto_gate` on the per-sample losses of the best T epoch of iteration k,
the model phase L starts from (:func:`lgl_helpers.training.stage2.gates.resolve_gate`); the
iteration's ``gate_evidence`` measures on those losses how well the gate separates reliable labels.
With ``gate_losses="clean"`` those losses come from one clean pass of that model over the whole,
unaugmented utterances (``iter_XX/T/clean_losses.npz``), and phase L trains on the samples whose
clean loss passes the gate (:mod:`lgl_helpers.training.stage2.clean_losses`).

Modules: ``config`` (:class:`BaselineConfig` for notebook 03, :class:`LGLConfig` for 04), ``inputs``
(resolved and checked before any work), ``statefile`` (``state.json`` and the loss records),
``gates`` (overrides and the gate rule), ``clean_losses`` (the clean-pass losses), ``engine`` (the cluster → T → L state machine and
:func:`run_stage2`), ``executor`` (a phase's epochs); :mod:`lgl_helpers.training.state` holds the
checkpoints, RNG states and resume policy shared with Stage I.

Run folder ``runs/<run>/stage2_<mode>/``:

- ``state.json``: the machine-readable state, written atomically after every step (the commit
  point): current iteration / phase / epoch / gate, every evaluation, per-iteration results, the best
  model so far and the paths of every artefact (relative to the folder). A rerun resumes from it:
  same iteration, phase, gate and pseudo labels, from the last completed epoch.
- ``scores.txt``: one human-readable line per evaluated epoch.
- ``iter_XX/``: the clustering (``pseudo_labels.txt``, ``embeddings.npy``, ``quality.json``) and
  ``T/``, ``L/`` with ``epoch_XXX.model`` (kit checkpoints with the AAM head and optimizer; the
  best and the latest epoch of each phase are kept) and ``losses_epoch_XXX.npz`` (each phase's best
  and last epoch, and every ``keep_every``-th):
  ``index`` (n,) training-list index, ``per_sample_loss`` (n,) float32, ``selected`` (n,) bool and,
  when the list has speaker ids, ``reliable`` (n,) bool = the pseudo label agrees with the majority
  speaker of its cluster (analysis only, never used for training).
- ``best.model``: the model with the lowest validation EER of the whole run, ``metrics.json``.
"""

from lgl_helpers.training.stage2.config import (
    CONFIGS,
    FIXED_FIELDS,
    REFERENCE_GATES,
    BaselineConfig,
    LGLConfig,
    Stage2Config,
    stage_folder,
)
from lgl_helpers.training.stage2.engine import Engine, run_stage2
from lgl_helpers.training.stage2.gates import (
    apply_gate,
    next_gate_iteration,
    read_gate_overrides,
    resolve_gate,
    write_gate_override,
)
from lgl_helpers.training.stage2.inputs import Stage2Data, check_inputs, prepare_data
from lgl_helpers.training.stage2.statefile import (
    GATE_OVERRIDES,
    PATH_PARAMS,
    STATE_FORMAT,
    gate_losses_record,
    latest_epoch_losses,
    read_epoch_losses,
    read_state,
    stage1_eer,
)

__all__ = [
    "CONFIGS",
    "FIXED_FIELDS",
    "GATE_OVERRIDES",
    "PATH_PARAMS",
    "REFERENCE_GATES",
    "STATE_FORMAT",
    "BaselineConfig",
    "Engine",
    "LGLConfig",
    "Stage2Config",
    "Stage2Data",
    "apply_gate",
    "check_inputs",
    "gate_losses_record",
    "latest_epoch_losses",
    "next_gate_iteration",
    "prepare_data",
    "read_epoch_losses",
    "read_gate_overrides",
    "read_state",
    "resolve_gate",
    "run_stage2",
    "stage1_eer",
    "stage_folder",
    "write_gate_override",
]
