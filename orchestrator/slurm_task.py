"""Inside a Slurm array task: find this task's cell, the job's nodes, and run it.

``python -m orchestrator.slurm_task CELLS_FILE`` (started by srun, one task per node).
On USR2 (sent ``signal_delay_s`` before the time limit) node 0 requeues the job while
requeues are left; the requeued run sets the interrupted attempt aside and starts the
cell again, so dumps of two runs never mix.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from orchestrator.errors import CellFailedError
from orchestrator.runner import NodeContext, run_cell


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


def _on_usr2(signum: int, frame: object) -> None:
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    allowed = int(os.environ.get("DNNBENCH_MAX_REQUEUES", "0"))
    if int(os.environ.get("SLURM_NODEID", "0")) == 0 and restarts < allowed:
        print(f"dnnbench: time limit near, requeue {restarts + 1}/{allowed}", file=sys.stderr, flush=True)
        subprocess.run(["scontrol", "requeue", task_key()], check=False)
    else:
        print("dnnbench: time limit near, no requeue left", file=sys.stderr, flush=True)
    os._exit(143)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cells = json.loads(Path(args[0]).read_text())
    index = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
    cell_file, out_dir = cells[index]
    signal.signal(signal.SIGUSR2, _on_usr2)
    node = NodeContext(
        node_rank=int(os.environ.get("SLURM_NODEID", "0")),
        nnodes=int(os.environ.get("SLURM_JOB_NUM_NODES", "1")),
        hosts=job_hosts(),
        job_id=os.environ.get("SLURM_JOB_ID", str(os.getpid())),
        restart_count=int(os.environ.get("SLURM_RESTART_COUNT", "0")),
    )
    try:
        run_cell(cell_file, out_dir, node, echo=True)
    except CellFailedError as err:
        print(f"dnnbench: {err}", file=sys.stderr, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
