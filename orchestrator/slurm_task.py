"""Inside a Slurm array task: find this task's cell, the job's nodes, and run it.

``python -m orchestrator.slurm_task CELLS_FILE`` (started by srun, one task per node).
On USR2 (sent ``signal_delay_s`` before the time limit) node 0 requeues the job while
requeues are left; the requeued run sets the interrupted attempt aside and starts the
cell again, so dumps of two runs never mix. With no requeue left, node 0 writes the
outcome (failed, class ``timeout``) before the task exits. Each node's task also records the
other Slurm jobs on its node before and after the cell (``colocation_node<N>.json``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from jobs import schema
from jobs.colocation import node_jobs_snapshot, write_node_jobs
from orchestrator.errors import CellFailedError
from orchestrator.paths import OUTCOME_FILE
from orchestrator.runner import NodeContext, Outcome, judge_attempt, run_cell


def _node_address(name: str) -> str:
    try:
        return socket.gethostbyname(name)
    except OSError:
        pass
    # Nodes that don't resolve (several slurmd on one host) still have a NodeAddr.
    out = subprocess.run(["scontrol", "show", "node", "-o", name], capture_output=True, text=True, check=False)
    for token in out.stdout.split():
        if token.startswith("NodeAddr="):
            return token.split("=", 1)[1]
    return name


def job_hosts() -> tuple[str, ...]:
    nodelist = os.environ.get("SLURM_JOB_NODELIST", "")
    if not nodelist:
        return ("127.0.0.1",)
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return tuple(_node_address(name) for name in out.stdout.split())


def task_key() -> str:
    array_job, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{index}" if array_job and index else os.environ["SLURM_JOB_ID"]


# The attempt folder and world size of the cell this task runs (for the USR2 handler).
_RUNNING: dict[str, object] = {}


def _record_timeout(restarts: int, allowed: int) -> None:
    """No requeue left: the cell ran out of time. Say so in its outcome (class ``timeout``).

    The job then ends FAILED (exit 143) before Slurm's own limit, and USR2 has already
    stopped the ranks: without this outcome the cell would read as a launcher error.
    """
    out_dir, world = _RUNNING.get("out_dir"), _RUNNING.get("world")
    if not isinstance(out_dir, Path) or not isinstance(world, int) or (out_dir / OUTCOME_FILE).exists():
        return
    valid, _ = judge_attempt(out_dir, world)
    reason = f"time limit near (USR2), no requeue left ({restarts} of {allowed} used)"
    outcome = Outcome(state="failed", failure_class="timeout", ranks_expected=world, ranks_valid=valid,
                      reasons=[reason])  # fmt: skip
    schema.write_atomic(out_dir / OUTCOME_FILE, asdict(outcome))


def _on_usr2(signum: int, frame: object) -> None:
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    allowed = int(os.environ.get("DNNBENCH_MAX_REQUEUES", "0"))
    node0 = int(os.environ.get("SLURM_NODEID", "0")) == 0
    if node0 and restarts < allowed:
        print(f"dnnbench: time limit near, requeue {restarts + 1}/{allowed}", file=sys.stderr, flush=True)
        subprocess.run(["scontrol", "requeue", task_key()], check=False)
    else:
        print("dnnbench: time limit near, no requeue left", file=sys.stderr, flush=True)
        if node0:
            _record_timeout(restarts, allowed)
    os._exit(143)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cells = json.loads(Path(args[0]).read_text())
    index = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
    cell_file, out_dir = cells[index]
    config = json.loads(Path(cell_file).read_text())["config"]
    _RUNNING.update(out_dir=Path(out_dir), world=int(config["gpus"]) * int(os.environ.get("SLURM_JOB_NUM_NODES", "1")))
    signal.signal(signal.SIGUSR2, _on_usr2)
    node = NodeContext(
        node_rank=int(os.environ.get("SLURM_NODEID", "0")),
        nnodes=int(os.environ.get("SLURM_JOB_NUM_NODES", "1")),
        hosts=job_hosts(),
        job_id=os.environ.get("SLURM_JOB_ID", str(os.getpid())),
        restart_count=int(os.environ.get("SLURM_RESTART_COUNT", "0")),
    )
    # Other Slurm jobs on this node, before and after the cell: one squeue call per node each time.
    # Not for an attempt that already holds an outcome (run_cell refuses to run it again).
    before = node_jobs_snapshot() if node.restart_count or not (Path(out_dir) / OUTCOME_FILE).exists() else None
    try:
        run_cell(cell_file, out_dir, node, echo=True)
    except CellFailedError as err:
        print(f"dnnbench: {err}", file=sys.stderr, flush=True)
        return 3
    finally:
        if before is not None:
            write_node_jobs(out_dir, before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
