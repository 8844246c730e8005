"""``build_archive(job_id, ctx)``: the one domain function that turns a job into an archive.

Both the local worker processes (:mod:`downloader.dispatch.worker`) and Celery tasks
(:mod:`downloader.dispatch.tasks`) call it. It is
idempotent by job id: it claims the job first, and a job that is finished, cancelled or
running elsewhere is left alone.

The work is a stream: source batches -> write_archive -> a storage writer under a temporary
name -> an atomic publish. Nothing is published unless write_archive returned normally, so a
truncated archive never becomes visible.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from datetime import datetime, timedelta
from typing import Any

from archive import (
    ArchiveCancelled,
    ArchiveError,
    ArchiveResult,
    ArchiveSpec,
    DataFile,
    dwca,
    write_archive,
)
from downloader.backends import Context
from downloader.build.plan import ArchivePlan, archive_filename, archive_key, plan_archive
from downloader.build.progress import ProgressReporter
from downloader.build.stats import record_outcome
from downloader.errors import JobStoreUnavailable, SourceUnavailable, StorageUnavailable
from downloader.links import content_type, download_url, job_base_url, status_url
from downloader.models import Job, now_utc
from notify.service import send_failure_email, send_ready_email

log = logging.getLogger(__name__)

#: Errors worth another attempt: the record source, the storage or the job store was
#: unreachable for a while (each system's module translates its vendor's errors into these).
TRANSIENT = (SourceUnavailable, StorageUnavailable, JobStoreUnavailable)

#: The longest wait between two attempts after transient errors.
RETRY_CAP_SECONDS = 300.0


class RetryLater(Exception):
    """The build hit a transient error and the job is PENDING again, due at ``retry_at``
    (``delay`` seconds from now).

    Celery tasks turn it into ``self.retry(countdown=delay)``; local workers just exit (the
    dispatcher starts the job again once ``retry_at`` has passed).
    """

    def __init__(self, job_id: str, cause: BaseException, *, delay: float = 0.0) -> None:
        super().__init__(f"job {job_id} will be retried in {delay:g} s: {cause}")
        self.job_id = job_id
        self.cause = cause
        self.delay = delay


def retry_delay(retries: int, *, first: float, cap: float = RETRY_CAP_SECONDS) -> float:
    """Exponential backoff: ``first``, twice that, four times ..., at most ``cap`` seconds."""
    return float(min(cap, first * 2 ** min(retries, 32)))


class RunningElsewhere(Exception):
    """The job is STARTED and its heartbeat is fresh: another worker builds it, or one that
    died moments ago has not gone stale yet. A queue that redelivers a dead worker's
    message at once (Celery, when a pool process is killed) must try again once the
    heartbeat could be stale, not drop the message; local workers just exit.
    """

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} is being built by another worker")
        self.job_id = job_id


def notify_ready(ctx: Context, job: Job) -> None:
    """Mail every address of the (freshly reloaded) job that its archive is ready."""
    current = ctx.jobs.get(job.id) or job
    base = job_base_url(ctx.settings, current)
    send_ready_email(
        ctx.mailer,
        current,
        download_url=download_url(ctx, current, base),
        status_url=status_url(current, base),
    )


def fail_job(ctx: Context, job: Job, error: str, *, reason: str = "unexpected") -> Job:
    """Mark the job FAILURE with a message for the researcher and mail every address;
    ``reason`` (one of :data:`~downloader.build.stats.FAILURE_REASONS`) is counted for
    ``/metrics``."""
    job.state = "FAILURE"
    job.error = error
    job.completed = now_utc()
    ctx.jobs.save(job)
    record_outcome(ctx.jobs, job, reason=reason)
    current = ctx.jobs.get(job.id) or job
    send_failure_email(
        ctx.mailer, current, status_url=status_url(current, job_base_url(ctx.settings, current))
    )
    log.warning("job %s failed: %s", job.id, error)
    return current


def build_archive(job_id: str, ctx: Context) -> Job | None:
    """Build the archive of job ``job_id``: claim, count, write, publish, record, notify.

    Returns the job in its final state, or None when there was nothing to do (unknown job,
    already finished, or cancelled before it started). Raises :class:`RunningElsewhere` when
    the job is STARTED with a fresh heartbeat, and :class:`RetryLater` after a transient
    error when attempts remain (the job is PENDING again). Every other outcome is recorded
    in the job, never raised: SUCCESS with size, sha256, counts and expiry; FAILURE with a
    message a researcher can act on; CANCELLED.
    """
    settings = ctx.settings
    job = ctx.jobs.claim(job_id, max_attempts=settings.max_attempts)
    if job is None:
        return _not_claimed(ctx, job_id)
    if job.interruptions > settings.max_attempts:
        return fail_job(
            ctx,
            job,
            f"The archive build was interrupted {job.interruptions - 1} times (the worker stopped "
            "or the service restarted) and was given up. Please request the download again; "
            "if it keeps failing, narrow the query or tell the service's operators.",
            reason="interrupted",
        )
    log.info("job %s started (attempt %d)", job.id, job.attempts)
    if job.retry_at is not None:
        # The retry is running now: no status may still say it waits (should this attempt
        # die, the job is queued again as interrupted, not as waiting for a retry).
        job.retry_at = None
        ctx.jobs.save(job)
    key = archive_key(job)
    # An export job is named when it is created ({recordset}_{version}.{lastUpdated}.zip).
    filename = job.filename or archive_filename(job)
    beat = max(0.5, settings.stale_job_seconds / 4)
    src = ctx.source()
    with (
        ProgressReporter(ctx, job.id, every=settings.progress_every, beat=beat) as reporter,
        _read_session(src),
    ):
        writer = None
        try:
            plan = plan_archive(ctx, job, src)
            counts = plan.counts
            reporter.expected = plan.spec.expected_rows(counts)
            reporter.total = sum(counts.get(f.kind, 0) for f in _kinds(plan.spec))
            reporter.write()
            writer = ctx.storage.open_writer(key)
            result = write_archive(
                plan.spec,
                writer,  # type: ignore[arg-type]  # Storage hands out IO[bytes]; the writer only appends
                progress=reporter.progress,
                should_cancel=reporter.should_cancel,
            )
            ctx.storage.publish(
                key,
                writer,
                content_type=content_type(plan.spec.form),
                filename=filename,
                sha256=result.sha256,
            )
            writer = None
            if ctx.jobs.is_cancel_requested(job.id):
                # Cancelled while the last bytes were written: the requester was told it
                # stops, so the archive must not appear (nor a "ready" email go out).
                ctx.storage.delete(key)
                raise ArchiveCancelled("cancelled after the archive was written")
        except ArchiveCancelled:
            _discard(ctx, key, writer)
            job.state = "CANCELLED"
            job.error = "The download was cancelled before its archive was finished."
            job.completed = now_utc()
            ctx.jobs.save(job)
            record_outcome(ctx.jobs, job)
            log.info("job %s cancelled", job.id)
            return job
        except ArchiveError as exc:
            _discard(ctx, key, writer)
            return fail_job(
                ctx,
                job,
                f"The archive could not be written: {exc}. Please change the query or the "
                "field lists, or report it to the service's operators with the status link.",
                reason="archive_error",
            )
        except Exception as exc:
            _discard(ctx, key, writer)
            return _stopped(ctx, job, exc)
        _succeeded(job, plan, result, key, filename, retention_days=settings.retention_days)
    ctx.jobs.save(job)
    record_outcome(ctx.jobs, job)
    log.info("job %s done: %d bytes, %s", job.id, job.size, job.counts)
    notify_ready(ctx, job)
    return job


def _read_session(src: object) -> contextlib.AbstractContextManager[object]:
    """The source's read session for one build (the embedded store shares its connections
    inside one, so a small build does not pay a dozen opens), or nothing."""
    session = getattr(src, "session", None)
    return session() if callable(session) else contextlib.nullcontext()


#: The ``counts`` key under which a unique-values core reports its rows.
_UNIQUE_COUNT_KEYS = {"uniquelocality": "localities", "uniquenames": "names"}


def _not_claimed(ctx: Context, job_id: str) -> Job | None:
    """A job that could not be claimed: a queued job whose cancel was asked for becomes
    CANCELLED here (its worker is the first to see it); a live STARTED job raises
    :class:`RunningElsewhere`; anything else is left alone."""
    current = ctx.jobs.get(job_id)
    if current is not None and current.state == "PENDING" and ctx.jobs.is_cancel_requested(job_id):
        current.state = "CANCELLED"
        current.completed = now_utc()
        ctx.jobs.save(current)
        return current
    if current is not None and current.state == "STARTED":
        raise RunningElsewhere(job_id)
    log.info("job %s not claimed (missing or finished)", job_id)
    return None


def _succeeded(
    job: Job,
    plan: ArchivePlan,
    result: ArchiveResult,
    key: str,
    filename: str,
    *,
    retention_days: float,
) -> None:
    """Record a published archive in ``job``: SUCCESS, size, sha256, counts and expiry."""
    completed = now_utc()
    job.state = "SUCCESS"
    job.completed = completed
    # A recordset export is a cache kept until it is replaced or deleted (see
    # downloader.service.exports); a download lives for retention_days.
    job.expires = None if job.kind == "export" else completed + timedelta(days=retention_days)
    job.size = result.size
    job.sha256 = result.sha256
    job.archive_key = key
    job.filename = filename
    job.counts = {"records": result.records, "mediarecords": result.mediarecords}
    unique_key = _UNIQUE_COUNT_KEYS.get(job.request.get("core_type", "records"))
    if unique_key:
        # A uniquelocality/uniquenames core holds distinct values, not records; say how
        # many, or the status would report an archive of rows as empty.
        job.counts[unique_key] = result.rows.get(plan.spec.core.filename, 0)
    job.recordset_count = len(plan.recordsets)
    job.total_records = sum(job.counts.values())
    job.records_written = job.total_records
    job.error = None
    job.retry_at = None


def _kinds(spec: ArchiveSpec) -> list[DataFile]:
    # One file per kind counts towards the total (indexed and raw hold the same rows).
    seen: dict[str, DataFile] = {}
    files = spec.files if dwca.is_zip(spec.form) else [spec.core]
    for f in files:
        if f.kind != "other":
            seen.setdefault(f.kind, f)
    return list(seen.values())


#: The errors of a full disk or an exhausted quota.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from, says a disk is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return True
        current = current.__cause__ or current.__context__
    return False


def _stopped(ctx: Context, job: Job, exc: Exception) -> Job:
    """The outcome of a build stopped by ``exc`` (its partial file already discarded): a
    full disk fails at once; a transient error is retried while attempts remain (raising
    :class:`RetryLater`), then fails; anything else is our bug, logged and explained."""
    if out_of_space(exc):
        return _no_space(ctx, job, exc)
    if isinstance(exc, TRANSIENT):
        return _transient(ctx, job, exc)
    log.error("job %s failed unexpectedly", job.id, exc_info=exc)
    return fail_job(
        ctx,
        job,
        f"An unexpected error stopped the build ({type(exc).__name__}). It has been "
        f"logged under download id {job.id}; please try again, and tell the "
        "service's operators if it happens again.",
    )


def _what(exc: BaseException) -> str:
    if isinstance(exc, SourceUnavailable):
        return "record store"
    if isinstance(exc, StorageUnavailable):
        return "archive storage"
    return "job store"


def _transient(ctx: Context, job: Job, exc: Exception) -> Job:
    """A transient error: the job is PENDING again with ``retry_at`` and the reason in
    ``error`` (raising :class:`RetryLater`) while ``transient_retry_seconds`` have not passed
    since its first transient error; then it fails with the reason."""
    settings = ctx.settings
    now = now_utc()
    since = job.retry_since or now
    total = settings.transient_retry_seconds
    left = total - (now - since).total_seconds()
    reason = f"The {_what(exc)} could not be reached ({exc})"
    if left > 0:
        # The last wait is cut so that the final attempt starts when the total is up.
        delay = min(retry_delay(job.retries, first=settings.transient_retry_first_seconds), left)
        job.state = "PENDING"
        job.retries += 1
        job.retry_since = since
        job.retry_at = now + timedelta(seconds=delay)
        job.error = f"{reason}; the build is retried automatically."
        ctx.jobs.save(job)
        log.warning(
            "job %s: transient error, retry %d in %.0f s: %s", job.id, job.retries, delay, exc
        )
        raise RetryLater(job.id, exc, delay=delay) from exc
    job.retry_at = None
    if job.retries:
        tries = job.retries + 1
        reason += f", and still not after {_span(since, now)} of retries ({tries} attempts)"
    return fail_job(
        ctx,
        job,
        f"{reason}. This is a problem on our side, not with your query: please request the "
        "download again later.",
        reason=_failure_reason(exc),
    )


def _failure_reason(exc: Exception) -> str:
    """The ``/metrics`` failure reason of a transient error that outlasted its retries."""
    if isinstance(exc, SourceUnavailable):
        return "source_unavailable"
    if isinstance(exc, JobStoreUnavailable):
        return "job_store_unavailable"
    return "storage_unavailable"


def _span(since: datetime, now: datetime) -> str:
    seconds = max(0, round((now - since).total_seconds()))
    if seconds >= 120:
        return f"{seconds // 60} minutes"
    return f"{seconds} seconds"


def _no_space(ctx: Context, job: Job, exc: BaseException) -> Job:
    """Fail ``job`` for a full disk: not the query's fault and not worth an immediate
    retry. The partial file is already gone, the service keeps answering, and the next
    build succeeds once the operators have made room."""
    log.error("job %s: out of disk space: %s", job.id, exc)
    return fail_job(
        ctx,
        job,
        "The service ran out of disk space while writing this archive, so it was not "
        "finished (its partial file has been removed). This is a problem on our side, not "
        "with your query: please request the download again later.",
        reason="no_space",
    )


def _discard(ctx: Context, key: str, writer: Any) -> None:
    if writer is None:
        return
    try:
        ctx.storage.discard(key, writer)
    except Exception:
        log.warning("could not discard the partial archive %s", key, exc_info=True)
