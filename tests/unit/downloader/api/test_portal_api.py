"""The small JSON resources of the web page: fields, estimates, recordsets, page config,
and the page's own headers."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from downloader.api.portal import content_security_policy
from downloader.ingest.load import ingest_archive
from downloader.models import Job, now_utc
from downloader.service.portal import DEFAULT_RECORDS_PER_SECOND, Measurements
from query.fields import field_names
from tests.unit.downloader.conftest import Api
from tests.unit.downloader.export_support import running_service

DEMO = Path(__file__).resolve().parents[3] / "fixtures" / "dwca" / "demo-occurrence-multimedia.zip"


def test_fields_lists_every_field_with_group_and_query_types(api: Api) -> None:
    doc = api.get("/v2/fields").json()
    names = {f["name"] for f in doc["records"]}
    assert names == set(field_names("records"))
    by = {f["name"]: f for f in doc["records"]}
    assert by["genus"]["group"] == "Taxonomy" and "list" in by["genus"]["types"]
    assert by["datecollected"]["types"] == ["value", "range", "exists", "missing"]
    assert "geo_polygon" in by["geopoint"]["types"]
    assert by["earliestperiodorlowestsystem"]["group"] == "Paleo context"
    assert {f["name"] for f in doc["mediarecords"]} == set(field_names("mediarecords"))


def test_estimates_use_the_benchmark_until_downloads_are_measured(api: Api) -> None:
    doc = api.get("/v2/estimates").json()
    assert doc["source"] in ("default", "measured")
    fresh = Measurements()
    assert fresh.document()["records_per_second"] == DEFAULT_RECORDS_PER_SECOND
    start = now_utc()
    job = Job(
        id="j1",
        query_hash="h",
        request={},
        query={},
        data_version="1",
        state="SUCCESS",
        started=start,
        completed=start + timedelta(seconds=4),
        size=2_000_000,
        total_records=10_000,
    )
    fresh.observe(job)
    fresh.observe(job)  # once per job
    doc = fresh.document()
    assert doc["source"] == "measured" and doc["samples"] == 1
    assert doc["records_per_second"] == 2500 and doc["bytes_per_record"] == 200


def test_recordsets_listing_gives_export_urls(tmp_path: Path) -> None:
    ingest_archive(tmp_path, DEMO)
    with running_service(tmp_path) as svc:
        doc = svc.get("/recordsets/").json()
        (rs,) = doc["recordsets"]
        assert rs["records"] == 60 and rs["version"] == 1
        assert rs["export_url"].startswith(svc.url + "/recordsets/urn%3Auuid%3A")
        assert svc.get(rs["versions_url"]).status_code == 200


def test_page_config_and_headers(api: Api) -> None:
    config = api.get("/portal/config.json").json()
    assert config["map_tile_url"] == ""
    page = api.get("/portal/")
    assert page.status_code == 200
    assert "Content-Security-Policy" in page.headers
    module = api.get("/portal/static/portal/app.js")
    assert module.headers["Content-Type"].startswith("text/javascript")
    assert "script-src 'self'" in module.headers["Content-Security-Policy"]
    assert api.get("/portal/static/../../config.py").status_code in (403, 404)


def test_a_configured_tile_server_is_the_one_other_image_origin() -> None:
    assert "img-src 'self' data: blob:;" in content_security_policy("")
    policy = content_security_policy("https://{s}.tile.example.org/{z}/{x}/{y}.png")
    assert "https://*.tile.example.org" in policy
    assert "connect-src 'self'" in policy


def test_a_finished_status_carries_its_citation(api: Api) -> None:
    doc = api.finished({"rq": '{"genus": "acer"}'})
    assert doc["id"] in doc["citation"] and doc["checksum"]["value"] in doc["citation"]
    assert doc["citation_bibtex"].startswith("@misc{dwca_" + doc["id"].split("-")[0] + ",")
    assert "TY  - DATA" in doc["citation_ris"] and doc["download_url"] in doc["citation_ris"]
