"""DuckDBSource: counts, recordset tallies, raw terms, batches and unique values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from downloader.errors import SourceUnavailable
from downloader.ingest.load import ingest_synthetic, store_path
from downloader.sources.duckdb import DuckDBSource, reads, verbatim
from downloader.sources.duckdb import source as duckdb_source
from tests.support.store import open_store
from tests.unit.downloader.sources.duckdb.store_support import mq, rq, sql

DEMO_RS = "urn:uuid:3f1f4b2e-7c55-4d7e-9a3e-0d2f6b1c9e42"
GBIF_RS = "0ac6620a-ba21-405c-af5c-d62cf59464b8"


def test_counts_match_sql(store: Path) -> None:
    source = DuckDBSource(store)
    assert source.count("records", None, None) == 218
    assert source.count("mediarecords", None, None) == 38
    fish = sql(store, "SELECT count(*) FROM records WHERE class = 'actinopterygii'")[0][0]
    assert source.count("records", rq({"class": "Actinopterygii"}), None) == fish
    with_images = sql(store, 'SELECT count(*) FROM records WHERE "hasImage"')[0][0]
    assert source.count("records", rq({"hasImage": True}), None) == with_images
    assert source.counts(rq({"hasImage": True}), None) == (with_images, 38)


def test_mq_beside_rq(store: Path) -> None:
    source = DuckDBSource(store)
    acer = rq({"genus": "acer"})
    images = mq({"format": "image/jpeg"})
    expected_records = sql(
        store,
        "SELECT count(*) FROM records AS r WHERE genus = 'acer' AND EXISTS (SELECT 1 FROM "
        "mediarecords AS m WHERE m.coreid = r.uuid AND m.format = 'image/jpeg')",
    )[0][0]
    expected_media = sql(
        store,
        "SELECT count(*) FROM mediarecords AS m JOIN records AS r ON r.uuid = m.coreid "
        "WHERE r.genus = 'acer'",
    )[0][0]
    assert source.count("records", acer, images) == expected_records
    assert source.count("mediarecords", acer, images) == expected_media


def test_recordset_counts(store: Path) -> None:
    source = DuckDBSource(store)
    assert source.recordset_counts("records", None, None) == {DEMO_RS: 60, GBIF_RS: 158}
    assert source.recordset_counts("mediarecords", None, None) == {DEMO_RS: 38}
    assert source.recordset_counts("records", rq({"genus": "nosuchgenus"}), None) == {}


def test_raw_terms_come_from_matching_recordsets(store: Path) -> None:
    source = DuckDBSource(store)
    everything = source.raw_terms("records", None, None)
    assert everything == sorted(everything)
    assert "dwc:scientificName" in everything and "dwc:scientificNameAuthorship" in everything
    gbif_only = source.raw_terms("records", rq({"recordset": GBIF_RS}), None)
    assert "dwc:habitat" not in gbif_only and "dwc:habitat" in everything
    assert source.raw_terms("mediarecords", None, None)[0] == "ac:accessURI"
    assert source.raw_terms("records", rq({"genus": "nosuchgenus"}), None) == []


def test_batches_schema_and_order(store: Path) -> None:
    source = DuckDBSource(store, window_seconds=0.0, hold_seconds=0.0)
    batches = list(
        source.batches(
            "records",
            None,
            None,
            fields=["uuid", "genus", "geopoint", "datecollected", "flags", "hasImage", "version"],
            raw_terms=["dwc:scientificName", "dwc:nosuchTerm"],
            batch_size=25,
        )
    )
    table = pa.Table.from_batches(batches)
    assert table.num_rows == 218
    assert table.column_names == [
        "coreid",
        "uuid",
        "genus",
        "geopoint",
        "datecollected",
        "flags",
        "hasImage",
        "version",
        "dwc:scientificName",
        "dwc:nosuchTerm",
    ]
    schema = table.schema
    assert schema.field("coreid").type == pa.string()
    assert schema.field("geopoint").type == pa.struct(
        [("lat", pa.float64()), ("lon", pa.float64())]
    )
    assert pa.types.is_timestamp(schema.field("datecollected").type)
    assert schema.field("flags").type == pa.list_(pa.string())
    assert schema.field("hasImage").type == pa.bool_()
    assert schema.field("version").type == pa.int64()
    uuids = table.column("coreid").to_pylist()
    # The store's row order: the same order on every read of the same data version.
    assert uuids == [r[0] for r in sql(store, "SELECT uuid FROM records ORDER BY rowid")]
    assert len(set(uuids)) == 218
    again = source.batches("records", None, None, fields=["uuid"], batch_size=7)
    assert pa.Table.from_batches(list(again)).column("coreid").to_pylist() == uuids
    assert uuids == table.column("uuid").to_pylist()
    assert table.column("dwc:nosuchTerm").null_count == 218
    assert all(b.num_rows <= 25 for b in batches)


def test_media_batches_carry_parent_uuid_first(store: Path) -> None:
    source = DuckDBSource(store)
    table = pa.Table.from_batches(
        list(source.batches("mediarecords", None, None, fields=["uuid", "accessuri"]))
    )
    assert table.num_rows == 38
    parents = set(sql(store, 'SELECT uuid FROM records WHERE "hasMedia"'))
    assert {(c,) for c in table.column("coreid").to_pylist()} <= parents
    in_store_order = [r[0] for r in sql(store, "SELECT uuid FROM mediarecords ORDER BY rowid")]
    assert table.column("uuid").to_pylist() == in_store_order


def test_batches_stop_when_data_changes_between_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reads, "_SLICE_ROWS", 100)
    # More batches than one window reads ahead, so a second window opens the file.
    ingest_synthetic(tmp_path, 100 * (duckdb_source._READ_AHEAD + 3), seed=1)
    source = DuckDBSource(store_path(tmp_path), window_seconds=0.0, hold_seconds=0.0)
    stream = source.batches("records", None, None, batch_size=100)
    next(stream)
    ingest_synthetic(tmp_path, 10, seed=2)
    with pytest.raises(SourceUnavailable, match="changed"):
        list(stream)


def test_data_version_is_cached_until_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest_synthetic(tmp_path, 20, seed=1)
    source = DuckDBSource(store_path(tmp_path))
    opens = 0
    real_connection = source._connection

    def counting_connection() -> Any:
        nonlocal opens
        opens += 1
        return real_connection()

    monkeypatch.setattr(source, "_connection", counting_connection)
    first = source.data_version()
    assert source.data_version() == first and opens == 1
    ingest_synthetic(tmp_path, 5, seed=2)
    second = source.data_version()
    assert second != first and opens == 2
    assert source.data_version() == second and opens == 2


def test_unique_values(store: Path) -> None:
    source = DuckDBSource(store)
    table = pa.Table.from_batches(list(source.unique_values("kingdom", None, None)))
    values = table.column("value").to_pylist()
    assert values == sorted(values) and "animalia" in values
    expected = sql(store, "SELECT count(*) FROM records WHERE kingdom = 'animalia'")[0][0]
    assert dict(zip(values, table.column("count").to_pylist(), strict=True))["animalia"] == expected
    flags = pa.Table.from_batches(list(source.unique_values("flags", None, None)))
    assert "geopoint_0_coord" in flags.column("value").to_pylist()
    with pytest.raises(ValueError):
        list(source.unique_values("nosuchfield", None, None))


def test_missing_store_is_empty(tmp_path: Path) -> None:
    source = DuckDBSource(tmp_path / "records.duckdb")
    assert source.data_version() == "0"
    assert source.count("records", None, None) == 0
    assert list(source.batches("records", None, None)) == []
    assert source.recordsets() == []


def test_recordsets_list_versions(store: Path) -> None:
    infos = {i.recordset: i for i in DuckDBSource(store).recordsets()}
    assert infos[DEMO_RS].version == 1
    assert (infos[DEMO_RS].record_count, infos[DEMO_RS].media_count) == (60, 38)
    assert infos[GBIF_RS].name.startswith("GBIF Occurrence Download")
    assert "Demo herbarium" in (DuckDBSource(store).recordset_eml(DEMO_RS) or "")


def test_locked_store_becomes_source_unavailable(tmp_path: Path) -> None:
    ingest_synthetic(tmp_path, 10)
    path = store_path(tmp_path)
    # A read-write connection in another process locks the file against readers; inside one
    # process DuckDB shares the database instead, so hold it from a child process.
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(30)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(SourceUnavailable, match="cannot be opened"):
            DuckDBSource(path, lock_timeout=0.2).count("records", None, None)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("rtype", ["records", "mediarecords"])
def test_verbatim_terms_are_the_same_split_on_the_reader_or_by_json_transform(
    store: Path, monkeypatch: pytest.MonkeyPatch, rtype: Any
) -> None:
    """The C splitter on the reader thread and json_transform in the query (used where the
    extension was not built) give the same batches."""
    source = DuckDBSource(store)
    terms = source.raw_terms(rtype, None, None)
    assert len(terms) > 3

    def read() -> pa.Table:
        batches = source.batches(rtype, None, None, fields=["uuid"], raw_terms=terms)
        return pa.Table.from_batches(list(batches))

    split = read()
    monkeypatch.setattr(verbatim, "USE_C", False)
    transformed = read()
    assert split.column_names == transformed.column_names == ["coreid", "uuid", *terms]
    assert split.to_pydict() == transformed.to_pydict()
    assert sum(split.column(t).null_count < split.num_rows for t in terms) > 3


def test_counts_of_a_request_are_read_once_until_the_store_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest_synthetic(tmp_path, 40, seed=1)
    source = DuckDBSource(store_path(tmp_path))
    queries: list[Any] = []
    real_tallies = source._both_tallies

    def counting(*args: Any) -> Any:
        queries.append(args)
        return real_tallies(*args)

    monkeypatch.setattr(source, "_both_tallies", counting)
    request = rq({"genus": "acer"})
    media = source.count("mediarecords", request, None)
    per_set = source.recordset_counts("mediarecords", request, None)
    assert sum(per_set.values()) == media
    assert source.count("mediarecords", request, None) == media
    assert len(queries) == 1
    # The records' tally of the same request came with the media's (/v2/count asks both).
    acer = sql(store_path(tmp_path), "SELECT count(*) FROM records WHERE genus = 'acer'")[0][0]
    assert source.count("records", request, None) == acer > 0
    assert len(queries) == 1
    records = source.count("records", None, None)
    assert records == 40 and len(queries) == 2
    ingest_synthetic(tmp_path, 10, seed=2)
    assert source.count("records", None, None) == 50
    assert len(queries) == 3


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"recordset": DEMO_RS},
        {"recordset": [DEMO_RS, GBIF_RS]},
        {"recordset": DEMO_RS, "version": 1},
        {"recordset": DEMO_RS, "version": 2},
        {"recordset": GBIF_RS},
    ],
)
def test_the_media_of_whole_recordsets_are_a_filter_on_the_media(
    store: Path, monkeypatch: pytest.MonkeyPatch, query: dict[str, Any]
) -> None:
    # The media of the records of whole recordsets (a recordset's export, a download by
    # recordset, the download of everything) need no links and no record row ids: the
    # count, the tally and the rows, in store order, are those of the join of the two.
    from query.sql import compile_request_where

    def unused(*args: Any) -> None:
        raise AssertionError("the media of whole recordsets need no links")

    monkeypatch.setattr(DuckDBSource, "_media_links", unused)
    records_query = rq(query)
    where, params = compile_request_where("mediarecords", records_query, None)
    assert "EXISTS" in where  # the join the filter stands for
    con = open_store(str(store))
    try:
        joined = con.execute(
            f"SELECT m.uuid, m.recordset FROM mediarecords AS m WHERE {where} ORDER BY m.rowid",
            params,
        ).fetchall()
    finally:
        con.close()
    source = DuckDBSource(store)
    assert source.count("mediarecords", records_query, None) == len(joined)
    tally: dict[str, int] = {}
    for _, recordset in joined:
        tally[recordset] = tally.get(recordset, 0) + 1
    assert source.recordset_counts("mediarecords", records_query, None) == tally
    got = [
        uuid
        for batch in source.batches("mediarecords", records_query, None, fields=["uuid"])
        for uuid in batch.column("uuid").to_pylist()
    ]
    assert got == [u for u, _ in joined]
    assert bool(joined) == (query.get("version", 1) == 1 and query.get("recordset") != GBIF_RS)
