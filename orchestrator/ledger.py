"""The sweep's durable record: which cell went to which job, in which attempt.

SQLite in the sweep folder (WAL, one writer: the login-node process). Every
submission is written *before* the scheduler is asked (state ``submitting``, with a
unique job name) and updated after it answers (``submitted`` with the job id). A
process killed in between leaves a ``submitting`` row that the next run resolves by
asking the scheduler for that job name, so no cell is ever submitted twice.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
    state TEXT NOT NULL,          -- submitting | submitted | refused
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

    @property
    def scheduler_key(self) -> str | None:
        """``<array job id>_<index>`` as sacct/squeue print array tasks, or the plain job id."""
        if self.job_id is None:
            return None
        if self.array_index is None or self.backend == "local":  # local jobs are not arrays
            return self.job_id
        return f"{self.job_id}_{self.array_index}"


class Ledger:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # cells -----------------------------------------------------------------------------------
    def add_cells(self, cells: Iterable[tuple[str, str, list[str], str | None]]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO cells VALUES (?, ?, ?, ?, ?)",
                ((cid, label, json.dumps(ovr), unavailable, now) for cid, label, ovr, unavailable in cells),
            )

    def cell_ids(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT cell_id FROM cells ORDER BY rowid")]

    def cells(self) -> list[tuple[str, str, str | None]]:
        """(cell_id, label, unavailable reason) in planning order."""
        return list(self.db.execute("SELECT cell_id, label, unavailable FROM cells ORDER BY rowid"))

    # submissions -----------------------------------------------------------------------------
    def begin_submission(
        self, job_name: str, backend: str, shape: str, cell_ids: list[str], script: str | None
    ) -> tuple[int, list[int]]:
        """Record a submission about to be made; returns its id and each cell's attempt number."""
        now = time.time()
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO submissions (job_name, backend, shape, state, script, created_at, updated_at)"
                " VALUES (?, ?, ?, 'submitting', ?, ?, ?)",
                (job_name, backend, shape, script, now, now),
            )
            submission_id = int(cur.lastrowid or 0)
            attempts = []
            for index, cid in enumerate(cell_ids):
                (attempt,) = db.execute(
                    "SELECT COALESCE(MAX(attempt) + 1, 0) FROM attempts WHERE cell_id = ?", (cid,)
                ).fetchone()
                db.execute(
                    "INSERT INTO attempts VALUES (?, ?, ?, ?, ?)",
                    (cid, attempt, submission_id, index, now),
                )
                attempts.append(int(attempt))
        return submission_id, attempts

    def finish_submission(self, submission_id: int, job_id: str | None, state: str, note: str = "") -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE submissions SET state = ?, job_id = ?, note = ?, updated_at = ? WHERE submission_id = ?",
                (state, job_id, note, time.time(), submission_id),
            )

    def submissions(self, state: str | None = None) -> list[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        try:
            if state is None:
                return list(self.db.execute("SELECT * FROM submissions ORDER BY submission_id"))
            return list(self.db.execute("SELECT * FROM submissions WHERE state = ? ORDER BY submission_id", (state,)))
        finally:
            self.db.row_factory = None

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
        """Each cell's newest attempt that was not refused by the scheduler."""
        rows = self.db.execute(
            """
            SELECT a.cell_id, a.attempt, a.submission_id, a.array_index,
                   s.job_name, s.job_id, s.state, s.backend
            FROM attempts a LEFT JOIN submissions s USING (submission_id)
            WHERE s.state IS NULL OR s.state != 'refused'
            ORDER BY a.cell_id, a.attempt
            """
        )
        latest: dict[str, AttemptRow] = {}
        for row in rows:
            latest[row[0]] = AttemptRow(*row)
        return latest
