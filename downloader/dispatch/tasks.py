"""Celery entry points only: take a job id, call the domain function, record the outcome.

``build_archive`` runs :func:`downloader.build.build_archive`, the same function the embedded
worker processes run. It is idempotent by job id (the job store's claim decides), retries
only transient errors (the record source, the storage or the job store unreachable:
``RetryLater``) after the delay the domain code chose (exponential backoff up to
``transient_retry_seconds``), and leaves every other outcome recorded in the job by the domain code.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.exceptions import TimeLimitExceeded
from celery import Task

from downloader.backends import Context, make_context
from downloader.build import RetryLater, RunningElsewhere, fail_job
from downloader.build import build_archive as build_archive_job
from downloader.config import load_settings
from downloader.dispatch.celery_app import app

log = logging.getLogger(__name__)

_context: Context | None = None


def worker_context() -> Context:
    """This process's ports, built once from the environment's settings."""
    global _context
    if _context is None:
        _context = make_context(load_settings())
    return _context


class BuildTask(Task):
    """Records a hard time-limit kill in the job (the build itself never sees it)."""

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Celery's hook for a failed task: a hard time-limit kill fails the job in words."""
        if not isinstance(exc, TimeLimitExceeded) or not args:
            return
        ctx = worker_context()
        job = ctx.jobs.get(str(args[0]))
        if job is None or job.state in ("SUCCESS", "FAILURE", "CANCELLED", "EXPIRED"):
            return
        limit = ctx.settings.job_time_limit_seconds
        fail_job(
            ctx,
            job,
            f"The archive took longer than the service's limit of {limit} seconds to build "
            "and was stopped. Please narrow the query (fewer records) and request it again.",
            reason="time_limit",
        )


#: How many times a delivery that finds its job live elsewhere looks again, one staleness
#: window apart, before it leaves the job to its worker (and to serve's sweep for dead
#: workers, downloader.build.recovery).
ELSEWHERE_LOOKS = 2


@app.task(bind=True, base=BuildTask, name="downloader.build_archive", max_retries=None)
def build_archive(self: Task, job_id: str, looked: int = 0) -> str | None:
    """Build the archive of ``job_id``; returns the job's final state (or None).

    ``looked`` counts the deliveries that found the job live elsewhere (see
    :class:`~downloader.build.RunningElsewhere`).
    """
    ctx = worker_context()
    try:
        job = build_archive_job(job_id, ctx)
    except RunningElsewhere as exc:
        # Killing a pool process makes Celery redeliver at once, while the dead build's
        # heartbeat is still fresh: look again once it could be stale, so that the job is
        # claimed then, instead of dropping the message and leaving the job STARTED.
        if looked >= ELSEWHERE_LOOKS:
            log.info("job %s is being built elsewhere; leaving it to that worker", job_id)
            return None
        delay = ctx.settings.stale_job_seconds + 1
        log.info("%s; looking again in %g s", exc, delay)
        raise self.retry(
            args=[job_id], kwargs={"looked": looked + 1}, countdown=delay, max_retries=None
        ) from exc
    except RetryLater as exc:
        # The domain code put the job back to PENDING with its backoff (retry_at) and gives
        # up with a FAILURE after transient_retry_seconds; Celery only waits and redelivers.
        log.warning("job %s: %s; retrying in %.0f s", job_id, exc.cause, exc.delay)
        raise self.retry(
            args=[job_id], kwargs={}, countdown=exc.delay, exc=exc, max_retries=None
        ) from exc
    return None if job is None else job.state
