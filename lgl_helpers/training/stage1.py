"""Stage I: contrastive learning with augmentation adversarial training (METHOD.md, "Stage I"); notebook 01.

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

Run folder ``runs/<run>/stage1/``: ``stage1_params.json``, ``stage1.log``, ``scores.txt``,
``checkpoints/last.model`` (every epoch, the resume point), ``checkpoints/epoch_XXX.model`` (every
evaluated epoch), ``best.model`` and ``metrics.json``. Checkpoints are kit checkpoints
(:func:`lgl_helpers.core.models.load_encoder` reads them) that also hold the loss, discriminator,
optimizers, scheduler, epoch, RNG states, history and resolved parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lgl_helpers import runs
from lgl_helpers.config import (
    NotebookConfig, check_channels, check_fraction, check_int, check_non_negative, check_positive,
)
from lgl_helpers.core.augment import AugmentSources, describe_recipe
from lgl_helpers.core.data import Stage1Dataset, check_training_list, make_loader, stage1_views
from lgl_helpers.core.embed import evaluate_trials
from lgl_helpers.corpus.lists import Trial, TrainEntry, check_list, read_eval_trials
from lgl_helpers.core.losses import AATDiscriminator, ContrastiveLoss, grad_reverse
from lgl_helpers.core.models import ECAPATDNN, load_encoder, save_encoder

log = logging.getLogger(__name__)

STAGE_DIR = "stage1"
# Fields that only steer one call (where to stop, how to show it) and may change when a run is resumed.
RUN_CONTROL_FIELDS = ("epochs", "resume", "max_steps", "interactive", "workers", "device", "bf16")


@dataclass
class Stage1Config(NotebookConfig):
    """Parameters of notebook 01_stage1_contrastive (field names equal its parameters cell); defaults = demo profile."""

    run_name: str = "demo"
    runs_dir: str = "runs"
    train_list: str = ""
    train_root: str = ""
    test_root: str = ""
    trials: str = ""
    val_trials: str = ""
    musan_root: str = ""
    rir_root: str = ""
    augment: bool = True
    channels: int = 128
    frames: int = 100
    batch_size: int = 32
    epochs: int = 12
    lr: float = 0.001
    lr_decay: float = 0.90
    decay_every: int = 5
    test_interval: int = 2
    aat_weight: float = 3.0
    workers: int = 1
    device: str = "auto"
    bf16: bool = False
    resume: bool = True
    max_steps: int = 0
    seed: int = 0
    interactive: bool = True

    def validate(self) -> None:
        check_channels(self.name_of("channels"), self.channels)
        check_int(self.name_of("frames"), self.frames, 1)
        check_int(self.name_of("batch_size"), self.batch_size, 2, "an integer >= 2 (the contrastive loss needs negatives)")
        check_int(self.name_of("epochs"), self.epochs, 1)
        check_positive(self.name_of("lr"), self.lr)
        check_fraction(self.name_of("lr_decay"), self.lr_decay)
        check_int(self.name_of("decay_every"), self.decay_every, 1)
        check_int(self.name_of("test_interval"), self.test_interval, 1)
        check_non_negative(self.name_of("aat_weight"), self.aat_weight)
        check_int(self.name_of("workers"), self.workers, 0)
        check_int(self.name_of("max_steps"), self.max_steps, 0, "an integer >= 0 (0 = no limit)")


@dataclass
class Stage1Data:
    """Everything Stage I reads, validated: resolved paths, lists, augmentation sets and the dataset."""

    paths: dict
    entries: list[TrainEntry]
    val_trials: list[Trial]
    test_trials: list[Trial]
    sources: AugmentSources | None
    dataset: Stage1Dataset

    @property
    def same_val_test(self) -> bool:
        return self.paths["val_trials"] == self.paths["trials"]


def stage_folder(config: Stage1Config) -> Path:
    return runs.run_folder(config.run_name, config.runs_dir) / STAGE_DIR


def check_inputs(config: Stage1Config, paths: dict, *, audio: bool = True) -> list[TrainEntry]:
    """The checks of Stage I's training data that need no model; returns the training list's entries.

    ``paths`` as from :func:`lgl_helpers.runs.resolve_data_paths`. The list must be set and well formed,
    hold a full batch of ``batch_size`` utterances and a file as long as one crop of ``frames``; with
    ``audio`` every listed wav must also be usable (:func:`lgl_helpers.corpus.lists.check_list`, header reads,
    problems as ``file:line``). ``lgl-kit doctor`` calls this with ``audio=False``. Raises ValueError
    (ListCheckError, CropError) naming the parameter, file or line.
    """
    entries = check_training_list(paths, runs.run_folder(config.run_name, config.runs_dir),
                                  batch_size=config.batch_size, frames=config.frames)
    if audio:
        check_list(paths["train_list"], paths["train_root"], "train")
    return entries


def prepare_data(config: Stage1Config) -> Stage1Data:
    """Resolve and check every input before any model is built: lists, wav headers, batch and crop
    against the list, augmentation roots, trial files.

    Empty data parameters come from ``runs/<run>/data.json``. Raises ValueError / FileNotFoundError /
    :class:`lgl_helpers.core.augment.AugmentError` / :class:`lgl_helpers.core.data.CropError` naming the problem.
    """
    run_dir = runs.run_folder(config.run_name, config.runs_dir)
    paths = runs.resolve_data_paths(
        run_dir, **{key: getattr(config, key) for key in runs.DATA_KEYS}
    )
    entries = check_inputs(config, paths)
    if config.augment:
        sources = AugmentSources.from_roots(paths["musan_root"], paths["rir_root"])
    else:
        log.info("augment=False: training on clean views")
        sources = None
    # check_inputs has read every file's header: the dataset need not look for them again.
    dataset = Stage1Dataset(entries, paths["train_root"], config.frames, sources, seed=config.seed, check_files=False)
    val_trials, test_trials = read_eval_trials(paths)
    log.info(
        "Stage I data: %d utterances, %d validation trials, %d test trials, augmentation: %s",
        len(entries), len(val_trials), len(test_trials), sources.summary() if sources else "none (clean views)",
    )
    return Stage1Data(paths, entries, val_trials, test_trials, sources, dataset)


def preview_views(data: Stage1Data, n_items: int = 4, epoch: int = 0) -> dict:
    """The first ``n_items`` items of an epoch's first batch as Stage I sees them.

    Returns dict of numpy arrays (n, T): ``crop0``, ``crop1`` (clean), ``A``, ``S``, ``P``; and
    ``captions``: per item, the augmentations a and b in words.
    """
    loader = make_loader(data.dataset, min(n_items, len(data.dataset)), 0, data.dataset.seed, "cpu")
    loader.sampler.set_epoch(epoch)
    batch = next(iter(loader))
    views = stage1_views(batch, "cpu")
    captions = [
        f"a: {describe_recipe(batch['recipe_a'], i)} | b: {describe_recipe(batch['recipe_b'], i)}"
        for i in range(batch["crops"].shape[0])
    ]
    out = {"crop0": batch["crops"][:, 0].numpy(), "crop1": batch["crops"][:, 1].numpy()}
    out.update({name: view.numpy() for name, view in zip("ASP", views)})
    out["captions"] = captions
    return out


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def export_reference(checkpoint: str | Path, out_path: str | Path) -> Path:
    """Write a Stage I kit checkpoint as the reference code's plain state dict (``Network.*``, ``Loss.w/b``, ``AATNet.*``).

    The result loads with the reference's ``model.load_network`` (and with :func:`load_encoder`).
    """
    obj = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("stage") != STAGE_DIR or "loss" not in obj or "aat" not in obj:
        raise ValueError(f"{checkpoint}: not a Stage I kit checkpoint (needs 'stage': 'stage1', 'encoder', 'loss', 'aat')")
    state = {f"Network.{k}": v for k, v in obj["encoder"].items()}
    state.update({f"Loss.{k}": v for k, v in obj["loss"].items()})
    state.update({f"AATNet.{k}": v for k, v in obj["aat"].items()})
    return runs.atomic_torch_save(state, out_path)


def _epoch_path(stage_dir: Path, epoch: int) -> Path:
    return stage_dir / "checkpoints" / f"epoch_{epoch:03d}.model"


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


@dataclass
class _State:
    epoch: int = 0
    history: list = dataclasses.field(default_factory=list)
    best: dict | None = None
    untrained: dict | None = None
    wall_seconds: float = 0.0


def _evaluate(model, trials, root, device) -> dict:
    result = evaluate_trials(model, trials, root, device=device, show_progress=False)
    return {"eer": float(result["eer"]), "min_dcf": float(result["min_dcf"]), "min_dcf_0.01": float(result["min_dcf_0.01"])}


def _scores_text(history: list[dict]) -> str:
    lines = []
    for rec in history:
        if rec["epoch"] == 0:
            head = "Epoch 0 (untrained)"
        else:
            head = (
                f"Epoch {rec['epoch']}, LR {rec['lr']:f}, Acc {rec['top1']:.2f}, LOSS {rec['loss']:f}, "
                f"AAT {rec['aat_loss']:.4f}, DISC {rec['disc_loss']:.4f}"
            )
        if rec.get("eer") is not None:
            head += f", EER {rec['eer']:.4f}, minDCF {rec['min_dcf']:.4f}, minDCF0.01 {rec['min_dcf_0.01']:.4f}"
        lines.append(head)
    return "\n".join(lines) + "\n"


def _resolved_params(config: Stage1Config, data: Stage1Data) -> dict:
    params = dataclasses.asdict(config)
    params.update({key: (str(value) if value is not None else "") for key, value in data.paths.items()})
    return params


def train_stage1(
    config: Stage1Config,
    on_epoch: Callable[[dict, list[dict]], None] | None = None,
    data: Stage1Data | None = None,
) -> dict:
    """Train Stage I as configured; resumes from ``checkpoints/last.model`` when ``config.resume``.

    ``on_epoch(record, history)`` is called after epoch 0 (untrained evaluation) and every epoch;
    ``record`` holds ``epoch``, ``lr``, ``loss``, ``contrastive_loss``, ``top1``, ``aat_loss``,
    ``disc_loss``, ``disc_acc``, ``samples_per_s``, ``seconds`` and, on evaluated epochs, ``eer``,
    ``min_dcf``, ``min_dcf_0.01``. ``data`` from :func:`prepare_data` (built here when None).

    Returns the content of ``metrics.json`` plus ``history``, ``completed`` (False when ``max_steps``
    stopped the call; the running epoch is then not saved, as after an interruption) and ``stage_dir``.
    """
    started = time.perf_counter()
    stage_dir = stage_folder(config)
    runs.add_file_log(stage_dir, STAGE_DIR)
    data = data if data is not None else prepare_data(config)
    device = runs.get_device(config.device)
    use_bf16 = config.bf16 and device.type == "cuda"
    if config.bf16 and not use_bf16:
        log.info("bf16=True applies to CUDA only; training in float32 on %s", device)
    ckpt_dir = stage_dir / "checkpoints"
    params = _resolved_params(config, data)

    runs.seed_everything(config.seed)
    encoder = ECAPATDNN(config.channels).to(device)
    loss_fn = ContrastiveLoss().to(device)
    aat = AATDiscriminator().to(device)
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(loss_fn.parameters()), lr=config.lr)
    aat_optimizer = torch.optim.Adam(aat.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.decay_every, gamma=config.lr_decay)
    state = _State()

    last = ckpt_dir / "last.model"
    if config.resume and last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        if int(ckpt["channels"]) != config.channels:
            raise ValueError(
                f"{last}: checkpoint has channels={ckpt['channels']} but channels={config.channels}; "
                "use the same channels or resume=False to start over"
            )
        changed = {
            k: (ckpt["params"].get(k), v) for k, v in params.items()
            if k not in RUN_CONTROL_FIELDS and ckpt["params"].get(k) != v
        }
        if changed:
            log.warning("resuming with changed parameters (saved → now): %s", changed)
        encoder.load_state_dict(ckpt["encoder"])
        loss_fn.load_state_dict(ckpt["loss"])
        aat.load_state_dict(ckpt["aat"])
        optimizer.load_state_dict(ckpt["optimizer"])
        aat_optimizer.load_state_dict(ckpt["aat_optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"])
        state = _State(ckpt["epoch"], list(ckpt["history"]), ckpt["best"], ckpt["untrained"], float(ckpt["wall_seconds"]))
        log.info("resuming Stage I from %s (epoch %d done)", last, state.epoch)
    elif not config.resume:
        earlier = [stage_dir / name for name in ("best.model", "metrics.json", "scores.txt")]
        stale = sorted(ckpt_dir.glob("*.model")) + [path for path in earlier if path.is_file()]
        if stale:
            log.warning("resume=False: removing %d file(s) of an earlier run in %s", len(stale), stage_dir)
            for path in stale:
                path.unlink()
    runs.open_run(stage_dir, params, STAGE_DIR)

    def save(epoch: int, evaluated: bool, improved: bool) -> None:
        extra = {
            "stage": STAGE_DIR,
            "loss": _cpu_state(loss_fn),
            "aat": _cpu_state(aat),
            "optimizer": optimizer.state_dict(),
            "aat_optimizer": aat_optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "rng": _rng_state(),
            "params": params,
            "history": state.history,
            "best": state.best,
            "untrained": state.untrained,
            "wall_seconds": state.wall_seconds,
        }
        first = _epoch_path(stage_dir, epoch) if evaluated else last
        save_encoder(first, encoder, extra)
        payload = first.read_bytes()
        if improved:
            runs.atomic_write_bytes(stage_dir / "best.model", payload)
        if first != last:
            runs.atomic_write_bytes(last, payload)  # last.model is written after the others: a complete resume point

    if state.untrained is None:
        tic = time.perf_counter()
        val = _evaluate(encoder, data.val_trials, data.paths["test_root"], device)
        test = val if data.same_val_test else _evaluate(encoder, data.test_trials, data.paths["test_root"], device)
        state.untrained = {"val": val, "test": test}
        state.wall_seconds += time.perf_counter() - tic
        record = {"epoch": 0, **val, "seconds": time.perf_counter() - tic}
        state.history.append(record)
        log.info("epoch 0 (untrained): EER %.2f%% minDCF %.4f", val["eer"], val["min_dcf"])
        if on_epoch:
            on_epoch(record, state.history)

    loader = None
    steps_done = 0
    completed = True
    labels = None
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    for epoch in range(state.epoch + 1, config.epochs + 1):
        if config.max_steps and steps_done >= config.max_steps:
            completed = False
            break
        loader = loader or make_loader(data.dataset, config.batch_size, config.workers, config.seed, device)
        loader.sampler.set_epoch(epoch)
        for module in (encoder, loss_fn, aat):
            module.train()
        lr = optimizer.param_groups[0]["lr"]
        sums = {"loss": 0.0, "contrastive_loss": 0.0, "top1": 0.0, "aat_loss": 0.0, "disc_loss": 0.0, "disc_acc": 0.0}
        n_batches = 0
        tic = time.perf_counter()
        bar = runs.progress(loader, desc=f"stage1 epoch {epoch}/{config.epochs}", total=len(loader), unit="batch", leave=False)
        for batch in bar:
            if config.max_steps and steps_done >= config.max_steps:
                completed = False
                break
            view_a, view_s, view_p = stage1_views(batch, device)
            with autocast():
                emb_a, emb_s, emb_p = (encoder(v).float() for v in (view_a, view_s, view_p))  # each (B, 192)
            batch_size = emb_a.shape[0]
            if labels is None or labels.shape[0] != 2 * batch_size:
                labels = torch.cat([torch.ones(batch_size), torch.zeros(batch_size)]).long().to(device)
            pairs = torch.cat([torch.cat([emb_a, emb_s], 1), torch.cat([emb_a, emb_p], 1)], 0)  # (2B, 384)

            # 1. discriminator: same augmentation [A, S] → 1, different [A, P] → 0, on detached embeddings
            disc_logits = aat(pairs.detach())
            disc_loss = F.cross_entropy(disc_logits, labels)
            aat_optimizer.zero_grad(set_to_none=True)
            disc_loss.backward()
            aat_optimizer.step()

            # 2. encoder: contrastive on (A, P) + aat_weight · discriminator CE through gradient reversal
            aat_loss = F.cross_entropy(aat(grad_reverse(pairs)), labels)
            contrastive, top1 = loss_fn(torch.stack([emb_a, emb_p], dim=1))
            loss = contrastive + config.aat_weight * aat_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            n_batches += 1
            steps_done += 1
            sums["loss"] += float(loss.detach())
            sums["contrastive_loss"] += float(contrastive.detach())
            sums["top1"] += top1
            sums["aat_loss"] += float(aat_loss.detach())
            sums["disc_loss"] += float(disc_loss.detach())
            sums["disc_acc"] += float((disc_logits.argmax(1) == labels).float().mean()) * 100
            elapsed = time.perf_counter() - tic
            bar.set_postfix(
                loss=f"{sums['loss'] / n_batches:.3f}", top1=f"{sums['top1'] / n_batches:.1f}",
                aat=f"{sums['aat_loss'] / n_batches:.3f}", sps=f"{n_batches * batch_size / elapsed:.0f}",
            )
        bar.close()
        if not completed:
            log.info("max_steps=%d reached during epoch %d: stopping; the epoch is not saved", config.max_steps, epoch)
            break
        train_seconds = time.perf_counter() - tic
        scheduler.step()
        record = {"epoch": epoch, "lr": lr, **{k: v / n_batches for k, v in sums.items()},
                  "samples_per_s": n_batches * config.batch_size / train_seconds}
        evaluated = epoch % config.test_interval == 0 or epoch == config.epochs
        improved = False
        if evaluated:
            record.update(_evaluate(encoder, data.val_trials, data.paths["test_root"], device))
            improved = state.best is None or record["eer"] < state.best["eer"]
            if improved:
                state.best = {"epoch": epoch, "eer": record["eer"], "min_dcf": record["min_dcf"],
                              "min_dcf_0.01": record["min_dcf_0.01"]}
        record["seconds"] = time.perf_counter() - tic
        state.wall_seconds += record["seconds"]
        state.history.append(record)
        state.epoch = epoch
        save(epoch, evaluated, improved)
        runs.atomic_write_text(stage_dir / "scores.txt", _scores_text(state.history))
        log.info(
            "epoch %d/%d lr %.6f loss %.4f top1 %.1f%% aat %.4f disc %.4f (acc %.0f%%) %.0f samples/s%s",
            epoch, config.epochs, lr, record["loss"], record["top1"], record["aat_loss"], record["disc_loss"],
            record["disc_acc"], record["samples_per_s"],
            f" | val EER {record['eer']:.2f}% minDCF {record['min_dcf']:.4f}" if evaluated else "",
        )
        if on_epoch:
            on_epoch(record, state.history)

    result = {"completed": completed, "stage_dir": str(stage_dir), "history": state.history}
    if not completed or state.best is None:
        result.update(epochs_run=state.epoch, wall_seconds=state.wall_seconds)
        return result

    best_path = stage_dir / "best.model"
    if data.same_val_test:
        test = {k: state.best[k] for k in ("eer", "min_dcf", "min_dcf_0.01")}
    else:
        test = _evaluate(load_encoder(best_path), data.test_trials, data.paths["test_root"], device)
    untrained = state.untrained["test"]
    metrics = {
        **test,
        "best_epoch": state.best["epoch"],
        "untrained_eer": untrained["eer"],
        "untrained_min_dcf": untrained["min_dcf"],
        "untrained_min_dcf_0.01": untrained["min_dcf_0.01"],
        "val_eer": state.best["eer"],
        "epochs_run": state.epoch,
        "wall_seconds": state.wall_seconds,
        "call_seconds": time.perf_counter() - started,
        "best_checkpoint": str(best_path),
        "trials": str(data.paths["trials"]),
        "val_trials": str(data.paths["val_trials"]),
        "val_is_test": data.same_val_test,
    }
    runs.write_json(stage_dir / "metrics.json", metrics)
    log.info(
        "Stage I done: best epoch %d, test EER %.2f%% (untrained %.2f%%), minDCF %.4f; %s",
        metrics["best_epoch"], metrics["eer"], metrics["untrained_eer"], metrics["min_dcf"], best_path,
    )
    result.update(metrics)
    return result


def results_table(metrics: dict) -> str:
    """Markdown table of ``metrics.json``: the untrained encoder against the best Stage I epoch on the test trials."""
    rows = [
        "| encoder | EER (%) | minDCF (p=0.05) | minDCF (p=0.01) |",
        "| --- | ---: | ---: | ---: |",
        f"| untrained (epoch 0) | {metrics['untrained_eer']:.2f} | {metrics['untrained_min_dcf']:.4f} | "
        f"{metrics['untrained_min_dcf_0.01']:.4f} |",
        f"| Stage I, best epoch {metrics['best_epoch']} of {metrics['epochs_run']} | {metrics['eer']:.2f} | "
        f"{metrics['min_dcf']:.4f} | {metrics['min_dcf_0.01']:.4f} |",
    ]
    note = " (validation = test list: the best epoch was chosen on the test set)" if metrics.get("val_is_test") else ""
    return "\n".join(rows) + f"\n\nTest trials: `{metrics['trials']}`{note}; training took {metrics['wall_seconds'] / 60:.1f} min."
