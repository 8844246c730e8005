"""Darwin Core Archive vocabulary: file names, row types, columns, ids and citation text.

The service builds an :class:`~archive.models.ArchiveSpec` with these helpers, so that names
and terms come from one place (and from the field catalogue in :mod:`query.fields`).

File names are iDigBio's: ``occurrence.csv``, ``occurrence_raw.csv``, ``multimedia.csv``,
``multimedia_raw.csv``, ``locality.csv``, ``names.csv`` (``.tsv`` for the ``dwca-tsv`` and
``tsv`` forms, ``.parquet`` for ``parquet``), ``records.citation.txt``,
``mediarecords.citation.txt``, ``citations.txt``, ``rights.txt``, ``meta.xml`` (``meta.json``
for ``parquet``), ``eml.xml``.

Row types: records are ``dwc:Occurrence``; media records are
``http://rs.tdwg.org/ac/terms/Multimedia``, the Audubon Core class as GBIF's Audubon Media
Description extension registers it (iDigBio wrote ``.../ac/terms/multimedia`` in lower
case, which names no class); ``uniquelocality`` is ``dwc:Location`` and ``uniquenames``
``dwc:Taxon``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from archive.models import COREID, Citation, Column, EmlInfo, Form, RecordsetCredit
from query import fields as catalogue
from query.fields import RecordType

#: The iDigBio ``core_type`` values.
CoreType = Literal["records", "mediarecords", "uniquelocality", "uniquenames"]
UniqueCoreType = Literal["uniquelocality", "uniquenames"]

OCCURRENCE = "http://rs.tdwg.org/dwc/terms/Occurrence"
MULTIMEDIA = "http://rs.tdwg.org/ac/terms/Multimedia"
LOCATION = "http://rs.tdwg.org/dwc/terms/Location"
TAXON = "http://rs.tdwg.org/dwc/terms/Taxon"

#: meta.xml ``rowType`` of each core type's rows.
ROW_TYPES: dict[CoreType, str] = {
    "records": OCCURRENCE,
    "mediarecords": MULTIMEDIA,
    "uniquelocality": LOCATION,
    "uniquenames": TAXON,
}

#: The type of each catalogue kind in a Parquet file: the batches' own types (see
#: ``RecordSource.batches``), with dates marked as UTC, which they are.
ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "longtext": pa.string(),
    "list": pa.list_(pa.string()),
    "integer": pa.int64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.timestamp("us", tz="UTC"),
    "point": pa.struct([("lat", pa.float64()), ("lon", pa.float64())]),
}

#: uuid5 namespaces of the ids of distinct values (iDigBio's ``identification.py``).
LOCALITY_NAMESPACE = uuid.UUID("e8518454-3e95-5e2f-95b4-e4b25c6ebb53")
NAMES_NAMESPACE = uuid.UUID("90181196-fecf-5082-a4c1-411d4f314cda")

_UNIQUE: dict[UniqueCoreType, tuple[str, uuid.UUID, Column]] = {
    "uniquelocality": (
        "locality",
        LOCALITY_NAMESPACE,
        Column("dwc:locality", catalogue.term_uri("dwc:locality"), pa.string()),
    ),
    "uniquenames": (
        "names",
        NAMES_NAMESPACE,
        Column("dwc:scientificName", catalogue.term_uri("dwc:scientificName"), pa.string()),
    ),
}
_ITEM_COUNT = Column("idigbio:itemCount", catalogue.term_uri("idigbio:itemCount"), pa.int64())
_BASE_NAMES: dict[RecordType, str] = {"records": "occurrence", "mediarecords": "multimedia"}

META_XML = "meta.xml"
#: The descriptor of a ``parquet`` archive (see :func:`archive.meta.meta_json`).
META_JSON = "meta.json"
EML_XML = "eml.xml"
CITATIONS_TXT = "citations.txt"
RIGHTS_TXT = "rights.txt"
#: What citations.txt and rights.txt say of a recordset whose metadata states no rights.
RIGHTS_NOT_STATED = "not stated in the recordset's metadata"


#: GBIF's names for the files of its DWCA downloads (``dwca-gbif``), by (type, raw).
_GBIF_NAMES: dict[tuple[RecordType, bool], str] = {
    ("records", False): "occurrence.txt",
    ("records", True): "verbatim.txt",
    ("mediarecords", False): "multimedia.txt",
    ("mediarecords", True): "multimedia_verbatim.txt",
}


def file_extension(form: Form) -> str:
    """The extension of the data files of ``form``: ``csv``, ``tsv``, ``txt`` (GBIF's DWCA)
    or ``parquet``; GBIF's simple download is tab-separated and named ``.csv``."""
    if form == "dwca-gbif":
        return "txt"
    if is_parquet(form):
        return "parquet"
    return "tsv" if form.endswith("tsv") else "csv"


def is_parquet(form: Form) -> bool:
    """Whether the data files of ``form`` are Parquet (``parquet``, ``simple-parquet``)."""
    return form in ("parquet", "simple-parquet")


def delimiter(form: Form) -> str:
    """The field delimiter of ``form``: a comma, or a tab for the tsv and GBIF forms."""
    return "\t" if form.endswith("tsv") or form in ("dwca-gbif", "simple-csv") else ","


def is_zip(form: Form) -> bool:
    """Whether ``form`` is an archive of every data file with a descriptor, EML and
    citations: the Darwin Core Archives (``dwca-*``, described by meta.xml) and ``parquet``
    (their files as Parquet, described by :data:`META_JSON`), rather than one data file."""
    return form.startswith("dwca") or form == "parquet"


def descriptor_name(form: Form) -> str:
    """The archive descriptor's name: ``meta.xml``, or ``meta.json`` for ``parquet`` (the
    text guidelines' meta.xml can only describe delimited text files)."""
    return META_JSON if form == "parquet" else META_XML


def is_packed(form: Form) -> bool:
    """Whether ``form`` is one data file inside a zip (GBIF's simple downloads)."""
    return form.startswith("simple-")


def metadata_file_name(form: Form) -> str:
    """The EML document's name: ``eml.xml``, or ``metadata.xml`` as GBIF names it."""
    return "metadata.xml" if form == "dwca-gbif" else EML_XML


def media_type(form: Form) -> str:
    """The HTTP content type of what :func:`~archive.writer.write_archive` writes."""
    if is_zip(form) or is_packed(form):
        return "application/zip"
    return "text/tab-separated-values" if form == "tsv" else "text/csv"


def data_file_name(rtype: RecordType, *, raw: bool = False, form: Form = "dwca-csv") -> str:
    """``occurrence.csv``, ``occurrence_raw.csv``, ``multimedia.csv`` or ``multimedia_raw.csv``
    (GBIF's ``occurrence.txt``, ``verbatim.txt``, ``multimedia.txt`` for ``dwca-gbif``)."""
    if form == "dwca-gbif":
        return _GBIF_NAMES[(rtype, raw)]
    suffix = "_raw" if raw else ""
    return f"{_BASE_NAMES[rtype]}{suffix}.{file_extension(form)}"


def unique_file_name(core_type: UniqueCoreType, form: Form = "dwca-csv") -> str:
    """``locality.csv`` or ``names.csv`` (``.tsv`` for the tsv forms)."""
    return f"{_UNIQUE[core_type][0]}.{file_extension(form)}"


def citation_file_name(rtype: RecordType) -> str:
    """``records.citation.txt`` or ``mediarecords.citation.txt``."""
    return f"{rtype}.citation.txt"


def index_columns(rtype: RecordType, field_names: Sequence[str]) -> list[Column]:
    """The columns of an indexed data file: ``coreid``, then one per index field.

    Headers are the catalogue's long names (``dwc:scientificName``, ``idigbio:geoPoint``) and
    term URIs the catalogue's. Raises ValueError naming a field the catalogue lacks.
    """
    columns = [COREID]
    for name in field_names:
        found = catalogue.get_field(rtype, name)
        if found is None:
            raise ValueError(f"{name!r} is not an indexed {rtype} field")
        columns.append(Column(found.csv_header, found.term_uri, ARROW_TYPES[found.kind]))
    return columns


#: Where the declared URI of a verbatim column whose term shares its local name with a
#: more standard one of the same file is made (see :func:`raw_columns`).
VERBATIM_NAMESPACE = "http://portal.idigbio.org/terms/verbatim/"
#: Namespaces whose terms keep their URI when a verbatim file has two terms of one local
#: name (Darwin Core, Audubon Core and the other TDWG vocabularies, DCMI terms).
_STANDARD = ("http://rs.tdwg.org/", "http://purl.org/dc/terms/")


def local_name(term_uri: str) -> str:
    """A term URI's local name as readers that key columns by it take it (ALA's
    dwcahandler): the last path segment, with ``_<fragment>`` when there is a fragment."""
    head, _, fragment = term_uri.partition("#")
    name = re.split(r"[/:]", head)[-1]
    return f"{name}_{fragment}" if fragment else name


def raw_columns(terms: Sequence[str]) -> list[Column]:
    """The columns of a verbatim data file: ``coreid``, then one per term.

    The header is the term name as published (``dwc:scientificName``) and its URI comes from
    :func:`query.fields.term_uri` (an unknown prefix keeps the name, as iDigBio does).

    Recordsets publish terms of one local name under several URIs (``dc:type`` and
    ``dcterms:type``; ``http://`` and ``https://`` spellings of a community namespace), and
    a file holding both cannot be read by readers that key columns by local name (ALA's
    dwcahandler refuses the archive). So within one file each local name (compared
    case-insensitively) is declared once with its published URI: a TDWG or DCMI terms URI
    first, else the first in file order; any other column of that local name is declared as
    :data:`VERBATIM_NAMESPACE` followed by its header made a name (``dc_type``). Headers
    and values stay as published.
    """
    uris = [catalogue.term_uri(term) for term in terms]
    ranked = sorted(range(len(uris)), key=lambda i: (not uris[i].startswith(_STANDARD), i))
    taken = {"coreid", "id"}  # column 0's names in such readers
    declared = list(uris)
    for i in ranked:
        name = local_name(uris[i]).lower()
        if name in taken:
            stem = re.sub(r"[^A-Za-z0-9]+", "_", terms[i]).strip("_") or "term"
            candidate, n = stem, 1
            while candidate.lower() in taken:
                n += 1
                candidate = f"{stem}_{n}"
            declared[i] = VERBATIM_NAMESPACE + candidate
            name = candidate.lower()
        taken.add(name)
    return [
        COREID,
        *(Column(term, uri, pa.string()) for term, uri in zip(terms, declared, strict=True)),
    ]


def unique_columns(core_type: UniqueCoreType) -> list[Column]:
    """``coreid``, the value (``dwc:locality`` or ``dwc:scientificName``), ``idigbio:itemCount``.

    The first header is ``coreid`` like in every other data file (iDigBio wrote ``id`` here).
    """
    return [COREID, _UNIQUE[core_type][2], _ITEM_COUNT]


def unique_id(core_type: UniqueCoreType, value: str) -> str:
    """The stable id of a distinct value: uuid5 in iDigBio's namespace for that core type."""
    return str(uuid.uuid5(_UNIQUE[core_type][1], value))


def unique_ids(core_type: UniqueCoreType, values: pa.Array) -> pa.Array:
    """:func:`unique_id` of every value of a string array (nulls stay null).

    Each distinct value is hashed once, so extension batches can cheaply be given the id
    of their core row as ``coreid``.
    """
    distinct = pc.unique(values).drop_null()
    ids = pa.array([unique_id(core_type, v) for v in distinct.to_pylist()], pa.string())
    return pc.take(ids, pc.index_in(values, value_set=distinct))


def unique_value_batches(
    core_type: UniqueCoreType, batches: Iterable[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """Core batches for ``uniquelocality``/``uniquenames`` from ``(value, count)`` batches.

    ``batches`` are what ``RecordSource.unique_values`` yields (column 0 the value, column 1
    its count); each becomes ``(coreid, value, count)`` matching :func:`unique_columns`.
    """
    for batch in batches:
        values = batch.column(0)
        yield pa.RecordBatch.from_arrays(
            [unique_ids(core_type, values), values, batch.column(1)],
            names=["coreid", "value", "count"],
        )


def render_citation(citation: Citation, *, publisher: str, accessed: datetime) -> str:
    """The text of a citation file, in iDigBio's layout with our publisher.

    ``publisher`` replaces iDigBio's portal URL on the first line; ``accessed`` (UTC; naive
    means UTC) is written in ISO 8601 with its offset. Recordsets are listed by count,
    largest first, then by id, one per line, and the text ends with a newline.
    """
    if accessed.tzinfo is None:
        accessed = accessed.replace(tzinfo=UTC)
    accessed = accessed.astimezone(UTC)
    ordered = sorted(citation.recordset_counts.items(), key=lambda item: (-item[1], item[0]))
    lines = [
        f"{publisher} ({accessed.year}),",
        f"Query: {citation.query_text},",
        f"{citation.total} records, accessed on {accessed.isoformat()},",
        f"contributed by {len(ordered)} Recordsets, Recordset identifiers:",
    ]
    template = citation.recordset_url_template or "{id}"
    lines += [f"{template.format(id=rs)} ({count} records)" for rs, count in ordered]
    return "\n".join(lines) + "\n"


def _ordered(credits: Sequence[RecordsetCredit]) -> list[RecordsetCredit]:
    return sorted(credits, key=lambda c: (-c.count, c.recordset))


def render_citations(
    info: EmlInfo, credits: Sequence[RecordsetCredit], *, accessed: datetime
) -> str:
    """The text of ``citations.txt``: a citation of the download people can paste, then one
    per recordset (largest first, then by id) with its name, link and rights where known.

    ``info`` gives the publisher, title and counts (the writer passes the counts actually
    written); ``accessed`` (naive means UTC) is the archive's date.
    """
    if accessed.tzinfo is None:
        accessed = accessed.replace(tzinfo=UTC)
    day = accessed.astimezone(UTC).date().isoformat()
    publisher = info.publisher_name or info.publisher_url
    where = f" {info.publisher_url}" if info.publisher_url else ""
    lines = [
        "When using this download please cite it as follows, and respect the rights of each",
        "recordset listed in rights.txt:",
        "",
        f"{publisher} ({day[:4]}). {info.title}. {info.record_count} records and "
        f"{info.media_count} media records from {len(credits)} recordsets, accessed on "
        f"{day}.{where}",
        "",
        "Recordsets that contributed records:",
    ]
    for credit in _ordered(credits):
        parts = [
            f"{credit.name} (recordset {credit.recordset})" if credit.name else credit.recordset
        ]
        if credit.url:
            parts.append(credit.url)
        parts.append(f"{credit.count} records in this download")
        parts.append(f"Rights: {credit.rights or RIGHTS_NOT_STATED}")
        lines.append(". ".join(_one_line(p).rstrip(".") for p in parts) + ".")
    return "\n".join(lines) + "\n"


def render_rights(info: EmlInfo, credits: Sequence[RecordsetCredit]) -> str:
    """The text of ``rights.txt``: the download's intellectual rights statement, then the
    rights each recordset's publisher states (largest recordset first, then by id)."""
    lines = [
        f"Rights of this download: {_one_line(info.intellectual_rights) or RIGHTS_NOT_STATED}",
        "",
        "Rights of each recordset, as its publisher states them:",
    ]
    for credit in _ordered(credits):
        label = f"{credit.recordset} ({credit.name})" if credit.name else credit.recordset
        lines.append(f"{_one_line(label)}: {_one_line(credit.rights) or RIGHTS_NOT_STATED}")
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    # Each entry is one line, so a pasted citation or a script reading line by line keeps it.
    return " ".join(text.split())
