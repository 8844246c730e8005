"""The in-memory links from media records to their records (downloader.sources.duckdb.links):
the same media, and the same tallies, as the join they replace."""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pytest

from downloader.sources.duckdb import links as links_module
from downloader.sources.duckdb.links import NO_PARENT, MediaLinks


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute("CREATE TABLE records (uuid VARCHAR, recordset VARCHAR)")
    c.execute("CREATE TABLE mediarecords (uuid VARCHAR, coreid VARCHAR, recordset VARCHAR)")
    c.execute(
        "INSERT INTO records VALUES ('r0', 'a'), ('r1', 'a'), ('r2', 'b'), ('r3', 'b'), "
        "('r4', NULL)"
    )
    c.execute(
        "INSERT INTO mediarecords VALUES ('m0', 'r1', 'a'), ('m1', 'r1', 'a'), "
        "('m2', 'gone', 'a'), ('m3', NULL, 'b'), ('m4', 'r3', 'b'), ('m5', 'r4', NULL), "
        "('m6', 'r0', 'a')"
    )
    return c


def _joined(con: duckdb.DuckDBPyConnection, record_uuids: list[str]) -> list[int]:
    rows = con.execute(
        "SELECT m.rowid FROM mediarecords AS m WHERE m.coreid IN "
        "(SELECT uuid FROM records WHERE list_contains(?, uuid)) ORDER BY 1",
        [record_uuids],
    ).fetchall()
    return [r[0] for r in rows]


def _rowids(con: duckdb.DuckDBPyConnection, record_uuids: list[str]) -> np.ndarray:
    rows = con.execute(
        "SELECT rowid FROM records WHERE list_contains(?, uuid) ORDER BY 1", [record_uuids]
    ).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


@pytest.mark.parametrize("batch", [1, links_module.READ_BATCH])
@pytest.mark.parametrize("chunk", [2, 3, links_module.READ_CHUNK])
@pytest.mark.parametrize(
    "chosen",
    [[], ["r0"], ["r1"], ["r2"], ["r1", "r3"], ["r0", "r1", "r2", "r3", "r4"]],
)
def test_the_media_of_records_are_those_the_join_finds(
    con: duckdb.DuckDBPyConnection,
    chosen: list[str],
    chunk: int,
    batch: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read whole or in chunks of media row ids, their answers converted whole or a row at
    a time, the links give what the join gives."""
    monkeypatch.setattr(links_module, "READ_CHUNK", chunk)
    monkeypatch.setattr(links_module, "MAX_SCANS", 1_000)  # the chunk as set
    monkeypatch.setattr(links_module, "READ_BATCH", batch)
    links = MediaLinks.read(con)
    assert links is not None
    got = links.media_of(_rowids(con, chosen))
    assert got.tolist() == _joined(con, chosen)


def test_media_without_a_record_have_no_parent(con: duckdb.DuckDBPyConnection) -> None:
    links = MediaLinks.read(con)
    assert links is not None
    assert links.parent.tolist() == [1, 1, NO_PARENT, NO_PARENT, 3, 4, 0]


def test_the_tally_counts_media_by_recordset_and_keeps_the_unnamed_one(
    con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(links_module, "READ_CHUNK", 3)  # recordsets met again in later chunks
    links = MediaLinks.read(con)
    assert links is not None
    every = links.media_of(_rowids(con, ["r0", "r1", "r2", "r3", "r4"]))
    assert links.tally(every) == {"a": 3, "b": 1, None: 1}
    assert links.tally(np.zeros(0, dtype=np.int64)) == {}


def test_gaps_left_by_deleted_media_are_never_chosen(con: duckdb.DuckDBPyConnection) -> None:
    """A re-ingest deletes rows; their row ids stay unused until the table is rewritten."""
    con.execute("DELETE FROM mediarecords WHERE uuid IN ('m1', 'm4')")
    links = MediaLinks.read(con)
    assert links is not None
    every = ["r0", "r1", "r2", "r3", "r4"]
    assert links.media_of(_rowids(con, every)).tolist() == _joined(con, every)


def test_a_coreid_naming_two_records_leaves_the_join_in_charge(
    con: duckdb.DuckDBPyConnection,
) -> None:
    con.execute("INSERT INTO records VALUES ('r1', 'c')")
    assert MediaLinks.read(con) is None


def test_a_store_without_media_has_empty_links(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DELETE FROM mediarecords")
    links = MediaLinks.read(con)
    assert links is not None
    assert links.media_of(_rowids(con, ["r1"])).tolist() == []
    assert links.tally(np.zeros(0, dtype=np.int64)) == {}


class _Counting:
    """A connection that counts the joins it runs (and can fail them as out of memory)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, *, fail: bool = False) -> None:
        self.con, self.fail, self.joins = con, fail, 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self.con.execute(*args, **kwargs)

    def sql(self, query: str, **kwargs: Any) -> Any:
        if "JOIN" in query:
            self.joins += 1
            if self.fail:
                raise duckdb.OutOfMemoryException("could not allocate")
        return self.con.sql(query, **kwargs)


def test_the_records_are_scanned_a_few_times_however_many_media(
    con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk's join scans every record: with a fixed chunk the read grew with the square
    of the store (26 scans at 5M records). The chunk grows with the media instead, up to
    MAX_CHUNK."""
    con.execute(
        "INSERT INTO mediarecords SELECT 'x' || i, 'r' || (i % 5), 'a' FROM range(200) AS t(i)"
    )
    monkeypatch.setattr(links_module, "READ_CHUNK", 2)
    counting = _Counting(con)
    links = MediaLinks.read(counting)  # type: ignore[arg-type]  # a stand-in connection
    assert links is not None
    assert counting.joins == links_module.MAX_SCANS
    assert int((links.parent >= 0).sum()) == 200 + 5  # the fixture's linked media too
    monkeypatch.setattr(links_module, "MAX_CHUNK", 10)  # the cap on a chunk's memory wins
    counting = _Counting(con)
    assert MediaLinks.read(counting) is not None  # type: ignore[arg-type]  # as above
    assert counting.joins == 21  # 207 media row ids, 10 at a time


def test_a_join_out_of_memory_leaves_the_sql_in_charge(con: duckdb.DuckDBPyConnection) -> None:
    assert MediaLinks.read(_Counting(con, fail=True)) is None  # type: ignore[arg-type]  # as above
