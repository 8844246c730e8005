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

The embedded dispatcher does not need it: it watches its worker processes itself.
"""

from __future__ import annotations

import logging

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
        dispatcher.dispatch(job_id)
    return ids
