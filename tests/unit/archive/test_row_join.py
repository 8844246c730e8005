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
TEXT = st.text(alphabet=st.sampled_from(list('ab,\t"\r\n\\é日 ')), max_size=8)

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
    return columns, draw(st.sampled_from([",", "\t"]))


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
    encode = cells._compiled.encode
    offsets = np.array([0, 1, 2], dtype=np.int32)
    data = np.frombuffer(b"ab", dtype=np.uint8)
    assert encode([(offsets, data)], 2, ",") == b"a\nb\n"
    with pytest.raises(ValueError, match="offsets hold"):
        encode([(offsets, data)], 3, ",")
    with pytest.raises(ValueError, match="past the data"):
        encode([(np.array([0, 1, 5], dtype=np.int32), data)], 2, ",")
    with pytest.raises(ValueError, match="decrease"):
        encode([(np.array([0, 2, 1], dtype=np.int32), data)], 2, ",")
    with pytest.raises(ValueError, match="delimiter"):
        encode([(offsets, data)], 2, '"')
    with pytest.raises(TypeError, match="column 0"):
        encode([b"ab"], 2, ",")
    assert encode([], 0, ",") == b""
