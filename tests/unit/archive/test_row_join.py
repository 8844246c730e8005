"""The C row join (archive/_rows.c) writes exactly the bytes of the Arrow one."""

from __future__ import annotations

import shutil
import sysconfig
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archive import cells

needs_c = pytest.mark.skipif(cells._compiled is None, reason="archive._rows was not built")


def test_the_c_row_join_is_built_where_a_compiler_is_at_hand() -> None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) here: the Arrow row join is used")
    assert cells._compiled is not None, "archive._rows was not built: run `make install`"
    assert cells.ROW_JOIN == "c"


def both(columns: list[pa.Array], delimiter: str) -> tuple[bytes, bytes]:
    assert cells._compiled is not None
    ours = cells._encode_rows_c(columns, delimiter)
    theirs = bytes(cells._row_bytes(cells._encode_rows_arrow(columns, delimiter)))
    return ours, theirs


# Text that exercises every quoting rule: delimiters, quotes, CR, LF, empty, non-ASCII.
TEXT = st.text(alphabet=st.sampled_from(list('ab,;\t"\r\n\\é日 \x01\x08\x0c\x1f')), max_size=8)

COLUMN_KINDS: dict[str, tuple[Any, Any]] = {
    "string": (st.one_of(st.none(), TEXT), pa.string()),
    "int": (st.one_of(st.none(), st.integers(-(2**40), 2**40)), pa.int64()),
    "float": (
        st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
        pa.float64(),
    ),
    "bool": (st.one_of(st.none(), st.booleans()), pa.bool_()),
    "list": (st.one_of(st.none(), st.lists(st.one_of(st.none(), TEXT), max_size=3)), None),
    "time": (
        st.one_of(
            st.none(),
            st.datetimes(min_value=datetime(1800, 1, 1), max_value=datetime(2100, 1, 1)),
        ),
        pa.timestamp("us", tz="UTC"),
    ),
}


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[pa.Array], str]:
    rows = draw(st.integers(0, 12))
    kinds = draw(st.lists(st.sampled_from(sorted(COLUMN_KINDS)), min_size=1, max_size=6))
    columns = []
    for kind in kinds:
        values_strategy, arrow_type = COLUMN_KINDS[kind]
        values = draw(st.lists(values_strategy, min_size=rows + 2, max_size=rows + 2))
        if kind == "list":
            arr = pa.array(values, pa.list_(pa.string()))
        elif kind == "time":
            stamped = [None if v is None else v.replace(tzinfo=UTC) for v in values]
            arr = pa.array(stamped, arrow_type)
        else:
            arr = pa.array(values, arrow_type)
        columns.append(arr.slice(1, rows))  # offsets that do not start at zero
    return columns, draw(st.sampled_from([",", "\t", ";", "|", " "]))


@needs_c
@settings(max_examples=300)
@given(tables())
def test_any_table_gives_the_same_bytes_from_both_row_joins(
    table: tuple[list[pa.Array], str],
) -> None:
    columns, delimiter = table
    ours, theirs = both(columns, delimiter)
    assert ours == theirs


@needs_c
@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_one_column_of_empty_cells_is_quoted_by_both(delimiter: str) -> None:
    for column in (
        pa.array(["", None, "x", ""], pa.string()),
        pa.array([None, None], pa.string()),
        pa.array(["", ""], pa.string()),
    ):
        ours, theirs = both([column], delimiter)
        assert ours == theirs
    assert both([pa.array([None, None], pa.string())], delimiter)[0] == b'""\n""\n'


@needs_c
def test_wide_sparse_rows_match() -> None:
    rng = np.random.default_rng(7)
    columns = []
    for c in range(60):
        values = [
            None if rng.random() < 0.8 else f"v{c},{i}" if rng.random() < 0.1 else f"v{i}"
            for i in range(500)
        ]
        columns.append(pa.array(values, pa.string()))
    columns.append(pa.nulls(500, pa.string()))
    ours, theirs = both(columns, ",")
    assert ours == theirs


@needs_c
def test_the_c_row_join_refuses_malformed_columns() -> None:
    assert cells._compiled is not None
    rows = cells._compiled
    encode = rows.encode
    offsets = np.array([0, 1, 2], dtype=np.int32)
    data = np.frombuffer(b"ab", dtype=np.uint8)
    assert encode([(rows.TEXT, offsets, data, None, 0)], 2, ",") == b"a\nb\n"
    with pytest.raises(ValueError, match="offsets hold"):
        encode([(rows.TEXT, offsets, data, None, 0)], 3, ",")
    with pytest.raises(ValueError, match="past the data"):
        encode([(rows.TEXT, np.array([0, 1, 5], dtype=np.int32), data, None, 0)], 2, ",")
    with pytest.raises(ValueError, match="decrease"):
        encode([(rows.TEXT, np.array([0, 2, 1], dtype=np.int32), data, None, 0)], 2, ",")
    with pytest.raises(ValueError, match="validity hold"):
        encode([(rows.TEXT, offsets, data, b"", 0)], 2, ",")
    with pytest.raises(ValueError, match="delimiter"):
        encode([(rows.TEXT, offsets, data, None, 0)], 2, '"')
    with pytest.raises(TypeError, match="column 0"):
        encode([(offsets, data)], 2, ",")
    with pytest.raises(ValueError, match="outside years"):
        encode([(rows.TIME, np.array([2**62], dtype=np.int64), None, 0)], 1, ",")
    assert encode([], 0, ",") == b""


@needs_c
def test_timestamps_outside_four_digit_years_take_the_arrow_path() -> None:
    micros = pa.array([-62_135_596_800_000_001, 0, None], pa.timestamp("us"))
    ours, theirs = both([micros], ",")
    assert ours == theirs
    assert ours.splitlines()[1] == b"1970-01-01T00:00:00+00:00"


@needs_c
@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_timestamps_of_every_unit_and_zone_match(unit: str) -> None:
    stamps = [datetime(1, 1, 1), datetime(999, 12, 31, 23, 59, 59, 1), None]
    stamps += [datetime(1969, 12, 31, 23, 59, 59, 999999), datetime(9999, 12, 31, 23, 59, 59)]
    for tz in (None, "UTC", "+05:30"):
        arr = pa.array(stamps, pa.timestamp("us")).cast(pa.timestamp(unit, tz=tz), safe=False)
        ours, theirs = both([pa.array(["r"] * len(arr)), arr], "\t")
        assert ours == theirs


@needs_c
def test_lists_with_null_lists_over_items_and_slices_match() -> None:
    items = pa.array(["a", 'q"', None, "x,y", "\\", "\x01\x1f", "é"], pa.string())
    offsets = pa.array([0, 2, 4, 4, 7], pa.int32())
    lists = pa.ListArray.from_arrays(offsets, items, mask=pa.array([False, True, False, False]))
    for arr in (lists, lists.slice(1), lists.slice(2, 1)):
        for delimiter in (",", "\t", ";"):
            ours, theirs = both([arr], delimiter)
            assert ours == theirs


@needs_c
def test_dictionary_and_large_strings_match() -> None:
    words = pa.array(["a,b", None, "c", "a,b"], pa.string())
    columns = [words.dictionary_encode(), words.cast(pa.large_string()), words]
    ours, theirs = both(columns, ",")
    assert ours == theirs


def _raw_strings(values: list[bytes]) -> pa.Array:
    """A string array over arbitrary bytes (Arrow would refuse to build it from Python)."""
    offsets = np.cumsum([0, *(len(v) for v in values)]).astype(np.int32)
    return pa.StringArray.from_buffers(
        len(values), pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(values))
    )


@needs_c
@settings(max_examples=300)
@given(st.lists(st.binary(max_size=12), min_size=1, max_size=6))
def test_the_c_pass_accepts_exactly_the_utf8_python_accepts(values: list[bytes]) -> None:
    def python_ok(v: bytes) -> bool:
        try:
            v.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    arr = _raw_strings(values)
    bad = [i for i, v in enumerate(values) if not python_ok(v)]
    for join in ("c", "arrow"):
        encode = cells._encode_rows_c if join == "c" else cells._encode_rows_arrow
        if not bad:
            encode([arr], ",")
            continue
        with pytest.raises(cells.RowsError) as caught:
            encode([pa.array(["id"] * len(values)), arr], ",")
        assert (caught.value.row, caught.value.column) == (bad[0], 1)
        assert "UTF-8" in caught.value.reason


@needs_c
def test_a_list_item_that_is_not_utf8_names_its_row() -> None:
    items = _raw_strings([b"caf\xc3\xa9", b"ok", b"\xed\xa0\x80", b"x"])
    lists = pa.ListArray.from_arrays(pa.array([0, 1, 3, 4], pa.int32()), items)
    for encode in (cells._encode_rows_c, cells._encode_rows_arrow):
        with pytest.raises(cells.RowsError) as caught:
            encode([pa.array(["a", "b", "c"]), lists], ",")
        assert (caught.value.row, caught.value.column) == (1, 1)
