"""The stable download link ``/archives/{id}[/{filename}]`` on every storage: from local
storage the archive itself, resumable (Range, If-Range), with its sha256 as its ETag; on S3
a 302 to a URL presigned at this request (or the public URL), with the sha256 in ``ETag``
and ``Repr-Digest``; 410 Gone once it expired or was erased."""

from __future__ import annotations

import base64
import email.utils
import os
import re
from pathlib import Path
from urllib.parse import quote

from downloader.api.base import CHUNK, BaseHandler
from downloader.errors import JobNotFound, RequestError
from downloader.service import downloads as service

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Unsatisfiable(ValueError):
    """The Range lies entirely outside the file."""


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end_inclusive)``, or None to send everything; raises
    :class:`_Unsatisfiable` when the range lies outside the file.

    Only single ranges are honoured; RFC 9110 lets a server ignore a Range it does not
    support (several ranges, other units, bad syntax) and send the whole representation.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise _Unsatisfiable
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise _Unsatisfiable
    return start, min(end, size - 1)


class ArchiveHandler(BaseHandler):
    """``GET|HEAD /archives/{id}[/{filename}]``: the archive, resumable.

    ETag is the archive's sha256; ``Range`` gives 206 (or 416 outside the file); ``If-Range``
    and ``If-None-Match`` work with that ETag; an expired archive is 410 Gone. On S3 storage:
    a 302 to the object (the client's Range goes with it), ETag still the sha256.
    """

    async def head(self, job_id: str, filename: str | None = None) -> None:
        """Headers only."""
        await self._send(job_id, body=False)

    async def get(self, job_id: str, filename: str | None = None) -> None:
        """The archive (or the requested byte range of it)."""
        await self._send(job_id, body=True)

    async def _send(self, job_id: str, *, body: bool) -> None:
        archive = await self.run(service.published_archive, job_id, base_url=self.base_url)
        if archive.location is not None:
            self._redirect(archive)
            return
        assert archive.path is not None  # local storage: a file or a location, never neither
        try:
            handle = Path(archive.path).open("rb")  # noqa: SIM115  # closed in the finally below
        except FileNotFoundError as exc:  # deleted by cleanup between the check and now
            raise JobNotFound(f"the archive of download {job_id} is no longer stored") from exc
        try:
            size = os.fstat(handle.fileno()).st_size
            etag = f'"{archive.sha256}"' if archive.sha256 else None
            self.set_header("Content-Type", archive.content_type)
            self.set_header("Accept-Ranges", "bytes")
            self.set_header("Content-Disposition", _disposition(archive.filename))
            self.set_header("Cache-Control", "private, max-age=3600")
            if archive.job.completed:
                self.set_header(
                    "Last-Modified", email.utils.format_datetime(archive.job.completed, usegmt=True)
                )
            if etag:
                self.set_header("ETag", etag)
                if _etag_matches(self.request.headers.get("If-None-Match"), etag):
                    self.set_status(304)
                    self.finish()
                    return
            if_range = self.request.headers.get("If-Range")
            try:
                wanted = _parse_range(self.request.headers.get("Range"), size)
            except _Unsatisfiable:
                wanted = (0, size - 1)
                if if_range is None or if_range.strip() == etag:
                    self.set_header("Content-Range", f"bytes */{size}")
                    raise RequestError(
                        f"the requested range is outside the archive, which has {size} bytes",
                        status=416,
                        key="Range",
                        name="RangeNotSatisfiable",
                    ) from None
            if wanted is not None and if_range is not None and if_range.strip() != etag:
                wanted = None  # the client holds another version: send the whole file
            start, end = (0, size - 1) if wanted is None else wanted
            if wanted is not None:
                self.set_status(206)
                self.set_header("Content-Range", f"bytes {start}-{end}/{size}")
            length = max(0, end - start + 1)
            self.set_header("Content-Length", str(length))
            if not body:
                self.finish()
                return
            handle.seek(start)
            remaining = length
            while remaining > 0:
                chunk = handle.read(min(CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                self.write(chunk)
                await self.flush()
            self.finish()
        finally:
            handle.close()

    def _redirect(self, archive: service.ArchiveFile) -> None:
        """S3 storage: a redirect to a URL presigned for this request (or the public URL),
        with the archive's sha256 in our own headers (S3's ETag is not the sha256)."""
        if archive.sha256:
            self.set_header("ETag", f'"{archive.sha256}"')
            digest = base64.b64encode(bytes.fromhex(archive.sha256)).decode("ascii")
            self.set_header("Repr-Digest", f"sha-256=:{digest}:")
        # The target is signed per request: never keep this answer.
        self.set_header("Cache-Control", "no-store")
        self.clear_header("Content-Type")
        assert archive.location is not None
        self.redirect(archive.location, status=302)

    def clear(self) -> None:
        """Keep ``Content-Range: bytes */size`` on a 416 (send_error clears headers)."""
        content_range = getattr(self, "_headers", {}).get("Content-Range")
        super().clear()
        if content_range and content_range.startswith("bytes */"):
            self.set_header("Content-Range", content_range)


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    # If-None-Match compares weakly (RFC 9110 13.1.2): W/"x" matches "x".
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return header.strip() == "*" or etag in tags


def _disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
