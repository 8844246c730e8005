"""Builds whose worker died: found by their stale heartbeat and queued again.

A worker killed outright (the OOM killer, ``kill -9``, a lost machine) records nothing. Its
job stays STARTED, and a queue such as Celery on Redis hands the unacknowledged message
out again only after the broker's visibility timeout, which must exceed the longest build
(hours). :func:`requeue_stale` closes that gap: run every half staleness window by
``serve`` (and by ``downloader cleanup``), it puts each STARTED job whose heartbeat is
older than ``stale_job_seconds`` back to PENDING and dispatches it again, so the job is
built again within about ``stale_job_seconds`` plus a sweep of its worker's death. The
claim in :func:`~downloader.build.build_archive` still decides who builds, so a late
redelivery of the first message is harmless, and attempts stay counted (a job that keeps
killing its worker fails after ``max_attempts`` with a message that says so).

A message can also be held by a worker that dies before it claims the job (it had fetched
the message ahead, or holds it for a delayed retry after a transient error): the job stays
PENDING until the broker's visibility timeout. :func:`redispatch_unclaimed`, run by the
same sweep, sends a PENDING job that no worker has claimed for ``stale_job_seconds``, or one
whose ``retry_at`` passed that long ago, once more (at most once per ten windows per job):
whichever message comes first claims it, the other finds nothing to do.

The embedded dispatcher does not need either: it watches its worker processes itself.
"""

from __future__ import annotations

import logging
import threading
import time

from downloader.backends import Context
from downloader.interfaces import Dispatcher

log = logging.getLogger(__name__)


def requeue_stale(ctx: Context, dispatcher: Dispatcher) -> list[str]:
    """Requeue every STARTED job whose heartbeat went stale and give it to ``dispatcher``
    again; their ids."""
    ids = ctx.jobs.requeue_stale()
    for job_id in ids:
        log.warning(
            "job %s: no heartbeat for %g s, its worker is gone; queued again",
            job_id,
            ctx.settings.stale_job_seconds,
        )
        job = ctx.jobs.get(job_id)
        dispatcher.dispatch(job_id, records=job.counted_records if job else None)
    return ids


_resent: dict[str, float] = {}
_resent_lock = threading.Lock()


def redispatch_unclaimed(ctx: Context, dispatcher: Dispatcher) -> list[str]:
    """Send again every PENDING job that no worker has claimed (attempts 0) for longer than
    ``stale_job_seconds`` since it was created, or whose retry after a transient error is
    overdue by that long (the worker holding the delayed message died), at most once per
    ten windows each; their ids. A job still waiting out its backoff is left alone."""
    window = ctx.settings.stale_job_seconds
    now = time.time()
    monotonic = time.monotonic()
    ids = []
    for job in ctx.jobs.pending_jobs():
        if job.state != "PENDING":
            continue
        if job.retry_at is not None:
            if now - job.retry_at.timestamp() <= window:
                continue
        elif job.attempts > 0 or job.created is None or now - job.created.timestamp() <= window:
            continue
        with _resent_lock:
            if monotonic - _resent.get(job.id, -1e18) < 10 * window:
                continue
            _resent[job.id] = monotonic
            if len(_resent) > 100_000:
                _resent.clear()
        log.info("job %s: no worker took it for %g s; sent again", job.id, window)
        dispatcher.dispatch(job.id, records=job.counted_records)
        ids.append(job.id)
    return ids
