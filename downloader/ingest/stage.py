"""Staging an archive's files in a private DuckDB database, in bounded memory.

Each data file of an :class:`~downloader.ingest.read.ArchiveLayout` is loaded by DuckDB's own
CSV reader (parallel, streaming, spilling to disk beyond its memory limit) into a staging
table of VARCHAR columns named by short term (``dwc:scientificName``), plus ``_id`` (the
file's id or coreid column). The table's ``rowid`` is the row's position in its file.

Then views give the derivation what it reads, whatever the archive's shape:

- ``core_v``: one row per record: ``_row``, ``_id`` (the id extensions link by), ``_kid``
  (the id the record key is made from, NULL when there is none), ``_given_uuid`` (a record
  uuid the archive already carries: iDigBio's), ``_recordset`` (iDigBio's recordset of the
  record, else NULL), and the record's verbatim term columns (the
  verbatim twin's when there is one; an Event core's terms where the occurrence has none);
- ``media_v``: ``_row``, ``_id`` (the core id each media row points to) and its terms;
- ``ext_<n>``: each other extension, the same way.

Malformed rows (a wrong number of fields, bytes invalid in the declared encoding) are
collected by DuckDB's rejects tables; :class:`MalformedRows` names the first of them by
file and line, unless the caller asked to skip them (then they are counted).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from downloader.ingest.derive import quote_ident, quote_literal
from downloader.ingest.read import (
    ID_COLUMN,
    ROW_COLUMN,
    ArchiveRejected,
    FileSpec,
    OpenedArchive,
    header_lookup,
    header_term,
)

#: Encodings DuckDB's CSV reader reads natively; any other is transcoded to UTF-8 first.
_NATIVE_ENCODINGS = {"utf-8": "utf-8", "utf-8-sig": "utf-8", "iso8859-1": "latin-1"}
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_COPY_CHUNK = 1 << 20

#: The iDigBio term naming a record's recordset, and the ``core_v`` column holding it (NULL
#: for other archives): an iDigBio dump is loaded as the recordsets it holds.
IDIGBIO_RECORDSET = "idigbio:recordset"
RECORDSET_COLUMN = "_recordset"

#: Called with (what is being done, bytes read so far, bytes in all).
Progress = Callable[[str, int, int], None]


class MalformedRows(ArchiveRejected):
    """Rows of a data file could not be read; the message names file and line of each."""


@dataclass(frozen=True)
class StagedFile:
    """One staged data file: its table, its terms, and what was skipped."""

    spec: FileSpec
    table: str
    terms: tuple[str, ...]
    rows: int
    skipped: int = 0


@dataclass
class StagedArchive:
    """What :func:`stage_archive` (or :func:`stage_tables`) put into the staging database."""

    source: str
    recordset_id: str
    name: str
    eml: str | None
    core_terms: list[str]
    media_terms: list[str] | None  # None: the archive has no media
    extensions: list[StagedFile] = field(default_factory=list)
    skipped: list[tuple[str, int]] = field(default_factory=list)  # (file, rows skipped)
    warnings: list[str] = field(default_factory=list)


# --- files onto disk ---------------------------------------------------------------------------


def _local_copy(opened: OpenedArchive, spec: FileSpec, workdir: Path) -> tuple[Path, str]:
    """(a path DuckDB can read the member from, the encoding to tell it)."""
    native = _NATIVE_ENCODINGS.get(codecs.lookup(spec.encoding).name)
    local = opened.files.local_path(spec.location)
    if native is not None and local is not None:
        return local, native
    target = workdir / f"{len(list(workdir.iterdir()))}-{Path(spec.location).name}"
    with opened.files.open(spec.location) as src, target.open("wb") as dst:
        if native is not None:
            shutil.copyfileobj(src, dst, _COPY_CHUNK)
            return target, native
        _transcode(src, dst, spec)
    return target, "utf-8"


def _transcode(src: IO[bytes], dst: IO[bytes], spec: FileSpec) -> None:
    """Copy ``src`` to ``dst`` as UTF-8, decoding it as the declared encoding."""
    decoder = codecs.getincrementaldecoder(spec.encoding)("strict")
    line = 1
    while True:
        chunk = src.read(_COPY_CHUNK)
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            near = line + chunk[: exc.start].count(b"\n")
            raise MalformedRows(
                f"{spec.location} line {near}: bytes that are not valid {spec.encoding} "
                f"(the encoding meta.xml declares): {exc.reason}"
            ) from exc
        line += chunk.count(b"\n")
        dst.write(text.encode("utf-8"))
        if not chunk:
            return


#: Longest line staged (DuckDB's ``max_line_size``): cells of megabytes occur (remarks,
#: JSON); Python's csv, which reads the first rows, allows 128 kB fields by default.
MAX_LINE = 16 * 1024 * 1024


def _first_rows(path: Path, encoding: str, spec: FileSpec, n: int) -> list[list[str]]:
    """The first ``n`` rows of a staged copy (header lines included), read by Python's csv:
    from the first megabyte, or more where a row runs past it (up to ``n`` of the longest
    lines allowed); fewer only at the end of the file."""
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE))
    size = 1 << 20
    while True:
        with path.open("r", encoding=encoding, errors="replace", newline="") as f:
            head = f.read(size)
            whole = not f.read(1)
        rows = _parse_rows(head, spec, n + 1)
        # The n-th row is whole when a row follows it or the file ends.
        if whole or len(rows) > n or size >= MAX_LINE * (n + 1):
            return rows[:n]
        size *= 4


def _parse_rows(text: str, spec: FileSpec, n: int) -> list[list[str]]:
    rows: list[list[str]] = []
    reader = csv.reader(
        io.StringIO(text),
        delimiter=spec.delimiter,
        quotechar=spec.quote or None,
        quoting=csv.QUOTE_MINIMAL if spec.quote else csv.QUOTE_NONE,
        doublequote=True,
        strict=False,
    )
    try:
        for row in reader:
            rows.append(row)
            if len(rows) >= n:
                break
    except csv.Error:
        pass
    return rows


# --- one file into one table -------------------------------------------------------------------


def _reader_sql(path: Path, spec: FileSpec, encoding: str, ncols: int, rejects: str) -> str:
    columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(ncols)) + "}"
    quote = spec.quote
    options = [
        f"delim={quote_literal(spec.delimiter)}",
        f"quote={quote_literal(quote)}",
        f"escape={quote_literal(quote)}",
        "comment=''",
        "header=false",
        f"skip={spec.header_lines}",
        f"columns={columns}",
        "auto_detect=false",
        "strict_mode=true",
        "null_padding=false",
        f"encoding={quote_literal(encoding)}",
        "ignore_errors=true",
        "store_rejects=true",
        f"rejects_table={quote_literal(rejects + '_errors')}",
        f"rejects_scan={quote_literal(rejects + '_scan')}",
        f"max_line_size={MAX_LINE}",
        # DuckDB sizes its read buffers at 16 lines of the longest allowed (256 MB each),
        # which alone outgrew the staging memory on a 5M-row file; two lines suffice.
        f"buffer_size={2 * MAX_LINE}",
    ]
    return f"read_csv({quote_literal(str(path))}, {', '.join(options)})"


def _header_fields(head: list[list[str]]) -> list[tuple[str, int | None, str | None]]:
    """A bare CSV's columns from its header line: (term, index, no default)."""
    lookup = header_lookup()
    out: list[tuple[str, int | None, str | None]] = []
    seen: set[str] = set()
    for i, cell in enumerate(head[0] if head else []):
        term = header_term(cell, lookup)
        if term and term not in seen:
            seen.add(term)
            out.append((term, i, None))
    return out


def _term_columns(
    spec: FileSpec, fields_: list[tuple[str, int | None, str | None]], warnings: list[str]
) -> list[tuple[str, str]]:
    """(term, SQL over the reader's ``c<i>`` columns) per term of a file.

    DuckDB's column names are case-insensitive, so terms that differ only in case (iDigBio's
    raw files have dwc:verbatimEventDate and dwc:VerbatimEventDate) share one column: the
    first non-empty value of them.
    """
    by_key: dict[str, list[str]] = {}
    order: list[str] = []
    for term, index, default in fields_:
        if index is not None and default is not None:
            expr = f"coalesce(c{index}, {quote_literal(default)})"
        elif index is not None:
            expr = f"c{index}"
        else:
            expr = f"CAST({quote_literal(default or '')} AS VARCHAR)"
        key = term.lower()
        if key not in by_key:
            by_key[key] = []
            order.append(term)
        by_key[key].append(expr)
    if len(order) < len(fields_):
        merged = sorted({t for t, _, _ in fields_} - set(order))
        warnings.append(
            f"{spec.location}: terms that differ only in case were merged into one column "
            f"({', '.join(merged)})"
        )
    out = []
    for term in order:
        exprs = by_key[term.lower()]
        out.append((term, exprs[0] if len(exprs) == 1 else f"coalesce({', '.join(exprs)})"))
    return out


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0


def stage_file(
    con: duckdb.DuckDBPyConnection,
    opened: OpenedArchive,
    spec: FileSpec,
    *,
    table: str,
    workdir: Path,
    skip_bad_rows: bool,
    warnings: list[str],
) -> StagedFile:
    """Load one data file into ``table`` (``_id`` + one VARCHAR column per term)."""
    path, encoding = _local_copy(opened, spec, workdir)
    head = _first_rows(path, encoding, spec, spec.header_lines + 1)
    data_row = head[spec.header_lines] if len(head) > spec.header_lines else None
    fields_ = (
        _header_fields(head)
        if spec.header_names_terms
        else [(f.term, f.index, f.default) for f in spec.fields]
    )
    indices = [i for _, i, _ in fields_ if i is not None]
    if spec.id_index is not None:
        indices.append(spec.id_index)
    ncols = max([*indices, len(data_row) - 1 if data_row else -1, -1]) + 1
    columns = _term_columns(spec, fields_, warnings)
    terms = tuple(t for t, _ in columns)
    if data_row is None or ncols == 0:
        cols = ", ".join(
            [f"CAST(NULL AS VARCHAR) AS {ID_COLUMN}"]
            + [f"CAST(NULL AS VARCHAR) AS {quote_ident(t)}" for t in terms]
        )
        con.execute(f"CREATE TABLE {table} AS SELECT {cols} LIMIT 0")
        return StagedFile(spec=spec, table=table, terms=terms, rows=0)
    id_sql = f"c{spec.id_index}" if spec.id_index is not None else "CAST(NULL AS VARCHAR)"
    select = [f"{id_sql} AS {ID_COLUMN}", *(f"{e} AS {quote_ident(t)}" for t, e in columns)]
    reader = _reader_sql(path, spec, encoding, ncols, table)
    try:
        con.execute(f"CREATE TABLE {table} AS SELECT {', '.join(select)} FROM {reader}")
    except duckdb.Error as exc:
        raise MalformedRows(
            f"{spec.location}: cannot be read as declared in meta.xml ({exc})"
        ) from exc
    skipped = _count(con, f"SELECT count(DISTINCT line) FROM {table}_errors")
    if skipped and not skip_bad_rows:
        bad = con.execute(
            f"SELECT line, error_type, error_message FROM {table}_errors ORDER BY line LIMIT 5"
        ).fetchall()
        lines = "; ".join(f"line {line}: {_error_words(kind, msg)}" for line, kind, msg in bad)
        more = f" (and {skipped - len(bad)} more)" if skipped > len(bad) else ""
        raise MalformedRows(
            f"{spec.location}: {skipped} malformed row(s), nothing was loaded: {lines}{more}. "
            "Fix the file, or give --skip-bad-rows to load the rest and count these"
        )
    con.execute(f"DROP TABLE IF EXISTS {table}_errors")
    con.execute(f"DROP TABLE IF EXISTS {table}_scan")
    rows = _count(con, f"SELECT count(*) FROM {table}")
    return StagedFile(spec=spec, table=table, terms=terms, rows=rows, skipped=skipped)


def _error_words(kind: str, message: str) -> str:
    if kind == "INVALID ENCODING" or "unicode" in message.lower():
        return "bytes that are not valid in the declared encoding"
    m = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", message)
    if m:
        return f"{m.group(2)} fields where the file's rows have {m.group(1)}"
    if kind == "UNQUOTED VALUE" or "quote" in message.lower():
        return "a quote that is not closed or a value after a closing quote"
    return message.splitlines()[0] if message else kind.lower()


# --- the archive into views --------------------------------------------------------------------


def _merge_select(
    first: str, second: str, first_terms: Sequence[str], second_terms: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(SELECT items, term names): ``first``'s value wins and ``second`` fills in; terms are
    matched case-insensitively, as DuckDB matches column names."""
    out = []
    names = []
    seconds = {t.lower(): t for t in second_terms}
    firsts = {t.lower() for t in first_terms}
    for t in first_terms:
        q = quote_ident(t)
        other = seconds.get(t.lower())
        if other is not None:
            out.append(f"coalesce({first}.{q}, {second}.{quote_ident(other)}) AS {q}")
        else:
            out.append(f"{first}.{q} AS {q}")
        names.append(t)
    for t in second_terms:
        if t.lower() not in firsts:
            out.append(f"{second}.{quote_ident(t)} AS {quote_ident(t)}")
            names.append(t)
    return out, names


def _verbatim_select(rec: StagedFile, verb: StagedFile) -> tuple[list[str], list[str]]:
    """(SELECT items, term names) of records whose verbatim twin holds their data: the
    twin's terms; a record the twin lacks keeps the interpreted file's terms."""
    matched = f"v.{ID_COLUMN} IS NOT NULL"
    recs = {t.lower(): t for t in rec.terms}
    verbs = {t.lower() for t in verb.terms}
    out, names = [], []
    for t in verb.terms:
        mine = recs.get(t.lower())
        fallback = f"r.{quote_ident(mine)}" if mine else "NULL"
        q = quote_ident(t)
        out.append(f"CASE WHEN {matched} THEN v.{q} ELSE {fallback} END AS {q}")
        names.append(t)
    for t in rec.terms:
        if t.lower() not in verbs:
            q = quote_ident(t)
            out.append(f"CASE WHEN NOT {matched} THEN r.{q} END AS {q}")
            names.append(t)
    return out, names


def _core_view(
    con: duckdb.DuckDBPyConnection, done: dict[str, StagedFile], *, idigbio: bool
) -> list[str]:
    """Define ``core_v`` over the staged record file(s); its term names."""
    rec = done["rec_t"]
    kid = f"r.{ID_COLUMN}"
    from_ = "rec_t AS r"
    if "verb_t" in done:
        terms, names = _verbatim_select(rec, done["verb_t"])
        con.execute(
            f"CREATE VIEW verb_one AS SELECT * FROM verb_t WHERE {ID_COLUMN} IS NOT NULL "
            f"QUALIFY row_number() OVER (PARTITION BY {ID_COLUMN} ORDER BY rowid) = 1"
        )
        from_ += f" LEFT JOIN verb_one AS v ON v.{ID_COLUMN} = r.{ID_COLUMN}"
    elif "event_t" in done:
        terms, names = _merge_select("r", "e", rec.terms, done["event_t"].terms)
        from_ += f" LEFT JOIN event_t AS e ON e.{ID_COLUMN} = r.{ID_COLUMN}"
        kid = "NULL"  # occurrences of one event share its id: key them by occurrenceID
    else:
        terms = [f"r.{quote_ident(t)} AS {quote_ident(t)}" for t in rec.terms]
        names = list(rec.terms)
    given = "CAST(NULL AS VARCHAR)"
    recordset = "CAST(NULL AS VARCHAR)"
    if idigbio:
        # iDigBio's occurrence file names each record's recordset (a dump spans many).
        named = [t for t in rec.terms if t.lower() == IDIGBIO_RECORDSET]
        if named:
            recordset = f"nullif(lower(trim(r.{quote_ident(named[0])})), '')"
        # iDigBio's record ids are its record uuids: keep them.
        rid = f"lower(trim(r.{ID_COLUMN}))"
        pattern = quote_literal(_UUID.pattern[1:-1])
        given = f"CASE WHEN regexp_full_match({rid}, {pattern}) THEN {rid} END"
    select = [
        f"r.rowid AS {ROW_COLUMN}",
        f"r.{ID_COLUMN} AS {ID_COLUMN}",
        f"{kid} AS _kid",
        f"{given} AS _given_uuid",
        f"{recordset} AS {RECORDSET_COLUMN}",
        *terms,
    ]
    con.execute(f"CREATE VIEW core_v AS SELECT {', '.join(select)} FROM {from_}")
    return names


def _media_view(con: duckdb.DuckDBPyConnection, media: list[StagedFile]) -> list[str]:
    """Define ``media_v`` over the staged media files (one after the other); its terms."""
    all_terms = list(dict.fromkeys(t for m in media for t in m.terms))
    parts = []
    offset = 0
    for m in media:
        cols = [
            quote_ident(t) if t in m.terms else f"CAST(NULL AS VARCHAR) AS {quote_ident(t)}"
            for t in all_terms
        ]
        select = ", ".join([f"rowid + {offset} AS {ROW_COLUMN}", ID_COLUMN, *cols])
        parts.append(f"SELECT {select} FROM {m.table}")
        offset += m.rows
    con.execute("CREATE VIEW media_v AS " + " UNION ALL ".join(parts))
    return all_terms


def stage_archive(
    con: duckdb.DuckDBPyConnection,
    opened: OpenedArchive,
    *,
    workdir: Path,
    skip_bad_rows: bool = False,
    phases: Phases,
) -> StagedArchive:
    """Stage every file an opened archive's layout names and define the views."""
    layout = opened.layout
    staged = StagedArchive(
        source=opened.source,
        recordset_id=opened.recordset_id,
        name=opened.name,
        eml=opened.eml,
        core_terms=[],
        media_terms=None,
        warnings=list(layout.warnings),
    )
    specs: list[tuple[str, FileSpec | None]] = [
        ("rec_t", layout.records),
        ("verb_t", layout.verbatim),
        ("event_t", layout.event),
        *[(f"media_t{i}", m) for i, m in enumerate(layout.media)],
        *[(f"ext_t{i}", e) for i, e in enumerate(layout.extensions)],
    ]
    done: dict[str, StagedFile] = {}
    for table, spec in specs:
        if spec is None:
            continue

        def work(t: str = table, s: FileSpec = spec) -> StagedFile:
            return stage_file(
                con,
                opened,
                s,
                table=t,
                workdir=workdir,
                skip_bad_rows=skip_bad_rows,
                warnings=staged.warnings,
            )

        phases.start(f"reading {spec.location}", estimated_rows(opened, spec))
        result = work()
        done[table] = result
        if result.skipped:
            staged.skipped.append((spec.location, result.skipped))
    staged.core_terms = _core_view(con, done, idigbio=layout.idigbio)
    media = [f for t, f in done.items() if t.startswith("media_t")]
    if media:
        staged.media_terms = _media_view(con, media)
    for t, ext in done.items():
        if t.startswith("ext_t"):
            view = "ext_" + t[len("ext_t") :]
            con.execute(f"CREATE VIEW {view} AS SELECT rowid AS {ROW_COLUMN}, * FROM {ext.table}")
            staged.extensions.append(
                StagedFile(
                    spec=ext.spec, table=view, terms=ext.terms, rows=ext.rows, skipped=ext.skipped
                )
            )
    return staged


class Phases:
    """Reports an ingest's phases to a :data:`Progress` callback, with DuckDB's progress of
    the statement running in each, polled by a thread (``con.query_progress``)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, progress: Progress | None) -> None:
        self._con = con
        self._progress = progress
        self._what = ""
        self._total = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Phases:
        if self._progress is not None:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._report(100.0)

    def start(self, what: str, total: int) -> None:
        """A new phase of about ``total`` rows."""
        self._report(100.0)
        self._what, self._total = what, total
        self._report(0.0)

    def _report(self, percent: float) -> None:
        if self._progress is not None and self._what:
            self._progress(self._what, int(self._total * percent / 100), self._total)

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            try:
                percent = self._con.query_progress()
            except duckdb.Error:
                continue
            if percent >= 0:
                self._report(min(percent, 100.0))


def estimated_rows(opened: OpenedArchive, spec: FileSpec) -> int:
    """About how many rows a data file holds, from its size and its first megabyte."""
    info = opened.files.size(spec.location)
    with opened.files.open(spec.location) as f:
        head = f.read(1 << 20)
    lines = head.count(b"\n")
    if not head or not lines:
        return 0
    return max(0, int(info * lines / len(head)) - spec.header_lines)


# --- in-memory tables (tests, synthetic records) ----------------------------------------------


def stage_tables(
    con: duckdb.DuckDBPyConnection, chunks: Iterable[tuple[pa.Table, pa.Table | None]]
) -> tuple[list[str], list[str] | None]:
    """Stage verbatim Arrow tables (``_id``, ``_row`` and term columns) given as (core,
    media) chunks, and define ``core_v`` and ``media_v`` over them. Returns (core terms,
    media terms, None when no chunk has media)."""
    core_terms: list[str] | None = None
    media_terms: list[str] | None = None
    for core, media in chunks:
        core_terms = _append_chunk(con, "rec_t", core, core_terms)
        if media is not None:
            media_terms = _append_chunk(con, "media_t0", media, media_terms)
    if core_terms is None:
        con.execute(f"CREATE TABLE rec_t ({ID_COLUMN} VARCHAR)")
        core_terms = []
    con.execute(
        f"CREATE VIEW core_v AS SELECT rowid AS {ROW_COLUMN}, {ID_COLUMN}, {ID_COLUMN} AS _kid, "
        f"CAST(NULL AS VARCHAR) AS _given_uuid, CAST(NULL AS VARCHAR) AS {RECORDSET_COLUMN}, "
        f"* EXCLUDE ({ID_COLUMN}) FROM rec_t"
    )
    if media_terms is not None:
        con.execute(f"CREATE VIEW media_v AS SELECT rowid AS {ROW_COLUMN}, * FROM media_t0")
    return core_terms, media_terms


def _append_chunk(
    con: duckdb.DuckDBPyConnection, table: str, chunk: pa.Table, terms: list[str] | None
) -> list[str]:
    """Append one chunk (in its ``_row`` order) to ``table``, creating it from the first."""
    if ROW_COLUMN in chunk.column_names:
        order = pc.sort_indices(chunk[ROW_COLUMN])
        chunk = chunk.drop_columns([ROW_COLUMN]).take(order)
    con.register("_chunk", chunk)
    try:
        if terms is None:
            terms = [c for c in chunk.column_names if c != ID_COLUMN]
            cols = ", ".join([ID_COLUMN] + [quote_ident(t) for t in terms])
            con.execute(f"CREATE TABLE {table} AS SELECT {cols} FROM _chunk")
        else:
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _chunk")
    finally:
        con.unregister("_chunk")
    return terms
