"""Loading the search cluster from the embedded store (:func:`export_store`): what
``downloader ingest --target elasticsearch`` does after deriving the records into the DuckDB
store, so both sources hold the same values."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from downloader.sources.duckdb.dump import StoreDump
from downloader.sources.elasticsearch import (
    ElasticsearchSource,
    ElasticsearchWriter,
    document_from_row,
)


def export_store(
    store_file: str | Path,
    source: ElasticsearchSource,
    *,
    recordsets: Sequence[str] | None = None,
    on_recordset: Callable[[str, int, int], None] | None = None,
) -> str:
    """Copy recordsets (all by default) from the DuckDB store into the indices.

    ``downloader ingest --target elasticsearch`` derives index fields exactly as for the
    embedded store (by ingesting into it) and then calls this, so both sources hold the
    same values. Returns the new data version.
    """
    writer = ElasticsearchWriter(source)
    writer.ensure_indices()
    with StoreDump(store_file) as dump:
        for rs_row in dump.recordsets():
            rs = rs_row["recordset"]
            if recordsets is not None and rs not in recordsets:
                continue
            n_records, n_media = writer.replace_recordset(
                rs_row,
                (document_from_row(row) for row in dump.rows("records", rs)),
                (document_from_row(row) for row in dump.rows("mediarecords", rs)),
                extension_files=dump.extension_files(rs),
                extension_rows=dump.extension_rows(rs),
            )
            if on_recordset:
                on_recordset(rs, n_records, n_media)
    return writer.bump_data_version()
