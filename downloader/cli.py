"""The ``downloader`` command line: serve, worker, ingest, count, cleanup, fetch.

Each subcommand parses its arguments here and calls one function elsewhere; nothing in this
module knows about SQL, HTTP internals or storage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

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


def _register_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]  # argparse's private generic
    p = sub.add_parser("serve", help="run the HTTP API with its worker processes")
    _add_data_dir(p)
    p.set_defaults(func=_not_built)


def _register_worker(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]  # argparse's private generic
    p = sub.add_parser("worker", help="run a Celery worker that builds archives")
    p.set_defaults(func=_not_built)


def _register_cleanup(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]  # argparse's private generic
    p = sub.add_parser("cleanup", help="delete expired archives and mark their jobs expired")
    _add_data_dir(p)
    p.set_defaults(func=_not_built)


def _register_fetch(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]  # argparse's private generic
    p = sub.add_parser("fetch", help="request a download from a server, wait for it and save it")
    p.set_defaults(func=_not_built)


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
