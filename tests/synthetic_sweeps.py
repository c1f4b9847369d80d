"""Synthetic sweep folders with realistic rank dumps, for tests and benchmarks.

A cell's config is composed from conf/ by the composition ``dnnbench sweep`` uses
(:func:`orchestrator.config.compose`), with the fixture's choices as Hydra overrides. Its
files are written by the real writers: cell.json by the orchestrator's
(:func:`orchestrator.submit.write_cell_file`), the dumps by the ranks'
(:func:`jobs.schema.write_atomic`, as ``jobs/entry.py``), outcome.json by the runner's
(:func:`orchestrator.runner.write_outcome`). The dumps are shaped like the ones ``jobs/entry.py``
writes (a real CPU cell's dump was the model); nothing here needs torch. A pipelined cell's
``pipeline`` section comes from the runtime's own writer
(:func:`jobs.pipeline.section.pipeline_section`) over a plan of a synthetic block profile.

Imported as a sibling module (``import synthetic_sweeps``): pytest puts tests/ on the path
of a test module, a script adds it itself (``benchmarks/aggregate_scale.py``).
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

from analysis.load import config_key
from jobs import schema
from jobs.frameworks import sample_counting_of
from jobs.layout import AttemptPaths, SweepLayout
from jobs.pipeline import planner
from jobs.pipeline.section import pipeline_section
from orchestrator.config import compose, resolved
from orchestrator.runner import Outcome, write_outcome
from orchestrator.submit import write_cell_file
from orchestrator.sweep import Cell

# The fixture's cell over conf/'s defaults, each value spelled out (even where it is the default)
# so that a changed default in conf/ does not move what the tests expect: short cells (6 timed
# steps, 3 timed validation batches) of the small synthetic data set. breakdown=false: the fixture's
# dumps hold no phase breakdown, and a dump asking for one without it is refused (jobs.schema).
OVERRIDES: tuple[str, ...] = (
    "framework=ddp",
    "model=resnet18",
    "dataset=synthetic",
    "cluster=local",
    "env=current",
    "dataset.train_samples=4096",
    "dataset.val_samples=1024",
    "batch_size=32",
    "lr=0.05",
    "gpus=1",
    "nodes=1",
    "precision=fp32",
    "seed=0",
    "repeats=1",
    "steps=6",
    "val_steps=3",
    "warmup_steps=5",
    "breakdown=false",
)

# Not jobs.environment.fingerprint(with_torch=False): that records this machine (host, CPU,
# installed packages, git commit, loaded libraries), so the fixture's dumps and their environment
# hashes would differ from machine to machine, and its CUDA fields need torch. A fixed fingerprint
# of a CPU rank keeps every dump of a fixture sweep in one environment unless a test says otherwise.
BASE_ENVIRONMENT: dict[str, Any] = {
    "cpu_count": 2,
    "cpu_model": "AMD EPYC",
    "cuda": "13.0",
    "cuda_available": False,
    "cudnn": None,
    "dnnbench": "0.1.0",
    "git_sha": "c0a086db3845",
    "gpu_count": 0,
    "gpu_driver": None,
    "gpu_name": None,
    "horovod": "0.28.1",
    "hostname": "vm",
    "nccl": None,
    "platform": "Linux-x86_64",
    "python": "3.11.7",
    "slurm": {},
    "threads": {
        "KMP_AFFINITY": None,
        "MKL_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "OMP_PROC_BIND": None,
        "OPENBLAS_NUM_THREADS": "1",
        "torch_intra_op_threads": 1,
    },
    "torch": "2.14.1",
    "torchvision": "0.29.1",
}


@cache
def _composed() -> dict[str, Any]:
    """The fixture's base config, composed once a process (a Hydra compose costs tens of milliseconds)."""
    return resolved(compose(list(OVERRIDES)))


def _parent(cfg: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str]:
    """(the dict holding ``dotted``'s leaf, the leaf's name)."""
    *parents, leaf = dotted.split(".")
    node = cfg
    for parent in parents:
        node = node[parent]
    return node, leaf


def _set(cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for dotted, value in overrides.items():
        node, leaf = _parent(cfg, dotted)
        node[leaf] = value
    return cfg


def config(**overrides: Any) -> dict[str, Any]:
    """The composed base config with dotted overrides: ``config(**{"framework.name": "horovod"})``."""
    return _set(copy.deepcopy(_composed()), overrides)


def legacy_config(**overrides: Any) -> dict[str, Any]:
    """:func:`config` as a cell planned before the later keys existed: without any key that
    ``jobs.schema.ADDED_CONFIG_DEFAULTS`` lists (an old dump's config), then ``overrides`` set."""
    cfg = copy.deepcopy(_composed())
    for dotted in schema.ADDED_CONFIG_DEFAULTS:
        node, leaf = _parent(cfg, dotted)
        del node[leaf]
    return _set(cfg, overrides)


def cell_id_of(cfg: dict[str, Any]) -> str:
    return config_key(cfg)[:6] + f"r{cfg['repeat']}" + config_key({"r": cfg["repeat"], **cfg})[:5]


def _phase(step_times: list[float], samples: int, memory: dict[str, Any], evaluated: int | None) -> dict[str, Any]:
    """A phase; ``evaluated`` is None for training (no predictions), half of them right otherwise."""
    seconds = sum(step_times) * 1.002
    val = evaluated is not None
    return {
        "timed_steps": len(step_times),
        "warmup_steps": 1 if val else 5,
        "samples": samples,
        "seconds": seconds,
        "throughput_samples_per_s": samples / seconds if seconds else 0.0,
        "step_times_s": list(step_times),
        "memory": dict(memory),
        "loss": None if val else 2.3,
        "accuracy": (evaluated // 2) / evaluated if evaluated else None,
        "correct": evaluated // 2 if val else None,
        "evaluated": evaluated,
    }


def _val_counts(cfg: dict[str, Any], pipeline: dict[str, Any] | None) -> tuple[int, int, int]:
    """(timed steps, samples, evaluated) the config gives a counting rank's validation (jobs.schema's rule)."""
    chosen = pipeline.get("replicas") if isinstance(pipeline, dict) else None
    replicas = schema.data_replicas(cfg) or (chosen if type(chosen) is int else None) or cfg["gpus"] * cfg["nodes"]
    return schema.val_counts(cfg["batch_size"], replicas, cfg["dataset"]["val_samples"], cfg["val_steps"])


def make_dump(
    cfg: dict[str, Any],
    rank: int,
    *,
    train_step_times: list[float],
    val_step_times: list[float] | None = None,
    attempt: int = 0,
    counts_samples: bool = True,
    environment: dict[str, Any] | None = None,
    memory_kind: str = "rss",
    peak_bytes: int = 976_715_776,
    pipeline: dict[str, Any] | None = None,
    cell_id: str | None = None,
) -> dict[str, Any]:
    """One rank's dump for config ``cfg`` (world size = gpus × nodes)."""
    env = copy.deepcopy(environment or BASE_ENVIRONMENT)
    if environment is None and memory_kind == "cuda":
        env["cuda_available"] = True  # a CUDA rank's environment (jobs.schema checks the two agree)
    world = cfg["gpus"] * cfg["nodes"]
    if memory_kind == "rss":
        memory = {
            "kind": "rss",
            "peak_allocated_bytes": None,
            "peak_reserved_bytes": None,
            "peak_rss_bytes": peak_bytes,
            "end_rss_bytes": peak_bytes,
        }
    else:
        memory = {
            "kind": "cuda",
            "peak_allocated_bytes": peak_bytes,
            "peak_reserved_bytes": int(peak_bytes * 1.25),
            "peak_rss_bytes": None,
            "end_rss_bytes": None,
        }
    per_step = cfg["batch_size"] if counts_samples else 0
    val_steps, val_samples, evaluated = _val_counts(cfg, pipeline)
    if val_step_times is None:
        val_step_times = [train_step_times[i % len(train_step_times)] / 5 for i in range(val_steps)]
    if len(val_step_times) != val_steps:
        raise ValueError(f"the config gives {val_steps} timed validation steps, not {len(val_step_times)}")
    if counts_samples:
        val_phase = _phase(val_step_times, val_samples, memory, evaluated)
    else:
        val_phase = {**_phase(val_step_times, 0, memory, None), "warmup_steps": 1}  # its untimed first step
    return schema.new_dump(
        cell_id=cell_id or cell_id_of(cfg),
        attempt=attempt,
        repeat=cfg["repeat"],
        rank=rank,
        local_rank=rank % cfg["gpus"],
        world_size=world,
        node_rank=rank // cfg["gpus"],
        framework=cfg["framework"]["name"],
        model=cfg["model"]["name"],
        dataset=cfg["dataset"]["name"],
        device_type="cpu" if memory_kind == "rss" else "cuda",
        memory_kind=memory_kind,
        counts_samples=counts_samples,
        config=cfg,
        phases={
            "train": {
                **_phase(train_step_times, per_step * len(train_step_times), memory, None),
                "warmup_steps": cfg["warmup_steps"],
            },
            "val": val_phase,
        },
        environment=env,
        environment_hash=schema.environment_hash(env),
        started_at="2026-11-26T09:50:07.670+00:00",
        finished_at="2026-11-26T09:50:18.835+00:00",
        pipeline=pipeline,
        extra={
            "framework_knobs": None,
            "parameter_digests": [4639.05] * world,
            "data": {"train_samples": cfg["dataset"]["train_samples"], "val_samples": cfg["dataset"]["val_samples"]},
        },
    )


# A synthetic model's blocks (resnet18 splits into 10) and what each holds, for the planner.
_BLOCKS = 10
_BLOCK_PARAMETER_BYTES = 4_700_000
_BLOCK_ACTIVATION_BYTES = 400_000


def _profile(cfg: dict[str, Any], step_s: float, microbatches: int) -> planner.Profile:
    """Equal blocks whose forward+backward over a step's micro-batches take ``step_s`` on one process."""
    per_block = step_s / (microbatches * _BLOCKS)
    blocks = [
        planner.BlockCost(f"block{i}", per_block / 3, 2 * per_block / 3, _BLOCK_ACTIVATION_BYTES,
                          3 * _BLOCK_ACTIVATION_BYTES, _BLOCK_PARAMETER_BYTES)
        for i in range(_BLOCKS)
    ]  # fmt: skip
    shape = [cfg["dataset"]["channels"], cfg["dataset"]["image_size"], cfg["dataset"]["image_size"]]
    return planner.Profile(cfg["model"]["name"], shape, cfg["batch_size"] // microbatches, "cpu", "fp32", "", blocks)


def pipeline_plan(cfg: dict[str, Any], step_s: float) -> tuple[planner.Plan, planner.Layout, str]:
    """(plan, layout, who chose the shape) a pipelined cell of ``cfg`` runs, planned as the job plans it."""
    world = cfg["gpus"] * cfg["nodes"]
    request = planner.ShapeRequest.of(cfg["framework"]["name"], cfg["pipeline"], world)
    cluster = cfg["cluster"]
    topology = planner.Topology(world, cfg["gpus"], float(cluster.get("intranode_gbps", 50.0)),
                                float(cluster.get("interconnect_gbps", 12.5)))  # fmt: skip
    plan = planner.plan_for(request, _profile(cfg, step_s, request.microbatches), topology)
    return plan, request.layout(plan.stages, plan.replicas), request.chosen_by


def _record(rank: int, plan: planner.Plan, layout: planner.Layout, step_s: float, peak_bytes: int) -> dict[str, Any]:
    """What the rank would gather: each of its stages a little slower than planned the later it is."""
    pp_rank, m = rank % layout.stages, layout.microbatches
    stages = [
        {"stage": sp.index, "forward_s": sp.forward_s * (1 + 0.1 * sp.index),
         "backward_s": sp.backward_s * (1 + 0.1 * sp.index), "max_inflight_microbatches": sp.inflight_microbatches}
        for sp in plan.stage_plans if sp.pp_rank == pp_rank
    ]  # fmt: skip
    mine = [sp for sp in plan.stage_plans if sp.pp_rank == pp_rank]
    return {
        "rank": rank, "pp_rank": pp_rank, "replica": rank // layout.stages, "step_s": step_s,
        "allreduce_s": sum(sp.allreduce_s for sp in mine) if layout.replicas > 1 else None,
        "busy_s": sum(m * (st["forward_s"] + st["backward_s"]) for st in stages),
        "peak_memory_bytes": peak_bytes, "stages": stages,
        # Weight stashing as planned: every version but the live one is stashed.
        "versions": {"weight_versions": max(sp.weight_versions for sp in mine),
                     "staleness_updates": max(sp.staleness_updates for sp in mine),
                     "stashed_weight_bytes": max((sp.weight_versions - 1) * sp.parameter_bytes for sp in mine)},
    }  # fmt: skip


def pipeline_sections(
    cfg: dict[str, Any], step_times: list[list[float]], peak_bytes: int = 976_715_776
) -> list[dict[str, Any]]:
    """Every rank's ``pipeline`` section of a pipelined cell of ``cfg`` (``step_times[rank]``), from the real writer."""
    means = [sum(times) / len(times) if times else 0.0 for times in step_times]
    plan, layout, chosen = pipeline_plan(cfg, max(means) or 0.3)
    records = [_record(rank, plan, layout, means[rank], peak_bytes) for rank in range(len(step_times))]
    return [
        pipeline_section(plan, layout, records, batch_size=cfg["batch_size"], stage=rank % layout.stages,
                         replica=rank // layout.stages, shape_chosen_by=chosen)
        for rank in range(len(step_times))
    ]  # fmt: skip


def write_cell(
    sweep_root: str | Path,
    cfg: dict[str, Any],
    *,
    step_times: list[list[float]],
    attempt: int = 0,
    outcome: str | None = "completed",
    **dump_options: Any,
) -> Path:
    """Write one attempt of a cell: its cell.json, a dump per rank (``step_times[rank]``) + outcome.json."""
    cell_id = dump_options.pop("cell_id", None) or cell_id_of(cfg)
    lengths = {len(times) for times in step_times}
    if cfg.get("epochs") is None and len(lengths) == 1 and cfg.get("steps") != min(lengths):
        cfg = {**cfg, "steps": min(lengths)}  # the config that times these steps (jobs.schema holds them to it)
    cell_paths = SweepLayout(Path(sweep_root)).cell(cell_id)
    folder = cell_paths.attempt(attempt)
    folder.mkdir(parents=True, exist_ok=True)
    # The real writers, without fsyncs: a fixture of thousands of files, never a measurement.
    # No overrides recorded: the config's values were set in Python on the composed one, not by Hydra.
    write_cell_file(cell_paths.cell_file, Cell(cell_id, [], cfg), durable=False)
    counting = dump_options.pop("counting_ranks", None)
    sections = None
    if sample_counting_of(cfg["framework"]["name"]) == "pipelined" and "pipeline" not in dump_options:
        sections = pipeline_sections(cfg, step_times, dump_options.get("peak_bytes", 976_715_776))
        counting = counting if counting is not None else {r for r, sec in enumerate(sections) if sec["is_last_stage"]}
    for rank, times in enumerate(step_times):
        options = dict(dump_options)
        if sections is not None:
            options["pipeline"] = sections[rank]
        if counting is not None:
            options["counts_samples"] = rank in counting
        doc = make_dump(cfg, rank, train_step_times=times, attempt=attempt, cell_id=cell_id, **options)
        schema.write_atomic(AttemptPaths(folder).rank_dump(rank), doc, durable=False)
    if outcome is not None:
        world = len(step_times)
        completed = outcome == "completed"
        done = Outcome(
            state=outcome,
            failure_class=None if completed else "launcher_error",
            returncode=0 if completed else 1,
            ranks_expected=world,
            ranks_valid=world,
            seconds=10.0,
        )
        write_outcome(AttemptPaths(folder).outcome, done, durable=False)
    return folder


def scaling_sweep(
    root: str | Path,
    *,
    frameworks: tuple[str, ...] = ("ddp", "horovod"),
    models: tuple[str, ...] = ("resnet18",),
    gpus: tuple[int, ...] = (1, 2, 4),
    repeats: int = 3,
    steps: int = 6,
    seed: int = 0,
    memory_kind: str = "rss",
) -> list[Path]:
    """A complete sweep: every framework × model × gpus × repeat, with plausible timings
    (slower per step as processes grow). A ``pipeline`` cell runs one stage per process
    (``pipeline.stages`` set) and counts samples only on its last rank."""
    import random

    rng = random.Random(seed)
    written = []
    for framework in frameworks:
        for model in models:
            for n in gpus:
                for repeat in range(repeats):
                    cfg = config(
                        **{
                            "framework.name": framework,
                            "model.name": model,
                            "gpus": n,
                            "repeat": repeat,
                            "repeats": repeats,
                            "steps": steps,
                            # A pipeline of one stage per process (the planner would replicate
                            # this cheap model): the stage balance has stages to show.
                            **({"pipeline.stages": n} if framework == "pipeline" else {}),
                        }
                    )
                    base = 0.30 * (1.0 + 0.12 * (n - 1)) * (1.1 if framework == "horovod" else 1)
                    times = [[base * rng.uniform(0.95, 1.05) for _ in range(steps)] for _ in range(n)]
                    options: dict[str, Any] = {"memory_kind": memory_kind}
                    written.append(write_cell(root, cfg, step_times=times, **options))
    return written
