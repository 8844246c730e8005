"""The SQLite job store: atomic create-or-reuse, reuse rules, claims and retries, durability."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from downloader.jobs.sqlite import SQLiteJobStore
from downloader.models import Job
from tests.unit.downloader.jobs.store_checks import (
    check_counters,
    check_owners,
    check_requeue_stale,
)


def make_job(query_hash: str = "h1", data_version: str = "1", **kw: object) -> Job:
    return Job(
        id=str(uuid.uuid4()),
        query_hash=query_hash,
        request={"rq": {"genus": "acer"}},
        query={"rq": {"genus": "acer"}},
        data_version=data_version,
        **kw,  # type: ignore[arg-type]  # test helper passes Job fields through
    )


@pytest.fixture
def store(tmp_path: Path) -> SQLiteJobStore:
    return SQLiteJobStore(tmp_path / "jobs.sqlite3")


def test_saved_job_reads_back_with_every_field(store: SQLiteJobStore) -> None:
    now = datetime.now(UTC)
    job = make_job(created=now, expires=now + timedelta(days=30), emails=["a@example.org"])
    job.counts = {"records": 3}
    job.sha256 = "ab" * 32
    store.save(job)
    back = store.get(job.id)
    assert back == job
    assert store.get("no-such-job") is None


def test_second_identical_request_reuses_the_job(store: SQLiteJobStore) -> None:
    first, created = store.create_or_reuse(make_job(), reuse_after=None)
    again, created_again = store.create_or_reuse(make_job(), reuse_after=None)
    assert created and not created_again
    assert again.id == first.id


@pytest.mark.parametrize("state", ["FAILURE", "CANCELLED", "EXPIRED"])
def test_failed_cancelled_or_expired_jobs_are_not_reused(store: SQLiteJobStore, state: str) -> None:
    first, _ = store.create_or_reuse(make_job(), reuse_after=None)
    first.state = state  # type: ignore[assignment]  # parametrised over valid states
    store.save(first)
    second, created = store.create_or_reuse(make_job(), reuse_after=None)
    assert created and second.id != first.id


def test_reuse_needs_same_data_version_and_window(store: SQLiteJobStore) -> None:
    old = make_job(created=datetime.now(UTC) - timedelta(hours=30))
    store.create_or_reuse(old, reuse_after=None)
    window = datetime.now(UTC) - timedelta(hours=23)
    fresh, created = store.create_or_reuse(make_job(), reuse_after=window)
    assert created and fresh.id != old.id
    other_version, created = store.create_or_reuse(make_job(data_version="2"), reuse_after=window)
    assert created and other_version.id != fresh.id


def test_force_always_creates(store: SQLiteJobStore) -> None:
    first, _ = store.create_or_reuse(make_job(), reuse_after=None)
    forced, created = store.create_or_reuse(make_job(), reuse_after=None, force=True)
    assert created and forced.id != first.id
    # The newest job is the one reused afterwards.
    again, _ = store.create_or_reuse(make_job(), reuse_after=None)
    assert again.id == forced.id


def test_concurrent_identical_requests_in_threads_create_one_job(store: SQLiteJobStore) -> None:
    barrier = threading.Barrier(12)
    ids: list[str] = []
    lock = threading.Lock()

    def request() -> None:
        barrier.wait()
        job, _ = store.create_or_reuse(make_job("same"), reuse_after=None)
        with lock:
            ids.append(job.id)

    threads = [threading.Thread(target=request) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 12 and len(set(ids)) == 1


def _request_in_process(
    path: str, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue[str]
) -> None:
    store = SQLiteJobStore(path)
    barrier.wait()
    job, _ = store.create_or_reuse(make_job("proc"), reuse_after=None)
    out.put(job.id)


def test_concurrent_identical_requests_in_processes_create_one_job(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.sqlite3")
    SQLiteJobStore(path)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    out: multiprocessing.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_request_in_process, args=(path, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = {out.get(timeout=60) for _ in procs}
    for p in procs:
        p.join(60)
    assert len(ids) == 1


def test_emails_are_added_and_never_lost_by_a_stale_save(store: SQLiteJobStore) -> None:
    job, _ = store.create_or_reuse(make_job(emails=["a@example.org"]), reuse_after=None)
    stale_copy = store.get(job.id)
    assert stale_copy is not None
    store.add_email(job.id, "b@example.org")
    store.add_email(job.id, "b@example.org")
    stale_copy.state = "SUCCESS"
    store.save(stale_copy)  # a worker's copy from before b@ asked
    back = store.get(job.id)
    assert back is not None and back.emails == ["a@example.org", "b@example.org"]


def test_claim_counts_attempts_and_refuses_live_or_terminal_jobs(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "j.sqlite3", stale_after_seconds=3600)
    job, _ = store.create_or_reuse(make_job(), reuse_after=None)
    claimed = store.claim(job.id, max_attempts=3)
    assert claimed is not None and claimed.state == "STARTED" and claimed.attempts == 1
    # Its worker is alive (recent heartbeat): nobody else may take it.
    assert store.claim(job.id, max_attempts=3) is None
    claimed.state = "SUCCESS"
    store.save(claimed)
    assert store.claim(job.id, max_attempts=3) is None
    assert store.claim("missing", max_attempts=3) is None


def test_a_started_job_whose_worker_went_silent_is_claimed_again(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "j.sqlite3", stale_after_seconds=1e-9)
    job, _ = store.create_or_reuse(make_job(), reuse_after=None)
    assert store.claim(job.id, max_attempts=3) is not None
    assert [j.id for j in store.pending_jobs()] == [job.id]
    again = store.claim(job.id, max_attempts=3)
    assert again is not None and again.attempts == 2


def test_cancel_flag_blocks_claims(store: SQLiteJobStore) -> None:
    job, _ = store.create_or_reuse(make_job(), reuse_after=None)
    assert not store.is_cancel_requested(job.id)
    store.request_cancel(job.id)
    assert store.is_cancel_requested(job.id)
    assert store.claim(job.id, max_attempts=3) is None


def test_progress_and_expiry_queries(store: SQLiteJobStore) -> None:
    now = datetime.now(UTC)
    done = make_job("a", state="SUCCESS", expires=now - timedelta(seconds=1))
    live = make_job("b", state="SUCCESS", expires=now + timedelta(days=1))
    store.save(done)
    store.save(live)
    store.update_progress(live.id, 500, 1000)
    back = store.get(live.id)
    assert back is not None and (back.records_written, back.total_records) == (500, 1000)
    assert [j.id for j in store.expired_jobs(now)] == [done.id]
    assert store.pending_jobs() == []


def test_jobs_survive_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    job, _ = SQLiteJobStore(path).create_or_reuse(make_job(), reuse_after=None)
    reopened = SQLiteJobStore(path)
    assert [j.id for j in reopened.pending_jobs()] == [job.id]


def test_requeue_stale_puts_only_silent_started_jobs_back_to_pending(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    patient = SQLiteJobStore(path, stale_after_seconds=3600)
    check_requeue_stale(patient, SQLiteJobStore(path, stale_after_seconds=0), make_job)


def test_owners_list_their_jobs(tmp_path: Path) -> None:
    check_owners(SQLiteJobStore(tmp_path / "o.sqlite3"), make_job)


def test_build_counters_add_up(tmp_path: Path) -> None:
    check_counters(
        SQLiteJobStore(tmp_path / "c.sqlite3"), SQLiteJobStore(tmp_path / "c.sqlite3"), make_job
    )
