"""Errors the user can fix while analysing: shown as ``Error: <message>`` by the CLI."""

from __future__ import annotations

from orchestrator.errors import DnnbenchError


class AnalysisError(DnnbenchError):
    """Bad input to an analysis command (no sweep there, unreadable table, rsync failed)."""


class NoResultsError(AnalysisError):
    """Nothing could be aggregated: no cell with a complete, valid attempt."""
