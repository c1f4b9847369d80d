"""Plan-time checks of pipeline and model_parallel cells: bad layouts fail before launch.

Block counts come from a torch-free table (jobs/pipeline/block_counts.py); a model it does
not know is built on the meta device to count, which needs torch: on a login node without
torch that one check is left to the job. With ``pipeline.stages`` and ``replicas`` auto the job
chooses the shape from its profile; here it is enough that one stages × replicas runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise
from typing import Any

from jobs.pipeline import block_counts
from jobs.pipeline.bandwidth import BANDWIDTH_SOURCES
from jobs.pipeline.planner import SCHEDULES, Layout, PlanError, ShapeRequest

# The allowed values are Literal types declared where the ranks read them (jobs/pipeline/planner.py
# PipelineSchedule, jobs/pipeline/bandwidth.py PipelineBandwidth); fields holding them are str (OmegaConf
# has no Literal node type).


@dataclass
class PipelineConfig:
    """The ``pipeline:`` section, read by pipeline and model_parallel cells (their rows name it)."""

    schedule: str = "1f1b"  # a PipelineSchedule (jobs/pipeline/planner.py)
    microbatches: int = 4
    # Stages per replica and data-parallel replicas of every stage: stages × replicas = processes.
    # auto (both): the planner chooses them (PipeDream's replication, jobs/pipeline/planner.py
    # choose_shape); an int ≥ 1 fixes one and the other follows. Typed Any so that Hydra keeps
    # `pipeline.stages=2` an int beside the string auto (checked below).
    # Configs stored before auto existed hold stages: null, replicas: 1: one stage per process.
    stages: Any = "auto"
    replicas: Any = "auto"
    # Manual split: first block index of stages 1..S-1 (empty = let the planner choose).
    split: list[int] = field(default_factory=list)
    # The link bandwidth the planner weighs: `measured` (the cell's own probe before planning,
    # cached per set of nodes: jobs/pipeline/bandwidth.py) or `config` (cluster.intranode_gbps and
    # cluster.interconnect_gbps, as configs stored before measuring ran).
    bandwidth: str = "measured"  # a PipelineBandwidth (jobs/pipeline/bandwidth.py)


@cache
def _blocks(model: str, num_classes: int, channels: int) -> int | str | None:
    """The model's block count, an error text for unsupported families, None without torch."""
    known = block_counts.block_count(model)
    if known is not None:
        return known
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


def _request_problems(config: dict[str, Any], request: ShapeRequest) -> list[str]:
    """What is wrong whatever the shape: micro-batches, schedule, precision."""
    problems = []
    if request.framework == "pipeline":
        m = request.microbatches
        if m < 1:
            problems.append(f"pipeline.microbatches={m}: must be ≥ 1")
        elif config["batch_size"] % m:
            problems.append(
                f"pipeline.microbatches={m} does not divide batch_size={config['batch_size']}: "
                f"micro-batches must be equal"
            )
        if request.schedule not in SCHEDULES:
            problems.append(f"pipeline.schedule={request.schedule}: expected one of {', '.join(SCHEDULES)}")
    link = config["pipeline"].get("bandwidth", "config")
    if link not in BANDWIDTH_SOURCES:
        problems.append(f"pipeline.bandwidth={link}: expected one of {', '.join(BANDWIDTH_SOURCES)}")
    if config["precision"] != "fp32":
        problems.append(f"precision={config['precision']}: {request.framework} runs fp32 only")
    return problems


def _unmade(config: dict[str, Any], request: ShapeRequest) -> str:
    """A set stages or replicas that does not divide the processes."""
    processes = f"{request.processes} processes (gpus={config['gpus']} × nodes={config['nodes']})"
    if request.stages is not None:
        return f"pipeline.stages={request.stages} does not divide {processes}"
    if request.replicas is not None:
        return f"pipeline.replicas={request.replicas} does not divide {processes}"
    return (
        f"pipeline.split={list(request.split)} names {request.split_stages} stages, which do not divide "
        f"{processes}: set pipeline.stages, or list one first block per stage after the first"
    )


def _check_shape(config: dict[str, Any], layout: Layout) -> list[str]:
    problems = []
    processes = config["gpus"] * config["nodes"]
    if layout.stages * layout.replicas != processes:
        problems.append(
            f"pipeline.stages={layout.stages} × pipeline.replicas={layout.replicas} ≠ "
            f"{processes} processes (gpus={config['gpus']} × nodes={config['nodes']}): "
            f"set pipeline.stages={processes // layout.replicas}, or both auto"
        )
    if not layout.microbatches_fit and layout.schedule == "pipedream_2bw":
        problems.append(
            f"pipeline.microbatches={layout.microbatches}: pipedream_2bw needs at least as many micro-batches "
            f"as stages ({layout.stages}), so that two weight versions suffice"
        )
    elif not layout.microbatches_fit:
        rounds = max(1, layout.microbatches // layout.stages)
        problems.append(
            f"pipeline.microbatches={layout.microbatches}: interleaved_1f1b needs a multiple of "
            f"{rounds} (micro-batches ÷ stages rounds)"
        )
    return problems


def _check_blocks(config: dict[str, Any], layout: Layout, blocks: int | None) -> list[str]:
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
    try:
        request = ShapeRequest.of(name, config["pipeline"], processes)
    except (PlanError, TypeError, ValueError) as err:
        return [str(err)]
    problems = _request_problems(config, request)
    if problems:
        return problems
    dataset = config["dataset"]
    blocks = _blocks(config["model"]["name"], dataset["num_classes"], dataset["channels"])
    if isinstance(blocks, str):
        return [f"model.name={config['model']['name']}: {blocks}"]
    layouts = request.shapes()
    if not layouts:
        return [_unmade(config, request)]
    found = [(layout, _check_shape(config, layout) or _check_blocks(config, layout, blocks)) for layout in layouts]
    if request.chosen_by != "planner":
        return found[0][1]
    if any(not reasons for _, reasons in found):
        return []  # the planner picks among the shapes that run (the job does the same filtering)
    tried = "; ".join(f"{layout.stages} × {layout.replicas}: {reasons[0]}" for layout, reasons in found)
    return [f"pipeline.stages=auto, pipeline.replicas=auto: no stages × replicas = {processes} processes runs: {tried}"]


def check_pipeline(config: dict[str, Any]) -> list[str]:
    return _check(config, "pipeline")


def check_model_parallel(config: dict[str, Any]) -> list[str]:
    return _check(config, "model_parallel")
