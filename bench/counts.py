"""``/v2/count`` latency through a ``downloader serve``: the web page counts while a person
types, so each query type is timed over distinct values (no answer is cached twice)."""

from __future__ import annotations

import http.client
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench.harness import bench_env, free_port, log, server_process

GENERA = ["acer", "quercus", "pinus", "betula", "rosa", "poa", "ursus", "canis", "salmo", "apis"]
WORDS = ["maple", "oak", "river", "forest", "ridge", "creek", "lake", "hill", "pine", "bay"]


def _queries(kind: str, n: int, rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        g = GENERA[i % len(GENERA)]
        if kind == "term":
            out.append({"genus": g, "catalognumber": {"type": "exists"} if i % 2 else None})
        elif kind == "list":
            out.append({"genus": [g, GENERA[(i + 3) % len(GENERA)]], "hasImage": i % 2 == 0})
        elif kind == "range":
            year = 1820 + (i * 7) % 190
            out.append(
                {
                    "datecollected": {
                        "type": "range",
                        "gte": f"{year}-01-01",
                        "lte": f"{year + 9}-12-31",
                    }
                }
            )
        elif kind == "prefix":
            out.append(
                {
                    "scientificname": {"type": "prefix", "value": g[: 2 + i % 3]},
                    "kingdom": {"type": "exists"},
                }
            )
        elif kind == "bbox":
            lat, lon = rng.uniform(-50, 40), rng.uniform(-170, 140)
            out.append(
                {
                    "geopoint": {
                        "type": "geo_bounding_box",
                        "top_left": {"lat": lat + 10, "lon": lon},
                        "bottom_right": {"lat": lat, "lon": lon + 25},
                    }
                }
            )
        else:
            out.append({"data": {"type": "fulltext", "value": f"{WORDS[i % len(WORDS)]} {g}"}})
    return [{k: v for k, v in q.items() if v is not None} for q in out]


def run_counts(data_dir: Path, work: Path, *, per_kind: int = 40) -> dict[str, Any]:
    """p50 and p95 milliseconds of ``/v2/count`` per query type."""
    port = free_port()
    env = bench_env({"DOWNLOADER_SMTP_HOST": ""})
    cmd = [sys.executable, "-m", "downloader.cli", "serve", "--data-dir", str(data_dir)]
    cmd += ["--port", str(port)]
    rng = random.Random(7)
    out: dict[str, Any] = {}
    with server_process(cmd, port=port, env=env, log_path=work / "serve-counts.log"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for kind in ("term", "list", "range", "prefix", "bbox", "fulltext"):
            times = []
            for rq in _queries(kind, per_kind, rng):
                start = time.perf_counter()
                conn.request("GET", "/v2/count?" + urlencode({"rq": json.dumps(rq)}))
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    raise RuntimeError(f"count of {rq} answered {response.status}: {body[:200]!r}")
                times.append(time.perf_counter() - start)
            times.sort()
            out[kind] = {
                "p50_ms": statistics.median(times) * 1000,
                "p95_ms": times[max(0, round(0.95 * len(times)) - 1)] * 1000,
            }
            log(f"count {kind}: p50 {out[kind]['p50_ms']:.0f} ms, p95 {out[kind]['p95_ms']:.0f} ms")
    return out
