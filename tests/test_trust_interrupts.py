"""Interrupts, full disks, read-only mounts and closed pipes, with real signals, mounts and pipes.

Cells are ``framework=noop``; a cell that must still run when the signal comes waits for a
gate file (jobs/noop.py's test hook), so the test decides when it ends. Full and read-only
file systems are real mounts (a tiny tmpfs, a read-only bind mount); a machine that does not
let the test mount skips those tests and says so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator.errors import ExitCode

REPO = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).parent / "dnnbench"
DNNBENCH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "orchestrator.cli"]
ANALYSIS = [sys.executable, "-m", "analysis.cli"]
GATE_ENV = "DNNBENCH_TEST_NOOP_GATE"
NOOP = ["framework=noop", "model=resnet18", "dataset=synthetic"]


def _env(gate: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (GATE_ENV, "DNNBENCH_FULL_ERROR")}
    if gate is not None:
        env[GATE_ENV] = str(gate)
    return env


def dnnbench(*args: str, cwd: Path, timeout: float = 180, env: dict[str, str] | None = None):
    return subprocess.run([*DNNBENCH, *args], cwd=cwd, env=env or _env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def sweep_args(sweep_dir: Path, seeds: str) -> list[str]:
    return ["sweep", *NOOP, f"seed={seeds}", "--no-aggregate", "--sweep-dir", str(sweep_dir)]


def status(sweep_dir: Path) -> list[dict]:
    result = dnnbench("status", str(sweep_dir), "--json", cwd=sweep_dir.parent, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def until(predicate: Callable[[], bool], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def attempt_folders(sweep_dir: Path, cell_id: str) -> list[str]:
    return sorted(p.name for p in (sweep_dir / "cells" / cell_id).iterdir() if p.name.startswith("attempt_"))


def outcome_state(sweep_dir: Path, cell_id: str, attempt: int) -> str | None:
    path = sweep_dir / "cells" / cell_id / f"attempt_{attempt}" / "outcome.json"
    return json.loads(path.read_text())["state"] if path.exists() else None


# 1. an interrupted local sweep is rerun by the same command ----------------------------------------


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [(signal.SIGINT, ExitCode.INTERRUPTED, "Ctrl-C"), (signal.SIGTERM, ExitCode.TERMINATED, "SIGTERM")],
    ids=["SIGINT", "SIGTERM"],
)
def test_an_interrupted_local_sweep_is_finished_by_rerunning_the_same_command(tmp_path, sig, code, said):
    from orchestrator.backends.local_processes import job_processes
    from orchestrator.ledger import Ledger

    sweep_dir = tmp_path / "sweep"
    # One gate per cell: seed 0 may finish, seed 1 runs until its gate opens, seed 2 waits its turn.
    gate, opened = tmp_path / "gate-{seed}", tmp_path / "gate-0"
    opened.touch()
    command = sweep_args(sweep_dir, "0,1,2")
    sweep = subprocess.Popen([*DNNBENCH, *command], cwd=tmp_path, env=_env(gate), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        until(lambda: (sweep_dir / "ledger.sqlite").exists())
        until(lambda: [c["state"] for c in status(sweep_dir)] == ["completed", "running", "pending"])
        done, running, _ = status(sweep_dir)
        until(lambda: (sweep_dir / "cells" / running["cell_id"] / "attempt_0" / "launcher_node0.log").exists())
        sweep.send_signal(sig)  # to the dnnbench process alone, as `kill` or a batch system sends it
        out, err = sweep.communicate(timeout=90)
    finally:
        for seed in (1, 2):
            (tmp_path / f"gate-{seed}").touch()
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == code, out + err
    assert "rerun the same command" in err and "Traceback" not in err
    with Ledger(sweep_dir / "ledger.sqlite") as ledger:
        assert not job_processes(ledger.latest_attempts()[running["cell_id"]].job_name or "")  # nothing left writing

    first, interrupted, never_started = status(sweep_dir)
    assert (first["state"], first["attempt"]) == ("completed", 0)
    assert (interrupted["state"], interrupted["failure_class"]) == ("missing", None), interrupted
    assert "interrupted" in interrupted["detail"] and said in interrupted["detail"], interrupted
    assert never_started["state"] == "missing"
    waited = dnnbench("wait", str(sweep_dir), "--timeout", "5", cwd=tmp_path)
    assert waited.returncode == ExitCode.CELLS_FAILED, waited.stdout + waited.stderr

    rerun = dnnbench(*command, cwd=tmp_path)
    assert rerun.returncode == ExitCode.OK, rerun.stdout + rerun.stderr
    assert [c["state"] for c in status(sweep_dir)] == ["completed"] * 3
    # Nothing measured is lost or run twice: the first cell keeps its one attempt; the interrupted
    # attempt's folder is kept beside the new, completed one.
    assert attempt_folders(sweep_dir, done["cell_id"]) == ["attempt_0"]
    assert attempt_folders(sweep_dir, running["cell_id"]) == ["attempt_0", "attempt_1"]
    assert outcome_state(sweep_dir, running["cell_id"], 0) != "completed"
    assert outcome_state(sweep_dir, running["cell_id"], 1) == "completed"


def test_an_interrupted_run_is_interrupted_not_failed(tmp_path):
    out_dir, gate = tmp_path / "run", tmp_path / "gate"
    run = subprocess.Popen([*DNNBENCH, "run", *NOOP, "--quiet", "--out", str(out_dir)], cwd=tmp_path,
                           env=_env(gate), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        until(lambda: (out_dir / "ledger.sqlite").exists() and [c["state"] for c in status(out_dir)] == ["running"])
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=90)
    finally:
        gate.touch()
        if run.poll() is None:
            run.kill()
    assert run.returncode == ExitCode.INTERRUPTED, out + err
    (cell,) = status(out_dir)
    assert (cell["state"], cell["failure_class"]) == ("missing", None) and "interrupted" in cell["detail"], cell


# 4. a reader that closes the pipe early -----------------------------------------------------------


@pytest.fixture(scope="module")
def done_sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("done")
    sweep_dir = root / "sweep"
    result = dnnbench(*sweep_args(sweep_dir, "0,1"), cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    return sweep_dir


def _with_closed_stdout(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``argv`` with its stdout a pipe whose reader is gone before the first line: every write fails."""
    process = subprocess.Popen(argv, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode(errors="replace")
    return process.wait(timeout=120), err


@pytest.mark.parametrize(
    "argv",
    [
        [*DNNBENCH, "aggregate", "{sweep}", "--out", "{out}", "--no-progress"],
        [*ANALYSIS, "aggregate", "{sweep}", "--out", "{out}", "--no-progress"],
        [*DNNBENCH, "status", "{sweep}"],
        [*DNNBENCH, "status", "{sweep}", "--json"],
        [*DNNBENCH, "--help"],
    ],
    ids=["aggregate", "analysis-aggregate", "status", "status-json", "help"],
)
def test_a_closed_stdout_is_no_failure_of_the_commands_work(done_sweep, tmp_path, argv):
    out = tmp_path / "results"
    filled = [a.replace("{sweep}", str(done_sweep)).replace("{out}", str(out)) for a in argv]
    code, err = _with_closed_stdout(filled, tmp_path)
    assert code == ExitCode.OK, err
    assert "Broken pipe" not in err and "Error" not in err and "Traceback" not in err, err
    if "aggregate" in argv:  # the command's work is done all the same
        assert (out / "results.csv").is_file()


def test_a_closed_stdout_keeps_the_commands_own_failure_code(tmp_path):
    code, err = _with_closed_stdout([*DNNBENCH, "wait", str(tmp_path / "nosuch")], tmp_path)
    assert code == ExitCode.NOT_A_SWEEP and "no such folder" in err


# 5. one entry point: the analysis CLI ends as `dnnbench` does ---------------------------------------


@pytest.mark.parametrize("argv", [DNNBENCH, ANALYSIS], ids=["dnnbench", "analysis"])
def test_both_entry_points_show_the_full_error_only_when_asked(tmp_path, argv):
    missing = str(tmp_path / "nosuch")
    plain = subprocess.run([*argv, "aggregate", missing], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert plain.returncode == ExitCode.NOT_A_SWEEP and plain.stderr.startswith("Error: "), plain.stderr
    assert "Traceback" not in plain.stderr
    full = subprocess.run([*argv, "aggregate", missing], cwd=tmp_path, env={**_env(), "DNNBENCH_FULL_ERROR": "1"},
                          capture_output=True, text=True)  # fmt: skip
    assert "Traceback" in full.stderr and "NotASweepError" in full.stderr, full.stderr


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGINT, ExitCode.INTERRUPTED), (signal.SIGTERM, ExitCode.TERMINATED)],
    ids=["SIGINT", "SIGTERM"],
)
def test_the_analysis_cli_ends_an_interrupt_as_dnnbench_does(done_sweep, tmp_path, sig, code):
    # Paused inside its work (the tables written, the swap not yet made) until the signal comes:
    # a fast machine would otherwise finish before it.
    env = {**_env(), "DNNBENCH_TEST_PAUSE_AT": "tables_written"}
    process = subprocess.Popen([*ANALYSIS, "aggregate", str(done_sweep), "--out", str(tmp_path / "r")], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if "paused at tables_written" in line:
            break
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, out + err
    assert "Traceback" not in err and ("interrupted" in err or "terminated" in err), err


# 3. a sweep folder on a read-only mount -----------------------------------------------------------


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"this machine does not let the test mount (`mount {' '.join(args)}`: {result.stderr.strip()})")


@contextmanager
def read_only_view(folder: Path, where: Path) -> Iterator[Path]:
    """``folder`` seen through a real read-only bind mount at ``where``."""
    where.mkdir()
    _mount("--bind", str(folder), str(where))
    try:
        _mount("-o", "remount,ro,bind", str(where))
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("leftover_wal", [False, True], ids=["plain", "empty-wal-left-beside-it"])
def test_reading_commands_read_a_sweep_on_a_read_only_mount(done_sweep, tmp_path, leftover_wal):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(done_sweep, copy)
    if leftover_wal:  # what a reader of a live sweep leaves: empty WAL and shm files
        (copy / "ledger.sqlite-wal").touch()
    before = _tree(copy)
    with read_only_view(copy, tmp_path / "ro") as ro:
        assert not os.access(ro, os.W_OK)
        shown = dnnbench("status", str(ro), "--json", cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert [c["state"] for c in json.loads(shown.stdout)] == ["completed", "completed"]
        waited = dnnbench("wait", str(ro), "--timeout", "5", cwd=tmp_path)
        assert waited.returncode == ExitCode.OK, waited.stderr
        aggregated = dnnbench("aggregate", str(ro), "--out", str(tmp_path / "out"), "--no-progress", cwd=tmp_path)
        assert aggregated.returncode == ExitCode.OK, aggregated.stderr
        # A writing command is told why it cannot write, with the path; nothing is half done.
        refused = dnnbench("resubmit", str(ro), "--force", json.loads(shown.stdout)[0]["cell_id"], cwd=tmp_path)
        assert refused.returncode == ExitCode.ERROR and "read-only file system" in refused.stderr, refused.stderr
    assert _tree(copy) == before


# 2. a full disk -----------------------------------------------------------------------------------


@contextmanager
def tiny_filesystem(where: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``where``: room for a sweep's plan and ledger, not for its cells' output."""
    where.mkdir()
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where))
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_full_disk_is_named_and_the_ledger_kept_true(tmp_path):
    with tiny_filesystem(tmp_path / "small", "144k") as small:
        sweep_dir = small / "sweep"
        result = dnnbench(*sweep_args(sweep_dir, "1,2"), cwd=tmp_path, timeout=300)
        # It had started a cell: not exit 1 "nothing was submitted or changed".
        assert result.returncode == ExitCode.CELLS_FAILED, result.stderr
        assert "no space left on device" in result.stderr
        assert "nothing was submitted" not in result.stderr
        cells = status(sweep_dir)
        failed = [c for c in cells if c["state"] == "failed"]
        assert failed and all(c["failure_class"] == "no_space" for c in failed), cells
        assert all("no space left on device" in c["detail"] for c in failed), failed
        # Whatever did not run says so; nothing is called completed or a launcher error.
        assert {c["state"] for c in cells} <= {"failed", "missing"}, cells
        assert not any(c.get("failure_class") == "launcher_error" for c in cells), cells
