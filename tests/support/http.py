"""The API served by a real Tornado server on a free loopback port, on a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from downloader.api.app import make_app, make_server
from downloader.backends import Context
from tests.support.smtp import free_port


@contextmanager
def api_server(ctx: Context) -> Iterator[str]:
    """Serve ``ctx``'s API until the block ends; yields its base URL."""
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = make_server(make_app(ctx), ctx.settings)
        server.listen(port, address="127.0.0.1")
        loop.call_soon(ready.set)
        loop.run_forever()
        server.stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30), "the API server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
