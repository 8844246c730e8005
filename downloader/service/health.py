"""Readiness: can this process do its work? Each dependency is checked and reported.

``/healthz`` (liveness) only says the process answers and reads its job store; ``/readyz``
runs :func:`checks` and reports each of them with a reason, so an orchestrator takes a
process out of rotation while its search cluster, bucket or broker is down, and an operator
sees which one. Each check is a blocking call that raises, saying why, when its dependency
cannot be used; the API runs them in parallel, each with a time limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from downloader.backends import Context

#: The id read to prove the job store answers (no job has it).
_NO_JOB = "00000000-0000-0000-0000-000000000000"


def job_store(ctx: Context) -> dict[str, Any]:
    """Read the job store once (liveness needs no more); its kind."""
    ctx.jobs.get(_NO_JOB)
    return {"kind": ctx.settings.job_store}


def _record_source(ctx: Context) -> dict[str, Any]:
    src = ctx.source()
    version = src.data_version()
    detail: dict[str, Any] = {"kind": ctx.settings.record_source, "data_version": version}
    total = getattr(src, "total_records", None)
    if callable(total):
        detail["records"] = int(total())
    if version == "0":
        # Up, but nothing was ever loaded: every download would be empty.
        target = " --target elasticsearch" if detail["kind"] == "elasticsearch" else ""
        raise LookupError(
            "the record source holds no data yet (data_version 0); load it with "
            f"`downloader ingest{target}`"
        )
    return detail


def _storage(ctx: Context) -> dict[str, Any]:
    ctx.storage.check()
    detail: dict[str, Any] = {"kind": ctx.settings.storage}
    if ctx.settings.storage == "s3":
        detail["bucket"] = ctx.settings.s3_bucket
    return detail


def _dispatcher(ctx: Context) -> dict[str, Any]:
    dispatcher = ctx.dispatcher
    if dispatcher is None:
        raise LookupError("this process has no dispatcher: it cannot start builds")
    ping = getattr(dispatcher, "ping", None)
    if callable(ping) and not ping():
        raise ConnectionError("the Celery broker does not accept connections")
    detail: dict[str, Any] = {"kind": ctx.settings.dispatcher}
    running = getattr(dispatcher, "running", None)
    if isinstance(running, list):
        detail["running"] = len(running)
        detail["workers"] = ctx.settings.workers
    return detail


def checks(ctx: Context) -> dict[str, Callable[[], dict[str, Any]]]:
    """The readiness checks of this process, by name; each returns details or raises."""
    return {
        "job_store": lambda: job_store(ctx),
        "record_source": lambda: _record_source(ctx),
        "storage": lambda: _storage(ctx),
        "dispatcher": lambda: _dispatcher(ctx),
    }
