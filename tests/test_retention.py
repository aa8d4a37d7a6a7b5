"""Retention of per-epoch files: best, last and every k-th epoch (Stage II's loss records: test_stage2.py)."""

import pytest

from lgl_helpers.training import retention
from lgl_helpers.training.stage1 import checkpoints as checkpoints_module


@pytest.mark.parametrize(
    "number, keep_every, protected, kept",
    [
        (10, 10, False, True),
        (11, 10, False, False),
        (11, 10, True, True),
        (7, 1, False, True),  # 1 keeps every epoch
        (10, 0, False, False),  # 0 keeps only the protected ones
        (10, 0, True, True),
    ],
)
def test_keep_epoch(number, keep_every, protected, kept):
    assert retention.keep_epoch(number, keep_every, protected=protected) is kept


def test_stage1_keeps_best_latest_and_every_kth_evaluated_checkpoint(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    evaluated = [e for e in range(1, 26) if e % 2 == 1 or e == 25]  # test_interval 2 (odd epochs here) and the last
    for name in [f"epoch_{e:03d}.model" for e in evaluated] + ["last.model"]:
        (checkpoints / name).write_bytes(b"x")
    (tmp_path / "best.model").write_bytes(b"x")
    history = [{"epoch": 0, "eer": 50.0}]
    history += [{"epoch": e, "eer": 10.0} if e in evaluated else {"epoch": e} for e in range(1, 26)]
    state = checkpoints_module.RunState(epoch=25, history=history, best={"epoch": 7, "eer": 9.0})

    checkpoints_module.thin_checkpoints(tmp_path, state, keep_every=5)
    # best 7, latest 25 and the evaluated multiples of 5 (15; 5 and 25 too); last.model and best.model stay.
    assert sorted(p.name for p in checkpoints.glob("epoch_*.model")) == [
        "epoch_005.model",
        "epoch_007.model",
        "epoch_015.model",
        "epoch_025.model",
    ]
    assert (checkpoints / "last.model").is_file() and (tmp_path / "best.model").is_file()


@pytest.mark.slow
def test_stage1_thins_its_checkpoints_with_the_configured_keep_every(tiny_corpus, tmp_path):
    from lgl_helpers.training import stage1

    config = stage1.Stage1Config(
        run_name="t",
        runs_dir=str(tmp_path),
        train_list=str(tiny_corpus / "lists" / "train_list.txt"),
        train_root=str(tiny_corpus / "train"),
        test_root=str(tiny_corpus / "test"),
        trials=str(tiny_corpus / "lists" / "trials.txt"),
        augment=False,
        channels=16,
        frames=30,
        batch_size=8,
        epochs=3,
        test_interval=1,
        keep_every=2,
        workers=0,
        device="cpu",
        interactive=False,
    )
    result = stage1.train_stage1(config)
    kept = {int(p.stem.split("_")[1]) for p in (stage1.stage_folder(config) / "checkpoints").glob("epoch_*.model")}
    # Every epoch is evaluated; 2 stays as the multiple of keep_every, 3 as the latest, and the best one.
    assert kept == {2, 3, result["best_epoch"]}
    with pytest.raises(ValueError, match=r"Stage1Config.keep_every=-1"):
        stage1.Stage1Config(keep_every=-1).validate()
