"""Resubmit what failed or never ran, as new attempts; completed cells stay untouched.

Earlier attempts' folders are kept (each attempt has its own folder). A failure that a
plain retry will not fix (out of memory, framework not installed) is skipped with the
reason unless asked for explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.frameworks import unavailable_reason
from orchestrator.ledger import Ledger
from orchestrator.paths import SweepPaths
from orchestrator.status import NOT_RETRYABLE, CellStatus, collect
from orchestrator.submit import SubmitReport, load_cells, submit_cells

_ADVICE = {
    "oom": "out of memory again on retry: lower batch_size or ask for more memory, then use --force",
    "unavailable": "the framework is not installed",
}


@dataclass
class ResubmitReport:
    submitted: SubmitReport | None = None
    chosen: list[CellStatus] = field(default_factory=list)
    skipped: list[tuple[CellStatus, str]] = field(default_factory=list)


def resubmit(
    paths: SweepPaths,
    *,
    force: list[str] | None = None,
    include_unretryable: bool = False,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ResubmitReport:
    forced = set(force or [])
    statuses = collect(paths)
    known = {s.cell_id for s in statuses}
    unknown = forced - known
    if unknown:
        raise ValueError(f"--force: no such cell in {paths.root}: {', '.join(sorted(unknown))}")
    report = ResubmitReport()
    for status in statuses:
        if status.cell_id in forced or status.state == "missing":
            report.chosen.append(status)
        elif status.state == "failed":
            if status.failure_class in NOT_RETRYABLE and not include_unretryable:
                report.skipped.append((status, _ADVICE.get(status.failure_class or "", "not retryable")))
            else:
                report.chosen.append(status)
    cells = load_cells(paths)
    for cell in cells:  # what was missing at plan time may be installed now
        cell.unavailable = unavailable_reason(cell.config)
    chosen_ids = {s.cell_id for s in report.chosen}
    if chosen_ids:
        with Ledger(paths.ledger) as ledger:
            report.submitted = submit_cells(
                paths, ledger, cells, cell_ids=chosen_ids, progress=progress, dry_run=dry_run
            )
    return report
