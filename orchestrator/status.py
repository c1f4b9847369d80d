"""Honest cell states from the cell's files plus one batched scheduler query.

A cell is ``completed`` only when its attempt's outcome says every rank's dump was
present and valid *and* the scheduler does not say the job ended badly. The
scheduler's word alone never makes a cell completed. On the local backend the
"scheduler" is the job's processes: running while one lives, failed when all ended
without an outcome. While a command holds the sweep's lock (:mod:`orchestrator.lock`)
cells it has not started yet are ``pending``, not ``missing``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from jobs.schema import read_attempt, read_bytes
from orchestrator.backends import get_backend
from orchestrator.backends.base import SchedulerState
from orchestrator.ledger import AttemptRow, Ledger, config_digest
from orchestrator.lock import holder
from orchestrator.paths import AttemptPaths, SweepPaths

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
    "ENDED": "launcher_error",  # left squeue, no sacct to say how (local: its processes ended), no outcome
}
# Local jobs a killed command queued or was starting, with no trace of a start: to be submitted again.
_NOT_STARTED = "NOT_STARTED"
_ENDED_WELL = ("COMPLETED", "ENDED")
_WAITING = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "CONFIGURING")
_RUNNING = ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING")
# A cell that ran but whose folder is gone: what it measured is lost, not done; its plan must be written again.
_VANISHED = (
    "cell folder missing (deleted after it was submitted): rerun the same `dnnbench sweep` to write its plan "
    "again, then `dnnbench resubmit`"
)
# Classes a plain retry will not fix: resubmit says so instead of retrying blindly.
NOT_RETRYABLE = ("oom", "config", "unavailable", "no_gpu", "no_nccl")


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
    data, _ = read_bytes(AttemptPaths(attempt_dir).outcome)  # never blocks: a FIFO is no outcome
    try:
        return json.loads(data) if data is not None else None
    except ValueError:
        return None


def read_traceback(attempt_dir: Path) -> str:
    """The first failing rank's traceback in an attempt folder, or ''."""
    for path in AttemptPaths(attempt_dir).error_files():
        data, _ = read_bytes(path)
        if data is not None:
            return data.decode(errors="replace").strip()
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
    if row.submission_state == "interrupted" and not (outcome and outcome.get("state") == "completed"):
        # The user stopped it (its outcome, if any, is what the stop did to it): to run again, not failed.
        return "missing", None, row.note or "interrupted before it ended; rerun the same command"
    if row.submission_state in ("queued", "submitting") and scheduler is None:
        return "pending", None, "submission not confirmed yet"
    word = (scheduler.state.split()[0] if scheduler else "").upper()
    if word == _NOT_STARTED and outcome is None:
        return "missing", None, scheduler.reason or "never started" if scheduler else ""
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
        return "running", None, scheduler.reason or "" if scheduler and row.backend == "local" else ""
    if word in _FAILURE_OF_STATE:
        if row.backend == "local" and scheduler and scheduler.reason:  # the processes' word, not a scheduler's
            return "failed", _FAILURE_OF_STATE[word], scheduler.reason
        return "failed", _FAILURE_OF_STATE[word], f"scheduler: {scheduler.state if scheduler else ''}"
    if not detached:
        return "failed", "launcher_error", "the local job ended without an outcome"
    # No word from the scheduler and nothing on disk: queued jobs reach sacct a few s late.
    return "pending", None, "no scheduler record yet"


def collect(paths: SweepPaths, *, query: bool = True) -> list[CellStatus]:
    with Ledger(paths.ledger, read_only=True) as ledger:  # status and wait write nothing, also on a read-only mount
        cells = ledger.cells()
        latest = ledger.latest_attempts()
        planned = ledger.config_digests()
        backends = {row.backend for row in latest.values() if row.backend}
    submitter = holder(paths)  # another command submitting now: what has no attempt yet may still get one
    scheduler: dict[str, SchedulerState] = {}  # by cell id
    detached = "local" not in backends
    if query:
        for name in backends:
            rows = [r for r in latest.values() if r.backend == name]
            scheduler.update(get_backend({"backend": name}).states(rows, paths, busy=submitter is not None))
    # Outcomes are read after the states: a cell that ended in between has written its outcome by now.
    statuses = []
    for cell_id, label, unavailable in cells:
        row = latest.get(cell_id)
        if unavailable and row is None:
            statuses.append(CellStatus(cell_id, label, "failed", "unavailable", detail=unavailable))
            continue
        if row is None and submitter is not None:
            detail = f"not submitted yet: {submitter.describe()} is submitting this sweep"
            statuses.append(CellStatus(cell_id, label, "pending", detail=detail))
            continue
        if row is not None and not paths.cell(cell_id).root.is_dir():
            statuses.append(CellStatus(cell_id, label, "missing", attempt=row.attempt, detail=_VANISHED))
            continue
        outcome = read_outcome(paths.cell(cell_id).attempt(row.attempt)) if row else None
        key = row.scheduler_key if row else None
        state, failure, detail = classify(row, outcome, scheduler.get(cell_id), detached=detached)
        traceback = ""
        if state == "completed" and row is not None and outcome is not None:
            attempt_dir = paths.cell(cell_id).attempt(row.attempt)
            state, failure, detail = _recheck_dumps(attempt_dir, cell_id, outcome, planned.get(cell_id))
        if state == "failed" and row is not None:
            traceback = read_traceback(paths.cell(cell_id).attempt(row.attempt))
            if traceback:  # the exception line first: the table shows the start of the detail
                detail = f"{traceback.splitlines()[-1]}; {detail}" if detail else traceback.splitlines()[-1]
            elif row.backend == "slurm" and key and outcome is None:  # only the scheduler's word: say why
                detail = _with_log_reason(paths, key, detail)
        statuses.append(
            CellStatus(cell_id, label, state, failure, row.attempt if row else None, key, detail, traceback)
        )
    return statuses


def _recheck_dumps(attempt_dir: Path, cell_id: str, outcome: dict, planned: str | None) -> tuple[str, str | None, str]:
    """A completed cell stays completed only while its dumps still validate and hold its planned config.

    Dumps edited, truncated or replaced after the run would be excluded by the analysis; status
    says so instead of calling the cell completed. The plan is the ledger's (``planned``: the
    config digest recorded at planning), not the cell file, which a user may have edited since.
    """
    world = outcome.get("ranks_expected")
    if type(world) is not int or world < 1:
        return "failed", "bad_metrics", f"completed, but its outcome names no rank count ({world!r})"
    docs, reasons = read_attempt(attempt_dir, world, None, cell_id)
    if not reasons and planned is not None and config_digest(docs[0]["config"]) != planned:
        reasons = ["the dumps hold another config than the one planned for this cell"]
    if reasons:
        return "failed", "bad_metrics", "completed, but its dumps no longer validate: " + "; ".join(reasons[:3])
    return "completed", None, ""


def _with_log_reason(paths: SweepPaths, key: str, detail: str) -> str:
    """The scheduler's word plus the line of the task's logs that says why (srun refused, …)."""
    from orchestrator.backends.slurm import scheduler_log_reason

    found = scheduler_log_reason(paths, key)
    if found is None:
        return detail
    line, log = found
    return f"{line} ({log}); {detail}" if detail else f"{line} ({log})"


def summary(statuses: list[CellStatus]) -> str:
    counts = Counter(s.state if s.state != "failed" else f"failed:{s.failure_class}" for s in statuses)
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
