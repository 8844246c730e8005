"""Many clients polling while downloads build: one ``downloader serve`` on loopback.

1. ``downloads`` downloads of the same query are requested with ``force=true`` (so each is
   its own job and all of them build, two at a time on the default two workers).
   Before that, two tiny downloads warm the two workers up, as in a service that has been
   running a while.
2. At once, :mod:`bench.loadgen` in a second process opens ``clients`` keep-alive
   connections, each polling one of those downloads' status URLs once every
   ``interval`` seconds (as a script polls; iDigBio's clients wait seconds between polls):
   requests, errors, status codes, p50/p99 latency, after a warm-up of
   :data:`WARMUP_SECONDS` on the same connections (opening 200 at once is not polling).
3. Meanwhile this process watches the jobs (one request every half second); when all have
   finished (or after ``duration`` seconds) the load generator is told to stop, so the
   figures cover the time the downloads were building. Every job must end SUCCESS.

Clients asking back to back instead (no interval) measure throughput, not latency: 200 of
them always find about 200 requests queued, so each waits for the other 199 (Little's law);
the ``api`` section measures that throughput with a few connections.

The same load with the workers at serve's own priority (``worker_nice`` 0) runs second, in
the same invocation, as the reference for what ``worker_nice`` buys.

The goal is a status p99 under :data:`P99_GOAL_MS` with no errors and no non-2xx answer.
The limits are lifted in this serve (new jobs per minute, jobs per requester): the figure
is the polling latency under build load, not the limiter's.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.harness import bench_env, free_port, log, server_process

#: The issue's goal for the status p99 under this load, in milliseconds.
P99_GOAL_MS = 50.0


#: Seconds the clients poll before their latencies count: their connections are opened
#: then (200 at once), as a polling script's stays open between polls.
WARMUP_SECONDS = 2.0


def _warm_workers(conn: http.client.HTTPConnection, timeout: float) -> None:
    """A service that has been up a while: each worker has built something (its first build
    opens the store) before the measured downloads are asked for."""
    paths = []
    for n in range(2):
        query = urlencode({"rq": json.dumps({"uuid": f"warm-up-{n}"}), "force": "true"})
        code, doc = _get(conn, "/v2/download/?" + query)
        if code != 200:
            raise RuntimeError(f"warm-up submission answered {code}: {doc}")
        paths.append(urlsplit(doc["status_url"]).path)
    deadline = time.monotonic() + timeout
    while not all(_get(conn, p)[1].get("complete") for p in paths):
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up downloads did not finish")
        time.sleep(0.2)


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, dict[str, Any]]:
    conn.request("GET", path, headers={"Accept": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, (json.loads(body) if body else {})


def run_load(
    data_dir: Path,
    work: Path,
    rq: dict[str, Any],
    *,
    clients: int = 200,
    downloads: int = 20,
    duration: float = 120.0,
    interval: float = 1.0,
    build_timeout: float = 900.0,
    worker_nice: int | None = None,
) -> dict[str, Any]:
    """Serve ``data_dir``; ``downloads`` builds of ``rq`` while ``clients`` poll them (with
    ``worker_nice`` set when given, else the configured default)."""
    port = free_port()
    settings = {
        "DOWNLOADER_SMTP_HOST": "",
        "DOWNLOADER_BASE_URL": "",
        "DOWNLOADER_NEW_JOBS_PER_MINUTE": "0",
        "DOWNLOADER_ACTIVE_JOBS_PER_REQUESTER": "0",
    }
    if worker_nice is not None:
        settings["DOWNLOADER_WORKER_NICE"] = str(worker_nice)
    env = bench_env(settings)
    cmd = [sys.executable, "-m", "downloader.cli", "serve", "--data-dir", str(data_dir)]
    cmd += ["--port", str(port)]
    out: dict[str, Any] = {
        "clients": clients,
        "downloads": downloads,
        "duration_limit": duration,
        "interval": interval,
        "goal_p99_ms": P99_GOAL_MS,
        "worker_nice": worker_nice,
    }
    with server_process(cmd, port=port, env=env, log_path=work / f"serve-load-{worker_nice}.log"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        _warm_workers(conn, build_timeout)
        submit = "/v2/download/?" + urlencode({"rq": json.dumps(rq), "force": "true"})
        paths = []
        for _ in range(downloads):
            code, doc = _get(conn, submit)
            if code != 200 or "status_url" not in doc:
                raise RuntimeError(f"submission answered {code}: {doc}")
            paths.append(urlsplit(doc["status_url"]).path)
        log(f"load: {clients} clients polling {downloads} building downloads (<= {duration} s)")
        load = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.loadgen", "--port", str(port)),
                *(arg for p in paths for arg in ("--path", p)),
                *("--concurrency", str(clients), "--duration", str(duration)),
                *("--max-requests", "10000000", "--warmup", str(WARMUP_SECONDS)),
                *("--interval", str(interval)),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=bench_env(),
        )
        started = time.monotonic()
        building_at_end = downloads
        while load.poll() is None:
            time.sleep(0.5)
            building_at_end = sum(1 for p in paths if not _get(conn, p)[1].get("complete"))
            if building_at_end == 0:
                out["all_built_after_s"] = time.monotonic() - started
                load.send_signal(signal.SIGTERM)  # it stops and prints its figures
                break
        stdout, _ = load.communicate(timeout=60)
        out["status"] = json.loads(stdout.strip().splitlines()[-1])
        out["still_building_when_the_load_ended"] = building_at_end
        deadline = time.monotonic() + build_timeout
        states: dict[str, int] = {}
        for p in paths:
            while True:
                code, doc = _get(conn, p)
                if doc.get("complete") or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            state = str(doc.get("task_status"))
            states[state] = states.get(state, 0) + 1
        out["final_states"] = states
        conn.close()
    s = out["status"]
    non_2xx = sum(n for code, n in s["statuses"].items() if not 200 <= int(code) < 300)
    out["non_2xx"] = non_2xx
    out["ok"] = s["errors"] == 0 and non_2xx == 0 and states == {"SUCCESS": downloads}
    return out
