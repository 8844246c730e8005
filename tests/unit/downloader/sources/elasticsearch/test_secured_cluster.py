"""A secured cluster is reached with the configured credentials and CA, and refused
without them: a small HTTPS server with a certificate from a test CA (trustme) stands in for
Elasticsearch 8's defaults (TLS and authentication on)."""

from __future__ import annotations

import base64
import http.server
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from downloader.config import load_settings
from downloader.errors import ConfigError
from downloader.sources.elasticsearch import ClusterAuth, ElasticsearchSource


@dataclass
class Cluster:
    url: str
    ca_pem: Path
    authorizations: list[str] = field(default_factory=list)


def _handler(cluster: Cluster, expected: set[str]) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, body: bytes) -> None:
            given = self.headers.get("Authorization", "")
            cluster.authorizations.append(given)
            status = 200 if given in expected else 401
            self.send_response(status)
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self._answer(b"")

        def do_GET(self) -> None:
            self._answer(b'{"_source": {"data_version": "7"}}')

        def log_message(self, format: str, *args: object) -> None:  # stdlib's name
            del format, args

    return Handler


API_KEY = base64.b64encode(b"key-id:key-secret").decode()
BASIC = "Basic " + base64.b64encode(b"elastic:s3cret").decode()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_pem = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    info = Cluster(f"https://127.0.0.1:{server.server_address[1]}", ca_pem)
    server.RequestHandlerClass = _handler(info, {f"ApiKey {API_KEY}", BASIC})
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield info
    finally:
        server.shutdown()
        server.server_close()


def _source(cluster: Cluster, **settings: object) -> ElasticsearchSource:
    return ElasticsearchSource.from_settings(
        load_settings(
            {},
            overrides={
                "record_source": "elasticsearch",
                "elasticsearch_url": cluster.url,
                "elasticsearch_timeout_seconds": 5,
                **settings,
            },
        )
    )


def test_api_key_and_ca_from_the_settings_reach_the_cluster(cluster: Cluster) -> None:
    src = _source(
        cluster, elasticsearch_api_key=API_KEY, elasticsearch_ca_certs=str(cluster.ca_pem)
    )
    assert src.ping()
    assert src.data_version() == "7"
    assert cluster.authorizations[-1] == f"ApiKey {API_KEY}"


def test_basic_auth_from_the_settings(cluster: Cluster) -> None:
    src = _source(
        cluster,
        elasticsearch_username="elastic",
        elasticsearch_password="s3cret",
        elasticsearch_ca_certs=str(cluster.ca_pem),
    )
    assert src.data_version() == "7"
    assert cluster.authorizations[-1] == BASIC


def test_without_the_ca_the_certificate_is_refused_unless_verification_is_off(
    cluster: Cluster,
) -> None:
    assert not _source(cluster, elasticsearch_api_key=API_KEY).ping()
    relaxed = _source(cluster, elasticsearch_api_key=API_KEY, elasticsearch_verify_certs=False)
    assert relaxed.ping()


def test_wrong_credentials_are_refused(cluster: Cluster) -> None:
    src = _source(
        cluster, elasticsearch_api_key="bm90Omdvb2Q=", elasticsearch_ca_certs=str(cluster.ca_pem)
    )
    assert not src.ping()


def test_secrets_stay_out_of_reprs_and_bad_combinations_are_refused(tmp_path: Path) -> None:
    auth = ClusterAuth(api_key="very-secret", username="u", password="hunter2")
    assert "very-secret" not in repr(auth) and "hunter2" not in repr(auth)
    settings = load_settings(
        {"DOWNLOADER_ELASTICSEARCH_USERNAME": "u", "DOWNLOADER_ELASTICSEARCH_PASSWORD": "hunter2"}
    )
    assert "hunter2" not in repr(settings)
    with pytest.raises(ConfigError, match="not both"):
        load_settings(
            {},
            overrides={
                "elasticsearch_api_key": "k",
                "elasticsearch_username": "u",
                "elasticsearch_password": "p",
            },
        )
    with pytest.raises(ConfigError, match="go together"):
        load_settings({}, overrides={"elasticsearch_username": "u"})
    with pytest.raises(ConfigError, match="not a file"):
        load_settings(
            {},
            overrides={
                "record_source": "elasticsearch",
                "elasticsearch_ca_certs": str(tmp_path / "missing.pem"),
            },
        )
