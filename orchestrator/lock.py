"""One lock per sweep folder for every command that submits (``sweep``, ``resubmit``, ``run``).

An ``flock`` on ``SWEEP_DIR/submit.lock`` (:attr:`SweepPaths.lock`): the kernel drops it when its holder dies,
even by ``kill -9``, so a crash never leaves a sweep locked. The lock's file
descriptor is not inheritable and submitit starts jobs with ``close_fds``, so a local
cell left running by a killed ``dnnbench sweep`` does not keep the lock: the next
command takes it and sees that cell's process in the ledger instead.

A second command waits up to :data:`WAIT_S` seconds (two submissions started together
then follow one another, as ``sbatch`` calls would), then stops with
:class:`SweepBusyError` naming the holder. Reading commands (``status``, ``wait``,
``aggregate``) never take it; they only ask whether it is held (:func:`holder`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jobs.schema import open_regular
from orchestrator.errors import SweepBusyError
from orchestrator.paths import SweepPaths

WAIT_S = 10.0
_POLL_S = 0.1
# Sweep folders this process holds, with how many nested users: flock locks belong to an
# open file, so taking the same folder's lock again through a second open would block on itself.
_HELD: dict[Path, tuple[int, int]] = {}


@dataclass(frozen=True)
class LockHolder:
    pid: int | None
    host: str
    command: str
    since: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since)) if self.since else "?"
        return f"pid {self.pid} on {self.host} (`{self.command}`, since {when})"


def _read_holder(fd: int) -> LockHolder:
    """What the holder wrote into the lock file; a holder that has not written yet is unknown."""
    try:
        doc = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        doc = {}
    return LockHolder(doc.get("pid"), doc.get("host", "?"), doc.get("command", "?"), float(doc.get("since") or 0))


def _write_holder(fd: int, command: str) -> None:
    doc = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(doc).encode(), 0)


def _try_lock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def sweep_lock(paths: SweepPaths, command: str | None = None, wait_s: float = WAIT_S) -> Iterator[None]:
    """Hold the sweep folder's lock for the block (the folder must exist); re-entrant within one process."""
    root = paths.root.resolve()
    if root in _HELD:
        fd, depth = _HELD[root]
        _HELD[root] = (fd, depth + 1)
        try:
            yield
        finally:
            _HELD[root] = (fd, _HELD[root][1] - 1)
        return
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _acquire(fd, root, wait_s)
        _write_holder(fd, command or shlex.join(["dnnbench", *sys.argv[1:]]))
        _HELD[root] = (fd, 1)
        try:
            yield
        finally:
            del _HELD[root]
    finally:
        os.close(fd)  # closing the only descriptor of the open file releases the flock


def _acquire(fd: int, root: Path, wait_s: float) -> None:
    started = time.monotonic()
    told = False
    while not _try_lock(fd, fcntl.LOCK_EX):
        waited = time.monotonic() - started
        if waited >= wait_s:
            raise SweepBusyError(
                f"{root} is busy: another dnnbench command that submits holds it: {_read_holder(fd).describe()}. "
                f"Let it finish (`dnnbench wait {root}` follows it) and run this command again; "
                "if that process is gone from every host, the lock is already free."
            )
        if not told and waited >= 1.0:  # `status` asks for the lock for an instant: not worth a word
            print(f"waiting up to {wait_s:.0f} s for {root}: held by {_read_holder(fd).describe()}", file=sys.stderr)
            told = True
        time.sleep(_POLL_S)


def holder(paths: SweepPaths) -> LockHolder | None:
    """Which other command holds the sweep folder's lock now, or None (asks without waiting)."""
    if paths.root.resolve() in _HELD:  # this process: it is between two steps of its own
        return None
    try:
        fd = open_regular(paths.lock)  # a FIFO there would block the open
    except OSError:  # no lock file (no command has ever submitted here), or none a command made
        return None
    try:
        if _try_lock(fd, fcntl.LOCK_SH):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return _read_holder(fd)
    finally:
        os.close(fd)
