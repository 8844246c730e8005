"""Derivation of index fields from verbatim terms: dates, coordinates, flags, numbers, text."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from downloader.ingest.derive import parse_loose_date
from downloader.ingest.load import ingest_verbatim, store_path
from downloader.ingest.read import ID_COLUMN, ROW_COLUMN, VerbatimArchive
from tests.support.store import open_store

NOW = datetime(2024, 6, 1, 12, 0, 0)


def derive(tmp_path: Path, *records: dict[str, str]) -> list[dict[str, Any]]:
    """Ingest records given as verbatim term dicts; return their rows in input order."""
    terms = sorted({k for r in records for k in r})
    table = pa.table(
        {
            ID_COLUMN: pa.array([f"r{i}" for i in range(len(records))], pa.string()),
            ROW_COLUMN: pa.array(range(len(records)), pa.int64()),
            **{t: pa.array([r.get(t) for r in records], pa.string()) for t in terms},
        }
    )
    archive = VerbatimArchive(
        source="test", recordset_id="rs", name="test", eml=None, core=table, media=None
    )
    ingest_verbatim(tmp_path, archive, now=NOW)
    con = open_store(str(store_path(tmp_path)))
    try:
        cur = con.execute("SELECT * FROM records ORDER BY recordids[1]")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("1990-05-17", datetime(1990, 5, 17)),
        ("1990-5-7", datetime(1990, 5, 7)),
        ("1990-05-17T10:20:30Z", datetime(1990, 5, 17)),
        ("2011-10-22T00:00Z", datetime(2011, 10, 22)),
        ("1990-01-01/1990-02-01", datetime(1990, 1, 1)),
        ("1990-05", datetime(1990, 5, 1)),
        ("1990", datetime(1990, 1, 1)),
        ("19900517", datetime(1990, 5, 17)),
        ("17 May 1990", datetime(1990, 5, 17)),
        ("Tue Apr 01 00:00:00 CET 1930", datetime(1930, 4, 1)),
    ],
)
def test_datecollected_from_event_date(tmp_path: Path, event: str, expected: datetime) -> None:
    (row,) = derive(tmp_path, {"dwc:eventDate": event})
    assert row["datecollected"] == expected
    assert row["startdayofyear"] == expected.timetuple().tm_yday
    assert row["eventdate"] == event.lower()
    assert not row["flags"]


def test_datecollected_from_year_month_day(tmp_path: Path) -> None:
    a, b = derive(
        tmp_path,
        {"dwc:year": "1931", "dwc:month": "2", "dwc:day": "3"},
        {"dwc:year": "1931"},
    )
    assert a["datecollected"] == datetime(1931, 2, 3)
    assert b["datecollected"] == datetime(1931, 1, 1)


@pytest.mark.parametrize(
    ("record", "flag"),
    [
        ({"dwc:eventDate": "unknown"}, "datecollected_unparseable"),
        ({"dwc:eventDate": "spring 1901"}, "datecollected_unparseable"),
        ({"dwc:eventDate": "1066-10-14"}, "datecollected_bounds"),
        ({"dwc:eventDate": "2999-01-01"}, "datecollected_bounds"),
        ({"dwc:year": "1931", "dwc:month": "13", "dwc:day": "40"}, "datecollected_unparseable"),
    ],
)
def test_bad_dates_are_flagged_and_not_indexed(
    tmp_path: Path, record: dict[str, str], flag: str
) -> None:
    (row,) = derive(tmp_path, record)
    assert row["datecollected"] is None
    assert row["startdayofyear"] is None
    assert flag in row["flags"]


@pytest.mark.parametrize(
    ("lat", "lon", "point", "flag"),
    [
        ("45.5", "-73.25", {"lat": 45.5, "lon": -73.25}, None),
        (" -33.9 ", "18.4", {"lat": -33.9, "lon": 18.4}, None),
        ("0", "0", None, "geopoint_0_coord"),
        ("95.2", "10", None, "geopoint_bounds"),
        ("45", "-190", None, "geopoint_bounds"),
        ("12°N", "10", None, "geopoint_unparseable"),
        ("45.5", None, None, "geopoint_partial"),
    ],
)
def test_geopoint_and_its_flags(
    tmp_path: Path, lat: str, lon: str | None, point: dict[str, float] | None, flag: str | None
) -> None:
    record = {"dwc:decimalLatitude": lat}
    if lon is not None:
        record["dwc:decimalLongitude"] = lon
    (row,) = derive(tmp_path, record)
    assert row["geopoint"] == point
    if flag is None:
        assert not row["flags"]
    else:
        assert flag in row["flags"]


def test_strings_are_trimmed_and_lower_cased_and_empty_is_null(tmp_path: Path) -> None:
    (row,) = derive(
        tmp_path,
        {
            "dwc:scientificName": "  Acer rubrum L. ",
            "dwc:family": "SAPINDACEAE",
            "dwc:locality": "Gainesville, Florida",
            "dwc:country": "   ",
        },
    )
    assert row["scientificname"] == "acer rubrum l."
    assert row["family"] == "sapindaceae"
    assert row["locality"] == "gainesville, florida"
    assert row["country"] is None
    # genus and specific epithet fall back on the scientific name.
    assert (row["genus"], row["specificepithet"]) == ("acer", "rubrum")


def test_own_genus_wins_over_the_scientific_name(tmp_path: Path) -> None:
    (row,) = derive(tmp_path, {"dwc:scientificName": "Acer sp.", "dwc:genus": "Acer"})
    assert (row["genus"], row["specificepithet"]) == ("acer", None)


def test_numbers_parse_and_bad_numbers_are_flagged(tmp_path: Path) -> None:
    good, bad = derive(
        tmp_path,
        {
            "dwc:minimumElevationInMeters": "120.5",
            "dwc:maximumDepthInMeters": "30",
            "dwc:coordinateUncertaintyInMeters": "1000",
            "dwc:individualCount": "3",
        },
        {"dwc:minimumElevationInMeters": "about 100 m"},
    )
    assert good["minelevation"] == 120.5
    assert good["maxdepth"] == 30.0
    assert good["coordinateuncertainty"] == 1000.0
    assert good["individualcount"] == 3.0
    assert bad["minelevation"] is None
    assert "minelevation_unparseable" in bad["flags"]


def test_country_code_falls_back_on_dwc_country_code_and_lists_split(tmp_path: Path) -> None:
    (row,) = derive(
        tmp_path,
        {"dwc:countryCode": "US", "dwc:vernacularName": "Red maple, swamp maple"},
    )
    assert row["countrycode"] == "us"
    assert row["commonname"] == "red maple, swamp maple"
    assert row["commonnames"] == ["red maple", "swamp maple"]


def test_identity_fields(tmp_path: Path) -> None:
    (row,) = derive(tmp_path, {"dwc:catalogNumber": "A-1"})
    assert row["recordset"] == "rs"
    assert row["version"] == 1
    assert row["recordids"] == ["rs\\r0"]
    assert row["datemodified"] == NOW
    assert len(row["etag"]) == 40
    assert row["hasImage"] is False and row["hasMedia"] is False
    assert 0 < row["dqs"] <= 1


def test_parse_loose_date_refuses_text_without_a_year() -> None:
    assert parse_loose_date("12") is None
    assert parse_loose_date("March 3") is None
    assert parse_loose_date("3 March 1987") == datetime(1987, 3, 3)


@pytest.mark.parametrize(
    "values",
    [
        ["Ame\u0301lie", "cafe\u0301", "São Paulo"],  # decomposed accents within values
        ["\u0301leading mark", "trailing e\u0301", "\u0323\u0307 two marks out of order"],
        ["\u1100", "\u1161", "\u1100\u1161"],  # Hangul jamo at the ends and composed inside
        ["plain", None, "", "Å ﬁ ＡＢＣ"],  # a null, an empty value, compatibility forms
    ],
)
def test_fulltext_is_the_nfc_of_the_joined_values(values: list[str | None]) -> None:
    # Each value is normalised on its own and then joined (cheaper): the same text as the
    # NFC of the joined line, lower-cased, which the query side's tokens are made from.
    import unicodedata

    import duckdb

    from downloader.ingest.derive import Columns, fulltext_sql

    terms = [f"t{i}" for i in range(len(values))]
    con = duckdb.connect()
    con.execute("CREATE TABLE v (" + ", ".join(f"{t} VARCHAR" for t in terms) + ")")
    con.execute(f"INSERT INTO v VALUES ({', '.join('?' for _ in terms)})", values)
    (got,) = con.execute(
        f"SELECT {fulltext_sql(Columns(terms, alias='v'), terms)} FROM v"
    ).fetchone()
    joined = " ".join(v for v in values if v is not None)
    assert got == unicodedata.normalize("NFC", joined).lower()
