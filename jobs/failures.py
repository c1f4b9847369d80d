"""Failures a rank recognises itself, each with its own failure class.

A rank that finds its cell cannot measure what was asked (no usable GPU on a GPU
allocation, a Horovod build that would move CUDA tensors through host memory) raises a
:class:`RankFailure`. ``jobs.entry`` then writes, beside the traceback
(``error_rank_<r>.txt``), ``failure_rank_<r>.json`` with the class and the reason, and
the runner reads the class back with :func:`rank_failure` instead of calling every
non-zero exit ``launcher_error``. Standard library only: the runner imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from jobs.atomic import write_atomic_text

FAILURE_FILE_GLOB = "failure_rank_*.json"


def failure_filename(rank: int | str) -> str:
    return f"failure_rank_{rank}.json"


class RankFailure(RuntimeError):
    """A cell that cannot run as asked on this node; ``failure_class`` names the kind."""

    failure_class: ClassVar[str] = "launcher_error"


class NoGpuError(RankFailure):
    """The cell needs a GPU (asked for, or allocated by Slurm) and this rank has no usable one."""

    failure_class = "no_gpu"


class GpuCollectivesError(RankFailure):
    """A GPU cell whose framework build has no GPU collectives (Horovod without NCCL)."""

    failure_class = "no_nccl"


def write_rank_failure(out_dir: Path, rank: int | str, err: RankFailure) -> Path:
    """Record ``err``'s class and reason for the runner; written whole or not at all."""
    target = out_dir / failure_filename(rank)
    write_atomic_text(target, json.dumps({"failure_class": err.failure_class, "reason": str(err)}, indent=1))
    return target


def _rank_order(path: Path) -> tuple[int, str]:
    middle = path.stem.removeprefix("failure_rank_")
    return (int(middle), "") if middle.isdigit() else (1 << 30, middle)


def rank_failure(out_dir: Path) -> tuple[str, str] | None:
    """(failure class, reason) of the lowest-numbered rank that recorded one, or None."""
    for path in sorted(Path(out_dir).glob(FAILURE_FILE_GLOB), key=_rank_order):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("failure_class"), str):
            return doc["failure_class"], str(doc.get("reason", ""))
    return None
