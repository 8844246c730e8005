"""The embedded job store: one SQLite file (``<data_dir>/jobs.sqlite3``) in WAL mode.

Each thread keeps one connection open (opening one and setting its PRAGMAs cost about
eight times a primary-key read), so one store object can be shared by the HTTP server's
executor threads and handed to worker processes. A connection never crosses a process
boundary: a forked child or an unpickled copy opens its own, and leaves the parent's alone
(closing them in the child could checkpoint or delete the parent's WAL).
:meth:`SQLiteJobStore.close` closes every connection this process opened.
``create_or_reuse`` and ``claim`` run inside ``BEGIN IMMEDIATE`` transactions, which take
SQLite's write lock before reading: two identical requests at the same instant, in threads
or in processes, serialise there and only the first creates a job.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager, suppress
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
CREATE TABLE IF NOT EXISTS job_owners (
    owner TEXT NOT NULL,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    added REAL NOT NULL,
    PRIMARY KEY (owner, job_id)
);
CREATE INDEX IF NOT EXISTS owners_by_time ON job_owners (owner, added);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value REAL NOT NULL
);
"""

_DATETIME_FIELDS = frozenset(
    {"created", "started", "completed", "expires", "retry_at", "retry_since"}
)
#: Fields kept in their own columns because other writers change them without rewriting the
#: whole job (progress from the worker, addresses from new requesters, the cancel flag).
_OUT_OF_BAND = frozenset({"records_written", "total_records", "emails"})
#: Job's field names; a stored document may hold fields an older or newer version wrote.
_JOB_FIELDS = frozenset(f.name for f in fields(Job))


#: What :meth:`SQLiteJobStore.get_if_changed` reads: everything the status JSON is made of.
_VERSION_SQL = "SELECT doc, records_written, total_records FROM jobs WHERE id = ?"

#: Connections a forked child inherited from its parent, kept alive and never used.
_INHERITED: list[sqlite3.Connection] = []


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
    data = {k: v for k, v in data.items() if k in _JOB_FIELDS}
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

    #: Reads are primary-key lookups in a local WAL file (readers do not wait for writers),
    #: cheap enough for the HTTP server to make on its IOLoop instead of a thread pool.
    inline_reads = True

    def __init__(self, path: str | Path, *, stale_after_seconds: float = 120.0) -> None:
        self.path = Path(path)
        self.stale_after_seconds = stale_after_seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._reset_connections()
        conn = self._conn()
        # WAL lets status reads proceed while a worker writes progress.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)

    def _reset_connections(self) -> None:
        # Called at construction, after unpickling and in a forked child: forget (without
        # closing) whatever connections the object held, so each thread opens its own.
        inherited = getattr(self, "_open", None)
        if inherited and getattr(self, "_pid", None) != os.getpid():
            # A forked child: keep the parent's connections referenced so that they are
            # never closed here (SQLite must not touch a connection across fork()).
            _INHERITED.extend(conn for _, conn in inherited)
        self._local = threading.local()
        self._pid = os.getpid()
        self._open: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._open_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_local", "_pid", "_open", "_open_lock"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_connections()

    def close(self) -> None:
        """Close every connection this process opened (at shutdown, or between tests).

        The store stays usable: a later call opens a new connection for its thread. Call it
        when no other thread is using the store.
        """
        if self._pid != os.getpid():
            self._reset_connections()
            return
        with self._open_lock:
            conns, self._open = self._open, []
            self._local = threading.local()
        for _, conn in conns:
            conn.close()

    # --- plumbing -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN ourselves, so the transaction boundaries are
        # exactly the ones written below. The busy timeout makes concurrent writers wait for
        # the lock instead of failing with "database is locked".
        # check_same_thread=False only so close() may close every thread's connection; each
        # connection is otherwise used by the thread that opened it.
        conn = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA foreign_keys = ON")
        # Durable enough for jobs: WAL with synchronous=NORMAL survives process crashes,
        # and FULL is only needed against power loss.
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (and again after a fork)."""
        if self._pid != os.getpid():
            self._reset_connections()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            me = threading.current_thread()
            with self._open_lock:
                # Close the connections of threads that have ended (a pool that was shut
                # down, a test's threads); a connection is only used by its own thread.
                ended = [c for t, c in self._open if not t.is_alive()]
                self._open = [(t, c) for t, c in self._open if t.is_alive()]
                self._open.append((me, conn))
                self._local.conn = conn
            for old in ended:
                old.close()
        return conn

    def _discard(self, conn: sqlite3.Connection) -> None:
        """Drop a connection left in an unknown state; the thread's next call opens anew."""
        with self._open_lock:
            self._open = [(t, c) for t, c in self._open if c is not conn]
            if getattr(self._local, "conn", None) is conn:
                self._local.conn = None
        with suppress(sqlite3.Error):
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            if conn.in_transaction:
                self._discard(conn)
            raise
        try:
            yield conn
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._discard(conn)
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT may leave the transaction open on a connection we keep.
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._discard(conn)
            raise

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        # Autocommit: each SELECT is its own read transaction, ended when its rows are
        # consumed, so a kept connection never holds an old WAL snapshot between calls.
        yield self._conn()

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
        # The status endpoint's read: this thread's connection without a context manager.
        return self._load(self._conn(), job_id)

    def get_if_changed(
        self, job_id: str, version: Hashable | None
    ) -> tuple[Hashable, Job | None] | None:
        """The job's current version and, unless that equals ``version``, the job itself;
        None when no such job exists.

        The version is what the status JSON is made of, read in one statement: the stored
        document (rewritten by every :meth:`save` and :meth:`claim`) and the progress
        columns (:meth:`update_progress`). Addresses and the cancel flag are not part of it.
        A primary-key read of three columns on the thread's kept connection, about as cheap
        as a read can be, so the status endpoint can afford it on every request (and, with
        ``inline_reads``, on the IOLoop).
        """
        row = self._conn().execute(_VERSION_SQL, (job_id,)).fetchone()
        if row is None:
            return None
        current = (row[0], row[1], row[2])
        if current == version:
            return current, None
        return current, _from_row(row, self._emails(self._conn(), job_id))

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

    def add_owner(self, job_id: str, owner: str) -> None:
        """Remember that ``owner`` asked for this job (the first time is kept)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO job_owners (owner, job_id, added) VALUES (?, ?, ?)",
                (owner, job_id, time.time()),
            )

    def jobs_of_owner(self, owner: str, *, offset: int, limit: int) -> tuple[list[Job], int]:
        """The jobs ``owner`` asked for, most recent first, and their number."""
        with self._reader() as conn:
            total = conn.execute(
                "SELECT count(*) FROM job_owners WHERE owner = ?", (owner,)
            ).fetchone()[0]
            rows = conn.execute(
                "SELECT jobs.* FROM job_owners JOIN jobs ON jobs.id = job_owners.job_id "
                "WHERE owner = ? ORDER BY job_owners.added DESC, jobs.id LIMIT ? OFFSET ?",
                (owner, max(0, limit), max(0, offset)),
            ).fetchall()
            return [_from_row(r, self._emails(conn, r["id"])) for r in rows], int(total)

    def update_progress(self, job_id: str, records_written: int, total_records: int | None) -> None:
        """Record progress; this also serves as the worker's heartbeat."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE jobs SET records_written = ?, total_records = ?, heartbeat = ? "
                "WHERE id = ?",
                (records_written, total_records, time.time(), job_id),
            )

    def add_counters(self, increments: dict[str, float]) -> None:
        """Add to service-wide counters in one transaction."""
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                list(increments.items()),
            )

    def counters(self) -> dict[str, float]:
        """Every counter and its value."""
        with self._reader() as conn:
            return {r[0]: float(r[1]) for r in conn.execute("SELECT name, value FROM counters")}

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

    def requeue_stale(self) -> list[str]:
        """STARTED jobs whose heartbeat is older than ``stale_after_seconds`` go back to
        PENDING (one transaction); their ids, oldest first."""
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT id FROM jobs WHERE state = 'STARTED' AND COALESCE(heartbeat, 0) < ? "
                "ORDER BY created",
                (time.time() - self.stale_after_seconds,),
            ).fetchall()
            ids = [r["id"] for r in rows]
            for job_id in ids:
                row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
                job = _from_row(row, self._emails(conn, job_id))
                job.state = "PENDING"
                self._write(conn, job)
            return ids

    def expired_jobs(self, now: datetime) -> list[Job]:
        """Successful jobs whose ``expires`` is before ``now``."""
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE state = 'SUCCESS' AND expires IS NOT NULL "
                "AND expires < ? ORDER BY expires",
                (now.timestamp(),),
            ).fetchall()
            return [_from_row(r, self._emails(conn, r["id"])) for r in rows]
