"""orchestrator/ledger.py and status.py: attempts are recorded before submission; states are honest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.backends.base import SchedulerState
from orchestrator.ledger import AttemptRow, Ledger
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
