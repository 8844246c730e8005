"""Plain extra files (``deleted.csv``): in the zip, streamed, undeclared in meta.xml, and the
archive stays readable by python-dwca-reader."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from archive import (
    ArchiveCancelled,
    ArchiveError,
    ArchiveSpec,
    DataFile,
    ExtraFile,
    dwca,
    write_archive,
)
from tests.unit.archive.helpers import batch, data_file, read_archive, spec

COLUMNS = dwca.index_columns("records", ["uuid", "genus"])
ROWS = [["a", "a", "acer"], ["b", "b", "pinus"]]


def _spec_with(extras: list[ExtraFile], core: DataFile | None = None) -> ArchiveSpec:
    core = core or data_file("occurrence.csv", COLUMNS, [batch(COLUMNS, ROWS)], core=True)
    return dataclasses.replace(spec([core]), extras=extras)


def test_extra_file_is_written_streamed_and_not_declared(tmp_path: Path) -> None:
    chunks = [b"uuid,recordset,deleted\n", b"gone-1,rs,2024-01-01\n", b"gone-2,rs,2024-01-02\n"]
    archive_spec = _spec_with([ExtraFile("deleted.csv", lambda: iter(chunks))])
    path = tmp_path / "a.zip"
    with path.open("wb") as sink:
        write_archive(archive_spec, sink)
    back = read_archive(path, archive_spec)
    assert back.core_ids == ["a", "b"]
    assert "deleted.csv" not in back.texts["meta.xml"]
    with zipfile.ZipFile(path) as zf:
        assert zf.read("deleted.csv") == b"".join(chunks)


def test_extra_file_names_must_be_unique() -> None:
    archive_spec = _spec_with([ExtraFile("meta.xml", lambda: iter([b"x"]))])
    with pytest.raises(ArchiveError, match=r"meta\.xml"):
        write_archive(archive_spec, io.BytesIO())


def test_cancel_is_checked_before_an_extra_file() -> None:
    done = {"core": False}

    def batches() -> Iterator[pa.RecordBatch]:
        yield batch(COLUMNS, ROWS)
        done["core"] = True  # the data file is finished: cancel from here on

    core = DataFile("occurrence.csv", dwca.OCCURRENCE, COLUMNS, batches, core=True)
    opened = {"extra": False}

    def extra() -> Iterator[bytes]:
        opened["extra"] = True
        yield b"x\n"

    archive_spec = _spec_with([ExtraFile("deleted.csv", extra)], core)
    with pytest.raises(ArchiveCancelled, match=r"deleted\.csv"):
        write_archive(archive_spec, io.BytesIO(), should_cancel=lambda: done["core"])
    assert not opened["extra"]
