"""orchestrator/ledger.py and status.py: attempts are recorded before submission; states are honest."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from orchestrator import lock
from orchestrator.backends import local_processes
from orchestrator.backends.base import SchedulerState
from orchestrator.backends.local import start_here
from orchestrator.errors import ExitCode, SweepBusyError
from orchestrator.ledger import AttemptRow, Ledger, ProcessRecord
from orchestrator.paths import SweepPaths
from orchestrator.status import classify

# ledger ------------------------------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path / "sweep" / "ledger.sqlite") as opened:
        opened.add_cells([("c1", "ddp/resnet18/a", ["gpus=1"], None), ("c2", "ddp/resnet18/b", ["gpus=2"], None)])
        yield opened


def test_cells_are_added_once_in_planning_order(ledger):
    ledger.add_cells([("c2", "changed label", [], None), ("c3", "ddp/resnet50", [], "horovod missing")])
    assert ledger.cells() == [
        ("c1", "ddp/resnet18/a", None),
        ("c2", "ddp/resnet18/b", None),
        ("c3", "ddp/resnet50", "horovod missing"),
    ]


def test_a_submission_is_recorded_before_the_scheduler_answers(ledger):
    submission, attempts = ledger.begin_submission("dnnbench-x-1", "slurm", "1n×2g", ["c1", "c2"], "/j/1.sh")
    assert attempts == [0, 0]
    (row,) = ledger.submissions()
    assert (row["job_name"], row["state"], row["job_id"]) == ("dnnbench-x-1", "submitting", None)
    assert row["script"] == "/j/1.sh"
    latest = ledger.latest_attempts()
    assert latest["c1"].submission_state == "submitting" and latest["c1"].job_id is None

    ledger.finish_submission(submission, "4242", "submitted")
    (row,) = ledger.submissions("submitted")
    assert row["job_id"] == "4242"
    assert ledger.submission_cells(submission) == [("c1", 0, 0), ("c2", 0, 1)]
    latest = ledger.latest_attempts()
    assert latest["c2"] == AttemptRow("c2", 0, submission, 1, "dnnbench-x-1", "4242", "submitted", "slurm")
    assert latest["c2"].scheduler_key == "4242_1"


def test_attempts_count_up_per_cell(ledger):
    first, _ = ledger.begin_submission("a", "slurm", "s", ["c1"], None)
    ledger.finish_submission(first, "100", "submitted")
    second, attempts = ledger.begin_submission("b", "slurm", "s", ["c1", "c2"], None)
    assert attempts == [1, 0]
    ledger.finish_submission(second, "101", "submitted")
    latest = ledger.latest_attempts()
    assert (latest["c1"].attempt, latest["c1"].job_id) == (1, "101")
    assert (latest["c2"].attempt, latest["c2"].job_id) == (0, "101")


def test_a_refused_submission_is_not_the_latest_attempt(ledger):
    first, _ = ledger.begin_submission("a", "slurm", "s", ["c1"], None)
    ledger.finish_submission(first, "100", "submitted")
    refused, (attempt,) = ledger.begin_submission("b", "slurm", "s", ["c1"], None)
    assert attempt == 1
    ledger.finish_submission(refused, None, "refused", "sbatch: error: invalid partition")
    assert ledger.latest_attempts()["c1"].attempt == 0
    assert ledger.submissions("refused")[0]["note"] == "sbatch: error: invalid partition"
    _, (attempt,) = ledger.begin_submission("c", "slurm", "s", ["c1"], None)
    assert attempt == 2  # numbers are never reused: attempt_1's folder may exist


def test_job_names_are_unique(ledger):
    ledger.begin_submission("same", "slurm", "s", ["c1"], None)
    with pytest.raises(Exception, match="UNIQUE"):
        ledger.begin_submission("same", "slurm", "s", ["c2"], None)
    assert "c2" not in ledger.latest_attempts()  # the failed transaction left nothing behind


def test_a_second_connection_sees_committed_rows(tmp_path, ledger):
    submission, _ = ledger.begin_submission("a", "local", "s", ["c1"], None)
    ledger.finish_submission(submission, "77", "submitted")
    with Ledger(ledger.path) as other:
        assert other.latest_attempts()["c1"].job_id == "77"
        assert other.cell_ids() == ["c1", "c2"]


def test_a_cell_never_submitted_has_no_attempt(ledger):
    assert ledger.latest_attempts() == {}


def test_queued_jobs_are_attempts_until_dropped(ledger):
    (first, a0), (second, b0) = ledger.queue("local", [("local-c1-x", "s", "c1"), ("local-c2-x", "s", "c2")])
    assert (a0, b0) == (0, 0)
    assert {c: r.submission_state for c, r in ledger.latest_attempts().items()} == {"c1": "queued", "c2": "queued"}
    ledger.mark_submitting(first)
    ledger.drop_queued([first, second], "its command ended")  # only what is still queued is dropped
    assert {c: r.submission_state for c, r in ledger.latest_attempts().items()} == {"c1": "submitting"}
    assert ledger.attempt_counts() == {"c1": 1}
    assert ledger.submissions("dropped")[0]["note"] == "its command ended"
    _, (again,) = ledger.begin_submission("b", "local", "s", ["c2"], None)
    assert again == 1  # a dropped attempt's number is not reused either


def test_a_local_submission_records_its_process(ledger):
    submission, _ = ledger.begin_submission("local-c1", "local", "s", ["c1"], None)
    ledger.finish_submission(submission, "4321", "submitted", process=ProcessRecord(4321, "boot/99", "node7"))
    assert ledger.latest_attempts()["c1"].process == ProcessRecord(4321, "boot/99", "node7")


def test_the_first_planned_config_digest_is_kept(ledger):
    ledger.record_config_digests({"c1": "aaa", "c2": "bbb"})
    ledger.record_config_digests({"c1": "changed", "c3": "unknown cell"})
    assert ledger.config_digests() == {"c1": "aaa", "c2": "bbb"}


_FIRST_RELEASE_SCHEMA = """
CREATE TABLE cells (cell_id TEXT PRIMARY KEY, label TEXT NOT NULL, overrides TEXT NOT NULL, unavailable TEXT,
                    created_at REAL NOT NULL);
CREATE TABLE submissions (submission_id INTEGER PRIMARY KEY AUTOINCREMENT, job_name TEXT NOT NULL UNIQUE,
    backend TEXT NOT NULL, shape TEXT NOT NULL, state TEXT NOT NULL, job_id TEXT, script TEXT, note TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE attempts (cell_id TEXT NOT NULL REFERENCES cells(cell_id), attempt INTEGER NOT NULL,
    submission_id INTEGER REFERENCES submissions(submission_id), array_index INTEGER, created_at REAL NOT NULL,
    PRIMARY KEY (cell_id, attempt));
INSERT INTO cells VALUES ('c1', 'ddp/resnet18', '[]', NULL, 1.0);
INSERT INTO submissions VALUES (1, 'local-c1-old', 'local', 's', 'submitted', '777', NULL, '', 1.0, 1.0);
INSERT INTO attempts VALUES ('c1', 0, 1, 0, 1.0);
"""


def test_a_ledger_of_the_first_release_opens_and_gains_the_new_columns(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with closing(sqlite3.connect(path)) as old:
        old.executescript(_FIRST_RELEASE_SCHEMA)
    for _ in range(2):  # opened again: nothing added twice
        with Ledger(path) as opened:
            row = opened.latest_attempts()["c1"]
            assert (row.job_id, row.submission_state, row.process) == ("777", "submitted", None)
            assert opened.config_digests() == {}
    with Ledger(path) as opened:
        opened.finish_submission(1, "777", "submitted", process=ProcessRecord(777, "b/1", "h"))
        assert opened.latest_attempts()["c1"].process == ProcessRecord(777, "b/1", "h")


# status.classify --------------------------------------------------------------------------------


def row(state: str = "submitted", backend: str = "slurm", array_index: int | None = 3) -> AttemptRow:
    return AttemptRow("c1", 0, 1, array_index, "dnnbench-x", "555", state, backend)


COMPLETED = {"state": "completed", "reasons": []}
FAILED = {"state": "failed", "failure_class": "bad_metrics", "reasons": ["rank 1: no dump"]}


@pytest.mark.parametrize(
    ("outcome", "scheduler", "detached", "expected"),
    [
        (COMPLETED, "COMPLETED", True, ("completed", None)),
        (COMPLETED, None, True, ("completed", None)),  # the cell's own word, scheduler not yet updated
        (COMPLETED, "FAILED", True, ("failed", "launcher_error")),
        (COMPLETED, "TIMEOUT", True, ("failed", "timeout")),
        (FAILED, "COMPLETED", True, ("failed", "bad_metrics")),
        (None, "TIMEOUT", True, ("failed", "timeout")),
        (None, "OUT_OF_MEMORY", True, ("failed", "oom")),
        (None, "CANCELLED by 0", True, ("failed", "cancelled")),
        (None, "NODE_FAIL", True, ("failed", "node_fail")),
        (None, "PREEMPTED", True, ("failed", "preempted")),
        (None, "COMPLETED", True, ("failed", "bad_metrics")),  # ended well, but wrote no outcome
        (None, "PENDING", True, ("pending", None)),
        (None, "REQUEUED", True, ("pending", None)),
        (None, "RUNNING", True, ("running", None)),
        (None, None, True, ("pending", None)),  # sacct lags a few seconds behind sbatch
        (None, None, False, ("failed", "launcher_error")),  # local: the job is over and left nothing
    ],
)
def test_classify(outcome, scheduler, detached, expected):
    state = SchedulerState(scheduler) if scheduler else None
    result = classify(row(backend="slurm" if detached else "local"), outcome, state, detached=detached)
    assert result[:2] == expected


def test_classify_details_name_the_evidence():
    assert classify(None, None, None, detached=True) == ("missing", None, "never submitted")
    assert classify(row(), COMPLETED, SchedulerState("FAILED"), detached=True)[2] == (
        "dumps valid but scheduler says FAILED"
    )
    assert classify(row(), None, SchedulerState("CANCELLED by 0"), detached=True)[2] == "scheduler: CANCELLED by 0"
    assert classify(row(), FAILED, None, detached=True)[2] == "rank 1: no dump"
    assert classify(row(), None, SchedulerState("PENDING", reason="Priority"), detached=True)[2] == "Priority"
    assert classify(row(), None, None, detached=False)[2] == "the local job ended without an outcome"


def test_an_unconfirmed_submission_is_pending_whatever_is_on_disk():
    assert classify(row("submitting"), None, None, detached=False)[:2] == ("pending", None)
    assert classify(row("queued"), None, None, detached=False)[:2] == ("pending", None)


@pytest.mark.parametrize(
    ("state", "outcome", "scheduler", "expected"),
    [
        ("submitted", None, SchedulerState("RUNNING", reason="pid 42"), ("running", None, "pid 42")),
        ("submitted", None, SchedulerState("ENDED", reason="it ended"), ("failed", "launcher_error", "it ended")),
        ("submitted", COMPLETED, SchedulerState("ENDED", reason="it ended"), ("completed", None, "")),
        ("submitted", FAILED, SchedulerState("ENDED", reason="x"), ("failed", "bad_metrics", "rank 1: no dump")),
        ("queued", None, SchedulerState("PENDING", reason="queued"), ("pending", None, "queued")),
        ("queued", None, SchedulerState("NOT_STARTED", reason="never started"), ("missing", None, "never started")),
        ("submitting", None, SchedulerState("NOT_STARTED", reason="never started"), ("missing", None, "never started")),
        ("submitting", None, SchedulerState("RUNNING", reason="pid 7"), ("running", None, "pid 7")),
    ],
)  # fmt: skip
def test_classify_local_attempts_by_their_processes(state, outcome, scheduler, expected):
    assert classify(row(state, backend="local", array_index=0), outcome, scheduler, detached=False) == expected


# local processes ---------------------------------------------------------------------------------


def until(predicate, timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passes; its last value."""
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(predicate())


def test_a_process_record_tells_a_live_process_from_an_ended_or_reused_pid():
    child = subprocess.Popen(["sleep", "30"])
    try:
        record = local_processes.record(child.pid)
        assert local_processes.is_alive(record) is True
        assert local_processes.is_alive(ProcessRecord(child.pid, record.start + "0", record.host)) is False  # reused
        assert local_processes.is_alive(ProcessRecord(child.pid, record.start, "another-host")) is None
    finally:
        child.kill()
    # Killed, not yet reaped: a zombie is not running (the kernel takes a moment to end it).
    assert until(lambda: local_processes.is_alive(record) is False)
    child.wait()
    assert local_processes.is_alive(record) is False


def test_a_job_is_found_by_name_in_every_process_it_started():
    with local_processes.tagged("local-abc-1"):
        parent = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
    other = subprocess.Popen(["sleep", "30"])
    try:
        assert until(lambda: len(local_processes.job_processes("local-abc-1")) == 2)
        found = local_processes.job_processes("local-abc-1")
        assert found[0] == parent.pid and len(found) == 2  # the top of the tree first, then its child
        assert other.pid not in found and local_processes.job_processes("local-abc") == []
        assert local_processes.JOB_ENV not in os.environ  # the tag was this process's for the block only
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # its own session: the shell and its sleep
        other.kill()
        parent.wait(), other.wait()


def test_a_run_here_is_recorded_as_this_process(ledger, monkeypatch):
    monkeypatch.delenv(local_processes.JOB_ENV, raising=False)
    attempt = start_here(ledger, "c1")
    row = ledger.latest_attempts()["c1"]
    assert (attempt, row.submission_state, row.job_id) == (0, "submitted", str(os.getpid()))
    assert local_processes.is_alive(row.process) is True
    assert os.environ[local_processes.JOB_ENV] == row.job_name  # what the launcher and ranks inherit
    monkeypatch.delenv(local_processes.JOB_ENV)


# the sweep folder's lock ---------------------------------------------------------------------------

_HOLD_LOCK = """
import subprocess, sys, time
from pathlib import Path
from orchestrator.lock import sweep_lock
from orchestrator.paths import SweepPaths
with sweep_lock(SweepPaths(Path(sys.argv[1])), command="dnnbench sweep test-holder"):
    child = subprocess.Popen(["sleep", "60"])  # a local cell's process outlives a killed sweep
    print(child.pid, flush=True)
    time.sleep(60)
"""


@pytest.fixture
def held_lock(tmp_path):
    """A second process holding the sweep folder's lock, with a child of its own: (paths, holder, child pid)."""
    paths = SweepPaths(tmp_path)
    holder_process = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert holder_process.stdout is not None
    child = int(holder_process.stdout.readline())
    yield paths, holder_process, child
    os.killpg(holder_process.pid, signal.SIGKILL)
    holder_process.wait()


def test_a_second_command_waits_then_is_told_who_holds_the_sweep(held_lock, capsys):
    paths, holder_process, _ = held_lock
    assert lock.holder(paths).pid == holder_process.pid
    started = time.monotonic()
    with pytest.raises(SweepBusyError) as err, lock.sweep_lock(paths, wait_s=1.5):
        pass
    assert time.monotonic() - started >= 1.5
    assert err.value.exit_code == ExitCode.BUSY
    assert f"pid {holder_process.pid}" in str(err.value) and "dnnbench sweep test-holder" in str(err.value)
    assert "waiting up to 2 s" in capsys.readouterr().err


def test_the_lock_goes_with_its_holder_even_when_its_children_live_on(held_lock):
    paths, holder_process, child = held_lock
    holder_process.kill()  # kill -9: no cleanup runs
    holder_process.wait()
    assert local_processes.is_alive(local_processes.record(child))
    assert lock.holder(paths) is None
    with lock.sweep_lock(paths, wait_s=0), lock.sweep_lock(paths, wait_s=0):  # re-entrant in one process
        assert lock.holder(paths) is None  # this process is not "another command"


# a real local sweep --------------------------------------------------------------------------------

_SCRIPT = Path(sys.executable).parent / "dnnbench"
DNNBENCH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "orchestrator.cli"]
TWO_TINY_CELLS = [
    "sweep", "model=resnet18", "gpus=1", "batch_size=8", "steps=2", "warmup_steps=1", "val_steps=2",
    "dataset.train_samples=64", "dataset.val_samples=32", "seed=0,1", "--no-aggregate",
]  # fmt: skip


@pytest.mark.slow
def test_local_sweep_completes_and_a_rerun_submits_nothing(tmp_path):
    sweep_dir = tmp_path / "sweep"

    def sweep() -> subprocess.CompletedProcess:
        return subprocess.run([*DNNBENCH, *TWO_TINY_CELLS, "--sweep-dir", str(sweep_dir)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip

    first = sweep()
    assert first.returncode == 0, first.stderr
    assert "submitted 2 cell(s)" in first.stdout
    status = subprocess.run([*DNNBENCH, "status", str(sweep_dir), "--json"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert status.returncode == 0, status.stderr
    cells = json.loads(status.stdout)
    assert [(c["state"], c["attempt"], c["failure_class"]) for c in cells] == [("completed", 0, None)] * 2
    for cell in cells:
        attempt = sweep_dir / "cells" / cell["cell_id"] / "attempt_0"
        assert sorted(p.name for p in attempt.glob("rank_*.json")) == ["rank_0.json"]

    second = sweep()
    assert second.returncode == 0, second.stderr
    assert "2 cell(s) already submitted earlier: left alone" in second.stdout
    assert "submitted 2" not in second.stdout
    with Ledger(sweep_dir / "ledger.sqlite") as ledger:
        assert len(ledger.submissions()) == 2
        assert {r.attempt for r in ledger.latest_attempts().values()} == {0}
    for cell in cells:
        assert not (sweep_dir / "cells" / cell["cell_id"] / "attempt_1").exists()
