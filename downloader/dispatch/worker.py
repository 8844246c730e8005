"""The local worker processes: long-lived, warm, one build at a time.

:class:`~downloader.dispatch.local.LocalDispatcher` keeps ``workers`` of them, started with
``serve``; each imports the build's libraries once (pyarrow, DuckDB, the archive writer) and
then builds the jobs it is handed over a pipe, so a small download starts in milliseconds
instead of paying an interpreter's start-up. A worker retires itself after
``worker_max_jobs`` builds or when its memory grows past ``worker_max_rss_mb``; the
dispatcher starts a fresh one. It runs the same :func:`~downloader.build.build_archive` as a
Celery task.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from downloader.config import Settings
from downloader.logs import configure_logging
from downloader.runtime import keep_pandas_out

if TYPE_CHECKING:
    from downloader.backends import Context

# The build's libraries are imported inside the functions: a worker process imports this
# module first (to unpickle its target), and pyarrow must not meet pandas before
# serve_jobs has kept pandas out (see downloader.runtime).

log = logging.getLogger(__name__)

#: Builds one job in this process: (job id, settings) -> exit code.
Runner = Callable[[str, Settings], int]


def run_job(job_id: str, settings: Settings, ctx: Context | None = None) -> int:
    """Build one job (with ``ctx``, else a new context); 0 when it reached a final state or
    will be retried."""
    from downloader.backends import make_context
    from downloader.build import RetryLater, RunningElsewhere, build_archive

    ctx = ctx or make_context(settings)
    try:
        build_archive(job_id, ctx)
    except (RetryLater, RunningElsewhere):
        # The dispatcher watches the job: it runs it again (after a transient error) or
        # its own process is still building it.
        return 0
    return 0


def current_rss_bytes() -> int:
    """This process's resident memory now (Linux's /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:  # noqa: PTH123  (a proc file)
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _warm_up() -> None:
    """Import what every build needs (pyarrow, DuckDB through the embedded source, the
    archive writer), so the first job does not pay for it."""
    import pyarrow  # noqa: F401

    import archive  # noqa: F401
    import downloader.build.plan
    import downloader.sources.duckdb  # noqa: F401


def _lower_priority(nice: int) -> None:
    """Let serve's HTTP API go first: with 200 clients polling while 20 downloads built on
    two cores, the status p99 was 850 ms at equal priority and 40 ms with the workers at
    niceness 10 (``python -m bench --only load``). Builds lose nothing when the API is idle."""
    if nice > 0:
        try:
            os.nice(nice)
        except OSError as exc:  # not allowed here (a sandbox): build at serve's priority
            log.warning("could not lower the worker's priority by %d: %s", nice, exc)


def serve_jobs(conn: Connection, settings: Settings, runner: Runner = run_job) -> None:
    """A worker process's loop: receive a job id, build it, answer ``("done", job_id,
    retire)``; ``None`` ends the loop. Retires after ``worker_max_jobs`` builds or above
    ``worker_max_rss_mb`` (the dispatcher then starts a fresh worker)."""
    # Ctrl-C in serve's terminal reaches the whole process group: serve decides when a
    # build stops (after shutdown_grace_seconds), by terminating this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_pandas_out()
    configure_logging(settings, role="worker")
    _lower_priority(settings.worker_nice)
    _warm_up()
    from downloader.backends import make_context

    # One context for every build of this worker: its job store connection, record source
    # (whose caches are keyed by the store file's state) and storage are reused.
    ctx = make_context(settings) if runner is run_job else None
    if ctx is not None:
        # Before the first job, which would otherwise wait for it.
        ctx.warm_source()
    conn.send(("ready", os.getpid()))
    built = 0
    while True:
        try:
            job_id = conn.recv()
        except EOFError:
            return  # the dispatcher is gone
        if job_id is None:
            return
        try:
            if ctx is not None:
                run_job(job_id, settings, ctx)
            else:
                runner(job_id, settings)
        except Exception:
            log.exception("job %s: the build failed outside build_archive", job_id)
        built += 1
        rss = current_rss_bytes()
        retire = built >= settings.worker_max_jobs or (
            settings.worker_max_rss_mb > 0 and rss > settings.worker_max_rss_mb * 1024 * 1024
        )
        conn.send(("done", job_id, retire))
        if retire:
            log.info("worker %d retires after %d builds (%d MB)", os.getpid(), built, rss >> 20)
            return
