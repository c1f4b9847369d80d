"""Resubmit what failed or never ran, as new attempts; completed cells stay untouched.

Earlier attempts' folders are kept (each attempt has its own folder). A failure that a
plain retry will not fix (out of memory, framework not installed) is skipped with the
reason unless asked for explicitly. A cell whose attempt is still pending or running is
never given a second one beside it, even when named with ``--force``.

Everything happens under the sweep folder's lock: what a killed command left unconfirmed
is settled first, then the states are read, then the chosen cells are submitted, so no
other command can start the same cells in between. Cells run as planned: the ledger is
trusted, and an edited cell file is refused with its path (:func:`load_cells`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.errors import ConfigError
from orchestrator.framework_checks import unavailable_reason
from orchestrator.ledger import Ledger
from orchestrator.lock import sweep_lock
from orchestrator.paths import SweepPaths
from orchestrator.shell_safety import check_safe
from orchestrator.status import NOT_RETRYABLE, CellStatus, collect
from orchestrator.submit import SubmitReport, load_cells, resolve_unconfirmed, submit_cells

_ADVICE = {
    "oom": "out of memory again on retry: lower batch_size or ask for more memory, then use --force",
    "unavailable": "the framework is not installed",
    "no_gpu": "the node had no usable GPU (driver, CUDA or GPU count: see the detail): fix it, then use --force",
    "no_nccl": "Horovod was built without NCCL: rebuild it with NCCL (docs/horovod.md), then use --force",
}
_LIVE = ("pending", "running")


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
    exclude_nodes: str | None = None,
) -> ResubmitReport:
    """Choose and submit; ``report.chosen`` is exactly what was submitted (or would be, in a dry run).

    ``exclude_nodes``: a Slurm host list (``node2,node[5-7]``) the new attempts must not run on,
    passed as sbatch's ``--exclude`` and recorded with each submission in the ledger. A backend
    without nodes (local) refuses it before anything is submitted.
    """
    check_safe("--exclude-nodes", exclude_nodes, where="sbatch's --exclude")
    with contextlib.nullcontext() if dry_run else sweep_lock(paths):
        if not dry_run:
            with Ledger(paths.ledger) as ledger:
                resolve_unconfirmed(ledger)
        report = choose(collect(paths), set(force or []), include_unretryable, paths)
        cells = load_cells(paths, {s.cell_id for s in report.chosen})
        by_id = {cell.id: cell for cell in cells}
        for status in list(report.chosen):  # what was missing at plan time may be installed now
            cell = by_id[status.cell_id]
            cell.unavailable = unavailable_reason(cell.config)
            if cell.unavailable:
                report.chosen.remove(status)
                report.skipped.append((status, f"still unavailable: {cell.unavailable}"))
        chosen_ids = {s.cell_id for s in report.chosen}
        if chosen_ids:
            with Ledger(paths.ledger) as ledger:
                report.submitted = submit_cells(
                    paths,
                    ledger,
                    [cell for cell in cells if cell.id in chosen_ids],
                    cell_ids=chosen_ids,
                    progress=progress,
                    dry_run=dry_run,
                    exclude_nodes=exclude_nodes,
                )
    return report


def choose(
    statuses: list[CellStatus], forced: set[str], include_unretryable: bool, paths: SweepPaths
) -> ResubmitReport:
    """Failed (retryable) and missing cells, and ``forced`` ones unless their attempt still lives."""
    unknown = forced - {s.cell_id for s in statuses}
    if unknown:
        raise ConfigError(f"--force: no such cell in {paths.root}: {', '.join(sorted(unknown))}")
    report = ResubmitReport()
    for status in statuses:
        if status.state in _LIVE:
            if status.cell_id in forced:
                why = f"attempt {status.attempt} is still {status.state}" + (
                    f" ({status.detail})" if status.detail else ""
                )
                report.skipped.append((status, f"{why}: a second attempt would share the machine; let it end first"))
        elif status.cell_id in forced or status.state == "missing":
            report.chosen.append(status)
        elif status.state == "failed":
            if status.failure_class in NOT_RETRYABLE and not include_unretryable:
                report.skipped.append((status, _ADVICE.get(status.failure_class or "", "not retryable")))
            else:
                report.chosen.append(status)
    return report
