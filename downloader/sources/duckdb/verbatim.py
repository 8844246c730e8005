"""Verbatim terms out of the store's ``data`` JSON objects, a batch at a time.

The DuckDB source reads ``data`` as text and splits it here, on two threads beside its
reader, into one string column per requested term (null where a record lacks the term).
:func:`split_terms` uses the C splitter of :mod:`archive._rows`, which parses the flat
objects of string values that ingest writes about twice as fast as DuckDB's
``json_transform``; a batch holding anything else (a number, a nested value, an escaped or
repeated key: nothing ingest writes) goes through ``json_transform`` on an in-memory DuckDB
connection, so the values are the same either way. Where the extension was not built, the
source does not read ``data`` as text at all: its query applies ``json_transform``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from types import ModuleType

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from archive.cells import string_parts

_compiled: ModuleType | None
try:
    from archive import _rows as _compiled
except ImportError:  # built where no C compiler was at hand (see setup.py)
    _compiled = None

#: Whether the C splitter is used (tests switch it off to check the fallback).
USE_C = _compiled is not None

_local = threading.local()


def _connection() -> duckdb.DuckDBPyConnection:
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect(config={"threads": 1})
        _local.con = con
    return con


def _json_transform(objects: pa.Array, terms: Sequence[str]) -> list[pa.Array]:
    """The general way: DuckDB's ``json_transform`` of each object to the terms as text."""
    shape = json.dumps(dict.fromkeys(terms, "VARCHAR"))
    con = _connection()
    con.register("_objects", pa.table({"data": objects}))
    try:
        result = con.sql(
            "SELECT unnest(json_transform(data, $shape)) FROM _objects", params={"shape": shape}
        ).to_arrow_table()
    finally:
        con.unregister("_objects")
    return [result.column(i).combine_chunks().cast(pa.string()) for i in range(result.num_columns)]


def split_terms(objects: pa.Array, terms: Sequence[str]) -> list[pa.Array]:
    """One ``string`` column per term, from an array of JSON object texts (null object: no
    terms). Raises ``duckdb.Error`` when a text is not JSON at all."""
    if not terms:
        return []
    if not pa.types.is_string(objects.type):
        objects = objects.cast(pa.string())
    if objects.null_count:
        objects = pc.fill_null(objects, "{}")
    if USE_C and _compiled is not None and len(objects):
        n = len(objects)
        offsets, data = string_parts(objects)
        keys = [t.encode("utf-8") for t in terms]
        parts = _compiled.split(offsets, data, keys, n)
        if parts is not None:
            return [
                pa.StringArray.from_buffers(
                    n,
                    pa.py_buffer(offs),
                    pa.py_buffer(text),
                    None if valid is None else pa.py_buffer(valid),
                    nulls,
                )
                for offs, text, valid, nulls in parts
            ]
    return _json_transform(objects, terms)


def expand(rows: pa.RecordBatch | pa.Table, column: str, terms: Sequence[str]) -> pa.Table:
    """``rows`` with the JSON column ``column`` replaced, in place, by one column per term."""
    table = pa.Table.from_batches([rows]) if isinstance(rows, pa.RecordBatch) else rows
    at = table.schema.get_field_index(column)
    chunks = table.column(at).chunks
    # combine_chunks copies even a single chunk (the usual case).
    if len(chunks) == 1:
        objects = chunks[0]
    else:
        objects = pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())
    names = table.column_names
    columns = [table.column(i) for i in range(table.num_columns)]
    split = split_terms(objects, terms)
    return pa.table(
        columns[:at] + split + columns[at + 1 :],
        names=names[:at] + list(terms) + names[at + 1 :],
    )
