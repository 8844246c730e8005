"""The ``downloader`` command line: serve, worker, ingest, count, cleanup, fetch.

Each subcommand parses its arguments here and calls one function elsewhere; nothing in this
module knows about SQL, HTTP internals or storage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from downloader.errors import BuildFailed, ConfigError, SourceUnavailable

if TYPE_CHECKING:  # pragma: no cover
    from downloader.config import Settings

Command = Callable[[argparse.Namespace], int]


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory of the embedded record store, job store and archives "
        "(default: data_dir from the configuration)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="downloader",
        description="An iDigBio-compatible Darwin Core Archive download service.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in (
        _register_ingest,
        _register_count,
        _register_reindex,
        _register_serve,
        _register_worker,
        _register_cleanup,
        _register_fetch,
    ):
        register(sub)
    return parser


# --- ingest / count (record store) -------------------------------------------------------


def _register_ingest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ingest",
        help="load Darwin Core Archives (or synthetic records) into the record store",
        description="Load Darwin Core Archives (zips or folders with an Occurrence core and "
        "optionally an Audubon Core or GBIF multimedia extension) into DATA_DIR/records.duckdb. "
        "Each archive becomes a recordset with a new version; ingesting it again replaces its "
        "records. Each archive is loaded in its own transaction: an archive that cannot be "
        "loaded (for example a Taxon core) is reported, the others still load, and the exit "
        "status is 1. With --target elasticsearch, each loaded recordset is then copied from "
        "records.duckdb (the staging store) into the search indices (elasticsearch_url, "
        "elasticsearch_index_prefix), creating them from the field catalogue if missing.",
    )
    _add_data_dir(p)
    p.add_argument(
        "--target",
        choices=("duckdb", "elasticsearch"),
        default=None,
        help="where the records end up: the embedded store only, or also the search indices "
        "(default: the record_source setting)",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="archive zip files or folders")
    p.add_argument(
        "--recordset",
        metavar="ID",
        help="recordset id for the (single) archive or the synthetic records "
        "(default: the EML packageId or alternateIdentifier, else the file name)",
    )
    p.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        default=0,
        help="also generate N synthetic records (about a third with media)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic records (default 0)")
    p.add_argument(
        "--if-empty",
        action="store_true",
        help="do nothing when the store already holds records",
    )
    p.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="load an archive whose data files have malformed rows (a wrong number of "
        "fields, bytes invalid in the declared encoding) without those rows, and count "
        "them; by default such an archive is not loaded and the first rows are named",
    )
    p.add_argument(
        "--skip-unsupported",
        action="store_true",
        help="report archives that cannot be ingested (such as Taxon cores) as warnings and "
        "exit 0 if everything else loaded",
    )
    p.add_argument(
        "--lock-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for readers to release the store (default 60)",
    )
    p.add_argument(
        "--no-export",
        action="store_true",
        help="do not queue the DwC-A export of each new recordset version (by default it is "
        "queued in the job store and built by `downloader serve` or the Celery workers)",
    )
    p.set_defaults(func=_run_ingest)


def _run_ingest(args: argparse.Namespace) -> int:  # noqa: C901  (one branch per ingest source and target, each with its own error words)
    from downloader.errors import SourceUnavailable
    from downloader.ingest.load import (
        IngestError,
        describe,
        ingest_paths,
        ingest_synthetic,
        stored_record_count,
    )
    from downloader.ingest.read import ArchiveRejected

    if not args.paths and not args.synthetic:
        print("downloader ingest: give archive paths and/or --synthetic N", file=sys.stderr)
        return 2
    if args.synthetic < 0:
        print("downloader ingest: --synthetic must not be negative", file=sys.stderr)
        return 2
    if args.recordset and args.synthetic and args.paths:
        print(
            "downloader ingest: --recordset names one recordset; use it with either one "
            "archive or --synthetic",
            file=sys.stderr,
        )
        return 2
    settings = _settings(args)
    data_dir = settings.data_path
    push = (
        _IndexPusher(settings)
        if (args.target or settings.record_source) == "elasticsearch"
        else None
    )
    if args.if_empty:
        try:
            existing = push.existing() if push is not None else stored_record_count(data_dir)
        except SourceUnavailable as exc:
            print(f"downloader ingest: {exc}", file=sys.stderr)
            return 1
        if existing:
            print(f"the record store already holds {existing} records; nothing loaded")
            return 0

    def report_error(path: str, exc: Exception) -> None:
        skipped = args.skip_unsupported and isinstance(exc, ArchiveRejected)
        bar.close()
        print(f"downloader ingest: {'skipped: ' if skipped else ''}{exc}", file=sys.stderr)

    queue_export = None if args.no_export else _export_hook(settings)
    not_pushed = 0

    def loaded(result: Any) -> None:
        nonlocal not_pushed
        bar.close()
        print(describe(result))
        for warning in result.warnings:
            print(f"downloader ingest: warning: {warning}", file=sys.stderr)
        if push is not None:
            try:
                print(push(result.recordset))
            except (SourceUnavailable, BuildFailed) as exc:
                # The recordset is staged in records.duckdb; the next ingest of it pushes again.
                print(f"downloader ingest: {exc}", file=sys.stderr)
                not_pushed += 1
                return  # an export now would read an index without this version
        if queue_export is None:
            return
        try:
            queue_export(result)
        except Exception as exc:
            # The records are in; a missing export can be asked for later with POST.
            print(f"downloader ingest: could not queue the export: {exc}", file=sys.stderr)

    failed = 0
    bar = _ProgressBar(enabled=sys.stderr.isatty())
    try:
        if args.paths:
            _, failures = ingest_paths(
                data_dir,
                args.paths,
                recordset=args.recordset,
                lock_timeout=args.lock_timeout,
                skip_bad_rows=args.skip_bad_rows,
                progress=bar,
                on_result=loaded,
                on_error=report_error,
            )
            failed = sum(
                1
                for _, exc in failures
                if not (args.skip_unsupported and isinstance(exc, ArchiveRejected))
            )
        if args.synthetic:
            result = ingest_synthetic(
                data_dir,
                args.synthetic,
                seed=args.seed,
                recordset=args.recordset,
                lock_timeout=args.lock_timeout,
                progress=bar,
            )
            bar.close()
            loaded(result)
    except IngestError as exc:
        print(f"downloader ingest: {exc}", file=sys.stderr)
        return 1
    if failed:
        print(f"downloader ingest: {failed} archive(s) not loaded", file=sys.stderr)
    if not_pushed:
        print(
            f"downloader ingest: {not_pushed} recordset(s) not copied into the search index",
            file=sys.stderr,
        )
    return 1 if failed or not_pushed else 0


class _ProgressBar:
    """The ingest's progress as a tqdm bar per phase (rows, rows/s, ETA) on a terminal;
    nothing otherwise (the one-line summary per archive is printed either way)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._what = ""

    def __call__(self, what: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if what != self._what:
            self.close()
            self._what = what
            self._bar = tqdm(
                total=total or None,
                desc=what,
                unit=" rows",
                unit_scale=True,
                leave=False,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        bar = self._bar
        if bar is not None and done > bar.n:
            bar.update(done - bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._what = ""


class _IndexPusher:
    """Copies freshly ingested recordsets from the staging store into the search indices."""

    def __init__(self, settings: Settings) -> None:
        from downloader.ingest.load import store_path
        from downloader.sources.elasticsearch import ElasticsearchSource

        self.store = store_path(settings.data_path)
        self.source = ElasticsearchSource.from_settings(settings)

    def __call__(self, recordset: str) -> str:
        """Push one recordset (its records replace the older version's, whose removed uuids
        go to the deletion log); the line to print."""
        from downloader.ingest.cluster import export_store

        counts: list[tuple[int, int]] = []
        version = export_store(
            self.store,
            self.source,
            recordsets=[recordset],
            on_recordset=lambda _rs, n_records, n_media: counts.append((n_records, n_media)),
        )
        n_records, n_media = counts[0] if counts else (0, 0)
        return (
            f"recordset {recordset} copied into the search index ({self.source.index_prefix}*): "
            f"{n_records} records, {n_media} media records; data version {version}"
        )

    def existing(self) -> int:
        """Records the index holds (0 before the first push created it)."""
        try:
            return self.source.total_records()
        except BuildFailed:  # no index yet
            return 0


def _register_reindex(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "reindex",
        help="fill or rebuild the search indices from the embedded store, without new versions",
        description="Copy DATA_DIR/records.duckdb (the staging store `ingest` fills) into the "
        "search cluster named by elasticsearch_url and elasticsearch_index_prefix, keeping "
        "every recordset version and etag, so exports and downloads of the data keep working. "
        "A document the index already holds with the same version and etag is skipped, so an "
        "interrupted run started again writes only what is missing; documents of a recordset "
        "that the store no longer holds are removed. The data version changes only when the "
        "indices had none or their content had to change.",
    )
    _add_data_dir(p)
    p.add_argument(
        "--recordset",
        action="append",
        default=None,
        metavar="ID",
        help="only this recordset (repeat for several; default: every recordset of the store)",
    )
    p.set_defaults(func=_reindex)


def _reindex(args: argparse.Namespace) -> int:
    from downloader.ingest.cluster import ReindexCounts, reindex_store
    from downloader.ingest.load import store_path
    from downloader.sources.elasticsearch import ElasticsearchSource

    settings = _settings(args)
    store = store_path(settings.data_path)
    if not store.exists():
        print(f"downloader reindex: no record store at {store}", file=sys.stderr)
        return 1
    source = ElasticsearchSource.from_settings(settings)
    seen = {"records": 0, "mediarecords": 0}

    def report(rs: str, counts: ReindexCounts) -> None:
        done = {k: counts.written[k] + counts.skipped[k] for k in seen}
        print(
            f"recordset {rs}: {done['records'] - seen['records']} records, "
            f"{done['mediarecords'] - seen['mediarecords']} media records in the index",
            flush=True,
        )
        seen.update(done)

    try:
        counts = reindex_store(store, source, recordsets=args.recordset, on_recordset=report)
    except (SourceUnavailable, BuildFailed) as exc:
        print(f"downloader reindex: {exc}; run it again to go on", file=sys.stderr)
        return 1
    print(
        f"{counts.recordsets} recordset(s) in {source.index_prefix}*: "
        f"written {counts.written['records']} records and "
        f"{counts.written['mediarecords']} media records, skipped {counts.skipped['records']} "
        f"and {counts.skipped['mediarecords']} already indexed, removed "
        f"{counts.removed['records']} and {counts.removed['mediarecords']}; data version "
        f"{counts.data_version}" + (" (new)" if counts.new_data_version else " (unchanged)")
    )
    return 0


def _export_hook(settings: Settings) -> Callable[[Any], None]:
    """The ingest hook of :mod:`downloader.service.exports`: with Celery the export is sent to the
    workers at once; otherwise it waits in the job store for ``downloader serve``."""
    from downloader.backends import make_context
    from downloader.dispatch import make_dispatcher
    from downloader.service.exports import ingest_hook

    dispatcher = make_dispatcher(settings) if settings.dispatcher == "celery" else None
    return ingest_hook(make_context(settings, dispatcher=dispatcher))


def _register_count(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "count",
        help="count records and media records matching a query",
        description="Count the records matching RQ (an iDigBio query, JSON) and their media "
        "records; with --mq, records having matching media and the matching media of matching "
        "records, in the configured record source (record_source: the embedded store or the "
        "search indices). A bad query prints the reason and exits with status 2.",
    )
    _add_data_dir(p)
    p.add_argument("rq", nargs="?", default="{}", help='record query, e.g. \'{"genus": "acer"}\'')
    p.add_argument("--mq", default=None, help="media record query (JSON)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    p.set_defaults(func=_run_count)


def _parse_query_arg(text: str, param: str) -> object:
    import json

    from query.errors import QueryError

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise QueryError(param, f"is not valid JSON ({exc.msg} at character {exc.pos})") from exc


def _run_count(args: argparse.Namespace) -> int:
    import json

    from downloader.backends import make_source
    from downloader.errors import SourceUnavailable
    from query.errors import QueryError
    from query.validate import validate_query

    try:
        rq = validate_query(_parse_query_arg(args.rq, "rq"), "records", param="rq")
        mq = None
        if args.mq is not None:
            mq = validate_query(_parse_query_arg(args.mq, "mq"), "mediarecords", param="mq")
    except QueryError as exc:
        if args.json:
            print(json.dumps({"status": 400, **exc.to_dict()}), file=sys.stderr)
        else:
            print(f"downloader count: {exc.message}", file=sys.stderr)
        return 2
    source = make_source(_settings(args))
    try:
        records = source.count("records", rq or None, mq)
        media = source.count("mediarecords", rq or None, mq)
    except (SourceUnavailable, BuildFailed) as exc:
        print(f"downloader count: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"records": records, "mediarecords": media, "rq": rq, "mq": mq}))
    else:
        print(f"{records} records, {media} media records")
    return 0


# --- serve / worker / cleanup / fetch (service) --------------------------------------------


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    """Settings with the command line's options on top; a bad value exits with a message."""
    from downloader.config import load_settings

    values = {"data_dir": getattr(args, "data_dir", None), **overrides}
    try:
        return load_settings(overrides=values)
    except ConfigError as exc:
        raise SystemExit(f"downloader: configuration error: {exc}") from exc


def _register_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the HTTP API with its worker processes")
    _add_data_dir(p)
    p.add_argument("--port", type=int, default=None, help="port (default: port setting)")
    p.add_argument("--host", default=None, help="address to listen on (default: host setting)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: workers)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from downloader.runtime import keep_pandas_out

    keep_pandas_out()  # before pyarrow is used: 35 MB less (see downloader.runtime)
    from downloader.api.app import serve
    from downloader.logs import configure_logging

    settings = _settings(args, port=args.port, host=args.host, workers=args.workers)
    configure_logging(settings, role="serve")
    logging.getLogger("downloader").debug("logging as %s", settings.log_format)
    asyncio.run(serve(settings))
    return 0


def _register_worker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "worker",
        help="run a Celery worker that builds archives (dispatcher: celery)",
        description="Run a Celery worker consuming archive builds from the broker "
        "(celery_broker_url, else redis_url). Same as `celery -A downloader.dispatch.celery_app "
        "worker`, with the queue and options this service needs.",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="builds run at once (default: the workers setting)",
    )
    p.add_argument("--loglevel", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument(
        "--pool", default="prefork", choices=("prefork", "solo", "threads"), help="Celery pool"
    )
    p.add_argument("--hostname", default=None, help="worker node name (default: celery@host)")
    p.add_argument(
        "--queues",
        default="small,large",
        type=_queue_list,
        help="the queues this worker consumes, comma-separated: small (jobs under "
        "large_job_records records), large, or both (default: small,large). Keep some "
        "workers on small alone so small downloads never wait behind large ones",
    )
    p.set_defaults(func=_worker)


def _queue_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(q.strip() for q in text.split(",") if q.strip()))
    wrong = [q for q in names if q not in ("small", "large")]
    if not names or wrong:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give small, large or small,large (not {', '.join(wrong) or 'nothing'})"
        )
    return names


def _worker(args: argparse.Namespace) -> int:
    _settings(args)  # a bad configuration stops here with a clear message
    from downloader.runtime import keep_pandas_out

    keep_pandas_out()  # before the tasks import pyarrow (see downloader.runtime)
    from downloader.dispatch.celery_app import run_worker

    try:
        run_worker(
            concurrency=args.concurrency,
            loglevel=args.loglevel,
            pool=args.pool,
            hostname=args.hostname,
            queues=args.queues,
        )
    except ConfigError as exc:  # e.g. the S3 bucket is missing and s3_create_bucket is off
        raise SystemExit(f"downloader: configuration error: {exc}") from exc
    return 0


def _register_cleanup(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cleanup",
        help="delete expired archives and mark their jobs expired; under Celery, queue again "
        "the jobs whose worker died",
    )
    _add_data_dir(p)
    p.set_defaults(func=_cleanup)


def _cleanup(args: argparse.Namespace) -> int:
    from downloader.backends import make_context
    from downloader.service.downloads import cleanup_expired

    settings = _settings(args)
    ctx = make_context(settings)
    expired = cleanup_expired(ctx)
    print(f"{len(expired)} expired archive(s) deleted")
    for job_id in expired:
        print(f"  {job_id}")
    if settings.dispatcher == "celery":
        # The embedded dispatcher recovers its own jobs when serve starts; under Celery a
        # job whose worker died is queued again here (serve also does it on its own).
        from downloader.build import redispatch_unclaimed, requeue_stale
        from downloader.dispatch import make_dispatcher

        dispatcher = make_dispatcher(settings)
        requeued = requeue_stale(ctx, dispatcher)
        print(f"{len(requeued)} job(s) whose worker died queued again")
        for job_id in requeued:
            print(f"  {job_id}")
        resent = redispatch_unclaimed(ctx, dispatcher)
        print(f"{len(resent)} job(s) no worker took sent again")
        for job_id in resent:
            print(f"  {job_id}")
    return 0


def _register_fetch(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fetch",
        help="request a download from a server, wait for it and save it",
        description="Submit a query, show progress while the archive is built, download it "
        "with resume, and verify its sha256 when the server states one. Works against this "
        "service and against iDigBio (--server https://api.idigbio.org).",
    )
    p.add_argument("rq", help='record query as JSON, e.g. \'{"genus": "acer"}\' ("" for none)')
    p.add_argument("--mq", default=None, help="media record query as JSON")
    p.add_argument("--server", default="http://localhost:8080", help="service base URL")
    p.add_argument("--email", default=None, help="also email this address when ready")
    p.add_argument("-o", "--output", default=None, help="file to write (default: server's name)")
    p.add_argument(
        "--form",
        default=None,
        help="dwca-csv (default), dwca-tsv, dwca-gbif, parquet, csv, tsv, simple-csv, "
        "simple-parquet",
    )
    p.add_argument("--core-type", default=None, help="records (default), mediarecords, ...")
    p.add_argument("--force", action="store_true", help="build afresh even if a copy exists")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between status polls")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_fetch)


def _fetch(args: argparse.Namespace) -> int:
    from downloader.fetch import FetchError, fetch

    params: dict[str, str] = {}
    if args.rq:
        params["rq"] = args.rq
    for key, value in (("mq", args.mq), ("form", args.form), ("core_type", args.core_type)):
        if value:
            params[key] = value
    if args.email:
        params["email"] = args.email
    if args.force:
        params["force"] = "true"
    try:
        path = fetch(
            args.server,
            params,
            output=args.output,
            poll_seconds=args.poll,
            timeout=args.timeout,
            progress=None if args.quiet else sys.stderr,
        )
    except FetchError as exc:
        print(f"downloader fetch: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _not_built(args: argparse.Namespace) -> int:
    print(f"downloader {args.command}: not available in this build", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``downloader`` console script."""
    args = build_parser().parse_args(argv)
    func: Command = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
