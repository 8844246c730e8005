"""Archive vocabulary: file names, row types, columns from the catalogue, ids, citations."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from archive import COREID, Citation, Column, dwca
from query import fields as catalogue
from query.fields import RecordType
from tests.support.schemas import local_name


@pytest.mark.parametrize(
    ("rtype", "raw", "form", "name"),
    [
        ("records", False, "dwca-csv", "occurrence.csv"),
        ("records", True, "dwca-csv", "occurrence_raw.csv"),
        ("mediarecords", False, "dwca-csv", "multimedia.csv"),
        ("mediarecords", True, "dwca-csv", "multimedia_raw.csv"),
        ("records", False, "dwca-tsv", "occurrence.tsv"),
        ("mediarecords", True, "tsv", "multimedia_raw.tsv"),
        ("records", True, "csv", "occurrence_raw.csv"),
    ],
)
def test_data_file_names(
    rtype: catalogue.RecordType, raw: bool, form: dwca.Form, name: str
) -> None:
    assert dwca.data_file_name(rtype, raw=raw, form=form) == name


def test_other_names_and_types() -> None:
    assert dwca.unique_file_name("uniquelocality") == "locality.csv"
    assert dwca.unique_file_name("uniquenames", "dwca-tsv") == "names.tsv"
    assert dwca.citation_file_name("records") == "records.citation.txt"
    assert dwca.citation_file_name("mediarecords") == "mediarecords.citation.txt"
    assert dwca.ROW_TYPES == {
        "records": "http://rs.tdwg.org/dwc/terms/Occurrence",
        "mediarecords": "http://rs.tdwg.org/ac/terms/Multimedia",
        "uniquelocality": "http://rs.tdwg.org/dwc/terms/Location",
        "uniquenames": "http://rs.tdwg.org/dwc/terms/Taxon",
    }
    assert [dwca.media_type(f) for f in ("dwca-csv", "dwca-tsv", "csv", "tsv")] == [
        "application/zip",
        "application/zip",
        "text/csv",
        "text/tab-separated-values",
    ]
    assert [dwca.delimiter(f) for f in ("dwca-csv", "dwca-tsv", "csv", "tsv")] == [
        ",",
        "\t",
        ",",
        "\t",
    ]


def test_index_columns_come_from_the_catalogue() -> None:
    columns = dwca.index_columns("records", ["uuid", "scientificname", "geopoint", "datecollected"])
    assert columns == [
        COREID,
        Column("idigbio:uuid", "http://portal.idigbio.org/terms/uuid"),
        Column("dwc:scientificName", "http://rs.tdwg.org/dwc/terms/scientificName"),
        Column("idigbio:geoPoint", "http://portal.idigbio.org/terms/geoPoint"),
        # iDigBio's header, but the index field name as the local name: dwc:eventDate is
        # in the same file (see test_no_two_columns_of_an_indexed_file_share_a_local_name).
        Column("idigbio:eventDate", "http://portal.idigbio.org/terms/datecollected"),
    ]
    every = dwca.index_columns("mediarecords", catalogue.field_names("mediarecords"))
    assert [c.header for c in every[1:]] == [f.csv_header for f in catalogue.fields("mediarecords")]
    assert all(c.term_uri for c in every[1:])


@pytest.mark.parametrize("rtype", ["records", "mediarecords"])
def test_no_two_columns_of_an_indexed_file_share_a_local_name(rtype: RecordType) -> None:
    # Readers that key columns by the local name of their term (ALA's dwcahandler, pandas
    # users renaming columns) must tell every indexed column apart, case aside.
    columns = dwca.index_columns(rtype, catalogue.field_names(rtype))
    names = [local_name(c.term_uri or "").lower() for c in columns[1:]]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def test_unknown_index_field_is_named() -> None:
    with pytest.raises(ValueError, match="'nosuchfield' is not an indexed records field"):
        dwca.index_columns("records", ["uuid", "nosuchfield"])


def test_raw_columns_keep_term_names_as_headers() -> None:
    columns = dwca.raw_columns(
        ["dwc:scientificName", "ac:accessURI", "symbiota:x", "http://e.org/t"]
    )
    assert columns == [
        COREID,
        Column("dwc:scientificName", "http://rs.tdwg.org/dwc/terms/scientificName"),
        Column("ac:accessURI", "http://rs.tdwg.org/ac/terms/accessURI"),
        Column("symbiota:x", "symbiota:x"),
        Column("http://e.org/t", "http://e.org/t"),
    ]


def test_unique_columns() -> None:
    assert dwca.unique_columns("uniquelocality") == [
        COREID,
        Column("dwc:locality", "http://rs.tdwg.org/dwc/terms/locality"),
        Column("idigbio:itemCount", "http://portal.idigbio.org/terms/itemCount"),
    ]
    assert dwca.unique_columns("uniquenames")[1] == Column(
        "dwc:scientificName", "http://rs.tdwg.org/dwc/terms/scientificName"
    )


def test_unique_ids_are_uuid5_in_idigbio_namespaces() -> None:
    assert dwca.unique_id("uniquelocality", "boston") == str(
        uuid.uuid5(uuid.UUID("e8518454-3e95-5e2f-95b4-e4b25c6ebb53"), "boston")
    )
    assert dwca.unique_id("uniquenames", "acer rubrum") == str(
        uuid.uuid5(uuid.UUID("90181196-fecf-5082-a4c1-411d4f314cda"), "acer rubrum")
    )
    values = pa.array(["b", "a", None, "b"])
    assert dwca.unique_ids("uniquenames", values).to_pylist() == [
        dwca.unique_id("uniquenames", "b"),
        dwca.unique_id("uniquenames", "a"),
        None,
        dwca.unique_id("uniquenames", "b"),
    ]


def test_unique_value_batches_prepend_the_id() -> None:
    source = pa.record_batch([pa.array(["x", "y"]), pa.array([3, 1])], names=["value", "count"])
    (out,) = dwca.unique_value_batches("uniquelocality", [source])
    assert out.num_columns == 3
    assert out.column(0).to_pylist() == [dwca.unique_id("uniquelocality", v) for v in ("x", "y")]
    assert out.column(2).to_pylist() == [3, 1]


def test_citation_text() -> None:
    citation = Citation("records.citation.txt", '{"genus": "acer"}', 7, {"b": 2, "a": 2, "c": 5})
    text = dwca.render_citation(
        citation,
        publisher="https://portal.example.org",
        accessed=datetime(2024, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=3))),
    )
    assert text == (
        "https://portal.example.org (2023),\n"
        'Query: {"genus": "acer"},\n'
        "7 records, accessed on 2023-12-31T22:00:00+00:00,\n"
        "contributed by 3 Recordsets, Recordset identifiers:\n"
        "c (5 records)\n"
        "a (2 records)\n"
        "b (2 records)\n"
    )
    naive = dwca.render_citation(citation, publisher="P", accessed=datetime(2024, 1, 1))
    assert "accessed on 2024-01-01T00:00:00+00:00" in naive
    assert datetime(2024, 1, 1, tzinfo=UTC).year == 2024


def test_verbatim_terms_of_one_local_name_are_declared_apart() -> None:
    # Recordsets publish dc:type beside dcterms:type, and Symbiota's terms under http and
    # https; readers that key columns by local name (ALA's dwcahandler) need them apart.
    terms = [
        "dc:type",
        "dcterms:type",
        "http://symbiota.org/terms/recordID",
        "https://symbiota.org/terms/recordID",
        "idigbio:recordId",
        "dwc:scientificName",
    ]
    columns = dwca.raw_columns(terms)
    assert [c.header for c in columns] == ["coreid", *terms]  # headers as published
    uris = {c.header: c.term_uri for c in columns[1:]}
    assert uris["dcterms:type"] == "http://purl.org/dc/terms/type"  # the DCMI term keeps it
    assert uris["dc:type"] == dwca.VERBATIM_NAMESPACE + "dc_type"
    assert uris["http://symbiota.org/terms/recordID"] == "http://symbiota.org/terms/recordID"
    assert uris["https://symbiota.org/terms/recordID"] == (
        dwca.VERBATIM_NAMESPACE + "https_symbiota_org_terms_recordID"
    )
    assert uris["idigbio:recordId"] == dwca.VERBATIM_NAMESPACE + "idigbio_recordId"
    assert uris["dwc:scientificName"] == "http://rs.tdwg.org/dwc/terms/scientificName"
    names = [dwca.local_name(u).lower() for u in uris.values()]
    assert len(set(names)) == len(names)
    # Without a clash every term keeps its URI.
    assert dwca.raw_columns(["dc:type"])[1].term_uri == "http://purl.org/dc/elements/1.1/type"
