"""Loading Darwin Core Archives and synthetic records into the embedded record store.

The store is ``<data-dir>/records.duckdb`` (schema in ``docs/architecture.md``). Ingest works
in two phases so that readers (the service's worker processes) are locked out only briefly:

1. Derive: the verbatim tables are registered in a private in-memory DuckDB and every index
   field is computed there in bulk (:mod:`downloader.ingest.derive`), with no lock on the store.
2. Write: the store file is attached read-write (retrying while readers hold it, then failing
   with a clear message) and, in one transaction, the recordset's (or an iDigBio dump's
   recordsets') old rows are replaced by the new ones, removed record uuids are noted in
   ``deleted_records``, the ``recordsets`` row gets the next version, and
   ``store_meta.data_version`` goes up by one.

Each archive is its own transaction: one bad archive does not undo the others. Record uuids
are uuid5 over the recordset id and the record's core id (else occurrenceID, else its row
position), so ingesting the same archive again keeps every uuid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from downloader.errors import DownloaderError
from downloader.ingest.derive import (
    EVENT_DATE,
    Columns,
    date_sql,
    dqs_sql,
    fulltext_sql,
    json_object_sql,
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
    open_archive,
)
from downloader.ingest.stage import (
    RECORDSET_COLUMN,
    Phases,
    Progress,
    StagedArchive,
    stage_archive,
    stage_tables,
)
from downloader.sources.duckdb import idle
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
    #: Other extensions kept: (file stem, rows).
    extensions: tuple[tuple[str, int], ...] = ()
    #: Malformed rows skipped under ``skip_bad_rows``: (file, rows).
    skipped: tuple[tuple[str, int], ...] = ()
    warnings: tuple[str, ...] = ()


def store_path(data_dir: str | Path) -> Path:
    """The record store file inside ``data_dir``."""
    return Path(data_dir) / STORE_FILENAME


def schema_sql(prefix: str = "") -> list[str]:
    """CREATE TABLE IF NOT EXISTS statements for the store's tables (catalogue-driven)."""

    def columns(rtype: RecordType) -> str:
        return ", ".join(f"{quote_ident(f.name)} {DUCKDB_TYPES[f.kind]}" for f in fields(rtype))

    return [
        f"CREATE TABLE IF NOT EXISTS {prefix}records ({columns('records')}, "
        "data JSON, fulltext VARCHAR)",
        f"CREATE TABLE IF NOT EXISTS {prefix}mediarecords (coreid VARCHAR, "
        f"{columns('mediarecords')}, data JSON, fulltext VARCHAR)",
        f"CREATE TABLE IF NOT EXISTS {prefix}recordsets (recordset VARCHAR, version BIGINT, "
        "name VARCHAR, source VARCHAR, ingested_at TIMESTAMP, record_count BIGINT, "
        "media_count BIGINT, eml VARCHAR, record_terms VARCHAR[], media_terms VARCHAR[])",
        f"CREATE TABLE IF NOT EXISTS {prefix}store_meta (key VARCHAR, value VARCHAR)",
        f"CREATE TABLE IF NOT EXISTS {prefix}deleted_records (uuid VARCHAR, recordset VARCHAR, "
        "deleted_at TIMESTAMP, rtype VARCHAR)",
        # Extensions other than media, kept verbatim with the record they belong to.
        f"CREATE TABLE IF NOT EXISTS {prefix}extension_rows (recordset VARCHAR, "
        "rowtype VARCHAR, file VARCHAR, coreid VARCHAR, position BIGINT, data JSON)",
        f"CREATE TABLE IF NOT EXISTS {prefix}extension_files (recordset VARCHAR, "
        "rowtype VARCHAR, file VARCHAR, terms VARCHAR[], row_count BIGINT)",
    ]


# --- phase 1: derive --------------------------------------------------------------------------


def _repeated_keys(con: duckdb.DuckDBPyConnection, table: str, keys: str) -> None:
    """``table``: (``_row``, ``_n``) of the rows of ``keys`` (a query giving ``_grp``,
    ``_row`` and the key ``_k0``) whose key an earlier row of their recordset has (``_n``
    > 1: the n-th row with that key). Repeats are rare, so the rows are first narrowed to
    those whose key hash repeats (a hash aggregate of 8 bytes a row, spilling past the
    memory limit) and only those are numbered; numbering every row (a window over all of
    them) spilled and took minutes at 5M records."""
    con.execute(
        f"""
        CREATE TABLE {table} AS
        WITH k AS ({keys}), repeated AS (
            SELECT hash(_grp, _k0) AS _h FROM k GROUP BY 1 HAVING count(*) > 1
        )
        SELECT {ROW_COLUMN}, _n FROM (
            SELECT {ROW_COLUMN},
                   row_number() OVER (PARTITION BY _grp, _k0 ORDER BY {ROW_COLUMN}) AS _n
            FROM k WHERE hash(_grp, _k0) IN (SELECT _h FROM repeated)
        ) WHERE _n > 1
        """
    )


def _stage_keys(con: duckdb.DuckDBPyConnection, has_media: bool, *, has_extensions: bool) -> None:
    """Views ``core_k`` / ``media_k``: every staged row with its record key (``_key``) and
    uuid (``_uuid``) per recordset (``_grp``), media with their parent record's uuid
    (``_parent``); computed where they are read (the final INSERT reads them once), not
    stored. A key that repeats in a recordset gets ``#n`` from its second row on (the small
    tables ``core_rep``/``media_rep``). ``parents`` (recordset and core id to record uuid)
    only when media or extension rows need it (a core alone is spared the grouping)."""
    core_cols = Columns(_view_columns(con, "core_v"), alias="c")
    occ = core_cols.term("dwc:occurrenceID")
    k0 = f"coalesce(nullif(trim(c._kid), ''), {occ}, 'row:' || c.{ROW_COLUMN})"
    _repeated_keys(con, "core_rep", f"SELECT c._grp, c.{ROW_COLUMN}, {k0} AS _k0 FROM core_v AS c")
    record_hash = uuid5_hash_sql("_grp || '\\' || _key")
    con.execute(
        f"""
        CREATE VIEW core_k AS
        SELECT * EXCLUDE (_h, _given), coalesce(_given, {uuid_from_hash_sql("_h")}) AS _uuid
        FROM (
            SELECT *, {record_hash} AS _h FROM (
                SELECT c.*, CASE WHEN r._n IS NULL THEN c._given_uuid END AS _given,
                       {k0} || CASE WHEN r._n IS NOT NULL THEN '#' || r._n ELSE '' END AS _key
                FROM core_v AS c LEFT JOIN core_rep AS r ON r.{ROW_COLUMN} = c.{ROW_COLUMN}
            )
        )
        """
    )
    if not (has_media or has_extensions):
        return
    con.execute(
        f"CREATE TABLE parents AS SELECT _grp, {ID_COLUMN} AS _pid, min(_uuid) AS _parent "
        f"FROM core_k WHERE {ID_COLUMN} IS NOT NULL GROUP BY _grp, {ID_COLUMN}"
    )
    if not has_media:
        return
    media_cols = Columns(_view_columns(con, "media_v"), alias="m")
    locator = media_cols.term("ac:accessURI", "dcterms:identifier", "dc:identifier")
    sep = "'\\'"
    m_k0 = f"coalesce(m.{ID_COLUMN}, '') || {sep} || coalesce({locator}, 'row:' || m.{ROW_COLUMN})"
    _repeated_keys(
        con, "media_rep", f"SELECT m._grp, m.{ROW_COLUMN}, {m_k0} AS _k0 FROM media_v AS m"
    )
    media_hash = uuid5_hash_sql("'media\\' || _grp || '\\' || _key")
    con.execute(
        f"""
        CREATE VIEW media_k AS
        SELECT * EXCLUDE (_h), {uuid_from_hash_sql("_h")} AS _uuid FROM (
            SELECT *, {media_hash} AS _h FROM (
                SELECT m.*, p._parent,
                       {m_k0} || CASE WHEN r._n IS NOT NULL THEN '#' || r._n ELSE '' END AS _key
                FROM media_v AS m
                LEFT JOIN media_rep AS r ON r.{ROW_COLUMN} = m.{ROW_COLUMN}
                LEFT JOIN parents AS p ON p._grp = m._grp AND p._pid = m.{ID_COLUMN}
            )
        )
        """
    )


def _view_columns(con: duckdb.DuckDBPyConnection, view: str) -> list[str]:
    return [row[0] for row in con.execute(f"DESCRIBE {view}").fetchall()]


def _stage_datemap(con: duckdb.DuckDBPyConnection, columns: Sequence[str]) -> str | None:
    """Register dateutil's readings of eventDate texts the SQL patterns miss; the view name."""
    if EVENT_DATE not in columns:
        return None
    cols = Columns(columns, alias="c")
    event = cols.term(EVENT_DATE)
    # The patterns run on the distinct texts only (dates repeat a lot).
    rows = con.execute(
        f"SELECT _e FROM (SELECT DISTINCT {event} AS _e FROM core_v AS c) "
        f"WHERE _e IS NOT NULL AND ({date_sql('_e')}) IS NULL"
    ).fetchall()
    raws = [r[0] for r in rows]
    parsed = [parse_loose_date(r) for r in raws]
    table = pa.table(
        {"_raw": pa.array(raws, pa.string()), "_parsed": pa.array(parsed, pa.timestamp("us"))}
    )
    con.register("datemap_v", table)
    return "datemap_v"


def _filled_terms(
    con: duckdb.DuckDBPyConnection, view: str, terms: Sequence[str]
) -> dict[str, tuple[int, list[str]]]:
    """Per recordset (``_grp``) of ``view``: (its rows, the terms some row fills in, sorted)."""
    counts = ", ".join(["count(*)", *(f"count({quote_ident(t)})" for t in terms)])
    out = {}
    for grp, rows, *filled in con.execute(
        f"SELECT _grp, {counts} FROM {view} GROUP BY _grp"
    ).fetchall():
        out[grp] = (int(rows), sorted(t for t, n in zip(terms, filled, strict=True) if n))
    return out


@dataclass
class DerivedRecordset:
    """One recordset's share of what :func:`derive` made."""

    records: int
    media: int
    record_terms: list[str]
    media_terms: list[str] | None  # None: the archive has no media
    extensions: list[tuple[str, str, list[str], int]]  # (rowType, file stem, terms, rows)


@dataclass
class Derived:
    """What :func:`derive` left in the staging database for :func:`write_recordsets`: the
    recordsets, in order, each with its counts."""

    recordsets: dict[str, DerivedRecordset]


def derive(
    con: duckdb.DuckDBPyConnection,
    staged: StagedArchive,
    *,
    now: datetime,
    recordsets: Sequence[str] | None = None,
) -> Derived:
    """Compute the ``records_d``, ``media_d`` and ``extensions_d`` tables (store columns, by
    name) in the staging database from its verbatim views (see :mod:`.stage`), whose
    ``_grp`` column names each row's recordset (see :func:`group_rows`): every recordset of
    an archive in one pass. ``recordsets`` lists them in order (default: the staged
    archive's own)."""
    # Rows need no particular order in the store (readers keep whatever row order it has);
    # letting DuckDB drop insertion order makes the bulk copies cheaper.
    con.execute("SET preserve_insertion_order = false")
    has_media = staged.media_terms is not None
    core_terms = staged.core_terms
    media_terms = staged.media_terms or []
    _stage_keys(con, has_media, has_extensions=bool(staged.extensions))
    params = {"now": now}
    media_agg = None
    if has_media:
        cols = Columns(media_terms, alias="v")
        con.execute(
            "CREATE VIEW media_kx AS SELECT v.*, "
            f"{fulltext_sql(cols, media_terms)} AS _fulltext, "
            f"{dqs_sql(cols, 'mediarecords')} AS _dqs FROM media_k AS v"
        )
        _run(
            con,
            "CREATE TABLE media_d AS " + media_select(staged.media_terms or [], source="media_kx"),
            params,
        )
        con.execute(
            "CREATE TABLE media_agg AS SELECT coreid AS _parent, "
            "list(uuid ORDER BY uuid) AS _media, bool_or(mediatype = 'images') AS _has_image "
            "FROM media_d WHERE coreid IS NOT NULL GROUP BY coreid"
        )
        media_agg = "media_agg"
    datemap = _stage_datemap(con, core_terms)
    cols = Columns(core_terms, alias="v")
    con.execute(
        "CREATE VIEW core_kx AS SELECT v.*, "
        f"{fulltext_sql(cols, core_terms)} AS _fulltext, {dqs_sql(cols, 'records')} AS _dqs "
        "FROM core_k AS v"
    )
    # A view: the records are derived once, by the INSERT into the store.
    select = record_select(core_terms, source="core_kx", media_agg=media_agg, datemap=datemap)
    con.execute("CREATE VIEW records_d AS " + _bind(select, params))
    extensions = _derive_extensions(con, staged)
    records = _filled_terms(con, "core_v", core_terms)
    media = _filled_terms(con, "media_v", media_terms) if has_media else {}
    out = {}
    for rs in recordsets or [staged.recordset_id]:
        n_records, record_terms = records.get(rs, (0, []))
        n_media, filled_media = media.get(rs, (0, []))
        out[rs] = DerivedRecordset(
            records=n_records,
            media=n_media,
            record_terms=record_terms,
            media_terms=filled_media if has_media else None,
            extensions=[
                (rowtype, name, per_rs.get(rs, (0, []))[1], per_rs.get(rs, (0, []))[0])
                for rowtype, name, per_rs in extensions
            ],
        )
    return Derived(recordsets=out)


def _derive_extensions(
    con: duckdb.DuckDBPyConnection, staged: StagedArchive
) -> list[tuple[str, str, dict[str, tuple[int, list[str]]]]]:
    """``extensions_d``: every other extension's rows as verbatim JSON, each with its
    recordset and the uuid of the record it belongs to (NULL when its core id matches no
    record of that recordset). Returns (rowType, file stem, per recordset: (rows, terms
    filled in)) per extension."""
    con.execute(
        "CREATE TABLE extensions_d (recordset VARCHAR, rowtype VARCHAR, file VARCHAR, "
        "coreid VARCHAR, position BIGINT, data JSON)"
    )
    out = []
    for ext in staged.extensions:
        cols = Columns(ext.terms, alias="e")
        con.execute(
            "INSERT INTO extensions_d SELECT e._grp, $rowtype, $file, p._parent, "
            f"e.{ROW_COLUMN}, ({json_object_sql(cols, sorted(ext.terms))})::JSON "
            f"FROM {ext.table} AS e "
            f"LEFT JOIN parents AS p ON p._grp = e._grp AND p._pid = e.{ID_COLUMN}",
            {"rowtype": ext.spec.row_type, "file": ext.spec.name},
        )
        out.append((ext.spec.row_type, ext.spec.name, _filled_terms(con, ext.table, ext.terms)))
    return out


def _bind(sql: str, params: dict[str, Any]) -> str:
    """``sql`` with its named parameters written in as literals (a view cannot take them);
    only for the values ingest itself makes: the recordset id, version 0 and the time."""
    for name, value in sorted(params.items(), key=lambda kv: -len(kv[0])):
        if isinstance(value, datetime):
            literal = f"TIMESTAMP {_sql_string(value.isoformat(sep=' '))}"
        elif isinstance(value, int):
            literal = str(value)
        else:
            literal = _sql_string(str(value))
        sql = sql.replace(f"${name}", literal)
    return sql


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
    # The marker tells the service's processes to give their idle connections up at once
    # (see downloader.sources.duckdb.idle); this process's own are closed here.
    with idle.waiting_writer(path):
        idle.IDLE.drain(path)
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
            _migrate_fulltext(con)
            yield
        finally:
            con.execute("DETACH store")


def _migrate_fulltext(con: duckdb.DuckDBPyConnection) -> None:
    """A store written before ``fulltext`` was text holds token lists there: each becomes
    its tokens joined by spaces, which the token-boundary match of ``query.sql`` reads
    alike (readers of an unmigrated store still get the same answers, more slowly)."""
    lists = con.execute(
        "SELECT table_name FROM duckdb_columns() WHERE database_name = 'store' "
        "AND schema_name = 'main' AND column_name = 'fulltext' AND data_type = 'VARCHAR[]'"
    ).fetchall()
    for (table,) in lists:
        con.execute(
            f"ALTER TABLE store.{table} ALTER COLUMN fulltext SET DATA TYPE VARCHAR "
            "USING nullif(array_to_string(fulltext, ' '), '')"
        )


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def write_recordsets(
    con: duckdb.DuckDBPyConnection,
    staged: StagedArchive,
    derived: Derived,
    *,
    now: datetime,
) -> list[IngestResult]:
    """Replace the derived recordsets in the attached store (see :func:`attached_store`) by
    the ``records_d``/``media_d``/``extensions_d`` tables :func:`derive` made, each as its
    next version, in one transaction: a failure or a kill before COMMIT leaves every
    previous version whole. An iDigBio dump's recordsets are written together, so their
    number costs next to nothing (one transaction each took a fixed part of a second)."""
    names = list(derived.recordsets)
    has_media = staged.media_terms is not None
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE new_versions (recordset VARCHAR, version BIGINT)")
        con.executemany("INSERT INTO new_versions VALUES (?, 0)", [[rs] for rs in names])
        con.execute(
            "UPDATE new_versions AS n SET version = coalesce(("
            "SELECT max(r.version) FROM store.recordsets AS r WHERE r.recordset = n.recordset"
            "), 0) + 1"
        )
        versions = dict(con.execute("SELECT recordset, version FROM new_versions").fetchall())
        ours = "recordset IN (SELECT recordset FROM new_versions)"
        # What the new versions no longer hold goes to the deletion log. A first version
        # has nothing before it: its uuids (computed where core_k is read) are not needed.
        con.execute(
            "CREATE OR REPLACE TEMP TABLE gone (uuid VARCHAR, recordset VARCHAR, rtype VARCHAR)"
        )
        if _scalar(con, f"SELECT EXISTS (SELECT 1 FROM store.records WHERE {ours})"):
            con.execute(
                "INSERT INTO gone SELECT o.uuid, o.recordset, 'records' FROM store.records AS o "
                "ANTI JOIN core_k AS k ON k._grp = o.recordset AND k._uuid = o.uuid "
                f"WHERE o.{ours}"
            )
        new_media = "media_d" if has_media else "(SELECT NULL AS uuid, NULL AS recordset)"
        con.execute(
            "INSERT INTO gone SELECT o.uuid, o.recordset, 'mediarecords' "
            f"FROM store.mediarecords AS o ANTI JOIN {new_media} AS m "
            f"ON m.recordset = o.recordset AND m.uuid = o.uuid WHERE o.{ours}"
        )
        deleted = dict(
            con.execute(
                "SELECT recordset, count(*) FROM gone WHERE rtype = 'records' GROUP BY 1"
            ).fetchall()
        )
        _run(
            con,
            "INSERT INTO store.deleted_records SELECT uuid, recordset, $now, rtype FROM gone",
            {"now": now},
        )
        _insert_versions(con, "records", "records_d", versions)
        if has_media:
            _insert_versions(con, "mediarecords", "media_d", versions)
        for table in ("records", "mediarecords"):
            con.execute(
                f"DELETE FROM store.{table} AS t USING new_versions AS n "
                "WHERE t.recordset = n.recordset AND t.version <> n.version"
            )
        # Records and media that come back leave the deletion log (read from the store's
        # new versions, so a first ingest computes no uuid twice).
        if _scalar(con, "SELECT EXISTS (SELECT 1 FROM store.deleted_records)"):
            for table in ("records", "mediarecords"):
                con.execute(
                    f"DELETE FROM store.deleted_records WHERE rtype = '{table}' AND uuid IN "
                    f"(SELECT uuid FROM store.{table} WHERE {ours})"
                )
        for table in ("extension_rows", "extension_files", "recordsets"):
            con.execute(f"DELETE FROM store.{table} WHERE {ours}")
        con.execute(
            "INSERT INTO store.extension_rows SELECT recordset, rowtype, file, coreid, "
            "position, data FROM extensions_d"
        )
        files = [
            [rs, rowtype, name, terms, count]
            for rs, d in derived.recordsets.items()
            for rowtype, name, terms, count in d.extensions
        ]
        if files:
            con.executemany("INSERT INTO store.extension_files VALUES (?, ?, ?, ?, ?)", files)
        con.executemany(
            "INSERT INTO store.recordsets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                [
                    rs,
                    versions[rs],
                    staged.name,
                    staged.source,
                    now,
                    d.records,
                    d.media,
                    staged.eml,
                    d.record_terms,
                    d.media_terms or [],
                ]
                for rs, d in derived.recordsets.items()
            ],
        )
        bump_data_version(con, prefix="store.")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.execute("DROP TABLE IF EXISTS gone")
    # The archive's warnings and skipped rows are told once, with its first recordset.
    return [
        IngestResult(
            recordset=rs,
            version=int(versions[rs]),
            records=d.records,
            media=d.media,
            name=staged.name,
            source=staged.source,
            deleted=int(deleted.get(rs, 0)),
            extensions=tuple((name, rows) for _, name, _, rows in d.extensions),
            skipped=tuple(staged.skipped) if i == 0 else (),
            warnings=tuple(staged.warnings) if i == 0 else (),
        )
        for i, (rs, d) in enumerate(derived.recordsets.items())
    ]


def _insert_versions(
    con: duckdb.DuckDBPyConnection, table: str, derived: str, versions: dict[str, int]
) -> None:
    """Insert the derived rows of ``derived`` into ``store.<table>``, each as its recordset's
    new version (``new_versions``).

    An unchanged row (same uuid and etag as in the previous version) keeps its
    datemodified, so incremental consumers see only what really changed. When none of the
    recordsets has rows yet (a first ingest) there is nothing to keep and the rows go in
    without that join: joined, DuckDB ran the whole insert, derivation included, on one
    thread (35 s against 15 s for a million records on two cores). A re-ingest joins
    against the previous versions' (uuid, etag, datemodified) copied into the staging
    database first, which measured faster than joining the store's table in the same
    statement."""
    if len(versions) == 1:
        # One recordset (any archive but an iDigBio dump): its version as a constant.
        version, new_versions = f"{int(next(iter(versions.values())))}", ""
    else:
        version = "n.version"
        new_versions = " JOIN new_versions AS n ON n.recordset = d.recordset"
    ours = "recordset IN (SELECT recordset FROM new_versions)"
    if not _scalar(con, f"SELECT EXISTS (SELECT 1 FROM store.{table} WHERE {ours})"):
        con.execute(
            f"INSERT INTO store.{table} BY NAME SELECT d.* REPLACE ({version} AS version) "
            f"FROM {derived} AS d{new_versions}"
        )
        return
    con.execute(
        "CREATE OR REPLACE TEMP TABLE previous_etags AS SELECT uuid, recordset, etag, "
        f"datemodified FROM store.{table} WHERE {ours}"
    )
    try:
        con.execute(
            f"INSERT INTO store.{table} BY NAME SELECT d.* REPLACE ("
            "CASE WHEN old.etag = d.etag THEN old.datemodified ELSE d.datemodified END "
            f"AS datemodified, {version} AS version) FROM {derived} AS d{new_versions} "
            "LEFT JOIN previous_etags AS old ON old.uuid = d.uuid AND old.recordset = d.recordset"
        )
    finally:
        con.execute("DROP TABLE IF EXISTS previous_etags")


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

#: DuckDB's memory for one ingest: it spills to the staging folder beyond this, so peak
#: memory stays flat whatever the archive's size.
STAGING_MEMORY = "512MB"


def _remove_stale_staging(root: Path) -> None:
    """Remove the staging folders of ingests that were killed (their process is gone)."""
    for folder in root.glob(".ingest-*"):
        try:
            pid = int((folder / "pid").read_text())
        except (OSError, ValueError):
            pid = 0
        if pid <= 0:
            with contextlib.suppress(OSError):
                if folder.stat().st_mtime > time.time() - 60:
                    continue  # just made; its pid file is on its way
        else:
            try:
                os.kill(pid, 0)
                continue  # still running
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def staging(data_dir: str | Path) -> Iterator[tuple[duckdb.DuckDBPyConnection, Path]]:
    """A private DuckDB database (in memory, spilling to a fresh folder beside the store),
    removed afterwards."""
    root = Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(root)
    workdir = Path(tempfile.mkdtemp(prefix=".ingest-", dir=root))
    (workdir / "pid").write_text(str(os.getpid()))
    files = workdir / "files"
    files.mkdir()
    # In memory up to STAGING_MEMORY, then spilled to the folder: a recordset of any size
    # stages without filling either memory or (with compression) much disk.
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET memory_limit = '{STAGING_MEMORY}'")
        con.execute(f"SET temp_directory = {_sql_string(str(workdir / 'spill'))}")
        con.execute("SET preserve_insertion_order = true")
        yield con, files
    finally:
        con.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _derive_and_write(
    con: duckdb.DuckDBPyConnection,
    data_dir: str | Path,
    staged: StagedArchive,
    *,
    lock_timeout: float,
    now: datetime | None,
    phases: Phases,
    split: bool = False,
) -> list[IngestResult]:
    """Derive the staged archive and write it as new versions of the recordsets it holds
    (one unless ``split``, see :func:`group_rows`; the store attached for the write only),
    DuckDB's errors told as ours."""
    when = (now or datetime.now(UTC)).replace(tzinfo=None)
    try:
        recordsets = group_rows(con, staged, split=split)
        rows = _scalar(con, "SELECT count(*) FROM core_v")
        phases.start("keying records", rows)
        derived = derive(con, staged, now=when, recordsets=recordsets)
        phases.start("deriving and writing the new version", rows)
        with attached_store(con, store_path(data_dir), lock_timeout=lock_timeout):
            return write_recordsets(con, staged, derived, now=when)
    except duckdb.OutOfMemoryException as exc:
        raise IngestError(f"{staged.source}: ingest ran out of memory: {exc}") from exc
    except duckdb.IOException as exc:
        raise IngestError(
            f"{staged.source}: ingest failed writing to disk (is it full?); the store keeps "
            f"its previous version: {exc}"
        ) from exc
    except duckdb.Error as exc:
        raise IngestError(f"{staged.source}: ingest failed: {exc}") from exc


def ingest_verbatim(
    data_dir: str | Path,
    archive: VerbatimArchive,
    *,
    lock_timeout: float = 60.0,
    now: datetime | None = None,
) -> IngestResult:
    """Derive and write one in-memory verbatim archive as a recordset, replacing that
    recordset's previous version."""
    return ingest_chunks(
        data_dir,
        [(archive.core, archive.media)],
        source=archive.source,
        recordset_id=archive.recordset_id,
        name=archive.name,
        eml=archive.eml,
        lock_timeout=lock_timeout,
        now=now,
    )


def ingest_chunks(
    data_dir: str | Path,
    chunks: Iterable[tuple[pa.Table, pa.Table | None]],
    *,
    source: str,
    recordset_id: str,
    name: str,
    eml: str | None = None,
    lock_timeout: float = 60.0,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Ingest verbatim (core, media) Arrow tables given chunk by chunk, so a recordset of any
    size is never whole in memory."""
    with staging(data_dir) as (con, _files), Phases(con, progress) as phases:
        phases.start("generating records", 0)
        core_terms, media_terms = stage_tables(con, chunks)
        staged = StagedArchive(
            source=source,
            recordset_id=recordset_id,
            name=name,
            eml=eml,
            core_terms=core_terms,
            media_terms=media_terms,
        )
        (result,) = _derive_and_write(
            con, data_dir, staged, lock_timeout=lock_timeout, now=now, phases=phases
        )
        return result


def ingest_archive(
    data_dir: str | Path,
    path: str | Path,
    *,
    recordset: str | None = None,
    lock_timeout: float = 60.0,
    skip_bad_rows: bool = False,
    progress: Progress | None = None,
) -> IngestResult:
    """Read a Darwin Core Archive (zip, folder or bare CSV) and load it as one recordset.

    Raises :class:`downloader.ingest.read.ArchiveRejected` for an archive that holds no
    occurrences or cannot be read (:class:`~downloader.ingest.stage.MalformedRows` names
    bad rows by file and line), :class:`StoreLocked` when the store stays busy.
    """
    (result,) = ingest_archive_recordsets(
        data_dir,
        path,
        recordset=recordset,
        lock_timeout=lock_timeout,
        skip_bad_rows=skip_bad_rows,
        progress=progress,
        split=False,
    )
    return result


def ingest_archive_recordsets(
    data_dir: str | Path,
    path: str | Path,
    *,
    recordset: str | None = None,
    lock_timeout: float = 60.0,
    skip_bad_rows: bool = False,
    progress: Progress | None = None,
    split: bool = True,
) -> list[IngestResult]:
    """Read a Darwin Core Archive and load it: as the recordsets it names when ``split``
    and no ``recordset`` is given and it says which recordset each record belongs to (an
    iDigBio dump's ``idigbio:recordset``), else as one recordset. Its recordsets are derived
    together and written in one transaction (a new version each); see :func:`ingest_archive`
    for the errors."""
    opened = open_archive(path, recordset_id=recordset)
    try:
        with staging(data_dir) as (con, files), Phases(con, progress) as phases:
            staged = stage_archive(
                con, opened, workdir=files, skip_bad_rows=skip_bad_rows, phases=phases
            )
            return _derive_and_write(
                con,
                data_dir,
                staged,
                lock_timeout=lock_timeout,
                now=None,
                phases=phases,
                split=split and recordset is None,
            )
    finally:
        opened.files.close()


def group_rows(con: duckdb.DuckDBPyConnection, staged: StagedArchive, *, split: bool) -> list[str]:
    """Give ``core_v``, ``media_v`` and the extension views a ``_grp`` column naming each
    row's recordset; the recordsets (sorted).

    Unless ``split``, or when no record names a recordset, every row is the staged
    archive's own. Else (an iDigBio dump's ``idigbio:recordset``) the rows are copied into
    ``core_g``, ``media_g`` and ``ext_g<n>`` with the recordset of their record; a row
    without one (a record whose cell is empty, media or extension rows of no record of the
    archive) stays in the archive's own recordset."""
    default = _sql_string(staged.recordset_id)
    linked = ["media_v"] if staged.media_terms is not None else []
    linked += [ext.table for ext in staged.extensions]
    if not split or not _scalar(con, f"SELECT count({RECORDSET_COLUMN}) FROM core_v"):
        for view in ["core_v", *linked]:
            con.execute(f"ALTER VIEW {view} RENAME TO {view}_one")
            con.execute(f"CREATE VIEW {view} AS SELECT {default} AS _grp, * FROM {view}_one")
        return [staged.recordset_id]
    grp = f"coalesce({RECORDSET_COLUMN}, {default})"
    try:
        con.execute("SET preserve_insertion_order = true")
        con.execute(f"CREATE TABLE core_g AS SELECT {grp} AS _grp, * FROM core_v ORDER BY _grp")
        con.execute(
            f"CREATE TABLE id_grp AS SELECT {ID_COLUMN}, min(_grp) AS _grp FROM core_g "
            f"WHERE {ID_COLUMN} IS NOT NULL GROUP BY {ID_COLUMN}"
        )
        for i, view in enumerate(linked):
            con.execute(
                f"CREATE TABLE linked_g{i} AS SELECT coalesce(p._grp, {default}) AS _grp, v.* "
                f"FROM {view} AS v LEFT JOIN id_grp AS p ON p.{ID_COLUMN} = v.{ID_COLUMN} "
                f"ORDER BY _grp, v.{ROW_COLUMN}"
            )
    finally:
        con.execute("SET preserve_insertion_order = false")
    con.execute("CREATE OR REPLACE VIEW core_v AS SELECT * FROM core_g")
    for i, view in enumerate(linked):
        con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM linked_g{i}")
    union = " UNION ".join(
        f"SELECT DISTINCT _grp FROM {t}"
        for t in ["core_g", *(f"linked_g{i}" for i in range(len(linked)))]
    )
    return [row[0] for row in con.execute(f"SELECT _grp FROM ({union}) ORDER BY _grp").fetchall()]


def ingest_synthetic(
    data_dir: str | Path,
    count: int,
    *,
    seed: int = 0,
    recordset: str | None = None,
    lock_timeout: float = 60.0,
    progress: Progress | None = None,
) -> IngestResult:
    """Generate ``count`` synthetic records (deterministic for ``seed``) and load them,
    generated and staged a chunk at a time."""
    from downloader.ingest.synthetic import synthetic_chunks

    if count < 0:
        raise ValueError("the number of synthetic records must not be negative")
    return ingest_chunks(
        data_dir,
        synthetic_chunks(count, seed=seed),
        source=f"synthetic:{count}:seed={seed}",
        recordset_id=recordset or f"synthetic-seed-{seed}",
        name=f"Synthetic records (seed {seed})",
        lock_timeout=lock_timeout,
        progress=progress,
    )


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
    skip_bad_rows: bool = False,
    progress: Progress | None = None,
    on_result: Callable[[IngestResult], None] | None = None,
    on_error: Callable[[str, Exception], None] | None = None,
) -> tuple[list[IngestResult], list[tuple[str, Exception]]]:
    """Ingest several archives, each in its own transaction (an iDigBio dump: a version of
    each recordset it holds, see :func:`ingest_archive_recordsets`); a rejected archive is
    reported through ``on_error`` and the others still load. Returns (results, failures)."""
    if recordset is not None and len(paths) > 1:
        raise IngestError("--recordset names one recordset, so give exactly one archive with it")
    results: list[IngestResult] = []
    failures: list[tuple[str, Exception]] = []
    for path in paths:
        try:
            loaded = ingest_archive_recordsets(
                data_dir,
                path,
                recordset=recordset,
                lock_timeout=lock_timeout,
                skip_bad_rows=skip_bad_rows,
                progress=progress,
            )
        except (ArchiveRejected, IngestError) as exc:
            failures.append((str(path), exc))
            if on_error:
                on_error(str(path), exc)
            continue
        for result in loaded:
            results.append(result)
            if on_result:
                on_result(result)
    return results, failures


# The CLI formats ingest summaries with this; it lives here so tests can check the wording.
def describe(result: IngestResult) -> str:
    """One line a user reads after an archive was loaded."""
    removed = f", {result.deleted} removed since the last version" if result.deleted else ""
    kept = "".join(f", {rows} {name} rows" for name, rows in result.extensions)
    skipped = "".join(f"; {rows} malformed rows of {name} skipped" for name, rows in result.skipped)
    return (
        f"recordset {result.recordset} version {result.version}: {result.records} records, "
        f"{result.media} media records{kept}{removed}{skipped} ({result.source})"
    )


__all__ = [
    "ROW_COLUMN",
    "IngestError",
    "IngestResult",
    "StoreLocked",
    "describe",
    "ingest_archive",
    "ingest_archive_recordsets",
    "ingest_chunks",
    "ingest_paths",
    "ingest_synthetic",
    "ingest_verbatim",
    "schema_sql",
    "store_path",
    "stored_record_count",
    "write_recordsets",
]
