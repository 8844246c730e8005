"""The HTTP API under load: one ``downloader serve`` on loopback, the load generator in a
second process.

1. A download is requested over HTTP and polled until it completes (bounded).
2. Its status URL is loaded by :mod:`bench.loadgen`: requests per second, p50/p99 latency.
3. The same load against :mod:`bench.bare_server` serving the same bytes is the reference.
4. The same download is requested again, one request at a time: each is served by the
   existing job; their latency is what a script sees when it repeats a request.
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.harness import bench_env, free_port, log, server_process


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, dict[str, Any], float]:
    start = time.perf_counter()
    conn.request("GET", path, headers={"Accept": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    elapsed = time.perf_counter() - start
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        doc = {"raw": body[:200].decode("utf-8", "replace")}
    return resp.status, doc, elapsed


def _loadgen(
    port: int, path: str, *, concurrency: int, duration: float, max_requests: int
) -> dict[str, Any]:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "bench.loadgen", "--port", str(port), "--path", path),
            *("--concurrency", str(concurrency), "--duration", str(duration)),
            *("--max-requests", str(max_requests)),
        ],
        capture_output=True,
        text=True,
        env=bench_env(),
        timeout=duration + 60,
        check=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_api(
    data_dir: Path,
    work: Path,
    rq: dict[str, Any],
    *,
    concurrency: int,
    duration: float,
    max_requests: int,
    build_timeout: float,
    resubmissions: int = 50,
) -> dict[str, Any]:
    """Serve ``data_dir``, complete one download of ``rq``, then measure the status endpoint
    and a repeated submission; the same load on a bare server as the reference."""
    port = free_port()
    env = bench_env({"DOWNLOADER_SMTP_HOST": "", "DOWNLOADER_BASE_URL": ""})
    cmd = [sys.executable, "-m", "downloader.cli", "serve", "--data-dir", str(data_dir)]
    cmd += ["--port", str(port)]
    out: dict[str, Any] = {"concurrency": concurrency, "duration_limit": duration}
    with server_process(cmd, port=port, env=env, log_path=work / "serve.log"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        submit = "/v2/download/?" + urlencode({"rq": json.dumps(rq)})
        code, doc, first_latency = _get(conn, submit)
        if code != 200 or "status_url" not in doc:
            raise RuntimeError(f"submission answered {code}: {doc}")
        status_path = urlsplit(doc["status_url"]).path
        out["first_submission_ms"] = first_latency * 1000
        out["status_path"] = status_path
        deadline = time.monotonic() + build_timeout
        while not doc.get("complete") and time.monotonic() < deadline:
            time.sleep(0.2)
            code, doc, _ = _get(conn, status_path)
        if doc.get("task_status") != "SUCCESS":
            raise RuntimeError(f"the download did not complete: {doc}")
        out["job_records"] = doc.get("records_written")
        (work / "status.json").write_bytes(json.dumps(doc).encode())

        log(f"API: status load on {status_path} ({concurrency} connections, <= {duration} s)")
        out["status"] = _loadgen(
            port, status_path, concurrency=concurrency, duration=duration, max_requests=max_requests
        )

        latencies = []
        job_ids = set()
        for _ in range(resubmissions):
            code, again, elapsed = _get(conn, submit)
            if code == 200:
                latencies.append(elapsed * 1000)
                job_ids.add(urlsplit(again.get("status_url", "")).path)
        conn.close()
        out["resubmission"] = {
            "requests": len(latencies),
            "same_job": job_ids == {status_path},
            "p50_ms": statistics.median(latencies) if latencies else None,
            "max_ms": max(latencies) if latencies else None,
        }

    # The reference: identical bytes from a server that does nothing else.
    bare_port = free_port()
    bare_cmd = [
        sys.executable,
        "-m",
        "bench.bare_server",
        str(bare_port),
        str(work / "status.json"),
    ]
    with server_process(bare_cmd, port=bare_port, log_path=work / "bare.log"):
        log("API: the same load on a bare Tornado server")
        out["bare"] = _loadgen(
            bare_port,
            status_path,
            concurrency=concurrency,
            duration=duration,
            max_requests=max_requests,
        )
    return out
