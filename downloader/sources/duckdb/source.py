"""DuckDBSource: the embedded record source, the DuckDB file ``<data-dir>/records.duckdb``.

Written by ``downloader ingest`` (:mod:`downloader.ingest`), read here. The service runs
several worker processes that read while an ingest may be writing, and DuckDB lets one
process write only when no other process has the file open. So every operation uses a
short-lived read-only connection (parked for a second for the next operation, and given up
at once when an ingest waits: :mod:`.idle`), and a long stream of batches gives the
file back every few seconds (it reads in row id order and resumes after the last row id it
sent). A stream notices when the data (or the file) changed in between and stops with
:class:`SourceUnavailable` (the build is retried on the new data rather than mixing two
versions). While an ingest holds the file, opening is
retried for ``lock_timeout`` seconds, then :class:`SourceUnavailable` is raised.

A store file that does not exist yet is an empty store (``data_version`` "0"). All DuckDB
errors become :class:`SourceUnavailable` here, at the edge.

This module holds the connections, the counts, tallies and terms, and the window loop
of a batch stream; how a window reads its rows is :mod:`.reads`, and the split of
verbatim terms out of ``data`` is :mod:`.verbatim`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias, cast

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from downloader.errors import SourceUnavailable
from downloader.models import ExtensionFile
from downloader.sources import media_of_recordsets
from downloader.sources.duckdb import idle, verbatim
from downloader.sources.duckdb.links import MediaLinks
from downloader.sources.duckdb.reads import (
    _ALIAS,
    _TABLE,
    _Reads,
    _Recent,
    _SlicePlan,
    _without_rowid,
)
from query.fields import RecordType, get_field
from query.sql import compile_request_where, compile_where

# Every other connection (counts, tallies, terms): a memory limit too, or a join over the
# other table (media of records matching rq) holds its whole hash table in memory: at 5M
# records a media count peaked at 709 MB RSS unlimited, 232 MB with 128MB (spilling to
# records.duckdb.tmp beside the store; that count took 2.2 s instead of 1.0 s).
_QUERY_CONFIG: dict[str, Any] = {"memory_limit": "128MB"}

# Read connections of a batch stream: bounded memory, and scans that keep row order. One
# thread: the build's encoder and writer need the other core (two threads read the verbatim
# file's json_transform faster but raised a 1M-record build's peak RSS by ~45 MB). The memory
# limit is most of a build's peak RSS beyond the libraries: 415 MB with 128MB, 380 MB with
# 96MB, ~345 MB with 64MB (48MB made the reads markedly slower).
_READ_CONFIG: dict[str, Any] = {
    "memory_limit": "64MB",
    "threads": 1,
    "preserve_insertion_order": True,
}


# Batches a stream reads ahead of its consumer (see DuckDBSource._batches). Each is at most
# ``batch_size`` rows (10,000 by default: a few MB of Arrow data). At 1M records one ahead
# took 9.6 s for the verbatim file, two 6.1 s; three were another ~1 s faster for the whole
# build but added ~15 MB to its peak RSS, which is kept under 400 MB.
_READ_AHEAD = 2

# Blocks of matching row ids a source keeps for its next stream (see _SlicePlan._block):
# the two media files of an archive; at most 8 MB each.
_SHARED_BLOCKS = 2

# Per-recordset tallies a source keeps, two per request (see DuckDBSource._tally).
_TALLIES = 256

# Row ids of the media of matching records a source keeps (see DuckDBSource._media_rowids):
# a build's tally finds them and its two media files read them. 5 MB each at most per
# million media.
_MEDIA_ROWS = 2

# Threads that split verbatim terms out of ``data`` while the reader reads on: the split
# of a verbatim file's batch takes longer than DuckDB's read of it, so with one thread the
# verbatim files were bound by it.
_SPLITTERS = 2


# The media links (see .links) of each store file's current state, shared by every source
# of the process: serve's request threads each have a source of their own, and the links
# are read once per state of the file (under the lock, so two threads never both read them).
_LINKS: dict[Path, tuple[tuple[Any, ...], MediaLinks | None]] = {}
_LINKS_LOCK = threading.Lock()

# Recent tallies (see DuckDBSource._tally), shared like the links: a count asked again (the
# web page counts as a person types) is answered from here whichever thread serves it.
_TALLY_CACHE = _Recent(_TALLIES)


@dataclass(frozen=True)
class RecordsetInfo:
    """One ingested recordset and its current version."""

    recordset: str
    version: int
    name: str
    source: str
    ingested_at: datetime
    record_count: int
    media_count: int


@dataclass(frozen=True)
class DeletedRecord:
    """A record or media record that a re-ingest of its recordset no longer contained."""

    uuid: str
    recordset: str
    deleted_at: datetime
    rtype: str


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _is_config_clash(exc: BaseException) -> bool:
    """The file is open in this process with the other configuration (briefly, by a count:
    wait for it as for a lock)."""
    return "different configuration" in str(exc).lower()


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("could not set" in text or "conflicting" in text)


#: The column in which a stream reads ``data`` as text for :func:`verbatim.expand`.
_RAW = "_raw_json"

#: Rows read, or the verbatim split that will give them (see DuckDBSource._batches).
_Rows: TypeAlias = "pa.Table | pa.RecordBatch | Future[pa.Table]"
#: Rows with the row id to resume after them.
_Read: TypeAlias = "tuple[_Rows, int]"


def _resolved(rows: _Rows) -> pa.Table | pa.RecordBatch:
    return rows.result() if isinstance(rows, Future) else rows


class _Missing(Exception):
    """The store file does not exist (an empty store)."""


class _Shared:
    """A connection a session shares out as cursors; it is closed once it is older than
    the source's window and no cursor of it is in use, or parked (see :mod:`.idle`) when
    the session ends."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        config: dict[str, Any],
        opened: float,
        signature: tuple[Any, ...],
    ) -> None:
        self.con = con
        self.config = config
        self.opened = opened
        self.signature = signature
        self.users = 0
        self.expired = False
        self.park_on_release: Path | None = None

    def release(self) -> None:
        self.users -= 1
        if self.expired and self.users <= 0:
            self.finish()

    def finish(self) -> None:
        """Park the connection when its session ended while it was in use, else close it."""
        if self.park_on_release is not None:
            idle.IDLE.give(
                self.park_on_release,
                self.config,
                self.con,
                signature=self.signature,
                opened=self.opened,
            )
        else:
            self.con.close()


class _Cursor:
    """A cursor of a shared connection, closed like a connection of its own."""

    def __init__(self, shared: _Shared, lock: threading.Lock) -> None:
        self._shared = shared
        self._lock = lock
        self._cursor = shared.con.cursor()
        self._closed = False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._cursor.close()
            self._shared.release()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class DuckDBSource:
    """Records and media records from the embedded DuckDB store (see ``RecordSource``)."""

    def __init__(
        self,
        path: str | Path,
        *,
        lock_timeout: float = 30.0,
        window_seconds: float = 2.0,
        hold_seconds: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        # A connection is given back (a stream's window ends) once it is older than
        # window_seconds and an ingest waits for the file (see .idle), and in any case once
        # it is older than hold_seconds (for a writer that sets no marker). Closing costs
        # DuckDB a trim of its heap and opening a read of its catalogue: at 1M records,
        # windows of 2 s whether or not anyone waited cost a build ~10% of its time.
        self.window_seconds = window_seconds
        self.hold_seconds = max(hold_seconds, window_seconds)
        # (file signature, data_version) of the last read: data_version is asked for on
        # every submission and opening the file costs far more than a stat.
        self._version_cache: tuple[tuple[Any, ...], str] | None = None
        self._tallies = _TALLY_CACHE
        self._blocks = _Recent(_SHARED_BLOCKS)
        # The media row ids of recent record queries (see _media_rowids).
        self._media_rows = _Recent(_MEDIA_ROWS)
        # Inside session(): one connection per configuration, handed out as cursors.
        self._session: dict[bool, _Shared] | None = None
        self._session_lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[None]:
        """Operations inside share their connections (one per configuration, each given
        back like a batch stream's, see :meth:`batches`), so a small build opens the file
        twice instead of a dozen times (each open reads the catalogue: ~13 ms). When the
        session ends its connection is parked for the next one (see :mod:`.idle`), which
        gives the file back to ingest within a second, or at once when an ingest waits."""
        with self._session_lock:
            self._session = {}
        try:
            yield
        finally:
            with self._session_lock:
                shared, self._session = self._session or {}, None
                for entry in shared.values():
                    if not entry.expired:
                        entry.park_on_release = self.path
                    entry.expired = True
                    if entry.users <= 0:
                        entry.finish()

    # --- connections --------------------------------------------------------------------

    def _signature(self) -> tuple[Any, ...]:
        """What identifies the file's current contents: (mtime_ns, size, inode) of the file
        and of its write-ahead log, if any. Any write changes it."""
        parts: list[Any] = []
        for p in (self.path, self.path.with_name(self.path.name + ".wal")):
            try:
                st = p.stat()
            except FileNotFoundError:
                parts.append(None)
                continue
            parts.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(parts)

    def _open(self, *, read_config: bool = False) -> duckdb.DuckDBPyConnection:
        if not self.path.exists():
            raise _Missing()
        if self._session is not None:
            with self._session_lock:
                if self._session is not None:
                    return self._session_cursor()
        return self._connect(read_config)

    def _session_cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of the session's connection (under the session lock). DuckDB opens a
        file once per process with one configuration, so a session shares the batch
        streams' (one thread, bounded memory, row order) for its counts too."""
        assert self._session is not None
        entry = self._session.get(True)
        if entry is not None and self._held_long_enough(entry.opened):
            entry.expired = True
            if entry.users <= 0:
                entry.finish()
            entry = None
        if entry is None:
            signature = self._signature()
            con, config, opened = self._reuse_or_connect(True, signature)
            entry = _Shared(con, config=config, opened=opened, signature=signature)
            self._session[True] = entry
        entry.users += 1
        return cast(duckdb.DuckDBPyConnection, _Cursor(entry, self._session_lock))

    def _held_long_enough(self, opened: float) -> bool:
        """Whether a connection opened at ``opened`` (monotonic) should be given back now."""
        held = time.monotonic() - opened
        if held < self.window_seconds:
            return False
        return held >= self.hold_seconds or idle.writer_waiting(self.path)

    def _reuse_or_connect(
        self, read_config: bool, signature: tuple[Any, ...]
    ) -> tuple[duckdb.DuckDBPyConnection, dict[str, Any], float]:
        """(connection, its configuration, when it was opened): a parked one (see
        :mod:`.idle`) of the file as it is now, else a new one."""
        config = dict(_READ_CONFIG if read_config else _QUERY_CONFIG)
        taken = idle.IDLE.take(self.path, config, signature, self.hold_seconds)
        if taken is not None:
            return taken[0], config, taken[1]
        opened = time.monotonic()
        con, config = self._connect_with_config(read_config)
        return con, config, opened

    def _connect(self, read_config: bool) -> duckdb.DuckDBPyConnection:
        return self._connect_with_config(read_config)[0]

    def _connect_with_config(
        self, read_config: bool
    ) -> tuple[duckdb.DuckDBPyConnection, dict[str, Any]]:
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.02
        config = dict(_READ_CONFIG if read_config else _QUERY_CONFIG)
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=True, config=config), config
            except duckdb.Error as exc:
                if _is_config_clash(exc) and idle.IDLE.drain(self.path):
                    # Connections of this process parked with the other configuration
                    # held the file: given up, so try again at once.
                    continue
                if _is_config_clash(exc) and config != _READ_CONFIG:
                    # A batch stream of this process holds the file with its configuration
                    # (DuckDB opens a file once per process): a count or tally uses that
                    # one (one thread, less memory) rather than fail. Only builds running
                    # in the API's own process (tests' threaded services) meet this.
                    config = dict(_READ_CONFIG)
                    continue
                retry = _is_lock_error(exc) or _is_config_clash(exc)
                if not retry or time.monotonic() >= deadline:
                    raise SourceUnavailable(
                        f"the record store {self.path} cannot be opened: {exc}"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one operation: the session's, else a parked one (see
        :mod:`.idle`) or a new one, parked again afterwards."""
        if self._session is not None or not self.path.exists():
            con = self._open()
            parking = None
        else:
            signature = self._signature()
            con, config, opened = self._reuse_or_connect(False, signature)
            parking = (config, signature, opened)
        healthy = False
        try:
            yield con
            healthy = True
        except duckdb.CatalogException as exc:
            # A file created but never filled by ingest has no tables: an empty store.
            raise _Missing() from exc
        except duckdb.Error as exc:
            raise SourceUnavailable(f"record store query failed: {exc}") from exc
        finally:
            if parking is not None and healthy:
                config, signature, opened = parking
                idle.IDLE.give(self.path, config, con, signature=signature, opened=opened)
            else:
                con.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._connection() as con:
                return con.execute(sql, list(params)).fetchall()
        except _Missing:
            return []

    # --- RecordSource -----------------------------------------------------------------------

    @staticmethod
    def _read_version(con: duckdb.DuckDBPyConnection) -> str:
        rows = con.execute("SELECT value FROM store_meta WHERE key = 'data_version'").fetchall()
        return str(rows[0][0]) if rows else "0"

    def data_version(self) -> str:
        """The store's ``data_version`` ("0" for an empty store).

        Cached on the file's signature (mtime_ns, size, inode, and those of its WAL), taken
        before the read, so a changed file is always read again."""
        signature = self._signature()
        cached = self._version_cache
        if cached is not None and cached[0] == signature and signature[0] is not None:
            return cached[1]
        rows = self._query("SELECT value FROM store_meta WHERE key = 'data_version'")
        version = str(rows[0][0]) if rows else "0"
        if signature[0] is not None:
            self._version_cache = (signature, version)
        return version

    def _tally_key(
        self,
        signature: tuple[Any, ...],
        rtype: RecordType,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
    ) -> tuple[Any, ...]:
        where, params = compile_request_where(rtype, rq, mq)
        return (self.path, signature, rtype, where, json.dumps(list(params), default=str))

    def _tally(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> dict[str | None, int]:
        """Matching ``rtype`` documents per recordset id. A build and ``/v2/count`` ask for
        the counts of both types and the per-recordset counts of the same request, so both
        types' tallies come from one query (one connection, and the records matching ``rq``
        found once for both) per request and store state, and are kept. Cached on the
        file's signature, taken before the query, like :meth:`data_version`."""
        signature = self._signature()
        key = self._tally_key(signature, rtype, rq, mq)
        cached: dict[str | None, int] | None = self._tallies.get(key)
        if cached is not None:
            return cached
        both = self._both_tallies(rq, mq, signature)
        if signature[0] is not None:
            for kind in ("records", "mediarecords"):
                self._tallies.put(self._tally_key(signature, kind, rq, mq), both[kind])
        return both[rtype]

    def _both_tallies(
        self, rq: dict[str, Any] | None, mq: dict[str, Any] | None, signature: tuple[Any, ...]
    ) -> dict[RecordType, dict[str | None, int]]:
        out: dict[RecordType, dict[str | None, int]] = {"records": {}, "mediarecords": {}}
        try:
            with self._connection() as con:
                # The media of the records matching rq go through the links, unless they
                # are whole recordsets' (a filter on the media, see media_of_recordsets).
                m_rq, m_mq = media_of_recordsets("mediarecords", rq, mq)
                linked = (
                    self._linked_tallies(con, m_rq, signature)
                    if m_rq is not None and m_mq is None
                    else None
                )
                if linked is not None:
                    out = linked
                else:
                    for kind, recordset, n in self._sql_tallies(con, rq, mq, m_rq, m_mq):
                        out[kind][None if recordset is None else str(recordset)] = int(n)
        except _Missing:
            pass
        # Ordered by recordset id (no recordset last), as callers list them.
        return {
            kind: dict(sorted(tally.items(), key=lambda kv: (kv[0] is None, kv[0] or "")))
            for kind, tally in out.items()
        }

    def _sql_tallies(
        self,
        con: duckdb.DuckDBPyConnection,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
        m_rq: dict[str, Any] | None,
        m_mq: dict[str, Any] | None,
    ) -> list[tuple[Any, ...]]:
        """(type, recordset, count) rows of both tallies, in one query: the records of
        ``rq``/``mq``, the media of ``m_rq``/``m_mq`` (the same request, or its media of
        whole recordsets asked of the media alone, see ``media_of_recordsets``)."""
        r_where, r_params = compile_request_where("records", rq, mq)
        if m_rq is not None and m_mq is None:
            # Media of the records matching rq: those records are found once, for both
            # tallies (a filter on the other table is otherwise a second scan of it).
            sql = (
                "WITH sel AS MATERIALIZED (SELECT r.uuid, r.recordset FROM records AS r "
                f"WHERE {r_where}) "
                "SELECT 'records', recordset, count(*) FROM sel GROUP BY recordset "
                "UNION ALL SELECT 'mediarecords', m.recordset, count(*) FROM mediarecords AS m "
                "WHERE m.coreid IN (SELECT uuid FROM sel) GROUP BY m.recordset"
            )
            params = r_params
        else:
            m_where, m_params = compile_request_where("mediarecords", m_rq, m_mq)
            sql = (
                f"SELECT 'records', r.recordset, count(*) FROM records AS r WHERE {r_where} "
                "GROUP BY r.recordset UNION ALL "
                "SELECT 'mediarecords', m.recordset, count(*) FROM mediarecords AS m "
                f"WHERE {m_where} GROUP BY m.recordset"
            )
            params = [*r_params, *m_params]
        return con.execute(sql, params).fetchall()

    def _linked_tallies(
        self, con: duckdb.DuckDBPyConnection, rq: dict[str, Any], signature: tuple[Any, ...]
    ) -> dict[RecordType, dict[str | None, int]] | None:
        """Both tallies of an ``rq`` alone through the in-memory links: one scan of the
        records for their row ids and recordsets, no join over the media. None when the
        store has no usable links."""
        links = self._media_links(con, signature)
        if links is None:
            return None
        where, params = compile_where("records", rq, alias="r")
        if where == "TRUE":
            # Every record: the tally by SQL, every linked media record, no row id read.
            rows = con.execute(
                "SELECT r.recordset, count(*) FROM records AS r GROUP BY r.recordset"
            ).fetchall()
            records = {None if rs is None else str(rs): int(n) for rs, n in rows}
            media = links.linked()
        else:
            # One scan for both (a fulltext filter costs ~0.2 s a scan at 1M records): the
            # matching row ids with their recordsets (~30 bytes a matching record while
            # counted; a GROUP BY of row id lists would hold them in DuckDB's memory limit).
            table = con.sql(
                f"SELECT r.rowid AS record_rid, r.recordset AS rs FROM records AS r WHERE {where}",
                params=params,
            ).to_arrow_table()
            counts = pc.value_counts(table.column("rs"))
            records = {
                None if rs is None else str(rs): int(n)
                for rs, n in zip(
                    counts.field("values").to_pylist(),
                    counts.field("counts").to_pylist(),
                    strict=True,
                )
            }
            # A scan on several threads gives its rows in any order.
            rids = np.array(table.column("record_rid").to_numpy(), dtype=np.int64)
            del table
            rids.sort()
            media = links.media_of(rids)
        self._keep_media_rowids(signature, rq, media)
        return {"records": records, "mediarecords": links.tally(media)}

    # --- the media of matching records, through the links --------------------------------

    def _media_links(
        self, con: duckdb.DuckDBPyConnection, signature: tuple[Any, ...]
    ) -> MediaLinks | None:
        """The links of the store's state ``signature`` (taken before ``con`` was opened),
        read on ``con`` the first time; None when there are none to use."""
        if signature[0] is None:
            return None
        with _LINKS_LOCK:
            held = _LINKS.get(self.path)
            if held is None or held[0] != signature:
                held = (signature, MediaLinks.read(con))
                _LINKS[self.path] = held
        return held[1]

    @staticmethod
    def _linked_media(
        con: duckdb.DuckDBPyConnection, links: MediaLinks, rq: dict[str, Any]
    ) -> np.ndarray:
        """Sorted row ids of the media of the records matching ``rq``: every linked media
        record for a query without conditions (no record row id is read), else those of the
        matching records' row ids."""
        where, params = compile_where("records", rq, alias="r")
        if where == "TRUE":
            return links.linked()
        found = con.sql(
            f"SELECT r.rowid AS record_rid FROM records AS r WHERE {where}", params=params
        ).fetchnumpy()
        # A scan on several threads gives its rows in any order.
        rids = np.array(found["record_rid"], dtype=np.int64)
        rids.sort()
        return links.media_of(rids)

    def _media_key(self, signature: tuple[Any, ...], rq: dict[str, Any]) -> tuple[Any, ...]:
        where, params = compile_where("records", rq, alias="r")
        return (signature, where, json.dumps(params, default=str))

    def _keep_media_rowids(
        self, signature: tuple[Any, ...], rq: dict[str, Any], media: np.ndarray
    ) -> None:
        self._media_rows.put(self._media_key(signature, rq), media)

    def _media_rowids(
        self, con: duckdb.DuckDBPyConnection, signature: tuple[Any, ...] | None, rq: dict[str, Any]
    ) -> np.ndarray | None:
        """Sorted row ids of the media of the records matching ``rq`` (kept from this
        request's tally when it came first), or None when the links cannot say."""
        if signature is None:
            return None
        key = self._media_key(signature, rq)
        kept = self._media_rows.get(key)
        if kept is not None:
            return cast(np.ndarray, kept)
        links = self._media_links(con, signature)
        if links is None:
            return None
        media = self._linked_media(con, links, rq)
        self._media_rows.put(key, media)
        return media

    def warm(self) -> None:
        """Read what the first request would otherwise wait for: the data version and the
        media links of the store's current state (serve and each worker call this at
        start, off their hot paths)."""
        signature = self._signature()
        self.data_version()
        if signature[0] is None:
            return
        try:
            with self._connection() as con:
                self._media_links(con, signature)
        except (_Missing, SourceUnavailable):
            pass

    def count(self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None) -> int:
        """How many ``rtype`` documents match."""
        return sum(self._tally(rtype, rq, mq).values())

    def counts(self, rq: dict[str, Any] | None, mq: dict[str, Any] | None) -> tuple[int, int]:
        """(records, media records) matching, on one connection: records matching ``rq``
        (having media matching ``mq`` when given) and media of records matching ``rq``
        (matching ``mq``)."""
        r_where, r_params = compile_request_where("records", rq, mq)
        m_where, m_params = compile_request_where("mediarecords", rq, mq)
        rows = self._query(
            f"SELECT (SELECT count(*) FROM records AS r WHERE {r_where}), "
            f"(SELECT count(*) FROM mediarecords AS m WHERE {m_where})",
            [*r_params, *m_params],
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def recordset_counts(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> dict[str, int]:
        """Matching document counts per recordset id."""
        return {k: v for k, v in self._tally(rtype, rq, mq).items() if k is not None}

    def raw_terms(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> list[str]:
        """Sorted verbatim term names published by the recordsets of the matching documents
        (from the per-recordset term lists ingest keeps, so no record is read)."""
        column = "record_terms" if rtype == "records" else "media_terms"
        if not rq and not mq:
            rows = self._query(f"SELECT DISTINCT unnest({column}) AS t FROM recordsets ORDER BY t")
            return [str(r[0]) for r in rows if r[0] is not None]
        matching = self.recordset_counts(rtype, rq, mq)
        if not matching:
            return []
        rows = self._query(
            f"SELECT DISTINCT unnest({column}) AS t FROM recordsets "
            "WHERE list_contains(?, recordset) ORDER BY t",
            [sorted(matching)],
        )
        return [str(r[0]) for r in rows if r[0] is not None]

    def _select(
        self, rtype: RecordType, fields: Sequence[str], raw_terms: Sequence[str], split: bool
    ) -> tuple[str, str]:
        """(outer select list, inner select list): the inner query reads the index columns
        and ``data``; the outer one names them. With ``split`` ``data`` is read as text
        (column :data:`_RAW`) for :func:`verbatim.expand` to split on the reader thread;
        without, a single ``json_transform`` per row turns it into one struct of the
        requested terms (one ``json_extract_string`` per term would parse the JSON once per
        term), unnested into one column per term."""
        a = _ALIAS[rtype]
        inner = [f'{a}."uuid" AS coreid' if rtype == "records" else f'{a}."coreid" AS coreid']
        outer = ["coreid"]
        for i, name in enumerate(fields):
            if get_field(rtype, name) is None:
                raise ValueError(f"{name!r} is not a {rtype} field")
            inner.append(f"{a}.{_ident(name)} AS _f{i}")
            outer.append(f"_f{i} AS {_ident(name)}")
        if raw_terms and split:
            inner.append(f"CAST({a}.data AS VARCHAR) AS {_RAW}")
            outer.append(_RAW)
        elif raw_terms:
            shape = json.dumps({term: "VARCHAR" for term in raw_terms})
            inner.append(f"json_transform({a}.data, {_sql_string(shape)}) AS _raw")
            outer.extend(f"_raw[{_sql_string(term)}] AS {_ident(term)}" for term in raw_terms)
        return ", ".join(outer), ", ".join(inner)

    def batches(
        self,
        rtype: RecordType,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
        *,
        fields: Sequence[str] = (),
        raw_terms: Sequence[str] = (),
        batch_size: int = 10_000,
    ) -> Iterator[pa.RecordBatch]:
        """Matching documents as Arrow batches in the store's row order (see
        ``RecordSource``): the same rows in the same order for the same data version.

        Each window streams one unsorted query in row id order (see :class:`_Reads` and
        :class:`_SlicePlan`), so memory stays flat whatever the result size and no query
        sorts the whole result. The connection is released when an ingest waits for the
        file (after ``window_seconds``; after ``hold_seconds`` in any case) and the stream
        resumes after the last row id handed out; :class:`SourceUnavailable` if the store
        file changed in between (row ids are only stable while the file is).
        """
        rq, mq = media_of_recordsets(rtype, rq, mq)
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb-read") as pool,
            ThreadPoolExecutor(
                max_workers=_SPLITTERS, thread_name_prefix="duckdb-split"
            ) as splitters,
        ):
            yield from self._batches(pool, splitters, rtype, rq, mq, fields, raw_terms, batch_size)

    def _plan(
        self,
        rtype: RecordType,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
        where: str,
        params: Sequence[Any],
    ) -> _SlicePlan:
        # compile_request_where joins the other table exactly in these cases.
        cross = mq is not None if rtype == "records" else rq is not None
        plan = _SlicePlan(rtype, where, params, cross=cross, shared=self._blocks)
        if rtype == "mediarecords" and rq is not None and mq is None:
            # The media of the records matching rq: their row ids from the in-memory links
            # (kept from this build's tally) instead of a join over every media record.
            records_query = rq

            def linked(con: duckdb.DuckDBPyConnection) -> np.ndarray | None:
                return self._media_rowids(con, plan.signature, records_query)

            plan.matches = linked
        return plan

    def _batches(  # noqa: C901  (one window loop, read top to bottom: open, check the store, read ahead, hand out, give the file back)
        self,
        pool: ThreadPoolExecutor,
        splitters: ThreadPoolExecutor,
        rtype: RecordType,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
        fields: Sequence[str],
        raw_terms: Sequence[str],
        batch_size: int,
    ) -> Iterator[pa.RecordBatch]:
        split = bool(raw_terms) and verbatim.USE_C
        outer, inner = self._select(rtype, fields, raw_terms, split)
        where, where_params = compile_request_where(rtype, rq, mq)
        plan = self._plan(rtype, rq, mq, where, where_params)
        reads = _Reads(rtype, outer, inner, where, where_params, plan, batch_size)

        def read(rows: Iterator[tuple[pa.Table | pa.RecordBatch, int]]) -> _Read | None:
            # On the helper thread: the next rows; their verbatim terms are split out on
            # the splitters meanwhile, so the reader goes on reading.
            item = next(rows, None)
            if item is None or not split:
                return item
            return splitters.submit(verbatim.expand, item[0], _RAW, raw_terms), item[1]

        signature: tuple[Any, ...] | None = None
        version: str | None = None
        pos = 0  # every row id below this has been handed out (or does not match)
        while version is None or pos < plan.end:
            try:
                con = self._open(read_config=True)
            except _Missing:
                return
            rows = reads.window(con, pos)
            # Reads queued on the helper thread, oldest first. A single worker runs them in
            # order, so this is a read-ahead of up to _READ_AHEAD items.
            pending: deque[Future[_Read | None]] = deque()
            carry: list[_Rows] = []
            try:
                current_signature = self._signature()
                current_version = self._read_version(con)
                plan.signature = current_signature if current_signature[0] is not None else None
                if version is None:
                    version, signature = current_version, current_signature
                    top = con.execute(f"SELECT max(rowid) FROM {_TABLE[rtype]}").fetchall()
                    if not top or top[0][0] is None:
                        return
                    plan.end = int(top[0][0]) + 1
                elif current_version != version or current_signature != signature:
                    raise SourceUnavailable(
                        "the record store changed while the records were being read; "
                        "the build will be retried on the new data"
                    )
                started = time.monotonic()
                # The next rows are read (and their verbatim terms split out) on a helper
                # thread (DuckDB and the splitter release the GIL) while
                # the consumer turns these into cells: reading and writing overlap. DuckDB
                # computes several batches at once and then hands them out for free, so one
                # read ahead would leave the reader idle while the consumer takes the free
                # ones; a few keep it busy.
                while len(pending) < _READ_AHEAD:
                    pending.append(pool.submit(read, rows))
                window_over = False
                while pending:
                    item = pending.popleft().result()
                    if item is None:
                        pos = plan.end
                        break
                    got, pos = item
                    if window_over or self._held_long_enough(started):
                        # The window is over: no new read; the rows read so far (these and
                        # the reads still ahead) are handed out after the file is released,
                        # and the next window resumes after them.
                        window_over = True
                        carry.append(got)
                        continue
                    pending.append(pool.submit(read, rows))
                    yield from _without_rowid(_resolved(got), batch_size)
            except duckdb.CatalogException:
                return
            except duckdb.Error as exc:
                raise SourceUnavailable(f"record store query failed: {exc}") from exc
            finally:
                # The consumer stopped early (or a read failed): let the reads in flight end
                # before closing.
                for left in pending:
                    with suppress(Exception):
                        left.result()
                rows.close()
                con.close()
            for got in carry:
                try:
                    table = _resolved(got)
                except duckdb.Error as exc:
                    raise SourceUnavailable(f"record store query failed: {exc}") from exc
                yield from _without_rowid(table, batch_size)

    def unique_values(
        self,
        field: str,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
    ) -> Iterator[pa.RecordBatch]:
        """Distinct non-empty values of a record field with their counts, ordered by value
        (list fields count each item)."""
        f = get_field("records", field)
        if f is None:
            raise ValueError(f"{field!r} is not a records field")
        where, params = compile_request_where("records", rq, mq)
        col = f"r.{_ident(field)}"
        value = f"unnest({col})" if f.kind == "list" else col
        sql = (
            f"SELECT value, count(*) AS count FROM (SELECT {value} AS value FROM records AS r "
            f"WHERE {where}) WHERE value IS NOT NULL "
            "AND (typeof(value) <> 'VARCHAR' OR CAST(value AS VARCHAR) <> '') "
            "GROUP BY value ORDER BY value"
        )
        try:
            with self._connection() as con:
                table = con.sql(sql, params=params).to_arrow_table()
        except _Missing:
            return
        yield from table.to_batches()

    # --- beyond the protocol ------------------------------------------------------------------

    def total_records(self) -> int:
        """How many records the store holds."""
        rows = self._query("SELECT count(*) FROM records")
        return int(rows[0][0]) if rows else 0

    def recordsets(self) -> list[RecordsetInfo]:
        """Every recordset with its current version, ordered by id."""
        rows = self._query(
            "SELECT recordset, version, name, source, ingested_at, record_count, media_count "
            "FROM recordsets ORDER BY recordset"
        )
        return [
            RecordsetInfo(
                recordset=r[0],
                version=int(r[1]),
                name=r[2] or "",
                source=r[3] or "",
                ingested_at=r[4],
                record_count=int(r[5]),
                media_count=int(r[6]),
            )
            for r in rows
        ]

    def extension_files(
        self, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> list[ExtensionFile]:
        """The verbatim extensions (other than media) that the recordsets of the matching
        records were published with, one per rowType, with every term any of them uses."""
        matching = self.recordset_counts("records", rq, mq)
        if not matching:
            return []
        rows = self._query(
            "SELECT rowtype, min(file), list_sort(list_distinct(flatten(list(terms)))) "
            "FROM extension_files WHERE list_contains(?, recordset) "
            "GROUP BY rowtype ORDER BY rowtype",
            [sorted(matching)],
        )
        return [ExtensionFile(row_type=r[0], name=r[1], terms=list(r[2] or [])) for r in rows]

    def extension_batches(
        self,
        extension: ExtensionFile,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
        *,
        batch_size: int = 10_000,
    ) -> Iterator[pa.RecordBatch]:
        """The extension's rows that belong to the matching records, as batches of
        (record uuid, one string column per term), ordered by record and then as
        published: the same rows in the same order for the same data version."""
        where, params = compile_request_where("records", rq, mq)
        a = _ALIAS["records"]
        shape = json.dumps(dict.fromkeys(extension.terms, "VARCHAR"))
        columns = ", ".join(f"_x[{_sql_string(t)}]" for t in extension.terms)
        sql = (
            f"SELECT coreid, {columns} FROM (SELECT e.coreid, e.recordset, e.position, "
            f"json_transform(e.data, {_sql_string(shape)}) AS _x FROM extension_rows AS e "
            f"WHERE e.rowtype = ? AND e.coreid IN (SELECT {a}.uuid FROM records AS {a} "
            f"WHERE {where})) ORDER BY coreid, recordset, position"
        )
        if not extension.terms:
            return
        try:
            con = self._open()
        except _Missing:
            return
        try:
            reader = con.sql(sql, params=[extension.row_type, *params]).to_arrow_reader(batch_size)
            for batch in reader:
                yield pa.RecordBatch.from_arrays(
                    [column.cast(pa.string()) for column in batch.columns],
                    names=["coreid", *extension.terms],
                )
        except duckdb.Error as exc:
            raise SourceUnavailable(f"record store query failed: {exc}") from exc
        finally:
            con.close()

    def recordset_eml(self, recordset: str) -> str | None:
        """The EML document the recordset's archive carried, if any."""
        rows = self._query("SELECT eml FROM recordsets WHERE recordset = ?", [recordset])
        return rows[0][0] if rows else None

    def deleted_records(self, *, since: datetime | None = None) -> list[DeletedRecord]:
        """Records and media records removed by re-ingests (after ``since`` when given)."""
        sql = "SELECT uuid, recordset, deleted_at, rtype FROM deleted_records"
        params: list[Any] = []
        if since is not None:
            sql += " WHERE deleted_at > ?"
            params.append(since)
        rows = self._query(sql + " ORDER BY deleted_at, uuid", params)
        return [DeletedRecord(uuid=r[0], recordset=r[1], deleted_at=r[2], rtype=r[3]) for r in rows]
