"""How every ``dnnbench`` command line ends, for the orchestrator's CLI and the analysis CLI alike.

- An error the user can fix (a :class:`DnnbenchError`, an ``OSError``, a bad value, a ledger
  SQLite cannot use) prints ``Error: …`` and exits with its code; ``DNNBENCH_FULL_ERROR=1``
  shows the traceback instead.
- Ctrl-C and ``SIGTERM`` end the command as an interruption (exit 130 / 143), never as a
  traceback: SIGTERM is raised as :class:`Terminated`, a ``KeyboardInterrupt``, so the code
  that settles an interrupted sweep runs for both.
- A reader that closed the pipe (``dnnbench aggregate SW | head -1``) is no failure of the
  command's work: further output goes to ``/dev/null`` (the Python documentation's way) and
  the command finishes with its own exit status.

Standard library only, plus :mod:`orchestrator.errors`: the analysis install on a laptop
imports this module.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

from orchestrator.errors import DnnbenchError, ExitCode, Terminated

FULL_ERROR_ENV = "DNNBENCH_FULL_ERROR"
# A write that failed because the disk or the quota is full, or the file system is read-only.
_NO_ROOM = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
}


def no_room_reason(err: BaseException) -> str | None:
    """``"no space left on device: <path>"`` when ``err`` is a write refused for lack of room, else None."""
    if isinstance(err, OSError) and err.errno in _NO_ROOM:
        where = err.filename if err.filename is not None else "(a file of this command)"
        return f"{_NO_ROOM[err.errno]}: {where}"
    return None


def describe(err: BaseException) -> str:
    """The line after ``Error:`` for an error ``run_command`` reports."""
    room = no_room_reason(err)
    if room is not None:
        return f"{room}; free space (or write access) there and rerun the same command"
    if isinstance(err, sqlite3.DatabaseError):
        return f"the sweep's ledger cannot be read or written: {err} ({FULL_ERROR_ENV}=1 shows where)"
    return str(err)


def exit_code(err: BaseException) -> ExitCode:
    """A damaged ledger is a sweep folder that cannot be read; a busy or full disk is not."""
    if isinstance(err, sqlite3.DatabaseError) and not isinstance(err, sqlite3.OperationalError):
        return ExitCode.NOT_A_SWEEP
    return getattr(err, "exit_code", ExitCode.ERROR)


class _PipeSafe:
    """A stream whose reader may go away: once it has, every write goes to /dev/null instead."""

    def __init__(self, stream: Any):
        self._stream = stream

    def _reader_gone(self) -> None:
        # The stream's own buffer still holds what failed; point its descriptor at /dev/null so that
        # flushing it (now, or at interpreter exit) succeeds instead of raising again.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def write(self, data: Any) -> int:
        try:
            return self._stream.write(data)
        except BrokenPipeError:
            self._reader_gone()
            return len(data)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()
            with contextlib.suppress(BrokenPipeError, OSError, ValueError):
                self._stream.flush()

    @property
    def buffer(self) -> _PipeSafe:  # the runner echoes its ranks' bytes through sys.stdout.buffer
        return _PipeSafe(self._stream.buffer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _pipe_safe_streams() -> Iterator[None]:
    saved: tuple[IO[str], IO[str]] = (sys.stdout, sys.stderr)
    sys.stdout, sys.stderr = _PipeSafe(sys.stdout), _PipeSafe(sys.stderr)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout.flush()  # output still buffered must not fail at interpreter exit
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread for the block (and only for it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def run_command(command: Callable[[], int | None], *, on_interrupt: str) -> int:
    """Run one command line's work; its exit status, whatever ends it (see the module's text).

    ``on_interrupt``: what the user is told after Ctrl-C or SIGTERM (what was kept, what to rerun).
    """
    with _pipe_safe_streams():
        try:
            with _sigterm_interrupts():
                return int(command() or 0)
        except (DnnbenchError, OSError, ValueError, sqlite3.DatabaseError) as err:
            if os.environ.get(FULL_ERROR_ENV) == "1":
                raise
            print(f"Error: {describe(err)}", file=sys.stderr)
            return int(exit_code(err))
        except KeyboardInterrupt as err:
            how = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
            print(f"{how}: {on_interrupt}", file=sys.stderr)
            return int(ExitCode.TERMINATED if isinstance(err, Terminated) else ExitCode.INTERRUPTED)
