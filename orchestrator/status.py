"""Honest cell states from the cell's files plus one batched scheduler query.

A cell is ``completed`` only when its attempt's outcome says every rank's dump was
present and valid *and* the scheduler does not say the job ended badly. The
scheduler's word alone never makes a cell completed.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from orchestrator.backends import get_backend
from orchestrator.backends.base import SchedulerState
from orchestrator.ledger import AttemptRow, Ledger
from orchestrator.paths import OUTCOME_FILE, SweepPaths

TERMINAL = ("completed", "failed", "missing")
# Scheduler words → failure class, when the cell left no outcome of its own.
_FAILURE_OF_STATE = {
    "OUT_OF_MEMORY": "oom",
    "TIMEOUT": "timeout",
    "DEADLINE": "timeout",
    "PREEMPTED": "preempted",
    "NODE_FAIL": "node_fail",
    "BOOT_FAIL": "node_fail",
    "CANCELLED": "cancelled",
    "FAILED": "launcher_error",
    "COMPLETED": "bad_metrics",  # ended well, but no valid outcome from the cell
    "ENDED": "launcher_error",  # left squeue, no sacct to say how, no outcome
}
_ENDED_WELL = ("COMPLETED", "ENDED")
_WAITING = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "CONFIGURING")
_RUNNING = ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING")
# Classes a plain retry will not fix: resubmit says so instead of retrying blindly.
NOT_RETRYABLE = ("oom", "config", "unavailable")


@dataclass(frozen=True)
class CellStatus:
    cell_id: str
    label: str
    state: str  # pending | running | completed | failed | missing
    failure_class: str | None = None
    attempt: int | None = None
    job: str | None = None
    detail: str = ""
    # A failed attempt's rank traceback (error_rank_<r>.txt), when a rank raised.
    traceback: str = ""


def read_outcome(attempt_dir: Path) -> dict | None:
    try:
        return json.loads((attempt_dir / OUTCOME_FILE).read_text())
    except (OSError, ValueError):
        return None


def read_traceback(attempt_dir: Path) -> str:
    """The first failing rank's traceback in an attempt folder, or ''."""
    for path in sorted(attempt_dir.glob("error_rank_*.txt")):
        try:
            return path.read_text(errors="replace").strip()
        except OSError:
            continue
    return ""


def classify(
    row: AttemptRow | None,
    outcome: dict | None,
    scheduler: SchedulerState | None,
    *,
    detached: bool,
) -> tuple[str, str | None, str]:
    """(state, failure class, detail) of one cell's newest attempt."""
    if row is None:
        return "missing", None, "never submitted"
    if row.submission_state == "submitting":
        return "pending", None, "submission not confirmed yet"
    word = (scheduler.state.split()[0] if scheduler else "").upper()
    if outcome is not None:
        if outcome.get("state") == "completed":
            if word in _FAILURE_OF_STATE and word not in _ENDED_WELL:
                return "failed", _FAILURE_OF_STATE[word], f"dumps valid but scheduler says {word}"
            return "completed", None, ""
        reasons = "; ".join(outcome.get("reasons", [])[:3])
        return "failed", outcome.get("failure_class") or "launcher_error", reasons
    if word in _WAITING:
        return "pending", None, scheduler.reason or "" if scheduler else ""
    if word in _RUNNING:
        return "running", None, ""
    if word in _FAILURE_OF_STATE:
        return "failed", _FAILURE_OF_STATE[word], f"scheduler: {scheduler.state if scheduler else ''}"
    if not detached:
        return "failed", "launcher_error", "the local job ended without an outcome"
    # No word from the scheduler and nothing on disk: queued jobs reach sacct a few s late.
    return "pending", None, "no scheduler record yet"


def collect(paths: SweepPaths, *, query: bool = True) -> list[CellStatus]:
    with Ledger(paths.ledger) as ledger:
        cells = ledger.cells()
        latest = ledger.latest_attempts()
        backends = {row.backend for row in latest.values() if row.backend}
    scheduler: dict[str, SchedulerState] = {}
    detached = "local" not in backends
    if query:
        for name in backends:
            keys = [r.scheduler_key for r in latest.values() if r.backend == name and r.scheduler_key]
            scheduler.update(get_backend({"backend": name}).query(keys))
    statuses = []
    for cell_id, label, unavailable in cells:
        row = latest.get(cell_id)
        if unavailable and row is None:
            statuses.append(CellStatus(cell_id, label, "failed", "unavailable", detail=unavailable))
            continue
        outcome = read_outcome(paths.cell(cell_id).attempt(row.attempt)) if row else None
        key = row.scheduler_key if row else None
        state, failure, detail = classify(row, outcome, scheduler.get(key) if key else None, detached=detached)
        traceback = ""
        if state == "failed" and row is not None:
            traceback = read_traceback(paths.cell(cell_id).attempt(row.attempt))
            if traceback:  # the exception line first: the table shows the start of the detail
                detail = f"{traceback.splitlines()[-1]}; {detail}" if detail else traceback.splitlines()[-1]
        statuses.append(
            CellStatus(cell_id, label, state, failure, row.attempt if row else None, key, detail, traceback)
        )
    return statuses


def summary(statuses: list[CellStatus]) -> str:
    counts = Counter(s.state if s.state != "failed" else f"failed:{s.failure_class}" for s in statuses)
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
