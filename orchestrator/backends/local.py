"""This machine: cells run as submitit local jobs, ``array_parallelism`` at a time (1 by default).

Measurements must not share the machine, so the default runs one cell after another;
submit() returns when every cell has ended. All cells are queued in the ledger first
(``status`` shows them pending), then each is started in turn: ``submitting``, start,
``submitted`` with the job's process (pid, start time, host). A cell an earlier,
killed command left running holds its slot until it ends: nothing starts beside it.

What a crash leaves is settled by the next command that holds the sweep's lock
(:meth:`LocalBackend.resolve_pending`): a queued cell never started; a cell being
started either has processes (found by job name), an attempt folder (it ran), or
neither (it never started, and is submitted again).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from orchestrator.backends import local_processes as procs
from orchestrator.backends.base import Backend, CellJob, SchedulerState, ShapeGroup, SubmitOutcome
from orchestrator.entry_point import no_room_reason
from orchestrator.errors import ExitCode, NoRoomError, Terminated
from orchestrator.ledger import AttemptRow, Ledger, fault_point
from orchestrator.paths import SweepPaths
from orchestrator.runner import run_cell

_POLL_S = 0.2
_STOP_GRACE_S = 5.0  # an interrupted cell's processes get this long to end on SIGTERM, then SIGKILL
QUEUED = "queued: starts when the cells before it have ended"
NEVER_STARTED = "never started: the command that queued it ended first; rerun the same command or `dnnbench resubmit`"
ENDED = "its process ended without an outcome"


class LocalBackend(Backend):
    name = "local"
    detached = False

    def submit(
        self,
        paths: SweepPaths,
        ledger: Ledger,
        groups: list[ShapeGroup],
        progress: Callable[[int], None] | None = None,
    ) -> SubmitOutcome:
        import submitit

        executor = submitit.LocalExecutor(folder=paths.jobs / "%j")
        executor.update_parameters(timeout_min=max(g.shape.time_min for g in groups) if groups else 60)
        cells = [cell for group in groups for cell in group.cells]
        names = [f"local-{cell.cell_id}-{uuid.uuid4().hex[:8]}" for cell in cells]
        shapes = [group.shape.describe() for group in groups for _ in group.cells]
        queued = ledger.queue(self.name, [(n, s, c.cell_id) for n, s, c in zip(names, shapes, cells, strict=True)])
        slots = _Slots(max(1, int(self.cluster.get("array_parallelism") or 1)), progress)
        slots.adopt(_live_attempts(ledger))
        outcome = SubmitOutcome()
        ours: list[_Started] = []  # every job this command started, or was starting when it was stopped
        try:
            for cell, name, (submission, attempt) in zip(cells, names, queued, strict=True):
                slots.wait_for_room()
                ours.append(_Started(submission, name, paths.cell(cell.cell_id).attempt(attempt)))
                job = self._start(executor, ledger, ours[-1].attempt_dir, cell, name, submission)
                outcome.job_ids.append(str(job.job_id))
                slots.add(job, name)
            slots.wait_all()
        except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: the user's stop, not the cells' failure
            with signals_held():  # a second Ctrl-C must not cut the settling short
                ledger.drop_queued([submission for submission, _ in queued[len(ours) :]], NEVER_STARTED)
                for job in ours:
                    settle_interrupted(ledger, job, interruption(err))
            raise
        except (NoRoomError, OSError) as err:
            raise self._no_room(ledger, err, started=len(outcome.job_ids)) from err
        finally:  # an error: the cells not started say so now, not only at the next command
            ledger.drop_queued([submission for submission, _ in queued[len(ours) :]], NEVER_STARTED)
        return outcome

    def _no_room(self, ledger: Ledger, err: OSError | NoRoomError, *, started: int) -> BaseException:
        """The error a full (or read-only) disk ends a local sweep with: named, and exit 3 once cells ran."""
        reason = str(err) if isinstance(err, NoRoomError) else no_room_reason(err)
        if reason is None:
            return err
        with contextlib.suppress(NoRoomError):  # the cell being started when room ran out: running, or never started
            self.resolve_pending(ledger)
        if not started:
            return NoRoomError(reason)
        stopped = NoRoomError(
            f"{reason}; the sweep stopped after starting {started} cell(s): `dnnbench status` says how each "
            "ended; free space there and rerun the same command for the rest"
        )
        stopped.exit_code = ExitCode.CELLS_FAILED  # cells ran: not "nothing was submitted or changed"
        return stopped

    @staticmethod
    def _start(executor: Any, ledger: Ledger, out_dir: Path, cell: CellJob, job_name: str, submission: int) -> Any:
        ledger.mark_submitting(submission)
        with procs.tagged(job_name):
            job = executor.submit(run_cell, cell.cell_file, str(out_dir))
        fault_point("started")
        ledger.finish_submission(submission, str(job.job_id), "submitted", process=procs.record(int(job.job_id)))
        return job

    def wait_running(self, ledger: Ledger, paths: SweepPaths, progress: Callable[[int], None] | None = None) -> None:
        slots = _Slots(1, progress)
        slots.adopt(_live_attempts(ledger))
        slots.wait_all()

    def resolve_pending(self, ledger: Ledger) -> None:
        """Settle the local rows a killed command left: by its processes, else by its attempt folder."""
        paths = SweepPaths(ledger.path.parent)  # the ledger lives at the top of its sweep folder
        ledger.drop_queued([row["submission_id"] for row in ledger.submissions("queued", self.name)], NEVER_STARTED)
        for row in ledger.submissions("submitting", self.name):
            submission = row["submission_id"]
            ((cell_id, attempt, _),) = ledger.submission_cells(submission)
            pids = procs.job_processes(row["job_name"])
            if pids:
                process = procs.record(pids[0])
                ledger.finish_submission(submission, str(pids[0]), "submitted", "confirmed by its process", process)
            elif paths.cell(cell_id).attempt(attempt).exists():
                ledger.finish_submission(submission, None, "submitted", "confirmed by its attempt folder")
            else:
                ledger.finish_submission(submission, None, "dropped", NEVER_STARTED)

    def states(self, rows: list[AttemptRow], paths: SweepPaths, *, busy: bool) -> dict[str, SchedulerState]:
        scan = cache(procs.tagged_processes)  # /proc is read once per status, and only if a process ended

        def processes(job_name: str) -> list[int]:
            return scan().get(job_name, [])

        return {
            row.cell_id: attempt_state(row, paths.cell(row.cell_id).attempt(row.attempt), busy=busy, jobs=processes)
            for row in rows
        }


def start_here(ledger: Ledger, cell_id: str) -> int:
    """``dnnbench run``: this process runs the cell itself; record it as the new attempt's process."""
    return begin_here(ledger, cell_id)[1]


def begin_here(ledger: Ledger, cell_id: str) -> tuple[_Started, int]:
    """:func:`start_here`, also returning the job (to settle it with if the run is interrupted)."""
    name = f"run-{cell_id}-{uuid.uuid4().hex[:8]}"
    submission, (attempt,) = ledger.begin_submission(name, LocalBackend.name, "this machine", [cell_id], None)
    os.environ[procs.JOB_ENV] = name  # the launcher and its ranks carry the job's name
    ledger.finish_submission(submission, str(os.getpid()), "submitted", process=procs.record(os.getpid()))
    attempt_dir = SweepPaths(ledger.path.parent).cell(cell_id).attempt(attempt)
    return _Started(submission, name, attempt_dir), attempt


@dataclass(frozen=True)
class _Started:
    """A local job this command started: its ledger row, the name its processes carry, its folder."""

    submission: int
    job_name: str
    attempt_dir: Path


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block has ended (then they interrupt as usual)."""
    held = {signal.SIGINT, signal.SIGTERM}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def interruption(err: KeyboardInterrupt) -> str:
    """What the ledger says of an attempt its command's interruption cut short."""
    how = "SIGTERM" if isinstance(err, Terminated) else "Ctrl-C (SIGINT)"
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"interrupted: {how} stopped `dnnbench {' '.join(sys.argv[1:2])}` (pid {os.getpid()}) at {when} "
        "before the cell ended; rerun the same command to run it again"
    )


def settle_interrupted(ledger: Ledger, job: _Started, note: str, grace_s: float = _STOP_GRACE_S) -> None:
    """Stop what is left of an interrupted job, then record it as interrupted unless it completed.

    A cell that completed before the stop keeps its attempt (it is measured); any other is
    interrupted, so the next run of the same command runs it again instead of calling it failed.
    Its processes are ended first: nothing may write into the attempt after it is settled.
    """
    if _completed(job.attempt_dir):
        return
    # A process that outlives SIGKILL may still finish the cell: left as submitted, `status` says running.
    if _stop_processes(job.job_name, grace_s) and not _completed(job.attempt_dir):
        ledger.mark_interrupted(job.submission, note)


def _completed(attempt_dir: Path) -> bool:
    from orchestrator.status import read_outcome

    outcome = read_outcome(attempt_dir)
    return outcome is not None and outcome.get("state") == "completed"


def _stop_processes(job_name: str, grace_s: float) -> bool:
    """SIGTERM every process of the job, SIGKILL what is left after ``grace_s``; True once none is left."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        for pid in procs.job_processes(job_name):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while procs.job_processes(job_name) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        if not procs.job_processes(job_name):
            return True
    return False


def attempt_state(
    row: AttemptRow, attempt_dir: Path, *, busy: bool, jobs: Callable[[str], list[int]] = procs.job_processes
) -> SchedulerState:
    """A local attempt in scheduler words: PENDING, RUNNING, ENDED (without outcome?) or NOT_STARTED.

    ``busy``: a command holds the sweep's lock, so queued cells will still start. ``jobs``: a
    job name's live processes.
    """
    if row.submission_state == "queued":
        return SchedulerState("PENDING", reason=QUEUED) if busy else SchedulerState("NOT_STARTED", reason=NEVER_STARTED)
    if row.submission_state == "submitting":
        if busy:
            return SchedulerState("PENDING", reason="starting")
        if not jobs(row.job_name or "") and not attempt_dir.exists():
            return SchedulerState("NOT_STARTED", reason=NEVER_STARTED)
    return _process_state(row, jobs)


def _process_state(row: AttemptRow, jobs: Callable[[str], list[int]] = procs.job_processes) -> SchedulerState:
    # A row without a recorded process (written before they were) has only a pid that may be reused
    # since: it counts as ended unless a process still carries the job's name.
    process = row.process
    alive = procs.is_alive(process) if process else False
    if alive is None and process is not None:
        return SchedulerState("RUNNING", reason=f"on {process.host}: its process cannot be checked from here")
    if alive and process is not None:
        return SchedulerState("RUNNING", reason=f"pid {process.pid}")
    others = jobs(row.job_name or "")
    if others:  # the job's first process was killed, the cell itself still runs
        return SchedulerState("RUNNING", reason=f"pid {others[0]} (the job's first process has ended)")
    return SchedulerState("ENDED", reason=ENDED)


def _live_attempts(ledger: Ledger) -> list[AttemptRow]:
    """This sweep's local attempts still running here (earlier commands' cells: a killed sweep's orphans)."""
    rows = [r for r in ledger.latest_attempts().values() if r.backend == "local" and r.submission_state == "submitted"]
    # A cell running on another host (a sweep folder on a shared filesystem) does not share this machine.
    here = [r for r in rows if r.process is None or r.process.host in (None, procs.host())]
    return [r for r in here if _process_state(r).state == "RUNNING"]


class _Slots:
    """Cells running here: this command's submitit jobs and earlier commands' processes, at most ``size``."""

    def __init__(self, size: int, progress: Callable[[int], None] | None):
        self.size, self.progress = size, progress
        self.jobs: list[tuple[Any, str]] = []
        self.others: list[AttemptRow] = []

    def add(self, job: Any, job_name: str) -> None:
        self.jobs.append((job, job_name))

    def adopt(self, rows: list[AttemptRow]) -> None:
        for row in rows:
            print(
                f"cell {row.cell_id} (attempt {row.attempt}) is still running from an earlier command "
                f"({_process_state(row).reason}): waiting for it before starting anything beside it",
                file=sys.stderr,
            )
        self.others += rows

    def _running(self) -> int:
        # A job holds its slot until none of its processes is left: its first one may be killed alone.
        for job, name in [(j, n) for j, n in self.jobs if j.done() and not procs.job_processes(n)]:
            self.jobs.remove((job, name))
            with contextlib.suppress(Exception):  # a failed cell raises here; its outcome and `status` say why
                job.result()
            if self.progress:
                self.progress(1)
        self.others = [row for row in self.others if _process_state(row).state == "RUNNING"]
        return len(self.jobs) + len(self.others)

    def wait_for_room(self) -> None:
        while self._running() >= self.size:
            time.sleep(_POLL_S)

    def wait_all(self) -> None:
        while self._running():
            time.sleep(_POLL_S)
