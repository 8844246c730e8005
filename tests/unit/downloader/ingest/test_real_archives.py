"""Archives that real portals wrote (iDigBio, GBIF, Symbiota) load with exactly their rows.

The archives are in ``tests/fixtures/real-dwca`` (provenance in ``tests/fixtures/README.md``).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest

from downloader.ingest.load import describe, ingest_archive
from tests.unit.downloader.ingest.helpers import rows

REAL = Path(__file__).resolve().parents[3] / "fixtures" / "real-dwca"
IDIGBIO = REAL / "idigbio-download-acer-rubrum-2022-05-11.zip"
GBIF = REAL / "gbif-download-0084005-210914110416597.zip"
SYMBIOTA = REAL / "symbiota-seinet-pere-2025-02-13.zip"


def member_rows(archive: Path, name: str, encoding: str = "utf-8", delimiter: str = ",") -> list:
    """A member's data rows, read with Python's csv module (the reference reading)."""
    with zipfile.ZipFile(archive) as zf:
        text = zf.read(name).decode(encoding)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting))[1:]


@pytest.mark.parametrize(
    ("archive", "records", "media"),
    [(IDIGBIO, 3245, 2874), (GBIF, 68, 79), (SYMBIOTA, 131, 35)],
)
def test_real_archives_load_with_exactly_their_rows(
    tmp_path: Path, archive: Path, records: int, media: int
) -> None:
    result = ingest_archive(tmp_path, archive)
    assert (result.records, result.media) == (records, media)
    assert rows(tmp_path, "SELECT count(*), count(DISTINCT uuid) FROM records") == [
        (records, records)
    ]
    assert rows(tmp_path, "SELECT count(*), count(DISTINCT uuid) FROM mediarecords") == [
        (media, media)
    ]
    # Every media row of these archives names a record of the same archive.
    assert rows(tmp_path, "SELECT count(*) FROM mediarecords WHERE coreid IS NULL") == [(0,)]


def test_idigbio_download_keeps_its_uuids_and_takes_data_from_the_raw_file(
    tmp_path: Path,
) -> None:
    ingest_archive(tmp_path, IDIGBIO)
    interpreted = member_rows(IDIGBIO, "occurrence.csv")
    raw = member_rows(IDIGBIO, "occurrence_raw.csv")
    with zipfile.ZipFile(IDIGBIO) as zf:
        raw_header = next(csv.reader(io.StringIO(zf.read("occurrence_raw.csv").decode())))
    uuids = {r[0] for r in interpreted}
    stored = {u for (u,) in rows(tmp_path, "SELECT uuid FROM records")}
    assert stored == uuids  # iDigBio's record uuids, not newly minted ones
    # data holds the verbatim (raw) values in their published case, not the lower-cased
    # index values of occurrence.csv.
    sci = raw_header.index("dwc:scientificName")
    first = raw[0]
    (data,) = rows(tmp_path, "SELECT data FROM records WHERE uuid = ?", [first[0]])[0]
    assert json.loads(data)["dwc:scientificName"] == first[sci]
    assert rows(tmp_path, "SELECT count(*) FROM records WHERE genus = 'acer'") == [(3245,)]
    # Media hang on their records (several media per record for some).
    assert rows(tmp_path, "SELECT count(DISTINCT coreid) FROM mediarecords") == [(2848,)]


def test_gbif_download_reads_unquoted_cells_literally_and_applies_defaults(
    tmp_path: Path,
) -> None:
    ingest_archive(tmp_path, GBIF)
    verbatim = member_rows(GBIF, "verbatim.txt", delimiter="\t")
    with zipfile.ZipFile(GBIF) as zf:
        header = zf.read("verbatim.txt").decode().split("\n", 1)[0].split("\t")
    dyn = header.index("dynamicProperties")
    literal = [r for r in verbatim if r[dyn].startswith('"')]
    assert literal, "the fixture has a quoted-looking cell"
    stored = rows(
        tmp_path,
        "SELECT data->>'dwc:dynamicProperties' FROM records WHERE uuid IN (SELECT uuid FROM "
        "records) AND data->>'dwc:dynamicProperties' LIKE '\"%'",
    )
    assert {v for (v,) in stored} == {r[dyn] for r in literal}
    # Each record's data is its verbatim.txt row: every non-empty cell, and nothing else.
    gbif_id = header.index("gbifID")
    by_id = {r[gbif_id]: r for r in verbatim}
    for (data,) in rows(tmp_path, "SELECT data FROM records"):
        values = json.loads(data)
        row = by_id[values["gbif:gbifID"]]
        assert sorted(values.values()) == sorted(v for v in row if v.strip())


def test_symbiota_export_is_read_as_latin_1_and_keeps_its_extensions(tmp_path: Path) -> None:
    result = ingest_archive(tmp_path, SYMBIOTA)
    assert dict(result.extensions) == {
        "identifications": 145,
        "measurementOrFact": 77,
        "materialSample": 0,
    }
    assert "145 identifications rows, 77 measurementOrFact rows" in describe(result)
    text = " ".join(d for (d,) in rows(tmp_path, "SELECT CAST(data AS VARCHAR) FROM records"))
    assert "§" in text and "\ufffd" not in text
    kept = rows(
        tmp_path,
        "SELECT rowtype, count(*), count(coreid) FROM extension_rows GROUP BY rowtype "
        "ORDER BY rowtype",
    )
    assert kept == [
        ("http://rs.iobis.org/obis/terms/ExtendedMeasurementOrFact", 77, 77),
        ("http://rs.tdwg.org/dwc/terms/Identification", 145, 145),
    ]
    identifications = member_rows(SYMBIOTA, "identifications.csv", encoding="latin-1")
    names = sorted(r[4] for r in identifications)
    stored = sorted(
        v
        for (v,) in rows(
            tmp_path,
            "SELECT data->>'dwc:scientificName' FROM extension_rows "
            "WHERE rowtype LIKE '%Identification'",
        )
    )
    assert stored == names


def test_reingest_of_a_real_archive_keeps_uuids_and_extension_rows(tmp_path: Path) -> None:
    ingest_archive(tmp_path, SYMBIOTA)
    before = rows(tmp_path, "SELECT uuid FROM records ORDER BY uuid")
    second = ingest_archive(tmp_path, SYMBIOTA)
    assert second.version == 2 and second.deleted == 0
    assert rows(tmp_path, "SELECT uuid FROM records ORDER BY uuid") == before
    assert rows(tmp_path, "SELECT count(*) FROM extension_rows") == [(222,)]


def _two_recordset_dump(folder: Path) -> tuple[Path, dict[str, int], dict[str, int]]:
    """An iDigBio download cut down to the rows of two of its recordsets (every file of the
    real archive filtered alike); (the zip, records per recordset, media per recordset)."""
    with zipfile.ZipFile(IDIGBIO) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}

    def table(name: str) -> list[list[str]]:
        text = members[name].decode("utf-8")
        return list(csv.reader(io.StringIO(text, newline="")))

    occurrence = table("occurrence.csv")
    column = occurrence[0].index("idigbio:recordset")
    sizes: dict[str, int] = {}
    for row in occurrence[1:]:
        sizes[row[column]] = sizes.get(row[column], 0) + 1
    chosen = sorted(rs for rs, n in sizes.items() if 50 <= n <= 70)[:2]
    assert len(chosen) == 2
    recordset_of = {r[0]: r[column] for r in occurrence[1:] if r[column] in chosen}
    media: dict[str, int] = dict.fromkeys(chosen, 0)
    for name in ("occurrence.csv", "occurrence_raw.csv", "multimedia.csv", "multimedia_raw.csv"):
        rows_ = table(name)
        kept = [rows_[0]] + [r for r in rows_[1:] if r[0] in recordset_of]
        if name == "multimedia.csv":
            for r in kept[1:]:
                media[recordset_of[r[0]]] += 1
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(kept)
        members[name] = out.getvalue().encode("utf-8")
    path = folder / "idigbio-two-recordsets.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return path, {rs: sizes[rs] for rs in chosen}, media


def test_an_idigbio_dump_loads_as_the_recordsets_it_holds(tmp_path: Path) -> None:
    from downloader.ingest.load import ingest_paths

    dump, records, media = _two_recordset_dump(tmp_path)
    data = tmp_path / "data"
    results, failures = ingest_paths(data, [dump])
    assert failures == []
    # The archive's warnings are told once, not once per recordset.
    assert results[0].warnings and not any(r.warnings for r in results[1:])
    assert {r.recordset: (r.records, r.media) for r in results} == {
        rs: (records[rs], media[rs]) for rs in records
    }
    assert rows(data, "SELECT recordset, record_count, media_count FROM recordsets ORDER BY 1") == [
        (rs, records[rs], media[rs]) for rs in sorted(records)
    ]
    # Each record is in its own recordset (and keeps iDigBio's uuid), each media record in
    # its record's.
    interpreted = member_rows(dump, "occurrence.csv")
    with zipfile.ZipFile(dump) as zf:
        header = next(csv.reader(io.StringIO(zf.read("occurrence.csv").decode())))
    column = header.index("idigbio:recordset")
    assert set(rows(data, "SELECT uuid, recordset FROM records")) == {
        (r[0], r[column]) for r in interpreted
    }
    assert rows(
        data,
        "SELECT count(*) FROM mediarecords AS m JOIN records AS r ON r.uuid = m.coreid "
        "WHERE r.recordset <> m.recordset",
    ) == [(0,)]
    # Loading the dump again gives each recordset its next version, nothing removed.
    again, _ = ingest_paths(data, [dump])
    assert sorted((r.recordset, r.version, r.deleted) for r in again) == [
        (rs, 2, 0) for rs in sorted(records)
    ]
    # --recordset names one recordset: the dump is then loaded whole under it.
    whole, _ = ingest_paths(tmp_path / "one", [dump], recordset="mine")
    assert [(r.recordset, r.records) for r in whole] == [("mine", sum(records.values()))]


def _without_record(dump: Path, record_id: str, target: Path) -> Path:
    """``dump`` with one record, its verbatim row and its media left out."""
    with zipfile.ZipFile(dump) as zf, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for name in zf.namelist():
            content = zf.read(name)
            if name.endswith(".csv"):
                kept = [
                    r
                    for r in csv.reader(io.StringIO(content.decode("utf-8"), newline=""))
                    if r[0] != record_id
                ]
                text = io.StringIO()
                csv.writer(text, lineterminator="\n").writerows(kept)
                content = text.getvalue().encode("utf-8")
            out.writestr(name, content)
    return target


def test_a_record_gone_from_one_recordset_of_a_dump_is_deleted_there_only(
    tmp_path: Path,
) -> None:
    from downloader.ingest.load import ingest_paths

    dump, records, _ = _two_recordset_dump(tmp_path)
    data = tmp_path / "data"
    ingest_paths(data, [dump])
    first, other = sorted(records)
    (uuid_,) = rows(data, f"SELECT min(uuid) FROM records WHERE recordset = '{first}'")[0]
    ((its_media,),) = rows(data, f"SELECT count(*) FROM mediarecords WHERE coreid = '{uuid_}'")
    kept_before = rows(
        data, f"SELECT uuid, datemodified FROM records WHERE uuid <> '{uuid_}' ORDER BY uuid"
    )
    smaller = _without_record(dump, uuid_, tmp_path / "smaller.zip")
    again, failures = ingest_paths(data, [smaller])
    assert failures == []
    assert sorted((r.recordset, r.version, r.records, r.deleted) for r in again) == [
        (first, 2, records[first] - 1, 1),
        (other, 2, records[other], 0),
    ]
    assert rows(data, "SELECT uuid, recordset FROM deleted_records WHERE rtype = 'records'") == [
        (uuid_, first)
    ]
    # Its media went with it, logged in its recordset too.
    assert rows(
        data,
        "SELECT recordset, count(*) FROM deleted_records WHERE rtype = 'mediarecords' GROUP BY 1",
    ) == ([(first, its_media)] if its_media else [])
    assert rows(data, f"SELECT count(*) FROM records WHERE uuid = '{uuid_}'") == [(0,)]
    # Every other record is unchanged, so it keeps the datemodified of its first version.
    assert (
        rows(data, f"SELECT uuid, datemodified FROM records WHERE uuid <> '{uuid_}' ORDER BY uuid")
        == kept_before
    )
    assert rows(data, "SELECT recordset, version FROM recordsets ORDER BY 1") == [
        (first, 2),
        (other, 2),
    ]
