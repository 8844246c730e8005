"""hits_to_batch converts whole columns with Arrow; every shape of ``_source`` value gives
the same batch as converting value by value with ``cell`` / ``_raw_value`` (the reference
below), the usual shapes and the odd ones alike. So does a page whose answer Arrow decodes
(``arrow_sources``), which hands pages with odd values back to hits_to_batch."""

from __future__ import annotations

import copy
import json
from typing import Any

import pyarrow as pa
import pytest

from downloader.sources.elasticsearch.hits import (
    ARROW_TYPES,
    Page,
    _arrow_batch,
    _raw_value,
    arrow_members,
    arrow_sources,
    cell,
    hits_to_batch,
    peek,
)
from query.fields import get_field

FIELDS = [
    "uuid",
    "genus",
    "datemodified",
    "geopoint",
    "recordids",
    "hasImage",
    "startdayofyear",
    "coordinateuncertainty",
]
TERMS = ["dwc:genus", "dwc:country"]


def reference(sources: list[dict[str, Any]], names: list[str], terms: list[str]) -> pa.RecordBatch:
    arrays = [pa.array([s.get("uuid") for s in sources], pa.string())]
    for name in names:
        f = get_field("records", name)
        assert f is not None
        arrays.append(pa.array([cell(f, s.get(name)) for s in sources], ARROW_TYPES[f.kind]))
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
        "startdayofyear": i % 366 if i % 7 else None,
        "coordinateuncertainty": 10.5 * i if i % 3 else i,
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
    ("data", {"dwc:genus": None, "other": 5}),
    ("geopoint", {"lat": 1, "lon": 2, "alt": 3}),
    ("startdayofyear", 1.0),
    ("startdayofyear", "5"),
    ("startdayofyear", True),
    ("coordinateuncertainty", "5.5"),
    ("coordinateuncertainty", 2**70),
    ("genus", 'quote " backslash \\ newline \n nul \u0000 emoji 😀'),
    ("fulltext", {"not": ["asked", "for"]}),
]


def answer(sources: list[dict[str, Any]], scroll_id: str | None = "scroll-1") -> bytes:
    """A scroll answer as a cluster sends it (one line of JSON)."""
    hits = [
        {"_index": "x", "_id": s.get("uuid"), "_score": None, "_source": s, "sort": [i]}
        for i, s in enumerate(sources)
    ]
    doc = {"_scroll_id": scroll_id, "took": 3, "hits": {"total": {"value": 1}, "hits": hits}}
    return json.dumps(doc, ensure_ascii=False).encode()


def decoded(sources: list[dict[str, Any]]) -> Any:
    members = arrow_members("records", [(FIELDS, TERMS), ([], TERMS)])
    assert members is not None
    return arrow_sources(answer(sources), members)


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


def test_an_answer_decoded_by_arrow_gives_the_same_batches() -> None:
    sources = [usual(i) for i in range(200)]
    got = decoded(sources)
    assert got is not None
    scroll_id, arrow = got
    assert scroll_id == "scroll-1" and len(arrow) == 200
    for names, terms in ((FIELDS, TERMS), ([], TERMS), (["uuid"], []), (FIELDS[::-1], TERMS[:1])):
        batch = _arrow_batch("records", arrow, names, terms)
        assert batch is not None  # the usual shapes take the Arrow path
        assert batch.equals(reference(sources, names, terms))
        assert Page("records", arrow=arrow, raw=answer(sources)).batch(names, terms).equals(batch)


@pytest.mark.parametrize(("name", "value"), [*ODD, ("geopoint", {"lat": None, "lon": 2.5})])
def test_odd_values_in_an_answer_give_the_same_batches(name: str, value: Any) -> None:
    sources = [usual(i) for i in range(50)]
    for i in (0, 7, 49):
        sources[i][name] = copy.deepcopy(value)
    got = decoded(sources)
    page = (
        Page("records", raw=answer(sources))
        if got is None
        else Page("records", arrow=got[1], raw=answer(sources))
    )
    assert page.batch(FIELDS, TERMS).equals(hits_to_batch("records", sources, FIELDS, TERMS))


def test_answers_arrow_does_not_decode() -> None:
    members = arrow_members("records", [(FIELDS, TERMS)])
    assert members is not None
    duplicate = answer([usual(1)]).replace(b'"genus": "acer"', b'"genus": "acer", "genus": "x"')
    assert b'"genus": "x"' in duplicate
    assert arrow_sources(duplicate, members) is None
    assert arrow_sources(b"not json", members) is None
    pretty = json.dumps(json.loads(answer([usual(1)])), indent=1).encode()
    compact = arrow_sources(answer([usual(1)]), members)
    assert compact is not None and arrow_sources(pretty, members) == compact
    no_source = b'{"_scroll_id": "s", "hits": {"hits": [{"_id": "a"}]}}'
    assert arrow_sources(no_source, members) is None
    empty = arrow_sources(answer([], scroll_id=None), members)
    assert empty is not None and empty[0] is None and len(empty[1]) == 0
    assert arrow_members("records", [(["uuid"], []), (["genus"], ["dwc:genus"])]) is not None


def test_peek_reads_the_scroll_id_and_whether_there_are_hits() -> None:
    assert peek(answer([usual(1)])) == ("scroll-1", True)
    assert peek(answer([])) == ("scroll-1", False)
    assert peek(answer([usual(1)], scroll_id=None)) == (None, False)
    # An id only found after "hits" could be a document's: not trusted.
    late = b'{"hits":{"hits":[{"_source":{"_scroll_id":"doc"}}]},"_scroll_id":"real"}'
    assert peek(late) == (None, False)
    assert peek({"_scroll_id": "d", "hits": {"hits": [{"_source": {}}]}}) == ("d", True)
