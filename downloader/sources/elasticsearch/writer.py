"""The index writer: :class:`ElasticsearchWriter` creates the indices from the field
catalogue and fills them (``downloader ingest --target elasticsearch``, through
:func:`~downloader.sources.elasticsearch.export.export_store`): a recordset's documents in
bulk, its documents of older versions dropped and noted in the deletion log, and a new
``data_version`` after every ingest."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

from elastic_transport import TransportError
from elasticsearch import ApiError, helpers

from downloader.errors import BuildFailed
from downloader.sources.elasticsearch.client import MAX_PAGE, call, translate
from downloader.sources.elasticsearch.source import META_ID, ElasticsearchSource, log_time
from query.fields import RecordType


def document_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """An index document from a row of the DuckDB store (the same derivation as the
    embedded store: this is how ``ingest --target elasticsearch`` fills the index)."""
    from query.mapping import to_es_document

    return to_es_document(row)


def _index_body(rtype: RecordType) -> dict[str, Any]:
    """The create-index body (settings and mappings) from the field catalogue."""
    from query.mapping import es_mapping

    return es_mapping(rtype)


RECORDSETS_MAPPING: dict[str, Any] = {
    "properties": {
        "recordset": {"type": "keyword"},
        "version": {"type": "long"},
        "name": {"type": "keyword"},
        "source": {"type": "keyword"},
        "ingested_at": {"type": "date"},
        "record_count": {"type": "long"},
        "media_count": {"type": "long"},
        "record_terms": {"type": "keyword"},
        "media_terms": {"type": "keyword"},
        # The EML is only ever read back whole; it is not searched.
        "eml": {"type": "object", "enabled": False},
        # The verbatim extensions the recordset was published with: rowtype, file, terms,
        # row_count each (read back whole for a download's extension files).
        "extensions": {"type": "object", "enabled": False},
    }
}


#: One document per row of a verbatim extension (Identification, MeasurementOrFact...),
#: found by the uuid of its record (``coreid``); ``data`` is read back whole, not searched.
EXTENSIONS_MAPPING: dict[str, Any] = {
    "properties": {
        "recordset": {"type": "keyword"},
        "version": {"type": "long"},
        "rowtype": {"type": "keyword"},
        "file": {"type": "keyword"},
        "coreid": {"type": "keyword"},
        "position": {"type": "long"},
        "data": {"type": "object", "enabled": False},
    }
}


META_MAPPING: dict[str, Any] = {
    "properties": {"data_version": {"type": "keyword"}, "updated": {"type": "date"}}
}


DELETED_MAPPING: dict[str, Any] = {
    "properties": {
        "uuid": {"type": "keyword"},
        "rtype": {"type": "keyword"},
        "recordset": {"type": "keyword"},
        "deleted": {"type": "date"},
    }
}


class ElasticsearchWriter:
    """Fills the indices from the embedded store's derivation (see :func:`export_store`)."""

    def __init__(self, source: ElasticsearchSource, *, chunk_size: int = 2_000) -> None:
        self.source = source
        self.es = source.es
        self.chunk_size = chunk_size

    def ensure_indices(self) -> None:
        """Create the indices that do not exist yet, with the catalogue's mappings."""
        wanted: list[tuple[str, dict[str, Any]]] = [
            (self.source.index("records"), _index_body("records")),
            (self.source.index("mediarecords"), _index_body("mediarecords")),
            (self.source.recordsets_index, {"mappings": RECORDSETS_MAPPING}),
            (self.source.meta_index, {"mappings": META_MAPPING}),
            (self.source.deleted_index, {"mappings": DELETED_MAPPING}),
            (self.source.extensions_index, {"mappings": EXTENSIONS_MAPPING}),
        ]
        for name, body in wanted:
            if call(f"checking index {name}", self.es.indices.exists, index=name):
                continue
            try:
                self.es.indices.create(
                    index=name, settings=body.get("settings"), mappings=body["mappings"]
                )
            except ApiError as exc:
                if "resource_already_exists" in str(exc.message):  # another ingest won the race
                    continue
                raise translate(exc, f"creating index {name}") from exc
            except TransportError as exc:
                raise translate(exc, f"creating index {name}") from exc

    def index_documents(self, rtype: RecordType, docs: Iterable[dict[str, Any]]) -> int:
        """Bulk-index documents (``_id`` = uuid); returns how many were written."""
        index = self.source.index(rtype)
        actions = ({"_index": index, "_id": d["uuid"], "_source": d} for d in docs)
        return self._bulk(index, actions)

    def _bulk(self, index: str, actions: Iterable[dict[str, Any]]) -> int:
        """Send bulk ``actions`` (index or delete) to ``index``; how many succeeded."""
        written = 0
        try:
            for ok, item in helpers.streaming_bulk(
                self.es,
                actions,
                chunk_size=self.chunk_size,
                # Bounded requests, and a busy cluster's 429s retried with back-off (1, 2,
                # 4 ... 60 s; about five minutes in all) before the ingest gives up.
                max_chunk_bytes=16 * 1024 * 1024,
                max_retries=8,
                initial_backoff=1,
                max_backoff=60,
                raise_on_error=False,
            ):
                if not ok:
                    if item.get("delete", {}).get("status") == 404:
                        continue  # already gone: what a delete wanted
                    raise BuildFailed(f"indexing into {index} failed: {item}")
                written += 1
        except (ApiError, TransportError) as exc:
            raise translate(exc, f"indexing into {index}") from exc
        return written

    def replace_recordset(
        self,
        recordset: dict[str, Any],
        records: Iterable[dict[str, Any]],
        media: Iterable[dict[str, Any]],
        *,
        extension_files: Sequence[dict[str, Any]] = (),
        extension_rows: Iterable[dict[str, Any]] = (),
        now: datetime | None = None,
    ) -> tuple[int, int]:
        """Index a recordset's documents, then drop its documents of older versions, noting
        each dropped uuid in the deletion log (``deleted`` = ``now``, default: the time of
        the push, when the index stopped serving them). ``extension_files`` (rowtype, file,
        terms, row_count) and ``extension_rows`` (rowtype, file, coreid, position, data)
        are the verbatim extensions the recordset's archive had; its older rows go."""
        rs, version = recordset["recordset"], recordset["version"]
        when = log_time(now or datetime.now(UTC))
        n_records = self.index_documents("records", records)
        n_media = self.index_documents("mediarecords", media)
        self.replace_extension_rows(rs, version, extension_rows, drop_stale=False)
        # Documents that were indexed again replaced their old copies under the same _id; a
        # refresh makes searches see the new copies, so that only documents the new version
        # lacks count as removed.
        call(
            f"refreshing the indices of {rs}",
            self.es.indices.refresh,
            index=f"{self.source.index('records')},{self.source.index('mediarecords')}",
        )
        self._forget_restored(rs, version)
        for rtype in ("records", "mediarecords"):
            stale = {
                "bool": {
                    "filter": [{"term": {"recordset": rs}}],
                    "must_not": [{"term": {"version": version}}],
                }
            }
            self._log_deletions(rtype, rs, stale, when)
            call(
                f"removing old {rtype} of {rs}",
                self.es.delete_by_query,
                index=self.source.index(rtype),
                query=stale,
                refresh=True,
                conflicts="proceed",
            )
        self._drop_stale_extension_rows(rs, version)
        self.write_recordset(recordset, extension_files=extension_files)
        return n_records, n_media

    def write_recordset(
        self, recordset: dict[str, Any], *, extension_files: Sequence[dict[str, Any]] = ()
    ) -> None:
        """Write a recordset's own document (name, version, EML, terms, the extension files
        it was published with) under its id."""
        rs = recordset["recordset"]
        doc = document_from_row(recordset)
        if doc.get("eml") is not None:
            doc["eml"] = {"text": doc["eml"]}
        doc["extensions"] = [
            {
                "rowtype": f["rowtype"],
                "file": f["file"],
                "terms": list(f["terms"] or []),
                "row_count": int(f["row_count"] or 0),
            }
            for f in extension_files
        ]
        call(
            f"writing recordset {rs}",
            self.es.index,
            index=self.source.recordsets_index,
            id=rs,
            document=doc,
        )

    def indexed(self, rtype: RecordType, recordset: str) -> Iterator[tuple[str, Any, Any]]:
        """``(uuid, version, etag)`` of every document of ``recordset`` in the index, by
        uuid: one sorted scroll, a page in memory at a time (what a reindex compares the
        store's rows with)."""
        what = f"listing the indexed {rtype} of {recordset}"
        pages = self.source._sorted_hits(
            self.source.index(rtype),
            {"term": {"recordset": recordset}},
            [{"uuid": "asc"}],
            MAX_PAGE,
            what,
            source=["uuid", "version", "etag"],
        )
        with closing(pages):
            for hits in pages:
                for hit in hits:
                    doc = hit.get("_source") or {}
                    yield str(doc.get("uuid", hit["_id"])), doc.get("version"), doc.get("etag")

    def delete_documents(self, rtype: RecordType, uuids: Iterable[str]) -> int:
        """Remove documents by uuid (those already gone count as removed)."""
        index = self.source.index(rtype)
        return self._bulk(index, ({"_op_type": "delete", "_index": index, "_id": u} for u in uuids))

    def log_deletions(self, entries: Iterable[tuple[str, str, str, datetime]]) -> int:
        """Write ``(rtype, uuid, recordset, deleted)`` entries into the deletion log
        (``_id`` rtype:uuid, so writing one again changes nothing)."""
        index = self.source.deleted_index
        actions = (
            {
                "_index": index,
                "_id": f"{rtype}:{uuid}",
                "_source": {
                    "uuid": uuid,
                    "rtype": rtype,
                    "recordset": recordset,
                    "deleted": log_time(when).isoformat(timespec="milliseconds"),
                },
            }
            for rtype, uuid, recordset, when in entries
        )
        return self._bulk(index, actions)

    def has_data_version(self) -> bool:
        """Whether the indices carry a data version (any push or finished reindex wrote one)."""
        return self.source.data_version() != "0"

    def replace_extension_rows(
        self,
        recordset: str,
        version: Any,
        rows: Iterable[dict[str, Any]],
        *,
        drop_stale: bool = True,
    ) -> int:
        """Index a recordset version's extension rows and (with ``drop_stale``) remove the
        rows of its other versions. Idempotent: each row's ``_id`` is fixed by its place."""
        n = self._index_extension_rows(recordset, version, rows)
        if drop_stale:
            self._drop_stale_extension_rows(recordset, version)
        return n

    def _drop_stale_extension_rows(self, recordset: str, version: Any) -> None:
        stale_rows = {
            "bool": {
                "filter": [{"term": {"recordset": recordset}}],
                "must_not": [{"term": {"version": version}}],
            }
        }
        call(
            f"removing old extension rows of {recordset}",
            self.es.delete_by_query,
            index=self.source.extensions_index,
            query=stale_rows,
            refresh=True,
            conflicts="proceed",
        )

    def _index_extension_rows(
        self, recordset: str, version: Any, rows: Iterable[dict[str, Any]]
    ) -> int:
        """Bulk-index extension rows (``_id``: recordset, file and position, so a push of
        the same version writes each row once)."""
        index = self.source.extensions_index
        actions = (
            {
                "_index": index,
                "_id": f"{recordset}\\{row['file']}\\{row['position']}",
                "_source": {
                    "recordset": recordset,
                    "version": version,
                    "rowtype": row["rowtype"],
                    "file": row["file"],
                    "coreid": row["coreid"],
                    "position": row["position"],
                    "data": row["data"],
                },
            }
            for row in rows
        )
        return self._bulk(index, actions)

    def _uuids(self, index: str, query: dict[str, Any], what: str) -> Iterator[list[str]]:
        """The ``uuid`` of every matching document in ``index``, a page at a time (sorted):
        one sorted scroll, which the cluster sorts once (``search_after`` sorts again for
        every page)."""
        yield from self.source._sorted_values(index, query, "uuid", what, MAX_PAGE)

    def _log_deletions(
        self, rtype: RecordType, recordset: str, stale: dict[str, Any], when: datetime
    ) -> None:
        """Note the documents about to be dropped in the deletion log (``_id`` rtype:uuid, so
        a repeated push writes each once)."""
        index = self.source.deleted_index
        stamp = when.isoformat(timespec="milliseconds")
        for page in self._uuids(
            self.source.index(rtype), stale, f"listing removed {rtype} of {recordset}"
        ):
            actions = (
                {
                    "_index": index,
                    "_id": f"{rtype}:{uuid}",
                    "_source": {
                        "uuid": uuid,
                        "rtype": rtype,
                        "recordset": recordset,
                        "deleted": stamp,
                    },
                }
                for uuid in page
            )
            self._bulk(index, actions)

    def _forget_restored(self, recordset: str, version: Any) -> None:
        """Drop log entries of documents the new version holds again (as the embedded store
        does): they were deleted once but exist now. The log of one recordset is usually
        small, so it is read first and only its uuids are looked up."""
        log_index = self.source.deleted_index
        for rtype in ("records", "mediarecords"):
            logged = {
                "bool": {"filter": [{"term": {"recordset": recordset}}, {"term": {"rtype": rtype}}]}
            }
            for page in self._uuids(log_index, logged, f"reading the deletion log of {recordset}"):
                present = {
                    "bool": {"filter": [{"terms": {"uuid": page}}, {"term": {"version": version}}]}
                }
                for back in self._uuids(
                    self.source.index(rtype), present, f"checking restored {rtype} of {recordset}"
                ):
                    self._bulk(
                        log_index,
                        (
                            {"_op_type": "delete", "_index": log_index, "_id": f"{rtype}:{u}"}
                            for u in back
                        ),
                    )

    def bump_data_version(self) -> str:
        """Give the data a new version token (after every ingest) and make it all visible."""
        token = f"{time.time_ns():x}"
        call(
            "refreshing the indices",
            self.es.indices.refresh,
            index=",".join(
                [
                    self.source.index("records"),
                    self.source.index("mediarecords"),
                    self.source.recordsets_index,
                    self.source.deleted_index,
                    self.source.extensions_index,
                ]
            ),
        )
        call(
            "writing the data version",
            self.es.index,
            index=self.source.meta_index,
            id=META_ID,
            document={"data_version": token, "updated": datetime.now(UTC).isoformat()},
            refresh=True,
        )
        return token
