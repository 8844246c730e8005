"""The HTTP edges: an over-long URL or header block gets a JSON answer saying to POST, not a
reset connection; a client that never finishes its request is cut off."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

from downloader.api.base import MAX_HEADER_BYTES, url_limit
from tests.support.http import api_server
from tests.unit.downloader.conftest import Api, local_context


def _selection(n: int) -> str:
    return json.dumps({"uuid": [f"00000000-0000-0000-0000-{i:012d}" for i in range(n)]})


def test_a_750_kb_get_is_a_414_json_saying_to_post(api: Api) -> None:
    rq = _selection(20_000)  # about 750 KB once percent-encoded
    answer = requests.get(f"{api.url}/v2/download/", params={"rq": rq}, timeout=60)
    assert answer.status_code == 414
    doc = answer.json()
    assert doc["name"] == "URITooLong" and doc["status"] == 414
    assert "POST" in doc["error"] and str(url_limit(api.ctx.settings)) in doc["error"]
    assert api.ctx.jobs.pending_jobs() == []
    # The same query by POST is read (and refused for its size, by the selection limit).
    posted = requests.post(f"{api.url}/v2/download/", json={"rq": rq}, timeout=60)
    assert posted.status_code == 413 and posted.json()["name"] in {
        "BodyTooLarge",
        "SelectionTooLarge",
    }


def test_an_unknown_path_with_a_long_url_is_414_too(api: Api) -> None:
    long_url = f"{api.url}/nowhere?x={'a' * (url_limit(api.ctx.settings) + 1)}"
    answer = requests.get(long_url, timeout=30)
    assert answer.status_code == 414 and answer.json()["name"] == "URITooLong"


def test_oversized_headers_are_a_431_json(api: Api) -> None:
    headers = {f"X-Filler-{i}": "v" * 1000 for i in range(MAX_HEADER_BYTES // 1000 + 2)}
    answer = requests.get(f"{api.url}/v2/download/", headers=headers, timeout=30)
    assert answer.status_code == 431
    assert answer.json()["name"] == "RequestHeaderFieldsTooLarge"
    assert requests.get(f"{api.url}/healthz", timeout=30).status_code == 200


def test_a_client_that_never_finishes_its_request_is_cut_off(tmp_path: Path) -> None:
    ctx = local_context(tmp_path, records=3, client_timeout_seconds=1)
    with api_server(ctx) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
            sock.sendall(b"GET /v2/download/?rq=%7B%7D HTTP/1.1\r\nHost: x\r\n")  # head unfinished
            started = time.monotonic()
            assert sock.recv(1024) == b""  # closed by the server
        assert time.monotonic() - started < 20
        assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
