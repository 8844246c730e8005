"""Shared helpers of the archive tests: spec builders and a thorough re-read of every archive.

Every archive a test writes goes through :func:`read_archive`, which opens it with
python-dwca-reader and checks what a user of the archive relies on: the structure of
meta.xml (one core with ``<id>``, extensions with ``<coreid>``, the declared dialect), the
core row count, the term of every declared column, each extension row's link to a core row,
and the EML that meta.xml points to; and validates meta.xml and eml.xml against the schemas
they name (:mod:`tests.support.schemas`).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pyarrow as pa
from dwca.read import DwCAReader

from archive import ArchiveSpec, Citation, Column, DataFile, EmlInfo, dwca
from archive.models import FileKind, Form
from tests.support.schemas import check_archive_xml

TEXT_NS = "{http://rs.tdwg.org/dwc/text/}"
EML_NS = "{eml://ecoinformatics.org/eml-2.1.1}"
TIMESTAMP = datetime(2024, 5, 1, 12, 30, 15, tzinfo=UTC)
FILE_ATTRIBUTES = {
    "linesTerminatedBy",
    "fieldsTerminatedBy",
    "fieldsEnclosedBy",
    "ignoreHeaderLines",
    "rowType",
    "encoding",
    "dateFormat",
}


def batch(
    columns: Sequence[Column], rows: Sequence[Sequence[Any]], **types: pa.DataType
) -> pa.RecordBatch:
    """A record batch with one Arrow column per ``columns``, built from Python rows.

    ``types`` gives the Arrow type of a column by header (a string otherwise).
    """
    arrays = []
    for index, column in enumerate(columns):
        values = [row[index] for row in rows]
        arrays.append(pa.array(values, types.get(column.header, pa.string())))
    return pa.RecordBatch.from_arrays(arrays, names=[f"c{i}" for i in range(len(columns))])


def eml_info(**overrides: Any) -> EmlInfo:
    """EML facts for tests."""
    values: dict[str, Any] = {
        "title": 'Download of records matching {"genus": "acer"}',
        "query_text": '{"genus": "acer"}',
        "package_id": "0f4c5d8e-1111-4222-8333-944455556666",
        "publisher_name": "Example Biodiversity Portal",
        "publisher_url": "https://portal.example.org",
        "intellectual_rights": "Each record is licensed by its recordset's publisher.",
        "record_count": 0,
        "media_count": 0,
        "recordset_counts": {},
        "created": TIMESTAMP,
    }
    values.update(overrides)
    return EmlInfo(**values)


def data_file(
    filename: str,
    columns: Sequence[Column],
    batches: Iterable[pa.RecordBatch],
    *,
    core: bool = False,
    kind: FileKind = "records",
    row_type: str = dwca.OCCURRENCE,
) -> DataFile:
    """A data file whose factory yields ``batches`` (a list, so it can be written twice)."""
    frozen = list(batches)
    return DataFile(filename, row_type, list(columns), lambda: iter(frozen), core=core, kind=kind)


def spec(
    files: list[DataFile],
    *,
    form: Form = "dwca-csv",
    citations: list[Citation] | None = None,
    eml: EmlInfo | None = None,
) -> ArchiveSpec:
    """An archive spec with test defaults."""
    return ArchiveSpec(
        form=form,
        files=files,
        citations=citations or [],
        eml=eml or eml_info(),
        timestamp=TIMESTAMP,
    )


@dataclass
class ReadBack:
    """What :func:`read_archive` found."""

    names: list[str]
    core_ids: list[str]
    core_rows: list[dict[str, str]]
    extension_rows: dict[str, list[dict[str, str]]]
    extension_coreids: dict[str, list[str]]
    meta: ElementTree.Element
    eml: ElementTree.Element
    texts: dict[str, str]


def check_meta_structure(meta: ElementTree.Element, delimiter: str) -> None:
    """meta.xml declares the dialect we write, in the shape the text guide describes.

    Beyond the schema (which :func:`read_archive` validates against): root ``archive`` with
    ``metadata``; exactly one ``core`` and it comes first; then only ``extension`` elements;
    each with ``files/location``, ``id`` (core) or ``coreid`` (extension) at index 0, at
    least one ``field`` with an integer index and a term; only the schema's attributes.
    """
    assert meta.tag == f"{TEXT_NS}archive"
    assert meta.get("metadata") == "eml.xml"
    children = list(meta)
    assert children and children[0].tag == f"{TEXT_NS}core"
    assert all(child.tag == f"{TEXT_NS}extension" for child in children[1:])
    for child in children:
        assert set(child.attrib) <= FILE_ATTRIBUTES, child.attrib
        assert child.get("encoding") == "UTF-8"
        assert child.get("linesTerminatedBy") == "\\n"
        assert child.get("fieldsTerminatedBy") == ("\\t" if delimiter == "\t" else ",")
        assert child.get("fieldsEnclosedBy") == '"'
        assert child.get("ignoreHeaderLines") == "1"
        elements = [e.tag.removeprefix(TEXT_NS) for e in child]
        key = "id" if child.tag == f"{TEXT_NS}core" else "coreid"
        assert elements[0] == "files"
        assert elements[1] == key
        assert elements[2:] and set(elements[2:]) == {"field"}
        locations = child.findall(f"{TEXT_NS}files/{TEXT_NS}location")
        assert len(locations) == 1 and locations[0].text
        key_element = child.find(f"{TEXT_NS}{key}")
        assert key_element is not None and key_element.get("index") == "0"
        indexes = [int(f.get("index", "")) for f in child.findall(f"{TEXT_NS}field")]
        assert len(indexes) == len(set(indexes))
        assert all(f.get("term") for f in child.findall(f"{TEXT_NS}field"))


def read_archive(path: Path, archive_spec: ArchiveSpec) -> ReadBack:
    """Open a written zip with python-dwca-reader and check it against its spec."""
    delimiter = dwca.delimiter(archive_spec.form)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        texts = {
            name: zf.read(name).decode("utf-8") for name in names if name.endswith((".txt", ".xml"))
        }
        raw = {f.filename: zf.read(f.filename) for f in archive_spec.files}
    assert len(names) == len(set(names))
    expected = [f.filename for f in archive_spec.files]
    expected += [c.filename for c in archive_spec.citations]
    expected += [dwca.CITATIONS_TXT, dwca.RIGHTS_TXT]
    expected += [e.filename for e in archive_spec.extras] + ["eml.xml", "meta.xml"]
    assert names == expected
    meta = ElementTree.fromstring(texts["meta.xml"])
    assert texts["meta.xml"].startswith('<?xml version="1.0" encoding="UTF-8"?>')
    check_meta_structure(meta, delimiter)
    check_archive_xml(path)
    for data_file in archive_spec.files:
        content = raw[data_file.filename]
        assert not content.startswith(b"\xef\xbb\xbf"), "no BOM"
        header = next(csv.reader(io.StringIO(content.decode("utf-8")), delimiter=delimiter))
        assert header == [c.header for c in data_file.columns]
        assert content.endswith(b"\n")

    with DwCAReader(str(path)) as reader:
        assert reader.metadata is not None, "meta.xml must point to a readable eml.xml"
        assert reader.metadata.tag == f"{EML_NS}eml"
        descriptors = {reader.descriptor.core.file_location: reader.descriptor.core}
        descriptors.update({d.file_location: d for d in reader.descriptor.extensions})
        core = archive_spec.core
        assert reader.descriptor.core.file_location == core.filename
        assert reader.descriptor.core.type == core.row_type
        for data_file in archive_spec.files:
            descriptor = descriptors[data_file.filename]
            declared = {f["index"]: f["term"] for f in descriptor.fields}
            expected_terms = {
                i: c.term_uri for i, c in enumerate(data_file.columns) if i and c.term_uri
            }
            if expected_terms:
                assert declared == expected_terms
            assert descriptor.type == data_file.row_type
            assert descriptor.fields_terminated_by == delimiter
            assert descriptor.lines_terminated_by == "\n"
        core_rows = []
        core_ids = []
        for row in reader:
            core_ids.append(row.id)
            core_rows.append(row.data)
        extension_rows: dict[str, list[dict[str, str]]] = {}
        extension_coreids: dict[str, list[str]] = {}
        known = set(core_ids)
        for extension in reader.extension_files:
            location = extension.file_descriptor.file_location
            rows = list(extension.iter_rows())
            extension_rows[location] = [r.data for r in rows]
            extension_coreids[location] = [r.core_id for r in rows]
            for r in rows:
                assert r.core_id in known, f"{location}: coreid {r.core_id!r} has no core row"
    return ReadBack(
        names,
        core_ids,
        core_rows,
        extension_rows,
        extension_coreids,
        meta,
        ElementTree.fromstring(texts["eml.xml"]),
        texts,
    )


def read_bare(path: Path, archive_spec: ArchiveSpec, tmp_dir: Path) -> list[list[str]]:
    """Check a bare csv/tsv download with python-dwca-reader; return its rows (with header)."""
    directory = tmp_dir / "bare"
    directory.mkdir()
    name = "data." + dwca.file_extension(archive_spec.form)
    content = path.read_bytes()
    (directory / name).write_bytes(content)
    delimiter = dwca.delimiter(archive_spec.form)
    rows = list(csv.reader(io.StringIO(content.decode("utf-8"), newline=""), delimiter=delimiter))
    with DwCAReader(str(directory)) as reader:
        assert reader.core_file_location == name
        assert len(list(reader)) == len(rows) - 1
    return rows


def rows_of(content: bytes, delimiter: str = ",") -> list[list[str]]:
    """Parse CSV bytes with the csv module (the reference RFC 4180 reader here)."""
    return list(csv.reader(io.StringIO(content.decode("utf-8"), newline=""), delimiter=delimiter))
