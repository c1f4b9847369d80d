"""What does dnnbench cost on top of FSDP2? ``dnnbench run framework=fsdp`` vs a bare FSDP loop.

A: ``dnnbench run framework=fsdp model=resnet18 gpus=2 dataset=synthetic batch_size=32 …`` (CPU, gloo,
   the default knobs: fsdp.wrap=block, reshard_after_forward=true, fp32).
B: this file's ``--bare-worker``: FSDP2 written by hand the way its documentation shards a ResNet:
   ``fully_shard`` on the stem's conv + batch norm (one unit, a list of modules), on every residual
   block, on the classifier, then on the root; the same sharding units dnnbench makes from
   jobs/pipeline/blocks.py, so both gather and reduce-scatter the same tensors. The rest is the DDP
   benchmark's bare loop (benchmarks/overhead_common.py: resnet18 for 1 channel, SGD, synthetic
   tensors sliced in batches, torchrun, OMP_NUM_THREADS=1).

Scored and paired as benchmarks/harness_overhead.py (DDP): global throughput from wall time and
from the median step, dnnbench/bare ratio per pair, median and min–max. Not part of the test suite:

    .venv/bin/python benchmarks/fsdp_overhead.py             # 3 pairs, 20 timed steps
    .venv/bin/python benchmarks/fsdp_overhead.py --pairs 5 --steps 30
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


def fsdp(model: Any) -> Any:
    from torch.distributed.fsdp import fully_shard  # in the worker only: the A/B driver does not need torch

    fully_shard([model.conv1, model.bn1], reshard_after_forward=True)
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            fully_shard(block, reshard_after_forward=True)
    fully_shard(model.fc, reshard_after_forward=True)
    fully_shard(model, reshard_after_forward=True)
    return model


def bare_worker(args: argparse.Namespace) -> None:
    """One rank of the hand-written loop (started by torchrun)."""
    torchrun_bare_loop(args, fsdp, TRAIN_SAMPLES)


def run_dnnbench(args: argparse.Namespace, folder: Path) -> tuple[float, float]:
    overrides = [*cell_overrides("fsdp", args, PROCS, threads=1), f"dataset.train_samples={TRAIN_SAMPLES}"]
    return global_rates(dnnbench_train_phases(overrides, folder, PROCS))


def main() -> None:
    args = parse_or_serve(__doc__, bare_worker, pairs=3, steps=20, batch=BATCH)
    if args is None:
        return
    compare_pairs(
        args,
        lambda folder: run_dnnbench(args, folder),
        lambda folder: global_rates(run_torchrun_bare(__file__, args, folder, PROCS)),
        "fsdp overhead, dnnbench/bare img/s | resnet18 FSDP2 (wrap=block, reshard, fp32), 2 CPU procs "
        "(gloo, OMP_NUM_THREADS=1), synthetic",
    )


if __name__ == "__main__":
    main()
