"""Finished archives through real HTTP: download, Range and resume, ETag, expiry.

A real Tornado server runs on a free port in a background thread, over a SQLite job store,
local storage and an in-memory record source; builds are run by the test when it wants
them, so both the queued and the finished states can be observed.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from dwca.read import DwCAReader

from downloader.service.downloads import cleanup_expired
from tests.unit.downloader.conftest import ACER, Api


def test_finished_status_and_archive_download(api: Api) -> None:
    doc = api.finished()
    assert doc["complete"] is True and doc["task_status"] == "SUCCESS"
    assert doc["percent_complete"] == 100.0
    assert doc["counts"] == {"records": 10, "mediarecords": 10}
    assert doc["records_written"] == doc["total_records"] == 20
    assert doc["recordsets"] == 2 and doc["format"] == "dwca-csv"
    r = api.get(doc["download_url"][len(api.url) :])
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/zip"
    assert r.headers["ETag"] == f'"{doc["checksum"]["value"]}"'
    assert r.headers["Accept-Ranges"] == "bytes"
    assert "dwca-acer-" in r.headers["Content-Disposition"]
    assert len(r.content) == doc["size"]
    assert hashlib.sha256(r.content).hexdigest() == doc["checksum"]["value"]
    archive = Path(api.ctx.settings.data_dir) / "copy.zip"
    archive.write_bytes(r.content)
    with DwCAReader(str(archive)) as reader:
        rows = list(reader)
        assert len(rows) == 10
        assert {row.data["http://rs.tdwg.org/dwc/terms/genus"] for row in rows} == {"acer"}
        assert reader.descriptor.core.file_location == "occurrence.csv"


def test_head_range_resume_and_etag(api: Api) -> None:
    doc = api.finished()
    path = doc["download_url"][len(api.url) :]
    full = api.get(path).content
    head = requests.head(api.url + path, timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == len(full)
    part = api.get(path, headers={"Range": "bytes=100-"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 100-{len(full) - 1}/{len(full)}"
    assert full[:100] + part.content == full
    tail = api.get(path, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == full[-10:]
    beyond = api.get(path, headers={"Range": f"bytes={len(full)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(full)}"
    assert beyond.json()["status"] == 416
    # If-Range with another version's tag: the whole new file, not a mismatched piece.
    stale = api.get(path, headers={"Range": "bytes=100-", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == full
    cached = api.get(path, headers={"If-None-Match": head.headers["ETag"]})
    assert cached.status_code == 304


def test_bare_csv_form_is_served_as_csv(api: Api) -> None:
    doc = api.finished({"rq": ACER, "form": "csv"})
    r = api.get(doc["download_url"][len(api.url) :])
    assert r.headers["Content-Type"].startswith("text/csv")
    assert doc["filename"].endswith(".csv")
    lines = r.content.decode().splitlines()
    assert lines[0].startswith("coreid,") and len(lines) == 11


def test_expired_archive_is_gone(api: Api) -> None:
    doc = api.finished()
    path = doc["download_url"][len(api.url) :]
    later = datetime.now(UTC) + timedelta(days=31)
    assert cleanup_expired(api.ctx, now=later) == [doc["id"]]
    assert not any((Path(api.ctx.settings.data_dir) / "archives").glob("*.zip"))
    r = api.get(path)
    assert r.status_code == 410 and r.json()["status"] == 410
    status = api.get(f"/v2/download/{doc['id']}").json()
    assert status["expired"] is True and status["task_status"] == "FAILURE"
    assert "download_url" not in status and "expired" in status["error"]


def test_archive_of_an_unfinished_job_is_a_clear_409(api: Api) -> None:
    job_id = api.get("/v2/download/", params={"rq": ACER}).json()["id"]
    r = api.get(f"/archives/{job_id}")
    assert r.status_code == 409 and "PENDING" in r.json()["error"]


def test_if_none_match_compares_weakly(api: Api) -> None:
    doc = api.finished()
    path = doc["download_url"][len(api.url) :]
    etag = api.get(path).headers["ETag"]
    assert api.get(path, headers={"If-None-Match": f"W/{etag}"}).status_code == 304
    # If-Range compares strongly: a weak tag sends the whole file.
    weak = api.get(path, headers={"Range": "bytes=0-9", "If-Range": f"W/{etag}"})
    assert weak.status_code == 200
