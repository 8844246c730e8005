"""200 clients polling while 20 downloads build: no errors, no 5xx, every download whole.

The latency under this load is a benchmark figure (``python -m bench --only load``), never a
pass/fail here; this test checks what must hold whatever the machine's speed: every poll is
answered 200 with a status, every download ends SUCCESS, and every archive reads whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from dwca.read import DwCAReader

from bench.loadgen import Tally, run_load
from tests.support.serve import Serve

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = [
    ROOT / "tests" / "fixtures" / "dwca" / "dwca-simple-test-archive.zip",
    ROOT / "tests" / "fixtures" / "dwca" / "gbif-results.zip",
]
CLIENTS = 200
DOWNLOADS = 20
DEADLINE = 240.0


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    from downloader.ingest.load import ingest_paths, ingest_synthetic

    data = tmp_path_factory.mktemp("load")
    _, failures = ingest_paths(data, SAMPLES)
    assert not failures, failures
    ingest_synthetic(data, 2000, seed=3)
    server = Serve(
        data,
        DOWNLOADER_NEW_JOBS_PER_MINUTE="0",
        DOWNLOADER_ACTIVE_JOBS_PER_REQUESTER="0",
    )
    try:
        yield server
    finally:
        server.stop()
    assert "Traceback" not in server.log_text()


def test_many_clients_polling_while_downloads_build(serve: Serve, tmp_path: Path) -> None:
    paths = []
    for _ in range(DOWNLOADS):
        asked = serve.get("/v2/download/", params={"rq": "{}", "force": "true"})
        assert asked.status_code == 200, asked.text
        paths.append(urlsplit(asked.json()["status_url"]).path)
    assert len(set(paths)) == DOWNLOADS

    tally = Tally()
    done: dict[str, dict[str, object]] = {}

    async def watch() -> None:
        # Stop the load once every download has finished (or at the deadline).
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + DEADLINE
        while len(done) < DOWNLOADS and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            for path in paths:
                if path not in done:
                    doc = (await loop.run_in_executor(None, serve.get, path)).json()
                    if doc["complete"]:
                        done[path] = doc
        tally.stopped = True

    async def main() -> dict[str, object]:
        watcher = asyncio.create_task(watch())
        result = await run_load(
            "127.0.0.1",
            serve.port,
            paths,
            concurrency=CLIENTS,
            duration=DEADLINE,
            max_requests=10**9,
            warmup=0,
            interval=0.5,
            tally=tally,
        )
        await watcher
        return result

    # A loop of its own on a thread of its own: an earlier test of the suite may have left
    # an event loop set (or running) on this thread, where asyncio.run() refuses to start.
    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(asyncio.run, main()).result()
    print(f"load: {json.dumps(result)}")
    assert result["errors"] == 0
    assert result["statuses"] == {"200": result["requests"]}
    assert isinstance(result["requests"], int) and result["requests"] >= CLIENTS
    assert len(done) == DOWNLOADS
    assert {str(doc["task_status"]) for doc in done.values()} == {"SUCCESS"}
    counts = {json.dumps(doc["counts"], sort_keys=True) for doc in done.values()}
    assert len(counts) == 1  # the same query, built whole each time
    expected = next(iter(done.values()))["counts"]
    assert isinstance(expected, dict) and expected["records"] > 2000
    for n, doc in enumerate(done.values()):
        body = requests.get(str(doc["download_url"]), timeout=60).content
        assert hashlib.sha256(body).hexdigest() == doc["checksum"]["value"]  # type: ignore[index]
        archive = tmp_path / f"{n}.zip"
        archive.write_bytes(body)
        with DwCAReader(str(archive)) as dwca:
            assert sum(1 for _ in dwca) == expected["records"]
