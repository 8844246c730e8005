"""A throw-away S3 for the test suite: moto's standalone server on a free port.

The server runs in a thread of the test process but speaks real HTTP, so subprocesses
(``downloader serve``, a Celery worker) reach it through ``endpoint_url`` like any
S3-compatible store. Moto keeps its state in memory; it disappears with the process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from moto.server import ThreadedMotoServer

#: Credentials moto accepts (any value works); exported to subprocesses by the tests.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    """A running moto S3 server."""

    endpoint_url: str


@contextmanager
def running_s3(monkeypatch_env: bool = True) -> Iterator[S3Server]:
    """Start moto on a free port (and, by default, point boto3's credentials at fakes)."""
    import os

    saved = {k: os.environ.get(k) for k in FAKE_CREDENTIALS}
    if monkeypatch_env:
        os.environ.update(FAKE_CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()
        if monkeypatch_env:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
