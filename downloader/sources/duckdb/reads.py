"""How a batch stream of :class:`~downloader.sources.duckdb.source.DuckDBSource` reads rows.

A stream reads in row id order and resumes after the last row id it handed out, so each
window of it (one short-lived read-only connection) is a range of row ids. :class:`_Reads`
holds a stream's queries and streams a window's rows with one unsorted query, checking that
they come in row id order and falling back to sorted slices when they do not;
:class:`_SlicePlan` decides which row ids each query reads (the whole rest of the table,
blocks of row ids matching a filter on the other table, or slices), and :class:`_Recent`
keeps the matching row ids of recent blocks so the streams of one source share them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import duckdb
import numpy as np
import pyarrow as pa

from query.fields import RecordType

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

# Matches in a block at or under which a filter on the table itself is also read through
# its matching row ids (a semi join with them) instead of a filtered scan: a filtered scan
# reads every column of every row before filtering (DuckDB pushes no list_contains or IN
# list into the scan), so a few hundred catalogue numbers out of 1M records took ~2 s per
# file, while finding their row ids reads one column and the semi join reads only the row
# groups between the first and the last match (DuckDB's dynamic join filter). The row ids
# are shared by the streams of one source, so the two files of records read them once.
_FEW_MATCHES = 10_240

#: Name under which a slice's matching row ids are registered for a semi join.
_PICKED = "_picked_rowids"


def _nonempty(table: pa.Table, batch_size: int) -> Iterator[pa.RecordBatch]:
    for batch in table.to_batches(max_chunksize=batch_size):
        if batch.num_rows:
            yield batch


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
        # Every matching row id at once, sorted (the media of matching records, from the
        # source's in-memory links), or None: then the blocks are found with SQL.
        self.matches: Callable[[duckdb.DuckDBPyConnection], np.ndarray | None] | None = None
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
            every = None if self.matches is None else self.matches(con)
            if every is not None:
                rids = every[np.searchsorted(every, lo) : np.searchsorted(every, hi)]
            else:
                rids = self._found(con, lo, hi)
            self._current = (lo, hi, rids)
        return hi, rids

    def _found(self, con: duckdb.DuckDBPyConnection, lo: int, hi: int) -> np.ndarray:
        """The matching row ids in ``[lo, hi)``, found with SQL (or shared by a stream before)."""
        key = (self.signature, self._select, json.dumps(self._params, default=str), lo, hi)
        cached = None if self._shared is None else self._shared.get(key)
        if cached is not None:
            return cast(np.ndarray, cached)
        found = con.sql(self._select, params=[lo, hi, *self._params]).fetchnumpy()
        rids = np.asarray(found["rid"], dtype=np.int64)
        # A filter on the table itself keeps its row ids only when they are few
        # (see _FEW_MATCHES); a longer list is never read by a semi join.
        shared = self._cross or rids.size <= _FEW_MATCHES
        if self._shared is not None and shared and self.signature is not None:
            self._shared.put(key, rids)
        return rids

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
            # A semi join with the slice's matches, as the streamed read does: also for a
            # filter on the table itself when its block has few matches (a filtered scan
            # reads every column of every row in the slice, see _FEW_MATCHES: 100 ms for
            # the verbatim file of 300 catalogue numbers at 1M records, against 5 ms).
            few = rids.size <= _FEW_MATCHES
            return pos, stop, (part if self._cross or few else None)
        return None

    def segments(
        self, con: duckdb.DuckDBPyConnection, pos: int
    ) -> Iterator[tuple[int, int, np.ndarray | None]]:
        """``(lo, hi, picked)`` for streamed reads from ``pos``: the rest of the table in
        one piece, or with a filter on the other table, one piece per block with its
        matching row ids from ``pos`` on. A filter on the table itself is read the same way
        while its blocks have at most :data:`_FEW_MATCHES` matches; from the first block
        with more, the rest of the table is one filtered piece."""
        if not self._filtered:
            if pos < self.end:
                yield pos, self.end, None
            return
        while pos < self.end:
            hi, rids = self._block(con, pos)
            if not self._cross and rids.size > _FEW_MATCHES:
                yield pos, self.end, None
                return
            first = int(np.searchsorted(rids, pos))
            if first < rids.size:
                yield pos, hi, rids[first:]
            pos = hi


def _without_rowid(rows: pa.Table | pa.RecordBatch, batch_size: int) -> Iterator[pa.RecordBatch]:
    table = pa.Table.from_batches([rows]) if isinstance(rows, pa.RecordBatch) else rows
    for batch in _nonempty(table, batch_size):
        yield batch.drop_columns(["_rowid"])


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
