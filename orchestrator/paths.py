"""Which folders may be read or written as a sweep, and the ledger's health, over :mod:`jobs.layout`.

Every name and path of a sweep folder, and the order cells, attempts and dumps are found in,
are :mod:`jobs.layout`'s (read by the analysis too); they are re-exported here for the
orchestrator. Reading commands take a folder through :meth:`SweepPaths.existing` (or
:func:`sweep_roots` for analysis), which creates nothing and says why a path is not a sweep;
writing commands through :meth:`SweepPaths.writable`, before anything is written. Standard
library only (plus ``jobs.layout`` and ``jobs.schema``, which are too): the analysis install on
a laptop imports this module.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from jobs.atomic import TEMPORARY_SUFFIX
from jobs.layout import (  # noqa: F401 - re-exported: the orchestrator's names of a sweep's parts
    ATTEMPT_PREFIX,
    CELL_FILE,
    CELLS_DIR,
    ERROR_FILE_GLOB,
    JOBS_DIR,
    LAUNCHER_LOG_GLOB,
    LEDGER_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    OUTCOME_FILE,
    RANK_DUMP_GLOB,
    RESULTS_DIR,
    AttemptPaths,
    CellPaths,
    SweepLayout,
    has_cells,
    launcher_log_filename,
    sweep_folders,
)
from jobs.schema import open_regular
from orchestrator.errors import ConfigError, NotASweepError

# What makes an SQLite file a dnnbench ledger: the tables (and columns) every version has had.
# Newer tables are created by the ledger itself when it opens an older file.
LEDGER_TABLES = {
    "cells": {"cell_id", "label", "overrides", "unavailable"},
    "submissions": {"submission_id", "job_name", "backend", "state", "job_id"},
    "attempts": {"cell_id", "attempt", "submission_id", "array_index"},
}
_SQLITE_MAGIC = b"SQLite format 3\x00"
_NOT_A_SWEEP_HINT = "Pass the SWEEP_DIR that `dnnbench sweep` printed."


class SweepPaths(SweepLayout):
    """A sweep folder's layout, obtained through the check of the command's right to read or write it."""

    @classmethod
    def existing(cls, path: str | os.PathLike[str]) -> SweepPaths:
        """A sweep folder to read (status, wait, resubmit); raises :class:`NotASweepError` otherwise.

        Creates nothing: a mistyped path stays absent, a foreign or damaged ``ledger.sqlite``
        is opened read-only and left as it was.
        """
        folder = _existing_folder(path)
        paths = cls(folder.resolve())
        if not paths.ledger.is_file():
            if paths.manifest.is_file():
                raise NotASweepError(
                    f"{path}: no {LEDGER_FILE}: nothing was ever submitted from this folder (a dry run writes "
                    "only sweep.json and jobs/); run the same `dnnbench sweep` without --dry-run"
                )
            outer = next((p for p in paths.root.parents if cls(p).ledger.is_file()), None)
            hint = f"It is inside the sweep folder {outer}: pass that." if outer else _NOT_A_SWEEP_HINT
            raise NotASweepError(f"{path} is not a sweep folder (no {LEDGER_FILE}). {hint}")
        _check_ledger(paths.ledger, allow_empty=False)
        return paths

    @classmethod
    def writable(cls, path: str | os.PathLike[str]) -> SweepPaths:
        """A folder a sweep or run may write into; refuses before anything is written.

        Accepted: a folder that does not exist yet (under a writable, non-sweep parent), an
        empty folder, or a sweep folder this command continues. Refused: the filesystem root,
        the home folder, this checkout, a file, a non-empty folder of other things, a folder
        inside another sweep, and a sweep whose ledger is not a dnnbench ledger.
        """
        try:
            target = Path(path).expanduser().resolve()
        except (OSError, RuntimeError) as err:  # a symlink loop, an unreadable parent
            raise NotASweepError(f"{path}: cannot be used as a sweep folder: {err}") from err
        _refuse_special(target, path)
        if target.exists():
            if not target.is_dir():
                raise NotASweepError(f"{path} is a file, not a folder: choose a folder for the sweep")
            paths = cls(target)
            if paths.is_sweep():
                if paths.ledger.is_file():
                    _check_ledger(paths.ledger, allow_empty=True)
            elif not all(_start_under_way(entry.name) for entry in target.iterdir()):
                raise NotASweepError(
                    f"{path} is a folder of other files, not a sweep (no {MANIFEST_FILE} or {LEDGER_FILE}): "
                    "refusing to write a sweep into it; choose a new or empty folder"
                )
            _refuse_inside_sweep(target.parent, path)
            _check_can_write(target, path)
            return paths
        parent = target.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise NotASweepError(f"cannot create {path}: {parent} is a file, not a folder")
        _refuse_inside_sweep(parent, path)
        _check_can_write(parent, path)
        return cls(target)


def sweep_roots(path: str | os.PathLike[str]) -> list[Path]:
    """The sweeps analysis reads at ``path``: a sweep folder (has ``cells/``) or a folder of them.

    Raises :class:`NotASweepError` for a path that is missing, a file, holds neither, or
    holds a ``ledger.sqlite`` that is not a dnnbench ledger (opened read-only, never created).
    """
    roots = sweep_folders(_existing_folder(path))
    for root in roots:
        ledger = root / LEDGER_FILE
        if ledger.is_file():
            advice = "move it aside to aggregate the dumps alone" if has_cells(root) else ""
            _check_ledger(ledger, allow_empty=False, advice=advice)
    roots = [r for r in roots if has_cells(r)]
    if not roots:
        raise NotASweepError(
            f"{path}: not a sweep folder (no {CELLS_DIR}/ inside, nor sweeps below it). {_NOT_A_SWEEP_HINT}"
        )
    return roots


def _existing_folder(path: str | os.PathLike[str]) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise NotASweepError(f"{path}: no such folder. {_NOT_A_SWEEP_HINT}")
    if not folder.is_dir():
        raise NotASweepError(f"{path} is a file, not a sweep folder. {_NOT_A_SWEEP_HINT}")
    return folder


def ledger_problem(path: Path, *, allow_empty: bool = False) -> str | None:
    """Why ``path`` is not a readable dnnbench ledger, or None. Read-only: creates no file.

    An empty file is what a command killed while creating the ledger leaves; a writing command
    may continue it (``allow_empty``), a reading one has nothing to read.
    """
    wal = path.with_name(path.name + "-wal")
    try:
        with os.fdopen(open_regular(path), "rb") as handle:  # a FIFO is no ledger, and must not block
            head = handle.read(len(_SQLITE_MAGIC))
    except OSError as err:
        return f"cannot be read: {err.strerror or err}"
    if not head and not wal.exists():
        return None if allow_empty else "it is empty"
    if head and head != _SQLITE_MAGIC:
        return "it is not an SQLite database"
    try:
        tables, damage = _ledger_tables(path, live=wal.exists())
    except sqlite3.DatabaseError as err:
        return f"it cannot be read: {err}"
    if damage:
        return f"it is damaged: {damage}"
    absent = [table for table in LEDGER_TABLES if table not in tables]
    if absent:
        return f"it is an SQLite database without dnnbench's table(s) {', '.join(absent)}"
    lacking = [
        f"{table}.{column}" for table, columns in LEDGER_TABLES.items() for column in sorted(columns - tables[table])
    ]
    return f"its tables lack dnnbench's column(s) {', '.join(lacking)}" if lacking else None


def _ledger_tables(path: Path, *, live: bool) -> tuple[dict[str, set[str]], str | None]:
    """(table → columns, the first damage SQLite's quick check finds or None), read-only.

    Without a ``-wal`` file everything is in the main file, so it is read as immutable (no
    ``-shm``/``-wal`` is created next to it); with one, a live read. The quick check catches a
    truncated or overwritten file before a command that writes opens it.
    """
    db = connect_read_only(path, live=live)
    try:
        names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        tables = {name: {row[1] for row in db.execute(f"PRAGMA table_info({_quoted(name)})")} for name in names}
        (verdict,) = db.execute("PRAGMA quick_check(1)").fetchone()
        return tables, None if verdict == "ok" else " ".join(str(verdict).split())
    finally:
        db.close()


def ledger_cell_ids(path: Path) -> list[str]:
    """The cell ids a ledger planned, read-only (no ``-shm``/``-wal`` created beside a quiet ledger).

    Analysis holds every one of them to account: a cell whose folder was deleted is still a cell of the sweep.
    """
    db = connect_read_only(path, live=path.with_name(path.name + "-wal").exists())
    try:
        return [row[0] for row in db.execute("SELECT cell_id FROM cells ORDER BY rowid")]
    finally:
        db.close()


def connect_read_only(path: Path, *, live: bool = True) -> sqlite3.Connection:
    """An SQLite connection to ``path`` that writes nothing and takes no write lock.

    ``live``: another command may be writing (read through the WAL). A folder nobody can write
    (a read-only mount) cannot change under the reader and cannot hold the ``-shm`` file a live
    read needs: read as immutable there, unless its ``-wal`` holds changes not yet in the main
    file, which only a live read sees.
    """
    wal = path.with_name(path.name + "-wal")
    unmerged = wal.is_file() and wal.stat().st_size > 0
    if live and not unmerged and not os.access(path.parent, os.W_OK):
        live = False
    uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("" if live else "&immutable=1")
    db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
    try:
        db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError as err:
        db.close()
        if unmerged and not os.access(path.parent, os.W_OK):
            raise NotASweepError(
                f"{path} cannot be read where it is: its {wal.name} holds changes a reader must merge, and "
                f"{path.parent} is not writable ({err}); copy the sweep folder somewhere writable and read the copy"
            ) from err
        raise
    return db


def _start_under_way(name: str) -> bool:
    """The lock, or sweep.json being written (jobs.atomic's temporary file): what a
    sweep's start leaves while under way beside it, or when cut short."""
    return name == LOCK_FILE or (name.startswith(f".{MANIFEST_FILE}.") and name.endswith(TEMPORARY_SUFFIX))


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _check_ledger(path: Path, *, allow_empty: bool, advice: str = "") -> None:
    problem = ledger_problem(path, allow_empty=allow_empty)
    if problem is not None:
        then = advice or "it was left as it is; restore it from a copy, or use another folder"
        raise NotASweepError(f"{path} is not a dnnbench ledger: {problem} ({then})")


def _refuse_special(target: Path, given: str | os.PathLike[str]) -> None:
    """Folders that hold other things by nature: a sweep there would spread its files among them."""
    special = {
        Path(target.anchor): "the filesystem root",
        Path(__file__).resolve().parent.parent: "the dnnbench checkout",
    }
    with contextlib.suppress(KeyError, RuntimeError):  # no HOME and no passwd entry: nothing to protect there
        special[Path.home().resolve()] = "your home folder"
    for folder, name in special.items():
        if target == folder:
            raise NotASweepError(
                f"refusing to use {given} ({name}) as a sweep folder: name a new folder, e.g. {target / 'my-sweep'}"
            )


def _refuse_inside_sweep(folder: Path, given: str | os.PathLike[str]) -> None:
    for parent in (folder, *folder.parents):
        if SweepPaths(parent).is_sweep():
            raise NotASweepError(
                f"{given} is inside the sweep folder {parent}: a sweep cannot hold another; choose a folder outside it"
            )


def _check_can_write(folder: Path, given: str | os.PathLike[str]) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write a sweep at {given}: {folder} is not writable by this user")
