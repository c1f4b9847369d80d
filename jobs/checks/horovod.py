"""Plan-time checks of Horovod cells, and whether Horovod (with PyTorch support) is installed.

Checked without importing horovod: that would import torch on the login node.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

# `horovod.compression` of the gradients Horovod reduces (OmegaConf has no Literal node type: the
# field is a str, checked against the tuple below).
HorovodCompression = Literal["none", "fp16"]
HOROVOD_COMPRESSIONS: tuple[str, ...] = get_args(HorovodCompression)


@dataclass
class HorovodConfig:
    """The ``horovod:`` section, the knobs only horovod cells read (the row in jobs/frameworks.py names it)."""

    fusion_threshold_mb: int = 64  # HOROVOD_FUSION_THRESHOLD
    cycle_time_ms: float = 1.0  # HOROVOD_CYCLE_TIME
    compression: str = "none"  # a HorovodCompression
    autotune: bool = False  # horovodrun --autotune
    timeline: bool = False  # horovodrun --timeline-filename, kept per cell


HOROVOD_INSTALL = "scripts/install-horovod.sh (or `make horovod`)"


def horovod_missing() -> str | None:
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


def check_horovod(config: dict[str, Any]) -> list[str]:
    knobs = config["horovod"]
    problems = []
    if knobs["compression"] not in HOROVOD_COMPRESSIONS:
        allowed = ", ".join(HOROVOD_COMPRESSIONS)
        problems.append(f"horovod.compression={knobs['compression']}: expected one of {allowed}")
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
