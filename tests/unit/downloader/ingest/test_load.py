"""Ingest of Darwin Core Archives into the DuckDB record store."""

from __future__ import annotations

import json
import shutil
import uuid
import zipfile
from pathlib import Path

import duckdb
import pytest

from downloader.ingest.derive import UUID_NAMESPACE
from downloader.ingest.load import ingest_archive, ingest_paths, store_path
from downloader.ingest.read import ArchiveRejected, open_archive
from downloader.sources.duckdb import DuckDBSource
from query.fields import field_names
from query.text import tokens
from query.validate import validate_query
from tests.unit.downloader.ingest.helpers import rows

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "dwca"
GBIF = FIXTURES / "gbif-results.zip"
DEMO = FIXTURES / "demo-occurrence-multimedia.zip"


@pytest.mark.parametrize(
    ("name", "records", "recordset"),
    [
        ("gbif-results.zip", 158, "0ac6620a-ba21-405c-af5c-d62cf59464b8"),
        (
            "dwca-simple-test-archive.zip",
            2,
            "http://localhost:8080/ipt-2.0.3/resource.do?id=simple-test-archive/v1",
        ),
        (
            "dwca-test-default.zip",
            2,
            "http://desktop-arch:8080/ipt-2.0.2/resource.do?id=test-default/v1",
        ),
        ("dwca-simple-csv.zip", 3, "dwca-simple-csv"),
        ("demo-occurrence-multimedia.zip", 60, "urn:uuid:3f1f4b2e-7c55-4d7e-9a3e-0d2f6b1c9e42"),
    ],
)
def test_each_occurrence_sample_loads(
    tmp_path: Path, name: str, records: int, recordset: str
) -> None:
    result = ingest_archive(tmp_path, FIXTURES / name)
    assert (result.recordset, result.version, result.records) == (recordset, 1, records)
    assert rows(tmp_path, "SELECT count(*), count(DISTINCT uuid) FROM records") == [
        (records, records)
    ]
    assert rows(tmp_path, "SELECT DISTINCT recordset, version FROM records") == [(recordset, 1)]


def test_verbatim_terms_are_kept_by_short_name_and_index_fields_lower_cased(tmp_path: Path) -> None:
    ingest_archive(tmp_path, GBIF)
    data, genus, family, country_code = rows(
        tmp_path,
        "SELECT data, genus, family, countrycode FROM records WHERE data->>'dwc:catalogNumber' = ?",
        ["37109"],
    )[0]
    data = json.loads(data)
    assert data["dwc:institutionCode"] == "CAS"
    assert data["dwc:scientificName"] == "Chelonodon fluviatilis (Hamilton, 1822)"
    assert (genus, family) == ("tetraodon", "tetraodontidae")
    assert country_code is None or country_code == country_code.lower()


def test_meta_xml_default_value_is_applied(tmp_path: Path) -> None:
    ingest_archive(tmp_path, FIXTURES / "dwca-test-default.zip")
    assert rows(tmp_path, "SELECT DISTINCT country, data->>'dwc:country' FROM records") == [
        ("belgium", "Belgium")
    ]


def test_headers_only_csv_headers_map_to_darwin_core_terms(tmp_path: Path) -> None:
    ingest_archive(tmp_path, FIXTURES / "dwca-simple-csv.zip")
    found = rows(
        tmp_path,
        "SELECT scientificname, geopoint, datecollected, data->>'dwc:decimalLatitude' "
        "FROM records WHERE data->>'dwc:decimalLatitude' IS NOT NULL",
    )
    assert found, "decimallatitude should become dwc:decimalLatitude"
    name, point, _, lat = found[0]
    assert name.startswith("lactoria cornuta")
    assert point == {"lat": float(lat), "lon": point["lon"]}


@pytest.mark.parametrize("name", ["dwca-star-test-archive.zip", "dwca-2extensions.zip"])
def test_taxon_core_is_rejected_naming_archive_and_row_type(tmp_path: Path, name: str) -> None:
    with pytest.raises(ArchiveRejected) as info:
        ingest_archive(tmp_path, FIXTURES / name)
    assert name in str(info.value)
    assert "http://rs.tdwg.org/dwc/terms/Taxon" in str(info.value)
    assert "Occurrence" in str(info.value)


def test_a_rejected_archive_does_not_stop_the_others(tmp_path: Path) -> None:
    results, failures = ingest_paths(
        tmp_path, [FIXTURES / "dwca-star-test-archive.zip", GBIF, tmp_path / "missing.zip"]
    )
    assert [r.records for r in results] == [158]
    assert len(failures) == 2
    assert "no such file" in str(failures[1][1])


def test_reingest_replaces_bumps_version_and_keeps_uuids(tmp_path: Path) -> None:
    first = ingest_archive(tmp_path, GBIF)
    before = dict(rows(tmp_path, "SELECT data->>'dwc:occurrenceID', uuid FROM records"))
    version_before = DuckDBSource(store_path(tmp_path)).data_version()
    second = ingest_archive(tmp_path, GBIF)
    assert (first.version, second.version) == (1, 2)
    after = dict(rows(tmp_path, "SELECT data->>'dwc:occurrenceID', uuid FROM records"))
    assert after == before
    assert rows(tmp_path, "SELECT count(*), min(version) FROM records") == [(158, 2)]
    assert rows(tmp_path, "SELECT recordset, version FROM recordsets") == [(first.recordset, 2)]
    assert int(DuckDBSource(store_path(tmp_path)).data_version()) == int(version_before) + 1


def test_unchanged_records_keep_datemodified_on_reingest(tmp_path: Path) -> None:
    ingest_archive(tmp_path, GBIF)
    before = dict(rows(tmp_path, "SELECT uuid, datemodified FROM records"))
    ingest_archive(tmp_path, GBIF)
    assert dict(rows(tmp_path, "SELECT uuid, datemodified FROM records")) == before


def test_records_dropped_by_a_reingest_are_tracked(tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    with zipfile.ZipFile(GBIF) as zf:
        zf.extractall(folder)
    ingest_archive(tmp_path / "data", folder, recordset="rs-1")
    lines = (folder / "occurrence.txt").read_text("utf-8").splitlines(keepends=True)
    dropped_id = lines[-1].split("\t")[0]
    (folder / "occurrence.txt").write_text("".join(lines[:-1]), "utf-8")
    result = ingest_archive(tmp_path / "data", folder, recordset="rs-1")
    assert (result.records, result.deleted) == (157, 1)
    expected = str(uuid.uuid5(UUID_NAMESPACE, f"rs-1\\{dropped_id}"))
    deleted = DuckDBSource(store_path(tmp_path / "data")).deleted_records()
    assert [(d.uuid, d.recordset, d.rtype) for d in deleted] == [(expected, "rs-1", "records")]


def _folder_archive(folder: Path, core: list[str], media: list[str]) -> Path:
    """A folder archive: an Occurrence core (id, occurrenceID, scientificName) and a GBIF
    multimedia extension (coreid, identifier), tab separated, without header lines."""
    folder.mkdir(parents=True, exist_ok=True)
    dwc, dc = "http://rs.tdwg.org/dwc/terms/", "http://purl.org/dc/terms/"
    (folder / "meta.xml").write_text(
        '<archive xmlns="http://rs.tdwg.org/dwc/text/">'
        f'<core rowType="{dwc}Occurrence" fieldsTerminatedBy="\\t" fieldsEnclosedBy="">'
        '<files><location>occurrence.txt</location></files><id index="0"/>'
        f'<field index="1" term="{dwc}occurrenceID"/><field index="2" term="{dwc}scientificName"/>'
        '</core><extension rowType="http://rs.gbif.org/terms/1.0/Multimedia" '
        'fieldsTerminatedBy="\\t" fieldsEnclosedBy="">'
        '<files><location>multimedia.txt</location></files><coreid index="0"/>'
        f'<field index="1" term="{dc}identifier"/></extension></archive>',
        "utf-8",
    )
    (folder / "occurrence.txt").write_text("".join(f"{line}\n" for line in core), "utf-8")
    (folder / "multimedia.txt").write_text("".join(f"{line}\n" for line in media), "utf-8")
    return folder


def test_a_repeated_record_or_media_key_gets_a_numbered_key_and_its_own_uuid(
    tmp_path: Path,
) -> None:
    folder = _folder_archive(
        tmp_path / "archive",
        [
            "a\to-1\tAcer rubrum",
            "b\to-2\tQuercus alba",
            "a\to-3\tAcer saccharum",
            "a\to-4\tAcer nigrum",
        ],
        ["a\thttp://img/1.jpg", "b\thttp://img/2.jpg", "a\thttp://img/1.jpg"],
    )
    result = ingest_archive(tmp_path / "data", folder, recordset="rs")
    assert (result.records, result.media) == (4, 3)

    def uuid_of(key: str, *, media: bool = False) -> str:
        return str(uuid.uuid5(UUID_NAMESPACE, ("media\\" if media else "") + f"rs\\{key}"))

    got = rows(
        tmp_path / "data", "SELECT data->>'dwc:scientificName', uuid, recordids FROM records"
    )
    assert sorted(got) == sorted(
        [
            ("Acer rubrum", uuid_of("a"), ["rs\\a"]),
            ("Quercus alba", uuid_of("b"), ["rs\\b"]),
            ("Acer saccharum", uuid_of("a#2"), ["rs\\a#2"]),
            ("Acer nigrum", uuid_of("a#3"), ["rs\\a#3"]),
        ]
    )
    # Media of id "a" belong to one record of that id (the least uuid, so always the
    # same one); the repeated media row is numbered too.
    a = min(uuid_of("a"), uuid_of("a#2"), uuid_of("a#3"))
    media = rows(tmp_path / "data", "SELECT uuid, coreid FROM mediarecords")
    assert sorted(media) == sorted(
        [
            (uuid_of("a\\http://img/1.jpg", media=True), a),
            (uuid_of("b\\http://img/2.jpg", media=True), uuid_of("b")),
            (uuid_of("a\\http://img/1.jpg#2", media=True), a),
        ]
    )
    # The same archive again: the same uuids, nothing deleted.
    again = ingest_archive(tmp_path / "data", folder, recordset="rs")
    assert again.deleted == 0
    assert sorted(rows(tmp_path / "data", "SELECT uuid FROM records")) == sorted(
        (u,) for _, u, _ in got
    )


def test_records_and_media_that_come_back_leave_the_deletion_log(tmp_path: Path) -> None:
    core = ["a\to-1\tAcer rubrum", "b\to-2\tQuercus alba"]
    media = ["a\thttp://img/1.jpg", "b\thttp://img/2.jpg"]
    folder = _folder_archive(tmp_path / "archive", core, media)
    data = tmp_path / "data"
    ingest_archive(data, folder, recordset="rs")
    _folder_archive(folder, core[:1], media[:1])
    assert ingest_archive(data, folder, recordset="rs").deleted == 1
    log = "SELECT rtype, count(*) FROM deleted_records GROUP BY 1 ORDER BY 1"
    assert rows(data, log) == [("mediarecords", 1), ("records", 1)]
    _folder_archive(folder, core, media)
    assert ingest_archive(data, folder, recordset="rs").deleted == 0
    assert rows(data, log) == []


def test_record_uuid_is_uuid5_of_recordset_and_core_id(tmp_path: Path) -> None:
    ingest_archive(tmp_path, GBIF)
    got = rows(
        tmp_path, "SELECT uuid FROM records WHERE data->>'dwc:occurrenceID' = ?", ["607759330"]
    )
    assert got == [
        (str(uuid.uuid5(UUID_NAMESPACE, "0ac6620a-ba21-405c-af5c-d62cf59464b8\\607759330")),)
    ]


def test_records_without_ids_get_distinct_stable_uuids(tmp_path: Path) -> None:
    # The simple test archive leaves the id column empty on every row.
    ingest_archive(tmp_path, FIXTURES / "dwca-simple-test-archive.zip")
    first = sorted(rows(tmp_path, "SELECT uuid FROM records"))
    ingest_archive(tmp_path, FIXTURES / "dwca-simple-test-archive.zip")
    assert len(set(first)) == 2
    assert sorted(rows(tmp_path, "SELECT uuid FROM records")) == first


def test_media_extension_links_media_to_records(tmp_path: Path) -> None:
    result = ingest_archive(tmp_path, DEMO)
    assert result.media == 38
    linked = rows(
        tmp_path,
        "SELECT count(*) FROM mediarecords AS m JOIN records AS r ON r.uuid = m.coreid "
        "WHERE m.records = [r.uuid] AND list_contains(r.mediarecords, m.uuid) "
        'AND m."hasSpecimen" AND r."hasImage" AND r."hasMedia"',
    )
    assert linked == [(38,)]
    m = rows(
        tmp_path,
        "SELECT format, mediatype, type, accessuri, data->>'ac:accessURI' FROM mediarecords "
        "LIMIT 1",
    )[0]
    assert m[:3] == ("image/jpeg", "images", "stillimage")
    assert m[3] == m[4].lower()
    without = rows(tmp_path, "SELECT count(*) FROM records WHERE mediarecords IS NULL")[0][0]
    assert rows(tmp_path, 'SELECT count(*) FROM records WHERE NOT "hasMedia"') == [(without,)]


def test_gbif_multimedia_extension_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    with zipfile.ZipFile(DEMO) as zf:
        zf.extractall(folder)
    meta = (folder / "meta.xml").read_text("utf-8")
    meta = meta.replace(
        "http://rs.tdwg.org/ac/terms/Multimedia", "http://rs.gbif.org/terms/1.0/Multimedia"
    ).replace("http://rs.tdwg.org/ac/terms/accessURI", "http://purl.org/dc/terms/identifier")
    (folder / "meta.xml").write_text(meta, "utf-8")
    result = ingest_archive(tmp_path / "data", folder)
    assert result.media == 38
    assert rows(tmp_path / "data", "SELECT count(accessuri) FROM mediarecords") == [(38,)]


def test_fulltext_holds_query_text_tokens_of_every_verbatim_value(tmp_path: Path) -> None:
    for name in ("gbif-results.zip", "demo-occurrence-multimedia.zip"):
        ingest_archive(tmp_path, FIXTURES / name)
    for data, fulltext in rows(tmp_path, "SELECT data, fulltext FROM records"):
        expected = set()
        for value in json.loads(data).values():
            expected.update(tokens(value))
        assert set(tokens(fulltext)) == expected


def test_a_fulltext_search_finds_whole_tokens_only(tmp_path: Path) -> None:
    ingest_archive(tmp_path, FIXTURES / "gbif-results.zip")
    source = DuckDBSource(store_path(tmp_path))
    ((genus,),) = rows(tmp_path, "SELECT genus FROM records WHERE genus IS NOT NULL LIMIT 1")
    whole = validate_query({"data": {"type": "fulltext", "value": genus.upper()}}, "records")
    part = validate_query({"data": {"type": "fulltext", "value": genus[:-1]}}, "records")
    with_genus = rows(tmp_path, f"SELECT count(*) FROM records WHERE genus = '{genus}'")[0][0]
    assert source.count("records", whole, None) >= with_genus > 0
    # A token's beginning is not the token (unless some value holds it alone).
    holds_part = [
        data
        for (data,) in rows(tmp_path, "SELECT data FROM records")
        if genus[:-1].lower() in {t for v in json.loads(data).values() for t in tokens(v)}
    ]
    assert source.count("records", part, None) == len(holds_part)


def test_a_store_holding_fulltext_token_lists_is_migrated_by_the_next_ingest(
    tmp_path: Path,
) -> None:
    ingest_archive(tmp_path, FIXTURES / "gbif-results.zip")
    before = rows(tmp_path, "SELECT uuid, fulltext FROM records ORDER BY uuid")
    # The store as an older version wrote it: fulltext as token lists.
    with duckdb.connect(str(store_path(tmp_path))) as con:
        for table in ("records", "mediarecords"):
            con.execute(
                f"ALTER TABLE {table} ALTER COLUMN fulltext SET DATA TYPE VARCHAR[] "
                f"USING regexp_extract_all(fulltext, '[\\pL\\pN]+')"
            )
    query = validate_query({"data": {"type": "fulltext", "value": "animalia"}}, "records")
    expected = sum(1 for _, text in before if "animalia" in tokens(text or ""))
    assert expected > 0
    # Readers get the same answers from the old shape...
    assert DuckDBSource(store_path(tmp_path)).count("records", query, None) == expected
    ingest_archive(tmp_path, FIXTURES / "dwca-simple-test-archive.zip")
    # ...and the next ingest turns the lists into text, keeping every token.
    types = rows(
        tmp_path,
        "SELECT DISTINCT data_type FROM duckdb_columns() WHERE column_name = 'fulltext'",
    )
    assert types == [("VARCHAR",)]
    after = dict(rows(tmp_path, "SELECT uuid, fulltext FROM records"))
    for uuid_, text in before:
        assert tokens(after[uuid_] or "") == tokens(text or "")
    assert DuckDBSource(store_path(tmp_path)).count("records", query, None) == expected


def test_every_catalogue_field_is_a_column(tmp_path: Path) -> None:
    ingest_archive(tmp_path, DEMO)
    for table, rtype in (("records", "records"), ("mediarecords", "mediarecords")):
        cols = [r[0] for r in rows(tmp_path, f"DESCRIBE {table}")]
        assert set(field_names(rtype)) <= set(cols)  # type: ignore[arg-type]  # literal rtype
        assert {"data", "fulltext"} <= set(cols)


def test_recordset_keeps_eml_and_term_lists(tmp_path: Path) -> None:
    ingest_archive(tmp_path, DEMO)
    eml, record_terms, media_terms = rows(
        tmp_path, "SELECT eml, record_terms, media_terms FROM recordsets"
    )[0]
    assert "Demo herbarium" in eml
    assert "dwc:scientificName" in record_terms
    assert "ac:accessURI" in media_terms


def test_read_archive_uses_file_name_without_eml(tmp_path: Path) -> None:
    copy = tmp_path / "my-csv-export.zip"
    shutil.copy(FIXTURES / "dwca-simple-csv.zip", copy)
    for given, expected in ((None, "my-csv-export"), ("given", "given")):
        opened = open_archive(copy, recordset_id=given)
        opened.files.close()
        assert opened.recordset_id == expected
