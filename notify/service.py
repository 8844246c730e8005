"""The texts of the emails a researcher receives, and sending them to every address.

Links arrive as plain strings: this package knows nothing about HTTP or URL layout.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from notify.errors import InvalidAddress, MailError

log = logging.getLogger(__name__)


class Job(Protocol):
    """What a message tells of a download (``downloader.models.Job`` has all of it); a
    Protocol, so that this package imports nothing of the service."""

    id: str
    request: dict[str, Any]
    expires: datetime | None
    records_written: int
    size: int | None
    sha256: str | None
    error: str | None
    emails: list[str]
    counts: dict[str, int]


class _Mailer(Protocol):
    def send(self, to: str, subject: str, body: str) -> None: ...


def human_size(size: int | None) -> str:
    """``1536`` -> ``"1.5 KiB (1,536 bytes)"``."""
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            if unit == "bytes":
                return f"{size:,} bytes"
            return f"{value:.1f} {unit} ({size:,} bytes)"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "unknown"


def describe_query(request: dict[str, Any]) -> str:
    """The request as a researcher wrote it: the record and media queries, then any option
    that differs from iDigBio's defaults."""
    lines = []
    for key, label in (("rq", "Record query"), ("mq", "Media query")):
        if request.get(key) is not None:
            lines.append(f"{label}: {json.dumps(request[key], sort_keys=True)}")
    defaults = {"core_type": "records", "core_source": "indexterms", "form": "dwca-csv"}
    for key, default in defaults.items():
        if request.get(key, default) != default:
            lines.append(f"{key}: {request[key]}")
    for key in ("record_fields", "mediarecord_fields"):
        if request.get(key):
            lines.append(f"{key}: {', '.join(map(str, request[key]))}")
    return "\n".join(lines) or "(everything)"


def ready_message(job: Job, *, download_url: str, status_url: str) -> tuple[str, str]:
    """Subject and body of the "archive ready" email."""
    counts = job.counts or {}
    records = counts.get("records", job.records_written)
    media = counts.get("mediarecords")
    what = f"{records:,} records" + (f" and {media:,} media records" if media else "")
    body = f"""Hello,

your Darwin Core Archive is ready: {what}.

Download it here (the link works until {_when(job.expires)}):
{download_url}

{describe_query(job.request)}

Size:    {human_size(job.size)}
SHA-256: {job.sha256 or "unknown"}
Status:  {status_url}

If the download breaks off, resume it rather than starting over, for example with
curl -L -C - -o archive.zip '{download_url}'
and compare the SHA-256 above with `sha256sum archive.zip`.

The archive's records.citation.txt lists the recordsets to cite.
"""
    return f"Your Darwin Core Archive is ready ({what})", body


def failure_message(job: Job, *, status_url: str, retry_hint: str) -> tuple[str, str]:
    """Subject and body of the "archive failed" email."""
    body = f"""Hello,

we could not build the Darwin Core Archive you asked for.

What went wrong: {job.error or "an unexpected error in the service"}

{describe_query(job.request)}

{retry_hint}

Status: {status_url}
"""
    return "Your Darwin Core Archive could not be built", body


def _send_all(
    mailer: _Mailer, job_id: str, addresses: Iterable[str], subject: str, body: str
) -> int:
    sent = 0
    for address in dict.fromkeys(addresses):  # keeps order, drops duplicates
        try:
            mailer.send(address, subject, body)
            sent += 1
        except (MailError, InvalidAddress) as exc:
            # A mail failure must not fail the download: the archive exists and the status
            # URL still tells the researcher about it.
            log.warning("email to %s about job %s not sent: %s", address, job_id, exc)
    return sent


def send_ready_email(
    mailer: _Mailer,
    job: Job,
    *,
    download_url: str,
    status_url: str,
    to: Iterable[str] | None = None,
) -> int:
    """Tell ``to`` (default: every address of the job) that the archive is ready.
    Returns how many messages were handed to the mail server."""
    subject, body = ready_message(job, download_url=download_url, status_url=status_url)
    return _send_all(mailer, job.id, job.emails if to is None else to, subject, body)


def send_failure_email(
    mailer: _Mailer,
    job: Job,
    *,
    status_url: str,
    retry_hint: str = "You can ask for the archive again; if it fails the same way, please "
    "narrow the query (fewer records) or tell the service's operators, quoting the status "
    "link below.",
    to: Iterable[str] | None = None,
) -> int:
    """Tell ``to`` (default: every address of the job) that the build failed and why."""
    subject, body = failure_message(job, status_url=status_url, retry_hint=retry_hint)
    return _send_all(mailer, job.id, job.emails if to is None else to, subject, body)
