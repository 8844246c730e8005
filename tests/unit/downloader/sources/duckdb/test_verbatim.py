"""Verbatim terms split out of ``data`` objects: the C splitter gives what DuckDB's
``json_transform`` gives, and anything it does not parse goes to json_transform."""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archive.cells import string_parts
from downloader.sources.duckdb import verbatim

needs_c = pytest.mark.skipif(verbatim._compiled is None, reason="archive._rows was not built")

TERMS = ["dwc:genus", "dwc:locality", "dcterms:modified", "x", "日本:名"]
# Values with everything JSON escapes: quotes, backslashes, controls, non-ASCII, astral.
VALUE = st.text(
    alphabet=st.one_of(
        st.sampled_from(list('ab "\\/\n\r\t\b\f\x00\x1fé€')), st.sampled_from(["😀", "𝄞"])
    ),
    max_size=10,
)
OBJECT = st.dictionaries(st.sampled_from([*TERMS, "other", "dwc:genusX"]), VALUE, max_size=6)


def _dump(obj: dict[str, str], ascii_only: bool, spaced: bool) -> str:
    separators = (", ", ": ") if spaced else (",", ":")
    return json.dumps(obj, ensure_ascii=ascii_only, separators=separators)


def _both(objects: pa.Array, terms: list[str]) -> tuple[list[Any], list[Any]]:
    ours = [a.to_pylist() for a in verbatim.split_terms(objects, terms)]
    general = [a.to_pylist() for a in verbatim._json_transform(objects, terms)]
    return ours, general


@needs_c
@settings(max_examples=200)
@given(
    st.lists(st.one_of(st.none(), OBJECT), max_size=8),
    st.booleans(),
    st.booleans(),
    st.lists(st.sampled_from(TERMS), min_size=1, max_size=5, unique=True),
)
def test_the_c_splitter_agrees_with_json_transform(
    objects: list[dict[str, str] | None], ascii_only: bool, spaced: bool, terms: list[str]
) -> None:
    texts = [None if o is None else _dump(o, ascii_only, spaced) for o in objects]
    array = pa.array(["{}", *texts], pa.string()).slice(1)
    ours, general = _both(array, terms)
    assert ours == general
    assert ours == [[None if o is None else o.get(t) for o in objects] for t in terms]


@needs_c
@pytest.mark.parametrize(
    "text",
    [
        '{"x": 1}',  # a number
        '{"x": ["a"]}',  # a nested value
        '{"x": null}',
        '{"\\u0078": "escaped key"}',
        '{"x": "first", "x": "second"}',  # a key twice
    ],
)
def test_objects_the_splitter_leaves_alone_go_to_json_transform(text: str) -> None:
    assert verbatim._compiled is not None
    array = pa.array(['{"x": "plain"}', text], pa.string())
    assert verbatim._compiled.split(*string_parts(array), [b"x"], 2) is None
    ours, general = _both(array, ["x"])
    assert ours == general


@needs_c
def test_text_that_json_transform_refuses_raises_as_before() -> None:
    assert verbatim._compiled is not None
    array = pa.array(['{"x": "\\ud800"}'], pa.string())  # a lone surrogate
    assert verbatim._compiled.split(*string_parts(array), [b"x"], 1) is None
    with pytest.raises(duckdb.Error, match="surrogate"):
        verbatim.split_terms(array, ["x"])


def test_without_the_c_splitter_the_terms_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    array = pa.array([json.dumps({"x": 'a\n"b', "dwc:genus": "Acer"}), None, "{}"])
    expected = [['a\n"b', None, None], ["Acer", None, None]]
    assert [a.to_pylist() for a in verbatim.split_terms(array, ["x", "dwc:genus"])] == expected
    monkeypatch.setattr(verbatim, "USE_C", False)
    assert [a.to_pylist() for a in verbatim.split_terms(array, ["x", "dwc:genus"])] == expected


def test_expand_puts_the_terms_in_place_of_the_json_column() -> None:
    batch = pa.record_batch(
        {
            "coreid": ["a", "b"],
            "_raw_json": ['{"x": "1"}', '{"y": "2"}'],
            "_rowid": pa.array([4, 9], pa.int64()),
        }
    )
    table = verbatim.expand(batch, "_raw_json", ["x", "y"])
    assert table.column_names == ["coreid", "x", "y", "_rowid"]
    assert table.to_pydict() == {
        "coreid": ["a", "b"],
        "x": ["1", None],
        "y": [None, "2"],
        "_rowid": [4, 9],
    }
