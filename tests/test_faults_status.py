"""What `status`, `run` and the command line say when the files or the scheduler do not agree.

Through the CLI on the local backend with ``framework=noop`` cells (about a second each). The
Slurm case fakes `squeue`/`sacct` on PATH: a scheduler that does not answer at the exact
moment a crash is settled cannot be produced for real without stopping the dev cluster under
every other test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import schema
from orchestrator.backends.slurm import SlurmBackend
from orchestrator.errors import ExitCode, SubmissionError
from orchestrator.ledger import Ledger

_SCRIPT = Path(sys.executable).parent / "dnnbench"
DNNBENCH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "orchestrator.cli"]
NOOP = ["framework=noop", "model=resnet18", "dataset=synthetic"]
GATE_ENV = "DNNBENCH_TEST_NOOP_GATE"  # jobs/noop.py: the cell waits for this file before its dumps


def dnnbench(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DNNBENCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def statuses(folder: Path) -> list[dict]:
    done = dnnbench("status", "--json", str(folder), cwd=folder.parent)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def completed_sweep(tmp_path: Path) -> Path:
    folder = tmp_path / "sweep"
    done = dnnbench("sweep", *NOOP, "gpus=2", "seed=0,1", "--no-aggregate", "--sweep-dir", str(folder), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [s["state"] for s in statuses(folder)] == ["completed", "completed"]
    return folder


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("truncated", lambda path: path.write_text(path.read_text()[:40])),
        ("removed", lambda path: path.unlink()),
        ("another rank", lambda path: path.write_text(path.read_text().replace('"rank": 1', '"rank": 0'))),
        ("non-finite", lambda path: path.write_text(path.read_text().replace('"seconds": 0.0', '"seconds": NaN', 1))),
    ],
)
def test_status_says_when_a_completed_cells_dumps_no_longer_validate(completed_sweep: Path, name, damage) -> None:
    first, second = sorted(statuses(completed_sweep), key=lambda s: s["cell_id"])
    attempt = completed_sweep / "cells" / first["cell_id"] / "attempt_0"
    damage(attempt / schema.dump_filename(1))
    after = {s["cell_id"]: s for s in statuses(completed_sweep)}
    damaged = after[first["cell_id"]]
    assert (damaged["state"], damaged["failure_class"]) == ("failed", "bad_metrics"), (name, damaged)
    assert damaged["detail"].startswith("completed, but its dumps no longer validate: rank 1"), damaged
    assert after[second["cell_id"]]["state"] == "completed"  # the other cell is untouched
    waited = dnnbench("wait", str(completed_sweep), "--timeout", "5", cwd=completed_sweep.parent)
    assert waited.returncode == ExitCode.CELLS_FAILED, waited.stdout


def test_status_of_a_running_dnnbench_run_is_running(tmp_path: Path) -> None:
    folder, gate = tmp_path / "run", tmp_path / "gate"
    env = {**os.environ, GATE_ENV: str(gate)}
    run = subprocess.Popen([*DNNBENCH, "run", *NOOP, "--out", str(folder)], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not list(folder.glob("cells/*/attempt_0")) and time.monotonic() < deadline:
            time.sleep(0.1)
        (cell,) = statuses(folder)
        assert cell["state"] == "running", cell
        # A second run into the same folder while the first runs: told who holds it, nothing started.
        second = dnnbench("run", *NOOP, "--out", str(folder), cwd=tmp_path)
        assert second.returncode == ExitCode.BUSY, second.stderr
        assert "dnnbench run" in second.stderr
        gate.touch()
        assert run.wait(timeout=60) == 0, run.communicate()
    finally:
        gate.touch()
        run.kill()
    (cell,) = statuses(folder)
    assert cell["state"] == "completed"
    assert len(list(folder.glob("cells/*/attempt_*"))) == 1


def test_overrides_may_follow_options(tmp_path: Path) -> None:
    listed = dnnbench("sweep", "framework=noop", "--dry-run", "seed=1,2", "--list", "model=resnet50", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    cells = [line for line in listed.stdout.splitlines() if "noop/resnet50/" in line]
    assert len(cells) == 2, listed.stdout
    unknown = dnnbench("sweep", "framework=noop", "--dry-run", "--no-such-option", cwd=tmp_path)
    assert unknown.returncode == ExitCode.USAGE and "unrecognized arguments: --no-such-option" in unknown.stderr


def _fake_scheduler(folder: Path, squeue: str, sacct: str) -> dict[str, str]:
    """PATH with `squeue`/`sacct` that run the given shell bodies (and no `sbatch`)."""
    folder.mkdir(exist_ok=True)
    for name, body in (("squeue", squeue), ("sacct", sacct)):
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


NO_ANSWER = "echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1"
SACCT_WITHOUT_DATABASE = "echo 'sacct: error: Problem talking to the database' >&2; exit 0"  # as sacct does
NOTHING = "exit 0"


def _unconfirmed(tmp_path: Path) -> tuple[Path, int]:
    """A sweep folder whose ledger holds one Slurm submission a killed command left unconfirmed."""
    folder = tmp_path / "sweep"
    with Ledger(folder / "ledger.sqlite") as ledger:
        ledger.add_cells([("c1", "label", [], None)])
        submission, _ = ledger.begin_submission("dnnbench-x-1", "slurm", "shape", ["c1"], None)
    return folder, submission


def _state(folder: Path, submission: int) -> str:
    with Ledger(folder / "ledger.sqlite") as ledger:
        return next(r["state"] for r in ledger.submissions() if r["submission_id"] == submission)


@pytest.mark.parametrize(
    ("squeue", "sacct", "started", "expected"),
    [
        (NO_ANSWER, NO_ANSWER, False, None),  # nothing answers: not guessed, the command stops
        (NO_ANSWER, SACCT_WITHOUT_DATABASE, False, None),
        (NOTHING, SACCT_WITHOUT_DATABASE, True, "submitted"),  # it ran: its attempt folder exists
        (NOTHING, SACCT_WITHOUT_DATABASE, False, "refused"),  # not queued, never started
        (NO_ANSWER, NOTHING, False, "refused"),  # sacct's own word: no such job
        ("echo 4242_0", NO_ANSWER, False, "submitted"),
    ],
)
def test_an_unconfirmed_slurm_submission_is_not_guessed_away(tmp_path, monkeypatch, squeue, sacct, started, expected):
    folder, submission = _unconfirmed(tmp_path)
    assert _state(folder, submission) == "submitting"
    if started:
        (folder / "cells" / "c1" / "attempt_0").mkdir(parents=True)
    for key, value in _fake_scheduler(tmp_path / "bin", squeue, sacct).items():
        monkeypatch.setenv(key, value)
    with Ledger(folder / "ledger.sqlite") as ledger:
        if expected is None:
            with pytest.raises(SubmissionError, match="cannot tell whether job dnnbench-x-1 reached Slurm"):
                SlurmBackend({"backend": "slurm"}).resolve_pending(ledger)
        else:
            SlurmBackend({"backend": "slurm"}).resolve_pending(ledger)
    assert _state(folder, submission) == (expected or "submitting")
