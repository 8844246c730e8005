"""A data file as Parquet: the files of the ``parquet`` form and GBIF's ``SIMPLE_PARQUET``.

The batches' Arrow types are kept (numbers as numbers, lists as lists, the point as a
struct of ``lat``/``lon``, dates as UTC timestamps); a column whose type the plan knows
(:attr:`archive.models.Column.arrow_type`) has that type even in a file without rows (the
first batch's types are the file's; later batches are cast to them). The
column names are the CSV headers. What meta.xml says of a delimited file travels with the
Parquet file itself, so that a file taken out of its archive still says what it holds:

- each Arrow field's metadata holds ``term``, the column's term URI (columns without one,
  such as ``coreid``, have none); pyarrow and R's arrow read it from the schema;
- the file's key-value metadata (DuckDB's ``parquet_kv_metadata``, pyarrow's
  ``schema.metadata``) holds ``dwca:rowType``, ``dwca:core`` (``"true"`` for the core,
  ``"false"`` for an extension), ``dwca:id`` (the index of the id or coreid column, ``0``)
  and ``dwca:terms``, a JSON object of header to term URI.

Rows are gathered into row groups of at most :data:`ROW_GROUP_ROWS` rows or
:data:`ROW_GROUP_BYTES` bytes of Arrow data, so a build's memory does not grow with its
result; the Parquet bytes leave in pieces of about :data:`EMIT_BYTES` as they are made.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from archive.errors import ArchiveCancelled, ArchiveError
from archive.models import DataFile

#: Most rows per Parquet row group (batches are gathered up to this).
ROW_GROUP_ROWS = 65_536
#: Most bytes of Arrow data gathered for one row group (wide files reach it first). At 100k
#: records a build's peak RSS was 437 MB with 64 MiB, 423 MB with 32 and 383 MB with 16
#: (dwca-csv: 359 MB), for no clear change in time.
ROW_GROUP_BYTES = 16 * 1024 * 1024
#: Bytes of Parquet gathered before they are handed on (the writer makes many small writes).
EMIT_BYTES = 1024 * 1024
#: Compression of the column chunks (zstd reads in pandas, DuckDB, R's arrow and Spark).
COMPRESSION = "zstd"


class _Sink:
    """A write-only file object over ``emit`` (Parquet writes front to back), handing on
    about :data:`EMIT_BYTES` at a time."""

    def __init__(self, emit: Callable[[Any], None]) -> None:
        self._emit = emit
        self._position = 0
        self._buffer = bytearray()
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._buffer += view
        self._position += view.nbytes
        if len(self._buffer) >= EMIT_BYTES:
            self.flush()
        return view.nbytes

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        """Hand on what is gathered."""
        if self._buffer:
            self._emit(bytes(self._buffer))
            self._buffer.clear()

    def close(self) -> None:
        self.flush()
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def _utc(typ: pa.DataType) -> pa.DataType:
    # Timestamps in batches are naive UTC (see RecordSource.batches); say so in the file.
    if pa.types.is_timestamp(typ) and typ.tz is None:
        return pa.timestamp(typ.unit, tz="UTC")
    if pa.types.is_null(typ):
        return pa.string()
    return typ


def _schema(data_file: DataFile, first: pa.RecordBatch | None) -> pa.Schema:
    """The file's schema: each column's type in the first batch, else (no rows, or a column
    of nulls) its planned type, else a string; with its term URI, and the file's
    descriptor as key-value metadata."""
    fields = []
    for index, column in enumerate(data_file.columns):
        typ = first.schema.field(index).type if first is not None else pa.null()
        if pa.types.is_null(typ) and column.arrow_type is not None:
            typ = column.arrow_type
        metadata = {"term": column.term_uri} if column.term_uri else None
        fields.append(pa.field(column.header, _utc(typ), metadata=metadata))
    terms = {c.header: c.term_uri for c in data_file.columns if c.term_uri}
    return pa.schema(
        fields,
        metadata={
            "dwca:rowType": data_file.row_type,
            "dwca:core": "true" if data_file.core else "false",
            "dwca:id": "0",
            "dwca:terms": json.dumps(terms, ensure_ascii=False),
        },
    )


def write_parquet(
    data_file: DataFile,
    *,
    emit: Callable[[Any], None],
    on_rows: Callable[[int], None],
    should_cancel: Callable[[], bool],
) -> None:
    """Write ``data_file``'s batches as one Parquet file through ``emit``, calling
    ``on_rows`` with the rows of each row group written. A batch whose values do not fit
    the file's column types raises :class:`ArchiveError` naming the file."""
    names = [c.header for c in data_file.columns]
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    pending: list[pa.RecordBatch] = []
    pending_rows = pending_bytes = 0
    sink = _Sink(emit)

    def open_writer(schema: pa.Schema) -> pq.ParquetWriter:
        return pq.ParquetWriter(sink, schema, compression=COMPRESSION)

    def flush() -> None:
        nonlocal writer, pending_rows, pending_bytes
        if not pending or schema is None:
            return
        if writer is None:
            writer = open_writer(schema)
        table = pa.Table.from_batches(pending, schema)
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        on_rows(table.num_rows)
        pending.clear()
        pending_rows = pending_bytes = 0

    for batch in data_file.batches():
        if should_cancel():
            raise ArchiveCancelled(f"cancelled while writing {data_file.filename}")
        if batch.num_columns != len(names):
            raise ArchiveError(
                f"{data_file.filename}: a batch has {batch.num_columns} columns but the file "
                f"has {len(names)}",
                filename=data_file.filename,
            )
        if batch.num_rows == 0:
            continue
        if schema is None:
            schema = _schema(data_file, batch)
        try:
            batch = pa.RecordBatch.from_arrays(
                [
                    column.cast(field.type)
                    for column, field in zip(batch.columns, schema, strict=True)
                ],
                schema=schema,
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ArchiveError(
                f"{data_file.filename}: a batch's values do not fit the file's column types "
                f"({exc})",
                filename=data_file.filename,
            ) from exc
        pending.append(batch)
        pending_rows += batch.num_rows
        pending_bytes += batch.nbytes
        if pending_rows >= ROW_GROUP_ROWS or pending_bytes >= ROW_GROUP_BYTES:
            flush()
    if schema is None:
        schema = _schema(data_file, None)
    flush()
    if writer is None:
        writer = open_writer(schema)
    writer.close()
    sink.close()
