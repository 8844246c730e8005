"""The links the service hands out: status URLs, download URLs, and the base URL they use.

The API builds them from the request's base URL (:func:`request_base_url`); a worker, which
has no request, from the base URL stored with the job when it was asked for. ``base_url``
in the settings, when set, wins over both.

A link never carries a host the operator did not configure: the request's ``Host`` header is
used only when it is one of ``allowed_hosts`` (as Django's ``ALLOWED_HOSTS``); otherwise the
links use the address the connection actually reached, which the client cannot choose. An
email the service sends from a forged ``Host`` would otherwise be a phishing mail with our
name on it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import quote

from downloader.backends import Context
from downloader.config import Settings
from downloader.models import Job

_CONTENT_TYPES = {
    "dwca-csv": "application/zip",
    "dwca-tsv": "application/zip",
    "dwca-gbif": "application/zip",
    "parquet": "application/zip",
    "simple-csv": "application/zip",
    "simple-parquet": "application/zip",
    "csv": "text/csv; charset=utf-8",
    "tsv": "text/tab-separated-values; charset=utf-8",
}


def content_type(form: str) -> str:
    """The Content-Type of an archive of this form."""
    return _CONTENT_TYPES.get(form, "application/octet-stream")


#: A ``Host`` header value: a DNS name or an IPv4 address, or an IPv6 address in brackets,
#: then an optional port. Anything else (userinfo, paths, spaces) is never used for a link.
_HOST = re.compile(
    r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(\d{1,5}))?$"
)


def split_host(value: str) -> tuple[str, str] | None:
    """``(host, port)`` of a ``Host`` header value, lower-cased, the port ``""`` when none;
    ``None`` for a value that is no plain host."""
    match = _HOST.match(value.strip())
    if match is None:
        return None
    return match.group(1).lower(), match.group(2) or ""


def host_allowed(value: str, allowed: Sequence[str]) -> bool:
    """Whether the ``Host`` header ``value`` matches one of ``allowed``.

    Entries are matched without the port (as Django does): ``downloads.example.org``
    matches exactly, ``.example.org`` matches it and every subdomain, ``*`` matches any
    plain host (only behind a proxy that checks ``Host`` itself).
    """
    parts = split_host(value)
    if parts is None:
        return False
    host = parts[0]
    for entry in allowed:
        entry = entry.lower()
        if entry == "*":
            return True
        if entry.startswith("."):
            if host == entry[1:] or host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


def listen_base_url(settings: Settings, local_address: tuple[str, int] | None = None) -> str:
    """``http://<address>:<port>``: the address a connection reached (``local_address``, the
    socket's own name), else the one ``serve`` is set to listen on."""
    host, port = local_address or (settings.host, settings.port)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def request_base_url(
    settings: Settings,
    *,
    scheme: str,
    host_header: str,
    local_address: tuple[str, int] | None = None,
) -> str:
    """The base URL of a request's links: ``base_url`` if set; else the request's own
    ``scheme://Host`` if that host is in ``allowed_hosts``; else :func:`listen_base_url`."""
    if settings.base_url:
        return settings.base_url
    if host_header and host_allowed(host_header, settings.allowed_host_list):
        host, port = split_host(host_header) or ("", "")
        return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"
    return listen_base_url(settings, local_address)


def job_base_url(settings: Settings, job: Job) -> str:
    """The base URL of a job's links outside a request (emails sent by a worker)."""
    return settings.base_url or job.base_url or listen_base_url(settings)


def status_url(job: Job, base_url: str) -> str:
    """The absolute status URL (its last path segment is the job id, as the portal expects)."""
    return f"{base_url.rstrip('/')}/v2/download/{job.id}"


def download_url(ctx: Context, job: Job, base_url: str) -> str:
    """Where the finished archive is downloaded from, on every storage:
    ``<base>/archives/<job id>/<filename>``, a link of this service that works for the
    archive's whole life. Local storage serves the bytes there; S3 storage answers with a
    redirect to a freshly presigned (or public) URL at each request, so the link outlives
    any signature."""
    del ctx  # the same link on every storage
    key = job.archive_key or f"{job.id}.zip"
    filename = job.filename or key
    return f"{base_url.rstrip('/')}/archives/{quote(job.id)}/{quote(filename)}"
