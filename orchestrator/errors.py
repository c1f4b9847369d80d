"""One error hierarchy: the CLI prints ``Error: <message>`` for these and exits 1."""

from __future__ import annotations


class DnnbenchError(Exception):
    """An error the user can fix; shown without a traceback (DNNBENCH_FULL_ERROR=1 shows it)."""


class ConfigError(DnnbenchError):
    """Bad input, found before anything is started or submitted."""


class SubmissionError(DnnbenchError):
    """The scheduler refused or failed a submission."""


class CellFailedError(DnnbenchError):
    """A cell's launcher exited non-zero or its dumps are missing or invalid."""
