"""Plan-time checks of fsdp and zero cells: knobs that cannot run are refused before launch.

Plain functions named by the framework table (jobs/frameworks.py). Whether a model has the
blocks ``fsdp.wrap=block`` shards needs torch (the model is built on the meta device, no
weights); on a login node without torch that one check is left to the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, get_args

# Allowed values as Literal types; fields holding them are str (OmegaConf has no Literal node type).
# `fsdp.param_dtype` / `fsdp.reduce_dtype`; anything but fp32 needs a GPU (jobs/strategies/fsdp.py).
FsdpDtype = Literal["fp32", "bf16", "fp16"]
FSDP_DTYPES: tuple[str, ...] = get_args(FsdpDtype)
# `fsdp.wrap`: `block` shards every block of jobs/pipeline/blocks.py and the root; `root_only` the root.
FsdpWrap = Literal["block", "root_only"]
FSDP_WRAPS: tuple[str, ...] = get_args(FsdpWrap)


@dataclass
class FsdpConfig:
    """The ``fsdp:`` section, the knobs only fsdp cells read (the row in jobs/frameworks.py names it)."""

    # Free each block's gathered parameters after its forward (gathered again for the backward).
    reshard_after_forward: bool = True
    # FSDP's MixedPrecisionPolicy: dtype of the gathered parameters (compute) and of gradient reduction.
    param_dtype: str = "fp32"  # an FsdpDtype
    reduce_dtype: str = "fp32"  # an FsdpDtype
    wrap: str = "block"  # an FsdpWrap


def _no_gpu_reason(config: dict[str, Any]) -> str | None:
    """Why this cell runs on a CPU whatever it asks (device=cpu, a CPU-only cluster), or None."""
    cluster = config["cluster"]
    if config["device"] == "cpu":
        return "device=cpu"
    if cluster.get("backend") == "local":
        from jobs.checks.hardware import gpu_visible_here as _gpu_visible_here

        # The local backend runs the cell on this machine (Slurm's request_gpus means nothing there).
        if config["device"] == "auto" and not _gpu_visible_here():
            return f"cluster={cluster['name']} runs the cell here and this machine shows no GPU"
        return None
    if cluster.get("request_gpus") is False:
        return f"cluster={cluster['name']} requests no GPU (cluster.request_gpus=false)"
    return None


def _dtype_problems(knobs: dict[str, Any], config: dict[str, Any]) -> list[str]:
    problems = []
    low = []
    for key in ("param_dtype", "reduce_dtype"):
        value = knobs[key]
        if value not in FSDP_DTYPES:
            problems.append(f"fsdp.{key}={value}: expected one of {', '.join(FSDP_DTYPES)}")
        elif value != "fp32":
            low.append(f"fsdp.{key}={value}")
    cpu = _no_gpu_reason(config) if low else None
    if cpu:
        problems.append(f"{', '.join(low)}: FSDP mixed precision runs on a GPU only, and {cpu}; use fp32")
    return problems


@cache
def _unsupported_blocks(model: str, num_classes: int, channels: int) -> str | None:
    """Why ``model`` has no block split, or None (also when torch is not importable here)."""
    from jobs.pipeline.block_counts import block_count as counted

    if counted(model) is not None:  # a family with a block split, known without building it in torch
        return None
    try:
        from jobs.pipeline.blocks import UnsupportedModelError, block_count
    except ImportError:
        return None
    try:
        block_count(model, num_classes=num_classes, in_channels=channels)
    except UnsupportedModelError as err:
        return str(err)
    except ValueError:
        return None  # an unknown model name: validate() reports it already
    return None


def check_fsdp(config: dict[str, Any]) -> list[str]:
    knobs = config["fsdp"]
    problems = _dtype_problems(knobs, config)
    if knobs["wrap"] not in FSDP_WRAPS:
        problems.append(f"fsdp.wrap={knobs['wrap']}: expected one of {', '.join(FSDP_WRAPS)}")
    elif knobs["wrap"] == "block":
        dataset = config["dataset"]
        reason = _unsupported_blocks(config["model"]["name"], dataset["num_classes"], dataset["channels"])
        if reason:
            problems.append(f"fsdp.wrap=block with model.name={config['model']['name']}: {reason}; "
                            "use fsdp.wrap=root_only")  # fmt: skip
    if config["precision"] == "amp":
        # A GradScaler sees one rank's gradient shard: ranks could disagree on skipping a step.
        problems.append(
            "precision=amp with framework=fsdp: loss scaling of sharded gradients is not supported; "
            "use precision=bf16, or precision=fp32 with fsdp.param_dtype=bf16"
        )
    return problems


def check_zero(config: dict[str, Any]) -> list[str]:
    """ZeRO-1 has no knobs of its own and runs wherever DDP runs, in every precision: an all-reduced
    gradient is whole on every rank, so every rank's loss scaler decides alike. Nothing to refuse
    beyond what every cell is checked for (orchestrator/config.py)."""
    del config
    return []
