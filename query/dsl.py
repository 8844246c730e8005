"""Compile normalised queries to Elasticsearch / OpenSearch query DSL.

The output uses only clauses that Elasticsearch 7 to 9 and OpenSearch 1 to 3 all accept:
``bool`` with ``filter`` and ``must_not``, ``term``, ``terms``, ``range``, ``prefix``,
``exists``, ``geo_bounding_box``, ``geo_distance`` and (see below) a polygon clause. Nothing
from Elasticsearch 2 (``filtered``, ``and``, ``missing``, ``_all``, ``execution``).

It expects an index mapped by :func:`query.mapping.es_mapping` and documents made by
:func:`query.mapping.to_es_document`; with those, every query selects the same records here
as :mod:`query.sql` does on DuckDB (the compiler-agreement test proves it on a real server).

Polygons: ``geo_polygon`` was deprecated in Elasticsearch 7.12 and is gone from 8, while a
``geo_shape`` query on a ``geo_point`` field needs Elasticsearch 7.11+ or a recent OpenSearch.
``polygon="geo_shape"`` (the default) suits Elasticsearch 8/9 and OpenSearch 2/3;
``polygon="geo_polygon"`` suits older clusters. Both mean the same polygon.

Cross-type composition (an ``rq`` together with an ``mq``) is *not* done here: records and
media records live in separate indices, so the Elasticsearch record source runs one query and
feeds the matching ids into the other (``terms`` on ``uuid`` / ``coreid``).
"""

from __future__ import annotations

from typing import Any, Literal

from query.dates import format_instant, parse_period
from query.fields import RecordType
from query.validate import resolve_key

PolygonStyle = Literal["geo_shape", "geo_polygon"]
_RANGE_OPS = ("gte", "gt", "lte", "lt")


def _exists(field: str) -> dict[str, Any]:
    return {"exists": {"field": field}}


def _period(field: str, interval: str) -> dict[str, Any]:
    start, end = parse_period(interval)
    return {"range": {field: {"gte": format_instant(start), "lt": format_instant(end)}}}


def _polygon(field: str, points: list[list[float]], style: PolygonStyle) -> dict[str, Any]:
    ring = [[float(lon), float(lat)] for lon, lat in points]
    if style == "geo_polygon":
        return {"geo_polygon": {field: {"points": [{"lat": y, "lon": x} for x, y in ring]}}}
    # GeoJSON wants a closed, counter-clockwise outer ring. Validation guarantees the ring is
    # simple and spans less than 180 degrees, so no reading of it crosses the antimeridian.
    edges = zip(ring, ring[1:] + ring[:1], strict=True)
    area2 = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in edges)
    if area2 < 0:
        ring.reverse()
    ring.append(ring[0])
    return {
        "geo_shape": {
            field: {"shape": {"type": "polygon", "coordinates": [ring]}, "relation": "intersects"}
        }
    }


def _clauses(  # noqa: PLR0911  (one return per query type)
    kind: str, field: str, value: Any, polygon: PolygonStyle
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(filter clauses, must_not clauses) for one key."""
    if isinstance(value, list):
        if kind == "date":
            ranges = [_period(field, v) for v in value]
            return [{"bool": {"should": ranges, "minimum_should_match": 1}}], []
        return [{"terms": {field: value}}], []
    if not isinstance(value, dict):
        if kind == "date":
            return [_period(field, value)], []
        return [{"term": {field: value}}], []
    clause_type = value["type"]
    if clause_type == "exists":
        return [_exists(field)], []
    if clause_type == "missing":
        return [], [_exists(field)]
    if clause_type == "range":
        return [{"range": {field: {op: value[op] for op in _RANGE_OPS if op in value}}}], []
    if clause_type == "prefix":
        return [{"prefix": {field: value["value"]}}], []
    if clause_type == "geo_bounding_box":
        box = {"top_left": value["top_left"], "bottom_right": value["bottom_right"]}
        return [{"geo_bounding_box": {field: box}}], []
    if clause_type == "geo_distance":
        point = {"lat": value["lat"], "lon": value["lon"]}
        return [{"geo_distance": {"distance": f"{float(value['distance'])!r}m", field: point}}], []
    if clause_type == "geo_polygon":
        return [_polygon(field, value["points"], polygon)], []
    raise ValueError(f"not a normalised clause: {value!r}")


def compile_dsl(
    rtype: RecordType,
    q: dict[str, Any] | None,
    *,
    field_prefix: str = "",
    polygon: PolygonStyle = "geo_shape",
) -> dict[str, Any]:
    """The query clause for one normalised query (``match_all`` when it is empty).

    ``q`` must come from :func:`query.validate.validate_query` for the same ``rtype``.
    ``field_prefix`` is put before every field name (for documents nested under a key).
    """
    if not q:
        return {"match_all": {}}
    filters: list[dict[str, Any]] = []
    must_not: list[dict[str, Any]] = []
    for key in sorted(q):
        target = resolve_key(rtype, key, where=key)
        if target is None:
            raise ValueError(f"{key!r} is not a field of {rtype}; validate the query first")
        value = q[key]
        if target.kind == "fulltext":
            # Every token must be among the document's tokens (made by query.text.tokens).
            field = f"{field_prefix}fulltext"
            filters.extend({"term": {field: word}} for word in value["value"].split(" "))
            continue
        more, fewer = _clauses(target.kind, field_prefix + target.key, value, polygon)
        filters.extend(more)
        must_not.extend(fewer)
    body: dict[str, Any] = {}
    if filters:
        body["filter"] = filters
    if must_not:
        body["must_not"] = must_not
    return {"bool": body}
