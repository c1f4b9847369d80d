"""Cells that vanish, outputs that mix: every planned cell accounted for, one grid per sweep folder,
results replaced as a whole (a kill -9 leaves the old set or the new one), ``--out`` kept off sweeps.

Real sweeps of the noop framework on the local backend, the real ``dnnbench`` command; the only
fault injected is where aggregate pauses to be killed (``DNNBENCH_TEST_PAUSE_AT``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.errors import ExitCode

REPO = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).parent / "dnnbench"
DNNBENCH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "orchestrator.cli"]
NOOP = ["framework=noop", "steps=1", "val_steps=2", "warmup_steps=0"]


def dnnbench(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DNNBENCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def contents(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` → its bytes: what a command changed, to the byte."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_sweep(folder: Path, *grid: str, aggregate: bool = False) -> subprocess.CompletedProcess[str]:
    flags = [] if aggregate else ["--no-aggregate"]
    return dnnbench("sweep", *NOOP, *grid, "--sweep-dir", str(folder), *flags, cwd=folder.parent)


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three completed noop cells; each test works on its own copy."""
    folder = tmp_path_factory.mktemp("sweeps") / "three"
    done = run_sweep(folder, "seed=1,2,3")
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture
def sweep(finished_sweep: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "sweep"
    shutil.copytree(finished_sweep, copy)
    return copy


def incomplete_rows(results: Path) -> list[dict[str, str]]:
    with open(results / "incomplete.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------- 1. a cell whose folder vanished ----


def test_vanished_cell_folder_is_listed_incomplete_and_counted(sweep: Path) -> None:
    cells = sorted(p.name for p in (sweep / "cells").iterdir())
    shutil.rmtree(sweep / "cells" / cells[0])
    done = dnnbench("aggregate", str(sweep), "--no-figures", cwd=sweep.parent)
    assert done.returncode == 0, done.stderr  # two cells still have results
    assert "2 complete cell(s)" in done.stdout and "1 incomplete cell(s)" in done.stdout, done.stdout
    rows = incomplete_rows(sweep / "results")
    assert [(r["cell_id"], r["status"]) for r in rows] == [(cells[0], "excluded")]
    assert "cell folder missing" in rows[0]["reason"]


def test_vanished_cell_folder_is_missing_in_status_and_rerun_after_replanning(sweep: Path) -> None:
    gone = sorted(p.name for p in (sweep / "cells").iterdir())[0]
    shutil.rmtree(sweep / "cells" / gone)
    status = dnnbench("status", str(sweep), cwd=sweep.parent)
    assert "2 completed, 1 missing" in status.stdout, status.stdout
    assert "cell folder missing" in status.stdout.replace("│", "").replace("\n", " ").replace("  ", " ")
    refused = dnnbench("resubmit", str(sweep), cwd=sweep.parent)  # the plan is gone with the folder: said so
    assert refused.returncode == ExitCode.ERROR and "rerun the same `dnnbench sweep`" in refused.stderr
    replanned = run_sweep(sweep, "seed=1,2,3")  # writes the plan back; runs nothing twice
    assert replanned.returncode == ExitCode.CELLS_FAILED and "2 completed" in replanned.stdout  # not done yet
    assert dnnbench("resubmit", str(sweep), cwd=sweep.parent).returncode == 0
    assert "3 completed" in dnnbench("status", str(sweep), cwd=sweep.parent).stdout


# ------------------------------------------------------------- 2. another grid, same folder ----


def test_a_dry_run_of_another_grid_in_a_sweep_folder_changes_nothing(sweep: Path) -> None:
    before = contents(sweep)
    done = dnnbench("sweep", *NOOP, "seed=1,2,3,4", "--sweep-dir", str(sweep), "--no-aggregate", "--dry-run",
                    cwd=sweep.parent)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert contents(sweep) == before


def test_another_grid_in_a_sweep_folder_is_recorded_beside_the_first_and_said(tmp_path: Path) -> None:
    """A sweep may grow by further grids (more seeds, a 2-node cell): sweep.json keeps every grid,
    the command says so, and the table and status hold the cells of all."""
    sweep = tmp_path / "grown"
    assert run_sweep(sweep, "seed=1,2").returncode == 0
    done = run_sweep(sweep, "seed=3")
    assert done.returncode == 0, done.stderr
    assert "was planned with `" in done.stderr and "seed=1,2" in done.stderr and "is added to it" in done.stderr
    grids = [g["arguments"] for g in json.loads((sweep / "sweep.json").read_text())["grids"]]
    assert [next(a for a in g if a.startswith("seed=")) for g in grids] == ["seed=1,2", "seed=3"]
    assert "3 completed" in dnnbench("status", str(sweep), cwd=sweep.parent).stdout
    again = run_sweep(sweep, "seed=3")  # a grid already recorded: continued, not recorded twice
    assert again.returncode == 0 and "is added to it" not in again.stderr
    assert len(json.loads((sweep / "sweep.json").read_text())["grids"]) == 2


@pytest.mark.parametrize("grid", [["seed=1,2,3"], ["seed=range(1,4)"]], ids=["same", "same-cells-spelt-otherwise"])
def test_the_same_grid_continues_its_sweep(sweep: Path, grid: list[str]) -> None:
    manifest = (sweep / "sweep.json").read_bytes()
    done = run_sweep(sweep, *grid)
    assert done.returncode == 0, done.stderr
    assert (sweep / "sweep.json").read_bytes() == manifest
    assert len(list((sweep / "cells").iterdir())) == 3  # nothing planned twice


# ------------------------------------------------------------- 3. results replaced whole ----


def killed_at(point: str, sweep: Path, *, exchange: bool = True) -> None:
    """Run aggregate until it pauses at ``point``, then kill -9 it."""
    env = {**os.environ, "DNNBENCH_TEST_PAUSE_AT": point}
    if not exchange:
        env["DNNBENCH_TEST_NO_EXCHANGE"] = "1"
    process = subprocess.Popen([*DNNBENCH, "aggregate", str(sweep)], cwd=sweep.parent, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        assert process.stdout is not None
        for line in process.stdout:
            if f"paused at {point}" in line:
                break
            assert time.monotonic() < deadline
        else:
            pytest.fail(f"aggregate ended before pausing at {point}")
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize(
    "point, exchange",
    [("tables_written", True), ("before_swap", True), ("before_swap", False), ("between_renames", False)],
)
def test_aggregate_killed_leaves_the_old_results_or_the_new_never_a_mix(
    sweep: Path, point: str, exchange: bool
) -> None:
    assert dnnbench("aggregate", str(sweep), cwd=sweep.parent).returncode == 0
    old = contents(sweep / "results")
    assert "report.html" in old and "throughput.png" in old
    shutil.rmtree(sweep / "cells" / sorted(p.name for p in (sweep / "cells").iterdir())[0])  # the new set differs
    killed_at(point, sweep, exchange=exchange)
    if point != "between_renames":
        assert contents(sweep / "results") == old  # untouched until the new set is whole
    # The next aggregate (killed before its swap) puts back what a killed swap set aside.
    killed_at("before_swap", sweep)
    assert contents(sweep / "results") == old
    done = dnnbench("aggregate", str(sweep), cwd=sweep.parent)
    assert done.returncode == 0, done.stderr
    new = contents(sweep / "results")
    assert set(new) == set(old) and new["incomplete.csv"] != old["incomplete.csv"]
    assert b"cell folder missing" in new["incomplete.csv"]
    assert sorted(p.name for p in sweep.iterdir() if p.name.startswith(".results")) == []  # leftovers cleaned


def test_reference_check_is_part_of_the_new_set(sweep: Path, tmp_path: Path) -> None:
    """reference_check.csv and the report's reference section are written before the swap, with the rest."""
    reference = tmp_path / "reference.csv"
    reference.write_text(
        "framework,model,processes,phase,metric,value,lower,upper,source\n"
        "noop,resnet18,1,train,peak_rss_gib,1,0,1000,a generous bound\n"
    )
    done = dnnbench("aggregate", str(sweep), "--reference", str(reference), cwd=sweep.parent)
    assert done.returncode == 0, done.stderr
    assert (sweep / "results" / "reference_check.csv").is_file()
    assert "Reference values" in (sweep / "results" / "report.html").read_text()


# ------------------------------------------------------------- 4. --out kept off sweeps ----


def _out_places(sweep: Path, other: Path, tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "papers").mkdir()
    (tmp_path / "papers" / "draft.tex").write_text("mine")
    (tmp_path / "a-file").write_text("mine")
    return {
        "cells": sweep / "cells",
        "a cell folder": next((sweep / "cells").iterdir()),
        "under cells": sweep / "cells" / "new",
        "jobs": sweep / "jobs",
        "the sweep folder": sweep,
        "another sweep": other,
        "another sweep's results": other / "results",
        "another sweep's cells": other / "cells",
        "the checkout": REPO,
        "the filesystem root": Path("/"),
        "a folder of other files": tmp_path / "papers",
        "a file": tmp_path / "a-file",
    }


OUT_PLACES = ["cells", "a cell folder", "under cells", "jobs", "the sweep folder", "another sweep",
              "another sweep's results", "another sweep's cells", "the checkout", "the filesystem root",
              "a folder of other files", "a file"]  # fmt: skip


@pytest.mark.parametrize("place", OUT_PLACES)
def test_aggregate_out_refuses_sweep_parts_and_other_places(sweep: Path, tmp_path: Path, place: str) -> None:
    other = tmp_path / "other"
    shutil.copytree(sweep, other)
    out = _out_places(sweep, other, tmp_path)[place]
    before = {root: contents(root) for root in (sweep, other, tmp_path / "papers")}
    listing = sorted(os.listdir(out.parent)) if out.parent.is_dir() else None
    done = dnnbench("aggregate", str(sweep), "--out", str(out), cwd=tmp_path)
    assert done.returncode == ExitCode.USAGE, done.stdout + done.stderr
    assert done.stderr.startswith("Error: --out") or "refusing to use" in done.stderr, done.stderr
    assert {root: contents(root) for root in before} == before
    assert (sorted(os.listdir(out.parent)) if out.parent.is_dir() else None) == listing


@pytest.mark.parametrize("place", ["own results", "a new folder", "an earlier results folder"])
def test_aggregate_out_accepts_results_folders(sweep: Path, tmp_path: Path, place: str) -> None:
    earlier = tmp_path / "earlier"
    assert dnnbench("aggregate", str(sweep), "--no-figures", "--out", str(earlier), cwd=tmp_path).returncode == 0
    out = {"own results": sweep / "results", "a new folder": tmp_path / "new", "an earlier results folder": earlier}
    done = dnnbench("aggregate", str(sweep), "--no-figures", "--out", str(out[place]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((out[place] / "environments.json").read_text()) is not None
