"""Reading Darwin Core Archives for ingest: the core, a multimedia extension and the EML.

An archive (a zip or a folder) is read with python-dwca-reader into a :class:`VerbatimArchive`:
two Arrow tables of verbatim strings, one column per term (short names such as
``dwc:scientificName``), ready for :mod:`downloader.ingest.derive` to derive the index fields.

Only archives whose core rowType is Occurrence are accepted; any other core (Taxon, Event, ...)
raises :class:`ArchiveRejected` naming the archive and its rowType. An archive without
``meta.xml`` (a bare CSV file) is read as an Occurrence core whose headers are Darwin Core
term names, matched case-insensitively (GBIF's "simple" downloads use ``decimallatitude``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from dwca.read import DwCAReader

from downloader.errors import DownloaderError
from query.fields import fields, short_term

OCCURRENCE_ROWTYPE = "http://rs.tdwg.org/dwc/terms/Occurrence"
#: Extension rowTypes read as media records: Audubon Core and GBIF's Simple Multimedia.
MULTIMEDIA_ROWTYPES = (
    "http://rs.tdwg.org/ac/terms/Multimedia",
    "http://rs.gbif.org/terms/1.0/Multimedia",
)

#: Column holding the core id (records) or the core id a media row points to (media).
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


class ArchiveRejected(DownloaderError):
    """An archive cannot be ingested (unreadable, or its core is not Occurrence)."""


@dataclass
class VerbatimArchive:
    """One archive's verbatim content.

    ``core`` has :data:`ID_COLUMN`, :data:`ROW_COLUMN` and one string column per term;
    ``media`` (or None when the archive has no multimedia extension) has :data:`ID_COLUMN`
    (the core id each media row belongs to), :data:`ROW_COLUMN` and its term columns.
    """

    source: str
    recordset_id: str
    name: str
    eml: str | None
    core: pa.Table
    media: pa.Table | None


def _header_lookup() -> dict[str, str]:
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


def _term_name(term: str, *, bare_csv: bool, lookup: dict[str, str]) -> str:
    """The short term name stored in ``data`` for a meta.xml term URI or a CSV header."""
    if bare_csv and "://" not in term and ":" not in term:
        return lookup.get(term.strip().lower(), term.strip())
    return short_term(term)


def _eml_text(reader: DwCAReader) -> str | None:
    name = reader.descriptor.metadata_filename if reader.descriptor is not None else None
    if not name:
        return None
    try:
        with reader.open_included_file(name) as f:
            data = f.read()
    except (OSError, KeyError):
        return None
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


def _eml_identity(eml: str | None) -> tuple[str | None, str | None]:
    """(packageId or first alternateIdentifier, dataset title) from EML text."""
    if not eml:
        return None, None
    try:
        root = ET.fromstring(eml)
    except ET.ParseError:
        return None, None
    ident = (root.get("packageId") or "").strip() or None
    title = None
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "alternateIdentifier" and ident is None and (el.text or "").strip():
            ident = (el.text or "").strip()
        if tag == "title" and title is None and (el.text or "").strip():
            title = " ".join((el.text or "").split())
    return ident, title


def _archive_stem(path: Path) -> str:
    name = path.name
    for suffix in (".zip", ".ZIP"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _columns_to_table(
    ids: list[str | None], rows: list[dict[str, str]], order: list[str]
) -> pa.Table:
    """A table of string columns; empty (whitespace-only) values become nulls."""
    cols: dict[str, list[str | None]] = {name: [] for name in order}
    for row in rows:
        for name in order:
            value = row.get(name)
            cols[name].append(value if value is not None and value.strip() else None)
    arrays = {
        ID_COLUMN: pa.array([i if i is not None and i.strip() else None for i in ids], pa.string()),
        ROW_COLUMN: pa.array(range(len(ids)), pa.int64()),
    }
    for name in order:
        arrays[name] = pa.array(cols[name], pa.string())
    return pa.table(arrays)


def read_archive(path: str | Path, *, recordset_id: str | None = None) -> VerbatimArchive:
    """Read an Occurrence-core archive (zip or folder) into verbatim Arrow tables.

    Raises :class:`ArchiveRejected` when the archive cannot be read or its core is not an
    Occurrence core.
    """
    p = Path(path)
    if not p.exists():
        raise ArchiveRejected(f"{p}: no such file or directory")
    lookup = _header_lookup()
    try:
        with DwCAReader(str(p)) as reader:
            core_fd = reader.core_file.file_descriptor
            bare_csv = core_fd.type is None
            if not bare_csv and core_fd.type != OCCURRENCE_ROWTYPE:
                raise ArchiveRejected(
                    f"{p.name}: the core rowType is {core_fd.type}; only Occurrence cores "
                    f"({OCCURRENCE_ROWTYPE}) can be ingested"
                )
            eml = _eml_text(reader)
            core_ids: list[str | None] = []
            core_rows: list[dict[str, str]] = []
            core_order: dict[str, None] = {}
            names: dict[str, str] = {}
            for row in reader.core_file.iter_rows():
                data: dict[str, str] = {}
                for term, value in row.data.items():
                    name = names.get(term)
                    if name is None:
                        name = names[term] = _term_name(term, bare_csv=bare_csv, lookup=lookup)
                        core_order.setdefault(name, None)
                    data[name] = value
                core_ids.append(row.id)
                core_rows.append(data)
            core = _columns_to_table(core_ids, core_rows, list(core_order))

            media: pa.Table | None = None
            for ext in reader.extension_files:
                if ext.file_descriptor.type not in MULTIMEDIA_ROWTYPES:
                    continue
                m_ids: list[str | None] = []
                m_rows: list[dict[str, str]] = []
                m_order: dict[str, None] = {}
                for row in ext.iter_rows():
                    data = {}
                    for term, value in row.data.items():
                        name = short_term(term)
                        m_order.setdefault(name, None)
                        data[name] = value
                    m_ids.append(row.core_id)
                    m_rows.append(data)
                table = _columns_to_table(m_ids, m_rows, list(m_order))
                media = (
                    table
                    if media is None
                    else pa.concat_tables([media, table], promote_options="default")
                )
    except ArchiveRejected:
        raise
    except Exception as exc:  # python-dwca-reader raises many kinds of errors for bad input
        raise ArchiveRejected(f"{p.name}: not a readable Darwin Core Archive ({exc})") from exc

    package_id, title = _eml_identity(eml)
    rs_id = recordset_id or package_id or _archive_stem(p)
    return VerbatimArchive(
        source=str(p),
        recordset_id=rs_id,
        name=title or _archive_stem(p),
        eml=eml,
        core=core,
        media=media,
    )
