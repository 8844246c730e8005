"""RedisJobStore against a real redis-server started on a free port for this module."""

from __future__ import annotations

import multiprocessing
import pickle
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from downloader.jobs.redis import RedisJobStore
from downloader.models import Job
from tests.support.redis_server import flush, free_port, running_redis
from tests.unit.downloader.jobs.store_checks import (
    check_counters,
    check_owners,
    check_requeue_stale,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with running_redis() as server:
        yield server.url


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisJobStore]:
    flush(redis_url)
    yield RedisJobStore(redis_url, stale_after_seconds=60)


def make_job(query_hash: str = "h1", data_version: str = "1", **kw: object) -> Job:
    return Job(
        id=str(uuid.uuid4()),
        query_hash=query_hash,
        request={"rq": {"genus": "acer"}, "form": "dwca-csv"},
        query={"rq": {"genus": "Acer"}},
        data_version=data_version,
        **kw,  # type: ignore[arg-type]  # test helper passes Job fields through
    )


def test_round_trip_keeps_every_field(store: RedisJobStore) -> None:
    job = make_job(emails=["a@example.org"], counts={"records": 3}, source="test")
    job.expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    job.total_records = 10
    created, is_new = store.create_or_reuse(job, reuse_after=None)
    assert is_new and created is job
    loaded = store.get(job.id)
    assert loaded == job
    assert store.get("no-such-job") is None


def test_identical_request_reuses_the_job(store: RedisJobStore) -> None:
    first, new1 = store.create_or_reuse(make_job(), reuse_after=None)
    second, new2 = store.create_or_reuse(make_job(), reuse_after=None)
    assert new1 and not new2
    assert second.id == first.id
    other_version, new3 = store.create_or_reuse(make_job(data_version="2"), reuse_after=None)
    assert new3 and other_version.id != first.id


def test_failed_old_or_forced_jobs_are_not_reused(store: RedisJobStore) -> None:
    first, _ = store.create_or_reuse(make_job(), reuse_after=None)
    later = datetime.now(UTC) + timedelta(seconds=5)
    newer, created = store.create_or_reuse(make_job(), reuse_after=later)
    assert created and newer.id != first.id
    forced, created = store.create_or_reuse(make_job(), reuse_after=None, force=True)
    assert created and forced.id != newer.id
    forced.state = "FAILURE"
    store.save(forced)
    again, created = store.create_or_reuse(make_job(), reuse_after=None)
    assert created and again.id not in {first.id, newer.id, forced.id}


def _create_in_process(url: str, barrier: object, out: object) -> None:
    store = RedisJobStore(url)
    barrier.wait()  # type: ignore[attr-defined]  # a multiprocessing.Barrier
    job, created = store.create_or_reuse(make_job("same-query"), reuse_after=None)
    out.put((job.id, created))  # type: ignore[attr-defined]  # a multiprocessing.Queue


def test_concurrent_identical_requests_from_several_processes_start_one_job(
    store: RedisJobStore, redis_url: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    n = 6
    barrier = ctx.Barrier(n)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_create_in_process, args=(redis_url, barrier, out)) for _ in range(n)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
    assert sum(created for _, created in results) == 1
    assert len({job_id for job_id, _ in results}) == 1
    assert len(store.pending_jobs()) == 1


def test_progress_emails_and_cancel(store: RedisJobStore) -> None:
    job, _ = store.create_or_reuse(make_job(emails=["a@example.org"]), reuse_after=None)
    store.add_email(job.id, "b@example.org")
    store.add_email(job.id, "a@example.org")
    store.update_progress(job.id, 5000, 12000)
    # A worker saving its stale copy neither drops the new address nor the cancel flag.
    store.request_cancel(job.id)
    job.state = "STARTED"
    store.save(job)
    loaded = store.get(job.id)
    assert loaded is not None
    assert loaded.emails == ["a@example.org", "b@example.org"]
    assert store.is_cancel_requested(job.id)
    store.update_progress(job.id, 6000, 12000)
    loaded = store.get(job.id)
    assert loaded is not None and (loaded.records_written, loaded.total_records) == (6000, 12000)
    store.update_progress("ghost", 1, 1)
    store.request_cancel("ghost")
    assert store.get("ghost") is None


def test_claim_counts_attempts_and_refuses_live_or_terminal_jobs(store: RedisJobStore) -> None:
    job, _ = store.create_or_reuse(make_job(), reuse_after=None)
    claimed = store.claim(job.id, max_attempts=3)
    assert claimed is not None and claimed.state == "STARTED" and claimed.attempts == 1
    assert claimed.started is not None
    # A second delivery while the first worker is alive (fresh heartbeat) gets nothing.
    assert store.claim(job.id, max_attempts=3) is None
    # With no heartbeat for longer than the stale window, the job is claimable again.
    impatient = RedisJobStore(store.url, stale_after_seconds=0)
    again = impatient.claim(job.id, max_attempts=3)
    assert again is not None and again.attempts == 2
    again.state = "SUCCESS"
    store.save(again)
    assert impatient.claim(job.id, max_attempts=3) is None
    assert store.claim("no-such-job", max_attempts=3) is None
    cancelled, _ = store.create_or_reuse(make_job("other"), reuse_after=None)
    store.request_cancel(cancelled.id)
    assert store.claim(cancelled.id, max_attempts=3) is None


def test_pending_and_expired_indexes_follow_the_state(store: RedisJobStore) -> None:
    a, _ = store.create_or_reuse(make_job("a"), reuse_after=None)
    b, _ = store.create_or_reuse(make_job("b"), reuse_after=None)
    assert [j.id for j in store.pending_jobs()] == [a.id, b.id]
    now = datetime.now(UTC)
    a.state = "SUCCESS"
    a.expires = now - timedelta(minutes=1)
    store.save(a)
    b.state = "SUCCESS"
    b.expires = now + timedelta(days=1)
    store.save(b)
    assert store.pending_jobs() == []
    assert [j.id for j in store.expired_jobs(now)] == [a.id]
    a.state = "EXPIRED"
    store.save(a)
    assert store.expired_jobs(now + timedelta(days=2)) == [store.get(b.id)]


def test_store_is_picklable_and_reports_an_unreachable_redis(store: RedisJobStore) -> None:
    store.ping()
    copy = pickle.loads(pickle.dumps(store))
    assert copy.ping()
    dead = RedisJobStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1)
    with pytest.raises(ConnectionError, match="Redis"):
        dead.get("x")


def test_get_if_changed_follows_every_writer(store: RedisJobStore) -> None:
    job = make_job(emails=["a@example.org"])
    store.create_or_reuse(job, reuse_after=None)
    assert store.get_if_changed(str(uuid.uuid4()), None) is None
    version, loaded = store.get_if_changed(job.id, None) or (None, None)
    assert loaded == store.get(job.id)
    assert store.get_if_changed(job.id, version) == (version, None)
    store.update_progress(job.id, 4, 8)
    newer, changed = store.get_if_changed(job.id, version) or (None, None)
    assert newer != version and changed is not None and changed.records_written == 4
    claimed = store.claim(job.id, max_attempts=3)
    assert claimed is not None
    latest, changed = store.get_if_changed(job.id, newer) or (None, None)
    assert latest != newer and changed is not None and changed.state == "STARTED"
    claimed.state = "SUCCESS"
    store.save(claimed)
    _, changed = store.get_if_changed(job.id, latest) or (None, None)
    assert changed is not None and changed.state == "SUCCESS"


def test_requeue_stale_puts_only_silent_started_jobs_back_to_pending(
    store: RedisJobStore,
) -> None:
    impatient = RedisJobStore(store.url, stale_after_seconds=0)
    check_requeue_stale(store, impatient, make_job)


def test_owners_list_their_jobs(store: RedisJobStore) -> None:
    check_owners(store, make_job)


def test_build_counters_add_up(store: RedisJobStore, redis_url: str) -> None:
    check_counters(store, RedisJobStore(redis_url, stale_after_seconds=60), make_job)
