"""What the step breakdown costs DDP, measured step against step inside the same processes.

``benchmarks/breakdown_overhead.py`` compares whole cells; on a shared 2-core machine its pairs
scatter by ±10 %, far more than the 1 % in question. Here every rank holds two DDP replicas of the
same model: one instrumented as dnnbench runs it (the parts of ``jobs/breakdown.py`` around
zero_grad, forward, backward and the optimizer, DDP's bucket all-reduce through the timed comm
hook ``jobs.strategies.ddp.timed_allreduce``, the exposed wait carved out of backward), one bare
(DDP's built-in C++ all-reduce hook, no parts). Steps alternate A B B A … so both see the same
load, the same caches and the same moment; the ratio of their median step times is the cost.

    python benchmarks/breakdown_paired.py --steps 60 --processes 2 --batch 32
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _replica(model_name: str, parts: bool, hook: bool):  # type: ignore[no-untyped-def]
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from jobs import breakdown
    from jobs.models import build_model
    from jobs.strategies.ddp import timed_allreduce

    torch.manual_seed(0)
    model = DistributedDataParallel(build_model(model_name))
    state = SimpleNamespace(parts=breakdown.StepParts() if parts else breakdown.NO_PARTS, last_comm_launch=None)
    if hook:
        model.register_comm_hook(state, timed_allreduce)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, optimizer, state


def _step(replica, images, labels, criterion) -> float:  # type: ignore[no-untyped-def]
    from jobs.strategies.ddp import DDPStrategy

    model, optimizer, state = replica
    parts = state.parts
    start = time.perf_counter()
    parts.begin_step()
    with parts.part("optimizer"):
        optimizer.zero_grad(set_to_none=True)
    with parts.part("forward"):
        loss = criterion(model(images), labels)
    with parts.part("backward"):
        DDPStrategy.backward(state, loss)  # the strategy's own backward: its carve of the exposed wait
    with parts.part("optimizer"):
        optimizer.step()
    parts.end_step()
    return time.perf_counter() - start


def _worker(rank: int, args: argparse.Namespace, port: int, queue) -> None:  # type: ignore[no-untyped-def]
    import torch
    import torch.distributed as dist

    torch.set_num_threads(args.threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=args.processes)
    variants = {"all": (True, True), "parts": (True, False), "hook": (False, True), "none": (False, False)}
    parts, hook = variants[args.only]
    replicas = {"instrumented": _replica(args.model, parts, hook), "bare": _replica(args.model, False, False)}
    criterion = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(rank)
    images = torch.randn(args.batch, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (args.batch,), generator=generator)
    times: dict[str, list[float]] = {name: [] for name in replicas}
    order = ("instrumented", "bare", "bare", "instrumented")
    for index in range(args.warmup + args.steps):
        for name in order[(index % 2) * 2 : (index % 2) * 2 + 2]:
            dist.barrier()
            seconds = _step(replicas[name], images, labels, criterion)
            if index >= args.warmup:
                times[name].append(seconds)
    gathered: list[dict[str, list[float]] | None] = [None] * args.processes
    dist.all_gather_object(gathered, times)
    if rank == 0:
        queue.put(gathered)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="timed steps of each replica")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32, help="per process")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (as the cells run)")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--only", choices=("all", "parts", "hook", "none"), default="all",
                        help="instrument with both (as dnnbench runs), the parts alone, the timed hook alone, "
                        "or nothing (an A/A check of the method)")
    args = parser.parse_args()

    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    started = time.perf_counter()
    mp.start_processes(_worker, args=(args, port, queue), nprocs=args.processes, start_method="spawn")
    ranks = queue.get()
    # A step lasts as long as its slowest rank: per step, the maximum over ranks.
    slowest = {name: [max(r[name][i] for r in ranks) for i in range(args.steps)] for name in ranks[0]}
    medians = {name: statistics.median(times) for name, times in slowest.items()}
    pair_ratios = sorted(b / i for i, b in zip(slowest["instrumented"], slowest["bare"], strict=True))
    low, high = pair_ratios[len(pair_ratios) // 40], pair_ratios[-1 - len(pair_ratios) // 40]
    ratio = medians["bare"] / medians["instrumented"]
    print(f"{args.model}, {args.processes} gloo processes × {args.threads} thread, batch {args.batch}, "
          f"{args.steps} steps each, alternating, {time.perf_counter() - started:.0f} s")
    print(f"median step: instrumented {medians['instrumented'] * 1e3:.2f} ms, bare {medians['bare'] * 1e3:.2f} ms")
    print(f"throughput instrumented / bare: median-step ratio {ratio:.4f}; "
          f"per-pair ratios median {statistics.median(pair_ratios):.4f} (central 95 %: {low:.3f}–{high:.3f})")


if __name__ == "__main__":
    main()
