"""Does ``torch.compile`` of the encoder pay for a Stage II training step? Eager against compiled, same steps.

Times ``--steps`` Stage II steps (ECAPA-TDNN + AAM head, Adam) of the demo's size by default (C=96,
mfa_channels=192, 16 × 1.2 s crops) with the eager encoder and with ``torch.compile(encoder)``, the two
alternating in ``--rounds`` rounds so that a change of load hits both; prints the compile time (the
first compiled step) and the median step time of each. A compiled encoder pays when its compile time
is won back within the steps a notebook's kernel runs (each notebook starts a new process).

Usage:
    python benchmarks/bench_compile.py [--channels 96] [--mfa-channels 192] [--batch 16] [--seconds 1.2]
        [--steps 10] [--rounds 3] [--threads 2] [--mode default]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lgl_helpers.core.losses import AAMSoftmax
from lgl_helpers.core.models import ECAPATDNN


def _steps(encoder, head, optimizer, wave, labels, n: int) -> list[float]:
    times = []
    for _ in range(n):
        tic = time.perf_counter()
        loss = head(encoder(wave), labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - tic)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=96)
    parser.add_argument("--mfa-channels", type=int, default=192)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=1.2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", default="default", help="torch.compile mode")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    wave = torch.randn(args.batch, int(args.seconds * 16000) + 240)
    labels = torch.randint(0, 64, (args.batch,))
    models = {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        encoder, head = ECAPATDNN(args.channels, args.mfa_channels), AAMSoftmax(64)
        optimizer = torch.optim.Adam(list(encoder.parameters()) + list(head.parameters()), lr=1e-3)
        models[name] = [torch.compile(encoder, mode=args.mode) if name == "compiled" else encoder, head, optimizer]
    tic = time.perf_counter()
    _steps(*models["compiled"], wave, labels, 1)  # compiles forward and backward
    compile_s = time.perf_counter() - tic
    _steps(*models["eager"], wave, labels, 1)  # the eager allocator and oneDNN warm-up
    times = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for name in times:
            times[name] += _steps(*models[name], wave, labels, args.steps)
    eager, compiled = (float(np.median(times[name])) for name in ("eager", "compiled"))
    print("| encoder | first step (s) | median step (s) | steps/s |\n| --- | ---: | ---: | ---: |")
    print(f"| eager | – | {eager:.3f} | {1 / eager:.2f} |")
    print(f"| torch.compile ({args.mode}) | {compile_s:.1f} | {compiled:.3f} | {1 / compiled:.2f} |")
    saved = eager - compiled
    payback = f"{compile_s / saved:.0f} steps" if saved > 0 else "never (no faster per step)"
    print(f"\ncompiled ÷ eager speed: {eager / compiled:.2f}×; the compile time is won back after {payback}")


if __name__ == "__main__":
    main()
