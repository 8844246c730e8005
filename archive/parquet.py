"""A data file as Parquet (GBIF's ``SIMPLE_PARQUET`` download): the batches' own Arrow
types kept (numbers as numbers, the point as a struct), the column headers as names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from archive.errors import ArchiveCancelled, ArchiveError
from archive.models import DataFile

#: Rows per Parquet row group (batches are gathered up to this).
ROW_GROUP_ROWS = 65_536


class _Sink:
    """A write-only file object over ``emit`` (Parquet writes front to back)."""

    def __init__(self, emit: Callable[[Any], None]) -> None:
        self._emit = emit
        self._position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._emit(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        """Nothing to flush: every write is handed on."""

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def write_parquet(
    data_file: DataFile,
    *,
    emit: Callable[[Any], None],
    on_rows: Callable[[int], None],
    should_cancel: Callable[[], bool],
) -> None:
    """Write ``data_file``'s batches as one Parquet file through ``emit``."""
    names = [c.header for c in data_file.columns]
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    pending: list[pa.RecordBatch] = []
    sink = _Sink(emit)

    def flush() -> None:
        nonlocal writer
        if not pending or schema is None:
            return
        if writer is None:
            writer = pq.ParquetWriter(sink, schema, compression="zstd")
        table = pa.Table.from_batches(pending, schema)
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        on_rows(table.num_rows)
        pending.clear()

    for batch in data_file.batches():
        if should_cancel():
            raise ArchiveCancelled(f"cancelled while writing {data_file.filename}")
        if batch.num_columns != len(names):
            raise ArchiveError(
                f"{data_file.filename}: a batch has {batch.num_columns} columns but the file "
                f"has {len(names)}",
                filename=data_file.filename,
            )
        batch = pa.RecordBatch.from_arrays(list(batch.columns), names=names)
        if schema is None:
            schema = pa.schema(
                [
                    pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type)
                    for f in batch.schema
                ]
            )
        try:
            batch = batch.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ArchiveError(
                f"{data_file.filename}: a batch's types differ from the first's ({exc})",
                filename=data_file.filename,
            ) from exc
        pending.append(batch)
        if sum(b.num_rows for b in pending) >= ROW_GROUP_ROWS:
            flush()
    if schema is None:
        schema = pa.schema([pa.field(n, pa.string()) for n in names])
    flush()
    if writer is None:
        writer = pq.ParquetWriter(sink, schema, compression="zstd")
    writer.close()
