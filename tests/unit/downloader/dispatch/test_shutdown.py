"""The local dispatcher's shutdown: running builds get a grace period, then are stopped and
handed back (PENDING, the attempt uncounted); no new build starts; a hurry ends the wait.

The builds are real spawned processes running :func:`slow_build` (importable from here),
which claims its job as a worker does, holds it, then records SUCCESS.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from downloader.backends import Context, make_context
from downloader.config import Settings, load_settings
from downloader.dispatch import local
from downloader.dispatch.local import LocalDispatcher
from downloader.models import Job, now_utc

#: Seconds a slow build holds its job, by the job's catalogue number in the query.
HOLD = {"quick": 1.0, "slow": 120.0}


def slow_build(job_id: str, settings: Settings) -> int:
    ctx = make_context(settings)
    job = ctx.jobs.claim(job_id, max_attempts=settings.max_attempts)
    if job is None:
        return 0
    time.sleep(HOLD[job.request["rq"]["catalognumber"]])
    job.state = "SUCCESS"
    job.completed = now_utc()
    ctx.jobs.save(job)
    return 0


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Context:
    monkeypatch.setattr(local, "run_job", slow_build)
    settings = load_settings(
        {}, overrides={"data_dir": str(tmp_path), "workers": 2, "dispatch_poll_seconds": 0.1}
    )
    return make_context(settings)


def _queue(ctx: Context, name: str) -> str:
    job = Job(
        id=str(uuid.uuid4()),
        query_hash=name,
        request={"rq": {"catalognumber": name}},
        query={},
        data_version="1",
        created=now_utc(),
    )
    stored, _ = ctx.jobs.create_or_reuse(job, reuse_after=None, force=True)
    return stored.id


def _started(ctx: Context, *job_ids: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = [ctx.jobs.get(j) for j in job_ids]
        if all(j is not None and j.state == "STARTED" for j in jobs):
            return
        time.sleep(0.05)
    raise AssertionError(f"not started: {jobs}")


def test_a_build_within_the_grace_finishes_and_one_beyond_it_is_handed_back(
    ctx: Context,
) -> None:
    quick, slow = _queue(ctx, "quick"), _queue(ctx, "slow")
    dispatcher = LocalDispatcher(ctx.settings, ctx=ctx)
    dispatcher.start()
    _started(ctx, quick, slow)
    waiting = _queue(ctx, "quick")  # queued while both workers are busy
    started = time.monotonic()
    dispatcher.stop(grace=8)
    took = time.monotonic() - started
    done, back, queued = (ctx.jobs.get(j) for j in (quick, slow, waiting))
    assert done is not None and done.state == "SUCCESS"
    assert back is not None and back.state == "PENDING" and back.attempts == 0
    assert queued is not None and queued.state == "PENDING" and queued.attempts == 0
    assert 7 < took < 60  # waited out the grace for the slow one, then stopped it
    # The next start finds the handed-back job queued, not interrupted.
    LocalDispatcher(ctx.settings, ctx=ctx).recover()
    again = ctx.jobs.get(slow)
    assert again is not None and again.state == "PENDING" and again.attempts == 0


def test_a_hurry_ends_the_grace_at_once(ctx: Context) -> None:
    slow = _queue(ctx, "slow")
    dispatcher = LocalDispatcher(ctx.settings, ctx=ctx)
    dispatcher.start()
    _started(ctx, slow)
    hurry = threading.Event()
    threading.Timer(0.5, hurry.set).start()
    started = time.monotonic()
    dispatcher.stop(grace=300, hurry=hurry)
    assert time.monotonic() - started < 30
    back = ctx.jobs.get(slow)
    assert back is not None and back.state == "PENDING" and back.attempts == 0
