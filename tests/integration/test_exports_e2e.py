"""The automatic export after ingest, end to end: on the embedded default (``downloader
ingest`` then ``downloader serve`` as real processes, archives on local disk) and on S3
(moto's server; the export URL answers 303 to a presigned URL). Every archive is re-read
with python-dwca-reader."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import boto3
import pytest
import requests

from downloader.interfaces import EXPORT_KEY_PREFIX
from downloader.jobs.sqlite import SQLiteJobStore
from downloader.service import exports
from downloader.storage.s3 import S3Storage
from tests.support.s3_server import running_s3
from tests.unit.downloader.export_support import (
    ADMIN,
    IDB,
    Service,
    read_zip,
    running_service,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOWNLOADER = [sys.executable, "-m", "downloader.cli"]
SAMPLE = ROOT / "tests" / "fixtures" / "dwca" / "dwca-simple-test-archive.zip"
SAMPLE_RECORDSET = "http://localhost:8080/ipt-2.0.3/resource.do?id=simple-test-archive/v1"
DEADLINE = 180.0


def _ingest(data_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [*DOWNLOADER, "ingest", "--data-dir", str(data_dir), *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def test_cli_ingest_queues_the_export_unless_told_not_to(tmp_path: Path) -> None:
    _ingest(tmp_path, "--synthetic", "20", "--recordset", "rs-cli")
    jobs = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    queued = jobs.jobs_for_hash(exports.export_hash("rs-cli"), kind="export")
    assert [(j.data_version, j.state) for j in queued] == [("1", "PENDING")]
    assert queued[0].filename is not None and queued[0].filename.startswith("rs-cli_1.")
    _ingest(tmp_path, "--synthetic", "5", "--recordset", "rs-quiet", "--no-export")
    assert jobs.jobs_for_hash(exports.export_hash("rs-quiet"), kind="export") == []


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Ingest first (no server running), then start ``downloader serve``."""
    from tests.support.smtp import free_port

    _ingest(tmp_path, "--synthetic", "300", "--recordset", "rs-e2e")
    _ingest(tmp_path, str(SAMPLE))
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {
        **os.environ,
        "DOWNLOADER_DISPATCH_POLL_SECONDS": "0.5",
        "DOWNLOADER_ADMIN_TOKENS": ADMIN,
    }
    with Path(log_path).open("wb") as log:
        proc = subprocess.Popen(
            [*DOWNLOADER, "serve", "--data-dir", str(tmp_path), "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + "/healthz", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield url, tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def _wait_for(url: str) -> requests.Response:
    """GET until the export is no longer being built (208)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        r = requests.get(url, timeout=60, allow_redirects=False)
        if r.status_code != 208:
            return r
        assert time.monotonic() < deadline, "the export was still being built"
        time.sleep(0.3)


def test_embedded_export_after_ingest_end_to_end(serve: tuple[str, Path]) -> None:
    url, data_dir = serve
    r = _wait_for(url + "/recordsets/rs-e2e/1/export/")
    assert r.status_code == 200, r.text
    assert "rs-e2e_1." in r.headers["Content-Disposition"]
    archive = read_zip(r.content, data_dir / "e2e.zip")
    assert len(archive.core_ids) == 300
    assert {row[IDB + "recordset"] for row in archive.core_rows} == {"rs-e2e"}
    versions = requests.get(url + "/recordsets/rs-e2e/versions/", timeout=60).json()
    assert versions["versions"][0]["export"]["state"] == "ready"
    # The sample archive's recordset id is a URL: its export is reachable percent-encoded.
    sample = quote(SAMPLE_RECORDSET, safe="")
    listed = requests.get(f"{url}/recordsets/{sample}/versions/", timeout=60).json()
    export_url = listed["versions"][0]["export"]["url"]
    assert export_url == f"{url}/recordsets/{sample}/1/export/"
    r = _wait_for(export_url)
    assert r.status_code == 200
    assert len(read_zip(r.content, data_dir / "sample.zip").core_ids) == 2


@pytest.fixture
def s3_service(tmp_path: Path) -> Iterator[Service]:
    with running_s3() as server:
        boto3.client("s3", endpoint_url=server.endpoint_url).create_bucket(Bucket="exports")
        storage = S3Storage("exports", endpoint_url=server.endpoint_url, prefix="t/")
        with running_service(tmp_path, storage=storage) as svc:
            yield svc


def test_s3_export_after_ingest_redirects_to_a_presigned_url(
    s3_service: Service, tmp_path: Path
) -> None:
    svc = s3_service
    svc.ingest(60, "rs-s3")
    path = "/recordsets/rs-s3/1/export/"
    assert svc.get(path).status_code == 208
    svc.build_all()
    for method in ("GET", "HEAD"):
        r = svc.request(method, path)
        assert r.status_code == 303, method
        assert r.content == b""
    location = svc.get(path).headers["Location"]
    assert location.startswith("http") and "Signature" in location
    fetched = requests.get(location, timeout=60)
    assert fetched.status_code == 200
    assert "rs-s3_1." in fetched.headers.get("Content-Disposition", "")
    archive = read_zip(fetched.content, tmp_path / "s3.zip")
    assert len(archive.core_ids) == 60
    job = svc.get("/recordsets/rs-s3/versions/").json()["versions"][0]["export"]
    assert job["state"] == "ready"
    doc = svc.get(job["job"]).json()
    assert doc["result"]["size"] == len(fetched.content)
    # Stored outside the prefix whose lifecycle rule expires downloads (t/).
    storage = svc.ctx.storage
    assert isinstance(storage, S3Storage)
    key = f"{EXPORT_KEY_PREFIX}{doc['id']}.zip"
    assert storage.exists(key)
    assert storage.object_key(key) == f"exports/{doc['id']}.zip"
    # An admin deletes it: gone from the bucket, 204 afterwards.
    assert svc.request("DELETE", path, headers={"X-Admin-Token": ADMIN}).status_code == 204
    assert svc.get(path).status_code == 204
    # S3 answers 403 or 404 for a missing key, depending on the caller's list permission.
    assert requests.get(location, timeout=60).status_code in (403, 404)
    assert not storage.exists(key)
