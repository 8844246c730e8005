"""The jobs resource: any download or export job by id, and cancelling it.

- ``GET|DELETE /v1/jobs/{id}``
- ``DELETE /v2/download/{id}`` (beside the status ``GET``)

Each handler parses, calls one function of :mod:`downloader.service.jobs`, and writes its
answer; errors go through the base handler's ``write_error``.
"""

from __future__ import annotations

from downloader.api.base import BaseHandler, DeletableHandler, request_token
from downloader.api.downloads import StatusHandler
from downloader.service import jobs


class JobHandler(DeletableHandler):
    """``GET|DELETE /v1/jobs/{id}``: any download or export job; cancel it."""

    async def get(self, job_id: str) -> None:
        """200 with the job while it is known, 404 JSON otherwise."""
        self.write_json(await self.run(jobs.get_job, job_id, base_url=self.base_url))

    async def delete(self, job_id: str) -> None:
        """Cancel: 200 (cancelled), 202 (stopping), 401, 403, 404 or 409."""
        await _cancel(self, job_id)


class DownloadStatusHandler(StatusHandler, DeletableHandler):
    """``GET|DELETE /v2/download/{id}``: the status, and cancel."""

    async def delete(self, job_id: str) -> None:
        """Cancel: 200 (cancelled), 202 (stopping), 401, 403, 404 or 409."""
        await _cancel(self, job_id)


async def _cancel(handler: BaseHandler, job_id: str) -> None:
    status, doc = await handler.run(
        jobs.cancel_job, job_id, token=request_token(handler), base_url=handler.base_url
    )
    handler.write_json(doc, status=status)
