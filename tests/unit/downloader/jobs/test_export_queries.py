"""What exports and cancel need from both job stores (SQLite and a real redis-server):
jobs listed by query hash across data versions, and no reuse of a job asked to cancel."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from downloader.interfaces import JobStore
from downloader.jobs.redis import RedisJobStore
from downloader.jobs.sqlite import SQLiteJobStore
from downloader.models import Job
from tests.support.redis_server import flush, running_redis


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with running_redis() as server:
        yield server.url


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> JobStore:
    if request.param == "sqlite":
        return SQLiteJobStore(tmp_path / "jobs.sqlite3")
    url = request.getfixturevalue("redis_url")
    flush(url)
    return RedisJobStore(url)


def _job(query_hash: str, data_version: str, *, kind: str = "export", age: int = 0) -> Job:
    return Job(
        id=str(uuid.uuid4()),
        query_hash=query_hash,
        request={"rq": {"recordset": "rs"}},
        query={},
        data_version=data_version,
        kind=kind,  # type: ignore[arg-type]  # a Literal chosen by the caller of this helper
        created=datetime.now(UTC) - timedelta(seconds=age),
    )


def test_jobs_for_hash_lists_every_version_newest_first(store: JobStore) -> None:
    v1, _ = store.create_or_reuse(_job("rs-hash", "1", age=30), reuse_after=None)
    v2, _ = store.create_or_reuse(_job("rs-hash", "2", age=20), reuse_after=None)
    v2.state = "EXPIRED"
    store.save(v2)
    v2b, created = store.create_or_reuse(_job("rs-hash", "2", age=10), reuse_after=None)
    assert created  # an expired (deleted) export is not reused
    store.create_or_reuse(_job("other", "1"), reuse_after=None)
    store.create_or_reuse(_job("rs-hash", "1", kind="download"), reuse_after=None)
    found = store.jobs_for_hash("rs-hash", kind="export")
    assert [j.id for j in found] == [v2b.id, v2.id, v1.id]
    assert [j.data_version for j in found] == ["2", "2", "1"]
    assert found[1].state == "EXPIRED"
    assert store.jobs_for_hash("nothing", kind="export") == []


def test_a_job_asked_to_cancel_is_not_reused(store: JobStore) -> None:
    first, _ = store.create_or_reuse(_job("q", "1", kind="download"), reuse_after=None)
    claimed = store.claim(first.id, max_attempts=3)
    assert claimed is not None and claimed.state == "STARTED"
    same, created = store.create_or_reuse(_job("q", "1", kind="download"), reuse_after=None)
    assert not created and same.id == first.id
    store.request_cancel(first.id)
    # Still STARTED until its worker notices, but a new requester gets a fresh job.
    fresh, created = store.create_or_reuse(_job("q", "1", kind="download"), reuse_after=None)
    assert created and fresh.id != first.id
    again, created = store.create_or_reuse(_job("q", "1", kind="download"), reuse_after=None)
    assert not created and again.id == fresh.id
