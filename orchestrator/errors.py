"""One error hierarchy and one table of exit codes.

The CLI prints ``Error: <message>`` for a :class:`DnnbenchError` and exits with its
``exit_code``; the README's exit-code table is this module's :class:`ExitCode`.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a ``dnnbench`` command's exit status means (documented in the README)."""

    OK = 0  # everything asked for was done; every cell concerned completed
    ERROR = 1  # bad input or another error the user can fix; nothing was submitted or changed
    USAGE = 2  # the command line itself is wrong (argparse's own code)
    CELLS_FAILED = 3  # the command ran, but some cells failed (or are missing)
    NOT_A_SWEEP = 4  # the path given is not a sweep folder (or its ledger is unreadable)
    TIMEOUT = 5  # `wait --timeout` ran out before every cell was terminal
    BUSY = 6  # another dnnbench command holds this sweep folder's lock
    CHECK_FAILED = 7  # `check` or `compare --fail-below`: some row missed its reference or fell below the gate
    INTERRUPTED = 130  # Ctrl-C: the ledger keeps what was submitted
    TERMINATED = 143  # SIGTERM (128 + 15), as a shell reports it: like Ctrl-C, the ledger keeps what was submitted


class DnnbenchError(Exception):
    """An error the user can fix; shown without a traceback (DNNBENCH_FULL_ERROR=1 shows it)."""

    exit_code: ExitCode = ExitCode.ERROR


class ConfigError(DnnbenchError):
    """Bad input, found before anything is started or submitted."""


class GridTooLargeError(ConfigError):
    """A sweep with more cells than one sweep may plan (``sweep.MAX_SWEEP_CELLS``), refused before expanding it."""

    exit_code = ExitCode.USAGE


class SubmissionError(DnnbenchError):
    """The scheduler refused or failed a submission."""


class CellFailedError(DnnbenchError):
    """A cell's launcher exited non-zero or its dumps are missing or invalid."""

    exit_code = ExitCode.CELLS_FAILED


class NotASweepError(DnnbenchError):
    """A path that should be a sweep folder is not one (or is damaged beyond reading)."""

    exit_code = ExitCode.NOT_A_SWEEP


class SweepBusyError(DnnbenchError):
    """Another command that submits holds the sweep folder's lock."""

    exit_code = ExitCode.BUSY


class Terminated(KeyboardInterrupt):
    """SIGTERM to a dnnbench command: an interruption like Ctrl-C (what was running is settled), exit 143."""


class NoRoomError(DnnbenchError):
    """A write refused for lack of room: no space left on the device, the quota exceeded, a read-only mount.

    Exit 1 when the command changed nothing yet; a command that had started cells says 3 instead.
    """
