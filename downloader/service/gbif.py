"""GBIF's occurrence download API on our jobs: what pygbif's and rgbif's ``occ_download``
functions call, answered from the same jobs, workers and storage as the iDigBio API.

A request's ``predicate`` is compiled to our query (:mod:`query.gbif`), so a GBIF request
and the equivalent iDigBio request share one job. The download key is the job's id.
Basic auth names the creator; credentials are not checked against any account (this
service has none): the creator only labels the download, and only a request from the same
creator (or with an admin token) may cancel it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from downloader.backends import Context
from downloader.errors import RequestError
from downloader.models import Job
from downloader.service import downloads
from downloader.service.limits import Caller
from query.errors import QueryError
from query.gbif import TooLarge, compile_predicate

#: GBIF's download formats -> our archive forms.
FORMATS = {"DWCA": "dwca-gbif", "SIMPLE_CSV": "simple-csv", "SIMPLE_PARQUET": "simple-parquet"}
_FORMAT_OF = {v: k for k, v in FORMATS.items()}
#: Our job states in GBIF's status vocabulary.
STATUS = {
    "PENDING": "PREPARING",
    "STARTED": "RUNNING",
    "SUCCESS": "SUCCEEDED",
    "FAILURE": "FAILED",
    "CANCELLED": "CANCELLED",
    "EXPIRED": "FILE_ERASED",
}
SOURCE_PREFIX = "gbif:"


@dataclass(frozen=True)
class Credentials:
    """Who a request says it is (HTTP Basic auth), unchecked."""

    user: str | None


def basic_user(authorization: str) -> Credentials:
    """The user name of an ``Authorization: Basic`` header (None without one)."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return Credentials(None)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise RequestError(
            "the Authorization header is not valid Basic credentials", status=401
        ) from None
    user = decoded.partition(":")[0].strip()
    return Credentials(user or None)


def request(
    ctx: Context,
    body: Any,
    *,
    credentials: Credentials,
    base_url: str,
    caller: Caller | None,
) -> str:
    """``POST /v1/occurrence/download/request``: start (or join) the download; its key."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object (GBIF's download request)")
    fmt = str(body.get("format") or "DWCA").strip().upper()
    if fmt not in FORMATS:
        raise QueryError("format", f"{fmt!r} is not offered; use one of: {', '.join(FORMATS)}")
    creator = str(body.get("creator") or "").strip() or credentials.user
    if not creator:
        raise RequestError(
            "a download needs a creator: give 'creator' or HTTP Basic credentials",
            status=401,
            name="Unauthorized",
        )
    try:
        rq = compile_predicate(body.get("predicate"))
    except TooLarge as exc:
        raise RequestError(str(exc.message), status=413, key=exc.key, name="TooLarge") from exc
    addresses = body.get("notificationAddresses", body.get("notification_address")) or []
    if isinstance(addresses, str):
        addresses = [addresses]
    addresses = [a for a in addresses if isinstance(a, str) and a.strip()]
    notify = body.get("sendNotification", True) is not False
    params = {
        "rq": rq,
        "form": FORMATS[fmt],
        # Echoed in the status (which anyone with the key may read): no addresses here.
        "gbif": {
            "creator": creator,
            "format": fmt,
            "predicate": body.get("predicate"),
            "sendNotification": notify,
        },
    }
    doc = downloads.request_download(
        ctx,
        params,
        email=addresses[0] if notify and addresses else None,
        source=SOURCE_PREFIX + creator,
        base_url=base_url,
        caller=caller,
    )
    if notify:
        for extra in addresses[1:]:
            downloads.notify_also(ctx, str(doc["id"]), extra, caller=caller)
    # A joined job is this creator's too: it is listed and they may cancel it.
    ctx.jobs.add_owner(str(doc["id"]), creator)
    return str(doc["id"])


def user_downloads(
    ctx: Context,
    user: str,
    *,
    credentials: Credentials,
    admin: bool,
    offset: int,
    limit: int,
    base_url: str,
) -> dict[str, Any]:
    """``GET /v1/occurrence/download/user/{user}``: a creator's downloads, newest first."""
    if not admin and credentials.user != user:
        raise RequestError(
            f"listing {user}'s downloads needs {user}'s Basic credentials (or an admin token)",
            status=401 if credentials.user is None else 403,
            name="Unauthorized" if credentials.user is None else "Forbidden",
        )
    limit = max(0, min(limit, 1000))
    jobs, total = ctx.jobs.jobs_of_owner(user, offset=offset, limit=limit)
    return {
        "offset": offset,
        "limit": limit,
        "endOfRecords": offset + len(jobs) >= total,
        "count": total,
        "results": [_download(ctx, job, base_url=base_url) for job in jobs],
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def download_object(ctx: Context, key: str, *, base_url: str) -> dict[str, Any]:
    """``GET /v1/occurrence/download/{key}``: GBIF's Download object for the job."""
    job = downloads.load_job(ctx, key)
    return _download(ctx, job, base_url=base_url)


def _download(ctx: Context, job: Job, *, base_url: str) -> dict[str, Any]:
    base = ctx.settings.base_url or base_url
    given = job.query.get("gbif")
    asked: dict[str, Any] = given if isinstance(given, dict) else {}
    form = job.request.get("form", "dwca-csv")
    status = STATUS.get(job.state, "PREPARING")
    doc: dict[str, Any] = {
        "key": job.id,
        "doi": None,
        "license": "unspecified",
        "request": {
            "creator": asked.get("creator") or _creator(job),
            "format": asked.get("format") or _FORMAT_OF.get(form, form),
            "predicate": asked.get("predicate"),
            "sendNotification": asked.get("sendNotification", bool(job.emails)),
            # Anyone with the key may read this object: the addresses are not shown.
            "notificationAddresses": [],
        },
        "created": _iso(job.created),
        "modified": _iso(job.completed or job.started or job.created),
        "eraseAfter": _iso(job.expires),
        "status": status,
        "downloadLink": f"{base}/v1/occurrence/download/request/{job.id}.zip"
        if status == "SUCCEEDED"
        else None,
        "size": job.size or 0,
        "totalRecords": job.counts.get("records", job.total_records or 0) or 0,
        "numberDatasets": job.recordset_count or 0,
    }
    if job.error and status in ("FAILED", "CANCELLED", "FILE_ERASED"):
        doc["error"] = job.error
    return doc


def _creator(job: Job) -> str | None:
    source = job.source or ""
    return source[len(SOURCE_PREFIX) :] if source.startswith(SOURCE_PREFIX) else None


def file_url(ctx: Context, key: str, *, base_url: str) -> str:
    """``GET /v1/occurrence/download/request/{key}``: where the archive is (404 while it is
    built, 410 once erased)."""
    job = downloads.load_job(ctx, key)
    if job.state == "EXPIRED":
        raise RequestError(
            f"the download {job.id} was erased after {_iso(job.expires)}; request it again",
            status=410,
            name="Gone",
        )
    if job.state != "SUCCESS":
        raise RequestError(
            f"the download {job.id} is {STATUS.get(job.state, job.state)}, not ready",
            status=404,
            name="NotReady",
        )
    return str(downloads.get_status(ctx, job.id, base_url=base_url)["download_url"])


def cancel(
    ctx: Context, key: str, *, credentials: Credentials, token: str | None, base_url: str
) -> None:
    """``DELETE /v1/occurrence/download/request/{key}``: cancel for its creator or an admin."""
    from downloader.service.downloads import cancel_download
    from downloader.service.jobs import is_admin

    job = downloads.load_job(ctx, key)
    if not is_admin(ctx, token):
        if credentials.user is None:
            raise RequestError(
                "cancelling needs the creator's Basic credentials or an admin token",
                status=401,
                name="Unauthorized",
            )
        owned, _ = ctx.jobs.jobs_of_owner(credentials.user, offset=0, limit=10_000)
        if _creator(job) != credentials.user and job.id not in {j.id for j in owned}:
            raise RequestError(
                f"{credentials.user} did not create download {job.id}", status=403, name="Forbidden"
            )
    if job.state in ("SUCCESS", "FAILURE", "CANCELLED", "EXPIRED"):
        raise RequestError(
            f"download {job.id} has already finished ({STATUS[job.state]})",
            status=409,
            name="JobFinished",
        )
    cancel_download(ctx, job.id)
