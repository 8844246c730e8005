"""Reading the embedded store whole, recordset by recordset, to copy it elsewhere (the search
cluster: :mod:`downloader.ingest.cluster`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import duckdb

from downloader.sources.duckdb import idle
from query.text import TOKEN_CHARS

#: Rows read from the store per batch while copying it.
DUMP_BATCH_ROWS = 5_000


class StoreDump:
    """A read-only view of ``records.duckdb`` that hands out its rows as dicts, in a stable
    order (recordsets by id, rows by uuid), with memory bounded by one batch."""

    def __init__(self, store_file: str | Path) -> None:
        # DuckDB opens a file once per process with one configuration: this process's
        # parked read connections (see .idle) give the file up first.
        idle.IDLE.drain(Path(store_file))
        self._con = duckdb.connect(str(store_file), read_only=True)

    def __enter__(self) -> StoreDump:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._con.close()

    def recordsets(self) -> list[dict[str, Any]]:
        """Every row of the ``recordsets`` table, by recordset id."""
        rows = self._con.sql("SELECT * FROM recordsets ORDER BY recordset").to_arrow_table()
        return rows.to_pylist()

    def rows(
        self, table: Literal["records", "mediarecords"], recordset: str
    ) -> Iterator[dict[str, Any]]:
        """The rows of one recordset in ``table``, by uuid; ``fulltext`` as the tokens of
        the stored text (the search cluster indexes them as a keyword list)."""
        tokens = f"regexp_extract_all(CAST(fulltext AS VARCHAR), '[{TOKEN_CHARS}]+')"
        reader = self._con.sql(
            f"SELECT * REPLACE ({tokens} AS fulltext) FROM {table} WHERE recordset = $rs "
            "ORDER BY uuid",
            params={"rs": recordset},
        ).to_arrow_reader(DUMP_BATCH_ROWS)
        for batch in reader:
            yield from batch.to_pylist()

    def extension_files(self, recordset: str) -> list[dict[str, Any]]:
        """The verbatim extensions the recordset was published with (rowtype, file, terms,
        row_count), by rowType and file."""
        try:
            table = self._con.sql(
                "SELECT rowtype, file, terms, row_count FROM extension_files "
                "WHERE recordset = $rs ORDER BY rowtype, file",
                params={"rs": recordset},
            ).to_arrow_table()
        except duckdb.CatalogException:
            return []  # a store written before extensions were kept
        return table.to_pylist()

    def extension_rows(self, recordset: str) -> Iterator[dict[str, Any]]:
        """The recordset's extension rows (rowtype, file, coreid: the record's uuid,
        position in its file, data: the verbatim values as a dict), in a stable order."""
        try:
            reader = self._con.sql(
                "SELECT rowtype, file, coreid, position, CAST(data AS VARCHAR) AS data "
                "FROM extension_rows WHERE recordset = $rs ORDER BY rowtype, file, position",
                params={"rs": recordset},
            ).to_arrow_reader(DUMP_BATCH_ROWS)
        except duckdb.CatalogException:
            return
        for batch in reader:
            for row in batch.to_pylist():
                row["data"] = json.loads(row["data"]) if row["data"] else {}
                yield row

    def deletions(self) -> Iterator[tuple[str, str, str, Any]]:
        """``(rtype, uuid, recordset, deleted_at)`` of the deletion log, a batch in memory at
        a time (nothing when the store has no log yet)."""
        try:
            reader = self._con.sql(
                "SELECT rtype, uuid, recordset, deleted_at FROM deleted_records "
                "ORDER BY rtype, uuid"
            ).to_arrow_reader(DUMP_BATCH_ROWS)
        except duckdb.CatalogException:
            return
        for batch in reader:
            for row in batch.to_pylist():
                yield row["rtype"], row["uuid"], row["recordset"], row["deleted_at"]
