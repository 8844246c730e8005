"""The two references every build is measured against, on the same store and rows.

- The baseline is what a user would otherwise have, and what iDigBio's worker does: rows
  fetched as Python tuples, each cell turned into text in Python, ``csv.writer`` into a
  ``zipfile`` entry at deflate level 6.
- The limit is what this machine can do at best with no Python per row: DuckDB writes the
  same cells straight to CSV files (``COPY``), then the fastest deflate available (isal)
  compresses those bytes, one step after the other.
- The floor is the least any archive of these bytes can cost here: our archive's own
  uncompressed bytes (already in memory, as it were: read from the page cache) deflated at
  the level our writer uses, in independent chunks over every core, with their CRC-32s. No
  reading, no encoding: only the compression every zip of these bytes must do.
"""

from __future__ import annotations

import csv
import io
import json
import mmap
import os
import shutil
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from bench.columns import DataFile, Selection, data_files

try:
    from isal import isal_zlib as fast_zlib

    FAST_DEFLATE = "isal"
except ImportError:  # pragma: no cover - isal is a dependency; zlib keeps the bench usable
    import zlib as fast_zlib  # type: ignore[no-redef]  # same API as isal_zlib

    FAST_DEFLATE = "zlib"

FETCH_ROWS = 1000
CHUNK = 1 << 20
#: Uncompressed bytes per independent deflate of the floor.
FLOOR_CHUNK = 4 << 20


@dataclass
class FileStats:
    """One data file as a reference wrote it."""

    name: str
    rows: int
    csv_bytes: int = 0
    compressed_bytes: int = 0


@dataclass
class ReferenceRun:
    """A reference's time for the four data files of one selection."""

    seconds: float
    files: list[FileStats]
    archive_bytes: int
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def records(self) -> int:
        """Rows of the core file (occurrence.csv)."""
        return self.files[0].rows


_FILES: dict[tuple[str, float], list[DataFile]] = {}


def _data_files(con: duckdb.DuckDBPyConnection, db_path: Path) -> list[DataFile]:
    # Finding the verbatim terms scans every JSON object (tens of seconds at 5M records):
    # once per store state, outside any timed section.
    key = (str(db_path), db_path.stat().st_mtime)
    if key not in _FILES:
        _FILES[key] = data_files(con)
    return _FILES[key]


def _connect(db_path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(db_path), read_only=True)
    con.execute("SET enable_progress_bar = false")
    return con


def _cell(value: Any) -> str:
    # The way the iDigBio worker turns a document's values into CSV cells.
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat() + "+00:00"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _write_baseline_file(
    con: duckdb.DuckDBPyConnection, zf: zipfile.ZipFile, f: DataFile, sel: Selection
) -> int:
    from_where, params = f.from_where(sel)
    cur = con.execute(f"SELECT {', '.join(f.plain)} {from_where}", params)
    rows = 0
    with (
        zf.open(f.name, "w", force_zip64=True) as raw,
        io.TextIOWrapper(raw, encoding="utf-8", newline="") as text,
    ):
        writer = csv.writer(text)
        writer.writerow(f.header)
        terms = f.raw_terms
        while True:
            batch = cur.fetchmany(FETCH_ROWS)
            if not batch:
                break
            for row in batch:
                if terms:
                    data = json.loads(row[1]) if row[1] else {}
                    writer.writerow([row[0], *(data.get(t, "") for t in terms)])
                else:
                    writer.writerow([_cell(v) for v in row])
            rows += len(batch)
    return rows


def run_baseline(db_path: Path, sel: Selection, out_path: Path) -> ReferenceRun:
    """Build the four data files the iDigBio way; the time covers query to closed zip."""
    con = _connect(db_path)
    try:
        files = _data_files(con, db_path)
        start = time.perf_counter()
        stats: list[FileStats] = []
        with zipfile.ZipFile(out_path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for f in files:
                stats.append(FileStats(f.name, _write_baseline_file(con, zf, f, sel)))
        seconds = time.perf_counter() - start
        with zipfile.ZipFile(out_path) as zf:
            for s in stats:
                info = zf.getinfo(s.name)
                s.csv_bytes, s.compressed_bytes = info.file_size, info.compress_size
    finally:
        con.close()
    return ReferenceRun(seconds, stats, out_path.stat().st_size)


def _deflate_file(src: Path, dst: Path, level: int) -> int:
    comp = fast_zlib.compressobj(level, fast_zlib.DEFLATED, -15)
    written = 0
    with Path(src).open("rb") as fin, Path(dst).open("wb") as fout:
        while chunk := fin.read(CHUNK):
            out = comp.compress(chunk)
            fout.write(out)
            written += len(out)
        out = comp.flush()
        fout.write(out)
        written += len(out)
    return written


def run_limit(db_path: Path, sel: Selection, out_dir: Path, *, level: int) -> ReferenceRun:
    """DuckDB ``COPY`` of the same cells to CSV, then deflate of those bytes, in sequence."""
    out_dir.mkdir(parents=True, exist_ok=True)
    con = _connect(db_path)
    try:
        files = _data_files(con, db_path)
        stats: list[FileStats] = []
        start = time.perf_counter()
        for f in files:
            from_where, params = f.from_where(sel)
            target = out_dir / f.name
            # COPY answers with the number of rows it wrote.
            rows = con.execute(
                f"COPY (SELECT {f.copy_select} {from_where}) TO '{target}' (HEADER, DELIMITER ',')",
                params,
            ).fetchone()
            stats.append(FileStats(f.name, int(rows[0]) if rows else 0, target.stat().st_size))
        copy_seconds = time.perf_counter() - start
        start = time.perf_counter()
        for s in stats:
            s.compressed_bytes = _deflate_file(
                out_dir / s.name, out_dir / (s.name + ".deflate"), level
            )
        deflate_seconds = time.perf_counter() - start
    finally:
        con.close()
    return ReferenceRun(
        copy_seconds + deflate_seconds,
        stats,
        sum(s.compressed_bytes for s in stats),
        {"copy": copy_seconds, "deflate": deflate_seconds},
    )


@dataclass
class FloorRun:
    """The floor: parallel deflate of an archive's uncompressed bytes."""

    seconds: float
    uncompressed_bytes: int
    compressed_bytes: int
    threads: int
    library: str
    level: int


def _deflate_chunk(view: memoryview, level: int) -> tuple[int, int, int]:
    comp = fast_zlib.compressobj(level, fast_zlib.DEFLATED, -15)
    # A full flush ends each chunk on a byte boundary, as chunks joined into one member must.
    size = len(comp.compress(view)) + len(comp.flush(fast_zlib.Z_FULL_FLUSH))
    return size, fast_zlib.crc32(view), len(view)


def run_floor(archive: Path, work: Path, *, level: int) -> FloorRun:
    """Deflate the uncompressed bytes of ``archive``'s entries at ``level`` in
    :data:`FLOOR_CHUNK` chunks on a pool of one thread per core; the time covers only the
    deflate and CRC-32 of bytes already in the page cache (they are written out and read
    once before the clock starts)."""
    plain = work / "floor.bin"
    with zipfile.ZipFile(archive) as zf, plain.open("wb") as out:
        for info in zf.infolist():
            with zf.open(info) as entry:
                shutil.copyfileobj(entry, out, CHUNK)
    threads = os.cpu_count() or 1
    try:
        with plain.open("rb") as fin, mmap.mmap(fin.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            total = len(mm)
            view = memoryview(mm)
            try:
                # Touch every page, so the clock measures compression, not the disk.
                for start in range(0, total, CHUNK):
                    fast_zlib.crc32(view[start : start + CHUNK])
                begin = time.perf_counter()
                with ThreadPoolExecutor(max_workers=threads) as pool:
                    parts = list(
                        pool.map(
                            lambda start: _deflate_chunk(view[start : start + FLOOR_CHUNK], level),
                            range(0, total, FLOOR_CHUNK),
                        )
                    )
                crc = 0
                for _, part_crc, part_len in parts:
                    crc = fast_zlib.crc32_combine(crc, part_crc, part_len)
                seconds = time.perf_counter() - begin
            finally:
                view.release()
    finally:
        plain.unlink(missing_ok=True)
    return FloorRun(seconds, total, sum(p[0] for p in parts), threads, FAST_DEFLATE, level)
