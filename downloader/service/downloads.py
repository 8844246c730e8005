"""What each request does: ask for a download, report its status, count, fetch, clean up.

Handlers call exactly one function here; every function takes the process's
:class:`~downloader.backends.Context` first. Nothing here knows about Tornado: errors are our
exceptions (``QueryError``, ``RequestError``, ``JobNotFound``) and the handlers map them to
HTTP codes in one place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import threading
import uuid
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from downloader.backends import Context
from downloader.errors import ArchiveGone, JobNotFound, RequestError
from downloader.links import content_type, download_url, status_url
from downloader.models import TERMINAL_STATES, Job, now_utc
from downloader.service import limits
from downloader.service.citation import citation_bibtex, citation_ris, citation_text
from downloader.service.limits import Caller
from downloader.service.portal import MEASURED
from notify.addresses import check_address
from notify.errors import InvalidAddress
from notify.service import send_ready_email
from query.fields import RecordType

log = logging.getLogger(__name__)

#: Request parameters that describe the archive (and are hashed); the rest (email, source,
#: force) only say who asked and how.
REQUEST_KEYS = (
    "rq",
    "query",
    "mq",
    "core_type",
    "core_source",
    "form",
    "record_fields",
    "mediarecord_fields",
    "extensions",
)

#: iDigBio's task_status values, derived from our internal state.
_TASK_STATUS = {
    "PENDING": "PENDING",
    "STARTED": "STARTED",
    "SUCCESS": "SUCCESS",
    "FAILURE": "FAILURE",
    # Clients written for iDigBio know four states; a cancelled or expired job is finished
    # without a usable archive, which they already handle as FAILURE (with ``error``). Our
    # own ``state``, ``cancelled`` and ``expired`` fields say which.
    "CANCELLED": "FAILURE",
    "EXPIRED": "FAILURE",
}

_TRUE = frozenset({"1", "true", "yes", "on", "t", "y"})
_FALSE = frozenset({"", "0", "false", "no", "off", "f", "n", "none", "null"})
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def parse_flag(value: Any, *, key: str) -> bool:
    """A boolean request parameter: ``true/1/yes/on`` or ``false/0/no/off/""``.

    iDigBio treats any value of ``force`` as true, even ``force=false``; we do not.
    """
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise RequestError(f"{key} must be true or false, got {value!r}", key=key)


def parse_email(value: Any) -> str | None:
    """A checked address, or None when none was given."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise RequestError("email must be a single address", key="email")
    try:
        return check_address(value)
    except InvalidAddress as exc:
        raise RequestError(str(exc), key="email") from exc


def _parse_request(ctx: Context, params: Mapping[str, Any]) -> Any:
    from query.request import parse_download_request

    selected = {k: v for k, v in params.items() if k in REQUEST_KEYS}
    request = parse_download_request(selected, max_query_bytes=ctx.settings.max_query_bytes)
    uuids = (request.rq or {}).get("uuid") if isinstance(request.rq, dict) else None
    if isinstance(uuids, list) and len(uuids) > ctx.settings.max_uuid_selection:
        raise RequestError(
            f"a selection may name at most {ctx.settings.max_uuid_selection} record uuids, "
            f"this one names {len(uuids)}; split it into several downloads",
            status=413,
            key="rq.uuid",
            name="SelectionTooLarge",
        )
    return request


def _echo(params: Mapping[str, Any]) -> dict[str, Any]:
    # What the client sent, minus the address (a status URL is shareable; an address is not).
    return {
        k: v for k, v in params.items() if k in REQUEST_KEYS or k in ("source", "force", "gbif")
    }


def request_download(
    ctx: Context,
    params: Mapping[str, Any],
    *,
    email: Any = None,
    source: str | None = None,
    force: Any = False,
    base_url: str,
    caller: Caller | None = None,
) -> dict[str, Any]:
    """Validate a download request, reuse or create its job, dispatch a new one; the status.

    Everything is checked before a job exists, so a bad request is a 4xx now, never a job
    that fails later. A new job is saved before it is dispatched, so a worker can always
    load it. A reused job still notifies this requester: at once if it is already done.
    Only the response that created a job holds its ``cancel_token``. With a ``caller``
    (every HTTP request), :mod:`downloader.service.limits` applies: a request that would
    start a new job or send an email is counted and may be refused.
    """
    address = parse_email(email)
    forced = parse_flag(force, key="force")
    request = _parse_request(ctx, params)
    data_version = str(ctx.source().data_version())
    now = now_utc()
    base = ctx.settings.base_url or base_url
    candidate = Job(
        id=str(uuid.uuid4()),
        query_hash=request.query_hash,
        request=request.canonical(),
        query=_echo(params),
        data_version=data_version,
        created=now,
        emails=[address] if address else [],
        source=source,
        base_url=base,
        # Only the creator learns it (below): it lets them cancel the job they started.
        cancel_token=secrets.token_urlsafe(24),
        requester=caller.requester(address) if caller else None,
    )
    window = ctx.settings.reuse_window_hours
    reuse_after = now - timedelta(hours=window)
    counted: list[int] = []

    def count_once() -> int:
        # One count per request, shared by the size limit and the queue routing.
        if not counted:
            counted.append(_count(ctx, request))
        return counted[0]

    reusable = None
    if caller is not None:
        reusable = None if forced or window == 0 else _reusable(ctx, candidate, reuse_after)
        if reusable is None:
            limits.check_new_job(ctx, caller, email=address, count_records=count_once)
        elif address and address not in reusable.emails:
            limits.check_email(ctx, caller, address)
    if reusable is None and (ctx.settings.large_job_records or counted):
        # Counted now, before the job exists, so it goes to the small or the large queue
        # (downloader.dispatch.routing) from the start.
        candidate.counted_records = count_once()
    job, created = ctx.jobs.create_or_reuse(
        candidate, reuse_after=reuse_after, force=forced or window == 0
    )
    if created:
        if ctx.dispatcher is None:
            raise RuntimeError("this process has no dispatcher; it cannot start jobs")
        ctx.dispatcher.dispatch(job.id, records=job.counted_records)
        log.info("job %s created for %s", job.id, job.request)
    elif address:
        if address not in job.emails:
            ctx.jobs.add_email(job.id, address)
        job = _tell_if_ready(ctx, job, address, base)
    doc = status_document(ctx, job, base)
    if created:
        # Returned once, to the requester who created the job; see downloader.service.jobs.
        doc["cancel_token"] = job.cancel_token
    return doc


def notify_also(ctx: Context, job_id: str, email: Any, *, caller: Caller | None = None) -> None:
    """Tell one more address about a job (a GBIF request names several): at once if it is
    already done, else with the others when it finishes."""
    address = parse_email(email)
    if not address:
        return
    job = load_job(ctx, job_id)
    if address in job.emails:
        return
    if caller is not None:
        limits.check_email(ctx, caller, address)
    ctx.jobs.add_email(job.id, address)
    _tell_if_ready(ctx, job, address, ctx.settings.base_url or job.base_url or "")


def _tell_if_ready(ctx: Context, job: Job, address: str, base: str) -> Job:
    """The job as stored now; if it is already done, its ready email goes to ``address`` at
    once (the worker mailed everyone it knew when it finished; this address came later)."""
    job = ctx.jobs.get(job.id) or job
    if job.state == "SUCCESS":
        send_ready_email(
            ctx.mailer,
            job,
            to=[address],
            download_url=download_url(ctx, job, base),
            status_url=status_url(job, base),
        )
    return job


def _reusable(ctx: Context, candidate: Job, reuse_after: datetime) -> Job | None:
    """The job :meth:`JobStore.create_or_reuse` would answer ``candidate`` with, if any
    (so that limits count only requests that start a job)."""
    for job in ctx.jobs.jobs_for_hash(candidate.query_hash, kind="download"):
        if (
            job.data_version == candidate.data_version
            and job.state in ("PENDING", "STARTED", "SUCCESS")
            and job.created is not None
            and job.created > reuse_after
            and not ctx.jobs.is_cancel_requested(job.id)
        ):
            return job
    return None


def _count(ctx: Context, request: Any) -> int:
    """How many records the core of ``request``'s archive is drawn from (media records for
    a media core), as :func:`count` reports it in ``itemCount``."""
    core: RecordType = "mediarecords" if request.core_type == "mediarecords" else "records"
    return ctx.source().count(core, request.rq, request.mq)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _percent(job: Job) -> float:
    if job.state == "SUCCESS":
        return 100.0
    if not job.total_records:
        return 0.0
    # Capped below 100 until the archive is published: the last rows are not the last step.
    return min(99.9, round(100.0 * job.records_written / job.total_records, 1))


def status_document(ctx: Context, job: Job, base_url: str) -> dict[str, Any]:
    """The status JSON: iDigBio's fields with their meaning, then ours (keys sorted on output)."""
    base = ctx.settings.base_url or base_url
    retention = timedelta(days=ctx.settings.retention_days)
    expires = job.expires
    if expires is None and job.created is not None:
        # Before completion the archive will live at least this long (iDigBio states
        # created + 30 days too); it is replaced by completion + retention at the end.
        expires = job.created + retention
    doc: dict[str, Any] = {
        "id": job.id,
        "complete": job.state in TERMINAL_STATES,
        "task_status": _TASK_STATUS.get(job.state, "UNKNOWN"),
        "state": job.state,
        "status_url": status_url(job, base),
        "query": job.request,
        "query_hash": job.query_hash,
        "hash": job.query_hash,
        "created": _iso(job.created),
        "started": _iso(job.started),
        "completed": _iso(job.completed),
        "expires": _iso(expires),
        "records_written": job.records_written,
        "total_records": job.total_records,
        "percent_complete": _percent(job),
        "format": job.request.get("form", "dwca-csv"),
        "counts": dict(job.counts),
        "recordsets": job.recordset_count,
        "size": job.size,
        "checksum": {"algorithm": "sha256", "value": job.sha256} if job.sha256 else None,
        "cancelled": job.state == "CANCELLED",
        "expired": job.state == "EXPIRED",
        "attempts": job.attempts,
        "retrying": False,
        "data_version": job.data_version,
    }
    if job.state == "SUCCESS":
        doc["download_url"] = download_url(ctx, job, base)
        doc["filename"] = job.filename
        cite = {"publisher": ctx.settings.publisher_name, "url": doc["download_url"]}
        doc["citation"] = citation_text(job, **cite)
        doc["citation_bibtex"] = citation_bibtex(job, **cite)
        doc["citation_ris"] = citation_ris(job, **cite)
        MEASURED.observe(job)
    elif job.state == "PENDING" and job.retry_at is not None:
        # Waiting out its backoff after a transient error: say why and when it runs again.
        doc["retrying"] = True
        doc["retry_at"] = _iso(job.retry_at)
        doc["error"] = job.error or "A service the build needs could not be reached."
    elif job.state == "FAILURE":
        doc["error"] = job.error or "The archive could not be built."
    elif job.state == "CANCELLED":
        doc["error"] = job.error or "The download was cancelled."
    elif job.state == "EXPIRED":
        doc["error"] = (
            f"The archive expired on {_iso(job.expires)} and was deleted; "
            "request the download again to rebuild it."
        )
    return doc


def load_job(ctx: Context, job_id: str) -> Job:
    """The job, or :class:`JobNotFound` for an unknown or malformed id.

    Ids are UUIDs, which are case-insensitive: an upper-case copy finds the same job.
    """
    if not _UUID.match((job_id or "").lower()):
        raise JobNotFound(f"no download has the id {job_id!r}")
    job = ctx.jobs.get(job_id.lower())
    if job is None:
        raise JobNotFound(f"no download has the id {job_id!r}")
    return job


def get_status(ctx: Context, job_id: str, *, base_url: str) -> dict[str, Any]:
    """The status JSON of one job."""
    return status_document(ctx, load_job(ctx, job_id), base_url)


#: ``json.dumps(doc, sort_keys=True, default=str)`` without building an encoder per call
#: (the handlers' ``write_json`` encodes the same way).
_JSON = json.JSONEncoder(sort_keys=True, default=str)


@dataclass(frozen=True)
class RenderedStatus:
    """A status response as sent: the UTF-8 body (JSON and a newline) and its ETag, the
    one Tornado would compute from those bytes (``"<sha1 hex>"``)."""

    body: bytes
    etag: str


def render_status(doc: Mapping[str, Any]) -> RenderedStatus:
    """``doc`` as the status endpoint sends it."""
    body = (_JSON.encode(doc) + "\n").encode("utf-8")
    return RenderedStatus(body, f'"{hashlib.sha1(body).hexdigest()}"')


class StatusCache:
    """Rendered status responses, one per job id and base URL, each kept with the version
    of the stored job it was rendered from (see ``get_if_changed`` on the job stores).

    An entry is only ever used after the store has confirmed, in the same request, that the
    job's stored version is still the one it was rendered from: a status is never staler
    than the store. The cache only saves rebuilding the ``Job``, the status document and
    its JSON while a job does not change (which is most polls). Bounded: the oldest entries
    are dropped first.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[Hashable, RenderedStatus]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, job_id: str, base_url: str) -> tuple[Hashable, RenderedStatus] | None:
        """The version and response kept for this job and base URL, if any."""
        return self._entries.get((job_id, base_url))

    def put(self, job_id: str, base_url: str, version: Hashable, rendered: RenderedStatus) -> None:
        """Keep ``rendered`` as the response for ``version`` of this job."""
        with self._lock:
            entries = self._entries
            entries.pop((job_id, base_url), None)
            while len(entries) >= self.max_entries > 0:
                del entries[next(iter(entries))]
            if self.max_entries > 0:
                entries[(job_id, base_url)] = (version, rendered)

    def discard(self, job_id: str, base_url: str) -> None:
        """Forget this job's response (it no longer exists, or cannot be cached)."""
        with self._lock:
            self._entries.pop((job_id, base_url), None)


def status_response(
    ctx: Context, job_id: str, *, base_url: str, cache: StatusCache | None = None
) -> RenderedStatus:
    """The status of one job as sent by ``GET /v2/download/{id}`` (the bytes of
    :func:`get_status`'s document), or :class:`JobNotFound`.

    With a job store that offers ``get_if_changed`` and a ``cache``, the job's version is
    read on every call and a kept response is reused only while that version is unchanged.
    """
    if not _UUID.match((job_id or "").lower()):
        raise JobNotFound(f"no download has the id {job_id!r}")
    key = job_id.lower()
    base = ctx.settings.base_url or base_url
    reader = getattr(ctx.jobs, "get_if_changed", None)
    if cache is None or reader is None:
        return render_status(status_document(ctx, load_job(ctx, job_id), base))
    kept = cache.get(key, base)
    found = reader(key, kept[0] if kept is not None else None)
    if found is None:
        if kept is not None:
            cache.discard(key, base)
        raise JobNotFound(f"no download has the id {job_id!r}")
    version, job = found
    if job is None:
        if kept is not None and kept[0] == version:
            return kept[1]
        # "Unchanged" from a version we do not hold (a store bug): read it, keep nothing.
        return render_status(status_document(ctx, load_job(ctx, key), base))
    rendered = render_status(status_document(ctx, job, base))
    # Every link in a status depends only on the job and the base URL (a download link is
    # this service's /archives/ path on every storage), so the response can be kept.
    cache.put(key, base, version, rendered)
    return rendered


def count(ctx: Context, params: Mapping[str, Any]) -> dict[str, Any]:
    """How many records and media records a request would put into its archive, and from
    how many recordsets, so a page can show a query's size before asking for it."""
    request = _parse_request(ctx, params)
    src = ctx.source()
    records = src.count("records", request.rq, request.mq)
    media = src.count("mediarecords", request.rq, request.mq)
    core: RecordType = "mediarecords" if request.core_type == "mediarecords" else "records"
    recordsets = src.recordset_counts(core, request.rq, request.mq)
    return {
        "itemCount": records if core == "records" else media,
        "records": records,
        "mediarecords": media,
        "recordsets": len(recordsets),
        "query": request.canonical(),
        "query_hash": request.query_hash,
        "data_version": str(src.data_version()),
    }


@dataclass(frozen=True)
class ArchiveFile:
    """A published archive, ready to be sent: from ``path`` (local storage) or by a
    redirect to ``location`` (S3: a URL presigned for this request, or the public one)."""

    job: Job
    content_type: str
    filename: str
    sha256: str | None
    path: Path | None = None
    location: str | None = None


def published_archive(ctx: Context, job_id: str, *, base_url: str = "") -> ArchiveFile:
    """The finished archive of a job, for ``/archives/{id}`` (the stable download link).

    Raises :class:`JobNotFound` for an unknown job, a 409 :class:`RequestError` while the
    job runs, or :class:`ArchiveGone` once it expired or was erased.
    """
    from downloader.storage.local import LocalStorage

    job = load_job(ctx, job_id)
    if job.state == "EXPIRED" or (
        job.state == "SUCCESS" and job.expires is not None and job.expires <= now_utc()
    ):
        raise ArchiveGone(
            f"the archive of download {job.id} expired on {_iso(job.expires)} and was "
            "deleted; request the download again to rebuild it"
        )
    if job.state != "SUCCESS":
        raise RequestError(
            f"download {job.id} has no archive: its state is {job.state}",
            status=409,
            name="ArchiveNotReady",
            task_status=_TASK_STATUS.get(job.state, "UNKNOWN"),
        )
    key = job.archive_key or f"{job.id}.zip"
    found = ArchiveFile(
        job=job,
        content_type=content_type(str(job.request.get("form", "dwca-csv"))),
        filename=job.filename or key,
        sha256=job.sha256,
    )
    storage = ctx.storage
    if not isinstance(storage, LocalStorage):
        # Signed now, for this request: the link we hand out never expires before the
        # archive does, whatever the signature's lifetime.
        location = storage.url(key, base_url=base_url, filename=found.filename)
        return replace(found, location=location)
    path = storage.path(key)
    if not path.is_file():
        raise ArchiveGone(f"the archive of download {job.id} is no longer stored")
    return replace(found, path=path)


def cleanup_expired(ctx: Context, *, now: datetime | None = None) -> list[str]:
    """Delete the archives of successful jobs past ``expires`` and mark those jobs EXPIRED.

    The archive is deleted before the job is marked, so a crash in between leaves a job
    that the next run deletes again (deleting a missing key is not an error). Returns the
    ids of the expired jobs.
    """
    when = now or now_utc()
    expired = []
    for job in ctx.jobs.expired_jobs(when):
        ctx.storage.delete(job.archive_key or f"{job.id}.zip")
        job.state = "EXPIRED"
        ctx.jobs.save(job)
        expired.append(job.id)
        log.info("job %s expired; its archive was deleted", job.id)
    return expired


def cancel_download(ctx: Context, job_id: str) -> Job | None:
    """Ask for a job to stop; a queued job is cancelled at once, a running one at its
    next check. Returns the job (None when unknown)."""
    job = ctx.jobs.get(job_id)
    if job is None or job.state in TERMINAL_STATES:
        return job
    ctx.jobs.request_cancel(job_id)
    if job.state == "PENDING":
        job.state = "CANCELLED"
        job.error = "The download was cancelled before it started."
        job.completed = now_utc()
        ctx.jobs.save(job)
    return job
