"""Browser tests of the web page: Playwright driving Debian's ``chromium``.

Nothing is downloaded at run time: Playwright is given the system browser's path
(``DOWNLOADER_CHROMIUM`` or ``chromium`` on PATH). ``make test`` installs ``chromium`` with
apt-get when it is missing and it runs as root; elsewhere these tests skip, saying how to
enable them. One ``downloader serve`` (a subprocess over a data directory ingested from the
fixtures) serves every test of the session.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.smtp import free_port

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
ARCHIVES = [
    FIXTURES / "real-dwca" / "idigbio-download-acer-rubrum-2022-05-11.zip",
    FIXTURES / "dwca" / "demo-occurrence-multimedia.zip",
    FIXTURES / "dwca" / "gbif-results.zip",
]
HOW_TO_ENABLE = (
    "browser tests need Debian's chromium and the playwright package: `make test` installs "
    "both (chromium with apt-get, as root); or `apt-get install chromium` and "
    "`pip install playwright`, or set DOWNLOADER_CHROMIUM to a Chromium binary"
)


def chromium_path() -> str | None:
    """The system Chromium to drive (never a browser Playwright would download)."""
    given = os.environ.get("DOWNLOADER_CHROMIUM")
    if given:
        return given if Path(given).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class LiveServer:
    """``downloader serve`` on a free loopback port."""

    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=60, **kw)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("portal-data")
    subprocess.run(
        [
            *(sys.executable, "-m", "downloader.cli", "ingest", "--no-export"),
            *("--data-dir", str(data), *(str(a) for a in ARCHIVES)),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    port = free_port()
    log = data / "serve.log"
    env = {**os.environ, "DOWNLOADER_DISPATCH_POLL_SECONDS": "0.3"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "downloader.cli", "serve", "--data-dir", str(data)),
                *("--port", str(port), "--workers", "1"),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", data, proc, log)
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(server.url + "/healthz", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("serve did not start:\n" + log.read_text())
        time.sleep(0.2)
    try:
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        pytest.skip(HOW_TO_ENABLE)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(HOW_TO_ENABLE)
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=args)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Watched:
    """A page with what it logged and asked for."""

    page: Any
    origin: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def foreign(self) -> list[str]:
        """Requests to any host other than the service's."""
        return [
            u for u in self.requests if not u.startswith((self.origin, "data:", "blob:", "about:"))
        ]


@pytest.fixture
def watched(browser: Any, live_server: LiveServer) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    w = Watched(page, live_server.url)
    page.on(
        "console",
        lambda m: w.errors.append(m.text) if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: w.errors.append(f"uncaught: {e}"))
    page.on("request", lambda r: w.requests.append(r.url))
    try:
        yield w
    finally:
        context.close()


def open_page(w: Watched, path: str = "/portal/") -> Any:
    """Open the page and wait until it has wired itself up."""
    w.page.goto(w.origin + path)
    w.page.wait_for_selector("body[data-ready=true]")
    return w.page
