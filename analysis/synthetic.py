"""Synthetic sweep folders with realistic rank dumps, for tests and benchmarks.

The dumps follow :mod:`jobs.schema` and are shaped like the ones ``jobs/entry.py``
writes (a real CPU cell's dump was the model); nothing here needs torch.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from analysis.load import config_key
from jobs import schema

BASE_CONFIG: dict[str, Any] = {
    "batch_size": 32,
    "cluster": {"name": "local", "backend": "local", "cpus_per_gpu": 2, "time_limit_min": 60},
    "dataset": {
        "name": "synthetic",
        "channels": 1,
        "image_size": 28,
        "num_classes": 10,
        "train_samples": 4096,
        "val_samples": 1024,
    },
    "device": "auto",
    "epochs": None,
    "framework": {"backend": "auto", "launcher": "torchrun", "name": "ddp"},
    "gpus": 1,
    "horovod": {"fusion_threshold_mb": 64, "cycle_time_ms": 1.0, "compression": "none"},
    "lr": 0.05,
    "model": {"name": "resnet18", "time_limit_min": 30},
    "nodes": 1,
    "pipeline": {"microbatches": 4, "replicas": 1, "schedule": "1f1b", "split": [], "stages": None},
    "precision": "fp32",
    "repeat": 0,
    "repeats": 1,
    "seed": 0,
    "steps": 6,
    "threads_per_process": 1,
    "val_steps": 3,
    "warmup_steps": 5,
}

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


def config(**overrides: Any) -> dict[str, Any]:
    """BASE_CONFIG with dotted overrides: ``config(**{"framework.name": "horovod"})``."""
    cfg = copy.deepcopy(BASE_CONFIG)
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return cfg


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


def _val_counts(cfg: dict[str, Any]) -> tuple[int, int, int]:
    """(timed steps, samples, evaluated) the config gives a counting rank's validation (jobs.schema's rule)."""
    replicas = schema.data_replicas(cfg) or cfg["gpus"] * cfg["nodes"]
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
    val_steps, val_samples, evaluated = _val_counts(cfg)
    if val_step_times is None:
        val_step_times = [train_step_times[i % len(train_step_times)] / 5 for i in range(val_steps)]
    if len(val_step_times) != val_steps:
        raise ValueError(f"the config gives {val_steps} timed validation steps, not {len(val_step_times)}")
    if counts_samples:
        val_phase = _phase(val_step_times, val_samples, memory, evaluated)
    else:
        val_phase = _phase(val_step_times, 0, memory, None)
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
            "train": _phase(train_step_times, per_step * len(train_step_times), memory, None),
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
    folder = Path(sweep_root) / "cells" / cell_id / f"attempt_{attempt}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder.parent / "cell.json").write_text(json.dumps({"cell_id": cell_id, "config": cfg}, indent=1))
    counting = dump_options.pop("counting_ranks", None)
    for rank, times in enumerate(step_times):
        options = dict(dump_options)
        if counting is not None:
            options["counts_samples"] = rank in counting
        doc = make_dump(cfg, rank, train_step_times=times, attempt=attempt, cell_id=cell_id, **options)
        (folder / schema.dump_filename(rank)).write_text(json.dumps(doc, indent=1))
    if outcome is not None:
        world = len(step_times)
        (folder / "outcome.json").write_text(
            json.dumps(
                {
                    "state": outcome,
                    "failure_class": None if outcome == "completed" else "launcher_error",
                    "returncode": 0 if outcome == "completed" else 1,
                    "ranks_expected": world,
                    "ranks_valid": world,
                    "reasons": [],
                    "seconds": 10.0,
                }
            )
        )
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
    (slower per step as processes grow). A ``pipeline`` framework gets a stage section and
    counts samples only on its last rank."""
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
                        }
                    )
                    base = 0.30 * (1.0 + 0.12 * (n - 1)) * (1.1 if framework == "horovod" else 1)
                    times = [[base * rng.uniform(0.95, 1.05) for _ in range(steps)] for _ in range(n)]
                    options: dict[str, Any] = {"memory_kind": memory_kind}
                    if framework == "pipeline":
                        options["counting_ranks"] = {n - 1}
                        options["pipeline"] = {
                            "stages": [
                                {"stage": s, "predicted_s": base / n, "measured_s": base / n * (1 + 0.1 * s)}
                                for s in range(n)
                            ]
                        }
                    written.append(write_cell(root, cfg, step_times=times, **options))
    return written
