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
import signal
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
    #: Set by SIGTERM/SIGINT (the command line): every connection stops after its request.
    stopped: bool = False
    #: Requests started before this ``perf_counter`` time are the warm-up: their latency
    #: and status are not counted (errors are, always).
    count_after: float = 0.0
    warmup_requests: int = 0


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
    host: str,
    port: int,
    request: bytes,
    tally: Tally,
    deadline: float,
    limit: int,
    *,
    interval: float = 0.0,
    offset: float = 0.0,
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    # A polling client: one request every ``interval`` seconds (none: back to back),
    # starting ``offset`` into the first interval so the clients do not ask in step.
    next_at = time.perf_counter() + offset
    while time.perf_counter() < deadline and tally.sent < limit and not tally.stopped:
        if interval > 0:
            wait = next_at - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
                if time.perf_counter() >= deadline or tally.stopped:
                    break
            next_at = max(next_at + interval, time.perf_counter())
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
        if start < tally.count_after:
            tally.warmup_requests += 1
        else:
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
    path: str | Sequence[str],
    *,
    concurrency: int,
    duration: float,
    max_requests: int,
    warmup: float = 0.5,
    interval: float = 0.0,
    tally: Tally | None = None,
) -> dict[str, Any]:
    """Load ``path`` for ``duration`` seconds or ``max_requests`` requests, whichever first.

    With several paths, connection ``i`` asks for path ``i % len(paths)`` (many clients,
    each polling its own download). A warm-up of ``warmup`` seconds comes first and is not
    counted (on the same connections, which stay open). With ``interval``, each connection
    sends one request every ``interval`` seconds (a client polling) instead of back to
    back. ``tally`` may be given to stop the run from outside (set its ``stopped``).
    """
    paths = [path] if isinstance(path, str) else list(path)
    requests = [
        (
            f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n"
            "Connection: keep-alive\r\n\r\n"
        ).encode("latin-1")
        for p in paths
    ]
    tally = tally or Tally()
    begun = time.perf_counter()
    # The warm-up runs on the same connections (they stay open, as a polling client's
    # does), so the measured part does not include connecting them.
    tally.count_after = begun + warmup
    await asyncio.gather(
        *(
            _connection(
                host,
                port,
                requests[i % len(requests)],
                tally,
                begun + warmup + duration,
                max_requests,
                interval=interval,
                offset=interval * i / concurrency,
            )
            for i in range(concurrency)
        )
    )
    start = min(tally.count_after, time.perf_counter())
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
        "interval": interval,
        "warmup_requests": tally.warmup_requests,
        "paths": len(paths),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: load one URL path on loopback and print the figures as JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--path", required=True, action="append", help="repeat for several (spread over clients)"
    )
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0, help="seconds (upper bound)")
    p.add_argument("--max-requests", type=int, default=100_000, help="upper bound")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds not counted")
    p.add_argument(
        "--interval",
        type=float,
        default=0.0,
        help="seconds between one connection's requests (0: back to back)",
    )
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("the load generator only targets loopback addresses")

    async def run() -> dict[str, Any]:
        # SIGTERM or SIGINT ends the run early (the caller decides when): figures so far.
        tally = Tally()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: setattr(tally, "stopped", True))
        return await run_load(
            args.host,
            args.port,
            args.path if len(args.path) > 1 else args.path[0],
            concurrency=args.concurrency,
            duration=args.duration,
            max_requests=args.max_requests,
            warmup=args.warmup,
            interval=args.interval,
            tally=tally,
        )

    result = asyncio.run(run())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
