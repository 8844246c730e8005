r"""meta.xml, the archive descriptor (TDWG Darwin Core text guidelines).

Unlike iDigBio's, the descriptor has an XML declaration, exactly one ``<core>`` (with
``<id index="0"/>``), one ``<extension>`` (with ``<coreid index="0"/>``) per other data
file, ``metadata="eml.xml"``, and the dialect of the bytes actually written: UTF-8, the
form's delimiter, ``\n`` line ends, ``"`` as enclosure and one header line. Columns whose
term URI is None (column 0, and any the caller left undeclared) get no ``<field>``, except
that a file with no other field declares column 0 as :data:`COREID_TERM`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

from archive.models import DataFile

NAMESPACE = "http://rs.tdwg.org/dwc/text/"
_SCHEMA = "http://rs.tdwg.org/dwc/text/ http://rs.tdwg.org/dwc/text/tdwg_dwc_text.xsd"
#: Declared for column 0 of a file that would otherwise declare no field: the text schema
#: requires at least one ``<field>`` per file (a download restricted to no fields at all).
COREID_TERM = "http://portal.idigbio.org/terms/coreid"


def _escape_control(value: str) -> str:
    # The text guidelines spell a tab and a newline as the two characters "\t" and "\n".
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def meta_xml(files: Sequence[DataFile], *, delimiter: str, metadata: str = "eml.xml") -> bytes:
    """The meta.xml of ``files`` (exactly one of which is the core), as UTF-8 bytes."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<archive xmlns="{NAMESPACE}"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        f' xsi:schemaLocation="{_SCHEMA}" metadata={quoteattr(metadata)}>',
    ]
    # The schema wants the core first.
    for data_file in sorted(files, key=lambda f: not f.core):
        tag = "core" if data_file.core else "extension"
        key = "id" if data_file.core else "coreid"
        lines.append(
            f'  <{tag} encoding="UTF-8" fieldsTerminatedBy={quoteattr(_escape_control(delimiter))}'
            f' linesTerminatedBy="\\n" fieldsEnclosedBy="&quot;" ignoreHeaderLines="1"'
            f" rowType={quoteattr(data_file.row_type)}>"
        )
        lines.append("    <files>")
        lines.append(f"      <location>{_text(data_file.filename)}</location>")
        lines.append("    </files>")
        lines.append(f'    <{key} index="0"/>')
        declared = [
            (index, column.term_uri)
            for index, column in enumerate(data_file.columns)
            if index > 0 and column.term_uri is not None
        ]
        for index, term in declared or [(0, COREID_TERM)]:
            lines.append(f'    <field index="{index}" term={quoteattr(term)}/>')
        lines.append(f"  </{tag}>")
    lines.append("</archive>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def meta_json(files: Sequence[DataFile], *, metadata: str = "eml.xml") -> bytes:
    """The descriptor of a ``parquet`` archive, as UTF-8 JSON.

    It says what meta.xml says of a Darwin Core Archive, for Parquet files (the text
    guidelines' meta.xml can only describe delimited text). Its shape follows meta.xml's::

        {"format": "parquet", "metadata": "eml.xml",
         "core": {"location": "occurrence.parquet", "rowType": "...", "id": 0,
                  "fields": [{"index": 0, "name": "coreid", "term": null},
                             {"index": 1, "name": "dwc:basisOfRecord",
                              "term": "http://rs.tdwg.org/dwc/terms/basisOfRecord"}, ...]},
         "extensions": [{"location": "occurrence_raw.parquet", "rowType": "...",
                         "coreid": 0, "fields": [...]}, ...]}

    ``name`` is the Parquet column's name; every column is listed, with ``term`` null where
    meta.xml would declare no field.
    """

    def describe(data_file: DataFile) -> dict[str, Any]:
        return {
            "location": data_file.filename,
            "rowType": data_file.row_type,
            "id" if data_file.core else "coreid": 0,
            "fields": [
                {"index": index, "name": column.header, "term": column.term_uri}
                for index, column in enumerate(data_file.columns)
            ],
        }

    core = [describe(f) for f in files if f.core]
    document = {
        "format": "parquet",
        "metadata": metadata,
        "core": core[0] if core else None,
        "extensions": [describe(f) for f in files if not f.core],
    }
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
