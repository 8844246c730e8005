"""Helpers of the DuckDB source tests: validated requests, and plain SQL on the store to
compare the source with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from query.validate import validate_query
from tests.support.store import open_store


def rq(q: dict[str, Any]) -> dict[str, Any]:
    return validate_query(q, "records")


def mq(q: dict[str, Any]) -> dict[str, Any]:
    return validate_query(q, "mediarecords", param="mq")


def sql(store: Path, query: str) -> Any:
    con = open_store(str(store))
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()
