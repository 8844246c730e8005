"""The links from media records to their records, held in memory as row ids.

"The media of the records matching ``rq``" is the commonest filter on the other table: every
download by a records query has a media file. In SQL it is a join of every media record's
``coreid`` with the uuids of the matching records, so even a download of one record (or of
none) scanned and hashed all the media: ~190 ms at 1M records on one thread, for the count at
submission and again for the build. :class:`MediaLinks` reads that join once per state of the
store file (~0.2-0.5 s at 1M records) and keeps, for each media row id, its parent record's row
id and its recordset; then the media of any set of record row ids, and their tally by
recordset, are numpy operations of a few milliseconds.

Memory: 6 bytes per media record (an int32 parent row id, an int16 recordset code; int64 and
int32 only where a store outgrows those), 4 MB at 1M records with 667k media (8 bytes each
while they are read). Stores whose
media outnumber :data:`MAX_MEDIA` keep using SQL. A ``coreid`` that names two records (a uuid
is unique, so only a damaged store has one) also leaves the SQL in charge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

#: Media records up to which the links are kept in memory (96 MB while they are read,
#: 96 MB kept at most).
MAX_MEDIA = 16_000_000

#: Media row ids joined with the records per query while the links are read: a MAX_SCANS-th
#: of them, at least READ_CHUNK and at most MAX_CHUNK. Each query scans every record (DuckDB
#: hashes the chunk's media and streams the records past it), so the fixed chunk of before
#: made the read grow with the square of the store: 26 scans and 4-9 s at 5M records (it
#: would take minutes at the 16M media of MAX_MEDIA); four scans take 1.5 s there, with the
#: same peak memory. A chunk of a million media was joined within a 48 MB memory limit.
READ_CHUNK = 131_072
MAX_CHUNK = 1_048_576
MAX_SCANS = 4

#: Rows of a chunk's answer converted at a time.
READ_BATCH = 131_072

#: Parent row id of a media record without a record in the store, and of a row id no media
#: record has (a gap left by a re-ingest).
NO_PARENT = -1


def _take(
    rows: pa.RecordBatch, parent: np.ndarray, codes: np.ndarray, names: dict[str | None, int]
) -> None:
    """Put a batch of the join's rows (``mid``, ``rid``, ``recordset``) in ``parent`` and
    ``codes``, coding new recordsets in ``names``."""
    mid = rows.column("mid").to_numpy()
    parent[mid] = rows.column("rid").to_numpy()
    encoded = pc.dictionary_encode(rows.column("recordset"))
    local = [names.setdefault(v, len(names)) for v in encoded.dictionary.to_pylist()]
    # Media without a recordset get the code of None.
    none_code = names.setdefault(None, len(names))
    indices = encoded.indices.fill_null(len(local)).to_numpy(zero_copy_only=False)
    codes[mid] = np.asarray([*local, none_code], dtype=np.int32)[indices]


@dataclass(frozen=True)
class MediaLinks:
    """For each media row id, its parent record's row id and its recordset's code."""

    parent: np.ndarray
    codes: np.ndarray
    recordsets: tuple[str | None, ...]
    #: One past the largest parent row id.
    parents_end: int

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection) -> MediaLinks | None:
        """The links of the store ``con`` reads, or None where SQL must stay in charge
        (too many media, a ``coreid`` matching two records, or a join that did not fit in
        the connection's memory limit).

        The join runs over a chunk of media row ids at a time (see :data:`MAX_SCANS`), so
        DuckDB hashes a chunk of media and streams the records past it: at 1M records the
        whole join at once raised the process's peak RSS by ~180 MB, in chunks by ~90 MB,
        in 0.25 s; at 5M records by ~180 MB in 1.5 s."""
        top = con.execute("SELECT count(*), max(rowid) FROM mediarecords").fetchall()
        count, last = top[0] if top else (0, None)
        if not count or last is None:
            return cls(np.full(0, NO_PARENT, np.int32), np.zeros(0, np.int16), (), 0)
        if count > MAX_MEDIA:
            return None
        size = int(last) + 1
        records_top = con.execute("SELECT max(rowid) FROM records").fetchall()
        wide = bool(records_top) and int(records_top[0][0] or 0) >= 2**31 - 1
        parent = np.full(size, NO_PARENT, dtype=np.int64 if wide else np.int32)
        codes = np.zeros(size, dtype=np.int32)
        names: dict[str | None, int] = {}
        seen = 0
        chunk = min(max(READ_CHUNK, -(-size // MAX_SCANS)), MAX_CHUNK)
        try:
            for lo in range(0, size, chunk):
                # Streamed: the rows of a chunk of a million media are ~40 MB as one table.
                reader = con.sql(
                    "SELECT m.mid, coalesce(r.rowid, -1) AS rid, m.recordset FROM "
                    "(SELECT rowid AS mid, coreid, recordset FROM mediarecords "
                    "WHERE rowid >= ? AND rowid < ?) AS m "
                    "LEFT JOIN records AS r ON r.uuid = m.coreid",
                    params=[lo, lo + chunk],
                ).to_arrow_reader(READ_BATCH)
                try:
                    for rows in reader:
                        seen += rows.num_rows
                        _take(rows, parent, codes, names)
                finally:
                    reader.close()  # the connection takes no other query while it is open
        except duckdb.OutOfMemoryException:
            # The join of a chunk did not fit the connection's memory limit: SQL in charge.
            log.warning("the media links did not fit in memory; media are joined by SQL")
            return None
        if seen != count:
            return None  # a coreid matching two records: the join repeated its media record
        recordsets = tuple(sorted(names, key=names.__getitem__))
        parents_end = int(parent.max()) + 1
        code_type = np.int16 if len(recordsets) < 2**15 else np.int32
        return cls(parent, codes.astype(code_type), recordsets, max(parents_end, 0))

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return int(self.parent.nbytes + self.codes.nbytes)

    def _rowids(self, keep: np.ndarray) -> np.ndarray:
        # int32 where media row ids fit (half the memory of a large result's row ids).
        found = np.flatnonzero(keep)
        return found.astype(np.int32) if self.parent.size < 2**31 else found

    def linked(self) -> np.ndarray:
        """The sorted row ids of every media record that has a parent record."""
        return self._rowids(self.parent >= 0)

    def media_of(self, record_rowids: np.ndarray) -> np.ndarray:
        """The sorted row ids of the media records whose parent is one of the sorted
        ``record_rowids``."""
        if record_rowids.size == 0 or self.parent.size == 0:
            return np.zeros(0, dtype=np.int32)
        top = max(int(record_rowids[-1]) + 1, self.parents_end)
        chosen = np.zeros(top, dtype=bool)
        chosen[record_rowids] = True
        linked = self.parent >= 0
        keep = np.zeros(self.parent.size, dtype=bool)
        keep[linked] = chosen[self.parent[linked]]
        return self._rowids(keep)

    def tally(self, media_rowids: np.ndarray) -> dict[str | None, int]:
        """How many of ``media_rowids`` each recordset holds (recordsets with none left out)."""
        counts = np.bincount(self.codes[media_rowids], minlength=len(self.recordsets))
        return {self.recordsets[i]: int(n) for i, n in enumerate(counts) if n}
