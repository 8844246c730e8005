"""The embedded job store: one SQLite file (``<data_dir>/jobs.sqlite3``) in WAL mode.

Every call opens its own short-lived connection, so one store object can be shared by the
HTTP server's executor threads and handed to worker processes. ``create_or_reuse`` and
``claim`` run inside ``BEGIN IMMEDIATE`` transactions, which take SQLite's write lock before
reading: two identical requests at the same instant, in threads or in processes, serialise
there and only the first creates a job.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from downloader.models import Job

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    query_hash TEXT NOT NULL,
    data_version TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    records_written INTEGER NOT NULL DEFAULT 0,
    total_records INTEGER,
    heartbeat REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_hash ON jobs (query_hash, data_version, created);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created);
CREATE TABLE IF NOT EXISTS job_emails (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    added REAL NOT NULL,
    PRIMARY KEY (job_id, email)
);
"""

_DATETIME_FIELDS = frozenset({"created", "started", "completed", "expires"})
#: Fields kept in their own columns because other writers change them without rewriting the
#: whole job (progress from the worker, addresses from new requesters, the cancel flag).
_OUT_OF_BAND = frozenset({"records_written", "total_records", "emails"})


def _now() -> datetime:
    return datetime.now(UTC)


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _to_doc(job: Job) -> str:
    data = asdict(job)
    for name in _DATETIME_FIELDS:
        value = data[name]
        data[name] = None if value is None else value.isoformat()
    for name in _OUT_OF_BAND:
        data.pop(name)
    return json.dumps(data, sort_keys=True)


def _from_row(row: sqlite3.Row, emails: list[str]) -> Job:
    data: dict[str, Any] = json.loads(row["doc"])
    for name in _DATETIME_FIELDS:
        if data.get(name) is not None:
            data[name] = datetime.fromisoformat(data[name])
    known = {f.name for f in fields(Job)}
    data = {k: v for k, v in data.items() if k in known}
    data["records_written"] = row["records_written"]
    data["total_records"] = row["total_records"]
    data["emails"] = emails
    return Job(**data)


class SQLiteJobStore:
    """:class:`~downloader.interfaces.JobStore` over a SQLite file.

    ``stale_after_seconds``: a STARTED job whose worker has not reported progress for this
    long is considered interrupted and may be claimed again (a worker reports at least every
    few seconds while it builds, see :func:`downloader.build.build_archive`).
    """

    def __init__(self, path: str | Path, *, stale_after_seconds: float = 120.0) -> None:
        self.path = Path(path)
        self.stale_after_seconds = stale_after_seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            # WAL lets status reads proceed while a worker writes progress.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    # --- plumbing -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN ourselves, so the transaction boundaries are
        # exactly the ones written below. The busy timeout makes concurrent writers wait for
        # the lock instead of failing with "database is locked".
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA foreign_keys = ON")
        # Durable enough for jobs: WAL with synchronous=NORMAL survives process crashes,
        # and FULL is only needed against power loss.
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    @staticmethod
    def _emails(conn: sqlite3.Connection, job_id: str) -> list[str]:
        rows = conn.execute(
            "SELECT email FROM job_emails WHERE job_id = ? ORDER BY added, email", (job_id,)
        ).fetchall()
        return [r["email"] for r in rows]

    def _load(self, conn: sqlite3.Connection, job_id: str) -> Job | None:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        return _from_row(row, self._emails(conn, job_id))

    def _write(self, conn: sqlite3.Connection, job: Job) -> None:
        created = job.created or _now()
        job.created = created
        conn.execute(
            """
            INSERT INTO jobs (id, query_hash, data_version, kind, state, created, expires,
                              records_written, total_records, heartbeat, doc)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET
                query_hash = excluded.query_hash, data_version = excluded.data_version,
                kind = excluded.kind, state = excluded.state, created = excluded.created,
                expires = excluded.expires, records_written = excluded.records_written,
                total_records = excluded.total_records, heartbeat = excluded.heartbeat,
                doc = excluded.doc
            """,
            (
                job.id,
                job.query_hash,
                job.data_version,
                job.kind,
                job.state,
                created.timestamp(),
                _epoch(job.expires),
                job.records_written,
                job.total_records,
                time.time(),
                _to_doc(job),
            ),
        )
        added = time.time()
        conn.executemany(
            "INSERT OR IGNORE INTO job_emails (job_id, email, added) VALUES (?, ?, ?)",
            [(job.id, email, added) for email in job.emails],
        )

    # --- JobStore ---------------------------------------------------------------------------

    def create_or_reuse(
        self, job: Job, *, reuse_after: datetime | None, force: bool = False
    ) -> tuple[Job, bool]:
        """Return the newest reusable job for ``job``'s hash and data version, or store ``job``.

        Reusable: the same ``query_hash``, ``data_version`` and kind, not FAILURE, CANCELLED
        or EXPIRED, not asked to cancel (a running job being stopped must not be handed to a
        new requester), created at or after ``reuse_after``. ``force`` skips the search.
        """
        with self._transaction() as conn:
            if not force:
                row = conn.execute(
                    """
                    SELECT * FROM jobs
                    WHERE query_hash = ? AND data_version = ? AND kind = ?
                      AND state NOT IN ('FAILURE', 'CANCELLED', 'EXPIRED')
                      AND cancel_requested = 0
                      AND created >= ?
                    ORDER BY created DESC LIMIT 1
                    """,
                    (
                        job.query_hash,
                        job.data_version,
                        job.kind,
                        _epoch(reuse_after) if reuse_after else float("-inf"),
                    ),
                ).fetchone()
                if row is not None:
                    return _from_row(row, self._emails(conn, row["id"])), False
            self._write(conn, job)
            return job, True

    def get(self, job_id: str) -> Job | None:
        """The job, or None when no such job exists."""
        with self._reader() as conn:
            return self._load(conn, job_id)

    def save(self, job: Job) -> None:
        """Write every field of ``job``. Addresses are only ever added, never removed, so a
        worker saving its copy cannot drop an address a new requester added meanwhile."""
        with self._transaction() as conn:
            self._write(conn, job)

    def add_email(self, job_id: str, email: str) -> None:
        """Remember one more address to notify about this job (duplicates are ignored)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO job_emails (job_id, email, added) VALUES (?, ?, ?)",
                (job_id, email, time.time()),
            )

    def update_progress(self, job_id: str, records_written: int, total_records: int | None) -> None:
        """Record progress; this also serves as the worker's heartbeat."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE jobs SET records_written = ?, total_records = ?, heartbeat = ? "
                "WHERE id = ?",
                (records_written, total_records, time.time(), job_id),
            )

    def request_cancel(self, job_id: str) -> None:
        """Flag the job so its worker stops at the next check."""
        with self._transaction() as conn:
            conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))

    def is_cancel_requested(self, job_id: str) -> bool:
        """Whether cancellation was asked for."""
        with self._reader() as conn:
            row = conn.execute(
                "SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            return bool(row and row["cancel_requested"])

    def claim(self, job_id: str, *, max_attempts: int) -> Job | None:
        """Mark the job STARTED and count the attempt.

        A PENDING job is always claimable; a STARTED one only when its heartbeat is older
        than ``stale_after_seconds`` (its worker died). Returns None for terminal, cancelled
        or live jobs. The caller decides what to do when ``attempts`` exceeds
        ``max_attempts`` (``build_archive`` fails the job with a clear message), because the
        researcher must be told, and a store cannot send mail.
        """
        del max_attempts  # Enforced by the caller; see the docstring.
        with self._transaction() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["cancel_requested"]:
                return None
            if row["state"] == "STARTED":
                beat = row["heartbeat"] or 0.0
                if time.time() - beat < self.stale_after_seconds:
                    return None
            elif row["state"] != "PENDING":
                return None
            job = _from_row(row, self._emails(conn, job_id))
            job.state = "STARTED"
            job.started = _now()
            job.attempts += 1
            self._write(conn, job)
            return job

    def jobs_for_hash(self, query_hash: str, *, kind: str) -> list[Job]:
        """Every job of ``kind`` with this ``query_hash``, whatever its data version or
        state, newest first (a recordset's export jobs, one or more per version)."""
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE query_hash = ? AND kind = ? ORDER BY created DESC",
                (query_hash, kind),
            ).fetchall()
            return [_from_row(r, self._emails(conn, r["id"])) for r in rows]

    def pending_jobs(self) -> list[Job]:
        """PENDING and STARTED jobs, oldest first (STARTED ones may have lost their worker)."""
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE state IN ('PENDING', 'STARTED') ORDER BY created"
            ).fetchall()
            return [_from_row(r, self._emails(conn, r["id"])) for r in rows]

    def expired_jobs(self, now: datetime) -> list[Job]:
        """Successful jobs whose ``expires`` is before ``now``."""
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE state = 'SUCCESS' AND expires IS NOT NULL "
                "AND expires < ? ORDER BY expires",
                (now.timestamp(),),
            ).fetchall()
            return [_from_row(r, self._emails(conn, r["id"])) for r in rows]
