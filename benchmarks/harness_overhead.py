"""How much does the dnnbench harness cost? The same DDP cell, dnnbench vs a bare hand-written loop.

A: ``dnnbench run framework=ddp model=resnet18 gpus=2 dataset=synthetic batch_size=32 …`` (CPU, gloo).
B: this file's ``--bare-worker``: the same model (torchvision resnet18, first conv adapted to
   1 channel, 10 classes), the same SGD, synthetic tensors of the same shape, plain tensor slicing
   instead of a DataLoader, launched with torchrun too. Same OMP_NUM_THREADS=1, warm-up and timed steps.

Both report global training throughput two ways: as dnnbench does (samples of all ranks over the
slowest rank's timed seconds) and from the median step time (world × batch / the slowest rank's
median step), which a burst of load from other processes on a shared machine barely moves. The
runs alternate A/B/A/B… so drifting load hits both; the result is the ratio dnnbench/bare per
pair, median and min–max. Not part of the test suite:

    .venv/bin/python benchmarks/harness_overhead.py            # 3 pairs, 20 timed steps
    .venv/bin/python benchmarks/harness_overhead.py --pairs 5 --steps 30
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from overhead_common import (
    cell_overrides,
    compare_pairs,
    dnnbench_train_phases,
    global_rates,
    parse_or_serve,
    run_torchrun_bare,
    torchrun_bare_loop,
)

BATCH, PROCS, TRAIN_SAMPLES = 32, 2, 4096


def ddp(model: Any) -> Any:
    from torch import nn  # in the worker only: the A/B driver does not need torch

    return nn.parallel.DistributedDataParallel(model)


def bare_worker(args: argparse.Namespace) -> None:
    """One rank of the hand-written loop (started by torchrun)."""
    torchrun_bare_loop(args, ddp, TRAIN_SAMPLES)


def run_dnnbench(args: argparse.Namespace, folder: Path) -> tuple[float, float]:
    overrides = [*cell_overrides("ddp", args, PROCS, threads=1), f"dataset.train_samples={TRAIN_SAMPLES}"]
    return global_rates(dnnbench_train_phases(overrides, folder, PROCS))


def main() -> None:
    args = parse_or_serve(__doc__, bare_worker, pairs=3, steps=20, batch=BATCH)
    if args is None:
        return
    compare_pairs(
        args,
        lambda folder: run_dnnbench(args, folder),
        lambda folder: global_rates(run_torchrun_bare(__file__, args, folder, PROCS)),
        "harness overhead, dnnbench/bare img/s | resnet18 DDP, 2 CPU procs (gloo, OMP_NUM_THREADS=1), synthetic",
    )


if __name__ == "__main__":
    main()
