"""The sweep's durable record: which cell went to which job, in which attempt.

SQLite in the sweep folder (WAL). Only the holder of the sweep folder's lock
(:mod:`orchestrator.lock`) submits, so rows change in one order:

    queued ─→ submitting ─→ submitted          (or refused: the scheduler said no)
       │          └──────────┴──→ interrupted  (the user stopped its command: Ctrl-C, SIGTERM)
       └──────────┴──────→ dropped             (never started: its command ended first)

Every submission is written *before* the scheduler is asked (``submitting``, with a
unique job name) and updated after it answers (``submitted`` with the job id; a local
job also with its process: pid, start time, host). A local sweep queues all its cells
first, so ``status`` can say they wait. A process killed between two steps leaves a
``queued`` or ``submitting`` row that the next command resolves (the backend's
``resolve_pending``: Slurm by job name, local by process), so no cell is ever started
twice and none is left waiting for ever.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.atomic import write_atomic_bytes
from orchestrator.errors import NoRoomError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    overrides TEXT NOT NULL,
    unavailable TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS submissions (
    submission_id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_name TEXT NOT NULL UNIQUE,
    backend TEXT NOT NULL,
    shape TEXT NOT NULL,
    state TEXT NOT NULL,          -- queued | submitting | submitted | refused | dropped | interrupted
    job_id TEXT,
    script TEXT,
    note TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id),
    attempt INTEGER NOT NULL,
    submission_id INTEGER REFERENCES submissions(submission_id),
    array_index INTEGER,
    created_at REAL NOT NULL,
    PRIMARY KEY (cell_id, attempt)
);
"""
# Columns added after the first release: a ledger written before them gets them on open.
_ADDED_COLUMNS = (
    ("cells", "config_sha", "TEXT"),  # digest of the config as planned (the first cell file)
    ("submissions", "pid", "INTEGER"),  # local jobs: the job's first process …
    ("submissions", "process_start", "TEXT"),  # … its boot id and start time (pid reuse shows) …
    ("submissions", "host", "TEXT"),  # … and where it runs
    ("submissions", "exclude_nodes", "TEXT"),  # nodes Slurm was told to avoid (resubmit --exclude-nodes)
)
_TABLES = ("cells", "submissions", "attempts")
# Submissions that never started anything: not an attempt of their cells.
NOT_STARTED = ("refused", "dropped")

# Test hook: DNNBENCH_FAULT_KILL_AT=<transition>:<n> SIGKILLs this process right after the n-th
# commit of that transition (cells_added, queued, submitting, submitted, refused, dropped, or the
# local backend's "started"): a crash at an exact point that a test cannot time from outside.
FAULT_KILL_ENV = "DNNBENCH_FAULT_KILL_AT"
_fault_counts: Counter[str] = Counter()


def fault_point(transition: str) -> None:
    spec = os.environ.get(FAULT_KILL_ENV)
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name == transition:
        _fault_counts[name] += 1
        if _fault_counts[name] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


_SQLITE_FULL, _SQLITE_READONLY, _SQLITE_IOERR = 13, 8, 10
_NEARLY_FULL_BYTES = 1 << 20  # an I/O error on a file system with less room than this: the room ran out


def _no_room(path: Path, err: sqlite3.OperationalError) -> str | None:
    """``"no space left on device: <ledger>"`` (or the read-only word) when SQLite's error is a lack of room."""
    code = getattr(err, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == _SQLITE_FULL:
        return f"no space left on device: {path}"
    if primary == _SQLITE_READONLY:
        return f"read-only file system: {path}" if not os.access(path.parent, os.W_OK) else None
    if primary == _SQLITE_IOERR:
        try:
            stats = os.statvfs(path.parent)
        except OSError:
            return None
        return f"no space left on device: {path}" if stats.f_bavail * stats.f_frsize < _NEARLY_FULL_BYTES else None
    return None


def config_digest(config: dict[str, Any]) -> str:
    """A cell config's fingerprint; keys added to the schema later count only when set."""
    from jobs.schema import without_added_defaults

    text = json.dumps(without_added_defaults(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ProcessRecord:
    """A local job's first process: ``start`` is ``<boot id>/<start time in ticks>``, so a reused pid differs."""

    pid: int
    start: str | None
    host: str | None


@dataclass(frozen=True)
class AttemptRow:
    cell_id: str
    attempt: int
    submission_id: int | None
    array_index: int | None
    job_name: str | None
    job_id: str | None
    submission_state: str | None
    backend: str | None
    process: ProcessRecord | None = None
    # The submission's note: why it was confirmed, dropped or interrupted (words, not identity).
    note: str | None = field(default=None, compare=False)

    @property
    def scheduler_key(self) -> str | None:
        """``<array job id>_<index>`` as sacct/squeue print array tasks, or the plain job id."""
        if self.job_id is None:
            return None
        if self.array_index is None or self.backend == "local":  # local jobs are not arrays
            return self.job_id
        return f"{self.job_id}_{self.array_index}"


def _create_whole(path: Path) -> None:
    """A new ledger appears with its tables or not at all.

    Another command checks the folder before it takes the sweep's lock: a ledger it caught
    half made (an SQLite file without tables yet) would look foreign to it. The tables are made
    in memory and the whole file published by the one writer, never replacing a ledger another
    command made meanwhile; from then on SQLite's own journal keeps its writes whole, so the live
    file is never replaced (the one file dnnbench changes in place besides the launcher logs).
    """
    db = sqlite3.connect(":memory:", isolation_level=None)
    try:
        db.executescript(_SCHEMA)
        image = db.serialize()
    finally:
        db.close()
    write_atomic_bytes(path, image, keep_existing=True)  # opening it turns on the WAL (Ledger.__init__)


class Ledger:
    def __init__(self, path: str | Path, *, read_only: bool = False):
        """``read_only``: for reading commands: writes nothing, takes no write lock, works on a read-only mount."""
        self.path = Path(path)
        if read_only:
            from orchestrator.paths import connect_read_only

            self.db = connect_read_only(self.path)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            _create_whole(self.path)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self._migrate()

    def _missing_columns(self) -> list[tuple[str, str, str]]:
        present = {table: {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")} for table in _TABLES}
        return [(table, column, kind) for table, column, kind in _ADDED_COLUMNS if column not in present[table]]

    def _migrate(self) -> None:
        if not self._missing_columns():  # the usual case writes nothing: a read-only sweep still opens
            return
        with self.transaction() as db:  # two commands opening an old ledger at once add each column once
            for table, column, kind in self._missing_columns():
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as err:
            if self.db.in_transaction:  # a COMMIT refused for lack of room leaves the transaction open
                with suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            room = _no_room(self.path, err)
            if room is None:
                raise
            raise NoRoomError(f"{room}: the ledger cannot record what happened ({err})") from err

    # cells -----------------------------------------------------------------------------------
    def add_cells(self, cells: Iterable[tuple[str, str, list[str], str | None]]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO cells (cell_id, label, overrides, unavailable, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                ((cid, label, json.dumps(ovr), unavailable, now) for cid, label, ovr, unavailable in cells),
            )
        fault_point("cells_added")

    def cell_ids(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT cell_id FROM cells ORDER BY rowid")]

    def cells(self) -> list[tuple[str, str, str | None]]:
        """(cell_id, label, unavailable reason) in planning order."""
        return list(self.db.execute("SELECT cell_id, label, unavailable FROM cells ORDER BY rowid"))

    def record_config_digests(self, digests: dict[str, str]) -> None:
        """Remember each cell's planned config; the first plan wins (later edits of cell.json show)."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE cells SET config_sha = ? WHERE cell_id = ? AND config_sha IS NULL",
                ((sha, cid) for cid, sha in digests.items()),
            )

    def config_digests(self) -> dict[str, str]:
        """The planned config digest of each cell that has one (ledgers of older sweeps have none)."""
        return dict(self.db.execute("SELECT cell_id, config_sha FROM cells WHERE config_sha IS NOT NULL"))

    # submissions -----------------------------------------------------------------------------
    def _insert_submission(
        self, db: sqlite3.Connection, job_name: str, backend: str, shape: str, state: str, script: str | None
    ) -> int:
        now = time.time()
        cur = db.execute(
            "INSERT INTO submissions (job_name, backend, shape, state, script, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (job_name, backend, shape, state, script, now, now),
        )
        return int(cur.lastrowid or 0)

    @staticmethod
    def _next_attempt(db: sqlite3.Connection, cell_id: str, submission_id: int, index: int) -> int:
        (attempt,) = db.execute(
            "SELECT COALESCE(MAX(attempt) + 1, 0) FROM attempts WHERE cell_id = ?", (cell_id,)
        ).fetchone()
        db.execute(
            "INSERT INTO attempts (cell_id, attempt, submission_id, array_index, created_at) VALUES (?, ?, ?, ?, ?)",
            (cell_id, attempt, submission_id, index, time.time()),
        )
        return int(attempt)

    def begin_submission(
        self,
        job_name: str,
        backend: str,
        shape: str,
        cell_ids: list[str],
        script: str | None,
        exclude_nodes: str | None = None,
    ) -> tuple[int, list[int]]:
        """Record a submission about to be made; returns its id and each cell's attempt number."""
        with self.transaction() as db:
            submission_id = self._insert_submission(db, job_name, backend, shape, "submitting", script)
            if exclude_nodes:
                db.execute(
                    "UPDATE submissions SET exclude_nodes = ? WHERE submission_id = ?", (exclude_nodes, submission_id)
                )
            attempts = [self._next_attempt(db, cid, submission_id, i) for i, cid in enumerate(cell_ids)]
        fault_point("submitting")
        return submission_id, attempts

    def queue(self, backend: str, jobs: list[tuple[str, str, str]]) -> list[tuple[int, int]]:
        """Record (job name, shape, cell id) jobs to be started one by one later; (submission id, attempt) each."""
        with self.transaction() as db:
            queued = []
            for job_name, shape, cell_id in jobs:
                submission_id = self._insert_submission(db, job_name, backend, shape, "queued", None)
                queued.append((submission_id, self._next_attempt(db, cell_id, submission_id, 0)))
        fault_point("queued")
        return queued

    def mark_submitting(self, submission_id: int) -> None:
        """A queued job is about to be started."""
        with self.transaction() as db:
            db.execute(
                "UPDATE submissions SET state = 'submitting', updated_at = ?"
                " WHERE submission_id = ? AND state = 'queued'",
                (time.time(), submission_id),
            )
        fault_point("submitting")

    def finish_submission(
        self,
        submission_id: int,
        job_id: str | None,
        state: str,
        note: str = "",
        process: ProcessRecord | None = None,
    ) -> None:
        pid, start, host = (process.pid, process.start, process.host) if process else (None, None, None)
        with self.transaction() as db:
            db.execute(
                "UPDATE submissions SET state = ?, job_id = ?, note = ?, pid = ?, process_start = ?, host = ?,"
                " updated_at = ? WHERE submission_id = ?",
                (state, job_id, note, pid, start, host, time.time(), submission_id),
            )
        fault_point(state)

    def drop_queued(self, submission_ids: list[int], note: str) -> None:
        """Queued submissions that will never be started (their command ended): not attempts."""
        if not submission_ids:
            return
        with self.transaction() as db:
            db.executemany(
                "UPDATE submissions SET state = 'dropped', note = ?, updated_at = ?"
                " WHERE submission_id = ? AND state = 'queued'",
                ((note, time.time(), submission) for submission in submission_ids),
            )
        fault_point("dropped")

    def mark_interrupted(self, submission_id: int, note: str) -> None:
        """The user stopped the command that ran this submission: an attempt cut short, not a failed cell."""
        with self.transaction() as db:
            db.execute(
                "UPDATE submissions SET state = 'interrupted', note = ?, updated_at = ? WHERE submission_id = ?",
                (note, time.time(), submission_id),
            )
        fault_point("interrupted")

    def submissions(self, state: str | None = None, backend: str | None = None) -> list[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        try:
            return list(
                self.db.execute(
                    "SELECT * FROM submissions WHERE (? IS NULL OR state = ?) AND (? IS NULL OR backend = ?)"
                    " ORDER BY submission_id",
                    (state, state, backend, backend),
                )
            )
        finally:
            self.db.row_factory = None

    def unconfirmed_backends(self) -> list[str]:
        """Backends with submissions a crash left unconfirmed (queued or submitting)."""
        rows = self.db.execute("SELECT DISTINCT backend FROM submissions WHERE state IN ('queued', 'submitting')")
        return sorted(row[0] for row in rows)

    def submission_cells(self, submission_id: int) -> list[tuple[str, int, int]]:
        """(cell_id, attempt, array_index) of one submission, by array index."""
        return list(
            self.db.execute(
                "SELECT cell_id, attempt, array_index FROM attempts WHERE submission_id = ? ORDER BY array_index",
                (submission_id,),
            )
        )

    # attempts --------------------------------------------------------------------------------
    def latest_attempts(self) -> dict[str, AttemptRow]:
        """Each cell's newest attempt that started something (not refused, not dropped)."""
        rows = self.db.execute(
            f"""
            SELECT a.cell_id, a.attempt, a.submission_id, a.array_index,
                   s.job_name, s.job_id, s.state, s.backend, s.pid, s.process_start, s.host, s.note
            FROM attempts a LEFT JOIN submissions s USING (submission_id)
            WHERE s.state IS NULL OR s.state NOT IN {NOT_STARTED!r}
            ORDER BY a.cell_id, a.attempt
            """
        )
        latest: dict[str, AttemptRow] = {}
        for *fields, pid, start, host, note in rows:
            process = ProcessRecord(int(pid), start, host) if pid is not None else None
            latest[fields[0]] = AttemptRow(*fields, process=process, note=note)
        return latest

    def attempt_counts(self) -> dict[str, int]:
        """How many attempts of each cell started something (what 'exactly once' counts)."""
        rows = self.db.execute(
            f"""
            SELECT a.cell_id, COUNT(*) FROM attempts a LEFT JOIN submissions s USING (submission_id)
            WHERE s.state IS NULL OR s.state NOT IN {NOT_STARTED!r} GROUP BY a.cell_id
            """
        )
        return dict(rows)
