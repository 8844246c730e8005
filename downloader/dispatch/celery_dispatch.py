"""Dispatch through Celery: the API process only puts the job id on the Redis queue."""

from __future__ import annotations

from downloader.config import Settings
from downloader.dispatch.routing import queue_for


class CeleryDispatcher:
    """:class:`~downloader.interfaces.Dispatcher` that enqueues ``downloader.build_archive``.

    The job is already saved in the job store when :meth:`dispatch` runs (a worker that
    picks the message up at once must find it). The task is sent by name, so the API process
    needs the broker but not the build code's imports.
    """

    def __init__(self, settings: Settings) -> None:
        from downloader.dispatch.celery_app import make_celery

        self.settings = settings
        self.app = make_celery(settings)

    def dispatch(self, job_id: str, *, records: int | None = None) -> None:
        """Queue the build of ``job_id`` on the small or the large queue (by ``records``,
        see :mod:`downloader.dispatch.routing`). A retry of the task stays on its queue."""
        self.app.send_task(
            "downloader.build_archive", args=[job_id], queue=queue_for(self.settings, records)
        )

    def ping(self) -> bool:
        """Whether the broker accepts connections (for health checks)."""
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1)
            return True
        except Exception:  # any broker error means "not healthy"
            return False
