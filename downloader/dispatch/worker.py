"""The entry point of a local worker process: build one job and exit.

:class:`~downloader.dispatch.local.LocalDispatcher` starts one such process per job; it runs
the same :func:`~downloader.build.build_archive` as a Celery task.
"""

from __future__ import annotations

import logging
import signal

from downloader.backends import make_context
from downloader.build import RetryLater, RunningElsewhere, build_archive
from downloader.config import Settings


def run_job(job_id: str, settings: Settings) -> int:
    """Entry point of a local worker process: build one job; the process exit code.

    0 when the job reached a final state or will be retried, 1 for an error outside the
    build itself (the dispatcher then treats the job as interrupted).
    """
    # Ctrl-C in serve's terminal reaches the whole process group: serve decides when a
    # build stops (after shutdown_grace_seconds), by terminating this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _configure_worker_logging()
    ctx = make_context(settings)
    try:
        build_archive(job_id, ctx)
    except (RetryLater, RunningElsewhere):
        # The dispatcher watches the job: it runs it again (after a transient error) or
        # its own process is still building it.
        return 0
    return 0


def _configure_worker_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s [worker] %(name)s: %(message)s"
        )
