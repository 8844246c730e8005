"""``downloader fetch`` against a real server: submit, poll, download, resume, verify."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from dwca.read import DwCAReader

from downloader.fetch import FetchError, fetch
from tests.unit.downloader.conftest import ACER, Api


@pytest.fixture
def worker_api(api: Api) -> Api:
    api.dispatcher.build_in = api.ctx  # jobs build in the background, as on a real server
    return api


def test_fetch_saves_a_verified_archive_and_shows_progress(worker_api: Api, tmp_path: Path) -> None:
    out = io.StringIO()
    path = fetch(
        worker_api.url, {"rq": ACER}, output=tmp_path / "acer.zip", poll_seconds=0.05, progress=out
    )
    assert path == tmp_path / "acer.zip" and not (tmp_path / "acer.zip.part").exists()
    with DwCAReader(str(path)) as reader:
        assert len(list(reader)) == 10
    assert "sha256 verified" in out.getvalue()


def test_fetch_resumes_a_partial_download(worker_api: Api, tmp_path: Path) -> None:
    full = fetch(worker_api.url, {"rq": ACER}, output=tmp_path / "a.zip", poll_seconds=0.05)
    content = full.read_bytes()
    target = tmp_path / "b.zip"
    (tmp_path / "b.zip.part").write_bytes(content[:100])  # a download that broke off
    fetch(worker_api.url, {"rq": ACER}, output=target, poll_seconds=0.05)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(content).digest()


def test_fetch_refuses_a_corrupt_file(worker_api: Api, tmp_path: Path) -> None:
    fetch(worker_api.url, {"rq": ACER}, output=tmp_path / "a.zip", poll_seconds=0.05)
    (tmp_path / "c.zip.part").write_bytes(b"\0" * 100)  # wrong bytes: resume cannot fix it
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch(worker_api.url, {"rq": ACER}, output=tmp_path / "c.zip", poll_seconds=0.05)
    assert not (tmp_path / "c.zip").exists() and not (tmp_path / "c.zip.part").exists()


def test_fetch_reports_a_bad_query(worker_api: Api, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="400"):
        fetch(worker_api.url, {"rq": "{nope"}, output=tmp_path / "x.zip")
