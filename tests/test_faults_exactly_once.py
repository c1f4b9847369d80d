"""Every cell runs exactly once, whatever is killed when (issue 12 §2), through the CLI, local backend.

Cells are ``framework=noop`` (about a second each). A cell that must run "for a while" waits
for a gate file (the test hook in jobs/noop.py), so a test decides when it ends instead of
guessing how long it takes. A crash at an exact step of the ledger comes from the ledger's
test hook (``DNNBENCH_FAULT_KILL_AT``); every other kill is a real SIGKILL of the real process.

"Exactly once" is counted three ways for every cell: one ``outcome.json`` that says
completed, one attempt folder at all (nothing started and abandoned), and one attempt in
the ledger that started something.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.errors import ExitCode
from orchestrator.ledger import FAULT_KILL_ENV, Ledger

_SCRIPT = Path(sys.executable).parent / "dnnbench"
DNNBENCH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "orchestrator.cli"]
GATE_ENV = "DNNBENCH_TEST_NOOP_GATE"
KILLED = -signal.SIGKILL


class Lab:
    """One sweep folder, the gate its noop cells wait for, and every process a test started."""

    def __init__(self, root: Path):
        self.root = root
        self.sweep_dir = root / "sweep"
        self.gate = root / "gate"
        self.started: list[subprocess.Popen] = []

    def sweep_args(self, cells: int = 3) -> list[str]:
        seeds = ",".join(str(seed) for seed in range(cells))
        return ["sweep", "framework=noop", "model=resnet18", "dataset=synthetic", f"seed={seeds}",
                "--no-aggregate", "--sweep-dir", str(self.sweep_dir)]  # fmt: skip

    def env(self, *, gated: bool = False, fault: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in (GATE_ENV, FAULT_KILL_ENV)}
        if gated:
            env[GATE_ENV] = str(self.gate)
        if fault:
            env[FAULT_KILL_ENV] = fault
        return env

    def run(self, args: list[str], *, fault: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([*DNNBENCH, *args], cwd=self.root, env=self.env(fault=fault), capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip

    def start(self, args: list[str], *, gated: bool = False) -> subprocess.Popen:
        process = subprocess.Popen([*DNNBENCH, *args], cwd=self.root, env=self.env(gated=gated),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.started.append(process)
        return process

    def status(self) -> list[dict]:
        result = self.run(["status", str(self.sweep_dir), "--json"], timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def states(self) -> list[str]:
        return [cell["state"] for cell in self.status()]

    def until(self, predicate: Callable[[], bool], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.1)

    def until_states(self, expected: list[str]) -> list[dict]:
        """Poll status until the cells' states are ``expected``; the cells then."""
        found: list[dict] = []

        def matches() -> bool:
            nonlocal found
            found = self.status() if self.sweep_dir.joinpath("ledger.sqlite").exists() else []
            return [cell["state"] for cell in found] == expected

        self.until(matches)
        return found

    def cleanup(self) -> None:
        self.gate.touch()  # gated cells end; nothing is left waiting after the test
        for process in self.started:
            try:
                process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


@pytest.fixture
def lab(tmp_path: Path):
    lab = Lab(tmp_path)
    yield lab
    lab.cleanup()


def assert_exactly_once(sweep_dir: Path, cells: int) -> None:
    folders = sorted((sweep_dir / "cells").iterdir())
    assert len(folders) == cells
    for folder in folders:
        attempts = [p for p in folder.iterdir() if p.name.startswith("attempt_")]
        outcomes = [json.loads((p / "outcome.json").read_text()) for p in attempts if (p / "outcome.json").exists()]
        assert [o["state"] for o in outcomes] == ["completed"], (folder.name, outcomes)
        assert len(attempts) == 1, (folder.name, attempts)
    with Ledger(sweep_dir / "ledger.sqlite") as ledger:
        assert ledger.attempt_counts() == {folder.name: 1 for folder in folders}


def job_pids(sweep_dir: Path, cell_id: str) -> list[int]:
    """The live processes of a cell's newest attempt, found as status finds them."""
    from orchestrator.backends.local_processes import job_processes

    with Ledger(sweep_dir / "ledger.sqlite") as ledger:
        return job_processes(ledger.latest_attempts()[cell_id].job_name or "")


def kill_job(sweep_dir: Path, cell_id: str) -> bool:
    """SIGKILL every process of a cell's job; True once none is left (a starting job may still grow)."""
    pids = job_pids(sweep_dir, cell_id)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return not pids


# a crash at every step of the ledger ------------------------------------------------------------

# transition:n — the n-th commit of that transition in the killed command (3 cells, one at a time).
FAULTS = [
    "cells_added:1",  # cells planned, nothing queued
    "queued:1",  # all queued, none started
    "submitting:1",  # first cell about to start
    "submitting:3",  # last cell about to start, two completed
    "started:1",  # first cell's process started, not yet recorded
    "started:2",
    "submitted:1",  # first cell recorded running, the others queued
    "submitted:3",  # last cell recorded running
]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_sweep_killed_at_any_ledger_step_is_completed_once_by_its_rerun(lab, fault):
    killed = lab.run(lab.sweep_args(), fault=fault)
    assert killed.returncode == KILLED, killed.stderr
    rerun = lab.run(lab.sweep_args())
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_exactly_once(lab.sweep_dir, 3)


# The rerun that settles a crash is itself killed while settling it, then run again.
CHAINS = [
    ("submitting:2", "dropped:1", "dropped:1"),  # the queued cell dropped, then the unstarted one
    ("started:2", "submitted:1"),  # a started cell confirmed by its process or folder
]


@pytest.mark.parametrize("chain", CHAINS, ids=" then ".join)
def test_a_rerun_killed_while_it_settles_a_crash_is_settled_by_the_next(lab, chain):
    for fault in chain:
        killed = lab.run(lab.sweep_args(), fault=fault)
        assert killed.returncode == KILLED, (fault, killed.stdout, killed.stderr)
    final = lab.run(lab.sweep_args())
    assert final.returncode == 0, final.stdout + final.stderr
    assert_exactly_once(lab.sweep_dir, 3)


# concurrent commands ------------------------------------------------------------------------------


def test_two_identical_sweeps_started_together_run_each_cell_once(lab):
    first, second = (lab.start(lab.sweep_args(2), gated=True) for _ in range(2))
    # One takes the lock and keeps it while its first cell waits at the gate; the other gives up.
    lab.until(lambda: first.poll() is not None or second.poll() is not None)
    loser, winner = (first, second) if first.poll() is not None else (second, first)
    out, err = loser.communicate()
    assert loser.returncode == ExitCode.BUSY, out + err
    assert "is busy" in err and f"pid {winner.pid}" in err and "dnnbench sweep" in err
    assert winner.poll() is None
    lab.gate.touch()
    out, err = winner.communicate(timeout=120)
    assert winner.returncode == 0, out + err
    assert_exactly_once(lab.sweep_dir, 2)


def test_two_identical_quick_sweeps_both_succeed_and_run_each_cell_once(lab):
    sweeps = [lab.start(lab.sweep_args(2)) for _ in range(2)]
    codes = [process.wait(timeout=180) for process in sweeps]
    # The second waits for the lock, then finds every cell submitted (or gives up if the first is slow).
    assert 0 in codes and set(codes) <= {0, ExitCode.BUSY}, [p.communicate() for p in sweeps]
    assert_exactly_once(lab.sweep_dir, 2)


# a sweep killed while its cell runs -----------------------------------------------------------------


def test_a_cell_left_running_by_a_killed_sweep_is_running_and_never_gets_a_second_attempt(lab):
    sweep = lab.start(lab.sweep_args(2), gated=True)
    running, queued = lab.until_states(["running", "pending"])
    sweep.kill()  # kill -9 of the real `dnnbench sweep`: its running cell lives on
    sweep.wait()
    assert job_pids(lab.sweep_dir, running["cell_id"])
    running_now, never_started = lab.status()
    assert (running_now["state"], running_now["attempt"]) == ("running", 0)
    assert never_started["state"] == "missing" and "never started" in never_started["detail"]

    resubmit = lab.start(["resubmit", str(lab.sweep_dir), "--force", running["cell_id"]])
    # It queues the missing cell but starts nothing beside the running one.
    lab.until_states(["running", "pending"])
    time.sleep(2)
    assert not (lab.sweep_dir / "cells" / running["cell_id"] / "attempt_1").exists()
    assert not (lab.sweep_dir / "cells" / queued["cell_id"] / "attempt_1").exists()
    assert resubmit.poll() is None
    lab.gate.touch()
    out, err = resubmit.communicate(timeout=120)
    assert resubmit.returncode == 0, out + err
    assert f"not retried: {running['cell_id']}" in out and "still running" in out
    assert f"resubmitting 1 cell(s): {queued['cell_id']} (missing)" in out
    assert lab.states() == ["completed", "completed"]
    assert_exactly_once(lab.sweep_dir, 2)


def test_a_rerun_waits_for_the_cell_a_killed_sweep_left_running(lab):
    sweep = lab.start(lab.sweep_args(2), gated=True)
    running, queued = lab.until_states(["running", "pending"])
    sweep.kill()
    sweep.wait()
    assert lab.states() == ["running", "missing"]
    rerun = lab.start(lab.sweep_args(2))
    lab.until_states(["running", "pending"])  # the rerun queued the missing cell …
    time.sleep(2)
    assert not (lab.sweep_dir / "cells" / queued["cell_id"] / "attempt_1").exists()  # … and starts it only after
    lab.gate.touch()
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out + err
    assert f"cell {running['cell_id']} (attempt 0) is still running from an earlier command" in err
    assert_exactly_once(lab.sweep_dir, 2)


def test_a_cell_whose_processes_all_died_is_failed_then_resubmitted(lab):
    sweep = lab.start(lab.sweep_args(1), gated=True)
    (cell,) = lab.until_states(["running"])
    sweep.kill()
    sweep.wait()
    lab.until(lambda: kill_job(lab.sweep_dir, cell["cell_id"]))  # the orphaned cell dies too, leaving no outcome
    (failed,) = lab.status()
    assert (failed["state"], failed["failure_class"]) == ("failed", "launcher_error")
    assert "ended without an outcome" in failed["detail"]
    waited = lab.run(["wait", str(lab.sweep_dir), "--interval", "0.2"], timeout=60)
    assert waited.returncode not in (0, ExitCode.TIMEOUT), waited.stdout
    again = lab.run(["resubmit", str(lab.sweep_dir)])
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resubmitting 1 cell(s): {cell['cell_id']} (failed:launcher_error)" in again.stdout
    (done,) = lab.status()
    assert (done["state"], done["attempt"]) == ("completed", 1)


def test_a_cell_whose_first_process_was_killed_runs_on_and_keeps_its_slot(lab):
    sweep = lab.start(lab.sweep_args(2), gated=True)
    first, second = lab.until_states(["running", "pending"])
    controller = int(first["job"])  # the submitit controller; the cell itself runs in its children
    lab.until(lambda: len(job_pids(lab.sweep_dir, first["cell_id"])) >= 3)  # controller, task, noop launcher
    os.kill(controller, signal.SIGKILL)
    lab.until(lambda: controller not in job_pids(lab.sweep_dir, first["cell_id"]))
    running, waiting = lab.status()
    assert running["state"] == "running" and "first process has ended" in running["detail"]
    assert waiting["state"] == "pending"
    assert not (lab.sweep_dir / "cells" / second["cell_id"] / "attempt_0").exists()  # nothing beside it
    lab.gate.touch()
    out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 0, out + err
    assert_exactly_once(lab.sweep_dir, 2)


# what others see during a normal local sweep -------------------------------------------------------


def test_status_and_wait_during_a_local_sweep_tell_running_and_pending_until_the_end(lab):
    sweep = lab.start(lab.sweep_args(3), gated=True)
    lab.until_states(["running", "pending", "pending"])
    waiter = lab.start(["wait", str(lab.sweep_dir), "--interval", "0.2"])
    busy = lab.run(["resubmit", str(lab.sweep_dir)], timeout=60)
    assert busy.returncode == ExitCode.BUSY and f"pid {sweep.pid}" in busy.stderr
    assert waiter.poll() is None
    lab.gate.touch()
    seen: set[str] = set()
    while sweep.poll() is None:
        seen.update(lab.states())
    assert seen <= {"running", "pending", "completed"}, seen
    assert sweep.returncode == 0, sweep.communicate()
    assert waiter.wait(timeout=60) == 0
    assert_exactly_once(lab.sweep_dir, 3)


# resubmit trusts the ledger, not an edited cell file ----------------------------------------------

EDITS = {
    "config changed": lambda doc: {**doc, "config": {**doc["config"], "batch_size": 64}},
    "id changed": lambda doc: {**doc, "cell_id": "0123456789ab"},
}


def test_resubmit_refuses_an_edited_cell_file_instead_of_submitting_less(lab):
    assert lab.run(lab.sweep_args(2)).returncode == 0
    edited_id, other_id = (cell["cell_id"] for cell in lab.status())
    cell_file = lab.sweep_dir / "cells" / edited_id / "cell.json"
    planned = cell_file.read_text()
    for name, edit in EDITS.items():
        cell_file.write_text(json.dumps(edit(json.loads(planned))))
        refused = lab.run(["resubmit", str(lab.sweep_dir), "--force", edited_id])
        assert refused.returncode == ExitCode.ERROR, (name, refused.stdout, refused.stderr)
        assert f"Error: {cell_file}" in refused.stderr and "edited" in refused.stderr, name
        assert "resubmitting" not in refused.stdout, name
    cell_file.write_text("{not json")
    unreadable = lab.run(["resubmit", str(lab.sweep_dir), "--force", edited_id])
    assert unreadable.returncode == ExitCode.ERROR and f"Error: {cell_file}" in unreadable.stderr
    # An edited file blocks only its own cell.
    other = lab.run(["resubmit", str(lab.sweep_dir), "--force", other_id])
    assert other.returncode == 0, other.stdout + other.stderr
    assert f"resubmitting 1 cell(s): {other_id} (completed)" in other.stdout
    assert not (lab.sweep_dir / "cells" / edited_id / "attempt_1").exists()
    assert json.loads((lab.sweep_dir / "cells" / other_id / "attempt_1" / "outcome.json").read_text())["state"] == (
        "completed"
    )
    cell_file.write_text(planned)  # restored: the plan runs again
    restored = lab.run(["resubmit", str(lab.sweep_dir), "--force", edited_id])
    assert restored.returncode == 0 and f"resubmitting 1 cell(s): {edited_id}" in restored.stdout
