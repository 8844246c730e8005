"""A throw-away OpenSearch-compatible server for tests: the ``osmem-server`` wheel's binary.

``osmem-server`` is an in-memory server (no JVM) that speaks the OpenSearch REST API. Its
wheel ships a launcher (:class:`osmem_server.OsmemServer`) and pytest fixtures of its own;
the helpers here add what this project needs on top:

- :func:`running_osmem` starts a server on a free port (the binary binds ``127.0.0.1:0``
  and reports the port it got), waits until it answers, yields it, and stops it;
- :func:`search_client` builds the official ``elasticsearch`` client for it. The 8/9 client
  sends ``Accept: application/vnd.elasticsearch+json; compatible-with=N``, which osmem
  answers with 406, so the client gets :class:`PlainJsonNode`, a transport node that sends
  the plain media types instead. Production code keeps the official client unchanged;
- :func:`osmem_search` is a module-scoped pytest fixture yielding an :class:`OsmemSearch`
  (the URL and a client). Import it into a test module to use it.

The plugin's own ``osmem_server`` fixture freezes the base cluster (writes only through
clones); these helpers do not, so a test can create indices directly.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from elastic_transport import HttpHeaders, Urllib3HttpNode
from elastic_transport._node import NodeApiResponse  # exported only from the node package
from elasticsearch import Elasticsearch
from osmem_server import OsmemServer

# "application/vnd.elasticsearch+json; compatible-with=9" -> "application/json"
_COMPAT = re.compile(r"application/vnd\.elasticsearch\+([a-z-]+)(\s*;\s*compatible-with=\d+)?")


class PlainJsonNode(Urllib3HttpNode):
    """A urllib3 transport node that sends plain JSON media types (test use only)."""

    def perform_request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: HttpHeaders | None = None,
        **kwargs: Any,
    ) -> NodeApiResponse:
        """Send the request with ``Accept``/``Content-Type`` stripped of the compat form."""
        if headers is not None:
            headers = headers.copy()
            for name in ("accept", "content-type"):
                if name in headers:
                    headers[name] = _COMPAT.sub(r"application/\1", headers[name])
        return super().perform_request(method, target, body=body, headers=headers, **kwargs)


@contextmanager
def running_osmem(*, startup_timeout: float = 30.0) -> Iterator[OsmemServer]:
    """A fresh osmem server on a free local port, stopped when the context ends."""
    # japanese=False: the kuromoji dictionary is not needed and slows the start.
    server = OsmemServer.start(japanese=False, addr="127.0.0.1:0", startup_timeout=startup_timeout)
    try:
        server.request("GET", "/")  # answers only once it is ready to serve
        yield server
    finally:
        server.close()


def search_client(url: str) -> Elasticsearch:
    """The official client for a test server at ``url``, speaking plain JSON."""
    return Elasticsearch(url, node_class=PlainJsonNode, request_timeout=30)


@dataclass(frozen=True)
class OsmemSearch:
    """A running test server: its base URL and a client for it."""

    url: str
    client: Elasticsearch


@pytest.fixture(scope="module")
def osmem_search() -> Iterator[OsmemSearch]:
    """A module-wide osmem server and client (created indices last for the module)."""
    with running_osmem() as server:
        client = search_client(server.url)
        try:
            yield OsmemSearch(server.url, client)
        finally:
            client.close()
