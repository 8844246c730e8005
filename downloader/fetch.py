"""``downloader fetch``: the client a script writer wants, on the standard library only.

Submit a download, poll its status with a progress bar, download the archive with resume
(HTTP Range) into ``<file>.part``, verify the sha256 when the server states one (iDigBio's
API does not), and rename the file into place. Works against this service and iDigBio's.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

USER_AGENT = "dwca-downloader-fetch/0.1"
CHUNK = 1024 * 1024
#: Attempts at the archive download before giving up (each resumes where the last stopped).
DOWNLOAD_ATTEMPTS = 5


class FetchError(Exception):
    """The download could not be obtained; the message says why."""


def _request(url: str, *, headers: Mapping[str, str] | None = None, method: str = "GET") -> Any:
    req = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT})
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    return urllib.request.urlopen(req, timeout=60)


def _json(url: str) -> dict[str, Any]:
    try:
        with _request(url, headers={"Accept": "application/json"}) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            message = json.loads(body).get("error") or body.decode("utf-8", "replace")
        except ValueError:
            message = body.decode("utf-8", "replace")[:500]
        raise FetchError(f"{exc.code} from {url}: {message}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"cannot reach {url}: {exc}") from exc
    if not isinstance(doc, dict):
        raise FetchError(f"unexpected answer from {url}: {doc!r}")
    return doc


def submit(server: str, params: Mapping[str, str]) -> dict[str, Any]:
    """Ask for a download (a GET, which every iDigBio-compatible server accepts)."""
    query = urllib.parse.urlencode(params)
    return _json(f"{server.rstrip('/')}/v2/download/?{query}")


def _bar(fraction: float, width: int = 30) -> str:
    filled = round(width * max(0.0, min(1.0, fraction)))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _say(out: TextIO | None, text: str, *, end: str = "") -> None:
    if out is not None:
        out.write("\r" + text.ljust(78) + end)
        out.flush()


def wait(
    status: dict[str, Any],
    *,
    poll_seconds: float,
    deadline: float | None,
    progress: TextIO | None,
) -> dict[str, Any]:
    """Poll ``status_url`` until the job is complete; returns the final status."""
    url = status.get("status_url")
    if not url:
        raise FetchError(f"the server gave no status_url: {status}")
    while not status.get("complete"):
        if deadline is not None and time.monotonic() > deadline:
            raise FetchError(f"gave up waiting; the download continues at {url}")
        percent = status.get("percent_complete")
        if isinstance(percent, int | float):
            written, total = status.get("records_written"), status.get("total_records")
            counts = f" {written:,}/{total:,} records" if total else ""
            _say(progress, f"building {_bar(percent / 100)} {percent:5.1f}%{counts}")
        else:
            _say(progress, f"building ... ({status.get('task_status', 'PENDING')})")
        time.sleep(poll_seconds)
        status = _json(url)
    _say(progress, f"built ({status.get('task_status')})", end="\n")
    return status


def download(
    url: str,
    target: Path,
    *,
    expected_sha256: str | None,
    progress: TextIO | None,
) -> Path:
    """Download ``url`` into ``target``, resuming ``<target>.part`` if present."""
    part = target.with_name(target.name + ".part")
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with _request(url, headers=headers) as resp:
                if resp.status == 206:
                    mode = "ab"
                    total = int(resp.headers.get("Content-Range", "/0").rsplit("/", 1)[1] or 0)
                else:  # the server ignored the range: start over
                    mode, have = "wb", 0
                    total = int(resp.headers.get("Content-Length") or 0)
                with Path(part).open(mode) as out:
                    got = have
                    while chunk := resp.read(CHUNK):
                        out.write(chunk)
                        got += len(chunk)
                        if total:
                            _say(progress, f"download {_bar(got / total)} {got:,}/{total:,} bytes")
                        else:
                            _say(progress, f"download {got:,} bytes")
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:
                break  # we already have every byte
            raise FetchError(f"{exc.code} downloading {url}: {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            if attempt == DOWNLOAD_ATTEMPTS:
                raise FetchError(f"download of {url} kept failing: {exc}") from exc
            _say(progress, f"connection lost ({exc}); resuming", end="\n")
            time.sleep(min(30, 2**attempt))
    _say(progress, f"downloaded {part.stat().st_size:,} bytes", end="\n")
    if expected_sha256:
        digest = hashlib.sha256()
        with Path(part).open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != expected_sha256.lower():
            part.unlink()
            raise FetchError(
                f"checksum mismatch: expected sha256 {expected_sha256}, got "
                f"{digest.hexdigest()}; the partial file was removed, please fetch again"
            )
        _say(progress, "sha256 verified", end="\n")
    Path(part).replace(target)
    return target


def fetch(
    server: str,
    params: Mapping[str, str],
    *,
    output: str | os.PathLike[str] | None = None,
    poll_seconds: float = 2.0,
    timeout: float | None = None,
    progress: TextIO | None = None,
) -> Path:
    """Submit, wait, download and verify; returns the path of the saved file."""
    deadline = None if timeout is None else time.monotonic() + timeout
    status = submit(server, params)
    status = wait(status, poll_seconds=poll_seconds, deadline=deadline, progress=progress)
    if status.get("task_status") != "SUCCESS" or not status.get("download_url"):
        raise FetchError(
            f"the download failed: {status.get('error') or status.get('task_status')} "
            f"(status: {status.get('status_url')})"
        )
    url = str(status["download_url"])
    name = status.get("filename") or Path(urllib.parse.urlparse(url).path).name or "download.zip"
    target = Path(output) if output else Path(str(name))
    checksum = status.get("checksum")
    expected = checksum.get("value") if isinstance(checksum, dict) else None
    return download(url, target, expected_sha256=expected, progress=progress)
