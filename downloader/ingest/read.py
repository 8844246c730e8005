"""Reading Darwin Core Archives for ingest: the descriptor, and what each data file is.

An archive is a zip, a folder, or a bare delimited text file. :func:`open_archive` reads its
``meta.xml`` (the TDWG text guide's descriptor) into an :class:`ArchiveLayout`: which file
holds the occurrences, which holds their verbatim data, which are media, and which are
other extensions to keep. Nothing here reads data rows: :mod:`downloader.ingest.stage` loads
the files with DuckDB's CSV reader, so an archive of any size streams through in bounded
memory.

Real archives, as portals write them:

- an Occurrence core, with any extensions (IPT, Symbiota, GBIF);
- no ``<core>`` at all (iDigBio's downloads: every file is an ``<extension>``): the first
  Occurrence file is the core;
- an interpreted and a verbatim Occurrence file side by side (iDigBio's ``occurrence.csv``
  and ``occurrence_raw.csv``, GBIF's ``occurrence.txt`` and ``verbatim.txt``): the verbatim
  file's terms are the record's data, as published, from which the index is derived as
  iDigBio does; the same holds for iDigBio's two multimedia files;
- an Event core (sampling-event datasets) with an Occurrence extension: each occurrence is
  a record, flattened with its event's terms (the occurrence's own value wins), as GBIF does;
- rowTypes compared case-insensitively (iDigBio writes ``.../ac/terms/multimedia``);
- no ``meta.xml`` (a bare CSV, such as GBIF's "simple" download): one Occurrence file whose
  header names Darwin Core terms, matched case-insensitively.

An archive with no occurrences (a Taxon core, a checklist) is refused with
:class:`ArchiveRejected` saying so.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

import pyarrow as pa

from downloader.errors import DownloaderError
from query.fields import fields, short_term

OCCURRENCE_ROWTYPE = "http://rs.tdwg.org/dwc/terms/Occurrence"
EVENT_ROWTYPE = "http://rs.tdwg.org/dwc/terms/Event"
#: Extension rowTypes read as media records: Audubon Core and GBIF's Simple Multimedia.
MULTIMEDIA_ROWTYPES = (
    "http://rs.tdwg.org/ac/terms/Multimedia",
    "http://rs.gbif.org/terms/1.0/Multimedia",
)

#: Column holding the core id (records) or the core id a media/extension row points to.
ID_COLUMN = "_id"
#: Column holding the 0-based row position in its data file (a last-resort record key).
ROW_COLUMN = "_row"

# Darwin Core terms a headers-only CSV commonly uses beyond those the catalogue names. The
# catalogue supplies the rest, so this list only needs terms that feed derived fields or that
# GBIF's simple download format writes.
_EXTRA_DWC_TERMS = [
    "decimalLatitude",
    "decimalLongitude",
    "geodeticDatum",
    "coordinatePrecision",
    "countryCode",
    "year",
    "month",
    "day",
    "eventID",
    "eventTime",
    "identifiedBy",
    "dateIdentified",
    "rightsHolder",
    "rights",
    "license",
    "establishmentMeans",
    "occurrenceRemarks",
    "occurrenceStatus",
    "associatedSequences",
    "minimumElevationInMeters",
    "maximumElevationInMeters",
    "minimumDepthInMeters",
    "maximumDepthInMeters",
    "coordinateUncertaintyInMeters",
    "individualCount",
    "scientificNameAuthorship",
    "sex",
    "lifeStage",
    "preparations",
    "habitat",
    "samplingProtocol",
    "verbatimCoordinates",
    "verbatimLatitude",
    "verbatimLongitude",
]

_META = "meta.xml"
_DATA_SUFFIXES = (".txt", ".csv", ".tsv", ".tab")


class ArchiveRejected(DownloaderError):
    """An archive cannot be ingested (unreadable, malformed, or it holds no occurrences)."""


@dataclass(frozen=True)
class FieldSpec:
    """One ``<field>`` of a file block: a column (``index``) and/or a constant (``default``)."""

    term: str  # the short term name data is keyed by, e.g. ``dwc:scientificName``
    index: int | None
    default: str | None = None


@dataclass(frozen=True)
class FileSpec:
    """One data file of an archive and how to read it (a ``<core>``/``<extension>`` block)."""

    location: str  # the member's path inside the archive
    row_type: str
    fields: tuple[FieldSpec, ...]
    id_index: int | None = None
    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8"
    header_lines: int = 0
    #: Bare CSV only: the header line names the columns (then ``fields`` is empty).
    header_names_terms: bool = False

    @property
    def name(self) -> str:
        """The file's stem (``identifications`` for ``identifications.csv``)."""
        return PurePosixPath(self.location).stem


@dataclass
class ArchiveLayout:
    """What each file of an archive is for.

    ``records`` is the file whose rows become records (its ``_id`` links extensions);
    ``verbatim`` (or None) holds the same records' verbatim terms, by the same id;
    ``event`` (or None) is an Event core whose terms each occurrence inherits;
    ``media`` are multimedia files (with ``media_verbatim`` their verbatim twins);
    ``extensions`` are the other files, kept as they are.
    """

    records: FileSpec
    verbatim: FileSpec | None = None
    event: FileSpec | None = None
    media: list[FileSpec] = field(default_factory=list)
    extensions: list[FileSpec] = field(default_factory=list)
    metadata: str | None = None
    #: iDigBio's own download layout: its record ids are iDigBio's record uuids.
    idigbio: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class VerbatimArchive:
    """An archive already in memory (tests, generated records): two Arrow tables of verbatim
    strings. ``core`` has :data:`ID_COLUMN`, :data:`ROW_COLUMN` and one string column per
    term; ``media`` (or None) has :data:`ID_COLUMN` (the core id each media row belongs to),
    :data:`ROW_COLUMN` and its term columns."""

    source: str
    recordset_id: str
    name: str
    eml: str | None
    core: pa.Table
    media: pa.Table | None


# --- opening zips, folders and bare files ------------------------------------------------------


class ArchiveFiles:
    """The members of an archive (a zip, a folder, or one bare file), relative to the folder
    that holds ``meta.xml``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._root = ""
        if path.is_dir():
            self.kind = "folder"
        elif zipfile.is_zipfile(path):
            self.kind = "zip"
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise ArchiveRejected(f"{path.name}: not a readable zip file ({exc})") from exc
        else:
            self.kind = "file"
        self._root = self._find_root()

    def close(self) -> None:
        """Close the zip file, if any."""
        if self._zip is not None:
            self._zip.close()

    def _names(self) -> list[str]:
        if self._zip is not None:
            return [
                n
                for n in self._zip.namelist()
                if not n.endswith("/") and not n.startswith("__MACOSX/")
            ]
        if self.kind == "folder":
            return sorted(
                p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()
            )
        return [self.path.name]

    def _find_root(self) -> str:
        """The folder holding meta.xml (archives zipped with their folder keep it inside)."""
        metas = [n for n in self._names() if PurePosixPath(n).name.lower() == _META]
        if not metas:
            return ""
        best = min(metas, key=lambda n: (n.count("/"), n))
        parent = str(PurePosixPath(best).parent)
        return "" if parent == "." else parent + "/"

    def _member(self, name: str) -> str:
        return self._root + name

    def exists(self, name: str) -> bool:
        """Whether the archive holds member ``name``."""
        member = self._member(name)
        if self._zip is not None:
            try:
                self._zip.getinfo(member)
            except KeyError:
                return False
            return True
        if self.kind == "folder":
            return (self.path / member).is_file()
        return name == self.path.name

    def has_meta(self) -> bool:
        """Whether the archive has a descriptor (a bare file never has)."""
        return self.exists(_META) if self.kind != "file" else False

    def data_files(self) -> list[str]:
        """Members that look like delimited text (for archives without meta.xml)."""
        return [
            n[len(self._root) :]
            for n in self._names()
            if n.startswith(self._root) and n.lower().endswith(_DATA_SUFFIXES)
        ]

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """A binary stream of a member."""
        member = self._member(name)
        if self._zip is not None:
            try:
                stream: IO[bytes] = self._zip.open(member)
            except KeyError as exc:
                raise FileNotFoundError(member) from exc
        elif self.kind == "folder":
            stream = (self.path / member).open("rb")
        else:
            stream = self.path.open("rb")
        try:
            yield stream
        finally:
            stream.close()

    def size(self, name: str) -> int:
        """A member's size in bytes (uncompressed)."""
        member = self._member(name)
        if self._zip is not None:
            return self._zip.getinfo(member).file_size
        if self.kind == "folder":
            return (self.path / member).stat().st_size
        return self.path.stat().st_size

    def local_path(self, name: str) -> Path | None:
        """The member's own path on disk, when it is a plain file (folders, bare files)."""
        if self.kind == "folder":
            return self.path / self._member(name)
        if self.kind == "file":
            return self.path
        return None

    def read_text(self, name: str, encoding: str = "utf-8") -> str:
        """A member's text (undecodable bytes replaced)."""
        with self.open(name) as f:
            return f.read().decode(encoding, "replace")


# --- meta.xml ------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _unescape(value: str) -> str:
    r"""meta.xml writes separators as escapes (``\\t``, ``\\n``) or as the characters."""
    return (
        value.replace("\\t", "\t").replace("\\r", "\r").replace("\\n", "\n").replace("\\\\", "\\")
    )


def _encoding(value: str | None, where: str) -> str:
    name = (value or "utf-8").strip() or "utf-8"
    try:
        return codecs.lookup(name).name
    except LookupError as exc:
        raise ArchiveRejected(f"{where}: unknown encoding {name!r} in meta.xml") from exc


def _int_attr(el: ET.Element, attr: str, where: str) -> int | None:
    raw = el.get(attr)
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw.strip())
    except ValueError as exc:
        raise ArchiveRejected(f"{where}: {attr}={raw!r} in meta.xml is not a number") from exc
    if value < 0:
        raise ArchiveRejected(f"{where}: {attr}={raw!r} in meta.xml is negative")
    return value


def _file_spec(block: ET.Element, where: str) -> FileSpec:
    row_type = (block.get("rowType") or "").strip()
    location = None
    for el in block.iter():
        if _local(el.tag) == "location" and (el.text or "").strip():
            location = (el.text or "").strip()
            break
    if location is None:
        raise ArchiveRejected(f"{where}: a file block in meta.xml has no <location>")
    id_index = None
    specs: list[FieldSpec] = []
    seen: set[str] = set()
    for el in block:
        tag = _local(el.tag)
        if tag in ("id", "coreid"):
            id_index = _int_attr(el, "index", where)
        elif tag == "field":
            term = (el.get("term") or "").strip()
            if not term:
                continue
            name = short_term(term)
            if name in seen:  # the same term twice: the first one is the column
                continue
            seen.add(name)
            index = _int_attr(el, "index", where)
            default = el.get("default")
            if index is None and default is None:
                continue
            specs.append(FieldSpec(term=name, index=index, default=default))
    delimiter = _unescape(block.get("fieldsTerminatedBy", ","))
    quote = _unescape(block.get("fieldsEnclosedBy", '"'))
    if len(delimiter) != 1:
        raise ArchiveRejected(
            f"{where}: {location}: fieldsTerminatedBy={delimiter!r} is not one character"
        )
    if len(quote) > 1:
        raise ArchiveRejected(
            f"{where}: {location}: fieldsEnclosedBy={quote!r} is not one character"
        )
    return FileSpec(
        location=location,
        row_type=row_type,
        fields=tuple(specs),
        id_index=id_index,
        delimiter=delimiter,
        quote=quote,
        encoding=_encoding(block.get("encoding"), f"{where}: {location}"),
        header_lines=_int_attr(block, "ignoreHeaderLines", where) or 0,
    )


def _is(row_type: str, *expected: str) -> bool:
    return row_type.strip().lower() in {e.lower() for e in expected}


_TWIN = re.compile(r"(^|[_\-.])(raw|verbatim)($|[_\-.])")


def _is_verbatim_twin(spec: FileSpec) -> bool:
    """Whether a file is the verbatim twin of an interpreted one (``occurrence_raw.csv``,
    ``verbatim.txt``, ``multimedia_raw.csv``), by its name."""
    return bool(_TWIN.search(spec.name.lower()))


def _twins(specs: list[FileSpec]) -> tuple[FileSpec, FileSpec | None]:
    """(the file to take rows from, its verbatim twin or None) among same-rowType files."""
    raw = [s for s in specs if _is_verbatim_twin(s)]
    interpreted = [s for s in specs if not _is_verbatim_twin(s)]
    if raw and interpreted:
        return interpreted[0], raw[0]
    if len(specs) > 1:
        return specs[0], specs[1]
    return specs[0], None


def parse_meta(text: str, where: str) -> ArchiveLayout:
    """The layout an archive's meta.xml describes (see the module's notes)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ArchiveRejected(f"{where}: meta.xml is not well-formed XML ({exc})") from exc
    if _local(root.tag) != "archive":
        raise ArchiveRejected(
            f"{where}: meta.xml's root element is <{_local(root.tag)}>, not <archive>"
        )
    core: FileSpec | None = None
    extensions: list[FileSpec] = []
    for block in root:
        tag = _local(block.tag)
        if tag == "core":
            if core is not None:
                raise ArchiveRejected(f"{where}: meta.xml has more than one <core>")
            core = _file_spec(block, where)
        elif tag == "extension":
            extensions.append(_file_spec(block, where))
    occurrences = [e for e in extensions if _is(e.row_type, OCCURRENCE_ROWTYPE)]
    media = [e for e in extensions if _is(e.row_type, *MULTIMEDIA_ROWTYPES)]
    others = [e for e in extensions if e not in occurrences and e not in media]
    layout = _records_layout(core, occurrences, extensions, where)
    others.extend(o for o in occurrences if o not in (layout.records, layout.verbatim))
    if media:
        if len(media) > 1 and any(_is_verbatim_twin(m) for m in media):
            first, twin = _twins(media)
            layout.media = [twin or first]
        else:
            layout.media = media
    layout.extensions = others
    layout.metadata = (root.get("metadata") or "").strip() or None
    return layout


def _records_layout(
    core: FileSpec | None,
    occurrences: list[FileSpec],
    extensions: list[FileSpec],
    where: str,
) -> ArchiveLayout:
    """Which file's rows are the records, and which files add to them."""
    if core is None:
        # iDigBio's downloads: no <core>; every block is an extension keyed by its coreid.
        if not occurrences:
            kinds = ", ".join(sorted({e.row_type for e in extensions})) or "no files"
            raise ArchiveRejected(
                f"{where}: meta.xml has no <core> and no Occurrence file ({kinds}); "
                "only archives holding occurrences can be ingested"
            )
        records, verbatim = _twins(occurrences)
        idigbio = any(f.term.startswith("idigbio:") for f in records.fields)
        return ArchiveLayout(records=records, verbatim=verbatim, idigbio=idigbio)
    if _is(core.row_type, OCCURRENCE_ROWTYPE):
        return ArchiveLayout(records=core, verbatim=occurrences[0] if occurrences else None)
    if _is(core.row_type, EVENT_ROWTYPE):
        if occurrences:
            return ArchiveLayout(records=occurrences[0], event=core)
        raise ArchiveRejected(
            f"{where}: an Event core with no Occurrence extension holds no occurrences; "
            "only archives holding occurrences can be ingested"
        )
    kind = core.row_type or "(no rowType)"
    hint = " (a checklist)" if _is(core.row_type, "http://rs.tdwg.org/dwc/terms/Taxon") else ""
    raise ArchiveRejected(
        f"{where}: the core rowType is {kind}{hint} and no Occurrence file is in the archive; "
        f"only archives holding occurrences ({OCCURRENCE_ROWTYPE}) can be ingested"
    )


# --- bare CSV files (no meta.xml) ------------------------------------------------------------


def header_lookup() -> dict[str, str]:
    """Lower-cased local names of known Darwin Core terms -> their short names."""
    lookup: dict[str, str] = {}
    for rtype in ("records", "mediarecords"):
        for f in fields(rtype):
            for term in (f.source_term, f.csv_header):
                if term and term.startswith("dwc:"):
                    lookup.setdefault(term[4:].lower(), term)
    for local in _EXTRA_DWC_TERMS:
        lookup.setdefault(local.lower(), "dwc:" + local)
    return lookup


def header_term(header: str, lookup: dict[str, str]) -> str:
    """The short term name for a bare CSV's header cell (``decimallatitude`` ->
    ``dwc:decimalLatitude``); a URI or prefixed name is shortened, anything else kept."""
    text = header.strip().strip('"').strip()
    if "://" in text:
        return short_term(text)
    if ":" in text:
        return text
    return lookup.get(text.lower(), text)


def _bare_layout(files: ArchiveFiles, where: str) -> ArchiveLayout:
    candidates = files.data_files()
    if not candidates:
        raise ArchiveRejected(f"{where}: no meta.xml and no delimited text file to read")
    if len(candidates) > 1:
        names = ", ".join(candidates[:5])
        raise ArchiveRejected(
            f"{where}: no meta.xml, and several data files ({names}): say which is the core "
            "in a meta.xml"
        )
    name = candidates[0]
    with files.open(name) as f:
        first = f.readline(1 << 20)
    delimiter = "\t" if b"\t" in first else ","
    spec = FileSpec(
        location=name,
        row_type=OCCURRENCE_ROWTYPE,
        fields=(),
        delimiter=delimiter,
        quote='"',
        header_lines=1,
        header_names_terms=True,
    )
    return ArchiveLayout(records=spec)


# --- the entry point -------------------------------------------------------------------------


@dataclass
class OpenedArchive:
    """An archive's files and layout, its EML and its identity."""

    files: ArchiveFiles
    layout: ArchiveLayout
    eml: str | None
    recordset_id: str
    name: str
    source: str


def _eml_identity(eml: str | None) -> tuple[str | None, str | None]:
    """(packageId or first alternateIdentifier, dataset title) from EML text."""
    if not eml:
        return None, None
    try:
        root = ET.fromstring(eml.encode("utf-8"))
    except ET.ParseError:
        return None, None
    ident = (root.get("packageId") or "").strip() or None
    title = None
    for el in root.iter():
        tag = _local(el.tag)
        if tag == "alternateIdentifier" and ident is None and (el.text or "").strip():
            ident = (el.text or "").strip()
        if tag == "title" and title is None and (el.text or "").strip():
            title = " ".join((el.text or "").split())
    return ident, title


def _eml_text(raw: bytes) -> str:
    """EML bytes as text, in the encoding its XML declaration names."""
    head = raw[:200].decode("ascii", "replace")
    encoding = "utf-8"
    marker = head.find("encoding=")
    if marker >= 0:
        rest = head[marker + len("encoding=") :]
        if rest[:1] in ("'", '"'):
            encoding = rest[1:].split(rest[0], 1)[0] or "utf-8"
    try:
        text = raw.decode(encoding)
    except (LookupError, UnicodeDecodeError):
        text = raw.decode("utf-8", "replace")
    # The text is stored as a string: an encoding declaration would now be wrong.
    if text.startswith("<?xml"):
        end = text.find("?>")
        if end > 0:
            text = '<?xml version="1.0" encoding="UTF-8"?>' + text[end + 2 :]
    return text


def _archive_stem(path: Path) -> str:
    name = path.name
    for suffix in (".zip", ".ZIP", *_DATA_SUFFIXES):
        if name.lower().endswith(suffix.lower()):
            return name[: -len(suffix)]
    return name


def open_archive(path: str | Path, *, recordset_id: str | None = None) -> OpenedArchive:
    """Open an archive and read its descriptor and EML (no data rows are read).

    Raises :class:`ArchiveRejected` when it cannot be read or holds no occurrences. The
    caller closes ``files``.
    """
    p = Path(path)
    if not p.exists():
        raise ArchiveRejected(f"{p}: no such file or directory")
    files = ArchiveFiles(p)
    try:
        if files.has_meta():
            layout = parse_meta(files.read_text(_META), p.name)
        else:
            layout = _bare_layout(files, p.name)
        eml = None
        if layout.metadata:
            if files.exists(layout.metadata):
                with files.open(layout.metadata) as f:
                    eml = _eml_text(f.read())
            else:
                layout.warnings.append(
                    f"meta.xml names the metadata file {layout.metadata}, which is not in the "
                    "archive; the recordset is loaded without EML"
                )
        elif files.kind != "file" and files.exists("eml.xml"):
            with files.open("eml.xml") as f:
                eml = _eml_text(f.read())
        for spec in _all_files(layout):
            if not files.exists(spec.location):
                raise ArchiveRejected(
                    f"{p.name}: meta.xml names {spec.location}, which is not in the archive"
                )
    except ArchiveRejected:
        files.close()
        raise
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        files.close()
        raise ArchiveRejected(f"{p.name}: not a readable Darwin Core Archive ({exc})") from exc
    package_id, title = _eml_identity(eml)
    return OpenedArchive(
        files=files,
        layout=layout,
        eml=eml,
        recordset_id=recordset_id or package_id or _archive_stem(p),
        name=title or _archive_stem(p),
        source=str(p),
    )


def _all_files(layout: ArchiveLayout) -> list[FileSpec]:
    specs = [layout.records]
    specs += [s for s in (layout.verbatim, layout.event) if s is not None]
    return specs + layout.media + layout.extensions


__all__ = [
    "ID_COLUMN",
    "MULTIMEDIA_ROWTYPES",
    "OCCURRENCE_ROWTYPE",
    "ROW_COLUMN",
    "ArchiveFiles",
    "ArchiveLayout",
    "ArchiveRejected",
    "FieldSpec",
    "FileSpec",
    "OpenedArchive",
    "VerbatimArchive",
    "header_lookup",
    "header_term",
    "open_archive",
    "parse_meta",
]
