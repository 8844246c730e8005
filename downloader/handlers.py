"""The HTTP API (Tornado). Handlers parse, call one service function, and write JSON.

Every error, whatever raised it, becomes the same JSON shape in :meth:`BaseHandler.write_error`
(``{"error": ..., "status": ..., "name": ..., "key": ...}``). Service calls that block (the
job store, the record source, SMTP) run on the application's thread pool, never on the
IOLoop; the one exception is the status read from a job store that declares
``inline_reads`` (see :class:`StatusHandler`).
"""

from __future__ import annotations

import email.utils
import functools
import json
import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar
from urllib.parse import quote

from tornado import httputil
from tornado.ioloop import IOLoop
from tornado.web import HTTPError, RequestHandler, stream_request_body

from downloader import service
from downloader.backends import Context
from downloader.errors import JobNotFound, RequestError, SourceUnavailable, StorageUnavailable
from query.errors import QueryError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Bytes read from disk per write when sending an archive.
CHUNK = 256 * 1024

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

#: ``json.dumps(doc, sort_keys=True, default=str)`` without building an encoder per call.
_JSON = json.JSONEncoder(sort_keys=True, default=str)


def _error_body(exc: BaseException | None, status: int, reason: str) -> tuple[int, dict[str, Any]]:
    """Our one error shape, and the status code that goes with ``exc``."""
    if isinstance(exc, QueryError):
        return 400, exc.to_dict()
    if isinstance(exc, RequestError):
        return exc.status, exc.to_dict()
    if isinstance(exc, JobNotFound):
        return 404, {"error": str(exc), "name": "NotFound"}
    if isinstance(exc, (SourceUnavailable, StorageUnavailable)):
        return 503, {
            "error": f"the service cannot reach its data right now ({exc}); try again shortly",
            "name": "ServiceUnavailable",
        }
    if isinstance(exc, HTTPError):
        message = exc.log_message % exc.args if exc.log_message and exc.args else exc.log_message
        return exc.status_code, {"error": message or exc.reason or reason, "name": "HTTPError"}
    if exc is None and status < 500:
        return status, {"error": reason, "name": "HTTPError"}
    # Anything else is our bug: say so without leaking a traceback.
    return 500, {"error": "internal error; it has been logged", "name": "InternalError"}


class BaseHandler(RequestHandler):
    """JSON responses, CORS for the portal, the error mapping, and the executor."""

    ctx: Context
    executor: Executor
    status_cache: service.StatusCache | None

    def initialize(
        self, ctx: Context, executor: Executor, status_cache: service.StatusCache | None = None
    ) -> None:
        """Tornado hook: receive the process context, the thread pool and the application's
        cache of rendered status responses."""
        self.ctx = ctx
        self.executor = executor
        self.status_cache = status_cache

    def set_default_headers(self) -> None:
        """CORS ``*`` as iDigBio sends it, so a portal on another origin can call us."""
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS")
        self.set_header(
            "Access-Control-Allow-Headers", "Content-Type, Range, If-Range, If-None-Match"
        )
        self.set_header(
            "Access-Control-Expose-Headers",
            "Content-Disposition, Content-Range, Content-Length, ETag, Accept-Ranges",
        )
        self.set_header("Access-Control-Max-Age", "21600")
        self.set_header("Content-Type", "application/json; charset=utf-8")

    def options(self, *args: str) -> None:
        """CORS preflight: the headers above and no body."""
        self.set_status(204)
        self.finish()

    async def head(self, *args: Any, **kwargs: Any) -> None:
        """HEAD is GET without the body (RFC 9110 9.3.2); Tornado drops the body itself."""
        result = self.get(*args, **kwargs)
        if result is not None:
            await result

    def allowed_methods(self) -> list[str]:
        """The methods this resource implements, for the ``Allow`` header of a 405."""
        unimplemented = getattr(RequestHandler, "_unimplemented_method", None)
        allowed = [
            m
            for m in ("GET", "POST", "DELETE", "OPTIONS")
            if getattr(type(self), m.lower()) is not unimplemented
        ]
        if "GET" in allowed:
            allowed.insert(1, "HEAD")
        return allowed

    @property
    def base_url(self) -> str:
        """The configured public base URL, else the one this request reached us at."""
        return self.ctx.settings.base_url or f"{self.request.protocol}://{self.request.host}"

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking service call on the thread pool."""
        call = functools.partial(func, self.ctx, *args, **kwargs)
        return await IOLoop.current().run_in_executor(self.executor, call)

    def write_json(self, doc: Any, status: int = 200) -> None:
        """Finish with ``doc`` as JSON, keys sorted (as iDigBio's Flask ``jsonify`` does)."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(_JSON.encode(doc) + "\n")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """The one place where exceptions become HTTP errors."""
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        status, body = _error_body(exc, status_code, self._reason)
        body["status"] = status
        self.set_status(status)
        if status == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        elif status == 401:
            # RFC 9110 15.5.2: a 401 says how to authenticate.
            self.set_header("WWW-Authenticate", 'Bearer realm="downloader"')
        self.set_header("Content-Type", "application/json; charset=utf-8")
        if self.request.method == "HEAD":
            self.finish()
        else:
            self.finish(json.dumps(body, sort_keys=True) + "\n")

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Client mistakes are logged briefly; only unexpected errors carry a traceback."""
        if isinstance(value, (QueryError, RequestError, JobNotFound, HTTPError)):
            log.info("%s %s: %s", self.request.method, self.request.uri, value)
        else:
            super().log_exception(typ, value, tb)


@stream_request_body
class ParamsHandler(BaseHandler):
    """A handler whose parameters may come in the query string, a form or a JSON body.

    The body is streamed so that an oversized one gets a 413 JSON answer (from its
    Content-Length before anything is read, or as soon as a chunked body passes the limit)
    instead of Tornado closing the connection.
    """

    _chunks: list[bytes]
    _received: int
    _too_large: bool

    def prepare(self) -> None:
        """Refuse a declared oversized body before reading it."""
        self._chunks, self._received, self._too_large = [], 0, False
        limit = self.ctx.settings.max_body_bytes
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise self._too_large_error()

    def data_received(self, chunk: bytes) -> None:
        """Collect the body, dropping it once it passes the limit."""
        self._received += len(chunk)
        if self._received > self.ctx.settings.max_body_bytes:
            self._too_large = True
            self._chunks = []
        elif not self._too_large:
            self._chunks.append(chunk)

    def _too_large_error(self) -> RequestError:
        limit = self.ctx.settings.max_body_bytes
        return RequestError(
            f"the request body is larger than {limit} bytes", status=413, name="BodyTooLarge"
        )

    def params(self) -> dict[str, Any]:
        """Query-string parameters, overridden by body parameters.

        A parameter given twice must have one value; ``rq[genus]``-style names (a form
        serialised from an object) and text that is not UTF-8 are refused, naming the key.
        """
        params: dict[str, Any] = _single_values(self.request.query_arguments)
        if self.request.method != "POST":
            return params
        if self._too_large:
            raise self._too_large_error()
        body = b"".join(self._chunks)
        if not body.strip():
            return params
        header = self.request.headers.get("Content-Type", "")
        ctype = header.split(";")[0].strip().lower()
        if ctype not in _FORM_TYPES:
            # Like iDigBio (get_json(force=True)), try JSON whatever the declared type.
            try:
                data = json.loads(body)
            except (ValueError, RecursionError) as exc:
                if ctype == "application/json":
                    raise RequestError(
                        f"the request body is not valid JSON: {exc}", key="body"
                    ) from exc
                if ctype:
                    raise RequestError(
                        f"the request body is neither JSON nor a form (Content-Type: {ctype}); "
                        "send application/json, application/x-www-form-urlencoded or "
                        "multipart/form-data",
                        status=415,
                        key="Content-Type",
                        name="UnsupportedMediaType",
                    ) from exc
            else:
                if not isinstance(data, dict):
                    raise RequestError(
                        "a JSON request body must be an object such as "
                        '{"rq": {"genus": "acer"}, "email": "me@example.org"}',
                        key="body",
                    )
                params.update(data)
                return params
        form: dict[str, list[bytes]] = {}
        files: dict[str, list[httputil.HTTPFile]] = {}
        try:
            httputil.parse_body_arguments(
                header if ctype else "application/x-www-form-urlencoded",
                body,
                form,
                files,
                self.request.headers,
            )
        except httputil.HTTPInputError as exc:
            raise RequestError(f"the request body is not a valid form: {exc}", key="body") from exc
        for name, uploads in files.items():
            # ``curl -F rq=@query.json``: a file part holds the value.
            form.setdefault(name, []).extend(f.body for f in uploads)
        params.update(_single_values(form))
        return params


#: Every parameter a download or count request understands.
_KNOWN_PARAMS = frozenset((*service.REQUEST_KEYS, "email", "source", "force"))


def _single_values(arguments: dict[str, list[bytes]]) -> dict[str, str]:
    """One text value per parameter, or a :class:`RequestError` naming the parameter."""
    values: dict[str, str] = {}
    for name, raw in arguments.items():
        base = name.split("[", 1)[0]
        if base != name and base in _KNOWN_PARAMS:
            raise RequestError(
                f"{name} is not understood: send {base} once, holding its JSON as text",
                key=base,
            )
        texts: list[str] = []
        for item in raw:
            try:
                text = item.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError(f"{name} is not valid UTF-8 text", key=name) from None
            if text not in texts:
                texts.append(text)
        if len(texts) > 1:
            raise RequestError(
                f"{name} is given {len(raw)} times with different values; give it once",
                key=name,
            )
        if texts:
            values[name] = texts[0]
    return values


class DownloadHandler(ParamsHandler):
    """``GET|POST /v2/download``: ask for an archive; answers with its status (HTTP 200)."""

    async def get(self) -> None:
        """Start (or reuse) a download from query-string parameters."""
        await self._request(self.params())

    async def post(self) -> None:
        """Start (or reuse) a download from a form or JSON body."""
        await self._request(self.params())

    async def _request(self, params: dict[str, Any]) -> None:
        email = params.pop("email", None)
        source = params.pop("source", None)
        force = params.pop("force", None)
        doc = await self.run(
            service.request_download,
            params,
            email=email,
            source=None if source is None else str(source),
            force=force,
            base_url=self.base_url,
        )
        self.write_json(doc)


class IndexHandler(DownloadHandler):
    """``GET|POST /``: the original csv.idigbio.org shape (``?query=...``), or a short
    description of the service when called without parameters."""

    async def get(self) -> None:
        """A download when parameters are given, else what the service offers."""
        params = self.params()
        if not params:
            self.write_json(self._about())
            return
        await self._request(params)

    async def post(self) -> None:
        """A download from a form or JSON body."""
        await self._request(self.params())

    def _about(self) -> dict[str, Any]:
        base = self.base_url
        return {
            "service": "Darwin Core Archive download service (iDigBio-compatible)",
            "download": f"{base}/v2/download/?rq=" + quote('{"genus":"acer"}'),
            "status": f"{base}/v2/download/<id>",
            "count": f"{base}/v2/count?rq=" + quote('{"genus":"acer"}'),
            "health": f"{base}/healthz",
        }


class StatusHandler(BaseHandler):
    """``GET /v2/download/{id}`` and ``GET /status/{id}``: a job's status JSON.

    This is the endpoint portals poll, so it is the one place that departs from "blocking
    calls run on the thread pool": a job store that declares ``inline_reads`` (SQLite: a
    primary-key read of a local WAL file, tens of microseconds) is read on the IOLoop. The
    hand-off to the pool and back cost more than the read itself, and its threads contended
    with the IOLoop for the GIL (under the bench's status load, about a third of the
    server's time). Other stores (Redis: a network round trip) are still read on the pool.

    The body and its ETag come from :func:`downloader.service.status_response`, which reads
    the job's version every time and reuses the rendered response while it is unchanged.
    The ETag is the one Tornado computes from the body (so ``If-None-Match`` gives 304 as
    before); only the hashing of each response is saved.
    """

    _etag: str | None = None

    async def get(self, job_id: str) -> None:
        """The status, or 404 JSON for an unknown or malformed id."""
        if getattr(self.ctx.jobs, "inline_reads", False):
            rendered = service.status_response(
                self.ctx, job_id, base_url=self.base_url, cache=self.status_cache
            )
        else:
            rendered = await self.run(
                service.status_response, job_id, base_url=self.base_url, cache=self.status_cache
            )
        self._etag = rendered.etag
        self.finish(rendered.body)

    def compute_etag(self) -> str | None:
        """The rendered response's ETag (a hash of the same bytes, computed once)."""
        return self._etag or super().compute_etag()


class CountHandler(ParamsHandler):
    """``GET|POST /v2/count``: how many records and media records a query matches."""

    async def get(self) -> None:
        """Counts for query-string parameters."""
        self.write_json(await self.run(service.count, self.params()))

    async def post(self) -> None:
        """Counts for a form or JSON body."""
        self.write_json(await self.run(service.count, self.params()))


class HealthHandler(BaseHandler):
    """``GET /healthz``: the process answers and can read its job store."""

    async def get(self) -> None:
        """200 ``{"ok": true}``, or an error JSON when the job store cannot be read."""
        await IOLoop.current().run_in_executor(
            self.executor, self.ctx.jobs.get, "00000000-0000-0000-0000-000000000000"
        )
        self.write_json({"ok": True})


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
    and ``If-None-Match`` work with that ETag; an expired archive is 410 Gone.
    """

    async def head(self, job_id: str, filename: str | None = None) -> None:
        """Headers only."""
        await self._send(job_id, body=False)

    async def get(self, job_id: str, filename: str | None = None) -> None:
        """The archive (or the requested byte range of it)."""
        await self._send(job_id, body=True)

    async def _send(self, job_id: str, *, body: bool) -> None:
        archive = await self.run(service.local_archive, job_id)
        try:
            handle = open(archive.path, "rb")  # noqa: SIM115  # closed in the finally below
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


class NotFoundHandler(BaseHandler):
    """Any other path: 404 JSON."""

    def prepare(self) -> None:
        """Every method of an unknown path is a 404."""
        raise HTTPError(404, "no such endpoint: %s", self.request.path)
