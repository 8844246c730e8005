"""The warm worker pool of the local dispatcher: workers stay up between builds, retire after
``worker_max_jobs``, and a worker that is killed or runs over the time limit takes only its
own job with it (retried, or failed with the limit's message) and is replaced.

The builds are real spawned worker processes running the builders below (importable from
here, as a worker imports them): each claims its job as build_archive does and records the
worker's pid, so the test can tell which process built what.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from downloader.backends import Context, make_context
from downloader.config import Settings, load_settings
from downloader.dispatch import local
from downloader.dispatch.local import LocalDispatcher
from downloader.models import Job, now_utc


def pid_build(job_id: str, settings: Settings) -> int:
    """Claim the job, hold it for the seconds its query names, record this pid, succeed."""
    ctx = make_context(settings)
    job = ctx.jobs.claim(job_id, max_attempts=settings.max_attempts)
    if job is None:
        return 0
    time.sleep(float(job.request["rq"]["hold"]))
    job.state = "SUCCESS"
    job.source = str(os.getpid())
    job.completed = now_utc()
    ctx.jobs.save(job)
    return 0


def nice_build(job_id: str, settings: Settings) -> int:
    """Succeed, recording this worker's niceness."""
    ctx = make_context(settings)
    job = ctx.jobs.claim(job_id, max_attempts=settings.max_attempts)
    if job is None:
        return 0
    job.state = "SUCCESS"
    job.source = str(os.nice(0))
    job.completed = now_utc()
    ctx.jobs.save(job)
    return 0


def _ctx(tmp_path: Path, **overrides: object) -> Context:
    settings = load_settings(
        {},
        overrides={
            "data_dir": str(tmp_path),
            "workers": 1,
            "dispatch_poll_seconds": 0.2,
            "max_attempts": 3,
            **overrides,
        },
    )
    return make_context(settings)


@pytest.fixture(autouse=True)
def _builder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "run_job", pid_build)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Context, LocalDispatcher]]:
    ctx = _ctx(tmp_path)
    dispatcher = LocalDispatcher(ctx.settings, ctx=ctx)
    dispatcher.start()
    try:
        yield ctx, dispatcher
    finally:
        dispatcher.stop(grace=0)


def queue(ctx: Context, dispatcher: LocalDispatcher, hold: float = 0.0) -> str:
    job = Job(
        id=str(uuid.uuid4()),
        query_hash=str(uuid.uuid4()),
        request={"rq": {"hold": hold}},
        query={},
        data_version="1",
        created=now_utc(),
    )
    stored, _ = ctx.jobs.create_or_reuse(job, reuse_after=None, force=True)
    dispatcher.dispatch(stored.id)
    return stored.id


def wait_for(ctx: Context, job_id: str, *states: str, timeout: float = 60) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ctx.jobs.get(job_id)
        if job is not None and job.state in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not {states}: {ctx.jobs.get(job_id)}")


def test_one_warm_worker_builds_job_after_job(
    running: tuple[Context, LocalDispatcher],
) -> None:
    ctx, dispatcher = running
    pids = []
    for _ in range(3):
        job = wait_for(ctx, queue(ctx, dispatcher), "SUCCESS")
        pids.append(job.source)
    assert len(set(pids)) == 1 and pids[0] != str(os.getpid())


def test_a_worker_retires_after_worker_max_jobs(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, worker_max_jobs=1)
    dispatcher = LocalDispatcher(ctx.settings, ctx=ctx)
    dispatcher.start()
    try:
        pids = [wait_for(ctx, queue(ctx, dispatcher), "SUCCESS").source for _ in range(3)]
    finally:
        dispatcher.stop(grace=0)
    assert len(set(pids)) == 3


def test_a_killed_worker_takes_only_its_job_which_runs_again(
    running: tuple[Context, LocalDispatcher],
) -> None:
    ctx, dispatcher = running
    job_id = queue(ctx, dispatcher, hold=30)
    wait_for(ctx, job_id, "STARTED")
    (victim,) = [w.process.pid for w in dispatcher._workers if w.job_id == job_id]
    assert victim is not None
    os.kill(victim, signal.SIGKILL)  # what the OOM killer does
    # Queued again (attempt 2), built by a fresh worker: the job holds 30 s again, so only
    # check that it was started anew by another process.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = ctx.jobs.get(job_id)
        workers = [w for w in dispatcher._workers if w.job_id == job_id]
        if job is not None and job.attempts == 2 and job.state == "STARTED" and workers:
            assert workers[0].process.pid != victim
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"not restarted: {ctx.jobs.get(job_id)}")


def test_a_build_over_the_time_limit_fails_and_its_worker_is_replaced(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, job_time_limit_seconds=2)
    dispatcher = LocalDispatcher(ctx.settings, ctx=ctx)
    dispatcher.start()
    try:
        slow = queue(ctx, dispatcher, hold=60)
        job = wait_for(ctx, slow, "FAILURE", timeout=60)
        assert "longer than the limit of 2 seconds" in (job.error or "")
        # The next job is built by a new worker.
        assert wait_for(ctx, queue(ctx, dispatcher), "SUCCESS").source
    finally:
        dispatcher.stop(grace=0)


@pytest.mark.parametrize("nice", [0, 10])
def test_workers_build_at_a_lower_priority_than_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nice: int
) -> None:
    # Builds yield the CPU to the HTTP API (worker_nice), so polls stay fast under load.
    monkeypatch.setattr(local, "run_job", nice_build)
    ctx = _ctx(tmp_path, worker_nice=nice)
    dispatcher = LocalDispatcher(ctx.settings, ctx=ctx)
    dispatcher.start()
    try:
        job = wait_for(ctx, queue(ctx, dispatcher), "SUCCESS")
    finally:
        dispatcher.stop(grace=0)
    assert job.source == str(min(19, os.nice(0) + nice))


def gate_build(job_id: str, settings: Settings) -> int:
    """Claim the job and hold it until the file its query names exists (a large build the
    test lets finish when it chooses; no timing), then succeed."""
    ctx = make_context(settings)
    job = ctx.jobs.claim(job_id, max_attempts=settings.max_attempts)
    if job is None:
        return 0
    gate = job.request["rq"].get("gate")
    deadline = time.monotonic() + 120
    while gate and not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    job.state = "SUCCESS"
    job.source = str(os.getpid())
    job.completed = now_utc()
    ctx.jobs.save(job)
    return 0


def _sized(ctx: Context, dispatcher: LocalDispatcher, records: int, gate: Path | None) -> str:
    job = Job(
        id=str(uuid.uuid4()),
        query_hash=str(uuid.uuid4()),
        request={"rq": {"gate": str(gate) if gate else ""}},
        query={},
        data_version="1",
        created=now_utc(),
        counted_records=records,
    )
    stored, _ = ctx.jobs.create_or_reuse(job, reuse_after=None, force=True)
    dispatcher.dispatch(stored.id, records=records)
    return stored.id


@pytest.mark.parametrize("reserve", [1, 0])
def test_a_small_job_finishes_while_large_ones_hold_the_other_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reserve: int
) -> None:
    """Two workers (the default), two large builds queued first, then a small one: the
    small job is built while the first large one is still building and the second waits
    (one worker is kept for small jobs). Without the reserve both workers take large jobs
    and the small one waits behind them (the parametrised control case)."""
    monkeypatch.setattr(local, "run_job", gate_build)
    ctx = _ctx(tmp_path, workers=2, large_job_records=1000, small_job_workers=reserve)
    dispatcher = LocalDispatcher(ctx.settings, ctx=ctx)
    gate = tmp_path / "release"
    dispatcher.start()
    try:
        big1 = _sized(ctx, dispatcher, 5000, gate)
        wait_for(ctx, big1, "STARTED")
        big2 = _sized(ctx, dispatcher, 5000, gate)
        if not reserve:
            wait_for(ctx, big2, "STARTED")
        small = _sized(ctx, dispatcher, 10, None)
        if reserve:
            done = wait_for(ctx, small, "SUCCESS")
            assert ctx.jobs.get(big1).state == "STARTED"  # type: ignore[union-attr]
            assert ctx.jobs.get(big2).state == "PENDING"  # type: ignore[union-attr]
            assert done.completed is not None
        gate.touch()
        finished = {j: wait_for(ctx, j, "SUCCESS").completed for j in (big1, big2, small)}
    finally:
        dispatcher.stop(grace=0)
    if reserve:
        assert finished[small] < finished[big1] < finished[big2]  # type: ignore[operator]
    else:
        # Both workers held a large build: the small job waited for one of them.
        assert finished[small] > min(finished[big1], finished[big2])  # type: ignore[type-var]
