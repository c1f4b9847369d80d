"""dnnbench's pipeline runner vs a bare torch.distributed.pipelining loop, in the same run.

    torchrun --standalone --nproc_per_node 2 benchmarks/pipeline_runner.py \
        model=resnet18 batch_size=32 pipeline.microbatches=4 [--rounds 5 --steps 5]

Both sides use the same process group, split, schedule (1F1B by default), micro-batches,
batch and optimizer; rounds alternate (bare, dnnbench, bare, …) so drift on a shared
machine hits both. Rank 0 prints one JSON line: throughputs, their ratio, the planner's
predicted vs the measured bottleneck-stage time, and the time to plan a synthetic
200-block model on 64 processes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from torch import nn
from torch.distributed.pipelining import PipelineStage
from torch.distributed.pipelining.schedules import Schedule1F1B, ScheduleGPipe

from jobs.models import build_model
from jobs.pipeline import planner
from jobs.pipeline.blocks import split_blocks, stage_module
from jobs.strategies.pipeline import PipelineStrategy
from orchestrator import config as compose_config


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bare(strategy: PipelineStrategy, cfg, factory):
    """The textbook loop: manual PipelineStage, schedule.step, optimizer.step."""
    torch.manual_seed(cfg.seed)
    blocks = split_blocks(factory())
    bounds = [0, *strategy.plan.split, len(blocks)]
    k, s = strategy.pp_rank, strategy.layout.stages
    module = stage_module(blocks, bounds[k], bounds[k + 1]).to(strategy.device)
    stage = PipelineStage(module, k, s, strategy.device, group=strategy.pp_group)
    kind = Schedule1F1B if strategy.layout.schedule == "1f1b" else ScheduleGPipe
    schedule = kind(stage, strategy.layout.microbatches, loss_fn=nn.CrossEntropyLoss())
    optimizer = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=cfg.momentum)

    def step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        if k == 0:
            schedule.step(images)
        elif k == s - 1:
            schedule.step(target=labels, losses=[])
        else:
            schedule.step()
        optimizer.step()

    return step


def _timed(step, images, labels, steps: int, device: torch.device) -> float:
    dist.barrier()
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step(images, labels)
    _sync(device)
    dist.barrier()
    return time.perf_counter() - started


def _planning_seconds() -> float:
    rng = random.Random(0)
    blocks = [
        planner.BlockCost(f"b{i}", rng.uniform(1e-4, 1e-2), rng.uniform(1e-4, 2e-2),
                          rng.randrange(1 << 24), rng.randrange(1 << 24), rng.randrange(1 << 26))
        for i in range(200)
    ]  # fmt: skip
    profile = planner.Profile("synthetic200", [1, 28, 28], 8, "cpu", "fp32", "", blocks)
    topology = planner.Topology(64, 4, 50.0, 12.5)
    started = time.perf_counter()
    planner.plan(profile, stages=64, microbatches=8, topology=topology)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    world = int(__import__("os").environ["WORLD_SIZE"])
    config = compose_config.resolved(
        # One stage per process, as the bare loop runs (it has no data-parallel replicas).
        compose_config.compose(["framework=pipeline", f"gpus={world}", "pipeline.replicas=1", *args.overrides])
    )
    cfg = OmegaConf.create(config)
    torch.set_num_threads(cfg.threads_per_process)
    strategy = PipelineStrategy(cfg)
    strategy.setup()
    device = strategy.device
    ds = cfg.dataset

    def factory() -> nn.Module:
        return build_model(cfg.model.name, num_classes=ds.num_classes, in_channels=ds.channels)

    torch.manual_seed(cfg.seed)
    strategy.build(factory)
    bare = _bare(strategy, cfg, factory)
    generator = torch.Generator().manual_seed(cfg.seed)
    images = torch.randn(cfg.batch_size, ds.channels, ds.image_size, ds.image_size,
                         generator=generator).to(device)  # fmt: skip
    labels = torch.randint(0, ds.num_classes, (cfg.batch_size,), generator=generator).to(device)
    for _ in range(2):  # warm-up both
        bare(images, labels)
        strategy.train_step(images, labels)
    strategy.begin_phase("train")  # the pipeline section times what follows
    strategy.barrier()
    bare_s, ours_s = [], []
    for _ in range(args.rounds):
        bare_s.append(_timed(bare, images, labels, args.steps, device))
        ours_s.append(_timed(strategy.train_step, images, labels, args.steps, device))
    section = strategy.pipeline_metrics()
    if dist.get_rank() == 0:
        samples = cfg.batch_size * args.steps * strategy.layout.replicas
        bare_tp = samples / statistics.median(bare_s)
        ours_tp = samples / statistics.median(ours_s)
        measured = section["measured"]["bottleneck_s"]
        predicted = section["predicted"]["bottleneck_s"]
        print(json.dumps({
            "model": cfg.model.name, "device": str(device), "world": world,
            "batch": cfg.batch_size, "microbatches": strategy.layout.microbatches,
            "split": strategy.plan.split, "bare_samples_per_s": round(bare_tp, 2),
            "dnnbench_samples_per_s": round(ours_tp, 2), "ratio": round(ours_tp / bare_tp, 4),
            # Per adjacent (bare, dnnbench) round pair: robust to load drifting over the run.
            "ratio_paired_median": round(
                statistics.median(b / o for b, o in zip(bare_s, ours_s, strict=True)), 4
            ),
            "bare_round_s": [round(t, 4) for t in bare_s],
            "dnnbench_round_s": [round(t, 4) for t in ours_s],
            "predicted_bottleneck_s": predicted, "measured_bottleneck_s": measured,
            "bottleneck_error": (predicted - measured) / measured if measured else None,
            "per_stage_measured_s": [s["measured_stage_s"] for s in section["per_stage"]],
            "per_stage_predicted_s": [s["predicted_stage_s"] for s in section["per_stage"]],
            "plan_200_blocks_64_processes_s": _planning_seconds(),
        }), flush=True)  # fmt: skip
    strategy.teardown()


if __name__ == "__main__":
    main()
