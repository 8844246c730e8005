"""Checks of an archive's XML against the schemas it names, offline.

``meta.xml`` is validated against the TDWG text guide schema and ``eml.xml`` against the
schema its ``xsi:schemaLocation`` names (the GBIF metadata profile) and against EML 2.1.1
itself, from the local copies in ``tests/fixtures/schemas/`` (see its README for sources and
licences): nothing is fetched. :func:`check_local_names` is the column check of ALA's
``dwcahandler``, which keys a file's columns by the local name of their term URI and refuses
a file where two share one.
"""

from __future__ import annotations

import functools
import re
import zipfile
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import xmlschema

SCHEMAS = Path(__file__).resolve().parents[1] / "fixtures" / "schemas"
XSI_LOCATION = "{http://www.w3.org/2001/XMLSchema-instance}schemaLocation"
TEXT_NS = "http://rs.tdwg.org/dwc/text/"
EML_211_NS = "eml://ecoinformatics.org/eml-2.1.1"

#: Schema locations an archive may name, and the local copy of what each serves.
LOCAL_COPIES: dict[str, Path] = {
    "http://rs.tdwg.org/dwc/text/tdwg_dwc_text.xsd": SCHEMAS / "dwc-text/text/tdwg_dwc_text.xsd",
    "http://rs.gbif.org/schema/eml-gbif-profile/1.1/eml.xsd": (
        SCHEMAS / "eml-gbif-profile/1.1/eml.xsd"
    ),
}
#: The plain EML schema of each EML namespace (a profile only narrows it).
EML_SCHEMAS: dict[str, Path] = {EML_211_NS: SCHEMAS / "eml-2.1.1/eml.xsd"}


@functools.cache
def schema(path: Path) -> xmlschema.XMLSchema:
    """The compiled schema at ``path`` (compiled once per test session: it takes a second).

    ``allow="local"`` makes xmlschema refuse any remote import rather than fetch it.
    """
    return xmlschema.XMLSchema(str(path), allow="local")


def _errors(path: Path, text: bytes) -> list[str]:
    found = schema(path).iter_errors(text.decode("utf-8"), use_location_hints=False)
    return [f"{error.path}: {error.reason}" for error in found]


def named_schema(text: bytes) -> Path:
    """The local copy of the schema that the document's ``xsi:schemaLocation`` names."""
    root = ElementTree.fromstring(text)
    pairs = root.get(XSI_LOCATION, "").split()
    assert len(pairs) == 2, f"expected one (namespace, location) pair, not {pairs}"
    namespace, location = pairs
    assert root.tag == f"{{{namespace}}}{root.tag.partition('}')[2]}", (root.tag, namespace)
    assert location in LOCAL_COPIES, f"{location} is not a schema the tests hold a copy of"
    return LOCAL_COPIES[location]


def validate_meta(text: bytes) -> None:
    """``meta.xml`` is valid against the text guide schema it names."""
    path = named_schema(text)
    assert path == LOCAL_COPIES["http://rs.tdwg.org/dwc/text/tdwg_dwc_text.xsd"]
    errors = _errors(path, text)
    assert not errors, "meta.xml is not valid against the text guide schema:\n" + "\n".join(errors)


def validate_eml(text: bytes) -> None:
    """``eml.xml`` is valid against the schema it names and against plain EML."""
    root = ElementTree.fromstring(text)
    namespace = root.tag.partition("}")[0].lstrip("{")
    for path in (named_schema(text), EML_SCHEMAS[namespace]):
        errors = _errors(path, text)
        assert not errors, f"eml.xml is not valid against {path}:\n" + "\n".join(errors)


def local_name(term: str) -> str:
    """The local name of a term URI as ``dwcahandler`` takes it: the last path segment, with
    ``_<fragment>`` when the URI has a fragment."""
    head, _, fragment = term.partition("#")
    name = re.split(r"[/:]", head)[-1]
    return f"{name}_{fragment}" if fragment else name


def check_local_names(meta: bytes) -> None:
    """No two columns of one data file share a local name (compared case-insensitively, as
    readers that lower-case column names also must tell them apart). A file whose column 0
    has no ``<field>`` has it named ``id`` (core) or ``coreid`` (extension), as dwcahandler
    names it."""
    root = ElementTree.fromstring(meta)
    for section in root:
        location = section.findtext(f"{{{TEXT_NS}}}files/{{{TEXT_NS}}}location")
        fields = section.findall(f"{{{TEXT_NS}}}field")
        names = [local_name(f.get("term", "")) for f in fields]
        if all(f.get("index") != "0" for f in fields):
            names.append("id" if section.tag == f"{{{TEXT_NS}}}core" else "coreid")
        counts = Counter(name.lower() for name in names)
        shared = sorted(name for name, count in counts.items() if count > 1)
        assert not shared, f"{location}: columns share the local names {shared}"


def check_archive_xml(path: Path) -> None:
    """Validate a written zip's meta.xml and eml.xml, and its columns' local names."""
    with zipfile.ZipFile(path) as zf:
        meta = zf.read("meta.xml")
        eml = zf.read("eml.xml")
    validate_meta(meta)
    validate_eml(eml)
    check_local_names(meta)
