"""The status endpoint's rendered-response cache: reused only while the stored job is
unchanged, so every change (progress, state, a write from another connection) shows at
once; the body, headers and ETag are those of the uncached document."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from downloader.backends import Context
from downloader.errors import JobNotFound
from downloader.jobs.sqlite import SQLiteJobStore
from downloader.models import Job
from downloader.service import downloads as service
from tests.unit.downloader.conftest import ACER, Api


def _job(**kw: Any) -> Job:
    return Job(
        id="0b8d1c7e-0000-4000-8000-000000000001",
        query_hash="h",
        request={"rq": {"genus": "acer"}, "form": "dwca-csv"},
        query={"rq": ACER},
        data_version="1",
        created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        **kw,
    )


@pytest.fixture
def store(tmp_path: Path) -> SQLiteJobStore:
    return SQLiteJobStore(tmp_path / "jobs.sqlite3")


def test_sqlite_get_if_changed(store: SQLiteJobStore) -> None:
    job = _job(emails=["a@example.org"])
    store.save(job)
    assert store.get_if_changed("0b8d1c7e-0000-4000-8000-00000000ffff", None) is None
    version, loaded = store.get_if_changed(job.id, None) or (None, None)
    assert loaded == store.get(job.id)
    assert store.get_if_changed(job.id, version) == (version, None)
    store.update_progress(job.id, 3, 10)
    newer, changed = store.get_if_changed(job.id, version) or (None, None)
    assert newer != version and changed is not None and changed.records_written == 3
    job.state = "STARTED"
    store.save(job)
    latest, changed = store.get_if_changed(job.id, newer) or (None, None)
    assert latest != newer and changed is not None and changed.state == "STARTED"


def test_every_change_is_visible_at_once_and_unchanged_polls_reuse_the_body(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = api.get("/v2/download/", params={"rq": ACER}).json()["id"]
    rendered: list[str] = []
    real = service.status_document

    def counting(ctx: Context, job: Job, base_url: str) -> dict[str, Any]:
        rendered.append(job.state)
        return real(ctx, job, base_url)

    monkeypatch.setattr(service, "status_document", counting)
    path = f"/v2/download/{job_id}"
    first = api.get(path)
    assert first.json()["records_written"] == 0
    assert api.get(path).content == first.content
    assert api.get(f"/status/{job_id}").content == first.content
    assert len(rendered) == 1  # the same version: rendered once

    for n in (5, 10):
        api.ctx.jobs.update_progress(job_id, n, 20)
        assert api.get(path).json()["records_written"] == n
    # A separate connection, as a worker process would have.
    other = SQLiteJobStore(api.ctx.jobs.path)  # type: ignore[attr-defined]
    other.update_progress(job_id, 19, 20)
    other.close()
    assert api.get(path).json()["percent_complete"] == 95.0

    api.build(job_id)
    done = api.get(path).json()
    assert done["task_status"] == "SUCCESS" and done["complete"] is True
    assert "download_url" in done
    job = api.ctx.jobs.get(job_id)
    assert job is not None
    job.state = "EXPIRED"
    api.ctx.jobs.save(job)
    assert api.get(path).json()["expired"] is True


def test_cached_body_headers_and_etag_match_the_document(api: Api) -> None:
    job_id = api.finished()["id"]
    path = f"/v2/download/{job_id}"
    for _ in range(2):  # rendered, then from the cache
        r = api.get(path)
        expected = json.dumps(
            service.get_status(api.ctx, job_id, base_url=api.url), sort_keys=True, default=str
        )
        assert r.content == (expected + "\n").encode()
        assert r.headers["Content-Type"] == "application/json; charset=utf-8"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert r.headers["ETag"] == f'"{hashlib.sha1(r.content).hexdigest()}"'
        assert r.headers["Content-Length"] == str(len(r.content))
    etag = r.headers["ETag"]
    not_modified = api.get(path, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    job = api.ctx.jobs.get(job_id)
    assert job is not None
    job.expires = (job.expires or datetime.now(UTC)) + timedelta(days=1)
    api.ctx.jobs.save(job)
    changed = api.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    # HEAD: the same headers, no body.
    h = requests.head(api.url + path, timeout=30)
    assert h.status_code == 200 and h.content == b""
    assert h.headers["ETag"] == changed.headers["ETag"]


def test_unknown_and_malformed_ids_are_404_json(api: Api) -> None:
    for job_id in ("0b8d1c7e-0000-4000-8000-00000000ffff", "not-a-uuid"):
        for _ in range(2):
            r = api.get(f"/v2/download/{job_id}")
            assert r.status_code == 404
            assert r.json()["name"] == "NotFound" and r.json()["status"] == 404


def test_upper_case_id_is_the_same_job(api: Api) -> None:
    job_id = api.finished()["id"]
    lower = api.get(f"/v2/download/{job_id}")
    upper = api.get(f"/v2/download/{job_id.upper()}")
    assert upper.status_code == 200 and upper.content == lower.content


def test_the_cache_is_bounded_and_keyed_on_the_base_url(store: SQLiteJobStore, api: Api) -> None:
    cache = service.StatusCache(max_entries=2)
    ctx = replace(api.ctx, jobs=store)
    ids = []
    for i in range(3):
        job = replace(_job(), id=f"0b8d1c7e-0000-4000-8000-00000000000{i}")
        store.save(job)
        ids.append(job.id)
        service.status_response(ctx, job.id, base_url="http://a", cache=cache)
    assert len(cache) == 2 and cache.get(ids[0], "http://a") is None
    other = service.status_response(ctx, ids[2], base_url="http://b", cache=cache)
    assert json.loads(other.body)["status_url"].startswith("http://b/")
    assert len(cache) == 2
    with pytest.raises(JobNotFound):
        service.status_response(
            ctx, "0b8d1c7e-0000-4000-8000-00000000ffff", base_url="", cache=cache
        )


def test_on_presigning_storage_the_status_holds_the_stable_link_and_is_cached(
    api: Api,
) -> None:
    class Presigning:
        calls = 0

        def url(self, key: str, *, base_url: str, filename: str) -> str:
            Presigning.calls += 1
            return f"https://bucket.example/{key}?signature={Presigning.calls}"

    job_id = api.finished()["id"]
    ctx = replace(api.ctx, storage=Presigning())  # type: ignore[arg-type]
    cache = service.StatusCache()
    urls = {
        json.loads(service.status_response(ctx, job_id, base_url="http://svc", cache=cache).body)[
            "download_url"
        ]
        for _ in range(2)
    }
    (url,) = urls
    assert url.startswith(f"http://svc/archives/{job_id}/")
    # Nothing is signed for a status: the link redirects to a fresh signature when used.
    assert Presigning.calls == 0 and len(cache) == 1
