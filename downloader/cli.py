"""The ``downloader`` command line: serve, worker, ingest, count, cleanup, fetch.

Each subcommand parses its arguments here and calls one function elsewhere; nothing in this
module knows about SQL, HTTP internals or storage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from downloader.errors import ConfigError

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
        _register_serve,
        _register_worker,
        _register_cleanup,
        _register_fetch,
    ):
        register(sub)
    return parser


# --- ingest / count (record store) -------------------------------------------------------


def _register_ingest(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]  # argparse's private generic
    p = sub.add_parser("ingest", help="load Darwin Core Archives (or synthetic records) into the record store")
    _add_data_dir(p)
    p.set_defaults(func=_not_built)


def _register_count(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]  # argparse's private generic
    p = sub.add_parser("count", help="count records and media records matching a query")
    _add_data_dir(p)
    p.set_defaults(func=_not_built)


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

    from downloader.app import serve

    settings = _settings(args, port=args.port, host=args.host, workers=args.workers)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(settings))
    return 0


def _register_worker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "worker",
        help="run a Celery worker that builds archives (dispatcher: celery)",
        description="Run a Celery worker consuming archive builds from the broker "
        "(celery_broker_url, else redis_url). Same as `celery -A downloader.celery_app "
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
    p.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    _settings(args)  # a bad configuration stops here with a clear message
    from downloader.celery_app import run_worker

    run_worker(
        concurrency=args.concurrency, loglevel=args.loglevel, pool=args.pool, hostname=args.hostname
    )
    return 0


def _register_cleanup(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cleanup", help="delete expired archives and mark their jobs expired")
    _add_data_dir(p)
    p.set_defaults(func=_cleanup)


def _cleanup(args: argparse.Namespace) -> int:
    from downloader.backends import make_context
    from downloader.service import cleanup_expired

    expired = cleanup_expired(make_context(_settings(args)))
    print(f"{len(expired)} expired archive(s) deleted")
    for job_id in expired:
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
    p.add_argument("--form", default=None, help="dwca-csv (default), dwca-tsv, csv or tsv")
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
