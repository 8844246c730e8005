"""The jobs resource (the contract of RSpace's export jobs) and cancelling a job.

``GET /v1/jobs/{id}`` describes any download or export job: always 200 while the job is
known, with ``status`` (``STARTING``, ``RUNNING``, ``COMPLETED``, ``FAILED``, ``CANCELLED``,
``EXPIRED``), ``percentComplete`` and, once completed, a verifiable ``result``
(``checksum``, ``algorithm: "sha256"``, ``size``, ``expiryDate``) and the file's link
(``_links`` entry ``enclosure``).

``DELETE /v1/jobs/{id}`` and ``DELETE /v2/download/{id}`` cancel a queued or running job.
Who may: the requester who created it (the ``cancel_token`` of the creating response) or an
admin (a token from ``admin_tokens``). A queued job is cancelled at once; a running one stops
at its worker's next check (about a second), which removes the partial archive and never
tells the requesters it succeeded. A cancelled job is never reused: the same request later
starts afresh.
"""

from __future__ import annotations

import hmac
from typing import Any, Literal

from downloader.backends import Context
from downloader.errors import RequestError
from downloader.links import download_url
from downloader.models import TERMINAL_STATES, Job
from downloader.service.downloads import load_job
from downloader.service.exports import EXPORT_KIND, export_path

#: Our job states as the jobs resource names them.
STATUS = {
    "PENDING": "STARTING",
    "STARTED": "RUNNING",
    "SUCCESS": "COMPLETED",
    "FAILURE": "FAILED",
    "CANCELLED": "CANCELLED",
    "EXPIRED": "EXPIRED",
}


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def percent_complete(job: Job) -> float:
    """0-100 with two decimals; 100 only once the archive is published."""
    if job.state == "SUCCESS":
        return 100.0
    if not job.total_records:
        return 0.0
    return min(99.99, round(100.0 * job.records_written / job.total_records, 2))


def file_url(ctx: Context, job: Job, base_url: str) -> str:
    """Where the finished file is fetched: the export URL of a recordset version (which
    streams it or redirects to S3), else the download's URL."""
    if job.kind == EXPORT_KIND:
        rs = job.query.get("recordset", "")
        return base_url.rstrip("/") + export_path(str(rs), job.data_version)
    return download_url(ctx, job, base_url)


def job_document(ctx: Context, job: Job, *, base_url: str) -> dict[str, Any]:
    """The jobs resource representation of ``job``."""
    base = (ctx.settings.base_url or base_url).rstrip("/")
    links = [{"rel": "self", "link": f"{base}/v1/jobs/{job.id}"}]
    doc: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "format": job.request.get("form", "dwca-csv"),
        "status": STATUS.get(job.state, "UNKNOWN"),
        "percentComplete": percent_complete(job),
        "recordsWritten": job.records_written,
        "totalRecords": job.total_records,
        "createdAt": _iso(job.created),
        "startedAt": _iso(job.started),
        "completedAt": _iso(job.completed),
        "cancelRequested": job.state not in TERMINAL_STATES
        and ctx.jobs.is_cancel_requested(job.id),
        "_links": links,
    }
    if job.kind == EXPORT_KIND:
        doc["recordset"] = job.query.get("recordset")
        doc["version"] = job.query.get("version")
    else:
        links.append({"rel": "status", "link": f"{base}/v2/download/{job.id}"})
    if job.state == "SUCCESS":
        doc["result"] = {
            "checksum": job.sha256,
            "algorithm": "sha256",
            "size": job.size,
            "expiryDate": _iso(job.expires),
        }
        links.append({"rel": "enclosure", "link": file_url(ctx, job, base)})
    elif job.state == "PENDING" and job.retry_at is not None:
        # Waiting out its backoff after a transient error (as the status JSON's retrying).
        doc["retrying"] = True
        doc["retryAt"] = _iso(job.retry_at)
        doc["error"] = job.error
    elif job.state in ("FAILURE", "CANCELLED", "EXPIRED"):
        doc["error"] = (
            job.error
            or {
                "FAILURE": "The archive could not be built.",
                "CANCELLED": "The job was cancelled.",
                "EXPIRED": "The archive expired and was deleted.",
            }[job.state]
        )
    return doc


def get_job(ctx: Context, job_id: str, *, base_url: str) -> dict[str, Any]:
    """``GET /v1/jobs/{id}``; :class:`~downloader.errors.JobNotFound` (404) when unknown."""
    return job_document(ctx, load_job(ctx, job_id), base_url=base_url)


def tokens_match(given: str, expected: str) -> bool:
    """Whether ``given`` is ``expected``, in time that does not depend on where they differ.

    Compared as UTF-8 bytes: ``hmac.compare_digest`` refuses ``str`` with non-ASCII
    characters (a ``TypeError``, which was a 500 for ``?token=é``); a header's bytes that
    are not UTF-8 (Tornado decodes headers as Latin-1) still compare, unequal.
    """
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def is_admin(ctx: Context, token: str | None) -> bool:
    """Whether ``token`` is one of the configured admin tokens (every one is compared, so
    the time taken does not say which one matched or how many there are before it)."""
    if not token:
        return False
    matched = False
    for admin_token in ctx.settings.admin_token_list:
        matched |= tokens_match(token, admin_token)
    return matched


def require_admin(ctx: Context, token: str | None) -> None:
    """401 without a token, 403 with one that is not an admin token."""
    if not token:
        raise RequestError(
            "this needs an admin token: send 'Authorization: Bearer <token>' or "
            "'X-Admin-Token: <token>'",
            status=401,
            name="Unauthorized",
        )
    if not is_admin(ctx, token):
        raise RequestError("this token is not an admin token", status=403, name="Forbidden")


def cancel_job(
    ctx: Context, job_id: str, *, token: str | None, base_url: str
) -> tuple[Literal[200, 202], dict[str, Any]]:
    """Cancel a queued or running job for its creator or an admin.

    Returns 200 and the job when it is cancelled already (it was queued), 202 when its
    worker has been told to stop. 404 for an unknown job, 401 without a token, 403 with a
    token that is neither the job's nor an admin's, 409 when the job has finished.
    """
    from downloader.service.downloads import cancel_download

    job = load_job(ctx, job_id)
    if not token:
        raise RequestError(
            "cancelling needs the cancel_token returned when the job was created (as "
            "'Authorization: Bearer <token>' or ?token=<token>), or an admin token",
            status=401,
            name="Unauthorized",
        )
    own = bool(job.cancel_token) and tokens_match(token, job.cancel_token or "")
    if not own and not is_admin(ctx, token):
        raise RequestError(
            "this token may not cancel this job: only its requester (the cancel_token of "
            "the response that created it) or an admin may",
            status=403,
            name="Forbidden",
        )
    if job.state in TERMINAL_STATES:
        raise RequestError(
            f"job {job.id} has already finished ({STATUS.get(job.state, job.state)}) and "
            "cannot be cancelled",
            status=409,
            name="JobFinished",
            status_name=STATUS.get(job.state, job.state),
        )
    cancel_download(ctx, job.id)
    current = ctx.jobs.get(job.id) or job
    if current.state in TERMINAL_STATES and current.state != "CANCELLED":
        # It finished between our look and the flag: nothing was cancelled.
        raise RequestError(
            f"job {job.id} finished ({STATUS.get(current.state, current.state)}) before it "
            "could be cancelled",
            status=409,
            name="JobFinished",
            status_name=STATUS.get(current.state, current.state),
        )
    doc = job_document(ctx, current, base_url=base_url)
    return (200 if current.state == "CANCELLED" else 202), doc
