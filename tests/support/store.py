"""Opening the embedded store directly, as a test's oracle."""

from __future__ import annotations

from pathlib import Path

import duckdb

from downloader.sources.duckdb import idle


def open_store(path: Path | str) -> duckdb.DuckDBPyConnection:
    """The store file at ``path``, read-only. The record sources of this process may have
    parked read connections to it (downloader.sources.duckdb.idle), and DuckDB opens a file
    once per process with one configuration, so those are given up first."""
    idle.IDLE.drain(Path(path))
    return duckdb.connect(str(path), read_only=True)
