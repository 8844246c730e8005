"""Cached recordset exports through real HTTP, on the real embedded store: every status code
of ``/recordsets/{id}/{version}/export/`` and the versions listing. Every archive is re-read
with python-dwca-reader."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from downloader.sources.duckdb import DuckDBSource
from tests.unit.downloader.export_support import (
    ADMIN,
    IDB,
    Service,
    read_zip,
    running_service,
)

EXPORT = "/recordsets/rs-a/1/export/"


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    with running_service(tmp_path) as service:
        yield service


def _last_updated(svc: Service, recordset: str) -> str:
    info = {r.recordset: r for r in DuckDBSource(svc.data_dir / "records.duckdb").recordsets()}
    return f"{info[recordset].ingested_at:%Y%m%d%H%M%S}"


def test_ingest_builds_the_export_which_get_and_head_serve(svc: Service, tmp_path: Path) -> None:
    svc.ingest(40, "rs-a")
    assert len(svc.dispatcher.ids) == 1  # the ingest hook queued the export
    assert svc.get(EXPORT).status_code == 208  # queued: being built
    assert svc.request("HEAD", EXPORT).status_code == 208
    svc.build_all()
    r = svc.get(EXPORT)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/zip"
    name = f"rs-a_1.{_last_updated(svc, 'rs-a')}.zip"
    assert f'filename="{name}"' in r.headers["Content-Disposition"]
    assert r.headers["Content-Disposition"].startswith("attachment;")
    archive = read_zip(r.content, tmp_path / "export.zip")
    assert len(archive.core_ids) == 40
    assert {row[IDB + "recordset"] for row in archive.core_rows} == {"rs-a"}
    assert r.headers["ETag"] == f'"{hashlib.sha256(r.content).hexdigest()}"'
    head = svc.request("HEAD", EXPORT)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(r.content))
    assert head.headers["Content-Disposition"] == r.headers["Content-Disposition"]
    resumed = svc.get(EXPORT, headers={"Range": "bytes=10-"})
    assert resumed.status_code == 206 and r.content[:10] + resumed.content == r.content


def test_204_when_there_is_no_export(svc: Service) -> None:
    svc.ingest(10, "rs-a")
    # An admin stops the queued build: the version exists but has no export.
    deleted = svc.request("DELETE", EXPORT, headers={"X-Admin-Token": ADMIN})
    assert deleted.status_code == 204
    svc.build_all()  # the cancelled job is not built
    for method in ("GET", "HEAD"):
        r = svc.request(method, EXPORT)
        assert r.status_code == 204 and r.content == b""


def test_404_for_unknown_recordset_or_version(svc: Service) -> None:
    svc.ingest(10, "rs-a")
    for path in (
        "/recordsets/nope/1/export/",
        "/recordsets/rs-a/2/export/",
        "/recordsets/rs-a/latest/export/",
    ):
        r = svc.get(path)
        assert r.status_code == 404, path
        assert r.json()["status"] == 404 and r.json()["error"]
        assert svc.request("HEAD", path).status_code == 404
        assert svc.request("POST", path).status_code == 404
    assert svc.get("/recordsets/nope/versions/").status_code == 404


def test_405_for_the_head_version(svc: Service) -> None:
    svc.ingest(10, "rs-a")
    for method in ("GET", "HEAD", "POST"):
        r = svc.request(method, "/recordsets/rs-a/HEAD/export/")
        assert r.status_code == 405, method
    body = svc.get("/recordsets/rs-a/HEAD/export/").json()
    assert body["status"] == 405 and "HEAD" in body["error"]


def test_post_202_409_200_and_delete_204_404(svc: Service, tmp_path: Path) -> None:
    svc.ingest(25, "rs-a")
    running = svc.request("POST", EXPORT)
    assert running.status_code == 409  # the ingest's build is queued
    assert running.json()["job"]["status"] == "STARTING"
    svc.build_all()
    exists = svc.request("POST", EXPORT)
    assert exists.status_code == 200
    assert exists.json()["export"]["state"] == "ready"
    assert (
        svc.request("DELETE", EXPORT, headers={"Authorization": f"Bearer {ADMIN}"}).status_code
        == 204
    )
    assert svc.get(EXPORT).status_code == 204
    assert svc.request("DELETE", EXPORT, headers={"X-Admin-Token": ADMIN}).status_code == 404
    started = svc.request("POST", EXPORT)
    assert started.status_code == 202
    doc = started.json()
    assert started.headers["Location"] == f"{svc.url}/v1/jobs/{doc['id']}"
    assert doc["status"] == "STARTING" and doc["cancel_token"]
    assert svc.get(EXPORT).status_code == 208
    svc.build_all()
    rebuilt = svc.get(EXPORT)
    assert rebuilt.status_code == 200
    assert len(read_zip(rebuilt.content, tmp_path / "again.zip").core_ids) == 25


def test_delete_needs_an_admin_token(svc: Service) -> None:
    svc.ingest(5, "rs-a")
    svc.build_all()
    anonymous = svc.request("DELETE", EXPORT)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")  # RFC 9110 15.5.2
    assert svc.request("DELETE", EXPORT, headers={"X-Admin-Token": "guess"}).status_code == 403
    wrong = svc.request("DELETE", EXPORT, headers={"Authorization": "Bearer guess"})
    assert wrong.status_code == 403 and wrong.json()["status"] == 403
    assert svc.get(EXPORT).status_code == 200  # still there
    assert svc.request("DELETE", EXPORT, params={"token": "other-admin"}).status_code == 204


def test_versions_list_and_older_exports_stay_cached(svc: Service, tmp_path: Path) -> None:
    svc.ingest(30, "rs-a")
    svc.build_all()
    svc.ingest(20, "rs-a", seed=1)
    doc = svc.get("/recordsets/rs-a/versions/").json()
    assert doc["recordset"] == "rs-a"
    listed = {v["version"]: v for v in doc["versions"]}
    assert [v["version"] for v in doc["versions"]] == [2, 1]
    assert listed[2]["current"] and not listed[1]["current"]
    assert listed[2]["export"]["state"] == "building"
    assert listed[1]["export"]["state"] == "ready" and listed[1]["export"]["size"] > 0
    assert listed[2]["lastUpdated"] == _last_updated(svc, "rs-a")
    assert len(listed[2]["lastUpdated"]) == 14
    svc.build_all()
    listed = {v["version"]: v for v in svc.get("/recordsets/rs-a/versions/").json()["versions"]}
    assert listed[2]["export"]["state"] == "ready"
    # Version 1's export is still served with version 1's records.
    old = svc.get(EXPORT)
    assert old.status_code == 200
    assert len(read_zip(old.content, tmp_path / "v1.zip").core_ids) == 30
    new = svc.get("/recordsets/rs-a/2/export/")
    assert len(read_zip(new.content, tmp_path / "v2.zip").core_ids) == 20
    # Once deleted, a superseded version cannot be rebuilt: its records are gone.
    svc.request("DELETE", EXPORT, headers={"X-Admin-Token": ADMIN})
    assert svc.request("POST", EXPORT).status_code == 410


def test_a_new_version_stops_the_unfinished_export_of_the_previous_one(svc: Service) -> None:
    svc.ingest(10, "rs-a")
    svc.ingest(12, "rs-a", seed=1)
    svc.build_all()
    listed = {v["version"]: v for v in svc.get("/recordsets/rs-a/versions/").json()["versions"]}
    assert listed[1]["export"]["state"] == "none"
    assert listed[2]["export"]["state"] == "ready"


def test_a_version_exported_as_parquet_on_request(svc: Service, tmp_path: Path) -> None:
    import io
    import json
    import zipfile

    import pandas as pd

    svc.ingest(40, "rs-a")
    svc.build_all()  # the DwC-A export the ingest queued
    parquet = EXPORT + "?form=parquet"
    assert svc.get(parquet).status_code == 204  # never built in this form
    bad = svc.get(EXPORT + "?form=xml")
    assert bad.status_code == 400 and bad.json()["key"] == "form"

    started = svc.request("POST", parquet)
    assert started.status_code == 202, started.text
    assert started.json()["format"] == "parquet"
    svc.build_all()
    r = svc.get(parquet)
    assert r.status_code == 200
    name = f"rs-a_1.{_last_updated(svc, 'rs-a')}.parquet.zip"
    assert f'filename="{name}"' in r.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert json.loads(zf.read("meta.json"))["core"]["location"] == "occurrence.parquet"
        frame = pd.read_parquet(io.BytesIO(zf.read("occurrence.parquet")))
    assert len(frame) == 40 and set(frame["idigbio:recordset"]) == {"rs-a"}
    # The DwC-A export is its own, untouched.
    archive = read_zip(svc.get(EXPORT).content, tmp_path / "export.zip")
    assert sorted(archive.core_ids) == sorted(frame["coreid"])
    assert svc.request("POST", parquet).status_code == 200  # exists
    deleted = svc.request("DELETE", parquet, headers={"Authorization": f"Bearer {ADMIN}"})
    assert deleted.status_code == 204
    assert svc.get(parquet).status_code == 204 and svc.get(EXPORT).status_code == 200
