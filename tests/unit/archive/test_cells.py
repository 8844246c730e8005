"""How Arrow values become CSV/TSV cells: JSON parity, ISO timestamps, RFC 4180 quoting."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archive import cells


@pytest.fixture(autouse=True, params=["c", "arrow"])
def row_join(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with both row joins (the C one is skipped where it was not built)."""
    if request.param == "c" and cells._compiled is None:
        pytest.skip("archive._rows was not built (no C compiler at install time)")
    monkeypatch.setattr(cells, "ROW_JOIN", request.param)
    return str(request.param)


GEO = pa.struct([("lat", pa.float64()), ("lon", pa.float64())])


def cell_list(arr: pa.Array, delimiter: str = ",") -> list[str]:
    """The cells of one column, as the csv module reads them back."""
    rows = cells.encode_rows([pa.array(["id"] * len(arr)), arr], delimiter)
    text = bytes(rows).decode("utf-8")
    return [row[1] for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)]


@pytest.mark.parametrize(
    ("values", "arrow_type", "expected"),
    [
        ([True, False, None], pa.bool_(), ["true", "false", ""]),
        ([1, -2, None, 2**62], pa.int64(), ["1", "-2", "", str(2**62)]),
        ([1, 255], pa.uint8(), ["1", "255"]),
        ([2.0, 0.1, 1e-05, 1e16, 1e15, 123.456, -0.0, None], pa.float64(), None),
        (
            [float("nan"), float("inf"), float("-inf")],
            pa.float64(),
            ["NaN", "Infinity", "-Infinity"],
        ),
        ([1.5, 2.0], pa.float32(), ["1.5", "2.0"]),
        ([Decimal("1.50")], pa.decimal128(5, 2), ["1.50"]),
        ([date(2020, 2, 29), None], pa.date32(), ["2020-02-29", ""]),
        (["a", None, ""], pa.string(), ["a", "", ""]),
        (["a"], pa.large_string(), ["a"]),
        ([b"bytes"], pa.binary(), ["bytes"]),
        ([None, None], pa.null(), ["", ""]),
    ],
)
def test_scalar_types(
    values: list[Any], arrow_type: pa.DataType, expected: list[str] | None
) -> None:
    if expected is None:
        expected = ["" if v is None else json.dumps(v) for v in values]
    assert cell_list(pa.array(values, arrow_type)) == expected


@pytest.mark.parametrize(
    ("value", "arrow_type", "expected"),
    [
        (datetime(2020, 1, 2, 3, 4, 5), pa.timestamp("us"), "2020-01-02T03:04:05+00:00"),
        (
            datetime(2020, 1, 2, 3, 4, 5, 120),
            pa.timestamp("us"),
            "2020-01-02T03:04:05.000120+00:00",
        ),
        (datetime(2020, 1, 2, 3, 4, 5), pa.timestamp("s"), "2020-01-02T03:04:05+00:00"),
        (
            datetime(2020, 1, 2, 3, 4, 5, 7000),
            pa.timestamp("ms"),
            "2020-01-02T03:04:05.007000+00:00",
        ),
        (datetime(2020, 1, 2, 3, 4, 5), pa.timestamp("ns"), "2020-01-02T03:04:05+00:00"),
        (datetime(1, 1, 1), pa.timestamp("us"), "0001-01-01T00:00:00+00:00"),
        (
            datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            pa.timestamp("us", tz="+02:00"),
            "2020-01-02T01:04:05+00:00",
        ),
    ],
)
def test_timestamps_are_iso_utc(value: datetime, arrow_type: pa.DataType, expected: str) -> None:
    assert cell_list(pa.array([value], arrow_type)) == [expected]
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    assert datetime.fromisoformat(expected) == aware.replace(microsecond=aware.microsecond)


def test_geopoint_is_lat_then_lon_whatever_the_field_order() -> None:
    lon_first = pa.struct([("lon", pa.float64()), ("lat", pa.float64())])
    arr = pa.array([{"lon": 2.0, "lat": 1.5}, None, {"lon": None, "lat": 3.0}], lon_first)
    assert cell_list(arr) == ['{"lat": 1.5, "lon": 2.0}', "", '{"lat": 3.0, "lon": null}']
    assert cell_list(pa.array([{"lat": 42.1, "lon": -71.05}], GEO)) == [
        '{"lat": 42.1, "lon": -71.05}'
    ]


def test_lists_and_structs_are_json() -> None:
    lists = pa.array([["a", "b"], [], None, ["é", None, 'q"uote', "back\\slash", "ctl\x01"]])
    assert [json.loads(c) if c else None for c in cell_list(lists)] == [
        ["a", "b"],
        [],
        None,
        ["é", None, 'q"uote', "back\\slash", "ctl\x01"],
    ]
    assert cell_list(lists)[3] == '["é", null, "q\\"uote", "back\\\\slash", "ctl\\u0001"]'
    ints = pa.array([[1, 2], [3]], pa.list_(pa.int64()))
    assert cell_list(ints) == ["[1, 2]", "[3]"]
    nested = pa.array([{"a": [1.0, None], "b": {"c": "x"}, "d": datetime(2000, 1, 1)}])
    assert json.loads(cell_list(nested)[0]) == {
        "a": [1.0, None],
        "b": {"c": "x"},
        "d": "2000-01-01T00:00:00+00:00",
    }
    fixed = pa.array([[1, 2]], pa.list_(pa.int32(), 2))
    assert cell_list(fixed) == ["[1, 2]"]
    large = pa.array([["x"]], pa.large_list(pa.string()))
    assert cell_list(large) == ['["x"]']


def test_dictionary_columns_are_decoded() -> None:
    arr = pa.array(["b", "a", None, "b"]).dictionary_encode()
    assert cell_list(arr) == ["b", "a", "", "b"]


def test_sliced_arrays_use_their_own_window() -> None:
    arr = pa.array(["skip, me", "a", "b,c", None, "tail"]).slice(1, 3)
    assert cell_list(arr) == ["a", "b,c", ""]
    lists = pa.array([["x"], ["y", "z"], None, ["w"]]).slice(1, 2)
    assert cell_list(lists) == ['["y", "z"]', ""]
    structs = pa.array([{"lat": 1.0, "lon": 2.0}, None, {"lat": 3.0, "lon": 4.0}], GEO).slice(1)
    assert cell_list(structs) == ["", '{"lat": 3.0, "lon": 4.0}']


def test_quoting_is_minimal_and_rfc4180() -> None:
    arr = pa.array(["plain", "a,b", 'say "hi"', "x\ny", "cr\r", "tab\tx", ""])
    rows = cells.encode_rows([arr], ",")
    assert bytes(rows) == (b'plain\n"a,b"\n"say ""hi"""\n"x\ny"\n"cr\r"\ntab\tx\n""\n')
    rows = cells.encode_rows([arr], "\t")
    assert bytes(rows) == (b'plain\na,b\n"say ""hi"""\n"x\ny"\n"cr\r"\n"tab\tx"\n""\n')


def test_json_cells_are_quoted_only_when_needed() -> None:
    numbers = pa.array([[1, 2]])
    strings = pa.array([["a"]])
    rows = cells.encode_rows([pa.array(["r"]), numbers, strings], "\t")
    assert bytes(rows) == b'r\t[1, 2]\t"[""a""]"\n'
    rows = cells.encode_rows([pa.array(["r"]), numbers, strings], ",")
    assert bytes(rows) == b'r,"[1, 2]","[""a""]"\n'


@pytest.mark.parametrize("delimiter", [",", "\t"])
@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.text()), min_size=1, max_size=30))
def test_any_text_round_trips_through_the_csv_module(
    delimiter: str, values: list[str | None]
) -> None:
    assert cell_list(pa.array(values, pa.string()), delimiter) == [v or "" for v in values]


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.floats()), min_size=1, max_size=30))
def test_floats_match_json_dumps(values: list[float | None]) -> None:
    assert cell_list(pa.array(values, pa.float64())) == [
        "" if v is None else json.dumps(v) for v in values
    ]


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.none(), st.lists(st.one_of(st.none(), st.text()), max_size=5)),
        min_size=1,
        max_size=20,
    )
)
def test_string_lists_match_json_dumps(values: list[list[str | None] | None]) -> None:
    arr = pa.array(values, pa.list_(pa.string()))
    assert cell_list(arr) == [
        "" if v is None else json.dumps(v, ensure_ascii=False) for v in values
    ]


ESCAPES = [
    'say "hi"',
    "back\\slash",
    "tab\tnl\ncr\rbs\bff\f",
    "ctl\x00\x01\x1f\x7f",
    'mixed \\" \x1b',
]


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_string_lists_with_escapes_empty_lists_null_items_and_unicode(delimiter: str) -> None:
    values: list[list[str | None] | None] = [
        ESCAPES,
        [],
        None,
        [None, "a", None],
        ["Ærø", "日本語", "emoji \U0001f600", "\u2028\u2029", 'é"ü'],
        ["plain", "a,b", "a\tb"],
        [""],
    ]
    arr = pa.array(values, pa.list_(pa.string()))
    assert cell_list(arr, delimiter) == [
        "" if v is None else json.dumps(v, ensure_ascii=False) for v in values
    ]


def test_escaped_strings_in_lists_and_structs_keep_their_row() -> None:
    # Escaped values sit among plain ones: each stays in its own row.
    values = [["x"], ESCAPES[:2], ["y"], [ESCAPES[2]], None, ["z", ESCAPES[3]]] * 50
    arr = pa.array(values, pa.list_(pa.string()))
    assert cell_list(arr) == [
        "" if v is None else json.dumps(v, ensure_ascii=False) for v in values
    ]
    t = pa.struct([("name", pa.string()), ("n", pa.int64())])
    objects = [{"name": s, "n": i} for i, s in enumerate(["ok", *ESCAPES, "日本"])]
    assert cell_list(pa.array(objects, t)) == [json.dumps(o, ensure_ascii=False) for o in objects]


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(
        st.lists(
            st.text(alphabet=st.sampled_from(['"', "\\", "\n", "\x00", "\x1f", "a", "é", "日"])),
            max_size=4,
        ),
        min_size=1,
        max_size=20,
    )
)
def test_string_lists_full_of_escapes_match_json_dumps(values: list[list[str]]) -> None:
    arr = pa.array(values, pa.list_(pa.string()))
    assert cell_list(arr) == [json.dumps(v, ensure_ascii=False) for v in values]


@pytest.mark.parametrize(
    ("delimiter", "expected"),
    [
        (",", ['"[null, null]"', "[null]", "[]", "", '"[""a"", null]"', '"[""x,y""]"']),
        ("\t", ["[null, null]", "[null]", "[]", "", '"[""a"", null]"', '"[""x,y""]"']),
        ("l", ['"[null, null]"', '"[null]"', "[]", "", '"[""a"", null]"', '"[""x,y""]"']),
    ],
)
def test_string_list_cells_are_enclosed_exactly_when_needed(
    delimiter: str, expected: list[str]
) -> None:
    values = [[None, None], [None], [], None, ["a", None], ["x,y"]]
    arr = pa.array(values, pa.list_(pa.string()))
    rows = cells.encode_rows([pa.array(["id"] * len(values)), arr], delimiter)
    lines = bytes(rows).decode("utf-8").splitlines()
    assert [line.split(delimiter, 1)[1] for line in lines] == expected


def test_invalid_utf8_is_reported_with_its_row() -> None:
    arr = pa.array([b"fine", b"also fine", b"\xc3\x28 broken"], pa.binary())
    with pytest.raises(cells.RowsError) as caught:
        cells.encode_rows([pa.array(["a", "b", "c"]), arr], ",")
    assert (caught.value.row, caught.value.column) == (2, 1)
    assert "UTF-8" in caught.value.reason


def test_invalid_utf8_inside_a_string_array_is_caught() -> None:
    good = pa.array(["ok", "xx"])
    offsets, data = good.buffers()[1], pa.py_buffer(b"ok\xff\xfe")
    corrupt = pa.StringArray.from_buffers(2, offsets, data)
    with pytest.raises(cells.RowsError) as caught:
        cells.encode_rows([corrupt], ",")
    assert caught.value.row == 1


def test_bad_list_item_names_the_parent_row() -> None:
    arr = pa.array([[b"ok"], [b"ok", b"\xff"]], pa.list_(pa.binary()))
    with pytest.raises(cells.RowsError) as caught:
        cells.encode_rows([pa.array(["a", "b"]), arr], ",")
    assert caught.value.row == 1
    assert "list item" in caught.value.reason


def test_unsupported_type_is_an_error() -> None:
    with pytest.raises(cells.RowsError, match="has the type"):
        cells.encode_rows([pa.array([None, timedelta(seconds=1)], pa.duration("s"))], ",")


def test_single_empty_column_rows_are_not_blank_lines() -> None:
    rows = cells.encode_rows([pa.array(["", None, "x"])], ",")
    assert bytes(rows) == b'""\n""\nx\n'


def test_header_line_quotes_like_the_cells() -> None:
    assert cells.header_line(["coreid", "a,b", 'q"'], ",") == b'coreid,"a,b","q"""\n'
    assert cells.header_line(["coreid", "a,b"], "\t") == b"coreid\ta,b\n"


def rows_of_columns(columns: list[pa.Array], delimiter: str = ",") -> list[list[str]]:
    text = bytes(cells.encode_rows(columns, delimiter)).decode("utf-8")
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


@pytest.mark.parametrize(
    "pattern",
    ["E", "EE", "XE", "EX", "XEEX", "EEXEXEE", "XXEEEX", "EEEEEX", "XEEEEE"],
)
def test_runs_of_empty_columns_keep_every_delimiter(pattern: str) -> None:
    # X: a column with values, E: a column whose cells are all empty (null or "").
    n = 3
    columns = [
        pa.array([f"{i}{j}" for j in range(n)])
        if kind == "X"
        else (pa.nulls(n, pa.string()) if i % 2 else pa.array([""] * n))
        for i, kind in enumerate(pattern)
    ]
    expected = [
        ["" if kind == "E" else f"{i}{j}" for i, kind in enumerate(pattern)] for j in range(n)
    ]
    assert rows_of_columns(columns) == expected
    assert rows_of_columns(columns, "\t") == expected


@settings(max_examples=100, deadline=None)
@given(
    table=st.integers(min_value=1, max_value=8).flatmap(
        lambda width: st.lists(
            st.lists(
                st.one_of(st.none(), st.sampled_from(["", "a", "b,c", 'q"', "x\ny"])),
                min_size=width,
                max_size=width,
            ),
            min_size=1,
            max_size=6,
        )
    )
)
def test_any_sparse_table_round_trips(table: list[list[str | None]]) -> None:
    columns = [pa.array([row[c] for row in table], pa.string()) for c in range(len(table[0]))]
    expected = [[v or "" for v in row] for row in table]
    # A one-column row of an empty cell is written as "" (not a blank line): same reading.
    assert rows_of_columns(columns) == expected


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_plain_string_lists_take_the_short_path_with_the_same_cells(delimiter: str) -> None:
    values: list[list[str] | None] = [
        ["a"],
        [],
        None,
        ["x,y", "日本", "tab\u00e9"],
        [""],
        ["rs\\urn:catalog:1", "\\"],
    ]
    arr = pa.array(values * 3, pa.list_(pa.string())).slice(2, 13)
    assert cells._plain_string_list_text(arr, quote='""', enclose=True) is not None
    expected = ["" if v is None else json.dumps(v, ensure_ascii=False) for v in (values * 3)[2:15]]
    assert cell_list(arr, delimiter) == expected
    # Items that need escaping, or null items, go the general way.
    assert cells._plain_string_list_text(pa.array([['a"b']]), quote='""', enclose=True) is None
    assert cells._plain_string_list_text(pa.array([["a", None]]), quote='""', enclose=True) is None
    assert cells._plain_string_list_text(pa.array([["a\nb"]]), quote='""', enclose=True) is None
