"""The embedded record source: the DuckDB file ``<data-dir>/records.duckdb``.

Written by ``downloader ingest`` (:mod:`downloader.ingest`), read here. The service runs
several worker processes that read while an ingest may be writing, and DuckDB lets one
process write only when no other process has the file open. So every operation opens its
own short-lived read-only connection and closes it, and a long stream of batches gives the
file back every few seconds (it reads in row id order and resumes after the last row id it
sent). A stream notices when the data (or the file) changed in between and stops with
:class:`SourceUnavailable` (the build is retried on the new data rather than mixing two
versions). While an ingest holds the file, opening is
retried for ``lock_timeout`` seconds, then :class:`SourceUnavailable` is raised.

A store file that does not exist yet is an empty store (``data_version`` "0"). All DuckDB
errors become :class:`SourceUnavailable` here, at the edge.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias

import duckdb
import numpy as np
import pyarrow as pa

from downloader.errors import SourceUnavailable
from downloader.sources import verbatim
from query.fields import RecordType, get_field
from query.sql import compile_request_where

_TABLE = {"records": "records AS r", "mediarecords": "mediarecords AS m"}
_ALIAS = {"records": "r", "mediarecords": "m"}

# Row ids per query when a stream is read in sorted slices (the fallback, see _Reads).
# DuckDB skips the data outside a row id range, so a slice reads and sorts at most this many
# rows: small enough that a slice of wide rows (all fields and all verbatim terms) stays
# well inside the read memory limit, large enough that per-query costs stay small (10,240
# was the fastest of 4,096 / 10,240 / 30,720).
_SLICE_ROWS = 10_240

# Row ids whose matches a filtered stream looks up in one query (see _SlicePlan): 8 MB of
# matching row ids at most, and one join over the other table per million rows.
_BLOCK_ROWS = 1_048_576

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

# Per-recordset tallies of requests a source keeps (see DuckDBSource._tally).
_TALLIES = 32

# Threads that split verbatim terms out of ``data`` while the reader reads on: the split
# of a verbatim file's batch takes longer than DuckDB's read of it, so with one thread the
# verbatim files were bound by it.
_SPLITTERS = 2


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


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("could not set" in text or "conflicting" in text)


def _nonempty(table: pa.Table, batch_size: int) -> Iterator[pa.RecordBatch]:
    for batch in table.to_batches(max_chunksize=batch_size):
        if batch.num_rows:
            yield batch


#: The column in which a stream reads ``data`` as text for :func:`verbatim.expand`.
_RAW = "_raw_json"

#: Name under which a slice's matching row ids are registered for a semi join.
_PICKED = "_picked_rowids"


class _Recent:
    """The last ``size`` values put, by key; safe to share between threads."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any:
        with self._lock:
            return self._items.get(key)

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                del self._items[next(iter(self._items))]


class _SlicePlan:
    """Which row ids each query of a batch stream reads.

    Streamed reads (:meth:`segments`) read the rest of the table in one query, applying the
    filter there, except when the filter refers to the other table (media of records
    matching ``rq``, records with media matching ``mq``): such a filter is a join over that
    whole table, so the matching row ids are found once per block of :data:`_BLOCK_ROWS`
    row ids (8 bytes per match held) and each block is read by a semi join with them.

    Sorted slices (:meth:`next_slice`, the fallback) are at most :data:`_SLICE_ROWS` row
    ids without a filter, and the next :data:`_SLICE_ROWS` matches of a block with one, so
    a selective query reads as few slices as a full one; a filter on the other table is
    again a semi join with the slice's row ids. The row ids stay valid across windows
    because the stream stops when the store file changes.
    """

    def __init__(
        self,
        rtype: RecordType,
        where: str,
        params: Sequence[Any],
        *,
        cross: bool,
        shared: _Recent | None = None,
    ) -> None:
        self.end = 0  # one past the largest row id, set when the stream starts
        # The store file's signature while a window reads (set by the stream), and blocks'
        # matching row ids shared by the streams of one source under it: an archive's
        # indexed and verbatim media files read the same blocks one after the other.
        self.signature: tuple[Any, ...] | None = None
        self._shared = shared
        self._filtered = where.strip() != "TRUE"
        self._cross = cross
        table, a = _TABLE[rtype], _ALIAS[rtype]
        self._select = (
            f"SELECT {a}.rowid AS rid FROM {table} "
            f"WHERE {a}.rowid >= ? AND {a}.rowid < ? AND ({where}) ORDER BY rid"
        )
        self._params = list(params)
        self._current: tuple[int, int, np.ndarray] = (0, 0, np.zeros(0, dtype=np.int64))

    def _block(self, con: duckdb.DuckDBPyConnection, pos: int) -> tuple[int, np.ndarray]:
        """(end, matching row ids) of the block of row ids holding ``pos``."""
        lo, hi, rids = self._current
        if not lo <= pos < hi:
            lo, hi = pos, min(pos + _BLOCK_ROWS, self.end)
            key = (self.signature, self._select, json.dumps(self._params, default=str), lo, hi)
            cached = None if self._shared is None else self._shared.get(key)
            if cached is not None:
                rids = cached
            else:
                found = con.sql(self._select, params=[lo, hi, *self._params]).fetchnumpy()
                rids = np.asarray(found["rid"], dtype=np.int64)
                if self._shared is not None and self._cross and self.signature is not None:
                    self._shared.put(key, rids)
            self._current = (lo, hi, rids)
        return hi, rids

    def next_slice(
        self, con: duckdb.DuckDBPyConnection, pos: int
    ) -> tuple[int, int, np.ndarray | None] | None:
        """``(lo, hi, picked)``: the next slice's row ids ``[lo, hi)`` from ``pos``, with
        the matching row ids to semi-join with when the filter refers to the other table
        (else None); None when no row is left."""
        if not self._filtered:
            return (pos, min(pos + _SLICE_ROWS, self.end), None) if pos < self.end else None
        while pos < self.end:
            hi, rids = self._block(con, pos)
            first = int(np.searchsorted(rids, pos))
            part = rids[first : first + _SLICE_ROWS]
            if part.size == 0:
                pos = hi
                continue
            stop = hi if first + _SLICE_ROWS >= rids.size else int(part[-1]) + 1
            return pos, stop, (part if self._cross else None)
        return None

    def segments(
        self, con: duckdb.DuckDBPyConnection, pos: int
    ) -> Iterator[tuple[int, int, np.ndarray | None]]:
        """``(lo, hi, picked)`` for streamed reads from ``pos``: the rest of the table in
        one piece, or with a filter on the other table, one piece per block with its
        matching row ids from ``pos`` on."""
        if not self._cross:
            if pos < self.end:
                yield pos, self.end, None
            return
        while pos < self.end:
            hi, rids = self._block(con, pos)
            first = int(np.searchsorted(rids, pos))
            if first < rids.size:
                yield pos, hi, rids[first:]
            pos = hi


def _without_rowid(rows: pa.Table | pa.RecordBatch, batch_size: int) -> Iterator[pa.RecordBatch]:
    table = pa.Table.from_batches([rows]) if isinstance(rows, pa.RecordBatch) else rows
    for batch in _nonempty(table, batch_size):
        yield batch.drop_columns(["_rowid"])


#: Rows read, or the verbatim split that will give them (see DuckDBSource._batches).
_Rows: TypeAlias = "pa.Table | pa.RecordBatch | Future[pa.Table]"
#: Rows with the row id to resume after them.
_Read: TypeAlias = "tuple[_Rows, int]"


def _resolved(rows: _Rows) -> pa.Table | pa.RecordBatch:
    return rows.result() if isinstance(rows, Future) else rows


def _keep_picked(batch: pa.RecordBatch, picked: np.ndarray) -> pa.RecordBatch:
    """The rows of ``batch`` whose row id (last column) is in the sorted ``picked``."""
    rowids = batch.column(batch.num_columns - 1).to_numpy()
    at = np.minimum(np.searchsorted(picked, rowids), picked.size - 1)
    keep = picked[at] == rowids
    return batch if keep.all() else batch.filter(pa.array(keep))


def _in_order(rowids: np.ndarray, after: int) -> bool:
    """Whether row ids are strictly increasing and all above ``after``."""
    return bool(rowids[0] > after and (rowids.size == 1 or np.all(rowids[1:] > rowids[:-1])))


class _Reads:
    """The queries of one batch stream and how a window of it reads rows.

    A window streams the rows with one query and no ORDER BY: with one thread and
    ``preserve_insertion_order`` DuckDB hands a scan's rows out in row id order, and a
    stream costs a fraction of a sorted query per slice (no sort, no per-query planning of
    a hundred columns). Each batch's row ids are checked; if DuckDB ever returns rows out of
    order (joins do not promise order) the rows not yet handed out are read again in
    slices of :data:`_SLICE_ROWS` sorted by row id, for the rest of the stream.
    """

    def __init__(
        self,
        rtype: RecordType,
        outer: str,
        inner: str,
        where: str,
        params: Sequence[Any],
        plan: _SlicePlan,
        batch_size: int,
    ) -> None:
        table, a = _TABLE[rtype], _ALIAS[rtype]
        head = f"SELECT {outer}, _rowid FROM (SELECT {inner}, {a}.rowid AS _rowid FROM {table}"
        self._range = f"{head} WHERE {a}.rowid >= ? AND {a}.rowid < ? AND ({where}))"
        self._every = f"{head} WHERE {a}.rowid >= ? AND {a}.rowid < ?)"
        self._picked_sql = (
            f"{head} SEMI JOIN {_PICKED} ON {a}.rowid = {_PICKED}.rid "
            f"WHERE {a}.rowid >= ? AND {a}.rowid < ?)"
        )
        self._params = list(params)
        self._plan = plan
        self._batch_size = max(1, batch_size)
        self.streamed = True

    def window(
        self, con: duckdb.DuckDBPyConnection, pos: int
    ) -> Generator[tuple[pa.Table | pa.RecordBatch, int], None, None]:
        """Rows from row id ``pos`` on, each time with the row id to resume after them."""
        if self.streamed:
            yield from self._streamed(con, pos)
        else:
            yield from self._sliced(con, pos)

    def _query(
        self, con: duckdb.DuckDBPyConnection, lo: int, hi: int, picked: np.ndarray | None, tail: str
    ) -> duckdb.DuckDBPyRelation:
        if picked is None:
            return con.sql(self._range + tail, params=[lo, hi, *self._params])
        return con.sql(self._picked_sql + tail, params=[lo, hi])

    @contextmanager
    def _picked(self, con: duckdb.DuckDBPyConnection, picked: np.ndarray | None) -> Iterator[None]:
        """``picked`` registered for :attr:`_picked_sql`'s semi join while in the block."""
        if picked is None:
            yield
            return
        con.register(_PICKED, pa.table({"rid": picked}))
        try:
            yield
        finally:
            con.unregister(_PICKED)

    def _streamed(
        self, con: duckdb.DuckDBPyConnection, pos: int
    ) -> Generator[tuple[pa.Table | pa.RecordBatch, int], None, None]:
        for lo, hi, picked in self._plan.segments(con, pos):
            last = lo - 1
            done = 0  # picked row ids handed out, when the segment has them
            # Where most row ids of the segment match, every row is scanned (in order, no
            # join) and the matching ones kept; a join over a memory-limited connection is
            # partitioned and returns rows far out of order.
            dense = picked if picked is not None and picked.size * 2 >= hi - picked[0] else None
            with self._picked(con, None if dense is not None else picked):
                if dense is not None:
                    query = con.sql(self._every, params=[int(dense[0]), hi])
                else:
                    query = self._query(con, lo, hi, picked, "")
                reader = query.to_arrow_reader(self._batch_size)
                try:
                    for batch in reader:
                        if batch.num_rows and dense is not None:
                            batch = _keep_picked(batch, dense)
                        if batch.num_rows == 0:
                            continue
                        rowids = batch.column(batch.num_columns - 1).to_numpy()
                        if picked is None:
                            ordered = _in_order(rowids, last)
                        else:
                            # A join may skip rows and return them later, so increasing
                            # row ids are not enough: each batch must be exactly the next
                            # matching row ids.
                            ordered = np.array_equal(rowids, picked[done : done + rowids.size])
                        if not ordered:
                            self.streamed = False
                            break
                        last = int(rowids[-1])
                        done += rowids.size
                        yield batch, last + 1
                finally:
                    # DuckDB takes no new query on the connection while a result is open.
                    reader.close()
            if not self.streamed:
                # Resume at the first row not handed out: every row id below it was.
                if picked is None:
                    resume = last + 1
                else:
                    resume = int(picked[done]) if done < picked.size else hi
                yield from self._sliced(con, resume)
                return

    def _sliced(
        self, con: duckdb.DuckDBPyConnection, pos: int
    ) -> Generator[tuple[pa.Table | pa.RecordBatch, int], None, None]:
        while (planned := self._plan.next_slice(con, pos)) is not None:
            lo, hi, picked = planned
            with self._picked(con, picked):
                rows = self._query(con, lo, hi, picked, " ORDER BY _rowid").to_arrow_table()
            pos = hi
            yield rows, hi


class _Missing(Exception):
    """The store file does not exist (an empty store)."""


class DuckDBSource:
    """Records and media records from the embedded DuckDB store (see ``RecordSource``)."""

    def __init__(
        self, path: str | Path, *, lock_timeout: float = 30.0, window_seconds: float = 2.0
    ) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self.window_seconds = window_seconds
        # (file signature, data_version) of the last read: data_version is asked for on
        # every submission and opening the file costs far more than a stat.
        self._version_cache: tuple[tuple[Any, ...], str] | None = None
        self._tallies = _Recent(_TALLIES)
        self._blocks = _Recent(_SHARED_BLOCKS)

    # --- connections --------------------------------------------------------------------

    def _signature(self) -> tuple[Any, ...]:
        """What identifies the file's current contents: (mtime_ns, size, inode) of the file
        and of its write-ahead log, if any. Any write changes it."""
        parts: list[Any] = []
        for p in (self.path, self.path.with_name(self.path.name + ".wal")):
            try:
                st = os.stat(p)
            except FileNotFoundError:
                parts.append(None)
                continue
            parts.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(parts)

    def _open(self, *, read_config: bool = False) -> duckdb.DuckDBPyConnection:
        if not self.path.exists():
            raise _Missing()
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.02
        config = dict(_READ_CONFIG if read_config else _QUERY_CONFIG)
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=True, config=config)
            except duckdb.Error as exc:
                if not _is_lock_error(exc) or time.monotonic() >= deadline:
                    raise SourceUnavailable(
                        f"the record store {self.path} cannot be opened: {exc}"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self._open()
        try:
            yield con
        except duckdb.CatalogException as exc:
            # A file created but never filled by ingest has no tables: an empty store.
            raise _Missing() from exc
        except duckdb.Error as exc:
            raise SourceUnavailable(f"record store query failed: {exc}") from exc
        finally:
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

    def _tally(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> dict[str | None, int]:
        """Matching ``rtype`` documents per recordset id, from one query per request and
        store state: a build asks for the count and then the per-recordset counts of the
        same request, and a filter on the other table (media of the records matching
        ``rq``) is a join over that table (0.2 s at 1M records). Cached on the file's
        signature, taken before the query, like :meth:`data_version`."""
        where, params = compile_request_where(rtype, rq, mq)
        signature = self._signature()
        key = (signature, rtype, where, json.dumps(list(params), default=str))
        cached: dict[str | None, int] | None = self._tallies.get(key)
        if cached is not None:
            return cached
        a = _ALIAS[rtype]
        rows = self._query(
            f"SELECT {a}.recordset, count(*) FROM {_TABLE[rtype]} WHERE {where} "
            f"GROUP BY {a}.recordset ORDER BY {a}.recordset",
            params,
        )
        tally = {None if k is None else str(k): int(v) for k, v in rows}
        if signature[0] is not None:
            self._tallies.put(key, tally)
        return tally

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
        sorts the whole result. The connection is released every ``window_seconds`` and the
        stream resumes after the last row id handed out; :class:`SourceUnavailable` if the
        store file changed in between (row ids are only stable while the file is).
        """
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb-read") as pool,
            ThreadPoolExecutor(
                max_workers=_SPLITTERS, thread_name_prefix="duckdb-split"
            ) as splitters,
        ):
            yield from self._batches(pool, splitters, rtype, rq, mq, fields, raw_terms, batch_size)

    def _batches(
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
        # compile_request_where joins the other table exactly in these cases.
        cross = mq is not None if rtype == "records" else rq is not None
        plan = _SlicePlan(rtype, where, where_params, cross=cross, shared=self._blocks)
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
                    if window_over or time.monotonic() - started > self.window_seconds:
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
