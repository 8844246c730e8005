"""The SQL compiler against a real in-memory DuckDB holding a few hand-made records."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from query.sql import compile_request_where, compile_where
from query.validate import validate_query
from tests.unit.query.sample_store import connect

R: list[dict[str, Any]] = [
    {
        "uuid": "r1",
        "genus": "acer",
        "scientificname": "acer rubrum l.",
        "locality": "near gainesville, florida",
        "flags": ["geopoint_datum_missing", "rev_geocode_flip"],
        "version": 1,
        "minelevation": 100.0,
        "hasImage": True,
        "datecollected": datetime(1900, 1, 1),
        "geopoint": {"lat": 29.65, "lon": -82.32},  # Gainesville
        "data": {
            "dwc:scientificName": "Acer rubrum L.",
            "dwc:locality": "Near Gainesville, Florida",
        },
        "fulltext": ["acer", "rubrum", "l", "near", "gainesville", "florida"],
    },
    {
        "uuid": "r2",
        "genus": "quercus",
        "scientificname": "quercus alba",
        "flags": [],
        "version": 2,
        "minelevation": 250.5,
        "hasImage": False,
        "datecollected": datetime(1900, 12, 31, 23, 59, 59),
        "geopoint": {"lat": -17.8, "lon": 179.5},  # Fiji, east of the antimeridian... west side
        "data": {"dwc:scientificName": "QUERCUS ALBA", "dwc:habitat": ""},
        "fulltext": ["quercus", "alba"],
    },
    {
        "uuid": "r3",
        "genus": "",
        "scientificname": "pinus taeda",
        "flags": None,
        "version": 3,
        "hasImage": False,
        "datecollected": datetime(1901, 1, 1),
        "geopoint": {"lat": -16.5, "lon": -179.8},  # across the antimeridian from r2
        "data": {"dwc:scientificName": "Pinus taeda", "dwc:habitat": "Pine barrens"},
        "fulltext": ["pinus", "taeda", "pine", "barrens"],
    },
    {
        "uuid": "r4",
        "genus": None,
        "flags": ["gbif_canonical"],
        "version": 4,
        "minelevation": -5.0,
        "datecollected": None,
        "geopoint": None,
        "data": {},
        "fulltext": [],
    },
]
M: list[dict[str, Any]] = [
    {
        "uuid": "m1",
        "coreid": "r1",
        "format": "image/jpeg",
        "xpixels": 640,
        "data": {"ac:accessURI": "HTTP://X/1.JPG"},
    },
    {"uuid": "m2", "coreid": "r1", "format": "image/png", "xpixels": 2048, "data": {}},
    {"uuid": "m3", "coreid": "r2", "format": "image/jpeg", "xpixels": None, "data": {}},
    {"uuid": "m4", "coreid": None, "format": "audio/mpeg", "data": {}},
]


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = connect(R, M)
    yield connection
    connection.close()


def records(con: duckdb.DuckDBPyConnection, raw: dict[str, Any]) -> list[str]:
    q = validate_query(raw, "records")
    where, params = compile_where("records", q, alias="r")
    assert "?" not in where or params  # values always travel as parameters
    rows = con.execute(f"SELECT r.uuid FROM records AS r WHERE {where} ORDER BY 1", params)
    return [row[0] for row in rows.fetchall()]


def box(top: float, left: float, bottom: float, right: float) -> dict[str, Any]:
    return {
        "geopoint": {
            "type": "geo_bounding_box",
            "top_left": {"lat": top, "lon": left},
            "bottom_right": {"lat": bottom, "lon": right},
        }
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, ["r1", "r2", "r3", "r4"]),
        ({"genus": "ACER"}, ["r1"]),
        ({"genus": ["acer", "quercus", "zea"]}, ["r1", "r2"]),
        ({"genus": {"type": "exists"}}, ["r1", "r2"]),  # "" counts as missing
        ({"genus": {"type": "missing"}}, ["r3", "r4"]),
        ({"genus": {"type": "prefix", "value": "Qu"}}, ["r2"]),
        ({"genus": {"type": "range", "gte": "a", "lt": "b"}}, ["r1"]),
        ({"scientificname": {"type": "prefix", "value": "acer r"}}, ["r1"]),
        ({"locality": "near gainesville, florida"}, ["r1"]),
        ({"locality": "gainesville"}, []),  # longtext: the whole value, not a word of it
        ({"flags": "rev_geocode_flip"}, ["r1"]),
        ({"flags": ["gbif_canonical", "rev_geocode_flip"]}, ["r1", "r4"]),
        ({"flags": {"type": "exists"}}, ["r1", "r4"]),
        ({"flags": {"type": "missing"}}, ["r2", "r3"]),  # NULL and empty list
        ({"flags": {"type": "prefix", "value": "rev"}}, ["r1"]),
        ({"flags": {"type": "range", "gte": "g", "lt": "h"}}, ["r1", "r4"]),
        ({"version": 2}, ["r2"]),
        ({"version": ["1", 3]}, ["r1", "r3"]),
        ({"version": {"type": "range", "gt": 1.5, "lte": 3.9}}, ["r2", "r3"]),
        ({"minelevation": "250.5"}, ["r2"]),
        ({"minelevation": {"type": "range", "gte": "100", "lte": 200}}, ["r1"]),
        ({"minelevation": {"type": "range", "lt": 0}}, ["r4"]),
        ({"minelevation": {"type": "missing"}}, ["r3"]),
        ({"hasImage": True}, ["r1"]),
        ({"hasImage": "false"}, ["r2", "r3"]),
        ({"hasImage": {"type": "missing"}}, ["r4"]),
        # Partial dates cover their whole period.
        ({"datecollected": "1900"}, ["r1", "r2"]),
        ({"datecollected": {"type": "range", "lte": "1900"}}, ["r1", "r2"]),
        ({"datecollected": {"type": "range", "lt": "1900"}}, []),
        ({"datecollected": {"type": "range", "gt": "1900"}}, ["r3"]),
        ({"datecollected": {"type": "range", "gte": "1900-12"}}, ["r2", "r3"]),
        ({"datecollected": {"type": "range", "gte": "1900-12-31T23:59:59"}}, ["r2", "r3"]),
        ({"datecollected": {"type": "range", "gt": "1900-12-31T23:59:59"}}, ["r3"]),
        # 01:00 at +02:00 is 23:00 UTC the day before, so r2 (23:59:59) is after it.
        ({"datecollected": {"type": "range", "lte": "1901-01-01T01:00:00+02:00"}}, ["r1"]),
        ({"datecollected": ["1901", "1900-01-01"]}, ["r1", "r3"]),
        ({"datecollected": {"type": "missing"}}, ["r4"]),
        ({"geopoint": {"type": "exists"}}, ["r1", "r2", "r3"]),
        ({"geopoint": {"type": "missing"}}, ["r4"]),
        (box(40, -90, 20, -80), ["r1"]),
        (box(20, -90, 40, -80), ["r1"]),  # latitudes swapped
        (box(-10, 179, -20, -179), ["r2", "r3"]),  # across the antimeridian
        (box(-10, 170, -20, 179.9), ["r2"]),
        (box(-10, -179.9, -20, 179.9), ["r2", "r3"]),  # left < right: the long way round
        (
            {"geopoint": {"type": "geo_distance", "distance": "150km", "lat": -17.0, "lon": 180}},
            ["r2", "r3"],
        ),
        (
            {"geopoint": {"type": "geo_distance", "distance": "100km", "lat": -17.0, "lon": 180}},
            ["r3"],
        ),
        (
            {"geopoint": {"type": "geo_distance", "distance": "1mi", "lat": 29.65, "lon": -82.33}},
            ["r1"],
        ),
        (
            {"geopoint": {"type": "geo_distance", "distance": "800m", "lat": 29.65, "lon": -82.33}},
            [],
        ),
        (
            {
                "geopoint": {
                    "type": "geo_distance",
                    "distance": "1000m",
                    "lat": 29.65,
                    "lon": -82.33,
                }
            },
            ["r1"],
        ),
        (
            {"geopoint": {"type": "geo_polygon", "points": [[-90, 20], [-75, 20], [-82, 35]]}},
            ["r1"],
        ),
        ({"geopoint": {"type": "geo_polygon", "points": [[-90, 20], [-80, 20], [-85, 25]]}}, []),
        (  # concave: the point sits in the notch, so it is outside
            {
                "geopoint": {
                    "type": "geo_polygon",
                    "points": [[-90, 20], [-70, 20], [-70, 40], [-82, 29], [-90, 40]],
                }
            },
            [],
        ),
        ({"data.dwc:scientificName": "acer RUBRUM l."}, ["r1"]),
        ({"data.dwc:scientificName": ["quercus alba", "pinus taeda"]}, ["r2", "r3"]),
        ({"data.dwc:scientificName": {"type": "prefix", "value": "QUERCUS"}}, ["r2"]),
        ({"data.dwc:scientificName": {"type": "range", "gte": "p", "lt": "z"}}, ["r2", "r3"]),
        ({"data.dwc:habitat": {"type": "exists"}}, ["r3"]),  # "" counts as missing
        ({"data.dwc:habitat": {"type": "missing"}}, ["r1", "r2", "r4"]),
        ({"data.http://rs.tdwg.org/dwc/terms/locality": "near gainesville, florida"}, ["r1"]),
        ({"data": {"type": "fulltext", "value": "Acer"}}, ["r1"]),
        ({"data": {"type": "fulltext", "value": "Florida, acer"}}, ["r1"]),
        ({"data": {"type": "fulltext", "value": "acer quercus"}}, []),
        ({"uuid": ["r2", "r4"]}, ["r2", "r4"]),
        (
            {
                "genus": {"type": "exists"},
                "hasImage": False,
                "version": {"type": "range", "gte": 2},
            },
            ["r2"],
        ),
    ],
)
def test_records_matching(
    con: duckdb.DuckDBPyConnection, raw: dict[str, Any], expected: list[str]
) -> None:
    assert records(con, raw) == expected


def test_values_never_enter_the_sql_text() -> None:
    q = validate_query(
        {
            "genus": "x'); DROP TABLE records; --",
            "data.dwc:it's": "y",
            "datecollected": "1900",
            "geopoint": {"type": "geo_distance", "distance": "12345km", "lat": 1.5, "lon": 2.5},
        },
        "records",
    )
    where, params = compile_where("records", q, alias="r")
    for needle in ("DROP", "it's", "1900", "12345", "1.5", "2.5"):
        assert needle not in where
    assert "x'); drop table records; --" in params


def test_empty_query_is_true() -> None:
    assert compile_where("records", None, alias="r") == ("TRUE", [])
    assert compile_where("records", {}, alias="x") == ("TRUE", [])


def test_alias_must_be_an_identifier() -> None:
    with pytest.raises(ValueError):
        compile_where("records", {}, alias="r; DROP")


def _run(con: duckdb.DuckDBPyConnection, rtype: str, rq: Any, mq: Any) -> list[str]:
    nrq = None if rq is None else validate_query(rq, "records")
    nmq = None if mq is None else validate_query(mq, "mediarecords", param="mq")
    where, params = compile_request_where(rtype, nrq, nmq)  # type: ignore[arg-type]  # str in tests
    alias = "r" if rtype == "records" else "m"
    sql = f"SELECT {alias}.uuid FROM {rtype} AS {alias} WHERE {where} ORDER BY 1"
    return [row[0] for row in con.execute(sql, params).fetchall()]


@pytest.mark.parametrize(
    ("rtype", "rq", "mq", "expected"),
    [
        ("records", {"genus": {"type": "exists"}}, None, ["r1", "r2"]),
        ("records", {}, {"format": "image/jpeg"}, ["r1", "r2"]),
        ("records", {"genus": "acer"}, {"format": "image/jpeg"}, ["r1"]),
        ("records", None, {"xpixels": {"type": "range", "gte": 1000}}, ["r1"]),
        ("records", {"genus": "quercus"}, {"xpixels": {"type": "range", "gte": 1000}}, []),
        ("mediarecords", None, {"format": "image/jpeg"}, ["m1", "m3"]),
        ("mediarecords", {"genus": "acer"}, None, ["m1", "m2"]),
        ("mediarecords", {}, None, ["m1", "m2", "m3"]),  # media of any record: not m4
        ("mediarecords", {"genus": "acer"}, {"format": "image/jpeg"}, ["m1"]),
        ("mediarecords", None, {"data.ac:accessURI": "http://x/1.jpg"}, ["m1"]),
        ("mediarecords", None, {}, ["m1", "m2", "m3", "m4"]),
    ],
)
def test_rq_and_mq_compose(
    con: duckdb.DuckDBPyConnection, rtype: str, rq: Any, mq: Any, expected: list[str]
) -> None:
    assert _run(con, rtype, rq, mq) == expected


# -- every valid query compiles and runs -----------------------------------------------------

_scalar = st.one_of(st.text(max_size=8), st.integers(-5, 5), st.booleans())
_clause = st.one_of(
    _scalar,
    st.lists(_scalar, min_size=1, max_size=3),
    st.sampled_from([{"type": "exists"}, {"type": "missing"}]),
    st.builds(lambda v: {"type": "prefix", "value": v}, st.text(min_size=1, max_size=4)),
    st.builds(lambda a, b: {"type": "range", "gte": a, "lt": b}, _scalar, _scalar),
    st.builds(
        lambda d: {"type": "range", "gt": d},
        st.sampled_from(["1900", "1950-06", "2000-01-01T10:00:00Z"]),
    ),
    st.builds(lambda d: {"type": "fulltext", "value": d}, st.text(min_size=1, max_size=10)),
    st.builds(
        lambda lat, lon, km: {
            "type": "geo_distance",
            "lat": lat,
            "lon": lon,
            "distance": f"{km}km",
        },
        st.floats(-90, 90),
        st.floats(-180, 180),
        st.integers(1, 5000),
    ),
    st.builds(
        lambda a, b, c, d: {
            "type": "geo_bounding_box",
            "top_left": {"lat": a, "lon": b},
            "bottom_right": {"lat": c, "lon": d},
        },
        st.floats(-90, 90),
        st.floats(-180, 180),
        st.floats(-90, 90),
        st.floats(-180, 180),
    ),
    st.just({"type": "geo_polygon", "points": [[0, 0], [10, 0], [10, 10], [0, 10]]}),
)
_keys = st.sampled_from(
    [
        "genus",
        "flags",
        "version",
        "minelevation",
        "hasImage",
        "datecollected",
        "geopoint",
        "data",
        "data.dwc:x",
        "uuid",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _clause, max_size=4))
def test_every_valid_query_runs(raw: dict[str, Any]) -> None:
    from query.errors import QueryError

    try:
        q = validate_query(raw, "records")
    except QueryError:
        return
    con = connect(R, M)
    where, params = compile_where("records", q, alias="r")
    con.execute(f"SELECT count(*) FROM records AS r WHERE {where}", params).fetchall()
