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
