"""Loading Darwin Core Archives and synthetic records into the embedded record store.

The store is ``<data-dir>/records.duckdb`` (schema in ``docs/architecture.md``). Ingest works
in two phases so that readers (the service's worker processes) are locked out only briefly:

1. Derive: the verbatim tables are registered in a private in-memory DuckDB and every index
   field is computed there in bulk (:mod:`downloader.ingest.derive`), with no lock on the store.
2. Write: the store file is attached read-write (retrying while readers hold it, then failing
   with a clear message) and, in one transaction, the recordset's old rows are replaced by
   the new ones, removed record uuids are noted in ``deleted_records``, the ``recordsets``
   row gets the next version, and ``store_meta.data_version`` goes up by one.

Each archive is its own transaction: one bad archive does not undo the others. Record uuids
are uuid5 over the recordset id and the record's core id (else occurrenceID, else its row
position), so ingesting the same archive again keeps every uuid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from downloader.errors import DownloaderError
from downloader.ingest.derive import (
    EVENT_DATE,
    Columns,
    date_sql,
    dqs_values,
    fulltext_tokens,
    media_select,
    parse_loose_date,
    quote_ident,
    record_select,
    uuid5_hash_sql,
    uuid_from_hash_sql,
)
from downloader.ingest.read import (
    ID_COLUMN,
    ROW_COLUMN,
    ArchiveRejected,
    VerbatimArchive,
    read_archive,
)
from query.fields import RecordType, fields
from query.sql import DUCKDB_TYPES

STORE_FILENAME = "records.duckdb"
#: Rows per Arrow record batch handed to DuckDB (one batch is one unit of parallel work).
_SCAN_BATCH_ROWS = 65_536


class IngestError(DownloaderError):
    """An ingest could not be done; the message says which archive and why."""


class StoreLocked(IngestError):
    """The store file stayed locked by other processes for longer than the timeout."""


@dataclass(frozen=True)
class IngestResult:
    """What one ingested archive (or synthetic batch) became."""

    recordset: str
    version: int
    records: int
    media: int
    name: str
    source: str
    deleted: int


def store_path(data_dir: str | Path) -> Path:
    """The record store file inside ``data_dir``."""
    return Path(data_dir) / STORE_FILENAME


def schema_sql(prefix: str = "") -> list[str]:
    """CREATE TABLE IF NOT EXISTS statements for the store's tables (catalogue-driven)."""

    def columns(rtype: RecordType) -> str:
        return ", ".join(f"{quote_ident(f.name)} {DUCKDB_TYPES[f.kind]}" for f in fields(rtype))

    return [
        f"CREATE TABLE IF NOT EXISTS {prefix}records ({columns('records')}, "
        "data JSON, fulltext VARCHAR[])",
        f"CREATE TABLE IF NOT EXISTS {prefix}mediarecords (coreid VARCHAR, "
        f"{columns('mediarecords')}, data JSON, fulltext VARCHAR[])",
        f"CREATE TABLE IF NOT EXISTS {prefix}recordsets (recordset VARCHAR, version BIGINT, "
        "name VARCHAR, source VARCHAR, ingested_at TIMESTAMP, record_count BIGINT, "
        "media_count BIGINT, eml VARCHAR, record_terms VARCHAR[], media_terms VARCHAR[])",
        f"CREATE TABLE IF NOT EXISTS {prefix}store_meta (key VARCHAR, value VARCHAR)",
        f"CREATE TABLE IF NOT EXISTS {prefix}deleted_records (uuid VARCHAR, recordset VARCHAR, "
        "deleted_at TIMESTAMP, rtype VARCHAR)",
    ]


# --- phase 1: derive --------------------------------------------------------------------------


def _in_row_order(table: pa.Table) -> pa.Table:
    """``table`` sorted by ``_row`` (readers and the generator already give that order)."""
    rows = np.asarray(table[ROW_COLUMN])
    if rows.size and bool(np.any(rows[1:] < rows[:-1])):
        return table.sort_by(ROW_COLUMN)
    return table


def _computed(table: pa.Table, rtype: RecordType) -> dict[str, pa.Array]:
    """The columns computed in Arrow rather than SQL (faster there): ``_dqs``, ``_fulltext``."""
    return {"_dqs": dqs_values(table, rtype), "_fulltext": fulltext_tokens(table)}


def _extend(table: pa.Table, columns: pa.Table, computed: dict[str, pa.Array]) -> pa.Table:
    """``table`` with the row-aligned ``columns`` and ``computed`` arrays appended."""
    for name, column in zip(columns.column_names, columns.columns, strict=True):
        table = table.append_column(name, column)
    for name, array in computed.items():
        table = table.append_column(name, array)
    # DuckDB scans a registered Arrow table one record batch per thread: a table made of
    # one huge chunk would be derived on a single core.
    return pa.Table.from_batches(table.to_batches(max_chunksize=_SCAN_BATCH_ROWS), table.schema)


def _stage_keys(
    con: duckdb.DuckDBPyConnection,
    archive: VerbatimArchive,
    core_computed: Future[dict[str, pa.Array]],
    media_computed: Future[dict[str, pa.Array]] | None,
) -> None:
    """Register core_k / media_k: the verbatim tables with record keys, uuids, media
    parents and the Arrow-computed columns appended.

    Only the narrow key columns go through DuckDB (and back, in ``_row`` order); the wide
    verbatim columns stay in Arrow and are scanned once, by the final SELECT. Copying them
    into a temp table and dragging them through the key window cost more than the rest.
    """
    core = _in_row_order(archive.core)
    con.register("core_v", core)
    core_cols = Columns(core.column_names, alias="c")
    occ = core_cols.term("dwc:occurrenceID")
    record_hash = uuid5_hash_sql("$recordset || '\\' || _key")
    keys = con.sql(
        f"""
        WITH k AS (
            SELECT c.{ROW_COLUMN}, coalesce(nullif(trim(c.{ID_COLUMN}), ''), {occ},
                                           'row:' || c.{ROW_COLUMN}) AS _k0
            FROM core_v AS c
        ), n AS (
            SELECT *, row_number() OVER (PARTITION BY _k0 ORDER BY {ROW_COLUMN}) AS _n FROM k
        ), keyed AS (
            SELECT {ROW_COLUMN}, _k0 || CASE WHEN _n > 1 THEN '#' || _n ELSE '' END AS _key
            FROM n
        )
        SELECT _key, {uuid_from_hash_sql("_h")} AS _uuid
        FROM (SELECT *, {record_hash} AS _h FROM keyed) ORDER BY {ROW_COLUMN}
        """,
        params={"recordset": archive.recordset_id},
    ).to_arrow_table()
    con.register("core_k", _extend(core, keys, core_computed.result()))
    if archive.media is None or media_computed is None:
        return
    media = _in_row_order(archive.media)
    con.register("media_v", media)
    media_cols = Columns(media.column_names, alias="m")
    locator = media_cols.term("ac:accessURI", "dcterms:identifier", "dc:identifier")
    sep = "'\\'"
    media_hash = uuid5_hash_sql("'media\\' || $recordset || '\\' || _key")
    keys = con.sql(
        f"""
        WITH parents AS (
            SELECT {ID_COLUMN} AS _pid, min(_uuid) AS _parent FROM core_k
            WHERE {ID_COLUMN} IS NOT NULL GROUP BY {ID_COLUMN}
        ), k AS (
            SELECT m.{ROW_COLUMN}, p._parent,
                   coalesce(m.{ID_COLUMN}, '') || {sep} ||
                   coalesce({locator}, 'row:' || m.{ROW_COLUMN}) AS _k0
            FROM media_v AS m LEFT JOIN parents AS p ON p._pid = m.{ID_COLUMN}
        ), n AS (
            SELECT *, row_number() OVER (PARTITION BY _k0 ORDER BY {ROW_COLUMN}) AS _n FROM k
        ), keyed AS (
            SELECT {ROW_COLUMN}, _parent,
                   _k0 || CASE WHEN _n > 1 THEN '#' || _n ELSE '' END AS _key
            FROM n
        )
        SELECT _key, _parent, {uuid_from_hash_sql("_h")} AS _uuid
        FROM (SELECT *, {media_hash} AS _h FROM keyed) ORDER BY {ROW_COLUMN}
        """,
        params={"recordset": archive.recordset_id},
    ).to_arrow_table()
    con.register("media_k", _extend(media, keys, media_computed.result()))


def _stage_datemap(con: duckdb.DuckDBPyConnection, columns: Sequence[str]) -> str | None:
    """Register dateutil's readings of eventDate texts the SQL patterns miss; the view name."""
    if EVENT_DATE not in columns:
        return None
    cols = Columns(columns, alias="c")
    event = cols.term(EVENT_DATE)
    rows = con.execute(
        f"SELECT DISTINCT {event} FROM core_k AS c "
        f"WHERE {event} IS NOT NULL AND ({date_sql(event)}) IS NULL"
    ).fetchall()
    raws = [r[0] for r in rows]
    parsed = [parse_loose_date(r) for r in raws]
    table = pa.table(
        {"_raw": pa.array(raws, pa.string()), "_parsed": pa.array(parsed, pa.timestamp("us"))}
    )
    con.register("datemap_v", table)
    return "datemap_v"


def derive(
    con: duckdb.DuckDBPyConnection, archive: VerbatimArchive, *, now: datetime
) -> tuple[int, int]:
    """Compute ``records_d`` and ``media_d`` temp tables (store columns, by name) in ``con``
    from an archive's verbatim tables. Returns (record count, media count)."""
    # Rows need no particular order in the store (readers keep whatever row order it has);
    # letting DuckDB drop insertion order makes the bulk copies cheaper.
    con.execute("SET preserve_insertion_order = false")
    # Tokenising runs in Arrow and numpy, which release the GIL: do it on a second thread
    # while DuckDB computes the keys and uuids.
    with ThreadPoolExecutor(max_workers=1) as pool:
        core_computed = pool.submit(_computed, archive.core, "records")
        media_computed = (
            pool.submit(_computed, archive.media, "mediarecords")
            if archive.media is not None
            else None
        )
        _stage_keys(con, archive, core_computed, media_computed)
    params = {"recordset": archive.recordset_id, "version": 0, "now": now}
    media_agg = None
    if archive.media is not None:
        _run(
            con,
            "CREATE TEMP TABLE media_d AS "
            + media_select(archive.media.column_names, source="media_k"),
            params,
        )
        con.execute(
            "CREATE TEMP TABLE media_agg AS SELECT coreid AS _parent, "
            "list(uuid ORDER BY uuid) AS _media, bool_or(mediatype = 'images') AS _has_image "
            "FROM media_d WHERE coreid IS NOT NULL GROUP BY coreid"
        )
        media_agg = "media_agg"
    datemap = _stage_datemap(con, archive.core.column_names)
    _run(
        con,
        "CREATE TEMP TABLE records_d AS "
        + record_select(
            archive.core.column_names,
            source="core_k",
            media_agg=media_agg,
            datemap=datemap,
        ),
        params,
    )
    n_records = _scalar(con, "SELECT count(*) FROM records_d")
    n_media = _scalar(con, "SELECT count(*) FROM media_d") if archive.media is not None else 0
    return n_records, n_media


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> None:
    """Execute ``sql``; of a dict of named ``params`` only those it names are passed (DuckDB
    refuses unused ones)."""
    if isinstance(params, dict):
        params = {k: v for k, v in params.items() if f"${k}" in sql}
    con.execute(sql, params)


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> Any:
    if isinstance(params, dict):
        params = {k: v for k, v in params.items() if f"${k}" in sql}
    row = con.execute(sql, params).fetchone()
    return row[0] if row else None


def _terms(table: pa.Table | None) -> list[str]:
    if table is None:
        return []
    return sorted(
        name
        for name, column in zip(table.column_names, table.columns, strict=True)
        if not name.startswith("_") and column.null_count < len(column)
    )


# --- phase 2: write ---------------------------------------------------------------------------


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("could not set" in text or "conflicting" in text)


@contextmanager
def attached_store(
    con: duckdb.DuckDBPyConnection, path: Path, *, lock_timeout: float
) -> Iterator[None]:
    """Attach the store read-write as ``store`` (creating it and its tables), retrying while
    another process holds the file, and detach afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + lock_timeout
    delay = 0.05
    while True:
        try:
            con.execute(f"ATTACH {_sql_string(str(path))} AS store")
            break
        except duckdb.Error as exc:
            if not _is_lock_error(exc):
                raise IngestError(f"cannot open the record store {path}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise StoreLocked(
                    f"the record store {path} is in use by another process (a running "
                    f"service or ingest) and stayed locked for {lock_timeout:.0f} s; "
                    "try again when it is idle"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        for stmt in schema_sql("store."):
            con.execute(stmt)
        yield
    finally:
        con.execute("DETACH store")


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def write_recordset(
    con: duckdb.DuckDBPyConnection,
    archive: VerbatimArchive,
    *,
    now: datetime,
    counts: tuple[int, int],
) -> IngestResult:
    """Replace the recordset in the attached store (see :func:`attached_store`) by the
    ``records_d``/``media_d`` tables :func:`derive` made, in one transaction."""
    rs = archive.recordset_id
    con.execute("BEGIN TRANSACTION")
    try:
        version = (
            _scalar(
                con,
                "SELECT coalesce(max(version), 0) + 1 FROM store.recordsets WHERE recordset = ?",
                [rs],
            )
            or 1
        )
        p = {"rs": rs, "now": now}
        new_media = "media_d" if archive.media is not None else "(SELECT NULL AS uuid)"
        deleted = _scalar(
            con,
            "SELECT count(*) FROM store.records WHERE recordset = $rs "
            "AND uuid NOT IN (SELECT uuid FROM records_d)",
            p,
        )
        _run(
            con,
            "INSERT INTO store.deleted_records SELECT uuid, recordset, $now, 'records' "
            "FROM store.records WHERE recordset = $rs AND uuid NOT IN (SELECT uuid FROM records_d)",
            p,
        )
        _run(
            con,
            "INSERT INTO store.deleted_records SELECT uuid, recordset, $now, 'mediarecords' "
            "FROM store.mediarecords WHERE recordset = $rs AND uuid NOT IN "
            f"(SELECT uuid FROM {new_media})",
            p,
        )
        # An unchanged record (same etag) keeps its datemodified, so incremental consumers
        # see only what really changed.
        _run(
            con,
            "INSERT INTO store.records BY NAME SELECT d.* REPLACE ("
            "CASE WHEN old.etag = d.etag THEN old.datemodified ELSE d.datemodified END "
            "AS datemodified, $version AS version) FROM records_d AS d LEFT JOIN "
            "(SELECT uuid, etag, datemodified FROM store.records WHERE recordset = $rs) AS old "
            "ON old.uuid = d.uuid",
            {"rs": rs, "version": version},
        )
        if archive.media is not None:
            _run(
                con,
                "INSERT INTO store.mediarecords BY NAME SELECT d.* REPLACE ("
                "CASE WHEN old.etag = d.etag THEN old.datemodified ELSE d.datemodified END "
                "AS datemodified, $version AS version) FROM media_d AS d LEFT JOIN "
                "(SELECT uuid, etag, datemodified FROM store.mediarecords "
                "WHERE recordset = $rs) AS old ON old.uuid = d.uuid",
                {"rs": rs, "version": version},
            )
        for table in ("records", "mediarecords"):
            _run(
                con,
                f"DELETE FROM store.{table} WHERE recordset = $rs AND version <> $version",
                {"rs": rs, "version": version},
            )
        _run(con, "DELETE FROM store.deleted_records WHERE uuid IN (SELECT uuid FROM records_d)")
        _run(con, "DELETE FROM store.recordsets WHERE recordset = ?", [rs])
        _run(
            con,
            "INSERT INTO store.recordsets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                rs,
                version,
                archive.name,
                archive.source,
                now,
                counts[0],
                counts[1],
                archive.eml,
                _terms(archive.core),
                _terms(archive.media),
            ],
        )
        bump_data_version(con, prefix="store.")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return IngestResult(
        recordset=rs,
        version=int(version),
        records=counts[0],
        media=counts[1],
        name=archive.name,
        source=archive.source,
        deleted=int(deleted or 0),
    )


def bump_data_version(con: duckdb.DuckDBPyConnection, *, prefix: str = "") -> int:
    """Increase ``store_meta.data_version`` by one (inside the caller's transaction)."""
    current = _scalar(
        con, f"SELECT max(CAST(value AS BIGINT)) FROM {prefix}store_meta WHERE key = 'data_version'"
    )
    new = int(current or 0) + 1
    con.execute(f"DELETE FROM {prefix}store_meta WHERE key = 'data_version'")
    con.execute(f"INSERT INTO {prefix}store_meta VALUES ('data_version', ?)", [str(new)])
    return new


# --- public entry points ----------------------------------------------------------------------


def ingest_verbatim(
    data_dir: str | Path,
    archive: VerbatimArchive,
    *,
    lock_timeout: float = 60.0,
    now: datetime | None = None,
) -> IngestResult:
    """Derive and write one verbatim archive (read from a DwC-A or generated) as a recordset,
    replacing that recordset's previous version."""
    when = (now or datetime.now(UTC)).replace(tzinfo=None)
    con = duckdb.connect(":memory:")
    try:
        counts = derive(con, archive, now=when)
        with attached_store(con, store_path(data_dir), lock_timeout=lock_timeout):
            return write_recordset(con, archive, now=when, counts=counts)
    except duckdb.Error as exc:
        raise IngestError(f"{archive.source}: ingest failed: {exc}") from exc
    finally:
        con.close()


def ingest_archive(
    data_dir: str | Path,
    path: str | Path,
    *,
    recordset: str | None = None,
    lock_timeout: float = 60.0,
) -> IngestResult:
    """Read a Darwin Core Archive (zip or folder) and load it as a recordset.

    Raises :class:`downloader.ingest.read.ArchiveRejected` for an archive that is not an
    Occurrence-core DwC-A, :class:`StoreLocked` when the store stays busy.
    """
    return ingest_verbatim(
        data_dir, read_archive(path, recordset_id=recordset), lock_timeout=lock_timeout
    )


def ingest_synthetic(
    data_dir: str | Path,
    count: int,
    *,
    seed: int = 0,
    recordset: str | None = None,
    lock_timeout: float = 60.0,
) -> IngestResult:
    """Generate ``count`` synthetic records (deterministic for ``seed``) and load them."""
    from downloader.ingest.synthetic import synthetic_archive

    archive = synthetic_archive(count, seed=seed, recordset_id=recordset)
    return ingest_verbatim(data_dir, archive, lock_timeout=lock_timeout)


def stored_record_count(data_dir: str | Path) -> int:
    """How many records the store holds (0 when it does not exist yet)."""
    path = store_path(data_dir)
    if not path.exists():
        return 0
    from downloader.sources.duckdb import DuckDBSource

    return DuckDBSource(path).total_records()


def ingest_paths(
    data_dir: str | Path,
    paths: Sequence[str | Path],
    *,
    recordset: str | None = None,
    lock_timeout: float = 60.0,
    on_result: Callable[[IngestResult], None] | None = None,
    on_error: Callable[[str, Exception], None] | None = None,
) -> tuple[list[IngestResult], list[tuple[str, Exception]]]:
    """Ingest several archives, each in its own transaction; a rejected archive is reported
    through ``on_error`` and the others still load. Returns (results, failures)."""
    if recordset is not None and len(paths) > 1:
        raise IngestError("--recordset names one recordset, so give exactly one archive with it")
    results: list[IngestResult] = []
    failures: list[tuple[str, Exception]] = []
    for path in paths:
        try:
            result = ingest_archive(data_dir, path, recordset=recordset, lock_timeout=lock_timeout)
        except (ArchiveRejected, IngestError) as exc:
            failures.append((str(path), exc))
            if on_error:
                on_error(str(path), exc)
            continue
        results.append(result)
        if on_result:
            on_result(result)
    return results, failures


# The CLI formats ingest summaries with this; it lives here so tests can check the wording.
def describe(result: IngestResult) -> str:
    """One line a user reads after an archive was loaded."""
    removed = f", {result.deleted} removed since the last version" if result.deleted else ""
    return (
        f"recordset {result.recordset} version {result.version}: {result.records} records, "
        f"{result.media} media records{removed} ({result.source})"
    )


__all__ = [
    "ROW_COLUMN",
    "IngestError",
    "IngestResult",
    "StoreLocked",
    "describe",
    "ingest_archive",
    "ingest_paths",
    "ingest_synthetic",
    "ingest_verbatim",
    "schema_sql",
    "store_path",
    "stored_record_count",
    "write_recordset",
]
