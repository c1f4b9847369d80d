"""From a planned sweep to submitted jobs: the sweep folder, the ledger, the backend.

Idempotent: the same command with the same sweep folder submits only the cells that
have no attempt yet, and never rewrites a cell file that differs from the plan.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from jobs.schema import with_added_defaults
from orchestrator.backends import get_backend
from orchestrator.backends.base import CellJob, Shape, ShapeGroup
from orchestrator.errors import ConfigError
from orchestrator.ledger import Ledger
from orchestrator.paths import SweepPaths
from orchestrator.sweep import Cell, SweepPlan

DEFAULT_ROOT = Path("outputs") / "sweeps"


def default_sweep_dir(arguments: list[str], root: Path = DEFAULT_ROOT) -> Path:
    """The same arguments give the same folder, so rerunning a command continues it."""
    preset = next((a.split("=", 1)[1] for a in arguments if a.startswith("+sweep=")), "sweep")
    digest = hashlib.sha256("\0".join(sorted(arguments)).encode()).hexdigest()[:8]
    return (root / f"{preset}-{digest}").resolve()


@dataclass
class SubmitReport:
    paths: SweepPaths
    groups: list[ShapeGroup] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    already_submitted: int = 0
    unavailable: list[Cell] = field(default_factory=list)
    detached: bool = True
    not_submitted: int = 0  # left out by the cluster's queue limits; rerun to submit them
    not_submitted_reason: str = ""
    scripts: list[Path] = field(default_factory=list)  # dry run: the batch scripts written


def group_by_shape(cells: list[CellJob]) -> list[ShapeGroup]:
    groups: dict[Shape, ShapeGroup] = {}
    for cell in cells:
        shape = Shape.of(cell.config)
        groups.setdefault(shape, ShapeGroup(shape)).cells.append(cell)
    return list(groups.values())


def write_cell_file(path: Path, cell: Cell) -> None:
    doc = {"cell_id": cell.id, "label": cell.label, "overrides": cell.overrides, "config": cell.config}
    if path.exists():
        existing = json.loads(path.read_text())
        # A cell file written before a key was added lacks it: the same cell, not another.
        if with_added_defaults(existing.get("config") or {}) != with_added_defaults(cell.config):
            raise ConfigError(f"{path} holds another config for cell {cell.id}: refusing to overwrite it")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    tmp.replace(path)


def prepare(plan: SweepPlan, sweep_dir: Path) -> tuple[SweepPaths, Ledger]:
    paths = SweepPaths(sweep_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    if not paths.manifest.exists():
        manifest = {"arguments": plan.arguments, "created_at": time.time(), "cells": len(plan.cells)}
        paths.manifest.write_text(json.dumps(manifest, indent=1))
    for cell in plan.cells:
        write_cell_file(paths.cell(cell.id).cell_file, cell)
    ledger = Ledger(paths.ledger)
    ledger.add_cells((c.id, c.label, c.overrides, c.unavailable) for c in plan.cells)
    return paths, ledger


def submit(
    plan: SweepPlan,
    sweep_dir: Path,
    *,
    progress: Callable[[int], None] | None = None,
    dry_run: bool = False,
) -> SubmitReport:
    """Submit the plan's cells that have no attempt yet."""
    paths, ledger = prepare(plan, sweep_dir)
    with ledger:
        return submit_cells(paths, ledger, plan.cells, progress=progress, dry_run=dry_run)


def submit_cells(
    paths: SweepPaths,
    ledger: Ledger,
    cells: list[Cell],
    *,
    cell_ids: set[str] | None = None,
    progress: Callable[[int], None] | None = None,
    dry_run: bool = False,
) -> SubmitReport:
    """Submit ``cells`` that have no attempt yet, or exactly ``cell_ids`` (a new attempt each)."""
    cluster = cells[0].config["cluster"] if cells else {"backend": "local"}
    backend = get_backend(cluster)
    report = SubmitReport(paths=paths, detached=backend.detached)
    if not dry_run:
        backend.resolve_pending(ledger)
    attempted = ledger.latest_attempts()
    todo: list[CellJob] = []
    for cell in cells:
        if cell.unavailable:
            report.unavailable.append(cell)
            continue
        if cell_ids is not None:
            if cell.id not in cell_ids:
                continue
        elif cell.id in attempted:
            report.already_submitted += 1
            continue
        todo.append(CellJob(cell.id, cell.label, str(paths.cell(cell.id).cell_file), cell.config))
    report.groups = group_by_shape(todo)
    if dry_run:
        write_scripts = getattr(backend, "write_scripts", None)
        if write_scripts is not None:
            report.scripts = write_scripts(paths, report.groups)
        return report
    if report.groups:
        outcome = backend.submit(paths, ledger, report.groups, progress)
        report.job_ids = outcome.job_ids
        report.not_submitted, report.not_submitted_reason = len(outcome.not_submitted), outcome.reason
    return report


def load_cells(paths: SweepPaths) -> list[Cell]:
    """The sweep's cells as planned, read back from their cell files (ledger order)."""
    with Ledger(paths.ledger) as ledger:
        rows = ledger.cells()
    cells = []
    for cell_id, _label, unavailable in rows:
        doc = json.loads(paths.cell(cell_id).cell_file.read_text())
        cells.append(Cell(doc["cell_id"], doc.get("overrides", []), doc["config"], unavailable))
    return cells
