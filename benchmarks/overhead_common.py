"""What the A/B overhead benchmarks share: their options, the dnnbench side of each pair and, for the
torchrun frameworks (DDP, FSDP), the bare loop, how it is launched and scored, and the alternating pairs."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.paths import AttemptPaths, SweepPaths

REPO = Path(__file__).resolve().parents[1]


def overhead_parser(doc: str | None, *, pairs: int, steps: int, batch: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=pairs)
    parser.add_argument("--steps", type=int, default=steps, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=batch, help="per process")
    parser.add_argument("--bare-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser


def parse_or_serve(
    doc: str | None, bare_worker: Callable[[argparse.Namespace], None], *, pairs: int, steps: int, batch: int
) -> argparse.Namespace | None:
    """The script's arguments, or None once it has served as its own bare-loop worker
    (each benchmark re-runs itself with ``--bare-worker`` under the bare launcher)."""
    args = overhead_parser(doc, pairs=pairs, steps=steps, batch=batch).parse_args()
    if args.bare_worker:
        bare_worker(args)
        return None
    return args


def cell_overrides(framework: str, args: argparse.Namespace, processes: int, threads: int) -> list[str]:
    """The measured cell: resnet18 on synthetic data on CPU, as the bare loop runs it."""
    return [
        f"framework={framework}", "model=resnet18", f"gpus={processes}", "dataset=synthetic",
        f"batch_size={args.batch}", f"steps={args.steps}", f"warmup_steps={args.warmup}", "val_steps=2",
        f"threads_per_process={threads}", "device=cpu",
    ]  # fmt: skip


def dnnbench_train_phases(overrides: list[str], folder: Path, processes: int) -> list[dict]:
    """Run one cell with `dnnbench run`; the training phase of every rank's dump."""
    dnnbench = Path(sys.executable).parent / "dnnbench"
    command = [str(dnnbench)] if dnnbench.exists() else [sys.executable, "-m", "orchestrator.cli"]
    subprocess.run(
        [*command, "run", *overrides, "--quiet", "--out", str(folder)], check=True, cwd=REPO, stdout=subprocess.DEVNULL
    )
    paths = SweepPaths(folder)
    attempts = [paths.cell(cell.name).attempt(0) for cell in sorted(paths.cells.iterdir())]
    dumps = [json.loads(p.read_text()) for attempt in attempts for p in AttemptPaths(attempt).rank_dumps()]
    assert len(dumps) == processes, f"expected {processes} rank dumps under {folder}"
    return [d["phases"]["train"] for d in dumps]


# ----------------------------------------------------------------------------- torchrun bare loops

THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def torchrun_bare_loop(args: argparse.Namespace, wrap: Callable[[Any], Any], train_samples: int) -> None:
    """One rank of a hand-written loop under torchrun: ``wrap`` makes the model distributed (DDP, FSDP…).

    The same model as dnnbench (torchvision resnet18, first conv rebuilt for 1 channel, 10 classes),
    SGD built over the wrapped model's parameters, synthetic tensors of the cell's shape sliced in
    batches instead of a DataLoader; rank 0 writes every rank's samples, seconds and step times.
    """
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
    model = wrap(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(rank)
    images = torch.randn((train_samples // world, 1, 28, 28), generator=generator)
    labels = torch.randint(0, 10, (train_samples // world,), generator=generator)
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
    gathered: list[Any] = [None] * world
    record = {"samples": args.steps * args.batch, "seconds": seconds, "step_times_s": times}
    dist.all_gather_object(gathered, record)
    if rank == 0:
        Path(args.result).write_text(json.dumps(gathered))
    dist.destroy_process_group()


def run_torchrun_bare(script: str, args: argparse.Namespace, folder: Path, processes: int) -> list[dict]:
    """Start ``script --bare-worker`` on ``processes`` ranks with torchrun; every rank's record."""
    folder.mkdir(parents=True)
    result = folder / "bare.json"
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
         "--nproc_per_node", str(processes), str(Path(script).resolve()), "--bare-worker",
         "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
         "--result", str(result)],
        check=True, env={**os.environ, **THREAD_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return json.loads(result.read_text())


def global_rates(ranks: list[dict]) -> tuple[float, float]:
    """(samples / slowest rank's seconds, world × batch / slowest rank's median step time)."""
    wall = sum(r["samples"] for r in ranks) / max(r["seconds"] for r in ranks)
    per_step = len(ranks) * ranks[0]["samples"] / len(ranks[0]["step_times_s"])
    median = per_step / max(statistics.median(r["step_times_s"]) for r in ranks)
    return wall, median


Rates = Callable[[Path], tuple[float, float]]


def compare_pairs(args: argparse.Namespace, dnnbench: Rates, bare: Rates, setup: str) -> None:
    """Run dnnbench (A) and the bare loop (B) in alternating pairs; print each pair, the ratios'
    median and range (from wall time and from the median step) and the BENCHMARKS.md row."""
    started = time.perf_counter()
    rows = []  # (dnnbench wall, bare wall, dnnbench median-step, bare median-step) img/s
    with tempfile.TemporaryDirectory(prefix="dnnbench-overhead-") as tmp:
        for pair in range(args.pairs):
            a = dnnbench(Path(tmp) / f"a{pair}")
            b = bare(Path(tmp) / f"b{pair}")
            rows.append((a[0], b[0], a[1], b[1]))
            print(f"pair {pair + 1}/{args.pairs}: wall dnnbench {a[0]:6.1f} bare {b[0]:6.1f} img/s "
                  f"(ratio {a[0] / b[0]:.3f}); median step dnnbench {a[1]:6.1f} bare {b[1]:6.1f} img/s "
                  f"(ratio {a[1] / b[1]:.3f})", flush=True)  # fmt: skip
    print(f"\n{args.pairs} A/B pairs in {time.perf_counter() - started:.0f} s")
    cells = []
    for name, ours, theirs in (("wall", 0, 1), ("median step", 2, 3)):
        ratios = [r[ours] / r[theirs] for r in rows]
        median = statistics.median(ratios)
        print(f"{name:11s}: ratio dnnbench/bare median {median:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}); "
              f"dnnbench {statistics.median(r[ours] for r in rows):.1f} img/s, "
              f"bare {statistics.median(r[theirs] for r in rows):.1f} img/s (medians)")  # fmt: skip
        cells.append(f"{median:.3f} ({min(ratios):.3f}–{max(ratios):.3f})")
    print("\nBENCHMARKS.md line (| what | setup | pairs | ratio from wall time | ratio from median step |):")
    print(f"| {setup}, batch {args.batch}, {args.warmup}+{args.steps} steps | {args.pairs} alternating pairs | "
          f"{cells[0]} | {cells[1]} |")  # fmt: skip
