"""The embedded record source: the DuckDB file ``<data-dir>/records.duckdb``.

Written by ``downloader ingest`` (:mod:`downloader.ingest`), read here by
:class:`DuckDBSource` (a ``RecordSource``) while an ingest may be writing: every operation
uses a short-lived read-only connection (parked for a second for the next one, and given up
at once when an ingest waits), a long stream of batches gives the file back every few
seconds and stops with :class:`~downloader.errors.SourceUnavailable` if the data
changed in between, and every DuckDB error becomes ``SourceUnavailable`` at this edge.

- :mod:`.source`: :class:`DuckDBSource` (connections, counts, terms, the batch stream's
  windows) and what it lists (:class:`RecordsetInfo`, :class:`DeletedRecord`).
- :mod:`.reads`: how a batch stream reads its rows, window by window, in row id order.
- :mod:`.verbatim`: verbatim terms split out of ``data`` for a stream, in C where built.
- :mod:`.links`: the media-to-record links in memory (the media of matching records).
- :mod:`.idle`: read connections parked between operations, and the writer's marker.
"""

from downloader.sources.duckdb.source import (
    DeletedRecord,
    DuckDBSource,
    ExtensionFile,
    RecordsetInfo,
)

__all__ = ["DeletedRecord", "DuckDBSource", "ExtensionFile", "RecordsetInfo"]
