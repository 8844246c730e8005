"""What an archive is made of: data files, citations, EML facts, and the result of a write.

The service builds an :class:`ArchiveSpec` (usually with the helpers in :mod:`archive.dwca`)
and hands it to :func:`archive.writer.write_archive`. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import pyarrow as pa

from archive.errors import ArchiveError
from query import request

#: The archive forms (one list, the request parser's): ``dwca-*`` are Darwin Core Archives,
#: ``csv``/``tsv`` the core data file alone, ``simple-*`` the core file alone in a zip.
Form = request.Form
FORMS = request.FORMS

#: What the rows of a data file are: counted as records, as media records, or neither
#: (``other``: the one-row-per-distinct-value cores of ``uniquelocality``/``uniquenames``).
FileKind = Literal["records", "mediarecords", "other"]

#: A factory of Arrow batches. Called once, by the writer, when it writes that file.
BatchFactory = Callable[[], Iterable[pa.RecordBatch]]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a data file: its CSV header and the term URI declared in meta.xml.

    Column 0 of every data file is ``Column("coreid", None)``: the core's id (``<id>``) or an
    extension's link to the core (``<coreid>``). A later column whose ``term_uri`` is None is
    written but not declared in meta.xml. ``arrow_type``, when known, is the column's type in
    a Parquet file (so that a file without rows still has its columns' types); None takes
    the type of the batches. It is not part of a column's identity (equality).
    """

    header: str
    term_uri: str | None
    arrow_type: pa.DataType | None = field(default=None, compare=False)


#: Column 0 of every data file.
COREID = Column("coreid", None, pa.string())


@dataclass(frozen=True, slots=True)
class DataFile:
    """One data file of the archive and where its rows come from.

    ``batches`` is a factory rather than an iterator so that the writer decides when (and on
    which thread) the source is read; it is called at most once. Each batch it yields has
    exactly ``len(columns)`` columns, matched to ``columns`` by position (column 0 is the
    ``coreid``, a string); the Arrow column names are not used. Values are turned into cells
    as described in :mod:`archive.cells`.

    ``core`` marks the core file (exactly one per archive); the others are extensions.
    ``row_type`` is the meta.xml ``rowType`` URI (see :data:`archive.dwca.ROW_TYPES`).
    """

    filename: str
    row_type: str
    columns: Sequence[Column]
    batches: BatchFactory
    core: bool = False
    kind: FileKind = "records"


@dataclass(frozen=True, slots=True)
class Citation:
    """A citation file (``records.citation.txt``): the query and the recordsets behind it.

    Rendered by :func:`archive.dwca.render_citation` in iDigBio's layout. Each recordset line
    is ``recordset_url_template.format(id=<recordset id>)`` followed by its count; an empty
    template writes the bare id. ``query_text`` is written as given (JSON text, usually).
    """

    filename: str
    query_text: str
    total: int
    recordset_counts: Mapping[str, int]
    recordset_url_template: str = "{id}"


@dataclass(frozen=True, slots=True)
class RecordsetCredit:
    """One recordset behind a download, for ``citations.txt`` and ``rights.txt``: its id,
    its rows in the archive, and what the store knows of it (empty strings when nothing):
    its name, a link to it, and the rights its publisher states (the intellectual rights of
    its EML)."""

    recordset: str
    count: int
    name: str = ""
    url: str = ""
    rights: str = ""


@dataclass(frozen=True, slots=True)
class ExtraFile:
    """A plain file in the zip that is not part of the star schema, so it is not declared in
    ``meta.xml`` (readers such as python-dwca-reader ignore it), e.g. the ``deleted.csv`` of
    an incremental download. ``chunks`` is called once, by the writer, and yields the file's
    bytes in pieces, so a long file is streamed like the data files."""

    filename: str
    chunks: Callable[[], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class EmlInfo:
    """The facts ``eml.xml`` states about a download.

    ``abstract`` and ``citation`` may be left None: the writer then composes the abstract
    from the query, the counts, the date and the publisher, and uses the first citation file
    of the spec as the citation. ``created`` is the publication date of the archive.
    """

    title: str
    query_text: str
    package_id: str
    publisher_name: str
    publisher_url: str
    intellectual_rights: str
    record_count: int
    media_count: int
    recordset_counts: Mapping[str, int]
    created: datetime
    abstract: str | None = None
    citation: str | None = None


@dataclass(frozen=True, slots=True)
class ArchiveSpec:
    """Everything :func:`archive.writer.write_archive` needs to write one archive.

    ``files`` are written in the given order (and declared in meta.xml in that order).
    ``timestamp`` is the time stamped on every zip entry and in the citation files, so the
    same spec over the same data gives byte-identical archives; naive datetimes are UTC.
    For the ``csv``/``tsv`` forms only the core file is written, and ``citations``, ``eml``,
    ``credits`` and ``extras`` are ignored. The zip forms always carry ``citations.txt`` and
    ``rights.txt`` (from ``eml`` and ``credits``, see :mod:`archive.dwca`) after the citation
    files; ``extras`` are written after those, undeclared.
    """

    form: Form
    files: list[DataFile]
    citations: list[Citation]
    eml: EmlInfo
    timestamp: datetime
    extras: Sequence[ExtraFile] = ()
    credits: Sequence[RecordsetCredit] = ()

    @property
    def core(self) -> DataFile:
        """The core data file (the spec must have exactly one)."""
        cores = [f for f in self.files if f.core]
        if len(cores) != 1:
            raise ArchiveError(f"an archive needs exactly one core data file, not {len(cores)}")
        return cores[0]

    def expected_rows(self, counts: Mapping[str, int]) -> int:
        """The final value ``progress`` will report, given the record and media counts.

        ``progress`` counts every row of every ``records`` and ``mediarecords`` file, so a
        type written both indexed and raw counts twice; ``counts`` maps a kind to its count
        (``{"records": 120, "mediarecords": 40}``). Use it as the denominator of a percentage.
        """
        whole = self.form.startswith("dwca") or self.form == "parquet"  # dwca.is_zip
        files = self.files if whole else [self.core]
        return sum(counts.get(f.kind, 0) for f in files if f.kind != "other")


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    """What was written: the sink's byte count and sha256 (hex), and rows per data file.

    ``rows`` maps each data file name to its row count (header excluded). ``records`` and
    ``mediarecords`` are the number of records and media records in the archive: the largest
    row count among the files of that kind (the indexed and raw files hold the same rows).
    """

    size: int
    sha256: str
    rows: dict[str, int] = field(default_factory=dict)
    records: int = 0
    mediarecords: int = 0
