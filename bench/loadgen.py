"""A small HTTP/1.1 load generator: keep-alive connections on loopback, bounded in requests
and time, latency of every request recorded.

Run as its own process so it does not share an interpreter (or a GIL) with the server::

    python -m bench.loadgen --port 8080 --path /status/ID --concurrency 8 --duration 10

It prints one JSON line: requests, errors, seconds, requests per second, latency
percentiles in milliseconds, and the status codes seen. It speaks just enough HTTP for
GET requests to a well-behaved server (Content-Length or chunked bodies), on raw asyncio
streams, which costs far less per request than ``http.client`` and so measures the server
rather than the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Tally:
    """What the connections saw, shared by every connection of one run."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    sent: int = 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; its status code and whether the server keeps the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() != "close"


async def _connection(
    host: str, port: int, request: bytes, tally: Tally, deadline: float, limit: int
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < deadline and tally.sent < limit:
        if writer is None or reader is None:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                tally.errors += 1
                await asyncio.sleep(0.01)
                continue
        tally.sent += 1
        start = time.perf_counter()
        try:
            writer.write(request)
            status, keep = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            tally.errors += 1
            writer.close()
            reader = writer = None
            continue
        tally.latencies.append(time.perf_counter() - start)
        tally.statuses[status] += 1
        if not keep:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def run_load(
    host: str,
    port: int,
    path: str,
    *,
    concurrency: int,
    duration: float,
    max_requests: int,
    warmup: float = 0.5,
) -> dict[str, Any]:
    """Load ``path`` for ``duration`` seconds or ``max_requests`` requests, whichever first.

    A short warm-up with the same connections comes first and is not counted.
    """
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n"
        "Connection: keep-alive\r\n\r\n"
    ).encode("latin-1")
    if warmup > 0:
        await asyncio.gather(
            *(
                _connection(host, port, request, Tally(), time.perf_counter() + warmup, 10**9)
                for _ in range(concurrency)
            )
        )
    tally = Tally()
    start = time.perf_counter()
    await asyncio.gather(
        *(
            _connection(host, port, request, tally, start + duration, max_requests)
            for _ in range(concurrency)
        )
    )
    seconds = time.perf_counter() - start
    lat = sorted(tally.latencies)
    ok = sum(n for code, n in tally.statuses.items() if 200 <= code < 300)
    return {
        "requests": len(lat),
        "ok": ok,
        "errors": tally.errors,
        "seconds": seconds,
        "requests_per_second": ok / seconds if seconds > 0 else 0.0,
        "p50_ms": _percentile(lat, 0.50) * 1000,
        "p90_ms": _percentile(lat, 0.90) * 1000,
        "p99_ms": _percentile(lat, 0.99) * 1000,
        "max_ms": (lat[-1] * 1000) if lat else float("nan"),
        "concurrency": concurrency,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: load one URL path on loopback and print the figures as JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0, help="seconds (upper bound)")
    p.add_argument("--max-requests", type=int, default=100_000, help="upper bound")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds not counted")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("the load generator only targets loopback addresses")
    result = asyncio.run(
        run_load(
            args.host,
            args.port,
            args.path,
            concurrency=args.concurrency,
            duration=args.duration,
            max_requests=args.max_requests,
            warmup=args.warmup,
        )
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
