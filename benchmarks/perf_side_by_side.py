"""The kit against the reference LGL implementation (TaoRuijie/Loss-Gated-Learning), one process, same inputs.

One row per measure, ratio = kit speed / reference speed (> 1: the kit is faster): Stage II loading +
augmentation (3 s crops, one process), a Stage II train step (C=512, 32 × 3 s, fp32), full-length
test embedding, EER + minDCF(0.05) on 550,894 trials; each the median of ``--repeats`` runs in which
reference and kit take turns. The reference is read from a clone ORIG (its ``Stage2/`` files, loaded in
memory with ``.cuda()`` patched away, :func:`_load_reference`); nothing of it is kept here.

Usage:
    git clone https://github.com/TaoRuijie/Loss-Gated-Learning /tmp/lgl_reference
    lgl-kit toy runs/toy
    python benchmarks/perf_side_by_side.py /tmp/lgl_reference runs/toy --train-root runs/toy/train \\
        --test-root runs/toy/test [--repeats 3] [--quick] [--json out.json]
CORPUS is VoxCeleb-laid-out: wav/, lists/train_list.txt, lists/trials.txt, musan_split/, rirs/simulated_rirs/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import types

import numpy as np
import soundfile as sf
import torch

from lgl_helpers.core import augment, data, embed, losses, metrics, models
from lgl_helpers.corpus import lists


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("orig", help="work tree of the reference code (Stage1/, Stage2/)")
    ap.add_argument("corpus")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each measure (reference and kit in turn); medians")
    ap.add_argument("--json", default=None)
    for key in ("train-root", "test-root", "train-list", "trials", "musan", "rirs"):
        ap.add_argument("--" + key, default=None, help="override the path under CORPUS")
    return ap.parse_args()


def _module(folder: str, name: str, patches: tuple[tuple[str, str], ...]) -> types.ModuleType:
    """``folder/name.py`` executed as module ``name`` after the text replacements ``patches``."""
    path = os.path.join(folder, name + ".py")
    src = open(path).read()
    for old, new in patches:
        src = src.replace(old, new)
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module  # the reference's modules import one another by name
    exec(compile(src, path, "exec"), module.__dict__)
    return module


def _load_reference(orig: str) -> tuple[dict, types.ModuleType]:
    """The reference's Stage II modules (encoder, loss, tools) and its data loader module, patched for
    the CPU (``.cuda()`` dropped) and for today's numpy (``numpy.float`` is gone)."""
    folder = os.path.join(orig, "Stage2")
    cpu = (("torch.device('cuda')", "torch.device('cpu')"), (".cuda()", ""))
    sys.path.insert(0, folder)
    try:
        mods = {name: _module(folder, name, cpu) for name in ("tools", "loss", "encoder")}
        loader = _module(folder, "dataLoader", (("numpy.float)", "numpy.float64)"),))
    finally:
        sys.path.remove(folder)
    return mods, loader


def _loading(a, ref_loader, train, tlist, musan, rirs) -> tuple[float, float]:
    # The reference loader fails on utterances shorter than its 3 s crop: both sides get the same ≥ 3.1 s subset.
    long_list = os.path.join("/tmp", "perf_long_list.txt")
    with open(tlist) as f, open(long_list, "w") as g:
        g.writelines(line for line in f if float(line.split()[2]) >= 3.1)
    ds_ref = ref_loader.train_loader(
        train_list=long_list,
        train_path=train,
        musan_path=musan,
        rir_path=os.path.join(rirs, "simulated_rirs"),
        max_frames=300,
        dic_label={line.split()[1]: 0 for line in open(long_list)},
    )
    n = 64 if a.quick else 256
    start = time.perf_counter()
    for i in range(n):
        ds_ref[i % len(ds_ref)]
    ref = n / (time.perf_counter() - start)
    entries = lists.read_train_list(long_list)
    sources = augment.AugmentSources.from_roots(musan, rirs)
    ds_kit = data.Stage2Dataset(entries, train, np.zeros(len(entries), dtype=np.int64), frames=300, sources=sources)
    batch, done = 32, 0
    start = time.perf_counter()
    while done < n:
        items = [ds_kit[((done + j) % len(ds_kit), 0, 0)] for j in range(batch)]
        data.stage2_inputs(ds_kit.collate(items), "cpu")
        done += batch
    return ref, done / (time.perf_counter() - start)


def _steps_per_s(net, head, call, reps: int) -> float:
    x = torch.randn(32, 48240)
    y = torch.randint(0, 1000, (32,))
    opt = torch.optim.Adam(list(net.parameters()) + list(head.parameters()), lr=1e-3)
    for k in range(reps + 1):
        if k == 1:  # the first step warms up the allocator and oneDNN
            start = time.perf_counter()
        loss = call(net, head, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return reps / (time.perf_counter() - start)


def _train_step(a, ref) -> tuple[float, float]:
    reps = 2 if a.quick else 3
    torch.manual_seed(0)
    ref_rate = _steps_per_s(
        ref["encoder"].ECAPA_TDNN(C=512),
        ref["loss"].LossFunction(n_class=1000),
        lambda n, h, x, y: h(n(x), y, 1e9)[0],
        reps,
    )
    torch.manual_seed(0)
    kit_rate = _steps_per_s(models.ECAPATDNN(512), losses.AAMSoftmax(1000), lambda n, h, x, y: h(n(x), y).loss, reps)
    return ref_rate, kit_rate


def _embedding(a, ref, test, trials_path) -> tuple[float, float]:
    pairs = [line.split() for line in open(trials_path)]
    files = sorted({p for _, p, _ in pairs} | {q for _, _, q in pairs})[: (60 if a.quick else 200)]
    net = ref["encoder"].ECAPA_TDNN(C=512)
    net.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for f in files:
            audio, _ = sf.read(os.path.join(test, f))
            net(torch.FloatTensor(np.stack([audio], axis=0)))
    ref_rate = len(files) / (time.perf_counter() - start)
    kit_net = models.ECAPATDNN(512)
    start = time.perf_counter()
    embed.embed_files(kit_net, [os.path.join(test, f) for f in files], device="cpu", show_progress=False)
    return ref_rate, len(files) / (time.perf_counter() - start)


def _metrics(ref) -> tuple[float, float, int]:
    tools = ref["tools"]
    rng = np.random.default_rng(0)
    n = 550894
    lab = (rng.random(n) < 0.5).astype(int)
    sc = rng.normal(0, 1, n) + 2 * lab
    start = time.perf_counter()
    tools.tuneThresholdfromScore(list(sc), list(lab), [1, 0.1])
    fnrs, fprs, thresholds = tools.ComputeErrorRates(list(sc), list(lab))
    tools.ComputeMinDcf(fnrs, fprs, thresholds, 0.05, 1, 1)
    ref_rate = 1 / (time.perf_counter() - start)
    start = time.perf_counter()
    metrics.eer_and_min_dcf(sc, lab, p_targets=(0.05,))
    return ref_rate, 1 / (time.perf_counter() - start), n


def main() -> None:
    a = _args()
    torch.set_num_threads(a.threads)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    c = a.corpus
    train = a.train_root or os.path.join(c, "wav")
    test = a.test_root or os.path.join(c, "wav")
    tlist = a.train_list or os.path.join(c, "lists/train_list.txt")
    trials = a.trials or os.path.join(c, "lists/trials.txt")
    musan = a.musan or os.path.join(c, "musan_split")
    rirs = a.rirs or os.path.join(c, "rirs")
    ref, ref_loader = _load_reference(a.orig)
    rows = []

    def row(name: str, measure, unit: str) -> None:
        # Reference and kit alternate inside each repeat, so a change of load hits both; medians over repeats.
        runs = [measure()[:2] for _ in range(a.repeats)]
        ratios = [kit_rate / ref_rate for ref_rate, kit_rate in runs]
        ref_rate, kit_rate = (float(np.median([r[i] for r in runs])) for i in (0, 1))
        ratio = float(np.median(ratios))
        rows.append({"measure": name, "ref": ref_rate, "kit": kit_rate, "unit": unit, "ratio": ratio, "ratios": ratios})
        spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
        print(f"| {name} | {ref_rate:.2f} | {kit_rate:.2f} | {unit} | {ratio:.2f}×{spread} |", flush=True)

    print(
        f"| measure | reference | kit | unit | kit ÷ reference, median of {a.repeats} (range) |\n|---|---|---|---|---|",
        flush=True,
    )
    row(
        "Stage II loading + augmentation, 1 process",
        lambda: _loading(a, ref_loader, train, tlist, musan, rirs),
        "samples/s",
    )
    row("Stage II train step, C=512, 32 × 3 s, fp32", lambda: _train_step(a, ref), "steps/s")
    row("test embedding, full length, C=512", lambda: _embedding(a, ref, test, trials), "files/s")
    row("EER + minDCF(0.05), 550,894 trials", lambda: _metrics(ref), "lists/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
