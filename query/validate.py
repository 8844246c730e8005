"""Validation and normalisation of iDigBio queries (``rq`` and ``mq``).

:func:`validate_query` checks a decoded query against the JSON Schemas of
:mod:`query.schema` and the field catalogue, and returns its normalised form. The normalised
form is what both compilers take and what the request hash covers, so equivalent queries
(``"Acer"`` and ``"acer"``, reordered lists, ``"100"`` and ``100`` on a number field, ``"1900"``
and its explicit interval) come out identical.

Normalised clause shapes, per key (``key`` is a catalogue field name, ``data.<term>`` or
``data``):

- plain value: a string (lower-cased, trimmed), number, boolean, or for date fields an
  interval ``"<start>/<end>"``; a list of several values becomes a sorted, de-duplicated list
  (a list of one value becomes that value);
- ``{"type": "exists"}`` / ``{"type": "missing"}``;
- ``{"type": "range", ...}``: integers as inclusive ``gte``/``lte``; floats and strings keep
  the bounds given; dates as ``gte`` (inclusive) and ``lt`` (exclusive) timestamps;
- ``{"type": "prefix", "value": str}``;
- ``{"type": "fulltext", "value": "<sorted tokens joined by spaces>"}`` (key ``data`` only);
- ``{"type": "geo_bounding_box", "top_left": {"lat", "lon"}, "bottom_right": {...}}`` with
  ``top_left.lat >= bottom_right.lat``; ``top_left.lon > bottom_right.lon`` means the box
  crosses the antimeridian;
- ``{"type": "geo_distance", "distance": <metres, float>, "lat": .., "lon": ..}``;
- ``{"type": "geo_polygon", "points": [[lon, lat], ...]}`` (open ring, at least 3 points).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from query.dates import DateFormatError, format_instant, format_period, parse_period
from query.errors import QueryError
from query.fields import RecordType, fields, short_term
from query.schema import CLAUSE_SCHEMAS, UNSUPPORTED_TYPES
from query.text import tokens

DEFAULT_MAX_QUERY_BYTES = 64 * 1024
DEFAULT_MAX_LIST_ITEMS = 5000
DEFAULT_MAX_DEPTH = 8
DEFAULT_MAX_KEYS = 256
#: Polygons are checked for self-intersection in quadratic time; this keeps that quick.
MAX_POLYGON_POINTS = 500
#: Longest accepted verbatim term name after ``data.``.
MAX_TERM_LENGTH = 200

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_BOUNDS = ("gte", "gt", "lte", "lt")
_STRING_KINDS = frozenset({"text", "longtext", "list", "data"})
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_DISTANCE = re.compile(r"(?P<number>[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?)\s*(?P<unit>[a-zA-Z]*)")
#: Distance units in metres; the names Elasticsearch accepts for them.
DISTANCE_UNITS: dict[str, float] = {
    "": 1.0,
    "m": 1.0,
    "meters": 1.0,
    "km": 1000.0,
    "kilometers": 1000.0,
    "mi": 1609.344,
    "miles": 1609.344,
    "yd": 0.9144,
    "yards": 0.9144,
    "ft": 0.3048,
    "feet": 0.3048,
    "nmi": 1852.0,
    "nm": 1852.0,
}
# Characters that would change the meaning of a term name in a JSON path or an Elasticsearch
# field name (wildcards in "exists", quotes in paths).
_BAD_TERM_CHARS = re.compile(r"[\"\\*?\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Target:
    """What a query key addresses: its normalised key and how its values compare.

    ``kind`` is a catalogue kind, ``"data"`` for a verbatim term (``data.<term>``) or
    ``"fulltext"`` for the ``data`` key.
    """

    key: str
    kind: str


@cache
def _by_lower_name(rtype: RecordType) -> dict[str, tuple[str, str]]:
    return {f.name.lower(): (f.name, f.kind) for f in fields(rtype)}


def resolve_key(rtype: RecordType, key: str, *, where: str) -> Target | None:
    """The :class:`Target` a query key or field-list name addresses, or None if unknown.

    Catalogue names match case-insensitively (``scientificName`` is ``scientificname``);
    ``data.<term>`` addresses a verbatim term, whose full URI is shortened to its
    ``prefix:name`` form. Raises :class:`QueryError` (at ``where``) for a malformed term name.
    """
    if key == "data":
        return Target("data", "fulltext")
    if key[:5].lower() == "data.":
        term = key[5:].strip()
        if "://" in term:
            term = short_term(term)
        if not term:
            raise QueryError(where, "a verbatim term is missing after 'data.'")
        if len(term) > MAX_TERM_LENGTH or _BAD_TERM_CHARS.search(term):
            raise QueryError(
                where,
                f"{key!r} is not a usable term name (no quotes, backslashes, wildcards or "
                f"control characters, at most {MAX_TERM_LENGTH} characters)",
            )
        return Target(f"data.{term}", "data")
    found = _by_lower_name(rtype).get(key.lower())
    if found is None:
        return None
    return Target(*found)


# -- size and JSON-ness ----------------------------------------------------------------------


def _check_limits(
    q: dict[str, Any],
    param: str,
    *,
    max_query_bytes: int,
    max_list_items: int,
    max_depth: int,
    max_keys: int,
) -> None:
    """Refuse values that are not JSON or exceed the size limits, without recursion."""
    stack: list[tuple[Any, int, str]] = [(q, 1, param)]
    while stack:
        node, depth, path = stack.pop()
        if depth > max_depth:
            raise QueryError(path, f"the query is nested more than {max_depth} levels deep")
        if isinstance(node, dict):
            if len(node) > max_keys:
                raise QueryError(path, f"an object has more than {max_keys} keys")
            for k, v in node.items():
                if not isinstance(k, str):
                    raise QueryError(path, f"object keys must be strings, not {k!r}")
                stack.append((v, depth + 1, f"{path}.{k}"))
        elif isinstance(node, list):
            if len(node) > max_list_items:
                raise QueryError(path, f"a list has more than {max_list_items} items")
            stack.extend((v, depth + 1, path) for v in node)
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise QueryError(path, f"{node!r} is not a finite number")
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > 10**300:
            # Python refuses to print integers of over 4300 digits; nothing needs them.
            raise QueryError(path, "a number in the query is too large")
        elif node is not None and not isinstance(node, str | int | bool):
            raise QueryError(path, f"a {type(node).__name__} is not a JSON value")
    size = len(json.dumps(q, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > max_query_bytes:
        raise QueryError(
            param, f"the query is {size} bytes of JSON; the limit is {max_query_bytes} bytes"
        )


# -- scalars ---------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f"the text {value!r}" if len(value) <= 60 else "a long text"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _as_number(value: Any, path: str, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QueryError(path, f"{what} must be a number, not {_describe(value)}")
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 400 or not _NUMBER.fullmatch(text):
            raise QueryError(path, f"{what} must be a number, not {_describe(value)}")
        number: float | int = int(text) if text.lstrip("+-").isdigit() else float(text)
    else:
        number = value
    if isinstance(number, float) and not math.isfinite(number):
        raise QueryError(path, f"{what} must be a finite number")
    return number


def _as_int(value: Any, path: str, what: str) -> int:
    number = _as_number(value, path, what)
    if isinstance(number, float):
        if not number.is_integer():
            raise QueryError(path, f"{what} must be a whole number, not {number!r}")
        number = int(number)
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise QueryError(path, f"{what} {number} is out of range for a whole-number field")
    return number


def _as_float(value: Any, path: str, what: str) -> float:
    number = float(_as_number(value, path, what))
    return number + 0.0  # turns -0.0 into 0.0, so both hash alike


def _as_text(value: Any, path: str, what: str, *, strip: bool = True) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    elif isinstance(value, str):
        text = value.strip() if strip else value.lstrip()
        text = text.lower()
    else:
        raise QueryError(path, f"{what} must be text, not {_describe(value)}")
    if not text:
        raise QueryError(
            path,
            f'{what} is empty; to select records without a value use {{"type": "missing"}}',
        )
    return text


def _as_bool(value: Any, path: str, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise QueryError(path, f"{what} must be true or false, not {_describe(value)}")


def _as_period(value: Any, path: str, what: str) -> tuple[Any, Any]:
    if not isinstance(value, str):
        raise QueryError(
            path,
            f"{what} must be a date written as text (YYYY, YYYY-MM, YYYY-MM-DD or an ISO 8601 "
            f"timestamp), not {_describe(value)}",
        )
    try:
        return parse_period(value)
    except DateFormatError as exc:
        raise QueryError(path, str(exc)) from None


def _plain(target: Target, value: Any, path: str) -> Any:
    """Normalise one plain value for the kind of ``target``."""
    kind = target.kind
    what = "the value"
    if value is None:
        raise QueryError(
            path,
            'null is not a value to match; use {"type": "missing"} for records without '
            'one, or {"type": "exists"} for records with one',
        )
    if isinstance(value, dict | list):
        raise QueryError(path, f"{what} must be a single value, not {_describe(value)}")
    if kind in _STRING_KINDS:
        return _as_text(value, path, what)
    if kind == "integer":
        return _as_int(value, path, what)
    if kind == "float":
        return _as_float(value, path, what)
    if kind == "boolean":
        return _as_bool(value, path, what)
    if kind == "date":
        return format_period(*_as_period(value, path, what))
    if kind == "point":
        raise QueryError(
            path,
            f"{target.key} is a point; query it with geo_bounding_box, geo_distance, "
            "geo_polygon, exists or missing",
        )
    raise QueryError(path, _fulltext_only_message())


def _fulltext_only_message() -> str:
    return (
        "the 'data' key searches all verbatim text and takes only "
        '{"type": "fulltext", "value": ...}; use \'data.<term>\' (e.g. '
        "'data.dwc:scientificName') to match one verbatim term"
    )


def _values(target: Target, value: Any, path: str) -> Any:
    """Normalise a plain value or a list of plain values (any of them matches)."""
    if not isinstance(value, list):
        return _plain(target, value, path)
    if not value:
        raise QueryError(
            path, "an empty list matches nothing; give at least one value or drop the key"
        )
    items = {_plain(target, item, f"{path}[{i}]") for i, item in enumerate(value)}
    ordered = sorted(items)
    return ordered[0] if len(ordered) == 1 else ordered


# -- typed clauses ---------------------------------------------------------------------------


@cache
def _validator(type_name: str) -> Draft202012Validator:
    return Draft202012Validator(CLAUSE_SCHEMAS[type_name])


def _schema_error(type_name: str, error: ValidationError, path: str) -> QueryError:
    where = path + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    allowed = sorted(k for k in CLAUSE_SCHEMAS[type_name]["properties"])
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        props = error.schema.get("properties", {})
        extra = sorted(k for k in error.instance if k not in props)
        return QueryError(
            where,
            f"unexpected key(s) {', '.join(map(repr, extra))} in a {type_name} clause; "
            f"allowed keys: {', '.join(allowed)}",
        )
    if error.validator == "oneOf" and not error.absolute_path:
        if type_name == "geo_polygon":
            detail = "give the polygon's points in exactly one of 'points' or 'value'"
        else:
            detail = f"give the {type_name} value in exactly one of 'text' or 'value'"
        return QueryError(where, detail)
    if error.validator == "anyOf" and error.absolute_path:
        return QueryError(where, 'a point must be {"lat": <number>, "lon": <number>} or [lon, lat]')
    return QueryError(where, f"{type_name}: {error.message}")


def _clause(target: Target, value: dict[str, Any], path: str) -> Any:  # noqa: C901, PLR0912  (one branch per query type, in the order the catalogue lists them)
    type_name = value.get("type")
    if type_name is None:
        raise QueryError(
            path,
            'an object value needs a "type", one of: ' + ", ".join(sorted(CLAUSE_SCHEMAS)),
        )
    if not isinstance(type_name, str):
        raise QueryError(path + ".type", f"the type must be text, not {_describe(type_name)}")
    if type_name in UNSUPPORTED_TYPES:
        raise QueryError(path, UNSUPPORTED_TYPES[type_name], type=type_name)
    if type_name not in CLAUSE_SCHEMAS:
        raise QueryError(
            path,
            f"unknown query type {type_name!r}; known types: " + ", ".join(sorted(CLAUSE_SCHEMAS)),
            type=type_name,
        )
    error = best_match(_validator(type_name).iter_errors(value))
    if error is not None:
        raise _schema_error(type_name, error, path)

    kind = target.kind
    if kind == "fulltext" and type_name != "fulltext":
        raise QueryError(path, _fulltext_only_message())
    if type_name in ("exists", "missing"):
        return {"type": type_name}
    if type_name in ("exact", "keyword"):
        return _values(target, value["text"] if "text" in value else value["value"], path)
    if type_name == "range":
        return _range(target, value, path)
    if type_name == "prefix":
        if kind not in _STRING_KINDS:
            raise QueryError(path, f"prefix works on text fields; {target.key} holds {kind}s")
        prefix = _as_text(value["value"], path + ".value", "the prefix", strip=False)
        return {"type": "prefix", "value": prefix}
    if type_name == "fulltext":
        if kind != "fulltext":
            raise QueryError(
                path,
                "fulltext searches all verbatim text; put it under the 'data' key: "
                '{"data": {"type": "fulltext", "value": ...}}',
            )
        words = tokens(_as_text(value["value"], path + ".value", "the fulltext value"))
        if not words:
            raise QueryError(path + ".value", "the fulltext value contains no words to search")
        return {"type": "fulltext", "value": " ".join(sorted(words))}
    # The remaining types are geographic.
    if kind != "point":
        raise QueryError(path, f"{type_name} works only on point fields such as geopoint")
    if type_name == "geo_bounding_box":
        return _bounding_box(value, path)
    if type_name == "geo_distance":
        return _distance(value, path)
    return _polygon(value, path)


def _range(target: Target, value: dict[str, Any], path: str) -> dict[str, Any]:  # noqa: C901, PLR0912  (each bound's checks in one place, so every error names its bound)
    bounds = {k: value[k] for k in _BOUNDS if k in value}
    if not bounds:
        raise QueryError(path, "a range needs at least one bound: gte, gt, lte or lt")
    kind = target.kind
    out: dict[str, Any] = {"type": "range"}
    if kind == "integer":
        # Whole-number fields: turn every bound into an inclusive integer bound, so that
        # {"gt": 4} and {"gte": 5} (and {"gte": 4.5}) are the same query.
        lows: list[int] = []
        highs: list[int] = []
        for op, raw in bounds.items():
            number = _as_number(raw, f"{path}.{op}", f"the {op} bound")
            if op == "gte":
                lows.append(math.ceil(number))
            elif op == "gt":
                lows.append(math.floor(number) + 1)
            elif op == "lte":
                highs.append(math.floor(number))
            else:
                highs.append(math.ceil(number) - 1)
        for name, chosen in (("gte", max(lows, default=None)), ("lte", min(highs, default=None))):
            if chosen is not None:
                if not _INT64_MIN <= chosen <= _INT64_MAX:
                    raise QueryError(f"{path}.{name}", "the bound is out of range")
                out[name] = chosen
        return out
    if kind == "float":
        converted = {
            op: _as_float(raw, f"{path}.{op}", f"the {op} bound") for op, raw in bounds.items()
        }
        return _tightest(out, converted)
    if kind == "date":
        # Partial dates cover their whole period: "lte": "1900" includes all of 1900, and
        # "gt": "1900" starts in 1901. The result has an inclusive start, exclusive end.
        starts = []
        ends = []
        for op, raw in bounds.items():
            start, end = _as_period(raw, f"{path}.{op}", f"the {op} bound")
            if op == "gte":
                starts.append(start)
            elif op == "gt":
                starts.append(end)
            elif op == "lte":
                ends.append(end)
            else:
                ends.append(start)
        if starts:
            out["gte"] = format_instant(max(starts))
        if ends:
            out["lt"] = format_instant(min(ends))
        return out
    if kind in _STRING_KINDS:
        texts = {op: _as_text(raw, f"{path}.{op}", f"the {op} bound") for op, raw in bounds.items()}
        return _tightest(out, texts)
    raise QueryError(path, f"range does not apply to {target.key}, which holds {kind}s")


def _tightest(out: dict[str, Any], bounds: dict[str, Any]) -> dict[str, Any]:
    """Keep one lower and one upper bound: the tighter of gte/gt and of lte/lt.

    Elasticsearch refuses a range with both gt and gte (or lt and lte), and one bound per
    side is also the canonical form for hashing.
    """
    if "gte" in bounds and "gt" in bounds:
        bounds.pop("gte" if bounds["gt"] >= bounds["gte"] else "gt")
    if "lte" in bounds and "lt" in bounds:
        bounds.pop("lte" if bounds["lt"] <= bounds["lte"] else "lt")
    out.update(bounds)
    return out


def _point(raw: Any, path: str) -> tuple[float, float]:
    """``(lat, lon)`` of a point given as ``{"lat", "lon"}`` or ``[lon, lat]``."""
    if isinstance(raw, list):
        lon_raw, lat_raw = raw
        lat_path, lon_path = f"{path}[1]", f"{path}[0]"
    else:
        lat_raw, lon_raw = raw["lat"], raw["lon"]
        lat_path, lon_path = f"{path}.lat", f"{path}.lon"
    return _lat(lat_raw, lat_path), _lon(lon_raw, lon_path)


def _lat(raw: Any, path: str) -> float:
    lat = _as_float(raw, path, "the latitude")
    if not -90.0 <= lat <= 90.0:
        raise QueryError(path, f"latitude {lat:g} is outside -90 to 90")
    return lat


def _lon(raw: Any, path: str) -> float:
    lon = _as_float(raw, path, "the longitude")
    if not -180.0 <= lon <= 180.0:
        raise QueryError(path, f"longitude {lon:g} is outside -180 to 180")
    return lon


def _bounding_box(value: dict[str, Any], path: str) -> dict[str, Any]:
    top, left = _point(value["top_left"], path + ".top_left")
    bottom, right = _point(value["bottom_right"], path + ".bottom_right")
    if top < bottom:
        # iDigBio's search API swaps latitudes given the wrong way round; so do we.
        top, bottom = bottom, top
    if top == bottom or left == right:
        # Elasticsearch refuses a box without height; one without width is as meaningless.
        raise QueryError(path, "the box has no area: its corners share a latitude or longitude")
    return {
        "type": "geo_bounding_box",
        "top_left": {"lat": top, "lon": left},
        "bottom_right": {"lat": bottom, "lon": right},
    }


def parse_distance(raw: Any, path: str) -> float:
    """Metres in a distance such as ``"100km"``, ``"2.5 mi"``, ``"500m"`` or ``500`` (metres)."""
    if isinstance(raw, bool):
        raise QueryError(path, 'the distance must be a number with a unit, such as "100km"')
    if isinstance(raw, int | float):
        metres = float(raw)
    else:
        match = _DISTANCE.fullmatch(str(raw).strip())
        unit = match.group("unit").lower() if match else None
        if match is None or unit not in DISTANCE_UNITS:
            raise QueryError(
                path,
                f"{raw!r} is not a distance; write a number and a unit (m, km, mi, yd, ft or "
                'nmi), such as "100km"',
            )
        metres = float(match.group("number")) * DISTANCE_UNITS[unit]
    if not math.isfinite(metres) or metres <= 0:
        raise QueryError(path, "the distance must be greater than zero")
    return metres


def _distance(value: dict[str, Any], path: str) -> dict[str, Any]:
    return {
        "type": "geo_distance",
        "distance": parse_distance(value["distance"], path + ".distance"),
        "lat": _lat(value["lat"], path + ".lat"),
        "lon": _lon(value["lon"], path + ".lon"),
    }


def _polygon(value: dict[str, Any], path: str) -> dict[str, Any]:
    key = "points" if "points" in value else "value"
    raw_points = value[key]
    if len(raw_points) > MAX_POLYGON_POINTS + 1:
        raise QueryError(f"{path}.{key}", f"a polygon may have at most {MAX_POLYGON_POINTS} points")
    ring: list[tuple[float, float]] = []
    for i, raw in enumerate(raw_points):
        lat, lon = _point(raw, f"{path}.{key}[{i}]")
        if not ring or ring[-1] != (lon, lat):
            ring.append((lon, lat))
    if len(ring) > 1 and ring[0] == ring[-1]:
        ring.pop()  # a closed ring repeats its first point; keep it open
    if len(ring) < 3:
        raise QueryError(f"{path}.{key}", "a polygon needs at least 3 distinct points")
    lons = [p[0] for p in ring]
    if max(lons) - min(lons) >= 180.0:
        # Elasticsearch reads a polygon this wide as crossing the antimeridian (depending on
        # its orientation); to mean one thing everywhere such polygons are refused.
        raise QueryError(
            f"{path}.{key}",
            "a polygon must span less than 180 degrees of longitude; split one that crosses "
            "the antimeridian into two queries or use a geo_bounding_box",
        )
    if _self_intersects(ring):
        raise QueryError(f"{path}.{key}", "the polygon's edges cross each other")
    if abs(_signed_area(ring)) < 1e-12:
        raise QueryError(f"{path}.{key}", "the polygon has no area (its points are in a line)")
    return {"type": "geo_polygon", "points": [[lon, lat] for lon, lat in ring]}


def _signed_area(ring: list[tuple[float, float]]) -> float:
    """Twice the signed area (shoelace); positive for counter-clockwise rings."""
    total = 0.0
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1], strict=True):
        total += x1 * y2 - x2 * y1
    return total


def _orientation(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> int:
    cross = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    return (cross > 0) - (cross < 0)


def _on_segment(a: tuple[float, float], b: tuple[float, float], p: tuple[float, float]) -> bool:
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def _segments_cross(
    a: tuple[float, float], b: tuple[float, float], c: tuple[float, float], d: tuple[float, float]
) -> bool:
    o1, o2, o3, o4 = (
        _orientation(a, b, c),
        _orientation(a, b, d),
        _orientation(c, d, a),
        _orientation(c, d, b),
    )
    if o1 != o2 and o3 != o4:
        return True
    return (
        (o1 == 0 and _on_segment(a, b, c))
        or (o2 == 0 and _on_segment(a, b, d))
        or (o3 == 0 and _on_segment(c, d, a))
        or (o4 == 0 and _on_segment(c, d, b))
    )


def _self_intersects(ring: list[tuple[float, float]]) -> bool:
    n = len(ring)
    edges = [(ring[i], ring[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # neighbouring edges share a vertex by construction
            if _segments_cross(*edges[i], *edges[j]):
                return True
    return False


# -- the query -------------------------------------------------------------------------------


def validate_query(
    q: Any,
    rtype: RecordType,
    *,
    param: str = "rq",
    max_query_bytes: int = DEFAULT_MAX_QUERY_BYTES,
    max_list_items: int = DEFAULT_MAX_LIST_ITEMS,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_keys: int = DEFAULT_MAX_KEYS,
) -> dict[str, Any]:
    """Validate a decoded query for ``rtype`` and return its normalised form.

    ``param`` names the request parameter in error keys (``"rq"``, ``"mq"``). Raises
    :class:`QueryError` for anything that cannot be run exactly as the user meant it; no
    clause is ever dropped. Unknown fields are reported all at once as a
    ``TermNotFoundError`` whose ``terms`` lists them.
    """
    if not isinstance(q, dict):
        raise QueryError(
            param,
            f'the query must be a JSON object such as {{"genus": "acer"}}, not {_describe(q)}',
        )
    _check_limits(
        q,
        param,
        max_query_bytes=max_query_bytes,
        max_list_items=max_list_items,
        max_depth=max_depth,
        max_keys=max_keys,
    )
    targets: dict[str, Target] = {}
    unknown: list[str] = []
    for key in q:
        target = resolve_key(rtype, key, where=f"{param}.{key}")
        if target is None:
            unknown.append(key)
        else:
            targets[key] = target
    if unknown:
        raise QueryError(
            param,
            f"Terms not found in index for type {rtype}: " + ", ".join(unknown),
            name="TermNotFoundError",
            terms=unknown,
        )
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in q.items():
        target = targets[key]
        path = f"{param}.{key}"
        if target.key in seen:
            raise QueryError(
                path, f"{key!r} and {seen[target.key]!r} name the same field; give it once"
            )
        seen[target.key] = key
        if isinstance(value, dict):
            out[target.key] = _clause(target, value, path)
        elif target.kind == "fulltext":
            raise QueryError(path, _fulltext_only_message())
        else:
            out[target.key] = _values(target, value, path)
    return dict(sorted(out.items()))
