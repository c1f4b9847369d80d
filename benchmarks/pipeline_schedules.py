"""gpipe vs 1f1b vs pipedream (vs pipedream_2bw) on the same split, micro-batches and process group.

    DNNBENCH_CACHE=/tmp/pp/cache OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python -m torch.distributed.run \
        --standalone --nproc_per_node 2 benchmarks/pipeline_schedules.py --rounds 3 --steps 3 \
        model=resnet18 batch_size=32 pipeline.microbatches=4 device=cpu

One stage per process. Every schedule gets its own copy of the same seeded stage module and
runs its steps in rounds that rotate the schedules' order (so drift on a shared machine hits
all of them); the asynchronous ones run on across rounds without a flush, like a training run,
and drain only at the end, untimed. Rank 0 prints one JSON line: per schedule, the median
round's samples/s, the mean step time, the measured bubble (mean over ranks of 1 − M · (forward
+ backward) / step, as the dump's ``measured.bubble_fraction``) and the planner's predicted step
and bubble for that schedule on the profile.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from torch import nn
from torch.distributed.pipelining.schedules import Schedule1F1B, ScheduleGPipe

from jobs.models import build_model
from jobs.pipeline import planner
from jobs.pipeline.async_schedules import AsyncPipeline, StageTimer
from jobs.pipeline.blocks import split_blocks, stage_module
from jobs.pipeline.profiler import cached_profile
from jobs.strategies.pipeline import TimedStage
from orchestrator import config as compose_config

Step = Callable[[torch.Tensor, torch.Tensor], None]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class _Runner:
    """One schedule on this rank: its step function and the timer of its stage's compute."""

    def __init__(self, name: str, step: Step, timer: Any, finish: Callable[[], None] = lambda: None):
        self.name, self.step, self.timer, self.finish = name, step, timer, finish
        self.round_s: list[float] = []


def _stage(cfg: Any, factory: Callable[[], nn.Module], split: list[int], rank: int, stages: int) -> nn.Module:
    torch.manual_seed(cfg.seed)
    blocks = split_blocks(factory())
    bounds = [0, *split, len(blocks)]
    return stage_module(blocks, bounds[rank], bounds[rank + 1])


def _synchronous(name: str, module: nn.Module, cfg: Any, rank: int, stages: int, device: torch.device) -> _Runner:
    stage = TimedStage(module, rank, stages, device, group=_own_group(stages))
    kind = Schedule1F1B if name == "1f1b" else ScheduleGPipe
    schedule = kind(stage, int(cfg.pipeline.microbatches), loss_fn=nn.CrossEntropyLoss())
    optimizer = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=cfg.momentum)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        args = (images,) if rank == 0 else ()
        schedule.step(*args, target=labels if rank == stages - 1 else None, losses=[] if rank == stages - 1 else None)
        optimizer.step()

    return _Runner(name, step, stage)


def _asynchronous(name: str, module: nn.Module, cfg: Any, rank: int, stages: int, device: torch.device) -> _Runner:
    timer = StageTimer.on(device)
    pipe = AsyncPipeline(module, schedule=name, stage=rank, stages=stages, microbatches=int(cfg.pipeline.microbatches),
                         device=device, lr=cfg.lr, momentum=cfg.momentum, timer=timer,
                         pp_group=_own_group(stages))  # fmt: skip

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        pipe.train_step(images if rank == 0 else None, labels if rank == stages - 1 else None)

    return _Runner(name, step, timer, pipe.drain)


def _own_group(stages: int) -> dist.ProcessGroup:
    # A group per schedule: an asynchronous pipeline leaves a gradient in flight between its steps,
    # which another schedule's receive on a shared group would take for its own.
    return dist.new_group(list(range(stages)))


def _timed(runner: _Runner, images: torch.Tensor, labels: torch.Tensor, steps: int) -> None:
    dist.barrier()
    runner.timer.recording = True
    started = time.perf_counter()
    for _ in range(steps):
        runner.step(images, labels)
    dist.barrier()  # the round ends when the last stage has finished its last step
    runner.round_s.append(time.perf_counter() - started)
    runner.timer.recording = False


def _bubble(runner: _Runner, microbatches: int, steps: int) -> float | None:
    forward, backward = runner.timer.forward_span.finish(), runner.timer.backward_span.finish()
    if not forward or not backward:
        return None
    busy = microbatches * (sum(forward) / len(forward) + sum(backward) / len(backward))
    return 1.0 - busy / (sum(runner.round_s) / (len(runner.round_s) * steps))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--schedules", default="gpipe,1f1b,pipedream,pipedream_2bw")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    world = int(os.environ["WORLD_SIZE"])
    config = compose_config.resolved(
        compose_config.compose(["framework=pipeline", f"gpus={world}", f"pipeline.stages={world}", *args.overrides])
    )
    cfg = OmegaConf.create(config)
    torch.set_num_threads(cfg.threads_per_process)
    dist.init_process_group("gloo")
    rank, device, ds = dist.get_rank(), torch.device("cpu"), cfg.dataset
    m = int(cfg.pipeline.microbatches)

    def factory() -> nn.Module:
        return build_model(cfg.model.name, num_classes=ds.num_classes, in_channels=ds.channels)

    plans = _plans(cfg, factory, world, args.schedules.split(","))
    split = plans["1f1b"].split
    runners = []
    for name in args.schedules.split(","):
        module = _stage(cfg, factory, split, rank, world)
        make = _asynchronous if name in planner.ASYNC_SCHEDULES else _synchronous
        runners.append(make(name, module, cfg, rank, world, device))
    generator = torch.Generator().manual_seed(cfg.seed)
    images = torch.randn(cfg.batch_size, ds.channels, ds.image_size, ds.image_size, generator=generator)
    labels = torch.randint(0, ds.num_classes, (cfg.batch_size,), generator=generator)
    for runner in runners:  # warm-up: fills the asynchronous pipelines too
        for _ in range(args.warmup):
            runner.step(images, labels)
    for r in range(args.rounds):
        for runner in runners[r % len(runners) :] + runners[: r % len(runners)]:
            _timed(runner, images, labels, args.steps)
    for runner in runners:
        runner.finish()
    bubbles: list[Any] = [None] * world
    dist.all_gather_object(bubbles, {runner.name: _bubble(runner, m, args.steps) for runner in runners})
    if rank == 0:
        samples = cfg.batch_size * args.steps
        print(json.dumps({
            "model": cfg.model.name, "world": world, "batch": cfg.batch_size, "microbatches": m, "split": split,
            "steps_per_round": args.steps, "rounds": args.rounds,
            "schedules": {
                runner.name: {
                    "samples_per_s": round(samples / statistics.median(runner.round_s), 2),
                    "step_s": round(sum(runner.round_s) / (len(runner.round_s) * args.steps), 4),
                    "round_s": [round(t, 3) for t in runner.round_s],
                    # Per round, 1f1b's time over this schedule's (adjacent in time): > 1 is faster than 1f1b.
                    "speedup_vs_1f1b_paired_median": _paired(runners, runner),
                    "measured_bubble": _rounded(_mean([b[runner.name] for b in bubbles if b[runner.name] is not None])),
                    "predicted_bubble": round(plans[runner.name].bubble_fraction, 3),
                    "predicted_step_s": round(plans[runner.name].step_s, 4),
                }
                for runner in runners
            },
            "load_average": os.getloadavg(),
        }), flush=True)  # fmt: skip
    dist.destroy_process_group()


def _paired(runners: list[_Runner], runner: _Runner) -> float | None:
    reference = next((r for r in runners if r.name == "1f1b"), None)
    if reference is None:
        return None
    return round(statistics.median(a / b for a, b in zip(reference.round_s, runner.round_s, strict=True)), 3)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _plans(cfg: Any, factory: Callable[[], nn.Module], world: int, names: list[str]) -> dict[str, planner.Plan]:
    """Rank 0's profile and, per schedule, its plan with the split the planner chose for 1f1b."""
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        ds, m = cfg.dataset, int(cfg.pipeline.microbatches)
        shape = [ds.channels, ds.image_size, ds.image_size]
        profile, _, _ = cached_profile(factory, cfg.model.name, shape, cfg.batch_size // m, torch.device("cpu"))
        topology = planner.Topology(world, world, float(cfg.cluster.intranode_gbps),
                                    float(cfg.cluster.interconnect_gbps))  # fmt: skip
        base = planner.plan(profile, stages=world, microbatches=m, topology=topology, schedule="1f1b")
        box[0] = {
            name: planner.plan(
                profile, stages=world, microbatches=m, topology=topology, schedule=name, split=base.split or None
            )
            for name in {"1f1b", *names}
        }
    dist.broadcast_object_list(box, src=0)
    return box[0]


if __name__ == "__main__":
    main()
