"""A batch stream's reads (downloader.sources.duckdb.reads): exactly the matching rows in
row id order, streamed or in sorted slices, and blocks of matching row ids shared between
the streams of one source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from downloader.sources.duckdb import DuckDBSource, reads
from downloader.sources.duckdb import links as links_module
from downloader.sources.duckdb import source as source_module
from tests.unit.downloader.sources.duckdb.store_support import mq, rq, sql


@pytest.mark.parametrize("disorder", ["none", "backwards", "skips"])
@pytest.mark.parametrize(("slice_rows", "block_rows"), [(10_240, 1_048_576), (7, 50), (2, 5)])
@pytest.mark.parametrize(
    ("rtype", "r", "m", "where"),
    [
        ("records", {}, None, "TRUE"),
        ("records", {"class": "actinopterygii"}, None, "class = 'actinopterygii'"),
        (
            "records",
            {},
            {"rights": "https://creativecommons.org/licenses/by/4.0/"},
            "EXISTS (SELECT 1 FROM mediarecords AS m WHERE m.coreid = r.uuid "
            "AND m.rights = 'https://creativecommons.org/licenses/by/4.0/')",
        ),
        (
            "records",
            {"genus": "acer"},
            {},
            "genus = 'acer' AND EXISTS (SELECT 1 FROM mediarecords AS m WHERE m.coreid = r.uuid)",
        ),
        ("mediarecords", None, None, "TRUE"),
        (
            "mediarecords",
            None,
            {"rights": "https://creativecommons.org/licenses/by/4.0/"},
            "rights = 'https://creativecommons.org/licenses/by/4.0/'",
        ),
        (
            "mediarecords",
            {"genus": "acer"},
            None,
            "EXISTS (SELECT 1 FROM records AS r WHERE r.uuid = m.coreid AND r.genus = 'acer')",
        ),
        ("mediarecords", {"genus": "nosuchgenus"}, None, "FALSE"),
        # Every media record matches: read by a scan of every row (no join).
        (
            "mediarecords",
            {},
            None,
            "EXISTS (SELECT 1 FROM records AS r WHERE r.uuid = m.coreid)",
        ),
        # Most records match: the same, keeping the matching rows.
        (
            "records",
            {},
            {"type": "stillimage"},
            "EXISTS (SELECT 1 FROM mediarecords AS m WHERE m.coreid = r.uuid "
            "AND m.type = 'stillimage')",
        ),
    ],
)
def test_filtered_streams_read_exactly_the_matching_rows_in_store_order(
    store: Path,
    monkeypatch: pytest.MonkeyPatch,
    slice_rows: int,
    block_rows: int,
    rtype: Any,
    r: dict[str, Any] | None,
    m: dict[str, Any] | None,
    where: str,
    disorder: str,
) -> None:
    """Streamed reads, and the sorted slices they fall back to when DuckDB returns rows out
    of row id order, give the rows plain SQL gives, in row id order, across slices, blocks
    and windows; a filter on the other table is applied through the matching row ids of
    each block. Disorder is simulated two ways: a batch going backwards after the first
    one, and a join that returns rows in increasing order but skips some to return them
    later (as DuckDB's semi join did at 1M media records, which lost rows before the
    picked row ids were checked one by one)."""
    if disorder == "skips":
        real_query = reads._Reads._query

        def skipping_query(self: Any, con: Any, lo: int, hi: int, picked: Any, tail: str) -> Any:
            if picked is not None and not tail:
                tail = " ORDER BY _rowid % 2, _rowid"  # even row ids first, then the odd
            return real_query(self, con, lo, hi, picked, tail)

        monkeypatch.setattr(reads._Reads, "_query", skipping_query)
    if disorder == "backwards":
        checks = 0
        real_in_order = reads._in_order

        def in_order_once(rowids: Any, after: int) -> bool:
            nonlocal checks
            checks += 1
            return checks == 1 and real_in_order(rowids, after)

        monkeypatch.setattr(reads, "_in_order", in_order_once)
    monkeypatch.setattr(reads, "_SLICE_ROWS", slice_rows)
    monkeypatch.setattr(reads, "_BLOCK_ROWS", block_rows)
    source = DuckDBSource(store, window_seconds=0.0, hold_seconds=0.0)
    table = "records AS r" if rtype == "records" else "mediarecords AS m"
    expected = [
        row[0] for row in sql(store, f"SELECT uuid FROM {table} WHERE {where} ORDER BY rowid")
    ]
    batches = source.batches(
        rtype,
        None if r is None else rq(r),
        None if m is None else mq(m),
        fields=["uuid"],
        raw_terms=["dwc:scientificName"] if rtype == "records" else [],
        batch_size=5,
    )
    got = [uuid for batch in batches for uuid in batch.column("uuid").to_pylist()]
    assert got == expected
    # Every case but the one matching nothing selects some rows and leaves some out.
    assert (where == "FALSE") == (not expected)
    if where.startswith("EXISTS") and r == {} and rtype == "mediarecords":
        assert len(expected) == 38
    else:
        assert where == "TRUE" or len(expected) < (218 if rtype == "records" else 38)


def _spy_sql(monkeypatch: pytest.MonkeyPatch, prefix: str) -> list[str]:
    """The queries starting with ``prefix`` that connections run from now on."""
    seen: list[str] = []
    real_sql = duckdb.DuckDBPyConnection.sql

    def spying_sql(con: Any, query: str, **kwargs: Any) -> Any:
        if query.startswith(prefix):
            seen.append(query)
        return real_sql(con, query, **kwargs)

    monkeypatch.setattr(duckdb.DuckDBPyConnection, "sql", spying_sql)
    return seen


def _media_files(source: DuckDBSource) -> tuple[int, int]:
    request = rq({"genus": "acer"})
    terms = source.raw_terms("mediarecords", request, None)
    indexed = [b.num_rows for b in source.batches("mediarecords", request, None, fields=["uuid"])]
    raw = [b.num_rows for b in source.batches("mediarecords", request, None, raw_terms=terms)]
    return sum(indexed), sum(raw)


def test_media_files_of_one_archive_find_their_records_once(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The indexed and the verbatim media file of a request read the same media: the
    records matching rq are looked up once, and no query joins the media with them (the
    in-memory links give the media of those records)."""
    source = DuckDBSource(store)
    records = _spy_sql(monkeypatch, "SELECT r.rowid AS record_rid")
    joins = _spy_sql(monkeypatch, "SELECT m.rowid AS rid")
    indexed, raw = _media_files(source)
    assert indexed == raw > 0
    assert len(records) == 1
    assert joins == []


def test_without_links_the_media_files_share_the_blocks_found_by_sql(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the links cannot be used (a store whose media outnumber what is kept in
    memory), the media of matching records are found by a join, once per block, and both
    files read the same rows as with the links."""
    with_links = _media_files(DuckDBSource(store))
    monkeypatch.setattr(links_module, "MAX_MEDIA", 0)
    monkeypatch.setattr(source_module, "_LINKS", {})  # the links read above, forgotten
    joins = _spy_sql(monkeypatch, "SELECT m.rowid AS rid")
    assert _media_files(DuckDBSource(store)) == with_links
    assert len(joins) == 1


@pytest.mark.parametrize("few", [0, 3, 10_240])
def test_a_filter_on_the_table_reads_the_same_rows_whatever_its_number_of_matches(
    store: Path, monkeypatch: pytest.MonkeyPatch, few: int
) -> None:
    """A filter on the records themselves is read through its matching row ids while a
    block has few matches, and by a filtered scan from the first block with more (0: every
    block has more; 3: the first blocks have few, a later one more): the same rows in the
    same order either way."""
    monkeypatch.setattr(reads, "_FEW_MATCHES", few)
    monkeypatch.setattr(reads, "_BLOCK_ROWS", 40)
    source = DuckDBSource(store, window_seconds=0.0, hold_seconds=0.0)
    expected = [
        row[0]
        for row in sql(
            store, "SELECT uuid FROM records AS r WHERE class = 'actinopterygii' ORDER BY rowid"
        )
    ]
    batches = source.batches(
        "records", rq({"class": "actinopterygii"}), None, fields=["uuid"], batch_size=5
    )
    got = [uuid for batch in batches for uuid in batch.column("uuid").to_pylist()]
    assert got == expected
    assert 3 < len(expected) < 218


def test_records_files_of_a_selective_request_share_the_matching_row_ids(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small selection's indexed and verbatim records files find its row ids once and
    read by them (a semi join, or a plain scan keeping them where they are dense), never by
    a filtered scan of every column."""
    source = DuckDBSource(store)
    found: list[str] = []
    real_sql = duckdb.DuckDBPyConnection.sql

    def spying_sql(con: Any, query: str, **kwargs: Any) -> Any:
        found.append(query)
        return real_sql(con, query, **kwargs)

    monkeypatch.setattr(duckdb.DuckDBPyConnection, "sql", spying_sql)
    request = rq({"class": "actinopterygii"})
    terms = source.raw_terms("records", request, None)
    indexed = [b.num_rows for b in source.batches("records", request, None, fields=["uuid"])]
    raw = [b.num_rows for b in source.batches("records", request, None, raw_terms=terms)]
    assert sum(indexed) == sum(raw) > 0
    assert len([q for q in found if q.startswith("SELECT r.rowid AS rid FROM")]) == 1
    reads_ = [q for q in found if "_rowid FROM (SELECT" in q]
    assert len(reads_) == 2
    assert not any('r."class"' in q for q in reads_)


def test_a_selective_request_read_out_of_order_falls_back_to_slices_of_its_row_ids(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the semi join of a small selection comes back out of row id order (DuckDB's
    verbatim read of 300 catalogue numbers did, at 1M records), its sorted slices are read
    through the same row ids, not by a filtered scan of every column of the slice (100 ms
    instead of 3 ms there), and give the same rows in the same order."""
    # A few records far apart (where matches are dense, every row is scanned instead).
    picked = sql(
        store, "SELECT uuid, catalognumber FROM records WHERE rowid IN (5, 90, 200) ORDER BY rowid"
    )
    expected = [row[0] for row in picked]
    real_query = reads._Reads._query

    def backwards_query(self: Any, con: Any, lo: int, hi: int, picked: Any, tail: str) -> Any:
        if picked is not None and not tail:  # the streamed semi join comes back backwards
            tail = " ORDER BY _rowid DESC"
        return real_query(self, con, lo, hi, picked, tail)

    monkeypatch.setattr(reads._Reads, "_query", backwards_query)
    reads_ = _spy_sql(monkeypatch, "SELECT coreid")
    source = DuckDBSource(store, window_seconds=0.0, hold_seconds=0.0)
    batches = source.batches(
        "records", rq({"catalognumber": [r[1] for r in picked]}), None, fields=["uuid"]
    )
    got = [uuid for batch in batches for uuid in batch.column("uuid").to_pylist()]
    assert got == expected
    assert len(got) == 3
    sliced = [q for q in reads_ if q.endswith("ORDER BY _rowid")]
    assert sliced  # the fallback ran
    assert all(reads._PICKED in q and "catalognumber" not in q for q in sliced)
