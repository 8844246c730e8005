"""GBIF's occurrence download predicates compiled to our query format.

A GBIF download request (``POST /v1/occurrence/download/request``) holds a ``predicate``:
``and``, ``or``, ``not``, ``equals``, ``in``, ``like``, ``lessThan``, ``lessThanOrEquals``,
``greaterThan``, ``greaterThanOrEquals``, ``isNull``, ``isNotNull``, ``within`` and
``geoDistance`` over keys of GBIF's ``OccurrenceSearchParameter``. :func:`compile_predicate`
turns it into an ``rq`` for :func:`query.validate.validate_query`, so both record sources
answer it as they answer the iDigBio API.

Our query format is an AND of keys, each a value, a list, a range, exists/missing, a prefix
or a shape; so ``or`` is accepted over one key (a list), ``not`` over ``isNull``/``isNotNull``
and ``in`` the values become a list, and two conditions on one key are merged where they can
be (a lower and an upper bound). Anything that cannot be said exactly, including a key we do
not index and ``matchCase: true`` (our matching ignores case), is a :class:`QueryError`
naming it: never a silently wider result.
"""

from __future__ import annotations

import calendar
import re
from typing import Any

from query.errors import QueryError

#: GBIF search parameter -> our field.
FIELDS: dict[str, str] = {
    "SCIENTIFIC_NAME": "scientificname",
    "BASIS_OF_RECORD": "basisofrecord",
    "COUNTRY": "countrycode",
    "CONTINENT": "continent",
    "STATE_PROVINCE": "stateprovince",
    "LOCALITY": "locality",
    "WATER_BODY": "waterbody",
    "KINGDOM": "kingdom",
    "PHYLUM": "phylum",
    "CLASS": "class",
    "ORDER": "order",
    "FAMILY": "family",
    "GENUS": "genus",
    "SPECIFIC_EPITHET": "specificepithet",
    "INFRASPECIFIC_EPITHET": "infraspecificepithet",
    "TAXON_RANK": "taxonrank",
    "INSTITUTION_CODE": "institutioncode",
    "COLLECTION_CODE": "collectioncode",
    "CATALOG_NUMBER": "catalognumber",
    "OCCURRENCE_ID": "occurrenceid",
    "RECORD_NUMBER": "recordnumber",
    "RECORDED_BY": "collector",
    "TYPE_STATUS": "typestatus",
    "DATASET_KEY": "recordset",
    "EVENT_DATE": "datecollected",
    "YEAR": "datecollected",
    "ELEVATION": "minelevation",
    "DEPTH": "mindepth",
    "COORDINATE_UNCERTAINTY_IN_METERS": "coordinateuncertainty",
    "HAS_COORDINATE": "geopoint",
    "GEOMETRY": "geopoint",
    "MEDIA_TYPE": "hasImage",
    "GBIF_ID": "uuid",
}
#: GBIF's BASIS_OF_RECORD enum -> the lower-cased value our index holds.
BASIS = {
    "PRESERVED_SPECIMEN": "preservedspecimen",
    "FOSSIL_SPECIMEN": "fossilspecimen",
    "LIVING_SPECIMEN": "livingspecimen",
    "MATERIAL_SAMPLE": "materialsample",
    "MATERIAL_CITATION": "materialcitation",
    "HUMAN_OBSERVATION": "humanobservation",
    "MACHINE_OBSERVATION": "machineobservation",
    "OBSERVATION": "observation",
    "OCCURRENCE": "occurrence",
}
#: GBIF's size limits: predicates in one request and points of a ``within`` polygon.
MAX_PREDICATES = 101_000
MAX_POINTS = 10_000
#: Deepest nesting of and/or/not accepted (GBIF's own clients build a few levels).
MAX_DEPTH = 32

_COMPARE = {
    "lessThan": "lt",
    "lessThanOrEquals": "lte",
    "greaterThan": "gt",
    "greaterThanOrEquals": "gte",
}


class TooLarge(QueryError):
    """A predicate over GBIF's size limits (answered 413)."""


def compile_predicate(predicate: Any) -> dict[str, Any]:
    """The ``rq`` (our query format, not yet validated) equivalent to a GBIF predicate."""
    if predicate is None:
        return {}
    _check_depth(predicate)
    count = _count(predicate)
    if count > MAX_PREDICATES:
        raise TooLarge("predicate", f"{count} predicates; GBIF accepts at most {MAX_PREDICATES}")
    rq: dict[str, Any] = {}
    _add(rq, predicate, "predicate")
    return rq


def _check_depth(predicate: Any) -> None:
    """Refuse a predicate nested deeper than :data:`MAX_DEPTH` (read without recursion: a
    few hundred levels would otherwise exhaust Python's stack, a 500, not a 400)."""
    stack = [(predicate, 1)]
    while stack:
        p, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise QueryError(
                "predicate", f"the predicate is nested more than {MAX_DEPTH} levels deep"
            )
        if isinstance(p, dict):
            inner = p.get("predicates")
            children = inner if isinstance(inner, list) else []
            if "predicate" in p:
                children = [*children, p["predicate"]]
            stack.extend((child, depth + 1) for child in children)


def _count(p: Any) -> int:
    if isinstance(p, dict):
        inner = p.get("predicates") or ([p["predicate"]] if "predicate" in p else [])
        return 1 + sum(_count(x) for x in inner)
    return 1


def _add(rq: dict[str, Any], p: Any, where: str) -> None:
    if not isinstance(p, dict) or not isinstance(p.get("type"), str):
        raise QueryError(where, 'a predicate is an object with a "type"')
    kind = p["type"]
    if kind == "and":
        for i, sub in enumerate(_list(p, "predicates", where)):
            _add(rq, sub, f"{where}.predicates[{i}]")
        return
    if kind == "or":
        _or(rq, p, where)
        return
    if kind == "not":
        _not(rq, p, where)
        return
    if p.get("matchCase") is True:
        raise QueryError(
            f"{where}.matchCase",
            "matchCase is not offered: this service matches values regardless of case, so "
            "the result would be wider than asked",
        )
    for field, value in _clause(p, where).items():
        _merge(rq, field, value, where)


def _list(p: dict[str, Any], key: str, where: str) -> list[Any]:
    value = p.get(key)
    if not isinstance(value, list) or not value:
        raise QueryError(f"{where}.{key}", f"needs a non-empty list of {key}")
    return value


def _or(rq: dict[str, Any], p: dict[str, Any], where: str) -> None:
    """``or`` of ``equals``/``in`` over one key is a list; anything else cannot be said."""
    values: list[Any] = []
    field = None
    for i, sub in enumerate(_list(p, "predicates", where)):
        here = f"{where}.predicates[{i}]"
        if not isinstance(sub, dict) or sub.get("type") not in ("equals", "in"):
            raise QueryError(
                here, "an 'or' is only offered over 'equals' or 'in' predicates of one key"
            )
        clause = _clause(sub, here)
        ((f, v),) = clause.items()
        if field is not None and f != field:
            raise QueryError(here, "an 'or' is only offered over one key (a list of values)")
        field = f
        values.extend(v if isinstance(v, list) else [v])
    assert field is not None
    _merge(rq, field, values if len(values) > 1 else values[0], where)


def _not(rq: dict[str, Any], p: dict[str, Any], where: str) -> None:
    inner = p.get("predicate")
    if isinstance(inner, dict) and inner.get("type") in ("isNull", "isNotNull"):
        negated = "isNotNull" if inner["type"] == "isNull" else "isNull"
        _add(rq, {**inner, "type": negated}, where)
        return
    raise QueryError(
        f"{where}.predicate", "'not' is only offered over 'isNull' and 'isNotNull' predicates"
    )


def _key(p: dict[str, Any], where: str) -> tuple[str, str]:
    key = p.get("key") if "key" in p else p.get("parameter")
    if not isinstance(key, str) or not key:
        raise QueryError(f"{where}.key", "the predicate names no key")
    field = FIELDS.get(key.upper())
    if field is None:
        raise QueryError(
            f"{where}.key",
            f"{key} cannot be searched here; the keys offered are: {', '.join(sorted(FIELDS))}",
        )
    return key.upper(), field


def _clause(p: dict[str, Any], where: str) -> dict[str, Any]:  # noqa: C901, PLR0911  (one branch per predicate type)
    kind = p["type"]
    if kind == "within":
        return {"geopoint": _within(p.get("geometry"), f"{where}.geometry")}
    if kind == "geoDistance":
        return {"geopoint": _distance(p, where)}
    key, field = _key(p, where)
    if kind in ("isNull", "isNotNull"):
        return {field: {"type": "missing" if kind == "isNull" else "exists"}}
    if key == "HAS_COORDINATE":
        if kind != "equals":
            raise QueryError(where, "HAS_COORDINATE takes 'equals' true or false")
        flag = _bool(p.get("value"), f"{where}.value")
        return {"geopoint": {"type": "exists" if flag else "missing"}}
    if key == "GEOMETRY":
        if kind != "equals":
            raise QueryError(where, "GEOMETRY takes a WKT polygon ('within' or 'equals')")
        return {"geopoint": _within(p.get("value"), f"{where}.value")}
    if kind == "equals":
        return {field: _value(key, p.get("value"), f"{where}.value")}
    if kind == "in":
        values = p.get("values")
        if not isinstance(values, list) or not values:
            raise QueryError(f"{where}.values", "'in' needs a non-empty list of values")
        out = [_value(key, v, f"{where}.values[{i}]") for i, v in enumerate(values)]
        if any(isinstance(v, dict) for v in out):
            raise QueryError(f"{where}.values", f"{key} ranges cannot be listed in 'in'")
        return {field: out if len(out) > 1 else out[0]}
    if kind == "like":
        value = p.get("value")
        if (
            not isinstance(value, str)
            or not value.endswith("*")
            or "*" in value[:-1]
            or "?" in value
        ):
            raise QueryError(
                f"{where}.value", "'like' is offered as a prefix only: 'abc*' (one '*' at the end)"
            )
        return {field: {"type": "prefix", "value": value[:-1]}}
    if kind in _COMPARE:
        bound = _COMPARE[kind]
        raw = p.get("value")
        if key in ("YEAR", "EVENT_DATE"):
            start, end = _date_range(key, raw, f"{where}.value")
            # lessThan 1950: before its first day; greaterThan 1950: after its last.
            value = {"lt": start, "lte": end, "gt": end, "gte": start}[bound]
            return {field: {"type": "range", bound: value}}
        return {field: {"type": "range", bound: _number(raw, f"{where}.value")}}
    raise QueryError(f"{where}.type", f"the predicate type {kind!r} is not offered")


def _value(key: str, raw: Any, where: str) -> Any:
    if key in ("YEAR", "EVENT_DATE"):
        start, end = _date_range(key, raw, where)
        return {"type": "range", "gte": start, "lte": end}
    if key == "BASIS_OF_RECORD":
        text = str(raw).strip().upper()
        if text not in BASIS:
            raise QueryError(
                where, f"{raw!r} is not a basis of record; use one of {', '.join(BASIS)}"
            )
        return BASIS[text]
    if key == "MEDIA_TYPE":
        if str(raw).strip().upper() != "STILLIMAGE":
            raise QueryError(
                where, "MEDIA_TYPE is offered for StillImage only (records with images)"
            )
        return True
    if key in ("ELEVATION", "DEPTH", "COORDINATE_UNCERTAINTY_IN_METERS"):
        if isinstance(raw, str) and "," in raw:
            low, high = (x.strip() for x in raw.split(",", 1))
            out: dict[str, Any] = {"type": "range"}
            if low and low != "*":
                out["gte"] = _number(low, where)
            if high and high != "*":
                out["lte"] = _number(high, where)
            return out
        return _number(raw, where)
    if not isinstance(raw, str | int | float) or isinstance(raw, bool) or str(raw).strip() == "":
        raise QueryError(where, f"{key} needs a value")
    return str(raw).strip()


def _number(raw: Any, where: str) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise QueryError(where, f"{raw!r} is not a number") from None


def _bool(raw: Any, where: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if str(raw).lower() in ("true", "false"):
        return str(raw).lower() == "true"
    raise QueryError(where, f"{raw!r} is not true or false")


_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


def _date_range(key: str, raw: Any, where: str) -> tuple[str, str]:
    """(first day, last day) of a YEAR or EVENT_DATE value: ``1999``, ``1950,1999``,
    ``2001-05``, ``2001-05-01,2001-06-30``, ``*`` for an open end."""
    text = str(raw).strip()
    low, _, high = text.partition(",") if "," in text else (text, "", text)
    low, high = low.strip(), high.strip()

    def first(v: str) -> str:
        if v in ("", "*"):
            return "0001-01-01"
        if not _DATE.match(v):
            raise QueryError(where, f"{raw!r} is not a {key.lower()} or range of them")
        return v + ("-01-01" if len(v) == 4 else "-01" if len(v) == 7 else "")

    def last(v: str) -> str:
        if v in ("", "*"):
            return "9999-12-31"
        if not _DATE.match(v):
            raise QueryError(where, f"{raw!r} is not a {key.lower()} or range of them")
        if len(v) == 4:
            return v + "-12-31"
        if len(v) == 7:
            year, month = int(v[:4]), int(v[5:])
            return f"{v}-{calendar.monthrange(year, month)[1]:02d}"
        return v

    return first(low), last(high)


def _within(wkt: Any, where: str) -> dict[str, Any]:
    if not isinstance(wkt, str):
        raise QueryError(where, "needs a WKT POLYGON or MULTIPOLYGON")
    text = wkt.strip()
    m = re.fullmatch(r"(?is)POLYGON\s*\(\s*\(([^()]*)\)\s*\)", text)
    if m is None:
        multi = re.fullmatch(r"(?is)MULTIPOLYGON\s*\(\s*\(\s*\(([^()]*)\)\s*\)\s*\)", text)
        if multi is None:
            raise QueryError(
                where,
                "only a WKT POLYGON without holes (or a MULTIPOLYGON of one such polygon) is "
                "offered",
            )
        m = multi
    points = []
    for pair in m.group(1).split(","):
        parts = pair.split()
        if len(parts) != 2:
            raise QueryError(where, f"{pair.strip()!r} is not a 'longitude latitude' pair")
        points.append([_number(parts[0], where), _number(parts[1], where)])
    if len(points) > MAX_POINTS:
        raise TooLarge(where, f"the polygon has {len(points)} points; at most {MAX_POINTS}")
    return {"type": "geo_polygon", "points": points}


def _distance(p: dict[str, Any], where: str) -> dict[str, Any]:
    lat = p.get("latitude")
    lon = p.get("longitude")
    distance = p.get("distance")
    if lat is None or lon is None or distance is None:
        raise QueryError(where, "geoDistance needs latitude, longitude and distance")
    return {
        "type": "geo_distance",
        "lat": _number(lat, f"{where}.latitude"),
        "lon": _number(lon, f"{where}.longitude"),
        "distance": distance,
    }


def _merge(rq: dict[str, Any], field: str, value: Any, where: str) -> None:
    """AND a condition on ``field`` into ``rq`` (two ranges combine; anything else twice on
    one key cannot be said in one query)."""
    if field not in rq:
        rq[field] = value
        return
    old = rq[field]
    if (
        isinstance(old, dict)
        and isinstance(value, dict)
        and old.get("type") == value.get("type") == "range"
    ):
        merged = dict(old)
        for bound in ("gt", "gte", "lt", "lte"):
            if bound in value:
                if bound in merged and merged[bound] != value[bound]:
                    break
                merged[bound] = value[bound]
        else:
            rq[field] = merged
            return
    raise QueryError(
        where, f"two conditions on {field} cannot be combined here; give one (or a list)"
    )
