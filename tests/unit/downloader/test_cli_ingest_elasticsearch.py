"""`downloader ingest --target elasticsearch` and `downloader count` over the index, as a user
runs them, against osmem-server (an OpenSearch-compatible server on a free port)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from downloader.cli import main
from downloader.sources.elasticsearch import ElasticsearchSource
from tests.support.osmem import OsmemSearch, osmem_search
from tests.unit.downloader.cli_support import cli_count

pytestmark = pytest.mark.integration

__all__ = ["osmem_search"]  # the fixture is used by name

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dwca"
DEMO = str(FIXTURES / "demo-occurrence-multimedia.zip")
GBIF = str(FIXTURES / "gbif-results.zip")
PREFIX = "cli-"

QUERIES: list[tuple[object, object | None]] = [
    ({}, None),
    ({"genus": "acer"}, None),
    ({"hasImage": True}, None),
    ({}, {"format": "image/jpeg"}),
    ({"genus": "acer"}, {"mediatype": "images"}),
    ({"recordset": "nonexistent"}, None),
]


@pytest.fixture
def es_env(osmem_search: OsmemSearch, monkeypatch: pytest.MonkeyPatch) -> ElasticsearchSource:
    monkeypatch.setenv("DOWNLOADER_ELASTICSEARCH_URL", osmem_search.url)
    monkeypatch.setenv("DOWNLOADER_ELASTICSEARCH_INDEX_PREFIX", PREFIX)
    monkeypatch.setenv("DOWNLOADER_ELASTICSEARCH_TIMEOUT_SECONDS", "10")
    monkeypatch.delenv("DOWNLOADER_RECORD_SOURCE", raising=False)
    monkeypatch.delenv("DOWNLOADER_CONFIG", raising=False)
    return ElasticsearchSource(osmem_search.url, index_prefix=PREFIX, timeout=10)


def test_ingest_into_the_index_then_count_it_like_the_staging_store(
    es_env: ElasticsearchSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert es_env.data_version() == "0"
    argv = ["ingest", "--data-dir", str(tmp_path), "--target", "elasticsearch", DEMO, GBIF]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.count("copied into the search index") == 2
    assert "60 records, 38 media records; data version" in captured.out
    assert "could not queue" not in captured.err
    version = es_env.data_version()
    assert version != "0"

    embedded = {json.dumps([rq, mq]): cli_count(tmp_path, rq, mq) for rq, mq in QUERIES}
    monkeypatch.setenv("DOWNLOADER_RECORD_SOURCE", "elasticsearch")
    indexed = {json.dumps([rq, mq]): cli_count(tmp_path, rq, mq) for rq, mq in QUERIES}
    assert indexed == embedded
    assert embedded[json.dumps([{}, None])] == (60 + 158, 38)
    assert embedded[json.dumps([{"genus": "acer"}, None])] == (7, 11)
    assert embedded[json.dumps([{}, {"format": "image/jpeg"}])] == (18, 38)

    # record_source: elasticsearch makes the index the default target; a re-ingest replaces
    # the recordset's records there and moves the data version on.
    assert main(["ingest", "--data-dir", str(tmp_path), "--no-export", DEMO]) == 0
    assert "copied into the search index" in capsys.readouterr().out
    assert es_env.data_version() != version
    assert cli_count(tmp_path, {}, None) == (60 + 158, 38)
    # --if-empty looks at the target: the index holds records, so nothing is loaded.
    assert main(["ingest", "--data-dir", str(tmp_path), "--if-empty", DEMO]) == 0
    assert "already holds 218 records" in capsys.readouterr().out


def test_target_duckdb_leaves_the_index_alone(
    es_env: ElasticsearchSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DOWNLOADER_RECORD_SOURCE", "elasticsearch")
    version = es_env.data_version()
    argv = ["ingest", "--data-dir", str(tmp_path), "--target", "duckdb", "--no-export", DEMO]
    assert main(argv) == 0
    assert "search index" not in capsys.readouterr().out
    assert es_env.data_version() == version


def test_an_unreachable_index_fails_the_ingest_clearly(
    es_env: ElasticsearchSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.support.redis_server import free_port

    monkeypatch.setenv("DOWNLOADER_ELASTICSEARCH_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("DOWNLOADER_ELASTICSEARCH_TIMEOUT_SECONDS", "1")
    argv = ["ingest", "--data-dir", str(tmp_path), "--target", "elasticsearch", DEMO]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "cannot be reached" in err
    assert "1 recordset(s) not copied into the search index" in err
    assert "Traceback" not in err
