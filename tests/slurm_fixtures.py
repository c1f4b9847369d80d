"""The real dev Slurm cluster for the ``slurm`` tests: a session fixture and small helpers.

``slurm_cluster`` checks that ``sinfo`` answers with a usable node and that ``sacct``
answers (accounting on). When not, it runs ``scripts/slurm-dev-cluster.sh up`` itself if
this process is root, then skips with the reason, or fails when ``DNNBENCH_REQUIRE_SLURM=1``
(CI). Test modules import it: ``from slurm_fixtures import slurm_cluster  # noqa: F401``.

Nothing here fakes Slurm: every helper calls the real client commands or the real
``dnnbench`` command line in a subprocess (a login-node process of its own).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "scripts" / "slurm-dev-cluster.sh"
# The CLI as a user runs it, with this interpreter (the jobs then use the same one).
DNNBENCH = [sys.executable, "-m", "orchestrator.cli"]
USABLE_NODE_STATES = ("idle", "mixed", "allocated", "completing")
T = TypeVar("T")


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def cluster_problem() -> str | None:
    """Why the Slurm tests cannot run here, or None when sinfo and sacct both answer."""
    if shutil.which("sinfo") is None:
        return "sinfo is not on PATH (no Slurm client installed)"
    sinfo = _run(["sinfo", "-h", "-N", "-o", "%T"], timeout=20)
    if sinfo is None:
        return "sinfo did not answer in 20 s"
    if sinfo.returncode != 0:
        return f"sinfo failed: {sinfo.stderr.strip()[:300]}"
    states = [s.rstrip("*~#!%$@^-") for s in sinfo.stdout.split()]
    if not any(s in USABLE_NODE_STATES for s in states):
        return f"no usable node (sinfo node states: {', '.join(states) or 'none'})"
    sacct = _run(["sacct", "-n", "-X", "-S", "now-1minutes", "-o", "JobID"], timeout=20)
    if sacct is None or sacct.returncode != 0 or "disabled" in sacct.stderr:
        return "sacct does not answer (the tests need accounting: slurmdbd + MariaDB)"
    return None


@dataclass(frozen=True)
class SlurmCluster:
    nodes: int
    started_by_fixture: bool


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The real dev cluster; skip (or fail under DNNBENCH_REQUIRE_SLURM=1) when it is not there."""
    problem = cluster_problem()
    started = False
    if problem and os.geteuid() == 0 and CLUSTER_SCRIPT.exists():
        up = _run([str(CLUSTER_SCRIPT), "up"], timeout=900)
        started = up is not None and up.returncode == 0
        problem = cluster_problem()
        if problem and up is not None:
            problem += f"; `{CLUSTER_SCRIPT.name} up` said: {up.stderr.strip()[-400:]}"
    if problem:
        message = f"real Slurm dev cluster not available: {problem}. Start it with `sudo {CLUSTER_SCRIPT} up`."
        if os.environ.get("DNNBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(message + " (DNNBENCH_REQUIRE_SLURM=1: failing instead of skipping)", pytrace=False)
        pytest.skip(message)
    sinfo = _run(["sinfo", "-h", "-N", "-p", "debug", "-o", "%N"]) or _run(["sinfo", "-h", "-N", "-o", "%N"])
    nodes = len(set(sinfo.stdout.split())) if sinfo is not None else 0
    return SlurmCluster(nodes=nodes, started_by_fixture=started)


# --------------------------------------------------------------------------------- helpers ---
def dnnbench(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real ``dnnbench`` command line to completion."""
    return subprocess.run(
        [*DNNBENCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def start_dnnbench(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``dnnbench`` in a session of its own (so the whole process group can be killed)."""
    return subprocess.Popen(
        [*DNNBENCH, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def wait_until(probe: Callable[[], T], *, timeout: float, interval: float = 2.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail with its last value after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last value: {value!r}")
        time.sleep(interval)


def sacct_jobs(job_ids: list[str]) -> list[dict[str, str]]:
    """sacct's allocation lines (array tasks as ID_IDX) of the given jobs."""
    if not job_ids:
        return []
    fields = ["JobID", "JobIDRaw", "JobName", "State", "ExitCode", "NNodes", "AllocTRES"]
    result = _run(["sacct", "-n", "-X", "-P", "-j", ",".join(job_ids), "-o", ",".join(fields)])
    assert result is not None and result.returncode == 0, result
    return [dict(zip(fields, line.split("|"), strict=True)) for line in result.stdout.splitlines() if line]


def sacct_names(prefix: str, since: str = "now-2hours") -> list[dict[str, str]]:
    """sacct's allocation lines of jobs whose name starts with ``prefix``."""
    fields = ["JobID", "JobName", "State"]
    result = _run(["sacct", "-n", "-X", "-P", "-a", "-S", since, "-o", ",".join(fields)])
    assert result is not None and result.returncode == 0, result
    rows = [dict(zip(fields, line.split("|"), strict=True)) for line in result.stdout.splitlines() if line]
    return [r for r in rows if r["JobName"].startswith(prefix)]


def squeue_names(prefix: str) -> list[dict[str, str]]:
    """squeue's lines (array tasks one by one) of jobs whose name starts with ``prefix``."""
    fields = ["JobID", "ArrayJobID", "JobName", "State"]
    result = _run(["squeue", "-h", "-r", "-o", "%i|%F|%j|%T"])
    assert result is not None and result.returncode == 0, result
    rows = [dict(zip(fields, line.split("|"), strict=True)) for line in result.stdout.splitlines() if line]
    return [r for r in rows if r["JobName"].startswith(prefix)]


def scancel(*keys: str) -> None:
    if keys:
        _run(["scancel", *keys])


def job_prefix(sweep_dir: Path) -> str:
    """Every Slurm job of a sweep is named ``dnnbench-<sweep folder name>-<random>``."""
    return f"dnnbench-{sweep_dir.name}-"


def ledger_rows(sweep_dir: Path, sql: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(sweep_dir / "ledger.sqlite", timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute(sql)]
    finally:
        db.close()


def status_json(sweep_dir: Path, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    result = dnnbench("status", "--json", str(sweep_dir), env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def hash_tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
