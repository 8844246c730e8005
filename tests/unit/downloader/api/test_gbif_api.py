"""GBIF's occurrence download API, driven by GBIF's own client (pygbif) against the service,
and its predicates compiled to our queries (a key we cannot honour is a 400 naming it)."""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import requests
from dwca.read import DwCAReader

from downloader.ingest.load import ingest_archive, store_path
from query.errors import QueryError
from query.gbif import MAX_DEPTH, TooLarge, compile_predicate
from query.validate import validate_query
from tests.support.schemas import validate_eml, validate_meta
from tests.support.store import open_store
from tests.unit.downloader.conftest import Api
from tests.unit.downloader.export_support import Service, running_service

IDIGBIO = (
    Path(__file__).resolve().parents[3]
    / "fixtures"
    / "real-dwca"
    / "idigbio-download-acer-rubrum-2022-05-11.zip"
)
QUERIES = ["basisOfRecord = PRESERVED_SPECIMEN", "hasCoordinate = TRUE", "institutionCode = FSU"]
SAME_IN_SQL = (
    "basisofrecord = 'preservedspecimen' AND geopoint IS NOT NULL AND institutioncode = 'fsu'"
)


# --- predicates ------------------------------------------------------------------------------


def eq(key: str, value: Any) -> dict[str, Any]:
    return {"type": "equals", "key": key, "value": value}


def test_predicates_compile_to_the_same_query_as_ours() -> None:
    predicate = {
        "type": "and",
        "predicates": [
            eq("BASIS_OF_RECORD", "PRESERVED_SPECIMEN"),
            eq("COUNTRY", "US"),
            {"type": "in", "key": "GENUS", "values": ["Acer", "Quercus"]},
            {"type": "or", "predicates": [eq("INSTITUTION_CODE", c) for c in ("FSU", "NY")]},
            eq("YEAR", "1950,1999"),
            {"type": "greaterThanOrEquals", "key": "ELEVATION", "value": 100},
            {"type": "lessThan", "key": "ELEVATION", "value": 2000},
            {"type": "like", "key": "CATALOG_NUMBER", "value": "ABC*"},
            {"type": "not", "predicate": {"type": "isNull", "parameter": "TYPE_STATUS"}},
            {"type": "within", "geometry": "POLYGON((-90 20, -60 20, -60 50, -90 20))"},
        ],
    }  # fmt: skip
    rq = validate_query(compile_predicate(predicate), "records")
    assert rq == validate_query(
        {
            "basisofrecord": "preservedspecimen",
            "countrycode": "us",
            "genus": ["acer", "quercus"],
            "institutioncode": ["fsu", "ny"],
            "datecollected": {"type": "range", "gte": "1950-01-01", "lte": "1999-12-31"},
            "minelevation": {"type": "range", "gte": 100, "lt": 2000},
            "catalognumber": {"type": "prefix", "value": "ABC"},
            "typestatus": {"type": "exists"},
            "geopoint": {"type": "geo_polygon", "points": [[-90, 20], [-60, 20], [-60, 50]]},
        },
        "records",
    )
    assert compile_predicate(
        {"type": "geoDistance", "latitude": 30, "longitude": -80, "distance": "10km"}
    ) == {"geopoint": {"type": "geo_distance", "lat": 30.0, "lon": -80.0, "distance": "10km"}}
    assert compile_predicate(eq("HAS_COORDINATE", False)) == {"geopoint": {"type": "missing"}}


@pytest.mark.parametrize(
    ("predicate", "key", "words"),
    [
        (eq("TAXON_KEY", "3189834"), "predicate.key", "TAXON_KEY cannot be searched"),
        ({**eq("GENUS", "Acer"), "matchCase": True}, "predicate.matchCase", "wider"),
        (
            {"type": "or", "predicates": [eq("GENUS", "Acer"), eq("FAMILY", "Pinaceae")]},
            "predicate.predicates[1]",
            "one key",
        ),
        ({"type": "not", "predicate": eq("GENUS", "Acer")}, "predicate.predicate", "'not'"),
        ({"type": "like", "key": "GENUS", "value": "A?er"}, "predicate.value", "prefix"),
        (eq("MEDIA_TYPE", "Sound"), "predicate.value", "StillImage"),
        (
            {"type": "and", "predicates": [eq("GENUS", "Acer"), eq("GENUS", "Quercus")]},
            "predicate.predicates[1]",
            "cannot be combined",
        ),
    ],
)
def test_what_cannot_be_said_exactly_is_refused_naming_it(
    predicate: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(QueryError) as info:
        compile_predicate(predicate)
    assert info.value.key == key and words in info.value.message


def test_gbif_size_limits() -> None:
    ring = ", ".join(f"{i % 180} {i % 80}" for i in range(10_001))
    with pytest.raises(TooLarge):
        compile_predicate({"type": "within", "geometry": f"POLYGON(({ring}))"})


# --- pygbif against the service ---------------------------------------------------------------


def test_a_predicate_nested_too_deeply_is_refused_naming_it() -> None:
    leaf = eq("GENUS", "Acer")
    nested = leaf
    for _ in range(MAX_DEPTH - 1):
        nested = {"type": "and", "predicates": [nested]}
    assert compile_predicate(nested) == compile_predicate(leaf)
    # Hundreds of levels were a RecursionError (500) when the job was saved.
    for _ in range(400):
        nested = {"type": "and", "predicates": [nested]}
    with pytest.raises(QueryError, match=f"nested more than {MAX_DEPTH} levels") as caught:
        compile_predicate(nested)
    assert caught.value.key == "predicate"


def test_hostile_gbif_requests_get_a_400_not_a_500(api: Api) -> None:
    url = api.url + "/v1/occurrence/download/request"
    deep = requests.post(url, data="[" * 100_000, timeout=30)
    assert deep.status_code == 400 and deep.json()["key"] == "body"
    leaf = '{"type": "equals", "key": "GENUS", "value": "Acer"}'
    body = '{"creator": "a", "predicate": ' + '{"type": "and", "predicates": [' * 300
    body += leaf + "]}" * 300 + "}"
    nested = requests.post(url, data=body, timeout=30)
    assert nested.status_code == 400 and nested.json()["key"] == "predicate"
    far = api.get("/v1/occurrence/download/user/a", params={"offset": str(2**70)}, auth=("a", ""))
    assert far.status_code == 400 and far.json()["key"] == "offset"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("gbif")
    ingest_archive(data, IDIGBIO)
    with running_service(data, threaded=True, new_jobs_per_minute=0) as svc:
        yield svc


@pytest.fixture
def pygbif_here(service: Service, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The pygbif module, its hard-coded api.gbif.org re-pointed at the service."""
    occ = pytest.importorskip("pygbif.occurrences")
    original = requests.Session.request

    def request(self: requests.Session, method: str, url: str, *a: Any, **kw: Any) -> Any:
        for base in ("http://api.gbif.org/v1", "https://api.gbif.org/v1"):
            if url.startswith(base):
                url = service.url + "/v1" + url[len(base) :]
        return original(self, method, url, *a, **kw)

    monkeypatch.setattr(requests.Session, "request", request)
    return occ


def expected_uuids(service: Service) -> set[str]:
    con = open_store(str(store_path(service.data_dir)))
    try:
        rows = con.execute(f"SELECT uuid FROM records WHERE {SAME_IN_SQL}").fetchall()
    finally:
        con.close()
    assert rows
    return {r[0] for r in rows}


def fetch(occ: Any, fmt: str, where: Path) -> tuple[str, Path, dict[str, Any]]:
    key, payload = occ.download(
        QUERIES, format=fmt, user="ana", pwd="secret", email="ana@example.org"
    )
    assert payload["creator"] == "ana"
    for _ in range(300):
        meta = occ.download_meta(key)
        if meta["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        time.sleep(0.1)
    assert meta["status"] == "SUCCEEDED", meta
    got = occ.download_get(key, path=str(where))
    return key, Path(got["path"]), meta


def test_pygbif_dwca_download_has_the_records_of_the_same_query(
    pygbif_here: Any, service: Service, tmp_path: Path
) -> None:
    _, path, meta = fetch(pygbif_here, "DWCA", tmp_path)
    expected = expected_uuids(service)
    assert meta["totalRecords"] == len(expected) and meta["request"]["format"] == "DWCA"
    assert "ana@example.org" not in json.dumps(meta)  # the key is shareable, the address not
    status = requests.get(f"{service.url}/v2/download/{meta['key']}", timeout=30).json()
    assert "ana@example.org" not in json.dumps(status)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        validate_meta(zf.read("meta.xml"))
        validate_eml(zf.read("metadata.xml"))
    assert {"occurrence.txt", "verbatim.txt", "multimedia.txt", "metadata.xml"} <= set(names)
    assert {"citations.txt", "rights.txt", "meta.xml"} <= set(names)
    with DwCAReader(str(path)) as reader:
        assert reader.descriptor.core.file_location == "occurrence.txt"
        assert {row.id for row in reader} == expected


def test_pygbif_simple_csv_and_parquet(pygbif_here: Any, service: Service, tmp_path: Path) -> None:
    expected = expected_uuids(service)
    _, path, _ = fetch(pygbif_here, "SIMPLE_CSV", tmp_path)
    with zipfile.ZipFile(path) as zf:
        (name,) = zf.namelist()
        text = zf.read(name).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    assert {r["gbifID"] for r in rows} == expected
    assert all(r["decimalLatitude"] for r in rows)
    # GBIF's casing, not our index's lower case: the enum, ISO codes, names as published.
    assert {r["basisOfRecord"] for r in rows} == {"PRESERVED_SPECIMEN"}
    assert all(r["genus"] == "Acer" for r in rows)
    assert all(r["scientificName"].startswith("Acer rubrum") for r in rows)
    assert all(r["institutionCode"] == "FSU" for r in rows)

    _, path, _ = fetch(pygbif_here, "SIMPLE_PARQUET", tmp_path)
    with zipfile.ZipFile(path) as zf:
        (name,) = zf.namelist()
        data = zf.read(name)
    import pandas as pd

    frame = pd.read_parquet(io.BytesIO(data))
    assert set(frame["gbifID"]) == expected
    assert set(frame["basisOfRecord"]) == {"PRESERVED_SPECIMEN"}
    assert str(frame["decimalLatitude"].dtype) == "float64"
    parquet = tmp_path / "simple.parquet"
    parquet.write_bytes(data)
    count = duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [str(parquet)])
    assert count.fetchall() == [(len(expected),)]


def test_pygbif_lists_a_creators_downloads(pygbif_here: Any, service: Service) -> None:
    key, _ = pygbif_here.download(
        ["institutionCode = FSU"], format="SIMPLE_CSV", user="carla", pwd="x", email="c@example.org"
    )
    listed = pygbif_here.download_list(user="carla", pwd="x")
    assert listed["meta"]["count"] == 1 and listed["results"][0]["key"] == key
    assert listed["results"][0]["request"]["creator"] == "carla"
    other = requests.get(
        service.url + "/v1/occurrence/download/user/carla", auth=("dan", "x"), timeout=30
    )
    assert other.status_code == 403


def test_cancel_is_for_the_creator_and_the_file_answers_by_state(
    pygbif_here: Any, service: Service
) -> None:
    body = {
        "creator": "ana",
        "format": "SIMPLE_CSV",
        "predicate": {"type": "equals", "key": "INSTITUTION_CODE", "value": "NOSUCH"},
    }
    key = requests.post(service.url + "/v1/occurrence/download/request", json=body, timeout=30).text
    other = requests.delete(
        service.url + f"/v1/occurrence/download/request/{key}", auth=("bob", "x"), timeout=30
    )
    assert other.status_code in (403, 409)
    missing = requests.post(
        service.url + "/v1/occurrence/download/request",
        json={**body, "creator": None},
        timeout=30,
    )
    assert missing.status_code == 401
    bad = requests.post(
        service.url + "/v1/occurrence/download/request",
        json={**body, "predicate": eq("TAXON_KEY", "1")},
        timeout=30,
    )
    assert bad.status_code == 400 and "TAXON_KEY" in bad.json()["error"]
    unknown = requests.get(service.url + "/v1/occurrence/download/nosuchkey", timeout=30)
    assert unknown.status_code == 404
