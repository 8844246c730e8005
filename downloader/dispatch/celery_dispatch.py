"""Dispatch through Celery: the API process only puts the job id on the Redis queue."""

from __future__ import annotations

from downloader.config import Settings


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

    def dispatch(self, job_id: str) -> None:
        """Queue the build of ``job_id``."""
        self.app.send_task("downloader.build_archive", args=[job_id])

    def ping(self) -> bool:
        """Whether the broker accepts connections (for health checks)."""
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1)
            return True
        except Exception:  # any broker error means "not healthy"
            return False
