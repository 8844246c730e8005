"""The embedded store: synthetic data, the selections measured, and our build.

Our build runs in a child process (:mod:`bench.build_child`) whose peak RSS the parent
samples; the baseline and the limit (:mod:`bench.references`) run on the same store and the
same rows in this process, one after the other, never at the same time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from bench.columns import Selection
from bench.harness import ROOT, bench_env, log, run_measured_child

#: The level our archive writer deflates at (archive.zipstream.fastest_deflate).
FLOOR_LEVEL = 1

#: Text fields tried, in order, for a value that matches about a tenth of the records.
_TENTH_CANDIDATES = (
    "kingdom",
    "phylum",
    "class",
    "basisofrecord",
    "continent",
    "country",
    "order",
    "institutioncode",
    "family",
)


@dataclass
class Store:
    """An ingested data directory and what it holds."""

    data_dir: Path
    records: int
    media: int
    ingest_seconds: float
    synthetic_by: str

    @property
    def db_path(self) -> Path:
        """The DuckDB file."""
        return self.data_dir / "records.duckdb"


def ingest_synthetic(
    data_dir: Path, n: int, *, seed: int, timeout: float, recordset: str | None = None
) -> Store:
    """Add ``n`` synthetic records to ``data_dir`` through ``downloader ingest`` (as a new
    recordset when ``recordset`` is given, so a larger store reuses a smaller one)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cli = [sys.executable, "-m", "downloader.cli", "ingest", "--data-dir", str(data_dir)]
    # --no-export: the recordset export an ingest queues would be built by the first serve
    # on this store, taking the large-job worker (and a core) from the downloads timed
    # through serve, small downloads and counts (a served download of 300k records took
    # 5.7 s instead of 2.8 s, queued behind it).
    cli += ["--synthetic", str(n), "--seed", str(seed), "--no-export"]
    if recordset:
        cli += ["--recordset", recordset]
    by = "downloader ingest --synthetic"
    proc = _run(cli, timeout)
    if proc.returncode == 2:
        # The command line does not offer --synthetic yet: call the store's function.
        call = (
            "import sys; from downloader.ingest import ingest_synthetic; "
            "ingest_synthetic(sys.argv[1], int(sys.argv[2]), seed=int(sys.argv[3]), "
            "recordset=sys.argv[4] or None)"
        )
        args = [str(data_dir), str(n), str(seed), recordset or ""]
        proc = _run([sys.executable, "-c", call, *args], timeout)
        by = "downloader.ingest.load.ingest_synthetic"
    if proc.returncode != 0:
        raise RuntimeError(f"ingest failed ({proc.returncode}): {proc.stderr[-3000:]}")
    seconds = time.perf_counter() - start
    con = duckdb.connect(str(data_dir / "records.duckdb"), read_only=True)
    try:
        records = _scalar(con, "SELECT count(*) FROM records")
        media = _scalar(con, "SELECT count(*) FROM mediarecords")
    finally:
        con.close()
    log(f"ingested {records:,} records and {media:,} media records in {seconds:.1f} s ({by})")
    return Store(data_dir, records, media, seconds, by)


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, env=bench_env(), cwd=ROOT, timeout=timeout, check=False
    )


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0


def selections(store: Store) -> list[Selection]:
    """The query matching everything, and one equality query matching about a tenth."""
    out = [Selection("all", {}, "", ())]
    con = duckdb.connect(str(store.db_path), read_only=True)
    try:
        best: tuple[float, str, str] | None = None
        for name in _TENTH_CANDIDATES:
            rows = con.execute(
                f'SELECT "{name}", count(*) FROM records WHERE "{name}" IS NOT NULL '
                f'GROUP BY "{name}"'
            ).fetchall()
            for value, count in rows:
                distance = abs(count / max(store.records, 1) - 0.1)
                if best is None or distance < best[0]:
                    best = (distance, name, value)
            if best is not None and best[0] < 0.02:
                break
    finally:
        con.close()
    if best is not None:
        _, name, value = best
        out.append(Selection("tenth", {name: value}, f'"{name}" = ?', (value,)))
    return out


def run_ours(
    store: Store,
    sel: Selection | None = None,
    *,
    timeout: float,
    params: dict[str, Any] | None = None,
    env_extra: dict[str, str] | None = None,
    profile: Path | None = None,
    form: str | None = None,
    floor_in: Path | None = None,
) -> dict[str, Any]:
    """Our build of the default DwC-A (or ``form``) for ``sel`` in a measured child process
    (or of ``params`` as :mod:`bench.build_child` takes them: a download or a recordset
    export); with ``floor_in`` (a work directory), also the floor on its archive's bytes
    (:func:`bench.references.run_floor`), after the child has ended."""
    env = bench_env(
        {
            "DOWNLOADER_DATA_DIR": str(store.data_dir),
            "DOWNLOADER_SMTP_HOST": "",
            **(env_extra or {}),
        }
    )
    if params is None:
        if sel is None:
            raise ValueError("run_ours needs a selection or the build's parameters")
        params = {"rq": sel.rq}
    params = dict(params)
    if form:
        params["form"] = form
    args = ["-m", "bench.build_child", json.dumps(params)]
    if profile is not None:
        args.append(str(profile))
    run = run_measured_child(args, timeout=timeout, env=env)
    out = dict(run.result)
    out["peak_rss_bytes"] = run.peak_rss_bytes
    out["process_seconds"] = run.wall_seconds
    archive = out.get("archive")
    if archive and floor_in is not None:
        from bench.references import run_floor

        floor = run_floor(Path(archive), floor_in, level=FLOOR_LEVEL)
        out["floor"] = vars(floor)
        log(
            f"floor: {floor.seconds:.2f} s to deflate {floor.uncompressed_bytes / 1e6:,.0f} MB "
            f"on {floor.threads} threads ({floor.library} level {floor.level})"
        )
    if archive:
        if profile is None:
            # Measured and counted; the bytes are not needed any more (a 5M archive is large).
            Path(archive).unlink(missing_ok=True)
        # The results are committed: keep the file name, not where this machine put it.
        out["archive"] = Path(archive).name
    return out
