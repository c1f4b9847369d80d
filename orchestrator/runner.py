"""Run one cell on the node(s) it was given: start the launcher, then judge the dumps.

This is the function every backend executes (a local subprocess, a Slurm array
task). It never decides from the exit code alone: a cell is completed only when
every rank's dump is present and valid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jobs import schema
from jobs.failures import rank_failure
from jobs.launchers import LaunchSpec, get_launcher
from orchestrator.errors import CellFailedError
from orchestrator.paths import AttemptPaths

# Set for every framework alike (torchrun would set OMP_NUM_THREADS=1, horovodrun nothing).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass
class NodeContext:
    """Where this copy of the runner is: which node of how many, and the job's hosts."""

    node_rank: int = 0
    nnodes: int = 1
    hosts: tuple[str, ...] = ("127.0.0.1",)
    job_id: str = field(default_factory=lambda: str(os.getpid()))
    restart_count: int = 0


@dataclass
class Outcome:
    state: str  # completed | failed
    failure_class: str | None = None
    returncode: int | None = None
    ranks_expected: int = 0
    ranks_valid: int = 0
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0


def rank_environment(config: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    threads = str(config["threads_per_process"])
    for name in THREAD_ENV:
        env[name] = threads
    env["PYTHONUNBUFFERED"] = "1"
    # Ranks import jobs/ from this checkout even when dnnbench is not installed on the node.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def judge(
    out_dir: Path, world_size: int, cell_config: dict[str, Any] | None = None, cell_id: str | None = None
) -> tuple[int, list[str]]:
    """(valid rank dumps, every reason the attempt is not complete and meaningful; [] when it is).

    The reader's rules (:func:`jobs.schema.read_attempt`): each dump valid in type and meaning,
    of this cell's config, and the ranks consistent with each other. Reasons can exist with
    every dump valid (ranks that disagree): the attempt has failed then too.
    """
    docs, reasons = schema.read_attempt(out_dir, world_size, cell_config, cell_id)
    return len(docs), reasons


def _set_aside_interrupted(out_dir: Path, restart: int) -> None:
    """A requeued attempt starts clean; what the interrupted run left is kept beside it."""
    if out_dir.exists() and any(out_dir.iterdir()):
        shutil.move(str(out_dir), str(AttemptPaths(out_dir).set_aside(restart)))


def run_cell(cell_file: str, out_dir: str, node: NodeContext | None = None, echo: bool = False) -> dict[str, Any]:
    """Run the cell described by ``cell_file`` writing into ``out_dir``; returns the outcome."""
    node = node or NodeContext()
    cell = json.loads(Path(cell_file).read_text())
    config = cell["config"]
    out = Path(out_dir)
    attempt = AttemptPaths(out)
    if node.node_rank == 0:
        if node.restart_count > 0:
            _set_aside_interrupted(out, node.restart_count)
        elif attempt.outcome.exists():
            raise CellFailedError(f"{out} already holds an outcome: refusing to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    launcher = get_launcher(config["framework"]["launcher"])
    spec = LaunchSpec(
        python=sys.executable,
        cell_file=str(Path(cell_file).resolve()),
        out_dir=str(out.resolve()),
        nnodes=node.nnodes,
        nproc_per_node=config["gpus"],
        node_rank=node.node_rank,
        hosts=node.hosts,
        job_id=node.job_id,
        config=config,
    )
    started = time.perf_counter()
    returncode = 0
    if launcher.per_node or node.node_rank == 0:
        log = attempt.launcher_log(node.node_rank)
        try:
            argv = launcher.command(spec)
        except ValueError as err:  # e.g. a host list the launcher cannot use: a failed outcome, not a crash
            log.write_text(f"launcher {launcher.name} refused this allocation: {err}\n")
            argv, returncode = None, 2
        if argv is not None:
            returncode = _run_logged(argv, rank_environment(config), log, echo)
    if node.node_rank != 0:
        return {"state": "node_done", "returncode": returncode}
    world = config["gpus"] * node.nnodes
    valid, reasons = judge(out, world, config, cell["cell_id"])
    outcome = Outcome(
        state="completed" if returncode == 0 and valid == world and not reasons else "failed",
        returncode=returncode,
        ranks_expected=world,
        ranks_valid=valid,
        reasons=reasons,
        seconds=time.perf_counter() - started,
    )
    if outcome.state == "failed":
        outcome.failure_class = _failure_class(out, returncode)
    schema.write_atomic(attempt.outcome, asdict(outcome))
    if outcome.state != "completed":
        raise CellFailedError(
            f"cell {cell['cell_id']} failed ({outcome.failure_class}, exit {returncode}): "
            + "; ".join(reasons[:4])
            + f"\n{_tail(out)}"
        )
    return asdict(outcome)


def _failure_class(out: Path, returncode: int) -> str:
    """A rank's own word on why it failed (no GPU, no NCCL…) before the launcher's exit code."""
    if returncode == 0:
        return "bad_metrics"
    recognised = rank_failure(out)
    return recognised[0] if recognised else "launcher_error"


def _run_logged(argv: list[str], env: dict[str, str], log: Path, echo: bool) -> int:
    with open(log, "ab") as sink:
        sink.write(("$ " + " ".join(argv) + "\n").encode())
        sink.flush()
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert process.stdout is not None
        for line in process.stdout:
            sink.write(line)
            if echo:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
        return process.wait()


def _tail(out: Path, lines: int = 30) -> str:
    attempt = AttemptPaths(out)
    source = next(iter(attempt.error_files() or attempt.launcher_logs()), None)
    if source is None:
        return ""
    text = source.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {source} (last {len(text)} lines) ---\n" + "\n".join(text)
