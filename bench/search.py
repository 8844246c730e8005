"""The search-cluster path: records in an ``osmem-server`` index (the OpenSearch-compatible
in-memory server the test suite uses), our archive build against a bare scroll that only
reads the same documents.

The bare read is the floor for anything that goes through the cluster's HTTP API: page
requests on one keep-alive connection, each page's JSON decoded, nothing else done. Our
build does that plus encoding, compression and the archive's other files; the ratio bare /
ours says what share of the read's speed survives the rest of the work.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.columns import Selection
from bench.embedded import Store, ingest_synthetic, run_ours
from bench.harness import ROOT, bench_env, log


def start_cluster() -> Any:
    """An osmem-server on a free loopback port (stopped by the caller's ``close()``)."""
    from osmem_server import OsmemServer

    return OsmemServer.start(addr="127.0.0.1:0", japanese=False, startup_timeout=60)


def es_env(url: str, prefix: str) -> dict[str, str]:
    """The settings that point the service (ingest and build) at the cluster."""
    return {
        "DOWNLOADER_RECORD_SOURCE": "elasticsearch",
        "DOWNLOADER_ELASTICSEARCH_URL": url,
        "DOWNLOADER_ELASTICSEARCH_INDEX_PREFIX": prefix,
        "DOWNLOADER_SMTP_HOST": "",
    }


def ingest_cluster(
    data_dir: Path, url: str, prefix: str, n: int, *, seed: int, timeout: float
) -> float:
    """``n`` synthetic records into the cluster's indices, the way ``downloader ingest`` does
    for a cluster: derived in the embedded store first, then copied into the indices by
    ``export_store``, so both sources hold the same values. The seconds it took."""
    start = time.perf_counter()
    ingest_synthetic(data_dir, n, seed=seed, timeout=timeout)
    call = (
        "import sys; from downloader.sources.elasticsearch import ElasticsearchSource; "
        "from downloader.ingest.cluster import export_store; "
        "export_store(sys.argv[1], ElasticsearchSource(sys.argv[2], "
        "index_prefix=sys.argv[3], timeout=120))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", call, str(data_dir / "records.duckdb"), url, prefix],
        capture_output=True,
        text=True,
        env=bench_env(),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"copying into the cluster failed: {proc.stderr[-3000:]}")
    return time.perf_counter() - start


def _post(conn: http.client.HTTPConnection, path: str, body: dict[str, Any]) -> dict[str, Any]:
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"POST {path}: {resp.status} {data[:300]!r}")
    doc: dict[str, Any] = json.loads(data)
    return doc


def bare_scroll(url: str, index: str, query: dict[str, Any], *, page: int) -> tuple[int, int]:
    """Read every matching document of ``index`` by scroll; (documents, response bytes)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=120)
    docs = 0
    size = 0
    try:
        res = _post(
            conn, f"/{index}/_search?scroll=2m", {"size": page, "query": query, "sort": ["_doc"]}
        )
        scroll_id = res.get("_scroll_id")
        while True:
            hits = res["hits"]["hits"]
            if not hits:
                break
            docs += len(hits)
            size += sum(len(h.get("_source", {})) for h in hits)
            res = _post(conn, "/_search/scroll", {"scroll": "2m", "scroll_id": scroll_id})
            scroll_id = res.get("_scroll_id", scroll_id)
        if scroll_id:
            conn.request(
                "DELETE",
                "/_search/scroll",
                body=json.dumps({"scroll_id": scroll_id}),
                headers={"Content-Type": "application/json"},
            )
            conn.getresponse().read()
    finally:
        conn.close()
    return docs, size


def bare_pit(url: str, index: str, query: dict[str, Any], *, page: int) -> int:
    """Read every matching document in ``uuid`` order through a point in time and
    ``search_after`` (OpenSearch's PIT API), as our source pages; the documents read."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=120)
    docs = 0
    try:
        pit = _post(conn, f"/{index}/_search/point_in_time?keep_alive=2m", {})["pit_id"]
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "size": page,
                "query": query,
                "sort": [{"uuid": "asc"}],
                "pit": {"id": pit, "keep_alive": "2m"},
                "track_total_hits": False,
            }
            if after is not None:
                body["search_after"] = after
            hits = _post(conn, "/_search", body)["hits"]["hits"]
            docs += len(hits)
            if len(hits) < page:
                break
            after = hits[-1]["sort"]
        conn.request(
            "DELETE",
            "/_search/point_in_time",
            body=json.dumps({"pit_id": [pit]}),
            headers={"Content-Type": "application/json"},
        )
        conn.getresponse().read()
    finally:
        conn.close()
    return docs


def run_bare_read(url: str, prefix: str, *, page: int, pit: bool = False) -> dict[str, Any]:
    """The bare read of everything (records, then media records): scroll in index order, or
    (``pit``) a point in time sorted by uuid."""
    start = time.perf_counter()
    everything: dict[str, Any] = {"match_all": {}}
    if pit:
        records = bare_pit(url, f"{prefix}records", everything, page=page)
        media = bare_pit(url, f"{prefix}mediarecords", everything, page=page)
    else:
        records, _ = bare_scroll(url, f"{prefix}records", everything, page=page)
        media, _ = bare_scroll(url, f"{prefix}mediarecords", everything, page=page)
    seconds = time.perf_counter() - start
    kind = "point in time, sorted by uuid" if pit else "scroll, index order"
    return {"seconds": seconds, "records": records, "media": media, "page": page, "kind": kind}


def run_search(
    work: Path, n: int, *, seed: int, page: int, timeout: float, repeats: int = 1
) -> dict[str, Any]:
    """Ingest ``n`` records into a fresh cluster; time our build of everything and a bare read."""
    prefix = "bench-"
    data_dir = work / "es-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    server = start_cluster()
    try:
        log(f"search: ingesting {n:,} synthetic records into osmem-server")
        ingest_seconds = ingest_cluster(data_dir, server.url, prefix, n, seed=seed, timeout=timeout)
        log(f"search: ingested in {ingest_seconds:.1f} s; bare scroll read")
        bare = min(
            (run_bare_read(server.url, prefix, page=page) for _ in range(repeats)),
            key=lambda r: r["seconds"],
        )
        bare_pit_read = run_bare_read(server.url, prefix, page=page, pit=True)
        log(
            f"search: bare read {bare['records']:,}+{bare['media']:,} docs "
            f"in {bare['seconds']:.1f} s; our build"
        )
        store = Store(data_dir, bare["records"], bare["media"], ingest_seconds, "cluster")
        ours = run_ours(
            store,
            Selection("all", {}, "", ()),
            timeout=timeout,
            env_extra=es_env(server.url, prefix),
        )
    finally:
        server.close()
    return {
        "records": n,
        "ingest_seconds": ingest_seconds,
        "bare": bare,
        "bare_pit": bare_pit_read,
        "ours": ours,
    }
