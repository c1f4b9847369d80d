"""Every path of a sweep folder, in one place.

SWEEP_DIR/
  sweep.json                 what was asked (arguments, time, dnnbench version)
  ledger.sqlite              cell → job id / array index → attempts (orchestrator.ledger)
  cells/<cell_id>/cell.json  the resolved config the ranks read
  cells/<cell_id>/attempt_<k>/rank_<r>.json, outcome.json, launcher*.log, error_rank_<r>.txt
  jobs/                      batch scripts and scheduler logs
  results/                   tables, figures, report (analysis)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SweepPaths:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "sweep.json"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.sqlite"

    @property
    def cells(self) -> Path:
        return self.root / "cells"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def cell(self, cell_id: str) -> CellPaths:
        return CellPaths(self.cells / cell_id)


@dataclass(frozen=True)
class CellPaths:
    root: Path

    @property
    def cell_file(self) -> Path:
        return self.root / "cell.json"

    def attempt(self, number: int) -> Path:
        return self.root / f"attempt_{number}"

    def attempts(self) -> list[Path]:
        found = [p for p in self.root.glob("attempt_*") if p.name.split("_", 1)[1].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("_", 1)[1]))


OUTCOME_FILE = "outcome.json"
