"""meta.xml and eml.xml on their own: structure, escaping, and the schema's rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from xml.etree import ElementTree

import pyarrow as pa
import pytest

from archive import COREID, Column, DataFile, dwca
from archive.eml import default_abstract, eml_xml
from archive.meta import COREID_TERM, meta_xml
from tests.support.schemas import (
    XSI_LOCATION,
    check_local_names,
    local_name,
    validate_eml,
    validate_meta,
)
from tests.unit.archive.helpers import TEXT_NS, check_meta_structure, eml_info


def no_batches() -> list[pa.RecordBatch]:
    """A batch factory for specs whose data is never written here."""
    return []


def test_core_comes_first_whatever_the_file_order() -> None:
    files = [
        DataFile("occurrence_raw.csv", dwca.OCCURRENCE, [COREID, Column("a", "urn:a")], no_batches),
        DataFile(
            "occurrence.csv", dwca.OCCURRENCE, [COREID, Column("b", "urn:b")], no_batches, core=True
        ),
    ]
    meta = ElementTree.fromstring(meta_xml(files, delimiter=","))
    check_meta_structure(meta, ",")
    assert meta[0].findtext(f"{TEXT_NS}files/{TEXT_NS}location") == "occurrence.csv"


def test_tab_delimiter_is_spelled_as_the_guide_says() -> None:
    files = [
        DataFile("o.tsv", dwca.OCCURRENCE, [COREID, Column("a", "urn:a")], no_batches, core=True)
    ]
    text = meta_xml(files, delimiter="\t").decode()
    assert 'fieldsTerminatedBy="\\t"' in text
    assert 'linesTerminatedBy="\\n"' in text
    check_meta_structure(ElementTree.fromstring(text), "\t")


def test_a_file_without_declared_terms_still_has_a_field() -> None:
    files = [
        DataFile("o.csv", dwca.OCCURRENCE, [COREID], no_batches, core=True),
        DataFile("x.csv", dwca.OCCURRENCE, [COREID, Column("free text", None)], no_batches),
    ]
    meta = ElementTree.fromstring(meta_xml(files, delimiter=","))
    check_meta_structure(meta, ",")
    for section in meta:
        (field,) = section.findall(f"{TEXT_NS}field")
        assert (field.get("index"), field.get("term")) == ("0", COREID_TERM)


def test_meta_xml_is_valid_against_the_text_guide_schema() -> None:
    files = [
        DataFile("o.csv", dwca.OCCURRENCE, [COREID, Column("a", "urn:a")], no_batches, core=True),
        DataFile("m.csv", dwca.MULTIMEDIA, [COREID], no_batches),
    ]
    for delimiter in (",", "\t"):
        validate_meta(meta_xml(files, delimiter=delimiter))
    # The check is a real one: a column index that is not a number is refused.
    broken = meta_xml(files, delimiter=",").replace(b'<field index="1"', b'<field index="one"')
    with pytest.raises(AssertionError, match="not valid"):
        validate_meta(broken)


def test_the_local_name_check_finds_columns_readers_cannot_tell_apart() -> None:
    columns = [
        COREID,
        Column("idigbio:eventDate", "http://portal.idigbio.org/terms/eventDate"),
        Column("dwc:eventDate", "http://rs.tdwg.org/dwc/terms/eventDate"),
    ]
    files = [DataFile("o.csv", dwca.OCCURRENCE, columns, no_batches, core=True)]
    with pytest.raises(
        AssertionError, match=r"o.csv: columns share the local names \['eventdate'\]"
    ):
        check_local_names(meta_xml(files, delimiter=","))
    assert local_name("http://example.org/terms#eventDate") == "terms_eventDate"


def test_undeclared_columns_keep_later_indexes() -> None:
    columns = [COREID, Column("a", None), Column("b", "urn:b")]
    files = [DataFile("o.csv", dwca.OCCURRENCE, columns, no_batches, core=True)]
    meta = ElementTree.fromstring(meta_xml(files, delimiter=","))
    assert [(f.get("index"), f.get("term")) for f in meta[0].findall(f"{TEXT_NS}field")] == [
        ("2", "urn:b")
    ]


def test_special_characters_are_escaped() -> None:
    columns = [COREID, Column("a", 'urn:x?a=1&b="2"')]
    files = [DataFile("a&b<c>.csv", dwca.OCCURRENCE, columns, no_batches, core=True)]
    meta = ElementTree.fromstring(meta_xml(files, delimiter=","))
    assert meta[0].findtext(f"{TEXT_NS}files/{TEXT_NS}location") == "a&b<c>.csv"
    field = meta[0].find(f"{TEXT_NS}field")
    assert field is not None and field.get("term") == 'urn:x?a=1&b="2"'


EML_DATASET_ORDER = [
    "alternateIdentifier",
    "title",
    "creator",
    "metadataProvider",
    "associatedParty",
    "pubDate",
    "language",
    "abstract",
    "additionalInfo",
    "intellectualRights",
    "contact",
]


def test_eml_has_the_required_elements_in_schema_order() -> None:
    info = eml_info(record_count=5, media_count=2, recordset_counts={"rs1": 4, "rs2": 1})
    root = ElementTree.fromstring(eml_xml(info, citation="cite me"))
    assert root.get("packageId") == info.package_id
    assert root.get("system") == info.publisher_url
    dataset = root.find("dataset")
    assert dataset is not None
    assert [child.tag for child in dataset] == EML_DATASET_ORDER
    assert root.findtext("additionalMetadata/metadata/gbif/citation") == "cite me"
    assert (
        root.findtext("additionalMetadata/metadata/gbif/dateStamp") == "2024-05-01T12:30:15+00:00"
    )
    assert dataset.findtext("additionalInfo/para") == (
        "Recordsets (identifier: records): rs1: 4; rs2: 1."
    )
    assert dataset.findtext("associatedParty/role") == "publisher"
    assert dataset.findtext("associatedParty/organizationName") == info.publisher_name
    validate_eml(eml_xml(info, citation="cite me"))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"record_count": 5, "media_count": 2, "recordset_counts": {"rs1": 4, "rs2": 1}},
        # No publisher name, URL or rights in the settings: still a valid document.
        {"publisher_name": "", "publisher_url": "", "intellectual_rights": ""},
        {"publisher_name": "  ", "abstract": "Given.", "citation": "Given citation"},
        {"title": "A <b> & \x01 title", "query_text": '{"q": "<&>"}'},
    ],
)
def test_eml_is_valid_against_the_gbif_profile_it_names_and_eml_2_1_1(
    overrides: dict[str, Any],
) -> None:
    text = eml_xml(eml_info(**overrides), citation="from the citation file")
    root = ElementTree.fromstring(text)
    assert root.get(XSI_LOCATION) == (
        "eml://ecoinformatics.org/eml-2.1.1 http://rs.gbif.org/schema/eml-gbif-profile/1.1/eml.xsd"
    )
    validate_eml(text)


def test_the_eml_check_catches_what_the_profile_refuses() -> None:
    # The profile has one para in additionalInfo and no publisher element (EML 2.1.1 has).
    text = eml_xml(eml_info()).replace(
        b"</contact>",
        b"</contact>\n    <publisher><organizationName>P</organizationName></publisher>",
    )
    with pytest.raises(AssertionError, match="publisher"):
        validate_eml(text)


def test_given_abstract_and_citation_win() -> None:
    info = eml_info(abstract="Custom abstract.", citation="Given citation")
    root = ElementTree.fromstring(eml_xml(info, citation="from the citation file"))
    assert root.findtext("dataset/abstract/para") == "Custom abstract."
    assert root.findtext("additionalMetadata/metadata/gbif/citation") == "Given citation"


def test_default_abstract_states_the_facts() -> None:
    info = eml_info(record_count=10, media_count=3, recordset_counts={"a": 9, "b": 1})
    text = default_abstract(info)
    assert "10 records and 3 media records from 2 recordsets" in text
    assert info.query_text in text
    assert "2024-05-01" in text
    assert info.publisher_name in text


def test_eml_escapes_and_drops_characters_xml_cannot_hold() -> None:
    info = eml_info(
        title="A <b> & \x01 title", query_text='{"q": "<&>"}', created=datetime(2024, 1, 1)
    )
    root = ElementTree.fromstring(eml_xml(info))
    assert root.findtext("dataset/title") == "A <b> & \ufffd title"
    assert root.findtext("dataset/pubDate") == "2024-01-01"
    assert root.find("additionalMetadata/metadata/gbif/citation") is None
