"""`downloader reindex`: the search indices filled from the embedded store without new
versions, against osmem-server (an OpenSearch-compatible server on a free port)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from downloader.cli import main
from downloader.ingest import cluster
from downloader.ingest.load import store_path
from downloader.sources.duckdb import DuckDBSource
from downloader.sources.elasticsearch import ElasticsearchSource
from query.validate import validate_query
from tests.support.osmem import OsmemSearch, osmem_search
from tests.unit.downloader.cli_support import cli_count
from tests.unit.downloader.test_cli_ingest_elasticsearch import DEMO, GBIF, QUERIES

pytestmark = pytest.mark.integration

__all__ = ["osmem_search"]  # the fixture is used by name


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A staging store with two recordsets, one ingested twice (version 2)."""
    for var in ("DOWNLOADER_RECORD_SOURCE", "DOWNLOADER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    for archive in (DEMO, GBIF, DEMO):
        argv = ["ingest", "--data-dir", str(tmp_path), "--no-export", "--target", "duckdb"]
        assert main([*argv, archive]) == 0
    return tmp_path


def _point_at(
    osmem: OsmemSearch, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> ElasticsearchSource:
    monkeypatch.setenv("DOWNLOADER_ELASTICSEARCH_URL", osmem.url)
    monkeypatch.setenv("DOWNLOADER_ELASTICSEARCH_INDEX_PREFIX", prefix)
    monkeypatch.setenv("DOWNLOADER_ELASTICSEARCH_TIMEOUT_SECONDS", "10")
    return ElasticsearchSource(osmem.url, index_prefix=prefix, timeout=10)


def _uuids(src: Any, rtype: Any, rq: Any, mq: Any) -> set[str]:
    fields = ("uuid",)
    return {
        str(u)
        for batch in src.batches(rtype, rq, mq, fields=fields)
        for u in batch.column(batch.schema.get_field_index("uuid")).to_pylist()
    }


def test_reindex_fills_an_empty_index_like_the_store_and_keeps_versions(
    store: Path,
    osmem_search: OsmemSearch,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    es = _point_at(osmem_search, "reidx-", monkeypatch)
    assert es.data_version() == "0"
    assert main(["reindex", "--data-dir", str(store)]) == 0
    out = capsys.readouterr().out
    assert "2 recordset(s) in reidx-*: written 218 records and 38 media records" in out
    assert "(new)" in out
    version = es.data_version()
    assert version != "0"

    embedded = {json.dumps([rq, mq]): cli_count(store, rq, mq) for rq, mq in QUERIES}
    monkeypatch.setenv("DOWNLOADER_RECORD_SOURCE", "elasticsearch")
    assert {json.dumps([rq, mq]): cli_count(store, rq, mq) for rq, mq in QUERIES} == embedded
    duck = DuckDBSource(store_path(store))
    for rq, mq in QUERIES:
        rqn = validate_query(rq, "records")
        mqn = validate_query(mq, "mediarecords") if mq is not None else None
        for rtype in ("records", "mediarecords"):
            assert _uuids(es, rtype, rqn, mqn) == _uuids(duck, rtype, rqn, mqn), (rq, mq, rtype)
    # Versions are the store's (DEMO was ingested twice): an export of version 2 still
    # finds its records, none was versioned anew.
    for info in duck.recordsets():
        rq = validate_query({"recordset": info.recordset, "version": info.version}, "records")
        assert es.count("records", rq, None) == duck.count("records", rq, None) > 0
    assert {r.version for r in duck.recordsets()} == {1, 2}

    # Again over an index that matches the store: nothing written, the version kept.
    assert main(["reindex", "--data-dir", str(store)]) == 0
    again = capsys.readouterr().out
    assert "written 0 records and 0 media records, skipped 218 and 38" in again
    assert "(unchanged)" in again
    assert es.data_version() == version


def test_an_interrupted_reindex_resumed_finishes_without_duplicates(
    store: Path,
    osmem_search: OsmemSearch,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    es = _point_at(osmem_search, "resume-", monkeypatch)
    real = cluster.document_from_row
    made = 0

    def dying(row: dict[str, Any]) -> dict[str, Any]:
        # The process dies after 45 rows: bulk requests of 10 went out before that.
        nonlocal made
        made += 1
        if made > 45:
            raise KeyboardInterrupt
        return real(row)

    monkeypatch.setattr(cluster, "document_from_row", dying)
    with pytest.raises(KeyboardInterrupt):
        cluster.reindex_store(store_path(store), es, chunk_size=10)
    monkeypatch.setattr(cluster, "document_from_row", real)
    es.es.indices.refresh(index="resume-records")
    partial = es.es.count(index="resume-records")["count"]
    assert 0 < partial < 218
    assert es.data_version() == "0"  # an unfinished run wrote no data version

    assert main(["reindex", "--data-dir", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"written {218 - partial} records and 38 media records, skipped {partial} and 0" in out
    es.es.indices.refresh(index="resume-records,resume-mediarecords")
    assert es.es.count(index="resume-records")["count"] == 218
    assert es.es.count(index="resume-mediarecords")["count"] == 38
    assert es.data_version() != "0"
    monkeypatch.setenv("DOWNLOADER_RECORD_SOURCE", "elasticsearch")
    assert cli_count(store, {}, None) == (218, 38)


def test_reindex_removes_what_the_store_no_longer_holds_and_moves_the_version(
    store: Path,
    osmem_search: OsmemSearch,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    es = _point_at(osmem_search, "stale-", monkeypatch)
    assert main(["reindex", "--data-dir", str(store)]) == 0
    version = es.data_version()
    first = next(iter(_uuids(es, "records", {}, None)))
    doc = es.es.get(index="stale-records", id=first)["_source"]
    # A document of an old version the store does not have, and one whose etag differs.
    es.es.index(index="stale-records", id="zz-gone", document={**doc, "uuid": "zz-gone"})
    es.es.index(index="stale-records", id=first, document={**doc, "etag": "changed"})
    capsys.readouterr()
    assert main(["reindex", "--data-dir", str(store)]) == 0
    out = capsys.readouterr().out
    assert "written 1 records and 0 media records, skipped 217 and 38" in out
    assert "removed 1 and 0" in out and "(new)" in out
    assert es.data_version() != version
    es.es.indices.refresh(index="stale-records")
    assert es.es.count(index="stale-records")["count"] == 218
    assert es.es.get(index="stale-records", id=first)["_source"]["etag"] == doc.get("etag")
