"""What the ingest tests share: reading the record store back."""

from __future__ import annotations

from pathlib import Path

from downloader.ingest.load import store_path
from tests.support.store import open_store


def rows(data_dir: Path, sql: str, params: list[object] | None = None) -> list[tuple]:
    """The rows ``sql`` selects from the store in ``data_dir`` (opened read-only)."""
    con = open_store(str(store_path(data_dir)))
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()
