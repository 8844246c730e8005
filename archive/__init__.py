"""Darwin Core Archive writing: CSV/TSV data files, meta.xml, eml.xml, citations, zip.

This package is pure: it takes Arrow batches and a writable binary sink, nothing else.

The API the service codes against::

    from archive import (
        ArchiveSpec, DataFile, Column, Citation, EmlInfo, ArchiveResult,
        write_archive, ArchiveError, ArchiveCancelled, dwca,
    )

    columns = dwca.index_columns("records", ["uuid", "scientificname", "geopoint"])
    spec = ArchiveSpec(
        form="dwca-csv",
        files=[
            DataFile(dwca.data_file_name("records"), dwca.OCCURRENCE, columns,
                     lambda: source.batches("records", rq, None, fields=[...]),
                     core=True, kind="records"),
            DataFile(dwca.data_file_name("records", raw=True), dwca.OCCURRENCE,
                     dwca.raw_columns(terms), lambda: ..., kind="records"),
        ],
        citations=[Citation(dwca.citation_file_name("records"), query_json, total, counts,
                            "https://example.org/recordsets/{id}")],
        eml=EmlInfo(...),
        timestamp=job.created,
    )
    result = write_archive(spec, sink, progress=report, should_cancel=is_cancelled)

- :mod:`archive.models`: the dataclasses above.
- :mod:`archive.dwca`: file names, row types, columns from the field catalogue, ids of
  distinct values, citation text.
- :mod:`archive.writer`: :func:`write_archive`.
- :mod:`archive.cells`: how values become cells; :mod:`archive.zipstream`: the streaming
  ZIP64 writer; :mod:`archive.meta` and :mod:`archive.eml`: the two XML documents.
"""

from archive import dwca
from archive.errors import ArchiveCancelled, ArchiveError
from archive.models import (
    COREID,
    ArchiveResult,
    ArchiveSpec,
    Citation,
    Column,
    DataFile,
    EmlInfo,
    ExtraFile,
    FileKind,
    Form,
    RecordsetCredit,
)
from archive.writer import write_archive

__all__ = [
    "COREID",
    "ArchiveCancelled",
    "ArchiveError",
    "ArchiveResult",
    "ArchiveSpec",
    "Citation",
    "Column",
    "DataFile",
    "EmlInfo",
    "ExtraFile",
    "FileKind",
    "Form",
    "RecordsetCredit",
    "dwca",
    "write_archive",
]
