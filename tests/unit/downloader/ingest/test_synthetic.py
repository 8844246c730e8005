"""Synthetic records: deterministic, realistic, sparse, with media and faults."""

from __future__ import annotations

from pathlib import Path

from downloader.ingest.load import ingest_synthetic, store_path
from downloader.ingest.synthetic import COUNTRIES, synthetic_tables
from tests.support.store import open_store


def test_same_seed_same_records_other_seed_other_records() -> None:
    a_core, a_media = synthetic_tables(500, seed=7)
    b_core, b_media = synthetic_tables(500, seed=7)
    c_core, _ = synthetic_tables(500, seed=8)
    assert a_core.equals(b_core) and a_media.equals(b_media)
    assert not a_core.equals(c_core)


def test_realistic_content() -> None:
    core, media = synthetic_tables(3000, seed=1)
    names = set(core["dwc:scientificName"].to_pylist())
    assert any(n.startswith("Acer rubrum") for n in names)
    assert any(n.startswith("Acer saccharum") for n in names)
    assert any(n.startswith("Quercus") for n in names)
    kingdoms = set(core["dwc:kingdom"].drop_null().to_pylist())
    assert {"Plantae", "Animalia", "Fungi"} <= kingdoms
    codes = {name: code for name, code, *_ in COUNTRIES}
    for country, code in zip(
        core["dwc:country"].to_pylist(), core["dwc:countryCode"].to_pylist(), strict=True
    ):
        if country is not None and code is not None:
            assert codes[country] == code
    # Sparse like real data: many terms are missing on many records.
    for term in ("dwc:habitat", "dwc:vernacularName", "dwc:decimalLatitude", "dwc:phylum"):
        assert 0 < core[term].null_count < core.num_rows
    # About a third of the records have one to three media records.
    parents = media["_id"].to_pylist()
    share = len(set(parents)) / core.num_rows
    assert 0.28 < share < 0.38
    assert max(parents.count(p) for p in set(parents)) <= 3
    assert set(media["dcterms:format"].to_pylist()) == {"image/jpeg"}


def test_ingested_synthetic_records_carry_flags_and_media(tmp_path: Path) -> None:
    result = ingest_synthetic(tmp_path, 5000, seed=3)
    assert result.records == 5000 and result.media > 0
    assert result.recordset == "synthetic-seed-3"
    con = open_store(str(store_path(tmp_path)))
    try:
        flags = dict(
            con.execute(
                "SELECT f, count(*) FROM (SELECT unnest(flags) AS f FROM records) GROUP BY f"
            ).fetchall()
        )
        images = con.execute('SELECT count(*) FROM records WHERE "hasImage"').fetchone()
        acer = con.execute("SELECT count(*) FROM records WHERE genus = 'acer'").fetchone()
    finally:
        con.close()
    for flag in (
        "datecollected_unparseable",
        "datecollected_bounds",
        "geopoint_0_coord",
        "geopoint_bounds",
    ):
        assert flags.get(flag, 0) > 0, flag
    assert images is not None and 1300 < images[0] < 2000
    assert acer is not None and acer[0] > 0


def test_reingesting_the_same_seed_keeps_uuids(tmp_path: Path) -> None:
    ingest_synthetic(tmp_path, 200, seed=5)
    con = open_store(str(store_path(tmp_path)))
    first = sorted(con.execute("SELECT uuid FROM records").fetchall())
    con.close()
    second_result = ingest_synthetic(tmp_path, 200, seed=5)
    con = open_store(str(store_path(tmp_path)))
    second = sorted(con.execute("SELECT uuid FROM records").fetchall())
    con.close()
    assert second_result.version == 2
    assert first == second
