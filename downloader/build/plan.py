"""Planning an archive: which files, which columns, which readers, and its names.

:func:`plan_archive` turns a job's canonical request into an :class:`~archive.ArchiveSpec`
(data files with their columns and batch readers over the record source), the counts and
the recordsets it holds; :func:`archive_filename` and :func:`archive_key` name the result.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from archive import (
    ArchiveError,
    ArchiveSpec,
    Citation,
    Column,
    DataFile,
    EmlInfo,
    RecordsetCredit,
    dwca,
)
from archive.eml import stated_rights
from downloader.backends import Context
from downloader.build.deletions import deleted_file
from downloader.interfaces import EXPORT_KEY_PREFIX, RecordSource
from downloader.models import Job, now_utc
from query import fields as catalogue
from query import gbif
from query.fields import RecordType


def _split_fields(names: Sequence[str] | None) -> tuple[list[str] | None, list[str] | None]:
    """``record_fields`` -> (index fields, verbatim terms); None means "all" for both."""
    if names is None:
        return None, None
    index = [n for n in names if not n.startswith("data.")]
    raw = [n[len("data.") :] for n in names if n.startswith("data.")]
    return index, raw


def _media_ids(
    batches: Iterable[pa.RecordBatch], position: int, *, drop: bool
) -> Iterable[pa.RecordBatch]:
    """Put the media uuid (column ``position``) into column 0 in place of the parent
    record's uuid, dropping its own column when it was only fetched for this. When media
    records are the core, their own uuid is the row id."""
    for batch in batches:
        columns = list(batch.columns)
        names = list(batch.schema.names)
        columns[0] = columns[position]
        if drop:
            del columns[position], names[position]
        yield pa.RecordBatch.from_arrays(columns, names=names)


def _types_read(core_type: str, form: dwca.Form) -> list[RecordType]:
    """The record types whose rows an archive of ``core_type`` in ``form`` reads (as
    :func:`plan_archive` picks its files below)."""
    if dwca.is_packed(form):
        return ["records"]
    if core_type in ("uniquelocality", "uniquenames"):
        return []
    if core_type == "mediarecords":
        return ["mediarecords"]
    return ["records", "mediarecords"]


@dataclass(frozen=True)
class ArchivePlan:
    """What :func:`plan_archive` decided: the archive's spec, the counts per record type,
    and the rows per recordset."""

    spec: ArchiveSpec
    counts: dict[str, int]
    recordsets: dict[str, int]


def _readers(
    src: RecordSource,
    rtype: RecordType,
    rq: dict[str, Any] | None,
    mq: dict[str, Any] | None,
    reads: Sequence[tuple[list[str], list[str]]],
    batch_size: int,
) -> list[Callable[[], Iterable[pa.RecordBatch]]]:
    """One batches factory per ``(fields, raw_terms)`` read of the same documents. A source
    that can serve several such reads from one pass (``shared_batches``: the search cluster,
    where every pass sends each document over HTTP as JSON) does; otherwise each factory
    reads on its own."""
    shared = getattr(src, "shared_batches", None)
    if shared is not None and len(reads) > 1:
        factories: list[Callable[[], Iterable[pa.RecordBatch]]] = shared(
            rtype, rq, mq, reads, batch_size=batch_size
        )
        return factories
    return [
        functools.partial(
            src.batches, rtype, rq, mq, fields=fields, raw_terms=terms, batch_size=batch_size
        )
        for fields, terms in reads
    ]


def _no_rows() -> Iterable[pa.RecordBatch]:
    return iter(())


def _type_files(
    src: RecordSource,
    rtype: RecordType,
    request: dict[str, Any],
    *,
    own_id: bool,
    count: int | None = None,
) -> tuple[DataFile | None, DataFile | None]:
    """The indexed and the verbatim file of one record type (either may be None when the
    request's field list leaves it empty). With a ``count`` of 0 nothing is read: the files
    are their header lines, as a read of no rows would write them."""
    rq, mq = request.get("rq"), request.get("mq")
    form = request.get("form", "dwca-csv")
    listed = request.get("record_fields" if rtype == "records" else "mediarecord_fields")
    index_fields, raw_terms = _split_fields(listed)
    if index_fields is None:
        # iDigBio orders the indexed columns by index field name; scripts written against its
        # archives pick columns by position (idigbio:geoPoint is column 37), so we do too.
        index_fields = sorted(catalogue.field_names(rtype))
    # Without a field list the verbatim file is always written, header only when no
    # matching row has a verbatim term (an empty result), so that every download has the
    # same file set and scripts opening occurrence_raw.csv do not break on an empty result.
    every_file = raw_terms is None
    if raw_terms is None:
        raw_terms = src.raw_terms(rtype, rq, mq)
    row_type = dwca.OCCURRENCE if rtype == "records" else dwca.MULTIMEDIA
    batch_size = request.get("_batch_size", 10_000)

    # What each file reads: (index fields, verbatim terms). Media records as the core need
    # their own uuid for the id column: fetched at the end (and dropped) when the field list
    # does not name it, copied from its own column when it does.
    fields_ = list(index_fields)
    listed_uuid = "uuid" in fields_
    fetch = fields_ if listed_uuid or not own_id else [*fields_, "uuid"]
    terms = list(raw_terms)
    reads: list[tuple[list[str], list[str]]] = []
    if fields_:
        reads.append((fetch, []))
    if terms:
        reads.append((["uuid"] if own_id else [], terms))
    readers = (
        [_no_rows] * len(reads) if count == 0 else _readers(src, rtype, rq, mq, reads, batch_size)
    )

    indexed: DataFile | None = None
    if fields_:
        read_indexed = readers[0]
        columns = dwca.index_columns(rtype, fields_)
        position = 1 + fetch.index("uuid") if own_id else 0

        def make_indexed() -> Iterable[pa.RecordBatch]:
            if own_id:
                return _media_ids(read_indexed(), position, drop=not listed_uuid)
            return read_indexed()

        indexed = DataFile(
            dwca.data_file_name(rtype, form=form), row_type, columns, make_indexed, kind=rtype
        )

    raw: DataFile | None = None
    if terms or every_file:
        read_raw = readers[-1] if terms else None
        raw_cols: list[Column] = dwca.raw_columns(terms)

        def make_raw() -> Iterable[pa.RecordBatch]:
            if read_raw is None:
                return iter(())
            if own_id:
                return _media_ids(read_raw(), 1, drop=True)
            return read_raw()

        raw = DataFile(
            dwca.data_file_name(rtype, raw=True, form=form),
            row_type,
            raw_cols,
            make_raw,
            kind=rtype,
        )
    return indexed, raw


def _extension_files(src: RecordSource, request: dict[str, Any], taken: set[str]) -> list[DataFile]:
    """The verbatim extensions (Identification, MeasurementOrFact, ...) of the matching
    records, one file per rowType named after it (``identification.csv``), each row keyed
    by its record's uuid. Only a source that keeps extensions (both sources do) has
    them; ``extensions=false`` leaves them out."""
    listing = getattr(src, "extension_files", None)
    read = getattr(src, "extension_batches", None)
    if not callable(listing) or not callable(read) or not request.get("extensions", True):
        return []
    rq, mq = request.get("rq"), request.get("mq")
    form = request.get("form", "dwca-csv")
    batch_size = request.get("_batch_size", 10_000)
    out = []
    for extension in listing(rq, mq):
        if not extension.terms:
            continue
        local = extension.row_type.rstrip("/").rsplit("/", 1)[-1] or extension.name
        stem = re.sub(r"[^a-z0-9]+", "_", local.lower()).strip("_") or "extension"
        name = f"{stem}.{dwca.file_extension(form)}"
        while name in taken:
            stem += "_extension"
            name = f"{stem}.{dwca.file_extension(form)}"
        taken.add(name)
        out.append(
            DataFile(
                name,
                extension.row_type,
                dwca.raw_columns(extension.terms),
                functools.partial(read, extension, rq, mq, batch_size=batch_size),
                kind="other",
            )
        )
    return out


#: GBIF's simple download columns we can fill, and the index field each comes from
#: (``None``: computed from another column, see :func:`_simple_batches`).
SIMPLE_COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("gbifID", None),  # the record's uuid
    ("datasetKey", "recordset"),
    ("occurrenceID", "occurrenceid"),
    ("kingdom", "kingdom"),
    ("phylum", "phylum"),
    ("class", "class"),
    ("order", "order"),
    ("family", "family"),
    ("genus", "genus"),
    ("specificEpithet", "specificepithet"),
    ("infraspecificEpithet", "infraspecificepithet"),
    ("taxonRank", "taxonrank"),
    ("scientificName", "scientificname"),
    ("countryCode", "countrycode"),
    ("locality", "locality"),
    ("stateProvince", "stateprovince"),
    ("individualCount", "individualcount"),
    ("decimalLatitude", None),  # from geopoint
    ("decimalLongitude", None),
    ("coordinateUncertaintyInMeters", "coordinateuncertainty"),
    ("elevation", "minelevation"),
    ("depth", "mindepth"),
    ("eventDate", "datecollected"),
    ("year", None),  # of datecollected
    ("basisOfRecord", "basisofrecord"),
    ("institutionCode", "institutioncode"),
    ("collectionCode", "collectioncode"),
    ("catalogNumber", "catalognumber"),
    ("recordNumber", "recordnumber"),
    ("recordedBy", "collector"),
    ("typeStatus", "typestatus"),
    ("hasImage", "hasImage"),
)
_SIMPLE_READ = [f for _, f in SIMPLE_COLUMNS if f] + ["geopoint"]
#: Columns whose value is the verbatim one, as published, where the record has it: our
#: index lower-cases text, GBIF's simple download keeps the publisher's (or its backbone's)
#: casing. The index value is the fallback (capitalised for the higher taxa, as GBIF's
#: backbone names them).
_SIMPLE_VERBATIM: dict[str, str] = {
    header: f"dwc:{header}"
    for header in (
        "occurrenceID",
        "kingdom",
        "phylum",
        "class",
        "order",
        "family",
        "genus",
        "specificEpithet",
        "infraspecificEpithet",
        "scientificName",
        "locality",
        "stateProvince",
        "institutionCode",
        "collectionCode",
        "catalogNumber",
        "recordNumber",
        "recordedBy",
        "typeStatus",
    )
}
_SIMPLE_CAPITALISED = {"kingdom", "phylum", "class", "order", "family", "genus"}
_SIMPLE_TERMS = list(_SIMPLE_VERBATIM.values())
#: basisOfRecord as GBIF's enum, from our index's lower-cased value.
_BASIS_ENUM = {index: enum for enum, index in gbif.BASIS.items()}


def _simple_batches(batches: Iterable[pa.RecordBatch]) -> Iterable[pa.RecordBatch]:
    """The index fields and verbatim terms read for a simple download, in GBIF's simple
    columns: text as published where the record has it, ISO country codes, taxon ranks and
    basisOfRecord upper-cased as GBIF writes them."""
    import pyarrow.compute as pc

    for batch in batches:
        names = ["coreid", *_SIMPLE_READ, *_SIMPLE_TERMS]
        by_field = dict(zip(names, batch.columns, strict=True))
        point = by_field["geopoint"]
        columns: list[pa.Array] = []
        for header, field in SIMPLE_COLUMNS:
            if header in _SIMPLE_VERBATIM:
                assert field is not None  # every verbatim column has its index field
                # A term no matching record publishes may come as a column of nulls.
                verbatim = pc.utf8_trim_whitespace(
                    by_field[_SIMPLE_VERBATIM[header]].cast(pa.string())
                )
                verbatim = pc.if_else(pc.equal(verbatim, ""), None, verbatim)
                fallback = by_field[field].cast(pa.string())
                if header in _SIMPLE_CAPITALISED:
                    fallback = pc.utf8_capitalize(fallback)
                columns.append(pc.coalesce(verbatim, fallback))
            elif header in ("countryCode", "taxonRank") and field is not None:
                columns.append(pc.utf8_upper(by_field[field].cast(pa.string())))
            elif header == "basisOfRecord" and field is not None:
                value = by_field[field].cast(pa.string())
                known = pa.array(list(_BASIS_ENUM), pa.string())
                enums = pa.array(list(_BASIS_ENUM.values()), pa.string())
                mapped = pc.take(enums, pc.index_in(value, value_set=known))
                columns.append(pc.coalesce(mapped, pc.utf8_upper(value)))
            elif field is not None:
                columns.append(by_field[field])
            elif header == "gbifID":
                columns.append(by_field["coreid"])
            elif header == "decimalLatitude":
                columns.append(pc.struct_field(point, "lat"))
            elif header == "decimalLongitude":
                columns.append(pc.struct_field(point, "lon"))
            else:  # year
                columns.append(pc.year(by_field["datecollected"]))
        yield pa.RecordBatch.from_arrays(columns, names=[h for h, _ in SIMPLE_COLUMNS])


def _simple_file(src: RecordSource, request: dict[str, Any], form: str) -> DataFile:
    """The one file of GBIF's SIMPLE_CSV / SIMPLE_PARQUET downloads."""
    rq, mq = request.get("rq"), request.get("mq")
    batch_size = request.get("_batch_size", 10_000)

    def make() -> Iterable[pa.RecordBatch]:
        return _simple_batches(
            src.batches(
                "records",
                rq,
                mq,
                fields=_SIMPLE_READ,
                raw_terms=_SIMPLE_TERMS,
                batch_size=batch_size,
            )
        )

    columns = [Column(h, catalogue.term_uri(f"dwc:{h}")) for h, _ in SIMPLE_COLUMNS]
    name = f"occurrence.{'parquet' if form == 'simple-parquet' else 'csv'}"
    return DataFile(name, dwca.OCCURRENCE, columns, make, core=True, kind="records")


def _credits(src: RecordSource, recordsets: dict[str, int], template: str) -> list[RecordsetCredit]:
    """What citations.txt and rights.txt say of each recordset: its count, and its name and
    the rights its EML states where the source knows them (the embedded store does, through
    ``recordsets`` and ``recordset_eml`` beyond the protocol; other sources give ids only).
    A link is written when ``recordset_url_template`` makes one."""
    names: dict[str, str] = {}
    listing = getattr(src, "recordsets", None)
    if callable(listing):
        names = {info.recordset: info.name for info in listing()}
    eml_of = getattr(src, "recordset_eml", None)
    credits = []
    for recordset, count in sorted(recordsets.items()):
        url = template.format(id=recordset) if template and template != "{id}" else ""
        rights = stated_rights(eml_of(recordset)) if callable(eml_of) else ""
        credits.append(RecordsetCredit(recordset, count, names.get(recordset, ""), url, rights))
    return credits


def _with_core(files: list[DataFile], core: DataFile) -> list[DataFile]:
    from dataclasses import replace

    return [replace(core, core=True)] + [f for f in files if f is not core]


def plan_archive(
    ctx: Context, job: Job, src: RecordSource, *, batch_size: int | None = None
) -> ArchivePlan:
    """Count, tally recordsets and describe the archive of ``job`` (only counts are read).

    The files per core type, all of them written even when nothing matches:

    - ``records`` (default): occurrence.csv (indexed, the core), occurrence_raw.csv
      (verbatim terms), multimedia.csv and multimedia_raw.csv (media of those records);
      ``core_source=raw`` makes occurrence_raw.csv the core.
    - ``mediarecords``: multimedia.csv (the core, id = the media uuid) and
      multimedia_raw.csv; the parent record stays in the ``idigbio:records`` column.
    - ``uniquelocality`` / ``uniquenames``: locality.csv / names.csv, one row per distinct
      value with its record count.

    Plus records.citation.txt, mediarecords.citation.txt and eml.xml for the zip forms.
    """
    settings = ctx.settings
    request = dict(job.request)
    request["_batch_size"] = batch_size or settings.batch_size
    rq, mq = request.get("rq"), request.get("mq")
    core_type = request.get("core_type", "records")
    form = request.get("form", "dwca-csv")
    # A source that can fetch what a build reads while it counts (the search cluster: the
    # media a merge tallies, see ElasticsearchSource.read_ahead) is told which record types
    # this archive reads, before it counts them; a count alone says nothing.
    read_ahead = getattr(src, "read_ahead", None)
    if read_ahead is not None:
        for rtype in _types_read(core_type, form):
            read_ahead(rtype, rq, mq)
    counts = {
        "records": src.count("records", rq, mq),
        "mediarecords": src.count("mediarecords", rq, mq),
    }
    files: list[DataFile]
    if dwca.is_packed(form):
        files = [_simple_file(src, request, form)]
        counts["mediarecords"] = 0  # a simple download holds the records only
    elif core_type in ("uniquelocality", "uniquenames"):
        field = "locality" if core_type == "uniquelocality" else "scientificname"

        def make_unique() -> Iterable[pa.RecordBatch]:
            return dwca.unique_value_batches(core_type, src.unique_values(field, rq, mq))

        row_type = dwca.ROW_TYPES[core_type]
        files = [
            DataFile(
                dwca.unique_file_name(core_type, form),
                row_type,
                dwca.unique_columns(core_type),
                make_unique,
                core=True,
                kind="other",
            )
        ]
    elif core_type == "mediarecords":
        m_index, m_raw = _type_files(
            src, "mediarecords", request, own_id=True, count=counts["mediarecords"]
        )
        files = [f for f in (m_index, m_raw) if f is not None]
        counts["records"] = 0  # no record rows in a media-core archive
    else:
        r_index, r_raw = _type_files(src, "records", request, own_id=False, count=counts["records"])
        m_index, m_raw = _type_files(
            src, "mediarecords", request, own_id=False, count=counts["mediarecords"]
        )
        files = [f for f in (r_index, r_raw, m_index, m_raw) if f is not None]
    if not files:
        raise ArchiveError("the requested field lists leave no column to write")
    preferred_raw = request.get("core_source") == "raw"
    # The core is a file of the core's own record type: when a field list leaves only the
    # other file of that type (only data.* terms, or no data.* term with core_source=raw),
    # that file is the core, never a media file of a records download.
    core_kind = "mediarecords" if core_type == "mediarecords" else "records"
    own = [f for f in files if f.kind in (core_kind, "other")] or files
    core = next(
        (f for f in files if f.core),
        next(
            (f for f in own if f.filename.split(".")[0].endswith("_raw") == preferred_raw),
            own[0],
        ),
    )
    files = _with_core(files, core)
    if core_type == "records" and dwca.is_zip(form):
        files += _extension_files(src, request, {f.filename for f in files})

    rs_type: RecordType = "mediarecords" if core_type == "mediarecords" else "records"
    recordsets = src.recordset_counts(rs_type, rq, mq)
    template = settings.recordset_url_template or "{id}"
    citations = []
    if dwca.is_zip(form):
        if core_type != "mediarecords":
            citations.append(
                Citation(
                    dwca.citation_file_name("records"),
                    json.dumps(rq, sort_keys=True),
                    counts["records"],
                    recordsets if rs_type == "records" else {},
                    template,
                )
            )
        # Always there beside the media files, even with no media (it then says 0 records).
        if counts["mediarecords"] or core_type in ("records", "mediarecords"):
            media_sets = (
                recordsets
                if rs_type == "mediarecords"
                else src.recordset_counts("mediarecords", rq, mq)
            )
            citations.append(
                Citation(
                    dwca.citation_file_name("mediarecords"),
                    json.dumps(mq if mq is not None else rq, sort_keys=True),
                    counts["mediarecords"],
                    media_sets,
                    template,
                )
            )
    credits = _credits(src, recordsets, template) if dwca.is_zip(form) else []
    created = job.created or now_utc()
    eml = EmlInfo(
        title=f"Darwin Core Archive download {job.id}",
        query_text=json.dumps(
            {k: v for k, v in job.request.items() if v is not None}, sort_keys=True
        ),
        package_id=job.id,
        publisher_name=settings.publisher_name,
        publisher_url=settings.publisher_url,
        intellectual_rights=settings.intellectual_rights,
        record_count=counts["records"],
        media_count=counts["mediarecords"],
        recordset_counts=recordsets,
        created=created,
    )
    # A download of what changed since a date also lists what was removed (downloader.sync).
    deleted = deleted_file(src, rq) if dwca.is_zip(form) else None
    spec = ArchiveSpec(
        form=form,
        files=files,
        citations=citations,
        eml=eml,
        timestamp=created,
        extras=[deleted] if deleted else [],
        credits=credits,
    )
    return ArchivePlan(spec=spec, counts=counts, recordsets=recordsets)


def archive_filename(job: Job) -> str:
    """A meaningful file name: ``dwca-<query words>-<short id>.zip`` (``parquet-...`` for the
    ``parquet`` form, ``.csv``/``.tsv`` for the bare forms), e.g. ``dwca-acer-3f2a9c1d.zip``."""
    words: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            words.append(value)
        elif isinstance(value, list):
            for item in value[:2]:
                collect(item)
        elif isinstance(value, dict) and "value" in value:
            collect(value["value"])

    for query in (job.request.get("rq"), job.request.get("mq")):
        if isinstance(query, dict):
            for key in sorted(query):
                if key != "uuid":
                    collect(query[key])
    slug = re.sub(r"[^a-z0-9]+", "-", " ".join(words).lower()).strip("-")[:40].strip("-")
    form = job.request.get("form", "dwca-csv")
    short = job.id.split("-")[0]
    zipped = dwca.is_zip(form) or dwca.is_packed(form)
    prefix = "dwca" if form.startswith("dwca") else "parquet" if form == "parquet" else ""
    stem = "-".join(p for p in (prefix, slug, short) if p)
    return f"{stem}.{'zip' if zipped else dwca.file_extension(form)}"


def archive_key(job: Job) -> str:
    """The storage key: ``<job id>.zip`` (``.csv``/``.tsv`` for the bare forms), under
    :data:`~downloader.interfaces.EXPORT_KEY_PREFIX` for a recordset export, which must
    outlive the expiry S3 applies to downloads."""
    form = job.request.get("form", "dwca-csv")
    zipped = dwca.is_zip(form) or dwca.is_packed(form)
    key = f"{job.id}.{'zip' if zipped else dwca.file_extension(form)}"
    return EXPORT_KEY_PREFIX + key if job.kind == "export" else key
