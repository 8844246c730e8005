"""What every handler shares: JSON answers, CORS, the one error mapping, the executor, and
parameters from a query string, a form or a JSON body.

Every error, whatever raised it, becomes the same JSON shape in :meth:`BaseHandler.write_error`
(``{"error": ..., "status": ..., "name": ..., "key": ...}``). Service calls that block (the
job store, the record source, SMTP) run on the application's thread pool, never on the
IOLoop; the one exception is the status read from a job store that declares
``inline_reads`` (see :class:`downloader.api.downloads.StatusHandler`).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

from tornado import httputil
from tornado.ioloop import IOLoop
from tornado.web import HTTPError, RequestHandler, stream_request_body

from downloader import links
from downloader.backends import Context
from downloader.config import Settings
from downloader.errors import JobNotFound, RequestError, SourceUnavailable, StorageUnavailable
from downloader.service import downloads as service
from downloader.service.jobs import is_admin
from downloader.service.limits import Caller, LimitExceeded
from query.errors import QueryError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Bytes read from disk per write when sending an archive.
CHUNK = 256 * 1024

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

#: ``json.dumps(doc, sort_keys=True, default=str)`` without building an encoder per call.
_JSON = json.JSONEncoder(sort_keys=True, default=str)


def error_body(exc_info: Any, status: int, reason: str) -> dict[str, Any]:
    """The whole JSON error body (with ``status``) for Tornado's ``write_error`` arguments,
    for handlers that are not a :class:`BaseHandler` (the page's static files)."""
    code, body = _error_body(exc_info[1] if exc_info else None, status, reason)
    body["status"] = code
    return body


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


#: Query parameters whose values never reach the access log: tokens (``?token=`` is one way
#: to give the admin or cancel token) and the requester's address.
SECRET_PARAMETERS = frozenset({"token", "cancel_token", "admin_token", "email"})
_NOT_ADDRESS = r"\s/?&=@\"'<>(),;:{}\[\]"
#: An email address, each part bounded so that a long line costs linear time to scan.
_EMAIL = re.compile(rf"[^{_NOT_ADDRESS}]{{1,64}}@[^{_NOT_ADDRESS}]{{1,253}}\.[A-Za-z]{{2,24}}")


#: An access-log line shows at most this much of a URI (a uuid selection can be 750 KB).
MAX_LOGGED_URI = 2000


def _no_address(text: str) -> str:
    return _EMAIL.sub("[email]", text) if "@" in text else text


def redact_uri(uri: str) -> str:
    """``uri`` as the access log shows it: cut to :data:`MAX_LOGGED_URI`, secret parameters'
    values replaced with ``[redacted]``, any other email address with ``[email]``."""
    path, sep, query = uri[:MAX_LOGGED_URI].partition("?")
    path = _no_address(path)
    if sep:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [
                (k, "[redacted]" if k.lower() in SECRET_PARAMETERS else _no_address(v))
                for k, v in pairs
            ],
            safe='[]{}:,"',
        )
    logged = path + sep + query
    if len(uri) > MAX_LOGGED_URI:
        logged = f"{logged}... ({len(uri)} characters)"
    return logged


def request_summary(handler: RequestHandler) -> str:
    """``METHOD uri (ip)`` as Tornado's log lines show a request, with :func:`redact_uri`."""
    request = handler.request
    return f"{request.method} {redact_uri(request.uri or '')} ({request.remote_ip})"


def log_unexpected(handler: RequestHandler, typ: Any, value: Any, tb: Any) -> None:
    """Log an unexpected exception of a request with its traceback. Tornado's own line
    would show the raw URI (a ``?token=`` or an address in it) and the request's repr."""
    if isinstance(value, HTTPError):
        if value.log_message:
            log.warning("%s: %s", request_summary(handler), value)
        return
    log.error("Uncaught exception %s", request_summary(handler), exc_info=(typ, value, tb))


#: Largest total of request headers accepted (431 beyond), the request line aside.
MAX_HEADER_BYTES = 64 * 1024
#: What the HTTP server itself reads before it gives up on a request's head and closes the
#: connection: far above :func:`url_limit`, so that any sensible client gets a JSON answer.
SERVER_HEAD_BYTES = 8 * 1024 * 1024


def url_limit(settings: Settings) -> int:
    """Longest request URL accepted (414 beyond): room for an ``rq`` and an ``mq`` of
    ``max_query_bytes`` each, percent-encoded (up to three bytes per byte), at least 64 KiB."""
    return max(64 * 1024, 8 * settings.max_query_bytes)


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

    def prepare(self) -> None:
        """Refuse a request line or headers too long to be a sensible GET, with the one
        JSON error shape (Tornado's own limit, far above, only closes the connection)."""
        limit = url_limit(self.ctx.settings)
        if len(self.request.uri or "") > limit:
            raise RequestError(
                f"the request's URL is {len(self.request.uri or '')} bytes, more than the "
                f"{limit} accepted; send the query by POST, as JSON "
                '({"rq": {...}}) or a form, to the same path',
                status=414,
                name="URITooLong",
            )
        size = sum(len(k) + len(v) + 4 for k, v in self.request.headers.get_all())
        if size > MAX_HEADER_BYTES:
            raise RequestError(
                f"the request's headers are {size} bytes, more than the {MAX_HEADER_BYTES} "
                "accepted; send the query in the body of a POST, not in a header",
                status=431,
                name="RequestHeaderFieldsTooLarge",
            )

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
        """The base URL of this request's links (:func:`downloader.links.request_base_url`):
        ``base_url``, else the request's Host if it is in ``allowed_hosts``, else the
        address this connection reached, never a Host the client made up."""
        return links.request_base_url(
            self.ctx.settings,
            scheme=self.request.protocol,
            host_header=self.request.headers.get("Host", ""),
            local_address=self._local_address(),
        )

    def _local_address(self) -> tuple[str, int] | None:
        """The socket's own address and port, if the connection still has one."""
        stream = getattr(self.request.connection, "stream", None)
        sock = getattr(stream, "socket", None)
        if sock is None:
            return None
        try:
            name = sock.getsockname()
        except OSError:
            return None
        if isinstance(name, tuple) and len(name) >= 2:
            return str(name[0]), int(name[1])
        return None

    def caller(self) -> Caller:
        """Who is asking, for the limits: the client's address (Tornado's ``remote_ip``,
        from ``X-Real-IP``/``X-Forwarded-For`` only with ``trust_forwarded_for``) and
        whether it gave an admin token."""
        return Caller(
            client=self.request.remote_ip or "unknown",
            admin=is_admin(self.ctx, request_token(self)),
        )

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
        limit = getattr(exc, "extra", {}).get("limit") if isinstance(exc, LimitExceeded) else None
        metrics = self.application.settings.get("metrics")
        if limit and metrics is not None:
            metrics.limit_hits.labels(str(limit)).inc()
        self.set_status(status)
        if status == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int):
            self.set_header("Retry-After", str(retry_after))
        if status == 401:
            # RFC 9110 15.5.2: a 401 says how to authenticate.
            self.set_header("WWW-Authenticate", 'Bearer realm="downloader"')
        self.set_header("Content-Type", "application/json; charset=utf-8")
        if self.request.method == "HEAD":
            self.finish()
        else:
            self.finish(json.dumps(body, sort_keys=True) + "\n")

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Client mistakes are logged briefly; only unexpected errors carry a traceback."""
        uri = redact_uri(self.request.uri or "")
        if isinstance(value, (QueryError, RequestError, JobNotFound, HTTPError)):
            log.info("%s %s: %s", self.request.method, uri, value)
        elif isinstance(value, (SourceUnavailable, StorageUnavailable)):
            # Expected while a dependency is down (the client gets a 503 saying so): one
            # line, no traceback; /readyz tells the operator which dependency it is.
            log.warning("%s %s: 503: %s", self.request.method, uri, value)
        else:
            log_unexpected(self, typ, value, tb)

    def _request_summary(self) -> str:
        """Tornado's summary of a request in its own log lines, with the URI redacted."""
        return request_summary(self)


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
        super().prepare()
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


def request_token(handler: BaseHandler) -> str | None:
    """The caller's token: ``Authorization: Bearer <t>``, ``X-Admin-Token: <t>`` or
    ``?token=<t>`` (in that order)."""
    auth = handler.request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    admin = handler.request.headers.get("X-Admin-Token", "").strip()
    if admin:
        return admin
    query = handler.get_query_argument("token", default="") or ""
    return query.strip() or None


class DeletableHandler(BaseHandler):
    """CORS that also allows DELETE and the token headers."""

    def set_default_headers(self) -> None:
        """The base CORS headers, widened for DELETE with a token."""
        super().set_default_headers()
        self.set_header("Access-Control-Allow-Methods", "GET, HEAD, POST, DELETE, OPTIONS")
        self.set_header(
            "Access-Control-Allow-Headers",
            "Content-Type, Range, If-Range, If-None-Match, Authorization, X-Admin-Token",
        )


class NotFoundHandler(BaseHandler):
    """Any other path: 404 JSON."""

    def prepare(self) -> None:
        """Every method of an unknown path is a 404."""
        super().prepare()
        raise HTTPError(404, "no such endpoint: %s", self.request.path)
