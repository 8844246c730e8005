"""``downloader serve`` as a subprocess on a free port, over a data directory the test made."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.support.smtp import free_port

ROOT = Path(__file__).resolve().parents[2]


class Serve:
    """``downloader serve --data-dir <data_dir>`` on a free loopback port; ``env`` holds
    ``DOWNLOADER_*`` settings. Its output goes to ``serve-<port>.log`` in ``data_dir``.
    With ``own_group`` it runs in a process group of its own, so that one signal can reach
    serve and every worker it started (the fault-injection suite kills the lot)."""

    def __init__(self, data_dir: Path, *, own_group: bool = False, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / f"serve-{self.port}.log"
        environ = {**os.environ, "DOWNLOADER_DISPATCH_POLL_SECONDS": "0.5", **env}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "downloader.cli", "serve"),
                    *("--data-dir", str(data_dir), "--port", str(self.port)),
                ],
                cwd=ROOT,
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=own_group,
            )
        self.own_group = own_group
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.url + "/healthz", timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("serve did not start:\n" + self.log.read_text())
            time.sleep(0.2)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=60, **kw)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                if self.own_group:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                else:
                    self.proc.kill()
                self.proc.wait(30)
