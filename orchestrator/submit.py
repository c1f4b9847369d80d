"""From a planned sweep to submitted jobs: the sweep folder, the ledger, the backend.

Idempotent: the same command with the same sweep folder submits only the cells that
have no attempt yet, and never rewrites a cell file that differs from the plan.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.atomic import sync_folder, write_atomic_text
from jobs.schema import read_bytes, with_added_defaults, write_atomic
from orchestrator.backends import get_backend
from orchestrator.backends.base import CellJob, Shape, ShapeGroup
from orchestrator.cell_identity import CELL_ID_SCHEME, check_cell_id_scheme
from orchestrator.errors import ConfigError
from orchestrator.ledger import Ledger, config_digest
from orchestrator.lock import sweep_lock
from orchestrator.paths import SweepPaths, ledger_cell_ids
from orchestrator.shell_safety import check_sweep_folder
from orchestrator.sweep import Cell, SweepPlan

DEFAULT_ROOT = Path("outputs") / "sweeps"


def default_sweep_dir(arguments: list[str], root: Path = DEFAULT_ROOT) -> Path:
    """The same arguments give the same folder, so rerunning a command continues it."""
    preset = next((a.split("=", 1)[1] for a in arguments if a.startswith("+sweep=")), "sweep")
    # The preset name becomes one folder name: no separators, nothing that climbs out of root.
    preset = re.sub(r"[^A-Za-z0-9_.-]", "_", preset).lstrip(".") or "sweep"
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


def write_cell_file(path: Path, cell: Cell, *, durable: bool = True) -> None:
    """A cell's cell.json, kept where it already holds this config and refused where it holds another.

    ``durable=False``: no fsyncs, for fixtures of thousands of cells (:func:`jobs.atomic.write_atomic_stream`).
    """
    doc = {"cell_id": cell.id, "label": cell.label, "overrides": cell.overrides, "config": cell.config}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
            if not isinstance(existing, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"{path} cannot be read ({err}): refusing to overwrite it; move it aside to have it rewritten"
            ) from err
        # A cell file written before a key was added lacks it: the same cell, not another.
        if with_added_defaults(existing.get("config") or {}) != with_added_defaults(cell.config):
            raise ConfigError(f"{path} holds another config for cell {cell.id}: refusing to overwrite it")
        return
    write_atomic_text(path, json.dumps(doc, indent=1, sort_keys=True), durable=durable)


def _is_dry_run_manifest(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("dry_run"))
    except (OSError, ValueError, AttributeError):  # unreadable: kept as it is, like any real run's
        return False


def _write_manifest(paths: SweepPaths, plan: SweepPlan, *, dry_run: bool) -> None:
    """sweep.json marks the folder as a sweep: written first, kept once a real run wrote it, and
    told of every further grid a real run adds to the folder (``grids``)."""
    if paths.manifest.exists() and not _is_dry_run_manifest(paths.manifest):
        if not dry_run:
            _record_grid(paths, plan)
        return
    manifest = {"arguments": plan.arguments, "created_at": time.time(), "cells": len(plan.cells),
                "cell_id_scheme": CELL_ID_SCHEME, "grids": [_grid_entry(plan)]}  # fmt: skip
    if dry_run:
        manifest["dry_run"] = True
    paths.root.mkdir(parents=True, exist_ok=True)
    write_atomic(paths.manifest, manifest)


def _grid_entry(plan: SweepPlan) -> dict[str, Any]:
    return {"arguments": plan.arguments, "created_at": time.time(), "cells": len(plan.cells)}


def recorded_grids(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every grid run into the sweep, in order (manifests from before ``grids`` hold their one)."""
    grids = manifest.get("grids")
    if isinstance(grids, list) and grids:
        return grids
    return [{"arguments": manifest.get("arguments"), "created_at": manifest.get("created_at"),
             "cells": manifest.get("cells")}]  # fmt: skip


def new_grid(paths: SweepPaths, plan: SweepPlan) -> list[list[str]] | None:
    """The grids recorded before, when ``plan`` is none of them and adds cells; else None.

    The same overrides (in any order), or only cells the ledger has, are the same sweep continued.
    """
    if not paths.manifest.is_file() or _is_dry_run_manifest(paths.manifest):
        return None
    grids = [g.get("arguments") for g in recorded_grids(json.loads(paths.manifest.read_text()))]
    if any(isinstance(g, list) and sorted(map(str, g)) == sorted(plan.arguments) for g in grids):
        return None
    if paths.ledger.is_file():
        try:
            planned = set(ledger_cell_ids(paths.ledger))  # read-only
        except sqlite3.DatabaseError:  # an empty ledger a killed start left: no cells recorded
            planned = set()
        if planned and {cell.id for cell in plan.cells} <= planned:
            return None  # spelt otherwise (seed=1,2 vs seed=range(1,3)), or a part of the sweep
    return [list(map(str, g)) if isinstance(g, list) else [] for g in grids]


def _record_grid(paths: SweepPaths, plan: SweepPlan) -> None:
    """Add ``plan``'s grid to sweep.json beside the ones run before, and say so."""
    before = new_grid(paths, plan)
    if before is None:
        return
    manifest = json.loads(paths.manifest.read_text())
    manifest["grids"] = [*recorded_grids(manifest), _grid_entry(plan)]
    write_atomic(paths.manifest, manifest)
    shown = "; ".join(f"`{' '.join(g) or '(defaults)'}`" for g in before)
    print(
        f"note: {paths.root} was planned with {shown}; this grid (`{' '.join(plan.arguments) or '(defaults)'}`) "
        "is added to it: sweep.json lists every grid under `grids`, and the sweep's table holds the cells of all",
        file=sys.stderr,
    )


def sweep_folder(plan: SweepPlan, sweep_dir: Path) -> SweepPaths:
    """The folder ``plan`` may write into; refused (with the reason) before anything is written."""
    paths = SweepPaths.writable(sweep_dir)
    check_sweep_folder(paths.root, {c.config["cluster"]["backend"] for c in plan.cells})
    check_cell_id_scheme(paths.manifest)
    return paths


def prepare(plan: SweepPlan, sweep_dir: Path) -> tuple[SweepPaths, Ledger]:
    """The sweep folder with its manifest, cell files and ledger; refuses a folder that is no sweep's."""
    paths = sweep_folder(plan, sweep_dir)
    _write_manifest(paths, plan, dry_run=False)
    _write_cell_files(paths, plan.cells)
    ledger = Ledger(paths.ledger)
    ledger.add_cells((c.id, c.label, c.overrides, c.unavailable) for c in plan.cells)
    return paths, ledger


# Cell files written at once. Each is written as before (temporary file, fsync, rename, fsync of its folder),
# but one after another every fsync waited for a journal commit of its own, most of the time a large sweep
# took to plan (10,000 cells: BENCHMARKS.md, "What fsync costs a sweep's planning"); fsyncs under way
# together are committed together (ext4's and XFS's journals; NFS sends its COMMITs in parallel).
CELL_FILE_WRITERS = 16
_CELL_FILES_AT_ONCE = 1024  # bounds the futures held, for 100,000 cells as for 10


def _write_cell_files(paths: SweepPaths, cells: list[Cell]) -> None:
    """Every cell file, durable, before the ledger may name its cell: a ledger row must never outlive its file.

    A failure (a cell file of another config, a full disk) or Ctrl-C starts no further file and is raised once
    the files under way are written or removed; each is then whole or absent, as when they were written in turn.
    """
    with ThreadPoolExecutor(CELL_FILE_WRITERS, thread_name_prefix="cell-file") as pool:
        try:
            for start in range(0, len(cells), _CELL_FILES_AT_ONCE):
                batch = cells[start : start + _CELL_FILES_AT_ONCE]
                for _ in pool.map(lambda cell: write_cell_file(paths.cell(cell.id).cell_file, cell), batch):
                    pass
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    if cells:
        # Each cell's folder was made by mkdir: its name in cells/, and cells/ in the sweep folder, are
        # durable only once their folders are fsync'd (its own fsync made only cell.json's rename durable).
        sync_folder(paths.cells)
        sync_folder(paths.root)


def preview(plan: SweepPlan, sweep_dir: Path) -> SubmitReport:
    """A dry run: the arrays ``submit`` would make, and their batch scripts where the backend has them.

    Writes no cell folder and no ledger: only sweep.json (marking the folder, for the real run)
    and the scripts under jobs/, and only when the backend writes scripts. Cells an existing
    ledger already has attempts for are left out, as ``submit`` would.
    """
    paths = sweep_folder(plan, sweep_dir)
    attempted: set[str] = set()
    if paths.ledger.exists():
        with Ledger(paths.ledger, read_only=True) as ledger:  # a dry run changes nothing of the sweep
            attempted = {c for c, row in ledger.latest_attempts().items() if row.submission_state != "interrupted"}
    cluster = plan.cells[0].config["cluster"] if plan.cells else {"backend": "local"}
    backend = get_backend(cluster)
    report = SubmitReport(paths=paths, detached=backend.detached)
    todo = []
    for cell in plan.cells:
        if cell.unavailable:
            report.unavailable.append(cell)
        elif cell.id in attempted:
            report.already_submitted += 1
        else:
            todo.append(CellJob(cell.id, cell.label, str(paths.cell(cell.id).cell_file), cell.config))
    report.groups = group_by_shape(todo)
    write_scripts = getattr(backend, "write_scripts", None)
    if write_scripts is not None:
        _write_manifest(paths, plan, dry_run=True)
        report.scripts = write_scripts(paths, report.groups)
    return report


def submit(plan: SweepPlan, sweep_dir: Path, *, progress: Callable[[int], None] | None = None) -> SubmitReport:
    """Submit the plan's cells that have no attempt yet, holding the sweep folder's lock throughout.

    The lock is taken before the folder is prepared, so two identical commands started
    together never interleave: the second waits, then finds every cell submitted (or
    stops with :class:`SweepBusyError` while the first still runs local cells).
    """
    paths = sweep_folder(plan, sweep_dir)  # checked before the folder and its lock file are created
    paths.root.mkdir(parents=True, exist_ok=True)
    with sweep_lock(paths):
        paths, ledger = prepare(plan, sweep_dir)
        with ledger:
            ledger.record_config_digests({cell.id: config_digest(cell.config) for cell in plan.cells})
            return submit_cells(paths, ledger, plan.cells, progress=progress)


def resolve_unconfirmed(ledger: Ledger) -> None:
    """Settle what a killed command left queued or unconfirmed, each backend its own rows.

    Call with the sweep's lock held. Local rows go first: the Slurm backend asks Slurm about
    every ``submitting`` row it is shown.
    """
    for name in sorted(ledger.unconfirmed_backends(), key=lambda name: name != "local"):
        get_backend({"backend": name}).resolve_pending(ledger)


def _todo(
    paths: SweepPaths, ledger: Ledger, cells: list[Cell], cell_ids: set[str] | None, report: SubmitReport
) -> None:
    """Fill ``report.groups`` with the cells to submit: ``cell_ids`` exactly, else those without an attempt."""
    attempted = ledger.latest_attempts()
    todo: list[CellJob] = []
    for cell in cells:
        if cell.unavailable:
            report.unavailable.append(cell)
            continue
        if cell_ids is not None:
            if cell.id not in cell_ids:
                continue
        elif cell.id in attempted and attempted[cell.id].submission_state != "interrupted":
            report.already_submitted += 1  # an interrupted attempt is run again: the user stopped it
            continue
        todo.append(CellJob(cell.id, cell.label, str(paths.cell(cell.id).cell_file), cell.config))
    report.groups = group_by_shape(todo)


def submit_cells(
    paths: SweepPaths,
    ledger: Ledger,
    cells: list[Cell],
    *,
    cell_ids: set[str] | None = None,
    progress: Callable[[int], None] | None = None,
    dry_run: bool = False,
    exclude_nodes: str | None = None,
) -> SubmitReport:
    """Submit ``cells`` that have no attempt yet, or exactly ``cell_ids`` (a new attempt each).

    ``exclude_nodes``: a Slurm host list the submitted jobs avoid (refused by backends without nodes).

    Holds the sweep's lock (re-entrant: a caller that chose the cells under it keeps it).
    A backend that runs cells here returns when they, and cells earlier commands left
    running, have ended.
    """
    unknown = (cell_ids or set()) - {cell.id for cell in cells}
    if unknown:  # never report a cell as submitted that was not
        raise ConfigError(f"no such cell to submit in {paths.root}: {', '.join(sorted(unknown))}")
    cluster = cells[0].config["cluster"] if cells else {"backend": "local"}
    backend = get_backend(cluster)
    if exclude_nodes:
        backend.exclude(exclude_nodes)
    report = SubmitReport(paths=paths, detached=backend.detached)
    if dry_run:
        _todo(paths, ledger, cells, cell_ids, report)
        write_scripts = getattr(backend, "write_scripts", None)
        if write_scripts is not None:
            report.scripts = write_scripts(paths, report.groups)
        return report
    with sweep_lock(paths):
        resolve_unconfirmed(ledger)
        _todo(paths, ledger, cells, cell_ids, report)
        if report.groups:
            outcome = backend.submit(paths, ledger, report.groups, progress)
            report.job_ids = outcome.job_ids
            report.not_submitted, report.not_submitted_reason = len(outcome.not_submitted), outcome.reason
        if not backend.detached:
            backend.wait_running(ledger, paths, progress)
    return report


def load_cells(paths: SweepPaths, cell_ids: set[str] | None = None) -> list[Cell]:
    """The sweep's cells as planned (ledger order; only ``cell_ids`` when given), from their cell files.

    The ledger is trusted, not the files: a cell file that cannot be read, names another
    cell, or holds another config than the one the ledger recorded when the cell was
    planned is refused with its path, never run in place of the plan.
    """
    with Ledger(paths.ledger) as ledger:
        rows = ledger.cells()
        digests = ledger.config_digests()
    return [
        _read_cell(paths.cell(cell_id).cell_file, cell_id, digests.get(cell_id), unavailable)
        for cell_id, _label, unavailable in rows
        if cell_ids is None or cell_id in cell_ids
    ]


def _read_cell(path: Path, cell_id: str, digest: str | None, unavailable: str | None) -> Cell:
    restore = (
        "move it aside and rerun the same `dnnbench sweep` to have it written again as planned, "
        "or plan the changed config as a new sweep"
    )
    try:
        data, why = read_bytes(path)  # never blocks on a FIFO put where the plan was
        if data is None:
            raise OSError(why)
        doc = json.loads(data)
        config, overrides = doc["config"], doc.get("overrides", [])
        if not isinstance(config, dict):
            raise ValueError("its config is not an object")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}, the plan of cell {cell_id}, cannot be read ({err}): {restore}") from err
    if doc.get("cell_id") != cell_id:
        raise ConfigError(f"{path} was edited: it names cell {doc.get('cell_id')!r}, not {cell_id}: {restore}")
    # Ledgers of sweeps planned before digests were recorded have none: only the id is checked there.
    if digest is not None and config_digest(config) != digest:
        raise ConfigError(
            f"{path} was edited after planning: its config is not the one the ledger recorded for cell {cell_id}, "
            f"and a cell runs as planned: {restore}"
        )
    return Cell(cell_id, overrides, config, unavailable)
