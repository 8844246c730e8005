"""JSON Schemas for the structure of iDigBio queries.

The schemas check shape only (which keys a typed clause may carry, and the JSON types of their
values). Everything that depends on the field (its kind, ranges of coordinates, date syntax)
is checked in :mod:`query.validate`, which uses :data:`CLAUSE_SCHEMAS` for each typed clause.
:data:`QUERY_SCHEMA` describes a whole query for documentation and for tests that check the
normalised output.
"""

from __future__ import annotations

from typing import Any

_SCALAR: dict[str, Any] = {"type": ["string", "number", "boolean"]}
_BOUND: dict[str, Any] = {"type": ["string", "number"]}
_COORD: dict[str, Any] = {"type": ["number", "string"]}

#: A point as ``{"lat": .., "lon": ..}`` or as a GeoJSON-ordered ``[lon, lat]`` pair.
POINT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "properties": {"lat": _COORD, "lon": _COORD},
            "required": ["lat", "lon"],
            "additionalProperties": False,
        },
        {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
    ]
}


def _typed(type_name: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"type": {"const": type_name}, **properties},
        "required": ["type", *extra.pop("required", [])],
        "additionalProperties": False,
        **extra,
    }


#: The schema of every supported typed clause (``{"type": ..., ...}``), by type name.
CLAUSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "exists": _typed("exists", {}),
    "missing": _typed("missing", {}),
    "range": _typed("range", {"gte": _BOUND, "gt": _BOUND, "lte": _BOUND, "lt": _BOUND}),
    "prefix": _typed("prefix", {"value": {"type": ["string", "number"]}}, required=["value"]),
    "fulltext": _typed("fulltext", {"value": {"type": ["string", "number"]}}, required=["value"]),
    "geo_bounding_box": _typed(
        "geo_bounding_box",
        {"top_left": POINT_SCHEMA, "bottom_right": POINT_SCHEMA},
        required=["top_left", "bottom_right"],
    ),
    "geo_distance": _typed(
        "geo_distance",
        {"distance": {"type": ["string", "number"]}, "lat": _COORD, "lon": _COORD},
        required=["distance", "lat", "lon"],
    ),
    "geo_polygon": _typed(
        "geo_polygon",
        {
            "value": {"type": "array", "items": POINT_SCHEMA},
            "points": {"type": "array", "items": POINT_SCHEMA},
        },
        # Exactly one of the two spellings: "value" is the search API's, "points" is ES's.
        oneOf=[{"required": ["value"]}, {"required": ["points"]}],
    ),
    # The portal's "exact" (and the search API's "keyword") compare the whole value; its
    # value comes as "text" (portal) or "value".
    "exact": _typed(
        "exact",
        {
            "text": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]},
            "value": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]},
        },
        oneOf=[{"required": ["text"]}, {"required": ["value"]}],
    ),
}
CLAUSE_SCHEMAS["keyword"] = {
    **CLAUSE_SCHEMAS["exact"],
    "properties": {**CLAUSE_SCHEMAS["exact"]["properties"], "type": {"const": "keyword"}},
}

#: Types iDigBio's clients send that this service deliberately does not run, with the reason
#: given to the user.
UNSUPPORTED_TYPES: dict[str, str] = {
    "fuzzy": "fuzzy matching is not supported by the download service; use a plain value, "
    'a list of values or {"type": "prefix", "value": ...}',
    "geo_shape": 'geo_shape is not supported; use {"type": "geo_polygon", "points": '
    "[[lon, lat], ...]} or a geo_bounding_box",
}

_VALUE: dict[str, Any] = {
    "anyOf": [
        _SCALAR,
        {"type": "array", "items": _SCALAR},
        {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": sorted(CLAUSE_SCHEMAS)}},
            "allOf": [
                {"if": {"properties": {"type": {"const": name}}}, "then": schema}
                for name, schema in sorted(CLAUSE_SCHEMAS.items())
            ],
        },
    ]
}

#: A whole query: an object whose keys are fields and whose values are plain values, lists
#: of plain values or typed clauses.
QUERY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "iDigBio query",
    "type": "object",
    "propertyNames": {"minLength": 1},
    "additionalProperties": _VALUE,
}
