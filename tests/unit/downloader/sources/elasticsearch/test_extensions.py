"""Verbatim extensions in the search cluster: ``ingest --target elasticsearch`` copies a
recordset's Identification and MeasurementOrFact rows (:func:`export_store`), and a download
built from the cluster gives them back as the embedded store's download does, byte for byte.

osmem-server (an in-memory OpenSearch-compatible server) is started on a free port."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from downloader.ingest.cluster import export_store
from downloader.ingest.load import ingest_archive, store_path
from downloader.sources.duckdb import DuckDBSource
from downloader.sources.elasticsearch import ElasticsearchSource
from query.validate import validate_query
from tests.support.osmem import running_osmem
from tests.unit.downloader.export_support import read_zip, running_service

pytestmark = pytest.mark.integration

SYMBIOTA = (
    Path(__file__).resolve().parents[4]
    / "fixtures"
    / "real-dwca"
    / "symbiota-seinet-pere-2025-02-13.zip"
)
IDENTIFICATION = "http://rs.tdwg.org/dwc/terms/Identification"
EMOF = "http://rs.iobis.org/obis/terms/ExtendedMeasurementOrFact"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store")
    ingest_archive(path, SYMBIOTA)
    return path


@pytest.fixture(scope="module")
def cluster(store: Path) -> Iterator[ElasticsearchSource]:
    with running_osmem() as server:
        source = ElasticsearchSource(server.url, index_prefix="x-", timeout=10, id_chunk=50)
        export_store(store_path(store), source)
        # A second push of the same version replaces the rows, it does not add to them.
        export_store(store_path(store), source)
        yield source


def _download(tmp_path: Path, source: object, name: str, **params: str) -> dict[str, bytes]:
    with running_service(tmp_path / name, source_factory=lambda: source) as svc:  # type: ignore[arg-type, return-value]  # a RecordSource
        response = svc.get("/v2/download", params=params)
        assert response.status_code == 200, response.text
        svc.build_all()
        status = svc.get(response.json()["status_url"]).json()
        assert status["task_status"] == "SUCCESS", status
        content = svc.get(status["download_url"]).content
    return read_zip(content, tmp_path / f"{name}.zip").files


def _rows(content: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode("utf-8"))))[1:]


def test_cluster_lists_the_same_extensions_as_the_store(
    cluster: ElasticsearchSource, store: Path
) -> None:
    duck = DuckDBSource(store_path(store))
    assert cluster.extension_files(None, None) == duck.extension_files(None, None)
    listed = {e.row_type for e in cluster.extension_files(None, None)}
    assert {EMOF, IDENTIFICATION} <= listed


def test_download_from_the_cluster_carries_the_extension_rows(
    cluster: ElasticsearchSource, store: Path, tmp_path: Path
) -> None:
    files = _download(tmp_path, cluster, "es-all", rq="{}")
    assert len(_rows(files["identification.csv"])) == 145
    assert len(_rows(files["extendedmeasurementorfact.csv"])) == 77
    meta = files["meta.xml"].decode()
    assert f'rowType="{IDENTIFICATION}"' in meta and f'rowType="{EMOF}"' in meta
    core_ids = {r[0] for r in _rows(files["occurrence.csv"])}
    assert {r[0] for r in _rows(files["identification.csv"])} <= core_ids

    # The same rows, in the same order, as the embedded store's download.
    duck = _download(tmp_path, DuckDBSource(store_path(store)), "duck-all", rq="{}")
    for name in ("identification.csv", "extendedmeasurementorfact.csv"):
        assert files[name] == duck[name]


def test_a_query_gets_only_its_records_extension_rows(
    cluster: ElasticsearchSource, store: Path
) -> None:
    duck = DuckDBSource(store_path(store))
    (ident,) = [e for e in duck.extension_files(None, None) if e.row_type == IDENTIFICATION]
    everything = [
        r for b in cluster.extension_batches(ident, None, None, batch_size=7) for r in b.to_pylist()
    ]
    assert len(everything) == 145
    uuid = everything[-1]["coreid"]
    rq = validate_query({"uuid": uuid}, "records")
    mine = [r for b in cluster.extension_batches(ident, rq, None) for r in b.to_pylist()]
    theirs = [r for b in duck.extension_batches(ident, rq, None) for r in b.to_pylist()]
    assert mine == theirs and mine and {r["coreid"] for r in mine} == {uuid}


def test_a_new_version_replaces_the_extension_rows(
    cluster: ElasticsearchSource, store: Path
) -> None:
    # Last in this module: it loads the recordset again (version 2) and pushes it.
    index = cluster.extensions_index
    (rs,) = {h["_source"]["recordset"] for h in cluster.es.search(index=index)["hits"]["hits"]}
    # A row version 1 had and version 2 lacks (as when an Identification row is removed).
    gone = {"recordset": rs, "version": 1, "rowtype": IDENTIFICATION, "file": "x", "position": 0}
    cluster.es.index(
        index=index, id="gone", document={**gone, "coreid": "u", "data": {}}, refresh=True
    )
    assert ingest_archive(store, SYMBIOTA).version == 2
    export_store(store_path(store), cluster)
    assert cluster.es.count(index=index)["count"] == 222
    old = {"bool": {"must_not": [{"term": {"version": 2}}]}}
    assert cluster.es.count(index=index, query=old)["count"] == 0
