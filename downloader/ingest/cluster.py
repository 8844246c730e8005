"""Loading the search cluster from the embedded store (:func:`export_store`): what
``downloader ingest --target elasticsearch`` does after deriving the records into the DuckDB
store, so both sources hold the same values; and :func:`reindex_store`, ``downloader
reindex``: the indices filled or rebuilt from that store without new versions."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from downloader.sources.duckdb.dump import StoreDump
from downloader.sources.elasticsearch import (
    ElasticsearchSource,
    ElasticsearchWriter,
    document_from_row,
)
from query.fields import RecordType


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


#: Documents the index has and the store lacks are removed this many at a time.
REMOVE_CHUNK = 10_000


@dataclass
class ReindexCounts:
    """What :func:`reindex_store` did, per record type: documents written, already in the
    index as the store holds them (skipped), and removed (in the index, not in the store)."""

    written: dict[str, int] = field(default_factory=lambda: {"records": 0, "mediarecords": 0})
    skipped: dict[str, int] = field(default_factory=lambda: {"records": 0, "mediarecords": 0})
    removed: dict[str, int] = field(default_factory=lambda: {"records": 0, "mediarecords": 0})
    recordsets: int = 0
    data_version: str = ""
    new_data_version: bool = False


def reindex_store(
    store_file: str | Path,
    source: ElasticsearchSource,
    *,
    recordsets: Sequence[str] | None = None,
    on_recordset: Callable[[str, ReindexCounts], None] | None = None,
    chunk_size: int = 2_000,
) -> ReindexCounts:
    """Fill or rebuild the search indices from the embedded store without new versions.

    Unlike :func:`export_store` (a push after an ingest), nothing is versioned anew: every
    document keeps its recordset version and etag as the store holds them, so exports of
    those versions stay buildable and no one's download is told its data changed. The data
    version is written only when the indices have none (a fresh or emptied cluster) or when
    this run had to change what they served; a run over indices that already match the
    store writes nothing at all.

    Resumable by content, with no checkpoint file: the store's rows (by uuid) are merged
    with the index's documents of the same recordset (one sorted scroll of uuid, version
    and etag), so a document already indexed with the same version and etag is skipped,
    a missing or different one is written (``_id`` = uuid: never a duplicate), and a
    document of the recordset the store no longer has is removed. An interrupted run,
    started again, writes only what the first did not. Memory holds one batch of rows and
    one page of the index; writes are bulk requests of ``chunk_size`` documents, a busy
    cluster's 429 retried with back-off (:class:`ElasticsearchWriter`). The deletion log
    is copied too (the ``deleted.csv`` of sync downloads).
    """
    writer = ElasticsearchWriter(source, chunk_size=chunk_size)
    writer.ensure_indices()
    had_version = writer.has_data_version()
    counts = ReindexCounts()
    with StoreDump(store_file) as dump:
        for rs_row in dump.recordsets():
            rs = rs_row["recordset"]
            if recordsets is not None and rs not in recordsets:
                continue
            for rtype in ("records", "mediarecords"):
                _sync_rtype(writer, dump, rtype, rs, counts)
            # Extension rows are few beside the records and keyed by their place in the
            # file, so they are written again whole (idempotent) rather than compared.
            writer.replace_extension_rows(rs, rs_row["version"], dump.extension_rows(rs))
            writer.write_recordset(rs_row, extension_files=dump.extension_files(rs))
            counts.recordsets += 1
            if on_recordset:
                on_recordset(rs, counts)
        writer.log_deletions(dump.deletions())
    changed = any(counts.written.values()) or any(counts.removed.values())
    if changed or not had_version:
        counts.data_version = writer.bump_data_version()
        counts.new_data_version = True
    else:
        counts.data_version = source.data_version()
    return counts


def _sync_rtype(
    writer: ElasticsearchWriter,
    dump: StoreDump,
    rtype: RecordType,
    recordset: str,
    counts: ReindexCounts,
) -> None:
    """Bring one record type of one recordset in the index to what the store holds."""
    indexed = writer.indexed(rtype, recordset)
    removed: list[str] = []

    def changed_documents() -> Iterator[dict[str, Any]]:
        # A merge of two streams sorted by uuid (the store's rows, the index's documents).
        current = next(indexed, None)
        for row in dump.rows(rtype, recordset):
            doc = document_from_row(row)
            uuid = str(doc["uuid"])
            while current is not None and current[0] < uuid:
                removed.append(current[0])
                current = next(indexed, None)
            if len(removed) >= REMOVE_CHUNK:
                counts.removed[rtype] += writer.delete_documents(rtype, removed)
                removed.clear()
            if current is not None and current[0] == uuid:
                same = (current[1], current[2]) == (doc.get("version"), doc.get("etag"))
                current = next(indexed, None)
                if same:
                    counts.skipped[rtype] += 1
                    continue
            yield doc
        while current is not None:
            removed.append(current[0])
            current = next(indexed, None)

    counts.written[rtype] += writer.index_documents(rtype, changed_documents())
    if removed:
        counts.removed[rtype] += writer.delete_documents(rtype, removed)
