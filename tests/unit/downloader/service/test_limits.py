"""Limits, tried over HTTP as a client meets them: per-client rate of new jobs, active jobs
per requester, emails per address, the service-wide queue, the largest download; in memory
for one process and shared through Redis by two."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from downloader.backends import Context
from downloader.build import build_archive
from tests.support.http import api_server
from tests.support.redis_server import running_redis
from tests.unit.downloader.conftest import local_context

ADMIN = "admin-secret-token"
#: Every limit off; each test turns on the one it looks at.
OFF = {
    "new_jobs_per_minute": 0,
    "active_jobs_per_requester": 0,
    "emails_per_address_per_day": 0,
    "max_queued_jobs": 0,
    "max_download_records": 0,
    "admin_tokens": ADMIN,
}


@contextmanager
def _serve(tmp_path: Path, **limits: Any) -> Iterator[tuple[str, Context]]:
    ctx = local_context(tmp_path, **{**OFF, **limits})
    with api_server(ctx) as url:
        yield url, ctx


def _ask(url: str, n: int, *, email: str | None = None, **headers: str) -> requests.Response:
    """Ask for download number ``n`` (a distinct query per ``n``)."""
    params = {"rq": json.dumps({"catalognumber": f"C{n}"})}
    if email:
        params["email"] = email
    return requests.get(f"{url}/v2/download/", params=params, headers=headers, timeout=30)


def _refused(answer: requests.Response, status: int, limit: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    doc: dict[str, Any] = answer.json()
    assert doc["status"] == status and doc["limit"] == limit
    assert limit in doc["error"]
    assert answer.headers["Content-Type"].startswith("application/json")
    return doc


def test_new_jobs_per_minute_counts_only_requests_that_start_a_job(tmp_path: Path) -> None:
    with _serve(tmp_path, new_jobs_per_minute=3) as (url, _ctx):
        first = [_ask(url, n) for n in range(3)]
        assert [a.status_code for a in first] == [200, 200, 200]
        doc = _refused(_ask(url, 3), 429, "new_jobs_per_minute")
        assert doc["name"] == "TooManyRequests"
        wait = int(_ask(url, 4).headers["Retry-After"])
        assert 0 < wait <= 60 and doc["retry_after"] > 0
        # What does not start a job still works: a reused job, its status, its count.
        again = _ask(url, 0)
        assert again.status_code == 200 and again.json()["id"] == first[0].json()["id"]
        assert requests.get(first[1].json()["status_url"], timeout=30).status_code == 200
        count = requests.get(f"{url}/v2/count", params={"rq": '{"genus": "acer"}'}, timeout=30)
        assert count.status_code == 200
        # An admin is not limited.
        assert _ask(url, 5, Authorization=f"Bearer {ADMIN}").status_code == 200
        # A forged forwarding header is not read unless trust_forwarded_for is set.
        _refused(_ask(url, 6, **{"X-Forwarded-For": "203.0.113.9"}), 429, "new_jobs_per_minute")


def test_forwarded_clients_are_counted_apart_behind_a_trusted_proxy(tmp_path: Path) -> None:
    with _serve(tmp_path, new_jobs_per_minute=1, trust_forwarded_for=True) as (url, _ctx):
        assert _ask(url, 0, **{"X-Forwarded-For": "203.0.113.1"}).status_code == 200
        assert _ask(url, 1, **{"X-Forwarded-For": "203.0.113.2"}).status_code == 200
        _refused(_ask(url, 2, **{"X-Forwarded-For": "203.0.113.1"}), 429, "new_jobs_per_minute")


def test_active_jobs_per_requester_frees_a_place_when_a_job_finishes(tmp_path: Path) -> None:
    with _serve(tmp_path, active_jobs_per_requester=2) as (url, ctx):
        mine = [_ask(url, n, email="a@example.org").json()["id"] for n in range(2)]
        doc = _refused(_ask(url, 2, email="a@example.org"), 429, "active_jobs_per_requester")
        assert "a@example.org" in doc["error"]
        # Another requester, and the same client without an address, have their own count.
        assert _ask(url, 3, email="b@example.org").status_code == 200
        assert _ask(url, 4).status_code == 200
        # Joining an existing job is no new job.
        assert _ask(url, 0, email="a@example.org").status_code == 200
        build_archive(mine[0], ctx)
        assert _ask(url, 2, email="a@example.org").status_code == 200


def test_emails_per_address_per_day(tmp_path: Path) -> None:
    with _serve(tmp_path, emails_per_address_per_day=2) as (url, ctx):
        first = _ask(url, 0, email="inbox@example.org").json()
        # The same address on the same job is one email, however often it asks.
        assert _ask(url, 0, email="inbox@example.org").status_code == 200
        assert _ask(url, 1, email="Inbox@example.org").status_code == 200
        _refused(_ask(url, 2, email="inbox@example.org"), 429, "emails_per_address_per_day")
        # Joining another requester's job would send one more email: refused too.
        build_archive(first["id"], ctx)
        other = _ask(url, 3, email="other@example.org").json()
        build_archive(other["id"], ctx)
        _refused(_ask(url, 3, email="inbox@example.org"), 429, "emails_per_address_per_day")
        # Without an address the download is still served.
        assert _ask(url, 2).status_code == 200
    assert sorted(ctx.jobs.get(first["id"]).emails) == ["inbox@example.org"]  # type: ignore[union-attr]


def test_a_full_queue_is_503_for_everyone(tmp_path: Path) -> None:
    with _serve(tmp_path, max_queued_jobs=2) as (url, ctx):
        ids = [_ask(url, n).json()["id"] for n in range(2)]
        answer = _ask(url, 2, Authorization=f"Bearer {ADMIN}")
        doc = _refused(answer, 503, "max_queued_jobs")
        assert doc["name"] == "ServiceFull" and answer.headers["Retry-After"] == "60"
        assert _ask(url, 0).status_code == 200  # an existing job is still answered
        build_archive(ids[0], ctx)
        assert _ask(url, 2).status_code == 200


def test_max_download_records_is_413_at_request_time_unless_admin(tmp_path: Path) -> None:
    with _serve(tmp_path, max_download_records=5) as (url, ctx):
        rq = {"rq": '{"genus": "acer"}'}
        answer = requests.get(f"{url}/v2/download/", params=rq, timeout=30)
        doc = _refused(answer, 413, "max_download_records")
        assert "10 records" in doc["error"] and "5" in doc["error"]
        assert ctx.jobs.pending_jobs() == []
        small = {"rq": '{"catalognumber": "C1"}'}
        assert requests.get(f"{url}/v2/download/", params=small, timeout=30).status_code == 200
        admin = requests.get(
            f"{url}/v2/download/", params=rq, headers={"X-Admin-Token": ADMIN}, timeout=30
        )
        assert admin.status_code == 200


@pytest.mark.integration
def test_two_api_processes_share_the_counters_through_redis(tmp_path: Path) -> None:
    with running_redis() as redis_server, ExitStack() as stack:
        urls = []
        for name in ("one", "two"):
            (tmp_path / name).mkdir()
            url, _ctx = stack.enter_context(
                _serve(tmp_path / name, new_jobs_per_minute=2, limits_storage_url=redis_server.url)
            )
            urls.append(url)
        assert _ask(urls[0], 0).status_code == 200
        assert _ask(urls[1], 1).status_code == 200
        _refused(_ask(urls[0], 2), 429, "new_jobs_per_minute")
        _refused(_ask(urls[1], 3), 429, "new_jobs_per_minute")


def test_unreachable_counters_let_requests_through(tmp_path: Path) -> None:
    from tests.support.smtp import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    with _serve(tmp_path, new_jobs_per_minute=1, limits_storage_url=dead) as (url, _ctx):
        assert [_ask(url, n).status_code for n in range(3)] == [200, 200, 200]
