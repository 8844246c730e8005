"""Time ingest of synthetic records into the DuckDB record store, and counts over them.

Usage: ``python -m bench.bench_ingest [N] [--seed S] [--keep DIR]`` (N defaults to
1,000,000). Prints seconds for generating, deriving and writing the records, and for a
few counts; no pass/fail. Speed depends on what else the machine is doing, so compare runs
made on the same machine at the same time. Beside wall-clock seconds it prints the CPU seconds
this process used (all threads) and the load average, which say more on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from downloader.ingest.load import ingest_synthetic, store_path
from downloader.sources.duckdb import DuckDBSource
from query.validate import validate_query

QUERIES = {
    "everything": {},
    "genus acer": {"genus": "acer"},
    "acer with images": {"genus": "acer", "hasImage": True},
    "fulltext 'red maple'": {"data": {"type": "fulltext", "value": "red maple"}},
    "date range 1900-1950": {"datecollected": {"type": "range", "gte": "1900", "lte": "1950"}},
    "bounding box (USA)": {
        "geopoint": {
            "type": "geo_bounding_box",
            "top_left": {"lat": 50, "lon": -130},
            "bottom_right": {"lat": 25, "lon": -60},
        }
    },
}


def _cpu() -> float:
    """CPU seconds used so far by this process, all threads, user plus system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    """Run the benchmark and print the timings."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("count", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="write the store here and keep it")
    args = parser.parse_args()

    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        print(f"load average (1, 5, 15 min) before: {_load()}")
        t0, c0 = time.perf_counter(), _cpu()
        result = ingest_synthetic(data_dir, args.count, seed=args.seed)
        t1, c1 = time.perf_counter(), _cpu()
        print(f"records: {result.records}, media records: {result.media}")
        print(
            f"ingest total    {t1 - t0:8.2f} s  (cpu {c1 - c0:7.2f} s; generate, stage, derive "
            "and write, a chunk of records generated at a time)"
        )
        print(f"load average (1, 5, 15 min) after ingest: {_load()}")
        source = DuckDBSource(store_path(data_dir))
        for label, q in QUERIES.items():
            rq = validate_query(q, "records")
            start = time.perf_counter()
            n = source.count("records", rq or None, None)
            print(f"count {label:<24} {time.perf_counter() - start:8.3f} s  ({n} records)")
    finally:
        if args.keep is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
