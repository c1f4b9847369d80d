"""Plan-time checks of Horovod cells, and whether Horovod (with PyTorch support) is installed.

Checked without importing horovod: that would import torch on the login node.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

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
