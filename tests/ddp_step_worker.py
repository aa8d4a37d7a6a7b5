"""One rank of the 2-rank mid-epoch checkpoint test (tests/test_step_checkpoints.py launches it under torchrun, gloo).

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_step_worker.py OUT_DIR CONFIG_JSON

In one launch: an uninterrupted Stage II run (run folder ``a``); the same run in folder ``b`` where
only rank 1 gets SIGTERM, during batch 2 of the first epoch, so that both ranks must agree to write
the checkpoint and stop; a copy of the stopped ``b`` as ``c``, which the test resumes in one process
(another world size); then ``b`` resumed. Each rank writes ``OUT_DIR/rank<r>.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

from lgl_helpers.core import distributed
from lgl_helpers.training import executor, stage2
from lgl_helpers.training.stage2 import executor as stage2_executor
from lgl_helpers.training.step_checkpoints import TrainingStopped


def main(out_dir: Path, config_file: Path) -> None:
    params = json.loads(config_file.read_text())
    # The test compares training, not embedding: the epochs' validation EER is a constant.
    stage2_executor.evaluate_trials = lambda *args, **kwargs: {"eer": 40.0, "min_dcf": 0.5, "min_dcf_0.01": 0.5}
    straight = stage2.run_stage2(stage2.LGLConfig(**params, run_name="a"))

    inputs, calls = executor.stage2_inputs, []

    def sigterm_on_rank_1(*args):
        calls.append(1)
        if distributed.rank() == 1 and len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return inputs(*args)

    executor.stage2_inputs = sigterm_on_rank_1
    stopped = None
    try:
        stage2.run_stage2(stage2.LGLConfig(**params, run_name="b"))
    except TrainingStopped as error:
        stopped = str(error)
    executor.stage2_inputs = inputs
    if distributed.is_main():
        shutil.copytree(Path(params["runs_dir"]) / "b", Path(params["runs_dir"]) / "c")
    distributed.barrier()
    resumed = stage2.run_stage2(stage2.LGLConfig(**params, run_name="b"))
    result = {
        "stopped": stopped,
        "batches_before_stop": len(calls),
        "straight": straight["state"]["history"],
        "resumed": resumed["state"]["history"],
    }
    (out_dir / f"rank{distributed.rank()}.json").write_text(json.dumps(result))
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
