"""A local cell's processes, as /proc shows them: is the attempt still running here?

A local job is a process tree: the submitit controller (its pid is the job id) starts a
task, which runs the runner, which starts the launcher (torchrun and its ranks, or
horovodrun). Every process of the tree inherits ``DNNBENCH_LOCAL_JOB=<job name>`` from
the controller's environment, so the job is found by name as a Slurm job is, even when
the controller was killed or its pid was never recorded (a crash in between).

A pid alone is not a process: the kernel reuses pids, so a record holds the boot id and
the process's start time too, and only the same (pid, boot, start) is the same process.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from orchestrator.ledger import ProcessRecord

JOB_ENV = "DNNBENCH_LOCAL_JOB"
_PROC = Path("/proc")


@cache
def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "?"


def host() -> str:
    return socket.gethostname()


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(state letter, parent pid, start time in clock ticks since boot) of a process, or None."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces and ')': split after the last one.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), fields[19]


def record(pid: int) -> ProcessRecord:
    """What identifies process ``pid`` from now on (it must exist: a zombie still has its stat)."""
    stat = _stat(pid)
    return ProcessRecord(pid, f"{_boot_id()}/{stat[2]}" if stat else None, host())


def is_alive(process: ProcessRecord) -> bool | None:
    """True while the recorded process runs; None when it runs on another host (cannot be seen from here)."""
    if process.host and process.host != host():
        return None
    stat = _stat(process.pid)
    if stat is None or stat[0] in "ZX":  # an exited child waiting to be reaped is not running
        return False
    return process.start is None or process.start == f"{_boot_id()}/{stat[2]}"


def tagged_processes() -> dict[str, list[int]]:
    """Every live process of this user that carries a local job's name, by name (top of each tree first)."""
    key = f"{JOB_ENV}=".encode()
    found: dict[str, dict[int, int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # another user's process, or it just ended
            continue
        name = next(
            (var[len(key) :].decode(errors="replace") for var in environ.split(b"\0") if var.startswith(key)), None
        )
        stat = _stat(int(entry.name)) if name is not None else None
        if name is not None and stat is not None and stat[0] not in "ZX":
            found.setdefault(name, {})[int(entry.name)] = stat[1]
    return {name: sorted(tree, key=lambda pid: (tree[pid] in tree, pid)) for name, tree in found.items()}


def job_processes(job_name: str) -> list[int]:
    """Live processes of the local job ``job_name``, the top of its tree first."""
    return tagged_processes().get(job_name, [])


@contextmanager
def tagged(job_name: str) -> Iterator[None]:
    """Processes started inside the block carry the job's name in their environment."""
    before = os.environ.get(JOB_ENV)
    os.environ[JOB_ENV] = job_name
    try:
        yield
    finally:
        if before is None:
            del os.environ[JOB_ENV]
        else:
            os.environ[JOB_ENV] = before
