"""The field catalogue: iDigBio's indexed fields for records and media records.

The catalogue is data (``idigbio_fields.csv`` beside this module), loaded once. Every other
part of the project (ingest derivation, query validation, compilers, archive headers,
Elasticsearch mappings) reads it from here rather than repeating field names in code.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

RecordType = Literal["records", "mediarecords"]
RECORD_TYPES: tuple[RecordType, ...] = ("records", "mediarecords")

#: Field kinds as the catalogue names them.
Kind = Literal["text", "longtext", "list", "integer", "float", "boolean", "date", "point"]

#: Namespace prefixes used by verbatim term names (``dwc:scientificName``) and their URIs.
NAMESPACES: dict[str, str] = {
    "dwc": "http://rs.tdwg.org/dwc/terms/",
    "dcterms": "http://purl.org/dc/terms/",
    "dc": "http://purl.org/dc/elements/1.1/",
    "ac": "http://rs.tdwg.org/ac/terms/",
    "idigbio": "http://portal.idigbio.org/terms/",
    "gbif": "http://rs.gbif.org/terms/1.0/",
    "xmpRights": "http://ns.adobe.com/xap/1.0/rights/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "exif": "http://ns.adobe.com/exif/1.0/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "aec": "http://purl.org/NET/aec/",
    "abcd": "http://rs.tdwg.org/abcd/terms/",
    "wgs84_pos": "http://www.w3.org/2003/01/geo/wgs84_pos#",
    "mixs": "http://gensc.org/ns/mixs/",
    "ggbn": "http://data.ggbn.org/schemas/ggbn/terms/",
    "obis": "http://iobis.org/obis/terms/",
    "chrono": "http://rs.tdwg.org/chrono/terms/",
    "iucn": "http://iucn.org/terms/",
}


@dataclass(frozen=True, slots=True)
class Field:
    """One indexed field: its query key, kind, verbatim source term, CSV header and term URI."""

    type: RecordType
    name: str
    kind: Kind
    source_term: str | None
    csv_header: str
    term_uri: str


@cache
def _load() -> dict[RecordType, dict[str, Field]]:
    table: dict[RecordType, dict[str, Field]] = {"records": {}, "mediarecords": {}}
    text = resources.files(__package__).joinpath("idigbio_fields.csv").read_text("utf-8")
    for row in csv.DictReader(text.splitlines()):
        rtype: RecordType = "records" if row["type"] == "records" else "mediarecords"
        table[rtype][row["field"]] = Field(
            type=rtype,
            name=row["field"],
            kind=row["kind"],  # type: ignore[arg-type]  # the CSV holds only the kinds above
            source_term=row["source_term"] or None,
            csv_header=row["csv_header"],
            term_uri=row["term_uri"],
        )
    return table


def fields(rtype: RecordType) -> list[Field]:
    """All indexed fields of a record type, in catalogue order."""
    return list(_load()[rtype].values())


def field_names(rtype: RecordType) -> list[str]:
    """The query keys (index field names) of a record type, in catalogue order."""
    return list(_load()[rtype])


def get_field(rtype: RecordType, name: str) -> Field | None:
    """The field called ``name`` for ``rtype``, or None when the catalogue has no such field."""
    return _load()[rtype].get(name)


def term_uri(term: str) -> str:
    """The URI of a verbatim term name such as ``dwc:scientificName``.

    A term that is already a URI is returned unchanged; an unknown prefix keeps the name as
    it is, as iDigBio does.
    """
    if "://" in term:
        return term
    prefix, sep, local = term.partition(":")
    if sep and prefix in NAMESPACES:
        return NAMESPACES[prefix] + local
    return term


def short_term(uri: str) -> str:
    """The short ``prefix:name`` form of a term URI (the reverse of :func:`term_uri`).

    A URI in no known namespace is returned unchanged.
    """
    best = ""
    for prefix, base in NAMESPACES.items():
        if uri.startswith(base) and len(base) > len(NAMESPACES.get(best, "")):
            best = prefix
    if best:
        return f"{best}:{uri[len(NAMESPACES[best]) :]}"
    return uri
