"""Plan-time checks of pipeline and model_parallel cells: bad layouts fail before launch.

The block count needs torch (the model is built on the meta device, no weights); on a
login node without torch that one check is left to the job.
"""

from __future__ import annotations

from functools import cache
from itertools import pairwise
from typing import Any

from jobs.pipeline.planner import SCHEDULES, Layout
from orchestrator.frameworks import checker


@cache
def _blocks(model: str, num_classes: int, channels: int) -> int | str | None:
    """The model's block count, an error text for unsupported families, None without torch."""
    try:
        from jobs.pipeline.blocks import UnsupportedModelError, block_count
    except ImportError:
        return None
    try:
        return block_count(model, num_classes=num_classes, in_channels=channels)
    except UnsupportedModelError as err:
        return str(err)
    except ValueError:
        return None  # an unknown model name: validate() reports it already


def _check_layout(config: dict[str, Any], layout: Layout, name: str) -> list[str]:
    pipe, problems = config["pipeline"], []
    processes = config["gpus"] * config["nodes"]
    if layout.stages < 1 or layout.replicas < 1:
        return [f"pipeline.stages={pipe['stages']}, pipeline.replicas={layout.replicas}: must be ≥ 1"]
    if layout.stages * layout.replicas != processes:
        problems.append(
            f"pipeline.stages={layout.stages} × pipeline.replicas={layout.replicas} ≠ "
            f"{processes} processes (gpus={config['gpus']} × nodes={config['nodes']}): "
            f"set pipeline.stages={processes // layout.replicas}"
            if processes % layout.replicas == 0
            else f"pipeline.replicas={layout.replicas} does not divide {processes} processes"
        )
    if name == "pipeline":
        m = layout.microbatches
        if m < 1:
            problems.append(f"pipeline.microbatches={m}: must be ≥ 1")
        elif config["batch_size"] % m:
            problems.append(
                f"pipeline.microbatches={m} does not divide batch_size={config['batch_size']}: "
                f"micro-batches must be equal"
            )
        if layout.schedule not in SCHEDULES:
            problems.append(f"pipeline.schedule={layout.schedule}: expected one of {', '.join(SCHEDULES)}")
        elif layout.schedule == "interleaved_1f1b" and m >= 1:
            rounds = max(1, m // layout.stages)
            if m % rounds:
                problems.append(
                    f"pipeline.microbatches={m}: interleaved_1f1b needs a multiple of "
                    f"{rounds} (micro-batches ÷ stages rounds)"
                )
    return problems


def _check_blocks(config: dict[str, Any], layout: Layout) -> list[str]:
    dataset = config["dataset"]
    blocks = _blocks(config["model"]["name"], dataset["num_classes"], dataset["channels"])
    if isinstance(blocks, str):
        return [f"model.name={config['model']['name']}: {blocks}"]
    if blocks is None:
        return []
    problems = []
    v = layout.virtual_stages
    if v > blocks:
        extra = " (interleaved_1f1b puts 2 stages on every process)" if v != layout.stages else ""
        problems.append(
            f"{v} pipeline stages{extra} for {config['model']['name']}'s {blocks} blocks: "
            f"use at most {blocks // layout.chunks_per_rank} stages"
        )
    split = list(config["pipeline"]["split"])
    if split:
        bounds = [0, *split, blocks]
        if len(split) != v - 1:
            problems.append(f"pipeline.split={split}: {v} stages need {v - 1} first-block indices")
        elif any(b <= a for a, b in pairwise(bounds)):
            problems.append(
                f"pipeline.split={split}: first-block indices must increase strictly within "
                f"1..{blocks - 1} ({config['model']['name']} has {blocks} blocks)"
            )
    return problems


def _check(config: dict[str, Any], name: str) -> list[str]:
    processes = config["gpus"] * config["nodes"]
    layout = Layout.of(name, config["pipeline"], processes)
    problems = _check_layout(config, layout, name)
    if config["precision"] != "fp32":
        problems.append(f"precision={config['precision']}: {name} runs fp32 only")
    if not problems:
        problems += _check_blocks(config, layout)
    return problems


@checker("pipeline")
def check_pipeline(config: dict[str, Any]) -> list[str]:
    return _check(config, "pipeline")


@checker("model_parallel")
def check_model_parallel(config: dict[str, Any]) -> list[str]:
    return _check(config, "model_parallel")
