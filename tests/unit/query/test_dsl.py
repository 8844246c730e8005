from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from query.dsl import compile_dsl
from query.errors import QueryError
from query.validate import validate_query

# Clause names and keys that only Elasticsearch 1/2 understood.
_ES2_ONLY = {"filtered", "and", "or", "not", "missing", "_all", "execution"}


def dsl(raw: dict[str, Any], rtype: str = "records", **kw: Any) -> dict[str, Any]:
    return compile_dsl(rtype, validate_query(raw, rtype), **kw)  # type: ignore[arg-type]  # str


def keys_of(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node).union(*(keys_of(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(keys_of(v) for v in node))
    return set()


def test_empty_query_matches_all() -> None:
    assert compile_dsl("records", None) == {"match_all": {}}
    assert dsl({}) == {"match_all": {}}


def test_terms_and_lists() -> None:
    assert dsl({"genus": "Acer", "family": ["B", "a"]}) == {
        "bool": {"filter": [{"terms": {"family": ["a", "b"]}}, {"term": {"genus": "acer"}}]}
    }


def test_missing_is_must_not_exists() -> None:
    assert dsl({"genus": {"type": "missing"}, "family": {"type": "exists"}}) == {
        "bool": {
            "filter": [{"exists": {"field": "family"}}],
            "must_not": [{"exists": {"field": "genus"}}],
        }
    }


def test_dates_become_half_open_ranges() -> None:
    assert dsl({"datecollected": {"type": "range", "gte": "1900", "lte": "1900"}}) == {
        "bool": {
            "filter": [
                {
                    "range": {
                        "datecollected": {"gte": "1900-01-01T00:00:00", "lt": "1901-01-01T00:00:00"}
                    }
                }
            ]
        }
    }
    clause = dsl({"datecollected": ["1900", "1950-06-15"]})["bool"]["filter"][0]
    assert clause["bool"]["minimum_should_match"] == 1
    assert len(clause["bool"]["should"]) == 2


def test_fulltext_is_one_term_per_token() -> None:
    assert dsl({"data": {"type": "fulltext", "value": "Acer, rubrum"}}) == {
        "bool": {"filter": [{"term": {"fulltext": "acer"}}, {"term": {"fulltext": "rubrum"}}]}
    }


def test_verbatim_terms_and_prefix() -> None:
    assert dsl({"data.dwc:Genus": {"type": "prefix", "value": "AC"}}) == {
        "bool": {"filter": [{"prefix": {"data.dwc:Genus": "ac"}}]}
    }


def test_geo_clauses() -> None:
    box = dsl(
        {
            "geopoint": {
                "type": "geo_bounding_box",
                "top_left": {"lat": -10, "lon": 170},
                "bottom_right": {"lat": 10, "lon": -170},
            }
        }
    )
    assert box["bool"]["filter"][0] == {
        "geo_bounding_box": {
            "geopoint": {
                "top_left": {"lat": 10.0, "lon": 170.0},
                "bottom_right": {"lat": -10.0, "lon": -170.0},
            }
        }
    }
    near = dsl({"geopoint": {"type": "geo_distance", "distance": "2km", "lat": 1, "lon": 2}})
    assert near["bool"]["filter"][0] == {
        "geo_distance": {"distance": "2000.0m", "geopoint": {"lat": 1.0, "lon": 2.0}}
    }


def test_polygon_as_geo_shape_is_closed_and_counter_clockwise() -> None:
    clockwise = [[0, 0], [0, 10], [10, 10], [10, 0]]
    clause = dsl({"geopoint": {"type": "geo_polygon", "points": clockwise}})["bool"]["filter"][0]
    ring = clause["geo_shape"]["geopoint"]["shape"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 5
    area2 = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in itertools.pairwise(ring))
    assert area2 > 0


def test_polygon_as_legacy_geo_polygon() -> None:
    points = [[0, 0], [10, 0], [10, 10]]
    clause = dsl({"geopoint": {"type": "geo_polygon", "points": points}}, polygon="geo_polygon")
    assert clause["bool"]["filter"][0] == {
        "geo_polygon": {
            "geopoint": {
                "points": [
                    {"lat": 0.0, "lon": 0.0},
                    {"lat": 0.0, "lon": 10.0},
                    {"lat": 10.0, "lon": 10.0},
                ]
            }
        }
    }


def test_field_prefix() -> None:
    out = dsl({"genus": "acer", "data": {"type": "fulltext", "value": "x"}}, field_prefix="doc.")
    assert out == {
        "bool": {"filter": [{"term": {"doc.fulltext": "x"}}, {"term": {"doc.genus": "acer"}}]}
    }


_scalar = st.one_of(st.text(max_size=6), st.integers(-3, 3), st.booleans())
_clause = st.one_of(
    _scalar,
    st.lists(_scalar, min_size=1, max_size=3),
    st.sampled_from([{"type": "exists"}, {"type": "missing"}]),
    st.builds(lambda v: {"type": "prefix", "value": v}, st.text(min_size=1, max_size=4)),
    st.builds(lambda a, b: {"type": "range", "gt": a, "lte": b}, _scalar, _scalar),
    st.builds(lambda v: {"type": "fulltext", "value": v}, st.text(min_size=1, max_size=10)),
    st.builds(
        lambda lat, lon: {"type": "geo_distance", "lat": lat, "lon": lon, "distance": "10mi"},
        st.floats(-90, 90),
        st.floats(-180, 180),
    ),
)
_keys = st.sampled_from(
    [
        "genus",
        "flags",
        "version",
        "dqs",
        "hasImage",
        "datecollected",
        "geopoint",
        "data",
        "data.dwc:x",
    ]
)


@settings(max_examples=300)
@given(st.dictionaries(_keys, _clause, max_size=4))
def test_every_valid_query_compiles_to_modern_dsl(raw: dict[str, Any]) -> None:
    try:
        q = validate_query(raw, "records")
    except QueryError:
        return
    out = compile_dsl("records", q)
    json.dumps(out)
    assert not keys_of(out) & _ES2_ONLY
    assert set(out) <= {"bool", "match_all"}
