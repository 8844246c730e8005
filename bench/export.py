"""A recordset export from the search cluster against the same export from the embedded
store (issue 16: "the 50k export within 3x of embedded").

One synthetic recordset (``downloader ingest --synthetic``: about a third of the records
with media) is loaded into the embedded store and copied into an ``osmem-server`` index by
``export_store``, as ``downloader ingest --target elasticsearch`` does, so both sources hold
the same values. The export of its version (what ``/recordsets/{recordset}/{version}/export/``
builds: records, verbatim, media, extensions, citations) is built from each source in turn,
alternating, a few times, each in a fresh process with the record source made before the
clock (a worker's state after its first job); the judged ratio is the fastest cluster build
over the fastest embedded one. Also timed once each from both sources: a download of the
recordset (rq only) and of its records with jpeg media (rq+mq), the query shapes the issue
compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from bench.embedded import Store, run_ours
from bench.harness import log
from bench.search import es_env, ingest_cluster, start_cluster

#: Records of the exported recordset.
EXPORT_RECORDS = 50_000
#: Builds of the export from each source (the fastest of each is judged).
EXPORT_REPEATS = 3


def _version(db_path: Path, recordset: str) -> int:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        row = con.execute(
            "SELECT max(version) FROM records WHERE recordset = ?", [recordset]
        ).fetchone()
    finally:
        con.close()
    if not row or row[0] is None:
        raise RuntimeError(f"the store holds no records of {recordset}")
    return int(row[0])


def _build(
    store: Store, params: dict[str, Any], env: dict[str, str] | None, timeout: float
) -> dict[str, Any]:
    # Every build here in a warm worker's state: the source made before the clock (the
    # cluster client's import alone is 0.3-0.5 s, a worker pays it once, not per build).
    return run_ours(store, params={**params, "warm_source": True}, timeout=timeout, env_extra=env)


def run_export(
    work: Path, n: int = EXPORT_RECORDS, *, seed: int, timeout: float, repeats: int = EXPORT_REPEATS
) -> dict[str, Any]:
    """Load ``n`` synthetic records into a store and a fresh cluster, then time the
    recordset's export (and the rq / rq+mq downloads) from each."""
    prefix = "export-"
    data_dir = work / "export-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    recordset = f"synthetic-seed-{seed}"
    server = start_cluster()
    try:
        log(f"export: {n:,} synthetic records into the store and osmem-server")
        ingest_seconds = ingest_cluster(data_dir, server.url, prefix, n, seed=seed, timeout=timeout)
        store = Store(data_dir, n, 0, ingest_seconds, "downloader ingest --synthetic")
        version = _version(store.db_path, recordset)
        es = es_env(server.url, prefix)
        export = {"export": {"recordset": recordset, "version": version}}
        runs: dict[str, list[dict[str, Any]]] = {"embedded": [], "cluster": []}
        for _ in range(repeats):
            runs["embedded"].append(_build(store, export, None, timeout))
            runs["cluster"].append(_build(store, export, es, timeout))
        best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
        log(
            f"export: embedded {[round(r['seconds'], 2) for r in runs['embedded']]} s, "
            f"cluster {[round(r['seconds'], 2) for r in runs['cluster']]} s"
        )
        queries = {
            "rq": {"rq": {"recordset": recordset}},
            "rq+mq": {"rq": {"recordset": recordset}, "mq": {"format": "image/jpeg"}},
        }
        downloads: dict[str, dict[str, Any]] = {}
        for name, params in queries.items():
            downloads[name] = {
                "embedded": _build(store, params, None, timeout),
                "cluster": _build(store, params, es, timeout),
            }
            log(
                f"export: {name} download embedded {downloads[name]['embedded']['seconds']:.2f} s, "
                f"cluster {downloads[name]['cluster']['seconds']:.2f} s"
            )
    finally:
        server.close()
    return {
        "records": n,
        "recordset": recordset,
        "version": version,
        "ingest_seconds": ingest_seconds,
        "runs": {k: [r["seconds"] for r in v] for k, v in runs.items()},
        "embedded": best["embedded"],
        "cluster": best["cluster"],
        "ratio": best["cluster"]["seconds"] / best["embedded"]["seconds"],
        "downloads": downloads,
    }
