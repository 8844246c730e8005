"""Builds whose worker died: a live job is left to its worker, a silent one is queued again."""

from __future__ import annotations

from pathlib import Path

import pytest

from downloader.build import RunningElsewhere, build_archive, requeue_stale
from downloader.jobs.sqlite import SQLiteJobStore
from tests.unit.downloader.build.test_run import Recorder, archive_path, make_ctx, request


def test_a_delivery_that_finds_its_job_live_elsewhere_says_so(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    job_id = request(ctx)
    assert ctx.jobs.claim(job_id, max_attempts=3) is not None  # another worker has it
    with pytest.raises(RunningElsewhere):
        build_archive(job_id, ctx)
    job = ctx.jobs.get(job_id)
    assert job is not None and job.state == "STARTED" and job.attempts == 1


def test_a_job_whose_worker_died_is_queued_again_and_built(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, stale_job_seconds=3600)
    job_id = request(ctx)
    assert ctx.jobs.claim(job_id, max_attempts=3) is not None  # ... and its worker died
    dispatcher = Recorder()
    assert requeue_stale(ctx, dispatcher) == []  # its heartbeat is still fresh
    ctx.jobs = SQLiteJobStore(tmp_path / "jobs.sqlite3", stale_after_seconds=0)
    assert requeue_stale(ctx, dispatcher) == [job_id]
    assert dispatcher.ids == [job_id]
    queued = ctx.jobs.get(job_id)
    assert queued is not None and queued.state == "PENDING"
    job = build_archive(job_id, ctx)
    assert job is not None and job.state == "SUCCESS" and job.attempts == 2
    assert archive_path(ctx, job_id).exists()
    # The first message, redelivered late by the broker, does nothing.
    assert build_archive(job_id, ctx) is None


def test_a_job_that_keeps_killing_its_worker_is_given_up(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, max_attempts=2)
    ctx.jobs = SQLiteJobStore(tmp_path / "jobs.sqlite3", stale_after_seconds=0)
    job_id = request(ctx)
    dispatcher = Recorder()
    for _ in range(2):
        assert ctx.jobs.claim(job_id, max_attempts=2) is not None  # its worker dies
        assert requeue_stale(ctx, dispatcher) == [job_id]
    job = build_archive(job_id, ctx)
    assert job is not None and job.state == "FAILURE"
    assert "interrupted 2 times" in (job.error or "")
    assert requeue_stale(ctx, dispatcher) == []


def test_a_cancelled_job_whose_worker_died_ends_cancelled(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    ctx.jobs = SQLiteJobStore(tmp_path / "jobs.sqlite3", stale_after_seconds=0)
    job_id = request(ctx)
    assert ctx.jobs.claim(job_id, max_attempts=3) is not None
    ctx.jobs.request_cancel(job_id)
    assert requeue_stale(ctx, Recorder()) == [job_id]
    job = build_archive(job_id, ctx)
    assert job is not None and job.state == "CANCELLED"


def test_a_job_no_worker_took_is_sent_again_once_per_window(tmp_path: Path) -> None:
    from datetime import timedelta

    from downloader.build import redispatch_unclaimed
    from downloader.models import now_utc

    ctx = make_ctx(tmp_path, stale_job_seconds=5)
    waiting = request(ctx)  # its message is held by a worker that died before claiming it
    fresh = request(ctx, rq='{"genus": "quercus"}')
    retrying = request(ctx, rq='{"genus": "pinus"}')
    overdue = request(ctx, rq='{"genus": "betula"}')
    for job_id in (waiting, retrying, overdue):
        job = ctx.jobs.get(job_id)
        assert job is not None
        job.created = now_utc() - timedelta(seconds=300)
        if job_id == retrying:  # waits out its own backoff after a transient error
            job.attempts = job.retries = 1
            job.retry_at = now_utc() + timedelta(seconds=60)
        if job_id == overdue:  # the worker holding its delayed retry died
            job.attempts = job.retries = 1
            job.retry_at = now_utc() - timedelta(seconds=30)
        ctx.jobs.save(job)
    dispatcher = Recorder()
    assert sorted(redispatch_unclaimed(ctx, dispatcher)) == sorted([waiting, overdue])
    assert redispatch_unclaimed(ctx, dispatcher) == []  # not again within ten windows
    assert sorted(dispatcher.ids) == sorted([waiting, overdue])
    assert fresh not in dispatcher.ids and retrying not in dispatcher.ids
    job = build_archive(waiting, ctx)
    assert job is not None and job.state == "SUCCESS"
    assert build_archive(waiting, ctx) is None  # the first message, late: nothing to do
