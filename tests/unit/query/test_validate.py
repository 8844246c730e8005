from __future__ import annotations

import json
import pickle
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from query.errors import QueryError
from query.fields import field_names
from query.schema import QUERY_SCHEMA
from query.validate import validate_query


def v(q: Any, rtype: str = "records", **kw: Any) -> dict[str, Any]:
    return validate_query(q, rtype, **kw)  # type: ignore[arg-type]  # tests pass plain str


def err(q: Any, rtype: str = "records", **kw: Any) -> QueryError:
    with pytest.raises(QueryError) as info:
        v(q, rtype, **kw)
    return info.value


# -- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ({}, {}),
        ({"genus": " Acer "}, {"genus": "acer"}),
        ({"Genus": "acer"}, {"genus": "acer"}),  # field names are case-insensitive
        ({"scientificName": "Acer Rubrum"}, {"scientificname": "acer rubrum"}),
        (
            {"family": ["Fagaceae", "asteraceae", "fagaceae"]},
            {"family": ["asteraceae", "fagaceae"]},
        ),
        ({"family": ["Fagaceae"]}, {"family": "fagaceae"}),
        ({"catalognumber": 12}, {"catalognumber": "12"}),
        ({"flags": "GEOPOINT_0_COORD"}, {"flags": "geopoint_0_coord"}),
        ({"minelevation": "100"}, {"minelevation": 100.0}),
        ({"minelevation": -0.0}, {"minelevation": 0.0}),
        ({"version": "3"}, {"version": 3}),
        ({"version": 3.0}, {"version": 3}),
        ({"version": [2, "1", 2]}, {"version": [1, 2]}),
        ({"hasImage": True}, {"hasImage": True}),
        ({"hasImage": "False"}, {"hasImage": False}),
        ({"hasimage": "true"}, {"hasImage": True}),
        ({"genus": {"type": "exists"}}, {"genus": {"type": "exists"}}),
        ({"geopoint": {"type": "missing"}}, {"geopoint": {"type": "missing"}}),
        (
            {"genus": {"type": "prefix", "value": " Ac"}},
            {"genus": {"type": "prefix", "value": "ac"}},
        ),
        ({"genus": {"type": "exact", "text": "Acer"}}, {"genus": "acer"}),
        ({"genus": {"type": "keyword", "value": ["B", "a"]}}, {"genus": ["a", "b"]}),
        (
            {"minelevation": {"type": "range", "gte": "100", "lte": "200"}},
            {"minelevation": {"type": "range", "gte": 100.0, "lte": 200.0}},
        ),
        (
            {"minelevation": {"type": "range", "gte": 5, "gt": 7, "lt": 9, "lte": 9}},
            {"minelevation": {"type": "range", "gt": 7.0, "lt": 9.0}},
        ),
        (
            {"version": {"type": "range", "gt": 4, "lt": 7.5}},
            {"version": {"type": "range", "gte": 5, "lte": 7}},
        ),
        (
            {"genus": {"type": "range", "gte": "A", "lt": "M"}},
            {"genus": {"type": "range", "gte": "a", "lt": "m"}},
        ),
        (
            {"datecollected": {"type": "range", "gte": "1800-01-01", "lte": "1900-01-01"}},
            {
                "datecollected": {
                    "type": "range",
                    "gte": "1800-01-01T00:00:00",
                    "lt": "1900-01-02T00:00:00",
                }
            },
        ),
        (
            {"datecollected": {"type": "range", "gte": "1900", "lte": "1900"}},
            {
                "datecollected": {
                    "type": "range",
                    "gte": "1900-01-01T00:00:00",
                    "lt": "1901-01-01T00:00:00",
                }
            },
        ),
        (
            {"datecollected": {"type": "range", "gt": "1900", "lt": "1950-06"}},
            {
                "datecollected": {
                    "type": "range",
                    "gte": "1901-01-01T00:00:00",
                    "lt": "1950-06-01T00:00:00",
                }
            },
        ),
        (
            {"datecollected": {"type": "range", "gte": "2000-01-01T12:00:00+02:00"}},
            {"datecollected": {"type": "range", "gte": "2000-01-01T10:00:00"}},
        ),
        ({"datecollected": "1900"}, {"datecollected": "1900-01-01T00:00:00/1901-01-01T00:00:00"}),
        (
            {"datecollected": ["1900-01-01T00:00:00/1901-01-01T00:00:00", "1900"]},
            {"datecollected": "1900-01-01T00:00:00/1901-01-01T00:00:00"},
        ),
        (
            {"data": {"type": "fulltext", "value": "Rubrum, ACER!"}},
            {"data": {"type": "fulltext", "value": "acer rubrum"}},
        ),
        ({"data.dwc:scientificName": " Acer L. "}, {"data.dwc:scientificName": "acer l."}),
        ({"data.http://rs.tdwg.org/dwc/terms/genus": "Acer"}, {"data.dwc:genus": "acer"}),
        (
            {"geopoint": {"type": "geo_distance", "distance": "100km", "lat": "-41.1", "lon": 145}},
            {
                "geopoint": {
                    "type": "geo_distance",
                    "distance": 100000.0,
                    "lat": -41.1,
                    "lon": 145.0,
                }
            },
        ),
        (
            {"geopoint": {"type": "geo_distance", "distance": "2.5 mi", "lat": 0, "lon": 0}},
            {"geopoint": {"type": "geo_distance", "distance": 4023.36, "lat": 0.0, "lon": 0.0}},
        ),
        (
            {"geopoint": {"type": "geo_distance", "distance": "500m", "lat": 0, "lon": 0}},
            {"geopoint": {"type": "geo_distance", "distance": 500.0, "lat": 0.0, "lon": 0.0}},
        ),
        (
            {
                "geopoint": {
                    "type": "geo_bounding_box",
                    "top_left": {"lat": -45.1119, "lon": -130},
                    "bottom_right": {"lat": 19.23, "lon": 179.99999},
                }
            },
            {
                "geopoint": {
                    "type": "geo_bounding_box",
                    "top_left": {"lat": 19.23, "lon": -130.0},
                    "bottom_right": {"lat": -45.1119, "lon": 179.99999},
                }
            },
        ),
        (
            {"geopoint": {"type": "geo_polygon", "value": [[0, 0], [10, 0], [10, 10], [0, 0]]}},
            {
                "geopoint": {
                    "type": "geo_polygon",
                    "points": [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]],
                }
            },
        ),
        (
            {
                "geopoint": {
                    "type": "geo_polygon",
                    "points": [{"lat": 0, "lon": 0}, {"lat": 0, "lon": 5}, {"lat": 5, "lon": 5}],
                }
            },
            {"geopoint": {"type": "geo_polygon", "points": [[0.0, 0.0], [5.0, 0.0], [5.0, 5.0]]}},
        ),
    ],
)
def test_normalises(raw: dict[str, Any], normalised: dict[str, Any]) -> None:
    assert v(raw) == normalised
    jsonschema.validate(normalised, QUERY_SCHEMA)
    assert v(normalised) == normalised  # normalising is idempotent


def test_antimeridian_box_is_kept_as_given() -> None:
    box = {
        "type": "geo_bounding_box",
        "top_left": {"lat": 10, "lon": 170},
        "bottom_right": {"lat": -10, "lon": -170},
    }
    out = v({"geopoint": box})["geopoint"]
    assert out["top_left"] == {"lat": 10.0, "lon": 170.0}
    assert out["bottom_right"] == {"lat": -10.0, "lon": -170.0}


def test_media_fields() -> None:
    assert v({"format": "IMAGE/JPEG", "xpixels": "640"}, "mediarecords") == {
        "format": "image/jpeg",
        "xpixels": 640,
    }


def test_uuid_selection_list() -> None:
    uuids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(500)]
    assert v({"uuid": list(reversed(uuids))}) == {"uuid": uuids}


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [[], "genus=acer", 3, None, True, [{"genus": "acer"}]])
def test_query_must_be_an_object(q: Any) -> None:
    e = err(q)
    assert e.key == "rq" and "JSON object" in e.message


def test_unknown_fields_are_all_listed() -> None:
    e = err({"genus": "acer", "min_x": 1, "max_y": 2})
    assert e.name == "TermNotFoundError"
    assert e.extra["terms"] == ["min_x", "max_y"]
    assert e.to_dict() == {
        "error": "rq: Terms not found in index for type records: min_x, max_y",
        "name": "TermNotFoundError",
        "key": "rq",
        "terms": ["min_x", "max_y"],
    }


def test_record_field_is_unknown_for_media() -> None:
    e = err({"genus": "acer"}, "mediarecords", param="mq")
    assert e.key == "mq" and e.extra["terms"] == ["genus"]


@pytest.mark.parametrize(
    ("q", "key", "words"),
    [
        ({"genus": {"type": "bogus"}}, "rq.genus", "unknown query type 'bogus'"),
        ({"genus": {"type": "fuzzy", "text": "acr"}}, "rq.genus", "fuzzy"),
        ({"genus": {"type": "geo_shape", "value": {}}}, "rq.genus", "geo_shape"),
        ({"genus": {"value": "x"}}, "rq.genus", 'needs a "type"'),
        ({"genus": {"type": 3}}, "rq.genus.type", "must be text"),
        ({"datecollected": {"type": "range"}}, "rq.datecollected", "at least one bound"),
        ({"genus": {"type": "range", "gte": "a", "from": "b"}}, "rq.genus", "'from'"),
        (
            {
                "geopoint": {
                    "type": "geo_bounding_box",
                    "top_left": {"lat": 200, "lon": 0},
                    "bottom_right": {"lat": 0, "lon": 1},
                }
            },
            "rq.geopoint.top_left.lat",
            "latitude 200",
        ),
        (
            {"geopoint": {"type": "geo_distance", "distance": "1km", "lat": 0, "lon": 500}},
            "rq.geopoint.lon",
            "longitude 500",
        ),
        (
            {"geopoint": {"type": "geo_distance", "distance": "1 parsec", "lat": 0, "lon": 0}},
            "rq.geopoint.distance",
            "not a distance",
        ),
        (
            {"geopoint": {"type": "geo_distance", "distance": "0km", "lat": 0, "lon": 0}},
            "rq.geopoint.distance",
            "greater than zero",
        ),
        (
            {"geopoint": {"type": "geo_distance", "lat": 0, "lon": 0}},
            "rq.geopoint",
            "'distance' is a required property",
        ),
        (
            {
                "geopoint": {
                    "type": "geo_bounding_box",
                    "top_left": {"lat": 1},
                    "bottom_right": {"lat": 0, "lon": 1},
                }
            },
            "rq.geopoint.top_left",
            "'lon' is a required property",
        ),
        (
            {
                "geopoint": {
                    "type": "geo_bounding_box",
                    "top_left": {"lat": 1, "lon": 1},
                    "bottom_right": {"lat": 1, "lon": 2},
                }
            },
            "rq.geopoint",
            "no area",
        ),
        (
            {"geopoint": {"type": "geo_polygon", "points": [[0, 0], [1, 1]]}},
            "rq.geopoint.points",
            "at least 3",
        ),
        (
            {"geopoint": {"type": "geo_polygon", "points": [[0, 0], [1, 1], [1, 0], [0, 1]]}},
            "rq.geopoint.points",
            "cross",
        ),
        (
            {"geopoint": {"type": "geo_polygon", "points": [[0, 0], [1, 1], [2, 2]]}},
            "rq.geopoint.points",
            "no area",
        ),
        (
            {"geopoint": {"type": "geo_polygon", "points": [[-170, 0], [170, 0], [0, 10]]}},
            "rq.geopoint.points",
            "180 degrees",
        ),
        (
            {"geopoint": {"type": "geo_polygon", "points": [[0, 0]], "value": [[0, 0]]}},
            "rq.geopoint",
            "exactly one",
        ),
        ({"datecollected": "1900-13-01"}, "rq.datecollected", "not a valid date"),
        (
            {"datecollected": {"type": "range", "gte": "last year"}},
            "rq.datecollected.gte",
            "not a date",
        ),
        (
            {"datecollected": {"type": "range", "gte": 1900}},
            "rq.datecollected.gte",
            "written as text",
        ),
        ({"minelevation": "high"}, "rq.minelevation", "must be a number"),
        (
            {"minelevation": {"type": "range", "gte": "x"}},
            "rq.minelevation.gte",
            "must be a number",
        ),
        ({"version": 1.5}, "rq.version", "whole number"),
        ({"version": 2**70}, "rq.version", "out of range"),
        ({"hasImage": "yes"}, "rq.hasImage", "true or false"),
        ({"hasImage": {"type": "range", "gte": 1}}, "rq.hasImage", "range does not apply"),
        (
            {"minelevation": {"type": "prefix", "value": "1"}},
            "rq.minelevation",
            "prefix works on text",
        ),
        (
            {"genus": {"type": "geo_distance", "distance": "1km", "lat": 0, "lon": 0}},
            "rq.genus",
            "point fields",
        ),
        ({"geopoint": "0,0"}, "rq.geopoint", "is a point"),
        ({"genus": {"type": "fulltext", "value": "acer"}}, "rq.genus", "'data' key"),
        ({"data": "acer"}, "rq.data", "fulltext"),
        ({"data": {"type": "exists"}}, "rq.data", "fulltext"),
        ({"data": {"type": "fulltext", "value": "!!"}}, "rq.data.value", "no words"),
        ({"genus": None}, "rq.genus", "missing"),
        ({"genus": ""}, "rq.genus", "empty"),
        ({"genus": []}, "rq.genus", "empty list"),
        ({"genus": [["acer"]]}, "rq.genus[0]", "single value"),
        ({"genus": "acer", "GENUS": "quercus"}, "rq.GENUS", "same field"),
        ({"data.": "x"}, "rq.data.", "missing after 'data.'"),
        ({"data.dwc:*": {"type": "exists"}}, "rq.data.dwc:*", "not a usable term"),
        ({"minelevation": float("nan")}, "rq.minelevation", "finite"),
    ],
)
def test_errors_name_the_key(q: dict[str, Any], key: str, words: str) -> None:
    e = err(q)
    assert e.key == key
    assert words in e.message
    assert e.message.startswith(key + ": ")
    body = e.to_dict()
    assert body["key"] == key and body["error"] == e.message and body["name"] == "QueryError"
    json.dumps(body)


def test_size_limits() -> None:
    assert err({"uuid": ["x" * 40] * 2000}).key == "rq"  # over 64 KiB
    assert "bytes" in err({"genus": "a" * 100}, max_query_bytes=50).message
    assert "more than 3 items" in err({"genus": ["a", "b", "c", "d"]}, max_list_items=3).message
    assert (
        "more than 2 keys" in err({"genus": "a", "family": "b", "order": "c"}, max_keys=2).message
    )
    deep: Any = "x"
    for _ in range(50):
        deep = [deep]
    assert "nested" in err({"genus": deep}).message


def test_huge_numbers_are_refused() -> None:
    assert "too large" in err({"version": 10**5000}).message
    assert "must be a number" in err({"version": "9" * 5000}).message
    assert "finite" in err({"minelevation": "1e999"}).message


def test_very_deep_input_does_not_overflow_the_stack() -> None:
    deep: Any = {}
    for _ in range(100_000):
        deep = {"genus": deep}
    assert "nested" in err(deep).message


def test_error_pickles() -> None:
    e = err({"nope": 1})
    again = pickle.loads(pickle.dumps(e))
    assert again.to_dict() == e.to_dict()


# -- robustness ------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "value",
                    "gte",
                    "lt",
                    "lat",
                    "lon",
                    "top_left",
                    "bottom_right",
                    "points",
                    "distance",
                    "text",
                ]
            )
            | st.text(max_size=6),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)
_types = st.sampled_from(
    [
        "exists",
        "missing",
        "range",
        "prefix",
        "fulltext",
        "geo_bounding_box",
        "geo_distance",
        "geo_polygon",
        "exact",
        "fuzzy",
        "x",
    ]
)
_keys = st.sampled_from([*field_names("records"), "data", "data.dwc:genus", "data.", "nope"])
_clause = st.one_of(
    _json,
    st.builds(
        lambda t, extra: {"type": t, **extra},
        _types,
        st.dictionaries(
            st.sampled_from(
                [
                    "value",
                    "gte",
                    "lt",
                    "lat",
                    "lon",
                    "distance",
                    "top_left",
                    "bottom_right",
                    "points",
                    "text",
                ]
            ),
            _json,
            max_size=4,
        ),
    ),
)


@settings(max_examples=400)
@given(st.one_of(_json, st.dictionaries(_keys, _clause, max_size=5)))
def test_random_json_only_ever_raises_query_error(q: Any) -> None:
    try:
        out = v(q)
    except QueryError as e:
        assert e.message and e.key.startswith("rq")
        json.dumps(e.to_dict())
    else:
        jsonschema.validate(out, QUERY_SCHEMA)
        assert v(out) == out
