"""Fixtures of the DuckDB source tests: a store ingested from the fixture archives."""

from __future__ import annotations

from pathlib import Path

import pytest

from downloader.ingest.load import ingest_archive, store_path

FIXTURES = Path(__file__).resolve().parents[4] / "fixtures" / "dwca"


@pytest.fixture(scope="package")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store file after ingest of the demo archive and a GBIF download (218 records,
    38 media records); the tests only read it."""
    data = tmp_path_factory.mktemp("store")
    ingest_archive(data, FIXTURES / "demo-occurrence-multimedia.zip")
    ingest_archive(data, FIXTURES / "gbif-results.zip")
    return store_path(data)
