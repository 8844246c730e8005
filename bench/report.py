"""Results: targets judged PASS/MISS, and the JSON, Markdown table and PNG chart written to
``bench/results/``."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import MB

#: The issue's targets.
SPEEDUP_VS_BASELINE = 10.0
#: Ours (submission to complete) against the floor: parallel deflate of the archive's bytes.
MAX_TIME_VS_FLOOR = 3.0
MAX_TIME_VS_LIMIT = 1.4
MAX_RSS_MB = 400.0
#: Peak RSS is sampled; "no higher at 5M" allows this much sampling noise.
RSS_GROWTH_TOLERANCE = 1.10
SEARCH_SHARE_OF_BARE = 0.80
#: A recordset export built from the search cluster against the same from the embedded store.
EXPORT_MAX_CLUSTER_VS_EMBEDDED = 3.0
STATUS_RPS = 1500.0
STATUS_P99_MS = 25.0
#: Ingest of a DwC-A against DuckDB's bare read_csv of its core file, and its memory.
INGEST_MAX_TIME_VS_READ_CSV = 3.0
INGEST_MAX_RSS_MB = 1024.0
#: Small downloads (a few hundred records) through a warm serve, submission to complete.
SMALL_MEDIAN_MS = 250.0
SMALL_P95_MS = 500.0
#: /v2/count p95 per query type (the page counts while a person types).
COUNT_P95_MS = 100.0
FULLTEXT_P95_MS = 300.0


@dataclass
class Verdict:
    """One target: what it asks, what was measured, and whether it was met."""

    name: str
    target: str
    measured: str
    passed: bool | None

    @property
    def word(self) -> str:
        """PASS, MISS or n/a (not measured in this run)."""
        return "n/a" if self.passed is None else ("PASS" if self.passed else "MISS")


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def judge(results: dict[str, Any]) -> list[Verdict]:
    """The targets of the issue against this run's figures (``n/a`` when not measured)."""
    verdicts: list[Verdict] = []
    embedded = [r for r in results.get("embedded", []) if r.get("ours")]
    sizes = sorted({r["store_records"] for r in embedded})
    small = sizes[0] if sizes else None
    large = sizes[-1] if len(sizes) > 1 else None
    main = next((r for r in embedded if r["store_records"] == small and r["label"] == "all"), None)
    scale = "" if small == 1_000_000 else f" (at {small:,} records)" if small else ""

    verdicts.extend(_download_verdicts(embedded))
    if main and main.get("limit"):
        over = main["ours"]["seconds"] / main["limit"]["seconds"]
        verdicts.append(
            Verdict(
                f"build time vs limit time{scale}",
                f"<= {MAX_TIME_VS_LIMIT:g}x",
                f"{over:.2f}x (limit/ours {1 / over:.2f})",
                over <= MAX_TIME_VS_LIMIT,
            )
        )
    else:
        verdicts.append(
            Verdict("build time vs limit time", f"<= {MAX_TIME_VS_LIMIT:g}x", "not measured", None)
        )
    # Memory is judged at 1M records (the largest size up to it) and at the sizes above.
    at = max((n for n in sizes if n <= 1_000_000), default=small)
    ref = next((r for r in embedded if r["store_records"] == at and r["label"] == "all"), None)
    rss_small = ref["ours"]["peak_rss_bytes"] / MB if ref else None
    rss_scale = "" if at == 1_000_000 else f" (at {at:,} records)" if at else ""
    verdicts.append(
        Verdict(
            f"peak RSS{rss_scale}",
            f"< {MAX_RSS_MB:g} MB",
            f"{_fmt(rss_small, 0)} MB",
            None if rss_small is None else rss_small < MAX_RSS_MB,
        )
    )
    big = next((r for r in embedded if r["store_records"] == large and r["label"] == "all"), None)
    if big and rss_small is not None and large != at:
        rss_big = big["ours"]["peak_rss_bytes"] / MB
        verdicts.append(
            Verdict(
                f"peak RSS at {large:,} records",
                f"<= peak at {at:,} (+{(RSS_GROWTH_TOLERANCE - 1) * 100:.0f}% sampling noise)",
                f"{rss_big:.0f} MB vs {rss_small:.0f} MB",
                rss_big <= rss_small * RSS_GROWTH_TOLERANCE and rss_big < MAX_RSS_MB,
            )
        )
    else:
        verdicts.append(Verdict("peak RSS at the larger size", "no higher", "not measured", None))

    search = results.get("search") or {}
    if search.get("ours") and search.get("bare"):
        share = search["bare"]["seconds"] / search["ours"]["seconds"]
        verdicts.append(
            Verdict(
                f"search-cluster build vs bare scroll ({search['records']:,} records)",
                f">= {SEARCH_SHARE_OF_BARE:.0%} of the read's speed",
                f"{share:.0%}",
                share >= SEARCH_SHARE_OF_BARE,
            )
        )
    else:
        verdicts.append(
            Verdict("search-cluster build vs bare scroll", ">= 80%", "not measured", None)
        )

    verdicts.append(_export_verdict(results))

    api = results.get("api") or {}
    status = api.get("status")
    if status:
        rps, p99 = status["requests_per_second"], status["p99_ms"]
        verdicts.append(
            Verdict(
                "status endpoint",
                f">= {STATUS_RPS:,.0f} req/s, p99 < {STATUS_P99_MS:g} ms",
                f"{rps:,.0f} req/s, p99 {p99:.1f} ms",
                rps >= STATUS_RPS and p99 < STATUS_P99_MS,
            )
        )
    else:
        verdicts.append(
            Verdict("status endpoint", ">= 1,500 req/s, p99 < 25 ms", "not measured", None)
        )
    verdicts.append(_load_verdict(results))
    small = results.get("small")
    if small:
        verdicts.append(
            Verdict(
                f"small downloads ({small['records_per_query']} records, distinct queries)",
                f"median < {SMALL_MEDIAN_MS:g} ms, p95 < {SMALL_P95_MS:g} ms",
                f"median {small['median_ms']:.0f} ms, p95 {small['p95_ms']:.0f} ms "
                f"(one record {small['tiny_ms']:.0f} ms, empty {small['empty_ms']:.0f} ms)",
                small["median_ms"] < SMALL_MEDIAN_MS and small["p95_ms"] < SMALL_P95_MS,
            )
        )
    else:
        verdicts.append(Verdict("small downloads", "median < 250 ms", "not measured", None))
    verdicts.extend(_count_verdicts(results))
    verdicts.extend(_ingest_verdicts(results))
    return verdicts


def _export_verdict(results: dict[str, Any]) -> Verdict:
    export = results.get("export")
    goal = f"<= {EXPORT_MAX_CLUSTER_VS_EMBEDDED:g}x"
    if not export:
        return Verdict("recordset export, cluster vs embedded", goal, "not measured", None)
    ratio = export["ratio"]
    return Verdict(
        f"recordset export, cluster vs embedded ({export['records']:,} records)",
        goal,
        f"{ratio:.1f}x ({export['cluster']['seconds']:.2f} s vs "
        f"{export['embedded']['seconds']:.2f} s)",
        ratio <= EXPORT_MAX_CLUSTER_VS_EMBEDDED,
    )


def _load_verdict(results: dict[str, Any]) -> Verdict:
    load = results.get("load")
    name = "status p99, 200 clients while 20 downloads build"
    if not load:
        return Verdict(name, "< 50 ms, no errors", "not measured", None)
    s = load["status"]
    return Verdict(
        name,
        f"< {load['goal_p99_ms']:g} ms, no errors",
        f"p99 {s['p99_ms']:.1f} ms (p50 {s['p50_ms']:.1f} ms, {s['requests_per_second']:,.0f} "
        f"req/s), {s['errors']} errors, {load['non_2xx']} non-2xx, jobs {load['final_states']}",
        bool(load["ok"]) and s["p99_ms"] < load["goal_p99_ms"],
    )


def _download_verdicts(embedded: list[dict[str, Any]]) -> list[Verdict]:
    """Full downloads against the baseline (every selection) and the floor (the query
    matching everything) at each size where those references ran."""
    out: list[Verdict] = []
    for r in embedded:
        where = f"{r['label']}, {r['store_records']:,} records"
        ours = r["ours"]
        sub = r.get("submitted")
        how = "submission to complete" if sub else "job start to published"
        seconds = (sub or ours)["seconds"]
        if r.get("baseline"):
            sp = r["ratios"]["ours_vs_baseline"]
            extra = f"; build alone {ours['seconds']:.2f} s" if sub else ""
            out.append(
                Verdict(
                    f"download vs baseline ({where})",
                    f">= {SPEEDUP_VS_BASELINE:g}x",
                    f"{sp:.1f}x ({how} {seconds:.2f} s vs {r['baseline']['seconds']:.1f} s{extra})",
                    sp >= SPEEDUP_VS_BASELINE,
                )
            )
        floor = ours.get("floor")
        if floor and r["label"] == "all":
            over = r["ratios"]["ours_vs_floor"]
            out.append(
                Verdict(
                    f"download vs floor ({where})",
                    f"<= {MAX_TIME_VS_FLOOR:g}x",
                    f"{over:.1f}x ({how} {seconds:.2f} s vs {floor['seconds']:.2f} s to deflate "
                    f"{floor['uncompressed_bytes'] / MB:,.0f} MB on {floor['threads']} threads)",
                    over <= MAX_TIME_VS_FLOOR,
                )
            )
    if not any(v.name.startswith("download vs baseline") for v in out):
        out.append(
            Verdict("download vs baseline", f">= {SPEEDUP_VS_BASELINE:g}x", "not measured", None)
        )
    return out


def _count_verdicts(results: dict[str, Any]) -> list[Verdict]:
    counts = results.get("counts")
    if not counts:
        return [Verdict("/v2/count p95", "< 100 ms", "not measured", None)]
    out = []
    for kind in ("term", "list", "range", "prefix", "bbox", "fulltext"):
        if kind not in counts:
            continue
        goal = FULLTEXT_P95_MS if kind == "fulltext" else COUNT_P95_MS
        p95 = counts[kind]["p95_ms"]
        out.append(
            Verdict(
                f"/v2/count p95, {kind} ({counts['records']:,} records)",
                f"< {goal:g} ms",
                f"{p95:.0f} ms (p50 {counts[kind]['p50_ms']:.0f} ms)",
                p95 < goal,
            )
        )
    return out


def _ingest_verdicts(results: dict[str, Any]) -> list[Verdict]:
    rows = results.get("ingest_archive") or []
    if not rows:
        return [
            Verdict(
                "ingest vs DuckDB read_csv",
                f"<= {INGEST_MAX_TIME_VS_READ_CSV:g}x",
                "not measured",
                None,
            )
        ]
    out = []
    for row in rows:
        n = row["records"]
        ratio = row["time_vs_reference"]
        code = row["ours"].get("exit", 0)
        if code:
            # An ingest that failed loaded nothing: neither its time nor its memory counts.
            why = f"failed (exit {code}): {row['ours'].get('error', '')}".rstrip(": ")
            out.append(
                Verdict(
                    f"ingest of a {n:,}-row DwC-A vs DuckDB read_csv of its core",
                    f"<= {INGEST_MAX_TIME_VS_READ_CSV:g}x",
                    why,
                    False,
                )
            )
            out.append(
                Verdict(f"ingest peak RSS at {n:,} rows", f"< {INGEST_MAX_RSS_MB:g} MB", why, False)
            )
            continue
        out.append(
            Verdict(
                f"ingest of a {n:,}-row DwC-A vs DuckDB read_csv of its core",
                f"<= {INGEST_MAX_TIME_VS_READ_CSV:g}x",
                f"{ratio:.1f}x ({row['ours']['seconds']:.1f} s vs "
                f"{row['reference']['seconds']:.1f} s)",
                ratio <= INGEST_MAX_TIME_VS_READ_CSV,
            )
        )
        rss = row["ours"]["peak_rss_bytes"] / MB
        out.append(
            Verdict(
                f"ingest peak RSS at {n:,} rows",
                f"< {INGEST_MAX_RSS_MB:g} MB",
                f"{rss:,.0f} MB (read_csv {row['reference']['peak_rss_bytes'] / MB:,.0f} MB)",
                rss < INGEST_MAX_RSS_MB,
            )
        )
    return out


def markdown(results: dict[str, Any], verdicts: list[Verdict]) -> str:
    """The results as a Markdown page."""
    meta = results["meta"]
    lines = [
        "# Benchmark results",
        "",
        f"`{meta['command']}` on {meta['date']}, commit `{meta['commit']}`.",
        f"Machine: {meta['cpus']} CPUs ({meta['cpu_model']}), {meta['memory_gb']:.0f} GB RAM; "
        f"Python {meta['python']}, DuckDB {meta['duckdb']}, deflate for the limit: "
        f"{meta['fast_deflate']} level {meta['limit_level']}.",
        "",
        "Every ratio compares runs made one after the other in this same invocation on the same "
        "data; absolute times are for information (the machine is shared and noisy).",
        "",
        "## Targets",
        "",
        "| target | goal | measured | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {v.name} | {v.target} | {v.measured} | **{v.word}** |" for v in verdicts]
    emb = results.get("embedded") or []
    if emb:
        lines += [
            "",
            "## Embedded builds (DuckDB store, default `dwca-csv`)",
            "",
            "Ours: job start to published archive (all files, meta.xml, eml.xml, citations), in a "
            "child process whose RSS is sampled; submitted: the same download through a warm "
            "`downloader serve`, submission to `complete` (the judged time where measured). "
            "Baseline: Python tuples, `csv.writer`, `zipfile` level 6. Limit: DuckDB `COPY` of "
            "the same cells to CSV, then deflate, in sequence. Floor: our archive's uncompressed "
            "bytes deflated at our level in 4 MiB chunks on every core.",
            "",
            "| store | query | records | media | ours s | submitted s | ours rec/s | ours MB/s "
            "| archive MB | peak RSS MB | baseline s | limit s (copy + deflate) | floor s "
            "| ours/baseline | limit/ours | ours/floor |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in emb:
            o, b, lim, ratios = r.get("ours") or {}, r.get("baseline"), r.get("limit"), r["ratios"]
            lim_text = (
                f"{lim['seconds']:.1f} "
                f"({lim['phases']['copy']:.1f} + {lim['phases']['deflate']:.1f})"
                if lim
                else "–"
            )
            sub, floor = r.get("submitted") or {}, o.get("floor") or {}
            lines.append(
                f"| {r['store_records']:,} | {r['label']} `{json.dumps(r['rq'])}` "
                f"| {r['records']:,} | {r['media']:,} | {_fmt(o.get('seconds'))} "
                f"| {_fmt(sub.get('seconds'))} "
                f"| {_fmt(o.get('records_per_second'), 0)} "
                f"| {_fmt(o.get('output_mb_per_second'), 1)} "
                f"| {_fmt((o.get('size') or 0) / MB, 1)} "
                f"| {_fmt((o.get('peak_rss_bytes') or 0) / MB, 0)} "
                f"| {_fmt(b['seconds'], 1) if b else '–'} | {lim_text} "
                f"| {_fmt(floor.get('seconds'))} "
                f"| {_fmt(ratios.get('ours_vs_baseline'), 1)}x "
                f"| {_fmt(ratios.get('limit_vs_ours'))} "
                f"| {_fmt(ratios.get('ours_vs_floor'), 1)}x |"
            )
    parquet_rows = [r for r in emb if r.get("parquet")]
    if parquet_rows:
        lines += [
            "",
            "## `form=parquet` beside `dwca-csv` (the same query, built right after)",
            "",
            "| store | query | parquet s | archive MB | peak RSS MB | time vs dwca-csv "
            "| size vs dwca-csv | RSS vs dwca-csv |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in parquet_rows:
            pq, ratios = r["parquet"], r["ratios"]
            lines.append(
                f"| {r['store_records']:,} | {r['label']} | {_fmt(pq.get('seconds'))} "
                f"| {_fmt((pq.get('size') or 0) / MB, 1)} "
                f"| {_fmt((pq.get('peak_rss_bytes') or 0) / MB, 0)} "
                f"| {_fmt(ratios.get('parquet_vs_dwca_csv_seconds'))}x "
                f"| {_fmt(ratios.get('parquet_vs_dwca_csv_size'))}x "
                f"| {_fmt(ratios.get('parquet_vs_dwca_csv_rss'))}x |"
            )
    search = results.get("search")
    if search:
        o, b = search.get("ours") or {}, search["bare"]
        lines += [
            "",
            "## Search cluster (osmem-server)",
            "",
            "| records | media | bare scroll s | ours s | ours rec/s | archive MB | peak RSS MB "
            "| bare/ours |",
            "|---|---|---|---|---|---|---|---|",
            f"| {b['records']:,} | {b['media']:,} | {b['seconds']:.1f} | {_fmt(o.get('seconds'))} "
            f"| {_fmt(o.get('records_per_second'), 0)} | {_fmt((o.get('size') or 0) / MB, 1)} "
            f"| {_fmt((o.get('peak_rss_bytes') or 0) / MB, 0)} "
            f"| {_fmt(b['seconds'] / o['seconds'] if o.get('seconds') else None)} |",
        ]
    lines += _export_lines(results.get("export"))
    api = results.get("api")
    if api:
        s, bare, re_ = api["status"], api["bare"], api["resubmission"]
        lines += [
            "",
            "## API under load (one `downloader serve`, load generator in a second process)",
            "",
            f"{api['concurrency']} keep-alive connections, "
            f"at most {api['duration_limit']:g} s each run.",
            "",
            "| endpoint | requests | req/s | p50 ms | p99 ms | max ms | errors |",
            "|---|---|---|---|---|---|---|",
            f"| `GET {api.get('status_path', '/status/<id>')}` | {s['requests']:,} "
            f"| {s['requests_per_second']:,.0f} | "
            f"{s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['max_ms']:.1f} | {s['errors']} |",
            f"| bare Tornado, same bytes (reference) | {bare['requests']:,} | "
            f"{bare['requests_per_second']:,.0f} | {bare['p50_ms']:.2f} | {bare['p99_ms']:.2f} | "
            f"{bare['max_ms']:.1f} | {bare['errors']} |",
            "",
            "Status rate / bare rate: "
            f"{s['requests_per_second'] / bare['requests_per_second']:.2f}. "
            f"A repeated submission served by the existing job ({re_['requests']} sequential "
            f"requests, same job every time: {re_['same_job']}): p50 {_fmt(re_['p50_ms'])} ms, "
            f"max {_fmt(re_['max_ms'])} ms. First submission (creates the job): "
            f"{api['first_submission_ms']:.1f} ms.",
        ]
    load = results.get("load")
    if load:
        built = load.get("all_built_after_s")
        lines += [
            "",
            "## Polling while downloads build (`--only load`)",
            "",
            f"{load['clients']} keep-alive clients, each polling one of {load['downloads']} "
            f"downloads (same query, `force=true`) every {load['interval']:g} s, from the "
            "requests until every download is built; "
            + (
                f"all built {built:.1f} s into the load."
                if built is not None
                else f"{load['still_building_when_the_load_ended']} still building after "
                f"{load['duration_limit']:g} s."
            ),
            "",
            "| workers | requests | req/s | p50 ms | p99 ms | max ms | errors | non-2xx | jobs "
            "| all built after s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for label, run in (
            ("worker_nice default", load),
            ("worker_nice 0 (reference)", load.get("equal_priority")),
        ):
            if not run:
                continue
            r = run["status"]
            lines.append(
                f"| {label} | {r['requests']:,} | {r['requests_per_second']:,.0f} "
                f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['errors']} "
                f"| {run['non_2xx']} | {run['final_states']} "
                f"| {_fmt(run.get('all_built_after_s'), 1)} |"
            )
    skipped = results.get("skipped") or {}
    if skipped:
        lines += ["", "## Not measured in this run", ""]
        lines += [f"- {name}: {why}" for name, why in skipped.items()]
    return "\n".join(lines) + "\n"


def _export_lines(export: dict[str, Any] | None) -> list[str]:
    if not export:
        return []
    lines = [
        "",
        f"## Recordset export, search cluster vs embedded store ({export['records']:,} records)",
        "",
        f"`{export['recordset']}` version {export['version']}; the fastest of "
        f"{len(export['runs']['cluster'])} builds from each source, alternating "
        f"(cluster {', '.join(f'{s:.2f}' for s in export['runs']['cluster'])} s; embedded "
        f"{', '.join(f'{s:.2f}' for s in export['runs']['embedded'])} s).",
        "",
        "| build | embedded s | cluster s | cluster / embedded | records | media |",
        "|---|---|---|---|---|---|",
    ]
    rows = [("export", export["embedded"], export["cluster"])]
    rows += [
        (f"download, {name}", pair["embedded"], pair["cluster"])
        for name, pair in (export.get("downloads") or {}).items()
    ]
    for name, emb, clu in rows:
        counts = clu.get("counts") or {}
        lines.append(
            f"| {name} | {emb['seconds']:.2f} | {clu['seconds']:.2f} "
            f"| {clu['seconds'] / emb['seconds']:.1f}x | {counts.get('records', 0):,} "
            f"| {counts.get('mediarecords', 0):,} |"
        )
    return lines


def chart(results: dict[str, Any], path: Path) -> None:
    """Records/s against result size: ours, the baseline and the limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {"ours": [], "baseline": [], "limit": []}
    for r in results.get("embedded", []):
        for name in series:
            part = r.get(name)
            if part and part.get("seconds"):
                series[name].append((r["records"], r["records"] / part["seconds"]))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    styles = {
        "ours": ("o-", "ours (job start to published archive)"),
        "baseline": ("s--", "baseline (csv.writer + zipfile level 6)"),
        "limit": ("^:", "limit (DuckDB COPY, then deflate)"),
    }
    for name, points in series.items():
        if points:
            points.sort()
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, styles[name][0], label=styles[name][1])
    search = results.get("search") or {}
    if search.get("ours") and search.get("bare"):
        n = search["bare"]["records"]
        ax.plot([n], [n / search["ours"]["seconds"]], "D", label="ours on the search cluster")
        ax.plot([n], [n / search["bare"]["seconds"]], "x", label="bare scroll read (cluster)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("records in the archive")
    ax.set_ylabel("records per second")
    ax.set_title("Default DwC-A build speed against result size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(results: dict[str, Any], out_dir: Path, stem: str) -> tuple[list[Verdict], list[Path]]:
    """Judge the targets and write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    verdicts = judge(results)
    results["targets"] = [
        {"name": v.name, "target": v.target, "measured": v.measured, "result": v.word}
        for v in verdicts
    ]
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.png"]
    paths[0].write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(results, verdicts), encoding="utf-8")
    chart(results, paths[2])
    return verdicts, paths
