"""Stage I (notebook 01): contrastive learning with augmentation adversarial training (docs/method.md,
"Stage I"), or DINO self-distillation.

Per batch three views of each utterance — A (crop 0, augmentation a), S (crop 1, a), P (crop 1, b) —
go through the encoder. As in the reference, each training step has two updates:

1. the AAT discriminator learns, on detached embeddings, to tell [A, S] (label 1, same augmentation)
   from [A, P] (label 0), with its own Adam optimizer;
2. the encoder (and the contrastive loss's w, b) minimises ``contrastive(A, P) + aat_weight · CE``,
   where CE is the discriminator's cross-entropy seen through a gradient-reversal layer: the encoder
   is pushed to make the augmentation unrecognisable.

Adam with ``lr`` for both, the encoder's decayed by ``lr_decay`` every ``decay_every`` epochs. The
untrained encoder is evaluated first (epoch 0), then every ``test_interval`` epochs and after the
last one; the best epoch by validation EER is scored on the test trials.

``stage1_method="dino"`` trains by self-distillation instead (:mod:`lgl_helpers.training.stage1.dino`,
docs/dino.md): the same run folder, checkpoints and resume rules; the Stage I model is DINO's teacher.

Run folder ``runs/<run>/stage1/``: ``stage1_params.json``, ``stage1.log``, ``scores.txt``,
``checkpoints/last.model`` (every epoch, the resume point), ``checkpoints/epoch_XXX.model`` (every
evaluated epoch), ``best.model`` and ``metrics.json``. Checkpoints are kit checkpoints
(:func:`lgl_helpers.core.models.load_encoder` reads them) that also hold the loss, discriminator,
optimizers, scheduler, epoch, RNG states, history and resolved parameters.
"""

from lgl_helpers.training.stage1.config import RUN_CONTROL_FIELDS, STAGE_DIR, Stage1Config, stage_folder
from lgl_helpers.training.stage1.dino import collapse_warning
from lgl_helpers.training.stage1.inputs import Stage1Data, check_inputs, prepare_data, preview_crops, preview_views
from lgl_helpers.training.stage1.trainer import export_reference, results_table, train_stage1

__all__ = [
    "RUN_CONTROL_FIELDS",
    "STAGE_DIR",
    "Stage1Config",
    "Stage1Data",
    "check_inputs",
    "collapse_warning",
    "export_reference",
    "prepare_data",
    "preview_crops",
    "preview_views",
    "results_table",
    "stage_folder",
    "train_stage1",
]
