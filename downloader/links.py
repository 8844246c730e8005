"""The links the service hands out: status URLs, download URLs, and the base URL they use.

The API builds them from the request's base URL; a worker, which has no request, from the
base URL stored with the job when it was asked for. ``base_url`` in the settings, when set,
wins over both.
"""

from __future__ import annotations

from downloader.backends import Context
from downloader.config import Settings
from downloader.models import Job

_CONTENT_TYPES = {
    "dwca-csv": "application/zip",
    "dwca-tsv": "application/zip",
    "csv": "text/csv; charset=utf-8",
    "tsv": "text/tab-separated-values; charset=utf-8",
}


def content_type(form: str) -> str:
    """The Content-Type of an archive of this form."""
    return _CONTENT_TYPES.get(form, "application/octet-stream")


def job_base_url(settings: Settings, job: Job) -> str:
    """The base URL of a job's links outside a request (emails sent by a worker)."""
    return settings.base_url or job.base_url or f"http://{settings.host}:{settings.port}"


def status_url(job: Job, base_url: str) -> str:
    """The absolute status URL (its last path segment is the job id, as the portal expects)."""
    return f"{base_url.rstrip('/')}/v2/download/{job.id}"


def download_url(ctx: Context, job: Job, base_url: str) -> str:
    """Where the finished archive is downloaded from."""
    key = job.archive_key or f"{job.id}.zip"
    return ctx.storage.url(key, base_url=base_url, filename=job.filename or key)
