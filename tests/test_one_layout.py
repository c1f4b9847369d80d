"""One sweep layout (jobs.layout) read by the orchestrator and the analysis, and one throughput
function (jobs.throughput) behind `dnnbench run`'s summary and the results table.

Real sweep folders written by the real writers (tests/synthetic_sweeps.py), read by both sides.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import synthetic_sweeps as synthetic

from analysis.load import load_sweeps
from jobs import layout

ROOT = Path(__file__).resolve().parent.parent


def _attempt_names(cell: Path) -> list[str]:
    from orchestrator.paths import CellPaths  # the orchestrator's view, re-exported from jobs.layout

    return [p.name for p in CellPaths(cell).attempts()]


def test_both_sides_find_the_same_attempts_in_the_same_order(tmp_path):
    cfg = synthetic.config(gpus=2)
    for attempt in (2, 10):  # by number, not by name: attempt_10 is the newer
        folder = synthetic.write_cell(tmp_path, cfg, step_times=[[0.5 + attempt / 100] * 3] * 2, attempt=attempt)
    cell = folder.parent
    # Look-alikes that are no attempts: a requeued run set aside, a file, names without a number.
    synthetic.write_cell(tmp_path, cfg, step_times=[[0.1] * 3] * 2, attempt=11)
    (cell / "attempt_11").rename(cell / "attempt_11.interrupted1")
    (cell / "attempt_12").write_text("not a folder")
    (cell / "attempt_").mkdir()
    (cell / "attempt_x").mkdir()
    assert _attempt_names(cell) == ["attempt_2", "attempt_10"]
    loaded = load_sweeps([tmp_path], progress=False, workers=1)
    assert set(loaded.cells["attempt"]) == {10}  # the analysis counts the orchestrator's newest attempt
    notes = " ".join(loaded.problems["reason"])
    assert "attempt 2 also completed" in notes and "interrupted" not in notes


def test_both_sides_find_the_same_sweeps(tmp_path):
    from orchestrator.paths import sweep_roots

    for name in ("b", "a"):
        synthetic.write_cell(tmp_path / name, synthetic.config(), step_times=[[0.5] * 3])
    (tmp_path / "other").mkdir()  # no cells/: not a sweep
    assert sweep_roots(tmp_path) == [tmp_path / "a", tmp_path / "b"]
    loaded = load_sweeps([tmp_path], progress=False, workers=1)
    assert sorted(loaded.sweeps) == ["a", "b"]


def test_run_summary_and_results_give_one_throughput(tmp_path):
    """A pipeline cell (only the last stage counts) whose ranks took different times: both sides
    print the same samples ÷ slowest rank's seconds."""
    from orchestrator.cli import _run_summary

    cfg = synthetic.config(**{"gpus": 4, "framework.name": "pipeline", "pipeline.stages": 4})
    folder = synthetic.write_cell(tmp_path, cfg, step_times=[[0.5] * 4, [0.6] * 4, [0.55] * 4, [0.45] * 4])
    summary = _run_summary(folder, {"seconds": 1.0})
    printed = {m[0]: float(m[1]) for m in re.findall(r"(train|val)\s+global throughput\s+([\d.]+)", summary)}
    cells = load_sweeps([tmp_path], progress=False, workers=1).cells
    for phase in ("train", "val"):
        (tabled,) = cells.loc[cells["phase"] == phase, "throughput"]
        assert printed[phase] == pytest.approx(tabled, abs=0.05), phase  # the summary prints one decimal


def test_throughput_without_time_is_no_rate():
    from jobs.throughput import global_throughput

    doc = {"counts_samples": True, "phases": {"train": {"samples": 8, "seconds": 0.0}}}
    assert global_throughput([doc], "train").samples == 8
    assert global_throughput([doc], "train").samples_per_s != global_throughput([doc], "train").samples_per_s  # NaN


_NAMES = {
    layout.MANIFEST_FILE, layout.LEDGER_FILE, layout.LOCK_FILE, layout.CELL_FILE, layout.OUTCOME_FILE,
    layout.RANK_DUMP_GLOB, layout.ERROR_FILE_GLOB, layout.LAUNCHER_LOG_GLOB,
}  # fmt: skip
_FOLDERS = {layout.CELLS_DIR, layout.RESULTS_DIR, layout.JOBS_DIR}
_NUMBERED = ("attempt_", "rank_", "error_rank_", "launcher_node")


def _copies_in(tree: ast.AST) -> list[tuple[int, str]]:
    """A layout name written out again: the name as a value, ``x / "cells"``, f"attempt_{n}"."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in _NAMES:
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
            if node.right.value in _FOLDERS | _NAMES:
                found.append((node.lineno, f'/ "{node.right.value}"'))
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            head = node.values[0].value
            if head in _NUMBERED and len(node.values) > 1:
                found.append((node.lineno, f'f"{head}{{…}}"'))
    return found


def test_no_module_copies_the_layouts_names():
    found = []
    for part in ("orchestrator", "analysis"):
        for path in sorted((ROOT / part).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            found += [f"{name}:{line}: {what}" for line, what in _copies_in(ast.parse(path.read_text(), name))]
    assert found == [], "name it through jobs.layout (or orchestrator.paths) instead:\n" + "\n".join(found)


def test_the_copy_scan_finds_each_kind_of_copy():
    code = 'OUTCOME = "outcome.json"\nroot / "cells"\nf"attempt_{n}"\nmessage = f"{CELL_FILE} is unreadable"\n'
    assert [what for _, what in _copies_in(ast.parse(code))] == ["outcome.json", '/ "cells"', 'f"attempt_{…}"']


def test_layout_writer_and_throughput_import_without_torch():
    code = "import sys, jobs.layout, jobs.atomic, jobs.throughput; assert 'torch' not in sys.modules, 'torch'"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
