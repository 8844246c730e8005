"""Ingest of a Darwin Core Archive against DuckDB's bare ``read_csv`` of the same file.

For each size an archive is written (an Occurrence core of 21 Darwin Core terms, tab
separated, unquoted, zipped at deflate level 1, as IPT and GBIF write them) from the synthetic
records, a chunk at a time. Then, each in a fresh process, measured from the outside (wall
seconds, and the process's peak RSS from ``getrusage``):

- the reference: DuckDB reading the bare ``occurrence.txt`` into an in-memory table with two
  lower-cased columns derived (what any loader has to do at the least);
- ours: ``downloader ingest`` of the zip into an empty data directory (unzip, parse, derive
  every index field, write the store's new version).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from bench.harness import ROOT, log

TERMS = (
    "occurrenceID",
    "basisOfRecord",
    "institutionCode",
    "collectionCode",
    "catalogNumber",
    "kingdom",
    "family",
    "genus",
    "specificEpithet",
    "scientificName",
    "country",
    "countryCode",
    "stateProvince",
    "locality",
    "decimalLatitude",
    "decimalLongitude",
    "eventDate",
    "year",
    "recordedBy",
    "recordNumber",
    "habitat",
)

_REFERENCE = """
import json, resource, sys, time
import duckdb
start = time.perf_counter()
con = duckdb.connect()
con.execute(
    "CREATE TABLE occ AS SELECT *, lower(genus) AS genus_lc, lower(scientificName) AS sci_lc "
    "FROM read_csv(?, delim='\\t', quote='', header=true, all_varchar=true)",
    [sys.argv[1]],
)
rows = con.execute("SELECT count(*) FROM occ").fetchone()[0]
print(json.dumps({"seconds": time.perf_counter() - start, "rows": rows,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

_OURS = """
import contextlib, io, json, resource, sys, time
from downloader.cli import main
start = time.perf_counter()
err = io.StringIO()
with contextlib.redirect_stderr(err):
    code = main(["ingest", "--no-export", "--data-dir", sys.argv[1], sys.argv[2]])
lines = [l.strip() for l in err.getvalue().splitlines() if l.strip().startswith("downloader")]
print(json.dumps({"seconds": time.perf_counter() - start, "exit": code,
                  "error": lines[0][:300] if code and lines else "",
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def write_archive(folder: Path, count: int, *, seed: int) -> tuple[Path, Path]:
    """(the zip, the bare occurrence.txt beside it) of ``count`` synthetic occurrences."""
    from downloader.ingest.synthetic import synthetic_chunks

    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "occurrence.txt"
    columns = [f"dwc:{t}" for t in TERMS]
    with text.open("wb") as out:
        out.write(("\t".join(TERMS) + "\n").encode())
        for core, _media in synthetic_chunks(count, seed=seed):
            table = core.select(columns)
            # Tabs or line breaks inside values would need quoting, which this format lacks.
            sink = pa.BufferOutputStream()
            pacsv.write_csv(
                table,
                sink,
                pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"),
            )
            out.write(sink.getvalue().to_pybytes())
    fields = "".join(
        f'<field index="{i}" term="http://rs.tdwg.org/dwc/terms/{t}"/>' for i, t in enumerate(TERMS)
    )
    meta = (
        '<archive xmlns="http://rs.tdwg.org/dwc/text/"><core encoding="UTF-8" '
        'fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy="" '
        'ignoreHeaderLines="1" rowType="http://rs.tdwg.org/dwc/terms/Occurrence">'
        f'<files><location>occurrence.txt</location></files><id index="0"/>{fields}'
        "</core></archive>"
    )
    archive = folder / f"occurrences-{count}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("meta.xml", meta)
        zf.write(text, "occurrence.txt")
    return archive, text


def _run(code: str, *args: str, timeout: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_ingest_bench(work: Path, sizes: tuple[int, ...], *, seed: int) -> list[dict[str, Any]]:
    """One row per size: the reference and ours, seconds and peak RSS, and the ratio."""
    rows = []
    for size in sizes:
        folder = work / f"ingest-{size}"
        started = time.perf_counter()
        archive, text = write_archive(folder, size, seed=seed)
        log(
            f"ingest: archive of {size:,} occurrences written in "
            f"{time.perf_counter() - started:.0f} s ({text.stat().st_size / 1e6:,.0f} MB of text)"
        )
        reference = _run(_REFERENCE, str(text), timeout=3600)
        log(f"ingest: DuckDB read_csv {reference['seconds']:.2f} s")
        ours = _run(_OURS, str(folder / "data"), str(archive), timeout=7200)
        log(
            f"ingest: downloader ingest {ours['seconds']:.2f} s, "
            f"peak RSS {ours['peak_rss_bytes'] / 1e6:,.0f} MB"
            + (f", FAILED (exit {ours['exit']}): {ours['error']}" if ours.get("exit") else "")
        )
        rows.append(
            {
                "records": size,
                "text_bytes": text.stat().st_size,
                "zip_bytes": archive.stat().st_size,
                "reference": reference,
                "ours": ours,
                "time_vs_reference": ours["seconds"] / reference["seconds"],
            }
        )
        for path in (archive, text):
            path.unlink(missing_ok=True)
    return rows
