"""Copy a sweep's dumps, ledger, tables and figures from a cluster (rsync over ssh).

Logs, scheduler scripts and anything else (checkpoints, datasets) stay behind unless
``include_logs``; then logs and error files come too, checkpoints still never do.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from analysis.errors import AnalysisError

ALWAYS = ["sweep.json", "ledger.sqlite", "cells/*/cell.json", "rank_*.json", "outcome.json", "results/***"]
LOGS = ["*.log", "error_rank_*.txt", "jobs/***"]


def rsync_command(remote: str, dest: str, include_logs: bool = False) -> list[str]:
    """The rsync argv: directories are walked, only the listed files are copied."""
    patterns = ALWAYS + (LOGS if include_logs else [])
    source = remote if remote.endswith("/") else remote + "/"
    return [
        "rsync",
        "-a",
        "--prune-empty-dirs",
        "--info=stats1",
        "-e",
        "ssh",
        "--include=*/",
        *[f"--include={p}" for p in patterns],
        "--exclude=*",
        source,
        str(Path(dest)) + "/",
    ]


def pull(remote: str, dest: str, include_logs: bool = False) -> int:
    if shutil.which("rsync") is None:
        raise AnalysisError("rsync is not installed here (apt install rsync / brew install rsync)")
    Path(dest).mkdir(parents=True, exist_ok=True)
    result = subprocess.run(rsync_command(remote, dest, include_logs), check=False)
    if result.returncode != 0:
        raise AnalysisError(f"rsync from {remote} failed with exit code {result.returncode}")
    return 0
