"""A small hand-made record store following docs/architecture.md, for compiler tests.

:func:`create_tables` makes the ``records`` and ``mediarecords`` tables from the field
catalogue; :func:`sample_rows` generates deterministic, realistic-looking rows (sparse
columns, mixed-case verbatim values, empty strings and lists, points near the antimeridian)
shaped as the store keeps them; :func:`load` inserts rows. The integration test that compares
the compilers uses the same rows.
"""

from __future__ import annotations

import json
import random
import unicodedata
from datetime import datetime, timedelta
from typing import Any

import duckdb

from query.fields import RecordType, fields
from query.sql import DUCKDB_TYPES
from query.text import tokens


def columns(rtype: RecordType) -> list[tuple[str, str]]:
    """(column, DuckDB type) of a table, in order."""
    cols = [(f.name, DUCKDB_TYPES[f.kind]) for f in fields(rtype)]
    if rtype == "mediarecords":
        cols.append(("coreid", "VARCHAR"))
    cols += [("data", "JSON"), ("fulltext", "VARCHAR")]
    return cols


def create_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create empty ``records`` and ``mediarecords`` tables."""
    for rtype in ("records", "mediarecords"):
        spec = ", ".join(f'"{name}" {sql_type}' for name, sql_type in columns(rtype))
        con.execute(f"CREATE TABLE {rtype} ({spec})")


def load(con: duckdb.DuckDBPyConnection, rtype: RecordType, rows: list[dict[str, Any]]) -> None:
    """Insert rows (dicts keyed by column; absent columns are NULL)."""
    names = [name for name, _ in columns(rtype)]
    quoted = ", ".join(f'"{n}"' for n in names)
    marks = ", ".join("?" for _ in names)
    con.executemany(
        f"INSERT INTO {rtype} ({quoted}) VALUES ({marks})",
        [[_cell(n, row.get(n)) for n in names] for row in rows],
    )


def _cell(name: str, value: Any) -> Any:
    if name == "data" and value is not None:
        return json.dumps(value)
    return value


Row = dict[str, Any]


def connect(records: list[Row], media: list[Row]) -> duckdb.DuckDBPyConnection:
    """An in-memory store holding ``records`` and ``media``."""
    con = duckdb.connect(":memory:")
    create_tables(con)
    load(con, "records", records)
    load(con, "mediarecords", media)
    return con


GENERA = {
    "acer": ("sapindaceae", ["rubrum", "saccharum", "negundo"]),
    "quercus": ("fagaceae", ["alba", "rubra"]),
    "pinus": ("pinaceae", ["taeda", "strobus"]),
    "salix": ("salicaceae", ["nigra"]),
    "aster": ("asteraceae", ["laevis"]),
}
COUNTRIES = ["united states", "canada", "mexico", "fiji", "new zealand", "brazil"]
LOCALITIES = ["near gainesville, florida", "Mount Tamalpais", "Río Negro bank", "3 km N of Suva"]
COLLECTORS = ["J. Smith", "smith, j.", "M. García & L. Chen", "anonymous"]
FLAGS = ["geopoint_datum_missing", "rev_geocode_flip", "dwc_datasetid_added", "gbif_canonical"]
FORMATS = ["image/jpeg", "image/png", "audio/mpeg"]


def _point(rng: random.Random) -> dict[str, float] | None:
    """A point whose coordinates stay 0.05 degrees or more away from any multiple of 0.5.

    Query boundaries in the tests sit on multiples of 0.5 degrees, so no point is ever close
    enough to one for Lucene's coordinate quantisation to decide differently from DuckDB.
    """
    roll = rng.random()
    if roll < 0.15:
        return None

    def coord(limit: int) -> float:
        whole = rng.randrange(-limit, limit)
        half = rng.choice((0.0, 0.5))
        return round(whole + half + rng.uniform(0.05, 0.45), 4)

    lat = coord(80)
    lon = coord(180)
    if roll < 0.35:  # crowd some points near the antimeridian and near Fiji
        lon = round(rng.choice((179.0, -180.0, 178.0, -179.0)) + rng.uniform(0.05, 0.45), 4)
        lat = round(rng.randrange(-20, -10) + rng.uniform(0.05, 0.45), 4)
    return {"lat": lat, "lon": lon}


def _date(rng: random.Random) -> datetime | None:
    roll = rng.random()
    if roll < 0.1:
        return None
    if roll < 0.25:  # exactly on period edges, where partial-date semantics matter
        return rng.choice(
            [
                datetime(1900, 1, 1),
                datetime(1900, 12, 31, 23, 59, 59),
                datetime(1901, 1, 1),
                datetime(1950, 6, 15, 12, 30),
                datetime(1950, 6, 30, 23, 59, 59),
            ]
        )
    start = datetime(1850, 1, 1)
    return start + timedelta(seconds=rng.randrange(0, 170 * 365 * 86400))


def sample_rows(n: int = 200, *, seed: int = 7) -> tuple[list[Row], list[Row]]:
    """``n`` records and their media records (about a third have some), deterministic."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    media: list[dict[str, Any]] = []
    for i in range(n):
        uuid = f"00000000-0000-4000-8000-{i:012d}"
        genus = rng.choice(list(GENERA))
        family, epithets = GENERA[genus]
        epithet = rng.choice(epithets)
        verbatim_name = f"{genus.capitalize()} {epithet} L."
        data: dict[str, Any] = {"dwc:scientificName": verbatim_name}
        row: dict[str, Any] = {
            "uuid": uuid,
            "scientificname": verbatim_name.lower(),
            "genus": genus if rng.random() > 0.1 else rng.choice([None, ""]),
            "family": family,
            "specificepithet": epithet,
            "kingdom": "plantae",
            "version": rng.randrange(1, 6),
            "recordset": rng.choice(["rs-a", "rs-b", "rs-c"]),
            "recordids": [f"urn:catalog:{genus}:{i}"],
            "basisofrecord": rng.choice(["preservedspecimen", "humanobservation"]),
            "catalognumber": rng.choice([str(i), f"a-{i}", None]),
        }
        if rng.random() < 0.8:
            country = rng.choice(COUNTRIES)
            data["dwc:country"] = country.title() if rng.random() < 0.5 else country.upper()
            row["country"] = country
        if rng.random() < 0.6:
            locality = rng.choice(LOCALITIES)
            data["dwc:locality"] = locality
            row["locality"] = locality.lower()
        if rng.random() < 0.5:
            collector = rng.choice(COLLECTORS)
            data["dwc:recordedBy"] = collector
            row["collector"] = collector.lower()
        if rng.random() < 0.1:
            data["dwc:habitat"] = ""  # published but empty: counts as missing
        roll = rng.random()
        if roll < 0.2:
            row["flags"] = None
        else:
            row["flags"] = [] if roll < 0.3 else sorted(rng.sample(FLAGS, rng.randrange(1, 3)))
        if rng.random() < 0.7:
            row["minelevation"] = round(rng.uniform(-50, 3000) * 4) / 4
        if rng.random() < 0.5:
            row["startdayofyear"] = rng.randrange(1, 367)
        point = _point(rng)
        row["geopoint"] = point
        if point is not None:
            data["dwc:decimalLatitude"] = str(point["lat"])
            data["dwc:decimalLongitude"] = str(point["lon"])
        collected = _date(rng)
        row["datecollected"] = collected
        row["datemodified"] = datetime(2024, 1, 1) + timedelta(hours=i)
        n_media = rng.choice([0, 0, 1, 2]) if i % 3 == 0 else 0
        row["hasImage"] = n_media > 0
        row["hasMedia"] = n_media > 0
        row["data"] = data
        row["fulltext"] = _fulltext(data)
        row["mediarecords"] = []
        for j in range(n_media):
            media_uuid = f"10000000-0000-4000-8000-{i:08d}{j:04d}"
            row["mediarecords"].append(media_uuid)
            media.append(_media(rng, media_uuid, uuid))
        records.append(row)
    for j in range(5):  # media records without a specimen record
        media.append(_media(rng, f"20000000-0000-4000-8000-{j:012d}", None))
    return records, media


def _media(rng: random.Random, uuid: str, coreid: str | None) -> dict[str, Any]:
    fmt = rng.choice(FORMATS)
    url = f"HTTPS://Media.Example.org/{uuid}.{fmt.split('/')[1]}"
    data = {"dcterms:format": fmt, "ac:accessURI": url}
    if rng.random() < 0.5:
        data["ac:tag"] = rng.choice(["Leaf", "Flower detail", "Whole Plant"])
    row: dict[str, Any] = {
        "uuid": uuid,
        "coreid": coreid,
        "records": [coreid] if coreid else [],
        "format": fmt,
        "accessuri": url.lower(),
        "xpixels": rng.choice([640, 1024, 2048, None]),
        "ypixels": rng.choice([480, 768, 1536, None]),
        "hasSpecimen": coreid is not None,
        "tag": data.get("ac:tag", "").lower() or None,
        "modified": datetime(2020, 1, 1) + timedelta(days=rng.randrange(0, 1500)),
        "data": data,
        "fulltext": _fulltext(data),
    }
    return row


def _fulltext(data: dict[str, Any]) -> str:
    """The verbatim values joined, NFC-normalised and lower-cased, as ingest stores them."""
    return unicodedata.normalize("NFC", " ".join(str(v) for v in data.values())).lower()


def es_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` as the search cluster gets it from the store: ``fulltext`` as its tokens."""
    return {**row, "fulltext": tokens(row["fulltext"])}
