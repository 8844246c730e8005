"""Helpers of the DuckDB source tests: validated requests, and plain SQL on the store to
compare the source with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from query.validate import validate_query


def rq(q: dict[str, Any]) -> dict[str, Any]:
    return validate_query(q, "records")


def mq(q: dict[str, Any]) -> dict[str, Any]:
    return validate_query(q, "mediarecords", param="mq")


def sql(store: Path, query: str) -> Any:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()
