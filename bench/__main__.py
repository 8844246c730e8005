"""``python -m bench``: our archive builds against a baseline and the machine's limit, the
search-cluster path against a bare read, and the API under load; results in bench/results/.

Every figure that is judged is a ratio of two runs made in this invocation on the same data;
absolute times are printed beside them. A missed target prints MISS and never fails the
command. ``--quick`` is a smoke run on small data that takes under a minute.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.harness import MB, RESULTS_DIR, ROOT, log, work_dir

DEFAULT_SIZES = (300_000, 1_000_000, 5_000_000)
#: Sizes at and below which the baseline and the floor run and the full downloads are also
#: timed through serve (the issue's 10x targets are judged at 300k and 1M records).
JUDGED_MAX = 1_000_000
QUICK_SIZES = (20_000,)
#: Records per recordset when a larger store is grown from a smaller one.
INGEST_PART = 1_000_000
SECTIONS = (
    "build",
    "baseline",
    "limit",
    "search",
    "export",
    "api",
    "load",
    "small",
    "counts",
    "ingest",
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, short load: a smoke run")
    p.add_argument(
        "--sizes",
        type=lambda s: tuple(int(x.replace("_", "")) for x in s.split(",")),
        default=None,
        help="synthetic store sizes, comma-separated (default 300000,1000000,5000000; quick "
        "20000). Baseline, floor and downloads through serve run at sizes up to 1,000,000, the "
        "limit at the smallest; the larger ones check speed and memory at scale.",
    )
    p.add_argument("--search-records", type=int, default=None, help="default 200000 (quick 2000)")
    p.add_argument(
        "--export-records",
        type=int,
        default=None,
        help="records of the recordset exported from the cluster and the store (default 50000, "
        "quick 2000)",
    )
    p.add_argument("--seed", type=int, default=6)
    p.add_argument(
        "--only", default=",".join(SECTIONS), help=f"sections to run: {','.join(SECTIONS)}"
    )
    p.add_argument(
        "--api-seconds", type=float, default=None, help="load duration (default 10, quick 3)"
    )
    p.add_argument("--api-connections", type=int, default=8)
    p.add_argument(
        "--build-timeout",
        type=float,
        default=900.0,
        help="seconds one build may take before it counts as a miss (default 900)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="skip a larger size when the smaller build, scaled up, would exceed this many "
        "seconds (default 900; 0: never skip)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile one build at the smallest size with pyinstrument",
    )
    p.add_argument("--keep", action="store_true", help="keep bench/work/ data for inspection")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--name", default=None, help="results file stem (default latest, quick: quick)")
    args = p.parse_args(argv)
    args.sizes = tuple(sorted(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)))
    args.search_records = args.search_records or (2_000 if args.quick else 200_000)
    args.export_records = args.export_records or (2_000 if args.quick else 50_000)
    args.api_seconds = args.api_seconds or (3.0 if args.quick else 10.0)
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    args.name = args.name or ("quick" if args.quick else "latest")
    args.budget = 900.0 if args.budget is None else args.budget
    return args


def _meta(argv: list[str]) -> dict[str, Any]:
    import duckdb
    import psutil

    from bench.references import FAST_DEFLATE

    def git(*cmd: str) -> str:
        proc = subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=ROOT, check=False)
        return proc.stdout.strip()

    cpu_model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "command": " ".join(["python -m bench", *map(shlex.quote, argv)]).strip(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": git("rev-parse", "--short", "HEAD")
        + (
            "+dirty" if git("status", "--porcelain", "--", "downloader", "archive", "query") else ""
        ),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": psutil.virtual_memory().total / 1e9,
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "fast_deflate": FAST_DEFLATE,
        "limit_level": _limit_level(),
    }


def _limit_level() -> int:
    # The limit deflates at the level our archive writer uses with the same library.
    return 1


def _embedded(args: argparse.Namespace, results: dict[str, Any]) -> None:  # noqa: C901, PLR0912, PLR0915  (the embedded run reads top to bottom as the report prints it)
    from bench.embedded import ingest_synthetic, run_ours, selections
    from bench.references import run_baseline, run_limit

    smallest = args.sizes[0]
    # Small downloads and counts are judged on the largest store the 10x targets use (1M).
    served = max((s for s in args.sizes if s <= JUDGED_MAX), default=smallest)
    with work_dir(keep=args.keep) as work:
        held = 0
        # Seconds per record of the last "all" build, to foresee the next size's build.
        pace: float | None = None
        for size in args.sizes:
            if pace is not None and args.budget and pace * size > args.budget:
                why = (
                    f"the {held:,}-record build ran at {1 / pace:,.0f} records/s, so this one "
                    f"would take about {pace * size / 60:.0f} min (over the --budget of "
                    f"{args.budget:.0f} s)"
                )
                results.setdefault("skipped", {})[f"store of {size:,}"] = why
                log(f"skipping {size:,}: {why}")
                continue
            # A larger store is the smaller one plus new recordsets: its data is reused. They
            # are added a million records at a time (one recordset each).
            log(f"store of {size:,} synthetic records ({size - held:,} to add)")
            seconds = 0.0
            while True:
                store = ingest_synthetic(
                    work / "data",
                    min(size - held, INGEST_PART),
                    seed=args.seed + held // INGEST_PART,
                    timeout=3600,
                    recordset=None if held == 0 else f"bench-synthetic-from-{held}",
                )
                seconds += store.ingest_seconds
                held = store.records
                if held >= size:
                    break
            store.ingest_seconds = seconds
            results.setdefault("ingest", []).append(
                {
                    "records": store.records,
                    "media": store.media,
                    "seconds": store.ingest_seconds,
                    "by": store.synthetic_by,
                }
            )
            judged = size <= JUDGED_MAX
            rows: list[dict[str, Any]] = []
            for sel in selections(store):
                row: dict[str, Any] = {
                    "store_records": store.records,
                    "label": sel.label,
                    "rq": sel.rq,
                    "ratios": {},
                }
                results["embedded"].append(row)
                rows.append(row)
                row["records"], row["media"] = _counts(store.db_path, sel)
                if "build" in args.only:
                    log(f"ours: {sel.label} ({row['records']:,} records) of {size:,}")
                    try:
                        ours = run_ours(
                            store,
                            sel,
                            timeout=args.build_timeout,
                            floor_in=work if judged else None,
                        )
                        if sel.label == "all":
                            pace = ours["seconds"] / max(row["records"], 1)
                        ours["records_per_second"] = row["records"] / ours["seconds"]
                        ours["output_mb_per_second"] = (
                            (ours.get("size") or 0) / MB / ours["seconds"]
                        )
                        row["ours"] = ours
                        log(
                            f"ours: {ours['seconds']:.2f} s, "
                            f"{ours['records_per_second']:,.0f} rec/s, "
                            f"peak RSS {ours['peak_rss_bytes'] / MB:.0f} MB"
                        )
                    except Exception as exc:  # report and go on: other sections still count
                        _skip(results, f"build {sel.label} at {size:,}", exc)
                        if sel.label == "all":
                            pace = float("inf")
                    if sel.label == "all" and size == smallest and row.get("ours"):
                        _parquet(results, row, store, sel, args.build_timeout)
                if "baseline" in args.only and judged:
                    log(f"baseline: {sel.label}")
                    try:
                        base = run_baseline(store.db_path, sel, work / "baseline.zip")
                        row["baseline"] = _reference_dict(base)
                        log(f"baseline: {base.seconds:.1f} s")
                    except Exception as exc:
                        _skip(results, f"baseline {sel.label} at {size:,}", exc)
                    (work / "baseline.zip").unlink(missing_ok=True)
                if "limit" in args.only and (size == smallest or sel.label == "all"):
                    log(f"limit: {sel.label}")
                    try:
                        lim = run_limit(store.db_path, sel, work / "limit", level=_limit_level())
                        row["limit"] = _reference_dict(lim)
                        log(
                            f"limit: {lim.seconds:.1f} s (copy {lim.phases['copy']:.1f} + "
                            f"deflate {lim.phases['deflate']:.1f})"
                        )
                    except Exception as exc:
                        _skip(results, f"limit {sel.label} at {size:,}", exc)
                    for f in (work / "limit").glob("*"):
                        f.unlink()
                _ratios(row)
            if "build" in args.only and judged:
                # After the builds above: the first build after an ingest reads a colder
                # store (it took twice as long as the next ones), which is not what serve
                # sees in use.
                submitted = _submitted(results, store, work, args.build_timeout)
                for row in rows:
                    if row.get("ours") and row["label"] in submitted:
                        row["submitted"] = {"seconds": submitted[row["label"]]}
                        _ratios(row)
            if args.profile and size == smallest and "build" in args.only:
                _profile(args, store, selections(store)[0])
            if "api" in args.only and size == smallest:
                _api(args, results, store, work)
            if "load" in args.only and size == smallest:
                _load(args, results, store, work)
            if "small" in args.only and size == served:
                _small(results, store, work)
            if "counts" in args.only and size == served:
                _counts_latency(results, store, work)


def _counts(db_path: Path, sel: Any) -> tuple[int, int]:
    import duckdb

    con = duckdb.connect(str(db_path), read_only=True)
    try:
        where = sel.where or "TRUE"
        r = con.execute(f"SELECT count(*) FROM records WHERE {where}", sel.params).fetchone()
        m = con.execute(
            "SELECT count(*) FROM mediarecords "
            f"WHERE coreid IN (SELECT uuid FROM records WHERE {where})",
            sel.params,
        ).fetchone()
    finally:
        con.close()
    return (int(r[0]) if r else 0), (int(m[0]) if m else 0)


def _reference_dict(run: Any) -> dict[str, Any]:
    return {
        "seconds": run.seconds,
        "archive_bytes": run.archive_bytes,
        "phases": run.phases,
        "files": [vars(f) for f in run.files],
    }


def _parquet(
    results: dict[str, Any], row: dict[str, Any], store: Any, sel: Any, timeout: float
) -> None:
    """The same build as ``form=parquet``, right after the dwca-csv one: time, size and peak
    RSS as ratios to it."""
    from bench.embedded import run_ours

    log(f"ours, form=parquet: {sel.label} ({row['records']:,} records)")
    try:
        parquet = run_ours(store, sel, timeout=timeout, form="parquet")
    except Exception as exc:
        _skip(results, f"parquet build {sel.label}", exc)
        return
    ours = row["ours"]
    row["parquet"] = parquet
    row["ratios"]["parquet_vs_dwca_csv_seconds"] = parquet["seconds"] / ours["seconds"]
    row["ratios"]["parquet_vs_dwca_csv_size"] = (parquet.get("size") or 0) / max(
        ours.get("size") or 1, 1
    )
    row["ratios"]["parquet_vs_dwca_csv_rss"] = parquet["peak_rss_bytes"] / max(
        ours["peak_rss_bytes"], 1
    )
    log(
        f"parquet: {parquet['seconds']:.2f} s "
        f"({row['ratios']['parquet_vs_dwca_csv_seconds']:.2f}x dwca-csv's time), "
        f"{(parquet.get('size') or 0) / MB:.1f} MB "
        f"({row['ratios']['parquet_vs_dwca_csv_size']:.2f}x its size), "
        f"peak RSS {parquet['peak_rss_bytes'] / MB:.0f} MB "
        f"({row['ratios']['parquet_vs_dwca_csv_rss']:.2f}x)"
    )


def _ratios(row: dict[str, Any]) -> None:
    ours = row.get("ours")
    if not ours:
        return
    # Judged on submission to complete through serve where it was measured.
    seconds = (row.get("submitted") or ours)["seconds"]
    if row.get("baseline"):
        row["ratios"]["ours_vs_baseline"] = row["baseline"]["seconds"] / seconds
        row["ratios"]["build_vs_baseline"] = row["baseline"]["seconds"] / ours["seconds"]
    if row.get("limit"):
        row["ratios"]["limit_vs_ours"] = row["limit"]["seconds"] / ours["seconds"]
    if ours.get("floor"):
        row["ratios"]["ours_vs_floor"] = seconds / ours["floor"]["seconds"]


def _submitted(results: dict[str, Any], store: Any, work: Path, timeout: float) -> dict[str, float]:
    """Seconds from submission to ``complete`` of each selection's download through a warm
    serve (after one empty download has woken its workers), by selection label."""
    from bench.embedded import selections
    from bench.small import submit_and_wait, warm_serve

    out: dict[str, float] = {}
    try:
        with warm_serve(store.data_dir, work / "serve-full.log") as conn:
            submit_and_wait(conn, {"catalognumber": f"no-such-number-{time.time_ns()}"}, 120)
            for sel in selections(store):
                out[sel.label] = submit_and_wait(conn, sel.rq, timeout)
                log(f"through serve: {sel.label} in {out[sel.label]:.2f} s")
    except Exception as exc:
        _skip(results, f"downloads through serve at {store.records:,}", exc)
    return out


def _profile(args: argparse.Namespace, store: Any, sel: Any) -> None:
    from bench.embedded import run_ours

    target = args.out / f"profile-{args.name}.txt"
    log(f"profiling one build ({sel.label}) with pyinstrument into {target.name}")
    try:
        run_ours(store, sel, timeout=3600, profile=target)
    except Exception as exc:
        log(f"profile failed: {exc}")


def _api(args: argparse.Namespace, results: dict[str, Any], store: Any, work: Path) -> None:
    from bench.api import run_api
    from bench.embedded import selections

    sels = selections(store)
    rq = sels[-1].rq
    log("API under load")
    try:
        results["api"] = run_api(
            store.data_dir,
            work,
            rq,
            concurrency=args.api_connections,
            duration=args.api_seconds,
            max_requests=200_000,
            build_timeout=600,
        )
    except Exception as exc:
        _skip(results, "api", exc)


def _load(args: argparse.Namespace, results: dict[str, Any], store: Any, work: Path) -> None:
    from bench.embedded import selections
    from bench.load import run_load

    # Builds that last a while: the whole store when it is small (--quick), a tenth of it
    # at a million records and more.
    sels = selections(store)
    rq = (sels[0] if store.records <= 100_000 else sels[-1]).rq
    log("load: 200 clients polling while 20 downloads build")
    try:
        results["load"] = run_load(
            store.data_dir,
            work,
            rq,
            clients=200,
            downloads=20,
            duration=120.0,
            interval=1.0,
            build_timeout=args.build_timeout,
        )
        log("load: the same with the workers at serve's priority (worker_nice 0)")
        results["load"]["equal_priority"] = run_load(
            store.data_dir,
            work,
            rq,
            clients=200,
            downloads=20,
            duration=120.0,
            interval=1.0,
            build_timeout=args.build_timeout,
            worker_nice=0,
        )
    except Exception as exc:
        _skip(results, "load", exc)


def _search(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from bench.search import run_search

    with work_dir(keep=args.keep) as work:
        try:
            res = run_search(
                work,
                args.search_records,
                seed=args.seed,
                page=10_000,
                timeout=args.build_timeout,
            )
        except Exception as exc:
            _skip(results, "search", exc)
            return
        ours = res.get("ours") or {}
        if ours.get("seconds"):
            ours["records_per_second"] = res["bare"]["records"] / ours["seconds"]
        results["search"] = res


def _export(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from bench.export import run_export

    with work_dir(keep=args.keep) as work:
        try:
            results["export"] = run_export(
                work, args.export_records, seed=args.seed, timeout=args.build_timeout
            )
        except Exception as exc:
            _skip(results, "export", exc)


def _counts_latency(results: dict[str, Any], store: Any, work: Path) -> None:
    from bench.counts import run_counts

    log("/v2/count latency by query type")
    try:
        results["counts"] = {"records": store.records, **run_counts(store.data_dir, work)}
    except Exception as exc:
        _skip(results, "count latency", exc)


def _small(results: dict[str, Any], store: Any, work: Path) -> None:
    from bench.small import run_small

    log("small downloads through a warm serve")
    try:
        results["small"] = run_small(store.data_dir, store.db_path, work)
    except Exception as exc:
        _skip(results, "small downloads", exc)


def _ingest(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from bench.ingest_archive import run_ingest_bench

    with work_dir(keep=args.keep) as work:
        try:
            results["ingest_archive"] = run_ingest_bench(work, args.sizes, seed=args.seed)
        except Exception as exc:
            _skip(results, "ingest", exc)


def _skip(results: dict[str, Any], name: str, exc: BaseException) -> None:
    text = f"{type(exc).__name__}: {exc}"
    lines = text.strip().splitlines()
    results.setdefault("skipped", {})[name] = lines[-1][:300] if lines else text[:300]
    log(f"{name}: not measured: {text[:2000]}")
    if os.environ.get("BENCH_TRACEBACK"):
        traceback.print_exc()


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    """Run the selected sections and write the results."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    started = time.perf_counter()
    results: dict[str, Any] = {"meta": _meta(argv), "embedded": []}
    if args.only & {"build", "baseline", "limit", "api", "load", "small", "counts"}:
        _embedded(args, results)
    if "search" in args.only:
        _search(args, results)
    if "export" in args.only:
        _export(args, results)
    if "ingest" in args.only:
        _ingest(args, results)
    results["meta"]["total_seconds"] = time.perf_counter() - started

    from bench.report import write

    verdicts, paths = write(results, args.out, args.name)
    print(paths[1].read_text(encoding="utf-8"))
    for v in verdicts:
        print(f"{v.word:4}  {v.name}: {v.measured} (goal {v.target})")
    print(
        f"results: {', '.join(_shown(p) for p in paths)}; "
        f"{results['meta']['total_seconds']:.0f} s in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
