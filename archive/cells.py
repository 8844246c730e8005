r"""Turning Arrow columns into CSV/TSV cells and rows, a whole batch at a time.

The rules (docs/architecture.md, "Batches between a source and the archive writer"):

- strings are written as they are;
- timestamps as ISO 8601 in UTC with ``+00:00`` (``2020-01-02T03:04:05+00:00``, microseconds
  only when not zero, as :meth:`datetime.isoformat` does; naive timestamps are UTC), dates as
  ``YYYY-MM-DD``;
- booleans, numbers, lists and structs as JSON text, exactly as :func:`json.dumps` writes
  them except that non-ASCII characters are kept as UTF-8 rather than ``\uXXXX`` escapes
  (``true``, ``2.0``, ``1e-05``, ``["a", "b"]``, ``{"lat": 1.5, "lon": 2.0}``; a struct of
  ``lat`` and ``lon`` always puts ``lat`` first; NaN and infinities as ``NaN``/``Infinity``
  like :func:`json.dumps`);
- nulls as empty cells;
- RFC 4180 quoting: a cell is enclosed in ``"`` (with inner quotes doubled) when it contains
  the delimiter, a quote, CR or LF; rows end with ``\n``; UTF-8 without BOM.

Two implementations write the same bytes (:data:`ROW_JOIN`):

- ``"c"`` (where ``archive/_rows.c`` was built): strings, lists of strings and timestamps go
  to C as their Arrow buffers; other types become text with the Arrow kernels below; the C
  pass formats, quotes and joins the rows without the GIL.
- ``"arrow"``: everything runs as Arrow compute kernels and numpy passes over whole columns;
  cells that need quoting are found by scanning each column's data buffer once, and rows are
  assembled by one element-wise join per batch, in which a run of all-empty columns (common
  in verbatim files) counts as one argument.

In both, Python only touches the rare values Arrow does not format the way
:func:`json.dumps` does (JSON strings with quotes, backslashes or control characters;
floats Arrow writes with an exponent).

A value that cannot be written (invalid UTF-8, an Arrow type with no text form) raises
:class:`CellError` with its row index; :func:`encode_rows` adds the column index.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_compiled: ModuleType | None
try:
    from archive import _rows as _compiled
except ImportError:  # built where no C compiler was at hand (see setup.py)
    _compiled = None

#: Which row join :func:`encode_rows` uses: ``"c"`` (:mod:`archive._rows`) where it was
#: built, else ``"arrow"`` (Arrow kernels); both write the same bytes.
ROW_JOIN = "c" if _compiled is not None else "arrow"

#: The separator for element-wise concatenation without a separator.
_EMPTY = pa.scalar("", pa.string())
_QUOTE = pa.scalar('"', pa.string())
_NEWLINE = pa.scalar("\n", pa.string())


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
    if not pa.types.is_string(arr.type):
        try:
            arr = arr.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise _first_bad_utf8(arr) or CellError(0, f"cannot be read as text: {exc}") from None
        return arr
    # Casting the bytes back to string makes Arrow check every value: as fast as decoding
    # the data buffer with codecs was, without holding the GIL or copying into a Python str.
    try:
        arr.view(pa.binary()).cast(pa.string())
    except pa.ArrowInvalid:
        raise _first_bad_utf8(arr) or CellError(0, "is not valid UTF-8 text") from None
    return arr


def _first_bad_utf8(arr: pa.Array) -> CellError | None:
    """The error for the first value of ``arr`` that is not UTF-8 (slow; failures only)."""
    for i, value in enumerate(arr.cast(pa.binary()).to_pylist()):
        if value is None:
            continue
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as bad:
            return CellError(i, f"is not valid UTF-8 text ({bad.reason})")
    return None


def _without_nulls(arr: pa.Array) -> pa.Array:
    """A ``string`` array with nulls as empty strings.

    Null slots almost always already have zero length, so dropping the validity bitmap is
    enough (no copy); otherwise the nulls are filled.
    """
    if arr.null_count == 0:
        return arr
    offsets, _ = string_parts(arr)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    if np.any(np.diff(offsets)[~valid]):
        return pc.fill_null(arr, "")
    _, offsets_buffer, data_buffer = arr.buffers()
    return pa.StringArray.from_buffers(len(arr), offsets_buffer, data_buffer, None, 0, arr.offset)


def _iso_timestamps(arr: pa.Array) -> pa.Array:
    """ISO 8601 text of a timestamp array, in UTC with ``+00:00``."""
    t = arr.type
    # Dropping the zone keeps the UTC instants (Arrow stores UTC); nanoseconds are cut to
    # microseconds, the finest unit ISO text from Python carries.
    if t.tz is not None or t.unit != "us":
        arr = arr.cast(pa.timestamp("us"), safe=False)
    # The cast writes "2020-01-02 03:04:05.000120"; isoformat() puts a "T" in the middle and
    # omits a zero fraction, and so do we. ".000000" can only be that fraction.
    text = pc.replace_substring(arr.cast(pa.string()), " ", "T", max_replacements=1)
    text = pc.replace_substring(text, ".000000", "")
    return _concat(text, "+00:00")


def string_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The offsets and data bytes of a ``string`` array (views, no copy)."""
    _, offsets_buffer, data_buffer = arr.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    if data_buffer is None:
        return offsets, np.zeros(0, dtype=np.uint8)
    return offsets, np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]


def _rows_where(arr: pa.Array, hit: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
    """Which values of a ``string`` array hold a byte for which ``hit`` is true.

    None when no value does, the common case, found with a few vectorised comparisons over
    the data buffer rather than a pattern match per value. Nulls are never selected.
    """
    if len(arr) == 0:
        return None
    offsets, data = string_parts(arr)
    hits = np.flatnonzero(hit(data))
    if hits.size == 0:
        return None
    # A value holds a hit when hits fall between its start and end offsets.
    mask = np.diff(np.searchsorted(hits, offsets - offsets[0])) > 0
    if arr.null_count:
        mask &= arr.is_valid().to_numpy(zero_copy_only=False)
    return mask


def _json_special(data: np.ndarray) -> np.ndarray:
    """Bytes a JSON string literal must escape: control characters, quote, backslash."""
    return (data < 0x20) | (data == 0x22) | (data == 0x5C)


def _is_exponent(data: np.ndarray) -> np.ndarray:
    return data == 0x65  # "e"


def _csv_special(delimiter: str) -> Callable[[np.ndarray], np.ndarray]:
    """Bytes that make a cell need quoting: the delimiter, quote, CR, LF."""
    code = ord(delimiter)

    def hit(data: np.ndarray) -> np.ndarray:
        return (data == code) | (data == 0x22) | (data == 0x0A) | (data == 0x0D)

    return hit


def _json_csv_special(delimiter: str) -> Callable[[np.ndarray], np.ndarray]:
    """Bytes that make a JSON cell need quoting.

    JSON text never holds a raw CR, LF or tab (json.dumps escapes them), so a JSON cell
    needs quoting exactly when it holds a quote or the delimiter.
    """
    code = ord(delimiter)

    def hit(data: np.ndarray) -> np.ndarray:
        return (data == code) | (data == 0x22)

    return hit


def _requote(text: str, quote: str) -> str:
    return text if quote == '"' else text.replace('"', quote)


def _enclose_rows(text: pa.Array, rows: np.ndarray, *, double: bool) -> pa.Array:
    """``text`` with the values selected by ``rows`` enclosed in quotes; nulls stay null.

    With ``double`` their inner quotes are doubled (RFC 4180); without, the caller wrote
    them doubled already. Only the selected values are touched.
    """
    if not double and int(rows.sum()) == len(text) - text.null_count:
        return _concat(_QUOTE, text, _QUOTE)
    selected = pa.array(rows)
    if not double:
        # One pass: each value between a per-row quote that is '"' or empty.
        quotes = pc.if_else(selected, _QUOTE, _EMPTY)
        return pc.binary_join_element_wise(quotes, text, quotes, _EMPTY)
    part = text.filter(selected)
    if double:
        part = pc.replace_substring(part, '"', '""')
    return pc.replace_with_mask(text, selected, _concat(_QUOTE, part, _QUOTE))


def _json_strings(arr: pa.Array, quote: str) -> pa.Array:
    """JSON string literals of a ``string`` array (nulls kept), quotes written as ``quote``."""
    quoted = _concat(quote, arr, quote)
    rows = _rows_where(arr, _json_special)
    if rows is None:
        return quoted
    selected = pa.array(rows)
    return pc.replace_with_mask(quoted, selected, _escaped(arr.filter(selected), quote))


#: The short escapes :func:`json.dumps` writes; other control characters become ``\u00XX``.
_SHORT_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}


def _escaped(arr: pa.Array, quote: str) -> pa.Array:
    """JSON string literals of a non-null ``string`` array, escaped as :func:`json.dumps`
    (``ensure_ascii=False``) escapes them: backslash, quote and control characters; every
    other character, non-ASCII included, as it is. One replacement kernel per distinct
    character to escape, over these values only."""
    text = pc.replace_substring(arr, "\\", "\\\\")
    text = pc.replace_substring(text, '"', "\\" + quote)
    _, data = string_parts(arr)
    for code in np.unique(data[data < 0x20]).tolist():
        escape = _SHORT_ESCAPES.get(code, f"\\u{code:04x}")
        text = pc.replace_substring(text, chr(code), escape)
    return _concat(quote, text, quote)


def _json_floats(arr: pa.Array) -> pa.Array:
    """JSON numbers of a floating-point array, formatted as :func:`json.dumps` does."""
    if not pa.types.is_float64(arr.type):
        arr = arr.cast(pa.float64())
    text = arr.cast(pa.string())
    # Arrow and Python both write the shortest round-tripping digits but choose between
    # fixed and exponent notation differently. Where Python uses fixed notation (magnitude
    # in [1e-4, 1e16), or zero) and Arrow did too (no "e" in its text), only the ".0" Python
    # adds to whole numbers differs; every other value (exponents, NaN, infinities) is
    # formatted by Python. Those are rare in biodiversity data: coordinates, elevations and
    # depths all take the fast path.
    values = arr.to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        magnitude = np.abs(values)
        fast = ((magnitude >= 1e-4) & (magnitude < 1e16)) | (values == 0)
        whole = fast & (values == np.floor(values))
    exponent = _rows_where(text, _is_exponent)
    if exponent is not None:
        fast &= ~exponent
        whole &= fast
    if whole.any():
        selected = pa.array(whole)
        text = pc.replace_with_mask(text, selected, _concat(text.filter(selected), ".0"))
    slow = ~fast
    if arr.null_count:
        slow &= arr.is_valid().to_numpy(zero_copy_only=False)
    if slow.any():
        selected = pa.array(slow)
        fixed = [json.dumps(v) for v in arr.filter(selected).to_pylist()]
        text = pc.replace_with_mask(text, selected, pa.array(fixed, pa.string()))
    return text


def _json_lists(arr: pa.Array, quote: str) -> pa.Array:
    """JSON arrays of a list array (nulls kept)."""
    fast = _plain_string_list_text(arr, quote=quote, enclose=False)
    if fast is not None:
        return fast
    if pa.types.is_list_view(arr.type) or pa.types.is_large_list_view(arr.type):
        arr = arr.cast(pa.large_list(arr.type.value_type))
    flat = arr.flatten()
    lengths = pc.fill_null(pc.list_value_length(arr), 0).cast(pa.int64())
    offsets = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(lengths.to_numpy(zero_copy_only=False), out=offsets[1:])
    try:
        items = json_texts(flat, quote=quote)
    except CellError as err:
        parent = int(np.searchsorted(offsets, err.row, side="right")) - 1
        raise CellError(parent, f"has a list item that {err.reason}") from None
    if items.null_count:
        items = pc.fill_null(items, "null")
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), items, mask=arr.is_null())
    return _concat("[", pc.binary_join(lists, ", "), "]")


def _json_structs(arr: pa.Array, quote: str) -> pa.Array:
    """JSON objects of a struct array, fields in schema order (``lat`` before ``lon``)."""
    t = arr.type
    names = [t.field(i).name for i in range(t.num_fields)]
    if not names:
        empty = pa.array(["{}"] * len(arr), pa.string())
        return pc.if_else(arr.is_valid(), empty, pa.scalar(None, pa.string()))
    children = dict(zip(names, arr.flatten(), strict=True))
    if sorted(names) == ["lat", "lon"]:
        names = ["lat", "lon"]
    parts: list[pa.Array | pa.Scalar] = []
    for position, name in enumerate(names):
        try:
            text = json_texts(children[name], quote=quote)
        except CellError as err:
            raise CellError(err.row, f"has a field {name!r} that {err.reason}") from None
        if text.null_count:
            text = pc.fill_null(text, "null")
        key = _requote(json.dumps(name, ensure_ascii=False), quote)
        parts += [pa.scalar(("{" if position == 0 else ", ") + key + ": ", pa.string()), text]
    parts.append(pa.scalar("}", pa.string()))
    # One kernel call builds every object.
    objects = pc.binary_join_element_wise(*parts, _EMPTY)
    if arr.null_count:
        objects = pc.if_else(arr.is_valid(), objects, pa.scalar(None, pa.string()))
    return objects


def json_texts(arr: pa.Array, *, quote: str = '"') -> pa.Array:
    """The JSON text of every value of ``arr`` as a ``string`` array; nulls stay null.

    ``quote`` is written for every quotation mark of the JSON text: ``'""'`` gives text
    ready to sit inside a quoted CSV cell.
    """
    t = arr.type
    if pa.types.is_dictionary(t):
        return json_texts(arr.dictionary_decode(), quote=quote)
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string())
    if _is_string_like(t):
        return _json_strings(utf8(arr), quote)
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_decimal(t):
        return arr.cast(pa.string())
    if pa.types.is_floating(t):
        return _json_floats(arr)
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return _json_strings(_plain_text(arr), quote)
    if _is_list_like(t):
        return _json_lists(arr, quote)
    if pa.types.is_struct(t):
        return _json_structs(arr, quote)
    raise CellError(_first_valid(arr), f"has the type {t}, which has no text form here")


def _first_valid(arr: pa.Array) -> int:
    return max(_first_true(arr.is_valid()), 0)


def _plain_text(arr: pa.Array) -> pa.Array:
    """ISO text of timestamps, dates and times."""
    if pa.types.is_timestamp(arr.type):
        return _iso_timestamps(arr)
    return arr.cast(pa.string())


def _is_plain(t: pa.DataType) -> bool:
    """Types whose text (digits, signs, dots, colons, "e", "T", "NaN") never needs quoting."""
    return (
        pa.types.is_timestamp(t)
        or pa.types.is_date(t)
        or pa.types.is_time(t)
        or pa.types.is_boolean(t)
        or pa.types.is_integer(t)
        or pa.types.is_decimal(t)
        or pa.types.is_floating(t)
        or pa.types.is_null(t)
    )


def text_values(arr: pa.Array) -> pa.Array:
    """The text of every value of ``arr`` before CSV quoting; nulls stay null.

    Strings as they are, timestamps/dates/times as ISO text, everything else as JSON.
    """
    t = arr.type
    if pa.types.is_dictionary(t):
        return text_values(arr.dictionary_decode())
    if _is_string_like(t):
        return utf8(arr)
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return _plain_text(arr)
    return json_texts(arr)


def column_cells(arr: pa.Array, delimiter: str) -> pa.Array:
    """The RFC 4180 cells of a column, quoted where needed; nulls stay null."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return column_cells(arr.dictionary_decode(), delimiter)
    if _is_string_like(t):
        text = utf8(arr)
        rows = _rows_where(text, _csv_special(delimiter))
        return text if rows is None else _enclose_rows(text, rows, double=True)
    if _is_plain(t):
        return text_values(arr)
    if delimiter not in "[]":
        fast = _plain_string_list_text(arr, quote='""', enclose=True)
        if fast is not None:
            return fast
    # Lists and structs: JSON written with doubled quotes, enclosed where needed. An object
    # with a field always holds a quoted key, so every one is enclosed without looking.
    text = json_texts(arr, quote='""')
    if pa.types.is_struct(t) and t.num_fields:
        return _enclose_rows(text, arr.is_valid().to_numpy(zero_copy_only=False), double=False)
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_string_like(t.value_type):
        rows = _string_list_rows_to_enclose(arr, text, delimiter)
    else:
        rows = _rows_where(text, _json_csv_special(delimiter))
    return text if rows is None else _enclose_rows(text, rows, double=False)


def _plain_string_list_text(arr: pa.Array, *, quote: str, enclose: bool) -> pa.Array | None:
    """The JSON text of a list-of-strings column whose items hold no null, quote or control
    character (the usual case: record ids, media ids, flags), in a few kernel calls over
    the whole column; None when any item needs more (the general path handles it). Nulls
    stay null.

    ``quote`` is written for each quotation mark (``'""'`` for text inside a quoted cell).
    With ``enclose`` a non-empty list is enclosed in quotes, as its CSV cell always is
    (its text holds quotes); an empty list is ``[]`` either way. Backslashes (in every
    iDigBio record id) are the one escape done here: the separator and brackets hold none,
    so doubling them in the joined text escapes exactly the items' backslashes.
    """
    if not (pa.types.is_list(arr.type) and pa.types.is_string(arr.type.value_type)):
        return None
    flat = arr.flatten()
    if flat.null_count:
        return None
    try:
        flat = utf8(flat)
    except CellError:
        return None  # the general path names the row
    _, data = string_parts(flat)
    if np.any((data < 0x20) | (data == 0x22)):
        return None
    joined = pc.binary_join(arr, pa.scalar(quote + ", " + quote, pa.string()))
    if np.any(data == 0x5C):
        joined = pc.replace_substring(joined, "\\", "\\\\")
    outer = '"' if enclose else ""
    text = _concat(outer + "[" + quote, joined, quote + "]" + outer)
    empty = pc.equal(pc.list_value_length(arr), 0)
    if pc.any(empty).as_py():
        text = pc.if_else(empty, _EMPTY_LIST, text)
    return text


_EMPTY_LIST = pa.scalar("[]", pa.string())


def _string_list_rows_to_enclose(
    arr: pa.Array, text: pa.Array, delimiter: str
) -> np.ndarray | None:
    """Which JSON texts of a list-of-strings column need enclosing in quotes.

    A list holding a non-null string holds a quote in its JSON text, so it is enclosed
    without looking at the text; only lists with no such item (``[]``, ``[null, null]``,
    rare) have their text scanned for the delimiter.
    """
    flat = arr.flatten()
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    seen = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum(flat.is_valid().to_numpy(zero_copy_only=False), out=seen[1:])
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    rows = valid & (seen[offsets[1:]] > seen[offsets[:-1]])
    others = valid & ~rows
    if others.any():
        picked = pa.array(others)
        found = _rows_where(text.filter(picked), _json_csv_special(delimiter))
        if found is not None:
            rows[np.flatnonzero(others)[found]] = True
    return rows if rows.any() else None


def quote_text(value: str, delimiter: str) -> str:
    """One RFC 4180 cell for a Python string (used for header lines)."""
    if any(c in value for c in (delimiter, '"', "\r", "\n")):
        return '"' + value.replace('"', '""') + '"'
    return value


def header_line(headers: list[str], delimiter: str) -> bytes:
    r"""The header line of a data file, ``\n``-terminated UTF-8."""
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


def encode_rows(columns: list[pa.Array], delimiter: str) -> bytes | memoryview:
    r"""The rows of a batch as the bytes to write: each row a ``\n``-ended line of cells.

    Uses the C row join (:mod:`archive._rows`) where it was built, else the Arrow one;
    both write the same bytes (:data:`ROW_JOIN` says which is in use).
    """
    if ROW_JOIN == "c" and delimiter not in '"[]\\\n\r' and delimiter.isascii():
        return _encode_rows_c(columns, delimiter)
    return _row_bytes(_encode_rows_arrow(columns, delimiter))


def _encode_rows_c(columns: list[pa.Array], delimiter: str) -> bytes:
    """:func:`encode_rows` by :mod:`archive._rows`: strings, lists of strings and timestamps
    are handed over as their Arrow buffers; other types as their text (:func:`text_values`).
    """
    assert _compiled is not None
    n = len(columns[0]) if columns else 0
    parts: list[tuple[Any, ...] | None] = []
    for index, arr in enumerate(columns):
        if arr.null_count == len(arr):
            parts.append(None)
            continue
        try:
            parts.append(_c_column(arr))
        except CellError as err:
            raise RowsError(err.row, index, err.reason) from None
    try:
        return _compiled.encode(parts, n, delimiter)
    except UnicodeError as err:
        if len(err.args) != 3 or err.args[0] != "invalid UTF-8":
            raise
        _, index, row = err.args
    # The C pass found a cell that is not UTF-8; Arrow's check names what is wrong.
    try:
        text_values(columns[index])
    except CellError as err:
        raise RowsError(err.row, index, err.reason) from None
    raise RowsError(row, index, "is not valid UTF-8 text")


#: Microseconds since 1970 of 0001-01-01T00:00:00 and 9999-12-31T23:59:59.999999, the
#: instants ISO text of four-digit years can write.
_FIRST_MICROS = -62_135_596_800_000_000
_LAST_MICROS = 253_402_300_799_999_999


def _validity(arr: pa.Array) -> tuple[Any, int]:
    return (arr.buffers()[0] if arr.null_count else None), arr.offset


def _c_text(text: pa.Array) -> tuple[Any, ...]:
    assert _compiled is not None
    offsets, data = string_parts(text)
    return (_compiled.TEXT, offsets, data, *_validity(text))


def _c_column(arr: pa.Array) -> tuple[Any, ...]:
    """The description of a column that :func:`archive._rows.encode` takes."""
    assert _compiled is not None
    t = arr.type
    if pa.types.is_dictionary(t):
        return _c_column(arr.dictionary_decode())
    if pa.types.is_timestamp(t):
        micros = arr.cast(pa.timestamp("us"), safe=False) if t.tz or t.unit != "us" else arr
        values = micros.view(pa.int64())
        low, high = pc.min_max(values).values()
        if low.as_py() >= _FIRST_MICROS and high.as_py() <= _LAST_MICROS:
            data = np.frombuffer(values.buffers()[1], dtype=np.int64)
            window = data[values.offset : values.offset + len(values)]
            return (_compiled.TIME, window, *_validity(values))
    elif pa.types.is_list(t) and pa.types.is_string(t.value_type):
        # The C pass checks that the items (and the strings below) are UTF-8.
        items = arr.values
        item_offsets, item_data = string_parts(items)
        return (
            _compiled.LIST,
            arr.offsets.to_numpy(),
            *_validity(arr),
            item_offsets,
            item_data,
            *_validity(items),
        )
    elif pa.types.is_string(t):
        return _c_text(arr)
    return _c_text(text_values(arr))


def _encode_rows_arrow(columns: list[pa.Array], delimiter: str) -> pa.Array:
    r"""The rows of a batch as one ``string`` array, each value a whole ``\n``-ended line.

    The returned array's data buffer, between its first and last offset, is exactly the
    bytes to write (see :func:`_row_bytes`).
    """
    n = len(columns[0]) if columns else 0
    # Each column becomes a non-null array of cells, or None when all its cells are empty
    # (common in verbatim files: most terms are unused by a given set of records).
    cells: list[pa.Array | None] = []
    for index, arr in enumerate(columns):
        if arr.null_count == len(arr):
            cells.append(None)
            continue
        try:
            text = _without_nulls(column_cells(arr, delimiter))
        except CellError as err:
            raise RowsError(err.row, index, err.reason) from None
        cells.append(text if len(text) == 0 or _has_bytes(text) else None)
    if len(cells) == 1:
        # A row made of one empty cell would be a blank line, which readers skip.
        only = cells[0] if cells[0] is not None else pa.array([""] * n, pa.string())
        cells[0] = pc.if_else(pc.equal(only, ""), pa.scalar('""', pa.string()), only)
    pieces = _collapse_empty_runs(cells, delimiter)
    arrays = [p for p in pieces if isinstance(p, pa.Array)]
    if not arrays:
        line = delimiter * (len(columns) - 1) + "\n"
        return pa.array([line] * n, pa.string())
    # The line end rides on the last piece.
    last = pieces[-1]
    if isinstance(last, pa.Array):
        pieces[-1] = pc.binary_join_element_wise(last, _NEWLINE, _EMPTY)
    else:
        pieces[-1] = last + "\n"
    if len(pieces) == 1:
        return pieces[0]
    args = [p if isinstance(p, pa.Array) else pa.scalar(p, pa.string()) for p in pieces]
    return pc.binary_join_element_wise(*args, pa.scalar(delimiter, pa.string()))


def _has_bytes(text: pa.Array) -> bool:
    offsets, _ = string_parts(text)
    return bool(offsets[-1] != offsets[0])


def _collapse_empty_runs(cells: list[pa.Array | None], delimiter: str) -> list[pa.Array | str]:
    """Replace each run of all-empty columns by one constant piece for the row join.

    A run of ``m`` empty cells between two others is ``m + 1`` delimiters, so it can be one
    constant of ``m - 1`` delimiters joined with the delimiter on both sides (at either end
    of the row, ``m`` delimiters minus the one join adds). The join then costs one argument
    per run instead of one per column.
    """
    pieces: list[pa.Array | str] = []
    run = 0
    for cell in cells:
        if cell is None:
            run += 1
            continue
        if run:
            pieces.append(delimiter * (run - 1))
            run = 0
        pieces.append(cell)
    if run:
        pieces.append(delimiter * (run - 1))
    return pieces


def _row_bytes(rows: pa.Array) -> Any:
    """A zero-copy buffer (memoryview) of the bytes of a non-null ``string`` array."""
    if len(rows) == 0:
        return memoryview(b"")
    buffers = rows.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32)
    start = int(offsets[rows.offset])
    end = int(offsets[rows.offset + len(rows)])
    return memoryview(buffers[2])[start:end]
