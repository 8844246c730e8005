"""The Elasticsearch deletion log against osmem-server: pushing a recordset that lost
records notes their uuids in ``<prefix>deleted``, and the source serves them through the
``DeletionLog`` port exactly as the DuckDB store lists its own deletions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from downloader.build.deletions import DELETED_HEADER, deleted_file
from downloader.ingest.cluster import export_store
from downloader.ingest.load import ingest_synthetic, store_path
from downloader.interfaces import DeletionLog
from downloader.sources.duckdb import DuckDBSource
from downloader.sources.elasticsearch import ElasticsearchSource
from tests.support.osmem import OsmemSearch, osmem_search

pytestmark = pytest.mark.integration

__all__ = ["osmem_search"]  # the fixture is used by name

RS = "rs-shrinks"


@pytest.fixture(scope="module")
def pushed(
    osmem_search: OsmemSearch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, ElasticsearchSource]]:
    data_dir = tmp_path_factory.mktemp("deletions")
    source = ElasticsearchSource(osmem_search.url, index_prefix="del-", timeout=10)
    ingest_synthetic(data_dir, 60, seed=3, recordset=RS)
    ingest_synthetic(data_dir, 40, seed=5, recordset="rs-other")
    export_store(store_path(data_dir), source)
    yield data_dir, source


def _keys(rows: object) -> set[tuple[str, str, str]]:
    return {(r.uuid, r.rtype, r.recordset) for r in rows}  # type: ignore[attr-defined]  # Deletion rows


def test_a_first_push_logs_nothing_and_the_source_is_a_deletion_log(
    pushed: tuple[Path, ElasticsearchSource],
) -> None:
    _, source = pushed
    assert isinstance(source, DeletionLog)
    assert source.deleted_records() == []


def test_a_push_that_removes_records_logs_them_like_the_embedded_store(
    pushed: tuple[Path, ElasticsearchSource],
) -> None:
    data_dir, source = pushed
    duck = DuckDBSource(store_path(data_dir))
    before = source.count("records", None, None)
    ingest_synthetic(data_dir, 25, seed=3, recordset=RS)  # the same recordset, other records
    embedded = duck.deleted_records()
    assert {r.rtype for r in embedded} >= {"records"}
    version = source.data_version()

    export_store(store_path(data_dir), source, recordsets=[RS])

    assert source.data_version() != version
    logged = source.deleted_records()
    assert _keys(logged) == _keys(embedded)
    assert source.count("records", None, None) == duck.count("records", None, None) < before
    # Oldest first, naive UTC, and ``since`` is exclusive as for the DuckDB store.
    stamp = logged[0].deleted_at
    assert stamp.tzinfo is None
    assert source.deleted_records(since=stamp) == []
    assert len(source.deleted_records(since=stamp - timedelta(milliseconds=1))) == len(logged)
    # An untouched recordset's push logs nothing more.
    export_store(store_path(data_dir), source, recordsets=["rs-other"])
    assert _keys(source.deleted_records()) == _keys(embedded)


def test_incremental_download_gets_deleted_csv_from_the_index(
    pushed: tuple[Path, ElasticsearchSource],
) -> None:
    _, source = pushed
    logged = source.deleted_records()
    assert logged, "runs after the push that removed records"
    since = (logged[0].deleted_at - timedelta(minutes=1)).isoformat()
    extra = deleted_file(source, {"recordset": RS, "datemodified": {"type": "range", "gte": since}})
    assert extra is not None
    text = b"".join(extra.chunks()).decode()
    lines = text.splitlines()
    assert lines[0] == ",".join(DELETED_HEADER)
    assert {line.split(",")[0] for line in lines[1:]} == {r.uuid for r in logged}


def test_records_that_come_back_leave_the_log(pushed: tuple[Path, ElasticsearchSource]) -> None:
    data_dir, source = pushed
    removed = {r.uuid for r in source.deleted_records() if r.rtype == "records"}
    ingest_synthetic(data_dir, 60, seed=3, recordset=RS)  # the removed records are back
    export_store(store_path(data_dir), source, recordsets=[RS])
    logged = [r for r in source.deleted_records() if r.rtype == "records"]
    assert removed and not removed & {r.uuid for r in logged}
    # ... while the records this push dropped in turn are logged, as the embedded store has it.
    embedded = DuckDBSource(store_path(data_dir)).deleted_records()
    assert _keys(logged) == _keys(r for r in embedded if r.rtype == "records")
