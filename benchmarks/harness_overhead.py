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
BATCH, PROCS, TRAIN_SAMPLES = 32, 2, 4096


def bare_worker(args: argparse.Namespace) -> None:
    """One rank of the hand-written loop (started by torchrun)."""
    import torch
    import torch.distributed as dist
    from torch import nn
    from torchvision.models import resnet18

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(rank)
    images = torch.randn((TRAIN_SAMPLES // world, 1, 28, 28), generator=generator)
    labels = torch.randint(0, 10, (TRAIN_SAMPLES // world,), generator=generator)
    per_epoch = len(images) // args.batch

    def step(i: int) -> None:
        lo = (i % per_epoch) * args.batch
        x, y = images[lo : lo + args.batch], labels[lo : lo + args.batch]
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()

    model.train()
    for i in range(args.warmup):
        step(i)
    dist.barrier()
    start, times = time.perf_counter(), []
    for i in range(args.warmup, args.warmup + args.steps):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - start
    gathered = [None] * world
    record = {"samples": args.steps * args.batch, "seconds": seconds, "step_times_s": times}
    dist.all_gather_object(gathered, record)
    if rank == 0:
        Path(args.result).write_text(json.dumps(gathered))
    dist.destroy_process_group()


def global_rate(ranks: list[dict]) -> tuple[float, float]:
    """(samples / slowest rank's seconds, world × batch / slowest rank's median step time)."""
    wall = sum(r["samples"] for r in ranks) / max(r["seconds"] for r in ranks)
    per_step = len(ranks) * ranks[0]["samples"] / len(ranks[0]["step_times_s"])
    median = per_step / max(statistics.median(r["step_times_s"]) for r in ranks)
    return wall, median


def run_dnnbench(args: argparse.Namespace, folder: Path) -> tuple[float, float]:
    overrides = [*cell_overrides("ddp", args, PROCS, threads=1), f"dataset.train_samples={TRAIN_SAMPLES}"]
    phases = dnnbench_train_phases(overrides, folder, PROCS)
    return global_rate(phases)


def run_bare(args: argparse.Namespace, folder: Path) -> tuple[float, float]:
    folder.mkdir(parents=True)
    result = folder / "bare.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
         "--nproc_per_node", str(PROCS), str(Path(__file__).resolve()), "--bare-worker",
         "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
         "--result", str(result)],
        check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return global_rate(json.loads(result.read_text()))


def main() -> None:
    args = parse_or_serve(__doc__, bare_worker, pairs=3, steps=20, batch=BATCH)
    if args is None:
        return

    started = time.perf_counter()
    rows = []  # (dnnbench wall, bare wall, dnnbench median-step, bare median-step) img/s
    with tempfile.TemporaryDirectory(prefix="dnnbench-overhead-") as tmp:
        for pair in range(args.pairs):
            a = run_dnnbench(args, Path(tmp) / f"a{pair}")
            b = run_bare(args, Path(tmp) / f"b{pair}")
            rows.append((a[0], b[0], a[1], b[1]))
            print(f"pair {pair + 1}/{args.pairs}: wall dnnbench {a[0]:6.1f} bare {b[0]:6.1f} img/s "
                  f"(ratio {a[0] / b[0]:.3f}); median step dnnbench {a[1]:6.1f} bare {b[1]:6.1f} img/s "
                  f"(ratio {a[1] / b[1]:.3f})", flush=True)  # fmt: skip
    print(f"\n{args.pairs} A/B pairs in {time.perf_counter() - started:.0f} s")
    cells = []
    for name, ours, bare in (("wall", 0, 1), ("median step", 2, 3)):
        ratios = [r[ours] / r[bare] for r in rows]
        median = statistics.median(ratios)
        print(f"{name:11s}: ratio dnnbench/bare median {median:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}); "
              f"dnnbench {statistics.median(r[ours] for r in rows):.1f} img/s, "
              f"bare {statistics.median(r[bare] for r in rows):.1f} img/s (medians)")  # fmt: skip
        cells.append(f"{median:.3f} ({min(ratios):.3f}–{max(ratios):.3f})")
    print("\nBENCHMARKS.md line (| what | setup | pairs | ratio from wall time | ratio from median step |):")
    print("| harness overhead, dnnbench/bare img/s | resnet18 DDP, 2 CPU procs (gloo, OMP_NUM_THREADS=1), "
          f"synthetic, batch {args.batch}, {args.warmup}+{args.steps} steps | {args.pairs} alternating pairs | "
          f"{cells[0]} | {cells[1]} |")  # fmt: skip


if __name__ == "__main__":
    main()
