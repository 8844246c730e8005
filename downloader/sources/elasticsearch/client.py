"""The cluster client: the official ``elasticsearch`` client made to speak plain JSON to
Elasticsearch 7/8/9 and OpenSearch alike (:class:`PlainJsonNode`), able to hand an answer's
bytes back undecoded for Arrow (:data:`JSON_BYTES`), and the one place where vendor errors
become ours (:func:`translate`, :func:`call`): timeouts, refused connections, 429 and 5xx
answers become :class:`~downloader.errors.SourceUnavailable` (transient; the Celery task
retries), a missing index or a rejected query becomes :class:`~downloader.errors.BuildFailed`
with a message a researcher or an operator can act on. Also the request limits every reader
and writer of the package keeps to (:data:`MAX_PAGE`, :data:`KEEP_ALIVE`)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from elastic_transport import HttpHeaders, Serializer, TransportError, Urllib3HttpNode
from elastic_transport._node import NodeApiResponse  # not re-exported at the top level
from elasticsearch import ApiError, Elasticsearch

from downloader.errors import BuildFailed, SourceUnavailable

#: The client logs every request at INFO (a build makes thousands); only its warnings
#: reach our logs unless an operator sets this logger's level explicitly.
_REQUEST_LOG = logging.getLogger("elastic_transport.transport")
if _REQUEST_LOG.level == logging.NOTSET:
    _REQUEST_LOG.setLevel(logging.WARNING)

T = TypeVar("T")

#: Largest page one search may return (index.max_result_window bounds from+size only, but
#: large pages cost heap on the cluster; 10,000 is Elasticsearch's own default maximum).
MAX_PAGE = 10_000
#: How long a scroll's search context is kept between two of its pages.
KEEP_ALIVE = "5m"


class PlainJsonNode(Urllib3HttpNode):
    """An HTTP node that speaks plain ``application/json`` to any compatible cluster.

    The 9.x client asks for ``application/vnd.elasticsearch+json; compatible-with=9``, which
    only Elasticsearch 9 accepts; Elasticsearch 7/8 and OpenSearch answer 406 or 400. Every
    one of them accepts plain JSON, so the media types are put back here. The client also
    refuses servers that do not name themselves Elasticsearch in ``X-Elastic-Product``, a
    header OpenSearch does not send; it is supplied for 2xx answers from such servers.
    """

    def perform_request(  # type: ignore[override]  # same parameters, passed through by keyword
        self, method: str, target: str, body: bytes | None = None, headers: Any = None, **kw: Any
    ) -> NodeApiResponse:
        """The request with plain JSON media types; the answer with the product header, and
        labelled :data:`JSON_BYTES` when that was asked for and it succeeded."""
        as_bytes = False
        if headers is not None:
            headers = HttpHeaders(headers)
            if headers.get("accept") == JSON_BYTES:
                headers["accept"] = "application/json"
                as_bytes = True
            for name in ("accept", "content-type"):
                value = headers.get(name)
                if value and "vnd.elasticsearch+" in value:
                    headers[name] = value.replace("vnd.elasticsearch+", "").split(";")[0]
        response = super().perform_request(method, target, body=body, headers=headers, **kw)
        meta = response.meta
        patched: HttpHeaders | None = None
        if "x-elastic-product" not in meta.headers:
            patched = HttpHeaders(meta.headers)
            patched["x-elastic-product"] = "Elasticsearch"
        if as_bytes and 200 <= meta.status < 300:
            patched = patched if patched is not None else HttpHeaders(meta.headers)
            patched["content-type"] = JSON_BYTES
        if patched is not None:
            response = NodeApiResponse(dataclasses.replace(meta, headers=patched), response.body)
        return response


#: A media type used only between :class:`ElasticsearchSource` and :class:`PlainJsonNode`,
#: never sent to a cluster: asked for as ``accept``, the node asks for plain JSON and labels a
#: 2xx answer with it, and the client (see :func:`make_client`) then hands back the answer's
#: bytes undecoded, for Arrow to decode (:func:`arrow_sources`).
JSON_BYTES = "application/x-downloader-json-bytes"


class _BytesSerializer(Serializer):
    """Leaves an answer labelled :data:`JSON_BYTES` as the bytes that came."""

    mimetype = JSON_BYTES

    def loads(self, data: bytes) -> bytes:
        return data

    def dumps(self, data: Any) -> bytes:
        return data if isinstance(data, bytes) else json.dumps(data).encode()


def reads_bytes(es: Elasticsearch) -> bool:
    """Whether ``es`` can hand back undecoded answers: made by :func:`make_client` (every node
    a :class:`PlainJsonNode`, :data:`JSON_BYTES` left undecoded)."""
    try:
        transport = es.transport
        if not isinstance(transport.serializers.get_serializer(JSON_BYTES), _BytesSerializer):
            return False
        return all(isinstance(node, PlainJsonNode) for node in transport.node_pool.all())
    except Exception:  # another client or transport: the decoded path is always right
        return False


@dataclass(frozen=True)
class ClusterAuth:
    """How to reach a secured cluster: an API key or a user and password, and TLS trust.

    ``ca_certs`` is a PEM file of the CA that signed the nodes' certificates (empty: the
    system's CAs); ``verify_certs=False`` accepts any certificate (test clusters only).
    The secrets are kept out of ``repr``, so they never reach a log line.
    """

    api_key: str = field(default="", repr=False)
    username: str = ""
    password: str = field(default="", repr=False)
    ca_certs: str = ""
    verify_certs: bool = True

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`elasticsearch.Elasticsearch` for these settings."""
        options: dict[str, Any] = {}
        if self.api_key:
            options["api_key"] = self.api_key
        if self.username:
            options["basic_auth"] = (self.username, self.password)
        if self.ca_certs:
            options["ca_certs"] = self.ca_certs
        if not self.verify_certs:
            options["verify_certs"] = False
            options["ssl_show_warn"] = False
        return options


def make_client(
    urls: str | Sequence[str], *, timeout: float = 30.0, auth: ClusterAuth | None = None
) -> Elasticsearch:
    """The official client for comma-separated ``urls``, with retries on timeouts and on
    overloaded or restarting nodes (429, 502, 503, 504), authenticated by ``auth``."""
    hosts = [u.strip() for u in urls.split(",")] if isinstance(urls, str) else list(urls)
    return Elasticsearch(
        [h for h in hosts if h],
        node_class=PlainJsonNode,
        request_timeout=timeout,
        retry_on_timeout=True,
        max_retries=3,
        retry_on_status=(429, 502, 503, 504),
        serializers={JSON_BYTES: _BytesSerializer()},
        **(auth or ClusterAuth()).client_options(),
    )


def translate(exc: Exception, what: str) -> Exception:
    """Our exception for a client error while doing ``what``."""
    if isinstance(exc, ApiError):
        status = exc.meta.status if exc.meta is not None else 0
        if status == 429 or status >= 500:
            return SourceUnavailable(f"the search cluster failed while {what}: {exc.message}")
        if status == 404 or "index_not_found" in str(exc.message):
            return BuildFailed(
                f"the search index does not exist while {what}; load records with "
                "`downloader ingest --target elasticsearch`"
            )
        return BuildFailed(f"the search cluster rejected the request while {what}: {exc.message}")
    if isinstance(exc, TransportError):  # connection refused, timeouts, TLS
        return SourceUnavailable(f"the search cluster cannot be reached while {what}: {exc}")
    return exc


def call(what: str, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``func(*args, **kwargs)``, a client error raised as our exception for ``what``."""
    try:
        return func(*args, **kwargs)
    except (ApiError, TransportError) as exc:
        raise translate(exc, what) from exc


def page_size(batch_size: int) -> int:
    """The hits one search or scroll page asks for to give batches of ``batch_size``."""
    return max(1, min(batch_size, MAX_PAGE))
