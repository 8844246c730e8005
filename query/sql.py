"""Compile normalised queries to parameterised DuckDB SQL over the embedded record store.

The store's schema is in ``docs/architecture.md``. Column names come only from the field
catalogue and are always double-quoted; every value a user gave, including the names of
verbatim terms (passed as JSON paths), travels as a ``?`` parameter, never as SQL text.
The returned parameter list follows the order of the ``?`` marks in the text.

Semantics (shared with :mod:`query.dsl`; see the architecture page):

- strings compare with the stored lower-cased value as a whole (text, longtext, list items);
  ``data.<term>`` compares ``lower(verbatim value)``, so it is case-insensitive;
- ``exists`` means present and not empty (non-null, not ``''``, a list with items); ``missing``
  is exactly its negation;
- dates compare as half-open periods ``[start, end)``;
- ``geo_distance`` is the haversine distance on a sphere of Elasticsearch's mean earth radius;
- ``geo_polygon`` is an even-odd ray-casting test in plain (lon, lat) coordinates, which is
  also how Lucene tests points against a polygon that does not cross the antimeridian.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from query.dates import parse_instant, parse_period
from query.fields import Kind, RecordType
from query.text import TOKEN_CHARS
from query.validate import resolve_key

#: DuckDB column type of each catalogue kind: the store schema these compilers target (see
#: docs/architecture.md). Ingest creates its tables from it.
DUCKDB_TYPES: dict[Kind, str] = {
    "text": "VARCHAR",
    "longtext": "VARCHAR",
    "list": "VARCHAR[]",
    "integer": "BIGINT",
    "float": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "TIMESTAMP",
    "point": "STRUCT(lat DOUBLE, lon DOUBLE)",
}

#: Mean earth radius in metres, the one Elasticsearch and Lucene use for arc distances.
EARTH_RADIUS_M = 6371008.7714

_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SQL_TYPES = {"integer": "BIGINT", "float": "DOUBLE", "boolean": "BOOLEAN"}
_STRING_KINDS = ("text", "longtext", "data")


class _Builder:
    """Collects parameters in the order their ``?`` marks are written."""

    def __init__(self) -> None:
        self.params: list[Any] = []

    def p(self, value: Any) -> str:
        self.params.append(value)
        return "?"


def _column(alias: str, name: str) -> str:
    if '"' in name:  # catalogue names never contain quotes; guard the invariant anyway
        raise ValueError(f"unexpected field name {name!r}")
    return f'{alias}."{name}"'


def _range_sql(b: _Builder, expr: Callable[[], str], clause: dict[str, Any], convert: Any) -> str:
    ops = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}
    parts = [f"{expr()} {ops[op]} {b.p(convert(clause[op]))}" for op in ops if op in clause]
    return " AND ".join(parts)


def _string_clause(b: _Builder, expr: Callable[[], str], value: Any) -> str:
    """A clause over one string-valued expression (text, longtext, data.<term>)."""
    if isinstance(value, list):
        return f"list_contains(CAST({b.p(value)} AS VARCHAR[]), {expr()})"
    if isinstance(value, str):
        return f"{expr()} = {b.p(value)}"
    kind = value["type"]
    if kind == "exists":
        return f"({expr()} IS NOT NULL AND {expr()} <> '')"
    if kind == "missing":
        return f"({expr()} IS NULL OR {expr()} = '')"
    if kind == "prefix":
        return f"starts_with({expr()}, {b.p(value['value'])})"
    if kind == "range":
        return _range_sql(b, expr, value, str)
    raise ValueError(f"not a normalised string clause: {value!r}")


def _list_clause(b: _Builder, col: str, value: Any) -> str:
    """A clause over a VARCHAR[] column: any item matches."""
    if isinstance(value, list):
        return f"list_has_any({col}, CAST({b.p(value)} AS VARCHAR[]))"
    if isinstance(value, str):
        return f"list_contains({col}, {b.p(value)})"
    kind = value["type"]
    if kind == "exists":
        return f"({col} IS NOT NULL AND len({col}) > 0)"
    if kind == "missing":
        return f"({col} IS NULL OR len({col}) = 0)"
    if kind == "prefix":
        mark = b.p(value["value"])
        return f"EXISTS (SELECT 1 FROM unnest({col}) AS _u(_x) WHERE starts_with(_x, {mark}))"
    if kind == "range":
        cond = _range_sql(b, lambda: "_x", value, str)
        return f"EXISTS (SELECT 1 FROM unnest({col}) AS _u(_x) WHERE {cond})"
    raise ValueError(f"not a normalised list clause: {value!r}")


def _scalar_clause(b: _Builder, col: str, sql_type: str, value: Any) -> str:
    """A clause over a number or boolean column."""
    if isinstance(value, list):
        return f"list_contains(CAST({b.p(value)} AS {sql_type}[]), {col})"
    if not isinstance(value, dict):
        return f"{col} = {b.p(value)}"
    kind = value["type"]
    if kind == "exists":
        return f"{col} IS NOT NULL"
    if kind == "missing":
        return f"{col} IS NULL"
    if kind == "range":
        return _range_sql(b, lambda: col, value, lambda v: v)
    raise ValueError(f"not a normalised {sql_type} clause: {value!r}")


def _date_clause(b: _Builder, col: str, value: Any) -> str:
    if isinstance(value, str | list):
        periods = [parse_period(v) for v in (value if isinstance(value, list) else [value])]
        return " OR ".join(f"({col} >= {b.p(s)} AND {col} < {b.p(e)})" for s, e in periods)
    kind = value["type"]
    if kind == "exists":
        return f"{col} IS NOT NULL"
    if kind == "missing":
        return f"{col} IS NULL"
    if kind == "range":
        return _range_sql(b, lambda: col, value, parse_instant)
    raise ValueError(f"not a normalised date clause: {value!r}")


def _point_clause(b: _Builder, col: str, value: dict[str, Any]) -> str:
    lat, lon = f"{col}.lat", f"{col}.lon"
    present = f"({col} IS NOT NULL AND {lat} IS NOT NULL AND {lon} IS NOT NULL)"
    kind = value["type"]
    if kind == "exists":
        return present
    if kind == "missing":
        return f"NOT {present}"
    if kind == "geo_bounding_box":
        top, left = value["top_left"]["lat"], value["top_left"]["lon"]
        bottom, right = value["bottom_right"]["lat"], value["bottom_right"]["lon"]
        lat_sql = f"{lat} BETWEEN {b.p(bottom)} AND {b.p(top)}"
        if left <= right:
            lon_sql = f"{lon} BETWEEN {b.p(left)} AND {b.p(right)}"
        else:  # the box crosses the antimeridian
            lon_sql = f"({lon} >= {b.p(left)} OR {lon} <= {b.p(right)})"
        return f"{lat_sql} AND {lon_sql}"
    if kind == "geo_distance":
        # Haversine; least() keeps rounding from pushing asin's argument above 1.
        return (
            f"2 * {EARTH_RADIUS_M!r} * asin(least(1.0, sqrt("
            f"pow(sin(radians({lat} - {b.p(value['lat'])}) / 2), 2) + "
            f"cos(radians({b.p(value['lat'])})) * cos(radians({lat})) * "
            f"pow(sin(radians({lon} - {b.p(value['lon'])}) / 2), 2)"
            f"))) <= {b.p(value['distance'])}"
        )
    if kind == "geo_polygon":
        points = value["points"]
        xs = [float(p[0]) for p in points]
        ys = [float(p[1]) for p in points]
        x2s, y2s = xs[1:] + xs[:1], ys[1:] + ys[:1]
        # The polygon's bounding box first (cheap), then even-odd ray casting over its
        # edges, which are passed as four parallel lists and unnested side by side.
        return (
            f"{lat} BETWEEN {b.p(min(ys))} AND {b.p(max(ys))} AND "
            f"{lon} BETWEEN {b.p(min(xs))} AND {b.p(max(xs))} AND "
            "(SELECT count(*) FROM (SELECT "
            f"unnest(CAST({b.p(xs)} AS DOUBLE[])) AS x1, "
            f"unnest(CAST({b.p(ys)} AS DOUBLE[])) AS y1, "
            f"unnest(CAST({b.p(x2s)} AS DOUBLE[])) AS x2, "
            f"unnest(CAST({b.p(y2s)} AS DOUBLE[])) AS y2) AS _e "
            f"WHERE (_e.y1 > {lat}) <> (_e.y2 > {lat}) "
            f"AND {lon} < (_e.x2 - _e.x1) * ({lat} - _e.y1) / (_e.y2 - _e.y1) + _e.x1"
            ") % 2 = 1"
        )
    raise ValueError(f"not a normalised point clause: {value!r}")


def _token_clause(b: _Builder, alias: str, word: str) -> str:
    """``fulltext`` (the lower-cased, NFC-normalised verbatim text) holds the token
    ``word``: found as a substring (a fast scan that rules out most rows), then as a whole
    token, between characters that are not letters or digits (so ``acer`` is not found
    in ``acerifolia``). The CAST reads a store written when ``fulltext`` was a token list
    alike (its text, ``[a, b]``, separates tokens too); for text it is no cast at all. The
    pattern is written in, not passed as a parameter, so DuckDB compiles it once."""
    col = f"CAST({_column(alias, 'fulltext')} AS VARCHAR)"
    other = f"[^{TOKEN_CHARS}]"
    pattern = f"(^|{other}){re.escape(word)}({other}|$)".replace("'", "''")
    return f"(contains({col}, {b.p(word)}) AND regexp_matches({col}, '{pattern}'))"


def _clause(b: _Builder, rtype: RecordType, alias: str, key: str, value: Any) -> str:
    target = resolve_key(rtype, key, where=key)
    if target is None:
        raise ValueError(f"{key!r} is not a field of {rtype}; validate the query first")
    kind = target.kind
    if kind == "fulltext":
        return " AND ".join(_token_clause(b, alias, word) for word in value["value"].split(" "))
    if kind == "data":
        path = '$."' + target.key[len("data.") :] + '"'
        data_col = _column(alias, "data")
        return _string_clause(
            b, lambda: f"lower(json_extract_string({data_col}, {b.p(path)}))", value
        )
    col = _column(alias, target.key)
    if kind in _STRING_KINDS:
        return _string_clause(b, lambda: col, value)
    if kind == "list":
        return _list_clause(b, col, value)
    if kind == "date":
        return _date_clause(b, col, value)
    if kind == "point":
        return _point_clause(b, col, value)
    return _scalar_clause(b, col, _SQL_TYPES[kind], value)


def _where(b: _Builder, rtype: RecordType, q: dict[str, Any] | None, alias: str) -> str:
    if not _ALIAS.fullmatch(alias):
        raise ValueError(f"not a table alias: {alias!r}")
    if not q:
        return "TRUE"
    return " AND ".join(f"({_clause(b, rtype, alias, k, q[k])})" for k in sorted(q))


def compile_where(
    rtype: RecordType, q: dict[str, Any] | None, *, alias: str
) -> tuple[str, list[Any]]:
    """SQL condition and parameters for one normalised query against table ``alias``.

    ``q`` must come from :func:`query.validate.validate_query` for the same ``rtype``; an
    empty or absent query gives ``"TRUE"``.
    """
    b = _Builder()
    return _where(b, rtype, q, alias), b.params


def compile_request_where(
    rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
) -> tuple[str, list[Any]]:
    """The WHERE condition selecting ``rtype`` rows for a request's ``rq`` and ``mq``.

    For ``records`` the condition is over ``records AS r``: ``rq``, and when ``mq`` is given,
    at least one media record of the record matching ``mq``. For ``mediarecords`` it is over
    ``mediarecords AS m``: ``mq``, and when ``rq`` is given, a parent record matching ``rq``.
    """
    b = _Builder()
    if rtype == "records":
        sql = _where(b, "records", rq, "r")
        if mq is not None:
            inner = _where(b, "mediarecords", mq, "m")
            sql = (
                f"({sql}) AND EXISTS (SELECT 1 FROM mediarecords AS m "
                f'WHERE m."coreid" = r."uuid" AND ({inner}))'
            )
        return sql, b.params
    sql = _where(b, "mediarecords", mq, "m")
    if rq is not None:
        inner = _where(b, "records", rq, "r")
        sql = (
            f"({sql}) AND EXISTS (SELECT 1 FROM records AS r "
            f'WHERE r."uuid" = m."coreid" AND ({inner}))'
        )
    return sql, b.params
