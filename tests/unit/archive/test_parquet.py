"""archive.parquet through write_archive: types kept and planned, row groups bounded,
term metadata, and the writer's errors (cancel, a batch of the wrong width or type)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from archive import COREID, ArchiveCancelled, ArchiveError, Column, dwca, write_archive
from archive import parquet as archive_parquet
from tests.unit.archive.helpers import data_file, spec

DATE = pa.timestamp("us")
POINT = pa.struct([("lat", pa.float64()), ("lon", pa.float64())])
COLUMNS = [
    COREID,
    Column("dwc:scientificName", "http://rs.tdwg.org/dwc/terms/scientificName", pa.string()),
    Column("idigbio:eventDate", "http://portal.idigbio.org/terms/datecollected", DATE),
    Column("idigbio:geoPoint", "http://portal.idigbio.org/terms/geoPoint", POINT),
    Column("idigbio:flags", "http://portal.idigbio.org/terms/flags", pa.list_(pa.string())),
    Column("untyped", "http://example.org/untyped"),
]


def batch(start: int, rows: int, *, nulls: bool = False) -> pa.RecordBatch:
    ids = [f"id-{i}" for i in range(start, start + rows)]
    if nulls:  # a source may send a column none of a batch's rows fill as type null
        arrays = [pa.array(ids)] + [pa.nulls(rows) for _ in COLUMNS[1:]]
    else:
        arrays = [
            pa.array(ids),
            pa.array(["Acer rubrum L."] * rows),
            pa.array([0] * rows, pa.int64()).cast(pa.timestamp("us")),
            pa.array([{"lat": 1.5, "lon": 2.0}] * rows, POINT),
            pa.array([["a", "b"]] * rows, pa.list_(pa.string())),
            pa.array(list(range(rows)), pa.int64()),
        ]
    return pa.RecordBatch.from_arrays(arrays, names=[c.header for c in COLUMNS])


def write(path: Path, batches: list[pa.RecordBatch], **kwargs: object) -> dict[str, bytes]:
    files = [data_file("occurrence.parquet", COLUMNS, batches, core=True)]
    with path.open("wb") as sink:
        write_archive(spec(files, form="parquet"), sink, **kwargs)  # type: ignore[arg-type]  # test kwargs
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def test_types_terms_and_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_parquet, "ROW_GROUP_ROWS", 100)
    files = write(tmp_path / "a.zip", [batch(0, 60), batch(60, 60), batch(120, 60)])
    assert list(files)[-1] == "meta.json" and "meta.xml" not in files
    parquet = pq.ParquetFile(io.BytesIO(files["occurrence.parquet"]))
    assert parquet.metadata.num_rows == 180
    # 120 rows gathered (two batches reach 100) and written in groups of at most 100, then
    # the last 60: no row group is larger than ROW_GROUP_ROWS.
    groups = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    assert groups == [100, 20, 60]
    schema = parquet.schema_arrow
    assert schema.field("idigbio:eventDate").type == pa.timestamp("us", tz="UTC")
    assert schema.field("idigbio:geoPoint").type == POINT
    assert schema.field("untyped").type == pa.int64()  # the batch's type, none planned
    assert schema.field("coreid").metadata is None
    assert schema.field("untyped").metadata == {b"term": b"http://example.org/untyped"}
    meta = schema.metadata
    assert meta[b"dwca:rowType"] == dwca.OCCURRENCE.encode() and meta[b"dwca:core"] == b"true"
    terms = json.loads(meta[b"dwca:terms"])
    assert terms["idigbio:geoPoint"] == "http://portal.idigbio.org/terms/geoPoint"
    descriptor = json.loads(files["meta.json"])
    assert [f["name"] for f in descriptor["core"]["fields"]] == [c.header for c in COLUMNS]


def test_planned_types_when_no_row_or_a_column_of_nulls(tmp_path: Path) -> None:
    for batches in ([], [batch(0, 5, nulls=True)]):
        files = write(tmp_path / f"{len(batches)}.zip", batches)
        schema = pq.read_schema(io.BytesIO(files["occurrence.parquet"]))
        assert schema.field("idigbio:eventDate").type == pa.timestamp("us", tz="UTC")
        assert schema.field("idigbio:flags").type == pa.list_(pa.string())
        assert schema.field("untyped").type == pa.string()  # nothing says otherwise
        table = pq.read_table(io.BytesIO(files["occurrence.parquet"]))
        assert table.num_rows == 5 * len(batches)


def test_cancel_wrong_width_and_wrong_type_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ArchiveCancelled):
        write(tmp_path / "c.zip", [batch(0, 5)], should_cancel=lambda: True)
    narrow = batch(0, 5).drop_columns(["untyped"])
    with pytest.raises(ArchiveError, match="5 columns but the file has 6"):
        write(tmp_path / "w.zip", [narrow])
    odd = batch(5, 5).set_column(3, "idigbio:geoPoint", pa.array(["x"] * 5))
    with pytest.raises(ArchiveError, match="do not fit the file's column types"):
        write(tmp_path / "t.zip", [batch(0, 5), odd])
