"""Plan-time knowledge of each framework: config checks and whether it can run here.

Kept apart from ``jobs/strategies`` so the login node can check a sweep without torch
distributed or Horovod importable. Each framework registers a checker; a checker
returns the problems of one resolved config (empty when fine).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Checker = Callable[[dict[str, Any]], list[str]]
CHECKERS: dict[str, Checker] = {}
# name -> function giving the reason the framework cannot run on this machine, or None.
AVAILABILITY: dict[str, Callable[[], str | None]] = {}
LAUNCHER_OF = {"ddp": "torchrun", "horovod": "horovodrun", "pipeline": "torchrun",
               "model_parallel": "torchrun", "noop": "noop"}  # fmt: skip


def checker(name: str) -> Callable[[Checker], Checker]:
    def add(fn: Checker) -> Checker:
        CHECKERS[name] = fn
        return fn

    return add


def check_framework(config: dict[str, Any]) -> list[str]:
    framework = config["framework"]
    name = framework["name"]
    if name not in LAUNCHER_OF:
        return [f"framework.name={name}: expected one of {', '.join(sorted(LAUNCHER_OF))}"]
    problems = []
    if framework["backend"] not in ("auto", "gloo", "nccl", "mpi"):
        problems.append(f"framework.backend={framework['backend']}: expected auto, gloo, nccl or mpi")
    fn = CHECKERS.get(name)
    return problems + (fn(config) if fn else [])


def unavailable_reason(config: dict[str, Any]) -> str | None:
    """Why this cell's framework cannot run with what is installed, or None."""
    fn = AVAILABILITY.get(config["framework"]["name"])
    return fn() if fn else None


HOROVOD_INSTALL = "scripts/install-horovod.sh (or `make horovod`)"


def _horovod_missing() -> str | None:
    """Checked without importing horovod (that would import torch on the login node)."""
    try:
        spec = importlib.util.find_spec("horovod")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return f"horovod is not installed in {sys.executable}: run {HOROVOD_INSTALL}"
    folders = [Path(p) / "torch" for p in spec.submodule_search_locations or ()]
    if not any(next(folder.glob("mpi_lib_v2*"), None) for folder in folders if folder.is_dir()):
        return f"horovod is installed but was built without PyTorch support: run {HOROVOD_INSTALL} --force-rebuild"
    return None


AVAILABILITY["horovod"] = _horovod_missing


@checker("horovod")
def _check_horovod(config: dict[str, Any]) -> list[str]:
    knobs = config["horovod"]
    problems = []
    if knobs["compression"] not in ("none", "fp16"):
        problems.append(f"horovod.compression={knobs['compression']}: expected none or fp16")
    if knobs["fusion_threshold_mb"] < 0:
        problems.append("horovod.fusion_threshold_mb: must be ≥ 0")
    if int(config.get("nodes", 1)) > 1:
        problems += _horovod_shell_paths(config)
    return problems


# What horovodrun may write into a shell command unquoted and still mean the same file.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./+@%:=,~-]+")


def _horovod_shell_paths(config: dict[str, Any]) -> list[str]:
    """horovodrun (0.28) writes the interpreter's path unquoted into the shell commands that start
    its task service on other nodes: any other character splits the command or runs as code.
    (``cluster.ssh_*`` values are checked for every cell: orchestrator/shell_safety.py.)"""
    if _PLAIN_PATH.fullmatch(sys.executable):
        return []
    return [
        f"the Python interpreter {sys.executable!r}: horovodrun passes its path to a shell unquoted on "
        "multi-node cells; use a venv at a path of letters, digits and /._+-@%:=,~ only"
    ]


import orchestrator.pipeline_checks  # noqa: E402,F401 - registers the pipeline/model_parallel checkers
