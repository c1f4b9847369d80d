"""What does dnnbench cost on top of Horovod? ``dnnbench run framework=horovod`` vs a bare Horovod loop.

A: ``dnnbench run framework=horovod model=resnet18 gpus=2 dataset=synthetic batch_size=32 …`` (CPU, Gloo).
B: this file's ``--bare-worker``, written here, following the protocol of Horovod's synthetic
   benchmark: one fixed random batch per process made before the clock starts, ``hvd.init``,
   ``DistributedOptimizer`` + broadcast of parameters and optimizer state, warm-up batches, then
   timed iterations of several batches each. Same model as dnnbench (torchvision resnet18, first
   conv rebuilt for 1 channel, 10 classes), same SGD, batch, image size (1×28×28), process count,
   threads (OMP_NUM_THREADS=1 and torch.set_num_threads(1)) and launcher (horovodrun -np 2
   -H localhost:2 --gloo, fusion threshold 64 MB, cycle time 1 ms).

Both are scored the way dnnbench's results are: samples of all ranks over the slowest rank's
timed seconds (Horovod's script prints the mean of per-iteration rates instead; both are given
for B). Runs alternate A/B/A/B… so drifting load on a shared machine hits both; the result is the
dnnbench/bare ratio per pair, median and min–max. Not part of the test suite:

    .venv/bin/python benchmarks/horovod_overhead.py                 # 5 pairs, 5 warm-up + 30 timed steps
    .venv/bin/python benchmarks/horovod_overhead.py --pairs 7 --steps 40
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from overhead_common import cell_overrides, dnnbench_train_phases, parse_or_serve

REPO = Path(__file__).resolve().parents[1]
BATCH, PROCS, THREADS = 32, 2, 1
BATCHES_PER_ITER = 5  # timed steps are grouped into iterations of this many, as in Horovod's benchmark
THREAD_ENV = {name: str(THREADS) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def bare_worker(args: argparse.Namespace) -> None:
    """One rank of the hand-written loop (started by horovodrun)."""
    import horovod.torch as hvd
    import torch
    from torch import nn
    from torchvision.models import resnet18

    torch.set_num_threads(THREADS)
    hvd.init()
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    criterion = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(hvd.rank())
    images = torch.randn((args.batch, 1, 28, 28), generator=generator)
    labels = torch.randint(0, 10, (args.batch,), generator=generator)

    def step() -> None:
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()

    model.train()
    for _ in range(args.warmup):
        step()
    hvd.barrier()
    rates, seconds, done = [], 0.0, 0
    while done < args.steps:
        batches = min(BATCHES_PER_ITER, args.steps - done)
        start = time.perf_counter()
        for _ in range(batches):
            step()
        elapsed = time.perf_counter() - start
        rates.append(args.batch * batches / elapsed)
        seconds += elapsed
        done += batches
    mine = torch.tensor([args.steps * args.batch, seconds, statistics.mean(rates)], dtype=torch.float64)
    gathered = hvd.allgather(mine.unsqueeze(0), name="bare.result")
    if hvd.rank() == 0:
        ranks = [{"samples": int(s), "seconds": float(t), "mean_iter_rate": float(r)} for s, t, r in gathered.tolist()]
        Path(args.result).write_text(json.dumps(ranks))
    hvd.shutdown()


def global_rate(ranks: list[dict]) -> float:
    return sum(r["samples"] for r in ranks) / max(r["seconds"] for r in ranks)


def run_dnnbench(args: argparse.Namespace, folder: Path) -> float:
    overrides = [
        *cell_overrides("horovod", args, PROCS, threads=THREADS),
        "horovod.fusion_threshold_mb=64",
        "horovod.cycle_time_ms=1.0",
    ]
    phases = dnnbench_train_phases(overrides, folder, PROCS)
    return global_rate(phases)


def run_bare(args: argparse.Namespace, folder: Path) -> tuple[float, float]:
    """(global rate as dnnbench scores it, Horovod's score: mean per-iteration rate × processes)."""
    folder.mkdir(parents=True)
    result = folder / "bare.json"
    subprocess.run(
        [sys.executable, "-m", "horovod.runner.launch", "-np", str(PROCS), "-H", f"localhost:{PROCS}", "--gloo",
         "--fusion-threshold-mb", "64", "--cycle-time-ms", "1.0",
         sys.executable, str(Path(__file__).resolve()), "--bare-worker",
         "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
         "--result", str(result)],
        check=True, env={**os.environ, **THREAD_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ranks = json.loads(result.read_text())
    return global_rate(ranks), statistics.mean(r["mean_iter_rate"] for r in ranks) * len(ranks)


def main() -> None:
    args = parse_or_serve(__doc__, bare_worker, pairs=5, steps=30, batch=BATCH)
    if args is None:
        return

    started = time.perf_counter()
    ours, bare, ratios = [], [], []
    with tempfile.TemporaryDirectory(prefix="dnnbench-hvd-overhead-") as tmp:
        for pair in range(args.pairs):
            # Alternate which goes first, so neither always runs right after the other's teardown.
            if pair % 2 == 0:
                a = run_dnnbench(args, Path(tmp) / f"a{pair}")
                b, b_hvd = run_bare(args, Path(tmp) / f"b{pair}")
            else:
                b, b_hvd = run_bare(args, Path(tmp) / f"b{pair}")
                a = run_dnnbench(args, Path(tmp) / f"a{pair}")
            ours.append(a)
            bare.append(b)
            ratios.append(a / b)
            print(f"pair {pair + 1}/{args.pairs}: dnnbench {a:7.1f} img/s  bare {b:7.1f} img/s "
                  f"(Horovod's mean-of-iterations score {b_hvd:7.1f})  ratio {a / b:.3f}", flush=True)  # fmt: skip
    median = statistics.median(ratios)
    print(f"\n{args.pairs} A/B pairs in {time.perf_counter() - started:.0f} s; "
          f"ratio dnnbench/bare median {median:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")  # fmt: skip
    print("\nBENCHMARKS.md line:")
    print(f"| horovod overhead | resnet18 Horovod, {PROCS} CPU procs (gloo, OMP_NUM_THREADS={THREADS}), synthetic "
          f"1×28×28, batch {args.batch}, {args.warmup}+{args.steps} steps | {args.pairs} alternating pairs | "
          f"dnnbench {statistics.median(ours):.1f} img/s vs bare {statistics.median(bare):.1f} img/s (medians) | "
          f"ratio {median:.3f} ({min(ratios):.3f}–{max(ratios):.3f}) |")  # fmt: skip


if __name__ == "__main__":
    main()
