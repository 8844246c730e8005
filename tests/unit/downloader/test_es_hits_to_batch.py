"""hits_to_batch converts whole columns with Arrow; every shape of ``_source`` value gives
the same batch as converting value by value with ``_cell`` / ``_raw_value`` (the reference
below), the usual shapes and the odd ones alike."""

from __future__ import annotations

import copy
from typing import Any

import pyarrow as pa
import pytest

from downloader.sources.elasticsearch import (
    ARROW_TYPES,
    _cell,
    _raw_value,
    get_field,
    hits_to_batch,
)

FIELDS = ["uuid", "genus", "datemodified", "geopoint", "recordids", "hasImage"]
TERMS = ["dwc:genus", "dwc:country"]


def reference(sources: list[dict[str, Any]], names: list[str], terms: list[str]) -> pa.RecordBatch:
    arrays = [pa.array([s.get("uuid") for s in sources], pa.string())]
    for name in names:
        f = get_field("records", name)
        assert f is not None
        arrays.append(pa.array([_cell(f, s.get(name)) for s in sources], ARROW_TYPES[f.kind]))
    for term in terms:
        arrays.append(
            pa.array([_raw_value(s.get("data") or {}, term) for s in sources], pa.string())
        )
    return pa.RecordBatch.from_arrays(arrays, names=["coreid", *names, *terms])


def usual(i: int) -> dict[str, Any]:
    return {
        "uuid": f"{i:08d}-0000-0000-0000-000000000000",
        "genus": "acer" if i % 3 else None,
        "datemodified": f"2020-01-{i % 28 + 1:02d}T03:04:05" + (".120000" if i % 2 else ""),
        "geopoint": {"lat": 1.5 + i, "lon": -2} if i % 4 else None,
        "recordids": [f"r{i}", "日本"] if i % 5 else [],
        "hasImage": bool(i % 2),
        "data": {"dwc:genus": "Acer", "dwc:country": "Ærø"} if i % 6 else None,
    }


ODD: list[tuple[str, Any]] = [
    ("genus", ["first", "second"]),
    ("genus", 12),
    ("datemodified", "2020-01-02T03:04:05Z"),
    ("datemodified", "2020-01-02T05:04:05+02:00"),
    ("datemodified", 1577934245000),
    ("datemodified", ""),
    ("datemodified", ["2020-01-02"]),
    ("geopoint", "1.5,2.5"),
    ("geopoint", [2.5, 1.5]),
    ("geopoint", {"lat": "1.5", "lon": "2.5"}),
    ("recordids", "single"),
    ("recordids", [1, None]),
    ("recordids", ["a", None]),
    ("hasImage", "true"),
    ("hasImage", [False]),
    ("data", {"dwc:genus": 5, "dwc:country": ["x"]}),
    ("data", {"dwc:genus": True}),
]


def test_usual_documents_match_the_value_by_value_conversion() -> None:
    sources = [usual(i) for i in range(200)]
    got = hits_to_batch("records", sources, FIELDS, TERMS)
    assert got.equals(reference(sources, FIELDS, TERMS))


@pytest.mark.parametrize(("name", "value"), ODD)
def test_odd_values_match_the_value_by_value_conversion(name: str, value: Any) -> None:
    sources = [usual(i) for i in range(50)]
    for i in (0, 7, 49):
        sources[i][name] = copy.deepcopy(value)
    got = hits_to_batch("records", sources, FIELDS, TERMS)
    assert got.equals(reference(sources, FIELDS, TERMS))


def test_no_fields_and_no_documents() -> None:
    assert hits_to_batch("records", [], FIELDS, TERMS).equals(reference([], FIELDS, TERMS))
    sources = [usual(i) for i in range(3)]
    assert hits_to_batch("records", sources, [], []).equals(reference(sources, [], []))
