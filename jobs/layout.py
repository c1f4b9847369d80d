"""The layout of a sweep folder: every file name, and how cells, attempts and dumps are found.

SWEEP_DIR/
  sweep.json                 what was asked (arguments, time); a dry run writes only this and jobs/
  ledger.sqlite              cell → job id / array index → attempts (orchestrator.ledger)
  submit.lock                held by the command that submits (orchestrator.lock)
  cells/<cell_id>/cell.json  the resolved config the ranks read
  cells/<cell_id>/attempt_<k>/
      rank_<r>.json          one rank's dump (the name is jobs.schema's: the ranks write it)
      outcome.json           the runner's verdict on the attempt
      launcher_node<n>.log   the launcher's output on node n
      error_rank_<r>.txt     the traceback of a rank that raised
      failure_rank_<r>.json  the failure class of a rank that knew why it failed (jobs.failures)
  cells/<cell_id>/attempt_<k>.interrupted<restart>[_<n>]/   a requeued attempt's earlier run, kept
  jobs/                      batch scripts, their cells lists and scheduler logs
  results/                   tables, figures, report (analysis)

Both sides read it: ``orchestrator.paths`` adds to it the checks of which folders a command may
read or write, ``analysis.load`` finds sweeps, cells and attempts through it. Found files come
in number order (rank_10 after rank_2); names that only look alike are not found. Standard
library only (plus ``jobs.schema`` and ``jobs.failures``, which are too): the analysis install
on a laptop imports this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from jobs.failures import FAILURE_FILE_GLOB
from jobs.schema import dump_filename, error_filename

MANIFEST_FILE = "sweep.json"
LEDGER_FILE = "ledger.sqlite"
LOCK_FILE = "submit.lock"
CELLS_DIR = "cells"
JOBS_DIR = "jobs"
RESULTS_DIR = "results"
CELL_FILE = "cell.json"
OUTCOME_FILE = "outcome.json"
ATTEMPT_PREFIX = "attempt_"
RANK_DUMP_PREFIX, RANK_DUMP_SUFFIX = "rank_", ".json"
RANK_DUMP_GLOB = f"{RANK_DUMP_PREFIX}*{RANK_DUMP_SUFFIX}"
ERROR_FILE_GLOB = "error_rank_*.txt"
LAUNCHER_LOG_GLOB = "launcher_node*.log"


def launcher_log_filename(node_rank: int) -> str:
    return f"launcher_node{node_rank}.log"


def _number_in(name: str, prefix: str, suffix: str) -> int | None:
    """``n`` of a name ``<prefix><n><suffix>``, else None (``attempt_3.interrupted1`` is no attempt)."""
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    middle = name[len(prefix) : len(name) - len(suffix)]
    return int(middle) if middle.isdigit() else None


def _by_number(paths: list[Path], prefix: str, suffix: str) -> list[Path]:
    """Files named ``<prefix><n><suffix>`` in number order (rank_10 after rank_2), others dropped."""
    numbered = [(n, p) for p in paths if (n := _number_in(p.name, prefix, suffix)) is not None]
    return [p for _, p in sorted(numbered)]


@dataclass(frozen=True)
class AttemptPaths:
    """One attempt folder: what the ranks, the launcher and the runner write there."""

    root: Path

    @property
    def outcome(self) -> Path:
        return self.root / OUTCOME_FILE

    def rank_dump(self, rank: int) -> Path:
        return self.root / dump_filename(rank)

    def error_file(self, rank: int | str) -> Path:
        return self.root / error_filename(rank)

    def launcher_log(self, node_rank: int) -> Path:
        return self.root / launcher_log_filename(node_rank)

    def rank_dumps(self) -> list[Path]:
        return _by_number(list(self.root.glob(RANK_DUMP_GLOB)), RANK_DUMP_PREFIX, RANK_DUMP_SUFFIX)

    def ranks_present(self) -> int:
        """One more than the highest N of the ``rank_<N>.json`` files present (0 when none)."""
        with os.scandir(self.root) as entries:
            numbers = [n for e in entries if (n := _number_in(e.name, RANK_DUMP_PREFIX, RANK_DUMP_SUFFIX)) is not None]
        return max(numbers) + 1 if numbers else 0

    def error_files(self) -> list[Path]:
        """Error files by rank; a rank that could not tell its number (``unknown``) comes last."""
        found = list(self.root.glob(ERROR_FILE_GLOB))
        numbered = _by_number(found, "error_rank_", ".txt")
        return numbered + sorted(p for p in found if p not in numbered)

    def failure_files(self) -> list[Path]:
        return _by_number(list(self.root.glob(FAILURE_FILE_GLOB)), "failure_rank_", ".json")

    def launcher_logs(self) -> list[Path]:
        return _by_number(list(self.root.glob(LAUNCHER_LOG_GLOB)), "launcher_node", ".log")

    def set_aside(self, restart: int) -> Path:
        """A free name beside this attempt for what an interrupted (requeued) run left."""
        aside = self.root.with_name(f"{self.root.name}.interrupted{restart}")
        suffix = 0
        while aside.exists():
            suffix += 1
            aside = self.root.with_name(f"{self.root.name}.interrupted{restart}_{suffix}")
        return aside


@dataclass(frozen=True)
class CellPaths:
    root: Path

    @property
    def cell_file(self) -> Path:
        return self.root / CELL_FILE

    def attempt(self, number: int) -> Path:
        return self.root / f"{ATTEMPT_PREFIX}{number}"

    def numbered_attempts(self) -> list[tuple[int, Path]]:
        """(number, folder) of each attempt, oldest first; set-aside interrupted runs are not attempts.

        Raises OSError when the cell folder cannot be read: the reader says why the cell is lost.
        """
        with os.scandir(self.root) as entries:
            found = [
                (n, Path(e.path))
                for e in entries
                if (n := _number_in(e.name, ATTEMPT_PREFIX, "")) is not None and e.is_dir()
            ]
        return sorted(found)

    def attempts(self) -> list[Path]:
        """Attempt folders in number order (none for a cell folder not made yet)."""
        try:
            return [path for _, path in self.numbered_attempts()]
        except FileNotFoundError:
            return []


@dataclass(frozen=True)
class SweepLayout:
    """Where a sweep folder's parts are; ``orchestrator.paths.SweepPaths`` adds who may read or write it."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_FILE

    @property
    def ledger(self) -> Path:
        return self.root / LEDGER_FILE

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @cached_property  # a sweep of 100,000 cells asks for it twice per cell
    def cells(self) -> Path:
        return self.root / CELLS_DIR

    @property
    def jobs(self) -> Path:
        return self.root / JOBS_DIR

    @property
    def results(self) -> Path:
        return self.root / RESULTS_DIR

    def cell(self, cell_id: str) -> CellPaths:
        return CellPaths(self.cells / cell_id)

    def cell_folders(self) -> list[Path]:
        """Every folder under ``cells/``, by name (a reader holds each one to account)."""
        with os.scandir(self.cells) as entries:
            # Sorted as text (the same order: one parent): comparing 100,000 Paths cost more than listing them.
            return [Path(path) for path in sorted(e.path for e in entries if e.is_dir())]

    def is_sweep(self) -> bool:
        """Marked as a sweep folder by dnnbench (a manifest or a ledger); says nothing of the ledger's health."""
        return self.manifest.is_file() or self.ledger.is_file()


def sweep_folders(folder: Path) -> list[Path]:
    """The sweeps at ``folder``: itself when it is one (``cells/`` or a ledger), else the sweeps
    directly inside it (those with ``cells/``), by name. Only those with ``cells/`` have dumps."""
    if (folder / CELLS_DIR).is_dir() or (folder / LEDGER_FILE).is_file():
        return [folder]
    return sorted(p for p in folder.iterdir() if (p / CELLS_DIR).is_dir())


def has_cells(root: Path) -> bool:
    return (root / CELLS_DIR).is_dir()
