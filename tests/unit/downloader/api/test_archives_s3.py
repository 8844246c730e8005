"""The stable download link on S3 storage (moto's S3 server on a free port): the status and
the email give ``/archives/{id}/{filename}`` of this service, which redirects to a URL
presigned at each request (or to ``s3_public_base_url``), with the archive's sha256 as the
ETag; 410 once the archive expired; the GBIF file link goes the same way."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from dwca.read import DwCAReader

from downloader.service.downloads import cleanup_expired
from downloader.storage.s3 import S3Storage
from tests.support.http import api_server
from tests.support.s3_server import running_s3
from tests.unit.downloader.conftest import ACER, Api, RecordingDispatcher, local_context

pytestmark = pytest.mark.integration

BUCKET = "dwca-links-archives"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with running_s3() as server:
        boto3.client("s3", endpoint_url=server.endpoint_url).create_bucket(Bucket=BUCKET)
        yield server.endpoint_url


def _api(tmp_path: Path, endpoint: str, **storage: str) -> Iterator[Api]:
    ctx = local_context(tmp_path)
    ctx.storage = S3Storage(BUCKET, endpoint_url=endpoint, prefix=f"{tmp_path.name}/", **storage)
    assert isinstance(ctx.dispatcher, RecordingDispatcher)
    with api_server(ctx) as url:
        yield Api(url, ctx, ctx.dispatcher, ctx.mailer)  # type: ignore[arg-type]  # LogMailer


@pytest.fixture
def api(tmp_path: Path, endpoint: str) -> Iterator[Api]:
    yield from _api(tmp_path, endpoint)


def _signature(url: str) -> str:
    return parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]


def test_the_download_link_is_ours_and_redirects_to_a_fresh_signature(api: Api) -> None:
    doc = api.finished({"rq": ACER, "email": "ana@example.org"})
    link = doc["download_url"]
    assert link.startswith(f"{api.url}/archives/{doc['id']}/dwca-acer-")
    sha = doc["checksum"]["value"]
    first = requests.get(link, allow_redirects=False, timeout=30)
    assert first.status_code == 302
    assert first.headers["ETag"] == f'"{sha}"'
    assert first.headers["Cache-Control"] == "no-store"
    second = requests.get(link, allow_redirects=False, timeout=30)
    # Signed at each request (the signature covers the time, to the second).
    assert urlsplit(first.headers["Location"]).path == urlsplit(second.headers["Location"]).path
    assert "X-Amz-Signature" in first.headers["Location"]
    # HEAD answers the same redirect, headers only.
    head = requests.head(link, timeout=30)
    assert head.status_code == 302 and head.headers["ETag"] == f'"{sha}"' and head.content == b""
    # Followed, the link gives the archive whose sha256 the status and ETag state.
    body = requests.get(link, timeout=60)
    assert body.status_code == 200 and hashlib.sha256(body.content).hexdigest() == sha
    assert len(body.content) == doc["size"]
    path = Path(api.ctx.settings.data_dir) / "copy.zip"
    path.write_bytes(body.content)
    with DwCAReader(str(path)) as reader:
        assert len(list(reader)) == doc["counts"]["records"] == 10
    # A resumed download sends its Range through the redirect.
    part = requests.get(link, headers={"Range": "bytes=100-"}, timeout=60)
    assert part.status_code == 206 and part.content == body.content[100:]
    # The email carries the same link, and the true expiry: the archive's.
    (mail,) = api.mailer.sent
    text = mail.get_content()
    assert link in text and "curl -L -C -" in text
    assert datetime.fromisoformat(doc["expires"]).strftime("%Y-%m-%d") in text
    # The GBIF file link leads to the same archive through the same link.
    gbif = requests.get(
        f"{api.url}/v1/occurrence/download/request/{doc['id']}.zip",
        allow_redirects=False,
        timeout=30,
    )
    assert gbif.status_code == 302 and gbif.headers["Location"] == link


def test_the_link_outlives_the_signature_lifetime(tmp_path: Path, endpoint: str) -> None:
    # A one-second signature: each request is signed afresh, so the link never dies early.
    for api in _api(tmp_path, endpoint, presign_seconds=1):  # type: ignore[arg-type]  # int
        doc = api.finished()
        locations = set()
        for _ in range(2):
            answer = requests.get(doc["download_url"], allow_redirects=False, timeout=30)
            locations.add(answer.headers["Location"])
            assert parse_qs(urlsplit(answer.headers["Location"]).query)["X-Amz-Expires"] == ["1"]
        assert all(_signature(url) for url in locations)


def test_a_public_bucket_redirects_to_the_public_url(tmp_path: Path, endpoint: str) -> None:
    for api in _api(tmp_path, endpoint, public_base_url="https://cdn.example.org/archives"):
        doc = api.finished()
        answer = requests.get(doc["download_url"], allow_redirects=False, timeout=30)
        assert answer.status_code == 302
        assert answer.headers["Location"].startswith(
            f"https://cdn.example.org/archives/{tmp_path.name}/"
        )


def test_an_expired_archive_is_gone_with_the_json_error(api: Api) -> None:
    doc = api.finished()
    # Past its expiry, before cleanup ran: already 410, never a redirect to an object the
    # bucket's lifecycle rule may have deleted.
    job = api.ctx.jobs.get(doc["id"])
    assert job is not None and job.expires is not None
    job.expires = datetime.now(UTC) - timedelta(seconds=1)
    api.ctx.jobs.save(job)
    answer = requests.get(doc["download_url"], allow_redirects=False, timeout=30)
    assert answer.status_code == 410 and answer.json()["name"] == "ArchiveGone"
    # Erased by cleanup: the same answer.
    assert cleanup_expired(api.ctx, now=datetime.now(UTC)) == [doc["id"]]
    for answer in (
        requests.get(doc["download_url"], allow_redirects=False, timeout=30),
        requests.get(f"{api.url}/archives/{doc['id']}", allow_redirects=False, timeout=30),
    ):
        assert answer.status_code == 410
        body = answer.json()
        assert body["status"] == 410 and body["name"] == "ArchiveGone"
        assert "expired" in body["error"]
    assert requests.head(doc["download_url"], timeout=30).status_code == 410


def test_the_link_of_an_unfinished_job_is_a_clear_409(api: Api) -> None:
    job_id = api.get("/v2/download/", params={"rq": ACER}).json()["id"]
    answer = requests.get(f"{api.url}/archives/{job_id}", allow_redirects=False, timeout=30)
    assert answer.status_code == 409 and "PENDING" in answer.json()["error"]
