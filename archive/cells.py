"""Turning Arrow columns into CSV/TSV cells and rows, a whole batch at a time.

The rules (docs/architecture.md, "Batches between a source and the archive writer"):

- strings are written as they are;
- timestamps as ISO 8601 in UTC with ``+00:00`` (``2020-01-02T03:04:05+00:00``, microseconds
  only when not zero, as :meth:`datetime.isoformat` does; naive timestamps are UTC), dates as
  ``YYYY-MM-DD``;
- booleans, numbers, lists and structs as JSON text, exactly as :func:`json.dumps` writes
  them except that non-ASCII characters are kept as UTF-8 rather than ``\\uXXXX`` escapes
  (``true``, ``2.0``, ``1e-05``, ``["a", "b"]``, ``{"lat": 1.5, "lon": 2.0}``; a struct of
  ``lat`` and ``lon`` always puts ``lat`` first; NaN and infinities as ``NaN``/``Infinity``
  like :func:`json.dumps`);
- nulls as empty cells;
- RFC 4180 quoting: a cell is enclosed in ``"`` (with inner quotes doubled) when it contains
  the delimiter, a quote, CR or LF; rows end with ``\\n``; UTF-8 without BOM.

Everything runs as Arrow compute kernels over whole columns; Python only touches the rare
values Arrow does not format the way :func:`json.dumps` does (JSON strings with control
characters, floats outside ``[1e-4, 1e10)``). A value that cannot be written (invalid UTF-8,
an Arrow type with no text form) raises :class:`CellError` with its row index.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Characters that make a JSON string need escaping beyond the enclosing quotes.
_JSON_ESCAPES = r'[\x00-\x1f"\\]'
#: The separator for element-wise concatenation without a separator.
_EMPTY = pa.scalar("", pa.string())
_QUOTE = pa.scalar('"', pa.string())


class CellError(Exception):
    """A value at ``row`` (index within the array given) cannot be written as a cell."""

    def __init__(self, row: int, reason: str) -> None:
        super().__init__(reason)
        self.row = row
        self.reason = reason


def _concat(*parts: pa.Array | pa.Scalar | str) -> pa.Array:
    """Element-wise concatenation of string arrays and scalars; a null part gives null."""
    args = [pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*args, _EMPTY)


def _first_true(mask: pa.Array) -> int:
    """The index of the first true (non-null) value of a boolean array, or -1."""
    index = pc.index(pc.fill_null(mask, False), True).as_py()
    return -1 if index is None else int(index)


def _is_string_like(t: pa.DataType) -> bool:
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_fixed_size_binary(t)
    )


def _is_list_like(t: pa.DataType) -> bool:
    return (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    )


def utf8(arr: pa.Array) -> pa.Array:
    """A string-like array as a validated ``string`` array (nulls kept).

    Raises :class:`CellError` at the first value that is not valid UTF-8.
    """
    t = arr.type
    try:
        if not pa.types.is_string(t):
            arr = arr.cast(pa.string())
        else:
            arr.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        for i, value in enumerate(arr.cast(pa.binary()).to_pylist()):
            if value is None:
                continue
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as bad:
                raise CellError(i, f"is not valid UTF-8 text ({bad.reason})") from None
        raise CellError(0, f"cannot be read as text: {exc}") from None
    return arr


def _iso_timestamps(arr: pa.Array) -> pa.Array:
    """ISO 8601 text of a timestamp array, in UTC with ``+00:00``."""
    t = arr.type
    # Dropping the zone keeps the UTC instants (Arrow stores UTC); nanoseconds are cut to
    # microseconds, the finest unit ISO text from Python carries.
    if t.tz is not None or t.unit != "us":
        arr = arr.cast(pa.timestamp("us"), safe=False)
    text = pc.strftime(arr, format="%Y-%m-%dT%H:%M:%S")
    # strftime always writes six fractional digits for microseconds; isoformat() omits a
    # zero fraction, and so do we. ".000000" can only be that fraction.
    text = pc.replace_substring(text, ".000000", "")
    return _concat(text, "+00:00")


def _json_strings(arr: pa.Array) -> pa.Array:
    """JSON string literals of a ``string`` array (nulls kept)."""
    quoted = _concat(_QUOTE, arr, _QUOTE)
    needs = pc.match_substring_regex(arr, _JSON_ESCAPES)
    if not pc.any(needs).as_py():
        return quoted
    mask = pc.fill_null(needs, False)
    values = arr.filter(mask).to_pylist()
    fixed = pa.array([json.dumps(v, ensure_ascii=False) for v in values], pa.string())
    return pc.replace_with_mask(quoted, mask, fixed)


def _json_floats(arr: pa.Array) -> pa.Array:
    """JSON numbers of a floating-point array, formatted as :func:`json.dumps` does."""
    if not pa.types.is_float64(arr.type):
        arr = arr.cast(pa.float64())
    text = arr.cast(pa.string())
    # Arrow and Python both write the shortest round-tripping digits but choose between
    # fixed and exponent notation differently. Where Python uses fixed notation (magnitude
    # in [1e-4, 1e16), or zero) and Arrow did too, only a missing ".0" differs; every other
    # value (exponents, NaN, infinities) is formatted by Python. Those are rare in
    # biodiversity data: coordinates, elevations and depths are all in the fast range.
    magnitude = pc.abs(arr)
    python_fixed = pc.or_(
        pc.and_(pc.greater_equal(magnitude, 1e-4), pc.less(magnitude, 1e16)),
        pc.equal(arr, 0.0),
    )
    arrow_fixed = pc.invert(pc.match_substring(text, "e"))
    fast = pc.fill_null(pc.and_(python_fixed, arrow_fixed), False)
    integral = pc.and_(fast, pc.invert(pc.match_substring(text, ".")))
    text = pc.if_else(integral, _concat(text, ".0"), text)
    slow = pc.and_(pc.invert(fast), arr.is_valid())
    if pc.any(slow).as_py():
        values = arr.filter(slow).to_pylist()
        fixed = pa.array([json.dumps(v) for v in values], pa.string())
        text = pc.replace_with_mask(text, slow, fixed)
    return text


def _json_lists(arr: pa.Array) -> pa.Array:
    """JSON arrays of a list array (nulls kept)."""
    if pa.types.is_list_view(arr.type) or pa.types.is_large_list_view(arr.type):
        arr = arr.cast(pa.large_list(arr.type.value_type))
    flat = arr.flatten()
    lengths = pc.fill_null(pc.list_value_length(arr), 0).cast(pa.int64())
    offsets = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(lengths.to_numpy(zero_copy_only=False), out=offsets[1:])
    try:
        items = json_texts(flat)
    except CellError as err:
        parent = int(np.searchsorted(offsets, err.row, side="right")) - 1
        raise CellError(parent, f"has a list item that {err.reason}") from None
    items = pc.fill_null(items, "null")
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), items, mask=arr.is_null())
    return _concat("[", pc.binary_join(lists, ", "), "]")


def _json_structs(arr: pa.Array) -> pa.Array:
    """JSON objects of a struct array, fields in schema order (``lat`` before ``lon``)."""
    t = arr.type
    names = [t.field(i).name for i in range(t.num_fields)]
    children = dict(zip(names, arr.flatten(), strict=True))
    if sorted(names) == ["lat", "lon"]:
        names = ["lat", "lon"]
    parts: list[pa.Array] = []
    for name in names:
        try:
            text = json_texts(children[name])
        except CellError as err:
            raise CellError(err.row, f"has a field {name!r} that {err.reason}") from None
        key = json.dumps(name, ensure_ascii=False) + ": "
        parts.append(_concat(key, pc.fill_null(text, "null")))
    if parts:
        body = pc.binary_join_element_wise(*parts, pa.scalar(", ", pa.string()))
        objects = _concat("{", body, "}")
    else:
        objects = pa.array(["{}"] * len(arr), pa.string())
    return pc.if_else(arr.is_valid(), objects, pa.scalar(None, pa.string()))


def json_texts(arr: pa.Array) -> pa.Array:
    """The JSON text of every value of ``arr`` as a ``string`` array; nulls stay null."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return json_texts(arr.dictionary_decode())
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string())
    if _is_string_like(t):
        return _json_strings(utf8(arr))
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_decimal(t):
        return arr.cast(pa.string())
    if pa.types.is_floating(t):
        return _json_floats(arr)
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return _json_strings(text_values(arr))
    if _is_list_like(t):
        return _json_lists(arr)
    if pa.types.is_struct(t):
        return _json_structs(arr)
    raise CellError(_first_valid(arr), f"has the type {t}, which has no text form here")


def _first_valid(arr: pa.Array) -> int:
    index = _first_true(arr.is_valid())
    return max(index, 0)


def text_values(arr: pa.Array) -> pa.Array:
    """The cell text of every value of ``arr`` (before quoting); nulls stay null.

    Strings as they are, timestamps/dates/times as ISO text, everything else as JSON.
    """
    t = arr.type
    if pa.types.is_dictionary(t):
        return text_values(arr.dictionary_decode())
    if _is_string_like(t):
        return utf8(arr)
    if pa.types.is_timestamp(t):
        return _iso_timestamps(arr)
    if pa.types.is_date(t) or pa.types.is_time(t):
        return arr.cast(pa.string())
    return json_texts(arr)


def quote_cells(text: pa.Array, delimiter: str) -> pa.Array:
    """RFC 4180 cells of a ``string`` array: quoted where needed, nulls as empty cells."""
    needs = pc.match_substring_regex(text, _needs_quotes_pattern(delimiter))
    if pc.any(needs).as_py():
        quoted = _concat(_QUOTE, pc.replace_substring(text, '"', '""'), _QUOTE)
        text = pc.if_else(pc.fill_null(needs, False), quoted, text)
    return pc.fill_null(text, "")


def _needs_quotes_pattern(delimiter: str) -> str:
    return "[" + ("\\t" if delimiter == "\t" else delimiter) + '"\\r\\n]'


def quote_text(value: str, delimiter: str) -> str:
    """One RFC 4180 cell for a Python string (used for header lines)."""
    if any(c in value for c in (delimiter, '"', "\r", "\n")):
        return '"' + value.replace('"', '""') + '"'
    return value


def header_line(headers: list[str], delimiter: str) -> bytes:
    """The header line of a data file, ``\\n``-terminated UTF-8."""
    line = delimiter.join(quote_text(h, delimiter) for h in headers)
    if len(headers) == 1 and line == "":
        line = '""'
    return (line + "\n").encode("utf-8")


class RowsError(Exception):
    """A value of column ``column`` at row ``row`` cannot be written (see :class:`CellError`)."""

    def __init__(self, row: int, column: int, reason: str) -> None:
        super().__init__(reason)
        self.row = row
        self.column = column
        self.reason = reason


def encode_rows(columns: list[pa.Array], delimiter: str) -> pa.Array:
    """The rows of a batch as one ``string`` array, each value a whole ``\\n``-ended line.

    The returned array's data buffer, between its first and last offset, is exactly the
    bytes to write (see :func:`row_bytes`).
    """
    cells: list[pa.Array] = []
    for index, arr in enumerate(columns):
        try:
            cells.append(quote_cells(text_values(arr), delimiter))
        except CellError as err:
            raise RowsError(err.row, index, err.reason) from None
    if len(cells) == 1:
        # A row made of one empty cell would be a blank line, which readers skip.
        only = cells[0]
        cells[0] = pc.if_else(pc.equal(only, ""), pa.scalar('""', pa.string()), only)
    cells[-1] = _concat(cells[-1], "\n")
    if len(cells) == 1:
        return cells[0]
    return pc.binary_join_element_wise(*cells, pa.scalar(delimiter, pa.string()))


def row_bytes(rows: pa.Array) -> Any:
    """A zero-copy buffer (memoryview) of the bytes of a non-null ``string`` array."""
    if len(rows) == 0:
        return memoryview(b"")
    buffers = rows.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32)
    start = int(offsets[rows.offset])
    end = int(offsets[rows.offset + len(rows)])
    return memoryview(buffers[2])[start:end]
