"""Small downloads through a warm ``downloader serve``: submission to ``complete``.

Distinct queries of a few hundred records each (catalogue-number selections taken from the
store), then a one-record and an empty download, each submitted and polled (every 10 ms for
the first half second) on one keep-alive connection, the way the web page or a script sees
them.
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.harness import bench_env, free_port, log, server_process

PER_QUERY = 300
#: Shortest wait between two status requests, and the longest as a share of the time waited.
POLL_SECONDS = 0.01
POLL_SHARE = 0.02


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    doc = json.loads(response.read() or b"{}")
    if response.status != 200:
        raise RuntimeError(f"{method} {path} answered {response.status}: {doc}")
    return doc


def submit_and_wait(conn: http.client.HTTPConnection, rq: dict[str, Any], timeout: float) -> float:
    """Seconds from the submission of a new download of ``rq`` to its ``complete`` status.

    The status is asked for every 10 ms at first, then every 2% of the time waited so far
    (at most 2% late), so that a long build does not share the cores with a hundred status
    requests a second, which no client makes."""
    start = time.perf_counter()
    # force: always a new build, never an archive an earlier run left.
    doc = _request(conn, "POST", "/v2/download", {"rq": rq, "force": True})
    path = f"/v2/download/{doc['id']}"
    deadline = start + timeout
    while not doc.get("complete"):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"not complete after {timeout} s: {doc}")
        time.sleep(max(POLL_SECONDS, (time.perf_counter() - start) * POLL_SHARE))
        doc = _request(conn, "GET", path)
    if doc.get("task_status") != "SUCCESS":
        raise RuntimeError(f"failed: {doc.get('error')}")
    return time.perf_counter() - start


def _selections(db_path: Path, count: int) -> list[list[str]]:
    import duckdb

    con = duckdb.connect(str(db_path), read_only=True)
    try:
        rows = con.execute(
            "SELECT catalognumber FROM records WHERE catalognumber IS NOT NULL "
            "ORDER BY catalognumber LIMIT ?",
            [count * PER_QUERY],
        ).fetchall()
    finally:
        con.close()
    values = [r[0] for r in rows]
    return [values[i : i + PER_QUERY] for i in range(0, len(values), PER_QUERY)][:count]


@contextmanager
def warm_serve(data_dir: Path, log_path: Path) -> Iterator[http.client.HTTPConnection]:
    """A ``downloader serve`` on the store (per-client limits off: one client asks for many
    downloads in a row here) and a keep-alive connection to it."""
    port = free_port()
    env = bench_env(
        {
            "DOWNLOADER_SMTP_HOST": "",
            "DOWNLOADER_BASE_URL": "",
            "DOWNLOADER_NEW_JOBS_PER_MINUTE": "0",
            "DOWNLOADER_ACTIVE_JOBS_PER_REQUESTER": "0",
        }
    )
    cmd = [sys.executable, "-m", "downloader.cli", "serve", "--data-dir", str(data_dir)]
    cmd += ["--port", str(port)]
    with server_process(cmd, port=port, env=env, log_path=log_path):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            yield conn
        finally:
            conn.close()


def run_small(data_dir: Path, db_path: Path, work: Path, *, queries: int = 30) -> dict[str, Any]:
    """Median and p95 of submission-to-complete for distinct small downloads, plus the
    one-record and the empty download."""
    selections = _selections(db_path, queries + 2)
    if len(selections) < 3:
        raise RuntimeError("the store has too few catalogue numbers for small selections")
    with warm_serve(data_dir, work / "serve-small.log") as conn:
        # One download to be sure the workers are up (they start with serve).
        submit_and_wait(conn, {"catalognumber": selections[0]}, 120)
        times = [submit_and_wait(conn, {"catalognumber": sel}, 120) for sel in selections[1:-1]]
        tiny = submit_and_wait(conn, {"catalognumber": selections[-1][0]}, 120)
        empty = submit_and_wait(conn, {"catalognumber": f"no-such-number-{time.time_ns()}"}, 120)
    times.sort()
    out = {
        "records_per_query": PER_QUERY,
        "queries": len(times),
        "median_ms": statistics.median(times) * 1000,
        "p95_ms": times[max(0, round(0.95 * len(times)) - 1)] * 1000,
        "tiny_ms": tiny * 1000,
        "empty_ms": empty * 1000,
    }
    log(
        f"small downloads: median {out['median_ms']:.0f} ms, p95 {out['p95_ms']:.0f} ms, "
        f"one record {out['tiny_ms']:.0f} ms, empty {out['empty_ms']:.0f} ms"
    )
    return out
