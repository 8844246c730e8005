"""HTTP handlers of recordset exports, the jobs resource and cancel (Tornado only).

Routes (registered in :func:`downloader.app.make_app`):

- ``GET|HEAD|POST|DELETE /recordsets/{recordset}/{version}/export/``
- ``GET /recordsets/{recordset}/versions/``
- ``GET|DELETE /v1/jobs/{id}``
- ``DELETE /v2/download/{id}`` (beside the status ``GET``)

Each parses, calls one function of :mod:`downloader.exports` or :mod:`downloader.jobs_api`,
and maps the answer to a status code; errors go through the base handler's ``write_error``.
"""

from __future__ import annotations

from typing import Any

from downloader import exports, handlers, jobs_api
from downloader.exports import ExportView
from downloader.storage.local import LocalStorage


def _request_token(handler: handlers.BaseHandler) -> str | None:
    """The caller's token: ``Authorization: Bearer <t>``, ``X-Admin-Token: <t>`` or
    ``?token=<t>`` (in that order)."""
    auth = handler.request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    admin = handler.request.headers.get("X-Admin-Token", "").strip()
    if admin:
        return admin
    query = handler.get_query_argument("token", default="") or ""
    return query.strip() or None


class _WithDelete(handlers.BaseHandler):
    """CORS that also allows DELETE and the token headers."""

    def set_default_headers(self) -> None:
        """The base CORS headers, widened for DELETE with a token."""
        super().set_default_headers()
        self.set_header("Access-Control-Allow-Methods", "GET, HEAD, POST, DELETE, OPTIONS")
        self.set_header(
            "Access-Control-Allow-Headers",
            "Content-Type, Range, If-Range, If-None-Match, Authorization, X-Admin-Token",
        )


class ExportHandler(handlers.ArchiveHandler, _WithDelete):
    """``/recordsets/{recordset}/{version}/export/``: a version's cached DwC-A.

    GET: 200 with the zip (local storage; Range and ETag as for downloads) or 303 to a
    presigned URL (S3); 204 when there is no export, 208 while it is built, 404 for an
    unknown recordset or version, 405 for ``HEAD``. HEAD: the same without a body.
    POST: 202 when a build starts, 409 when one runs, 200 when it exists.
    DELETE (admin): 204, or 404 when there is no export.
    """

    async def get(self, recordset: str, version: str | None = None) -> None:
        """The export, or a status code saying why not."""
        view = await self.run(exports.get_export, recordset, version or "")
        await self._answer(view, body=True)

    async def head(self, recordset: str, version: str | None = None) -> None:
        """As GET, headers only: a cheap availability check."""
        view = await self.run(exports.get_export, recordset, version or "")
        await self._answer(view, body=False)

    async def post(self, recordset: str, version: str) -> None:
        """Start the export's build unless it runs or exists."""
        outcome, view, token = await self.run(
            exports.request_export, recordset, version, base_url=self.base_url
        )
        if outcome == "exists":
            self.write_json(view.to_dict(self.base_url))
            return
        assert view.job is not None  # a running or started export has a job
        doc = jobs_api.job_document(self.ctx, view.job, base_url=self.base_url)
        if outcome == "running":
            self.write_json(
                {
                    "error": f"the export of version {view.version} of recordset "
                    f"{view.recordset} is already being built",
                    "name": "ExportRunning",
                    "status": 409,
                    "job": doc,
                },
                status=409,
            )
            return
        doc["cancel_token"] = token
        self.set_header("Location", f"{self.base_url}/v1/jobs/{view.job.id}")
        self.write_json(doc, status=202)

    async def delete(self, recordset: str, version: str) -> None:
        """Delete the export (admin token required)."""
        await self.run(jobs_api.require_admin, _request_token(self))
        await self.run(exports.delete_export, recordset, version)
        self.set_status(204)
        self.finish()

    async def _answer(self, view: ExportView, *, body: bool) -> None:
        if view.state == "building":
            assert view.job is not None  # building means a queued or running job
            self.set_header("Location", f"{self.base_url}/v1/jobs/{view.job.id}")
            self.set_status(208)
            if not body:
                self.finish()
                return
            doc = jobs_api.job_document(self.ctx, view.job, base_url=self.base_url)
            self.write_json(doc, status=208)
            return
        if view.state != "ready" or view.job is None:
            self.set_status(204)
            self.clear_header("Content-Type")
            self.finish()
            return
        if isinstance(self.ctx.storage, LocalStorage):
            # The same resumable sending as /archives/ (Range, ETag, Content-Disposition
            # with the export's file name).
            await self._send(view.job.id, body=body)
            return
        key = view.job.archive_key or f"{view.job.id}.zip"
        location = self.ctx.storage.url(key, base_url=self.base_url, filename=view.filename)
        self.set_header("Content-Disposition", f'attachment; filename="{view.filename}"')
        self.set_status(303)
        self.set_header("Location", location)
        self.clear_header("Content-Type")
        self.finish()


class VersionsHandler(handlers.BaseHandler):
    """``GET /recordsets/{recordset}/versions/``: versions with lastUpdated and export state."""

    async def get(self, recordset: str) -> None:
        """The list, newest version first; 404 for an unknown recordset."""
        doc = await self.run(exports.list_versions, recordset, base_url=self.base_url)
        self.write_json(doc)


class JobHandler(_WithDelete):
    """``GET|DELETE /v1/jobs/{id}``: any download or export job; cancel it."""

    async def get(self, job_id: str) -> None:
        """200 with the job while it is known, 404 JSON otherwise."""
        self.write_json(await self.run(jobs_api.get_job, job_id, base_url=self.base_url))

    async def delete(self, job_id: str) -> None:
        """Cancel: 200 (cancelled), 202 (stopping), 401, 403, 404 or 409."""
        await _cancel(self, job_id)


class DownloadStatusHandler(handlers.StatusHandler, _WithDelete):
    """``GET|DELETE /v2/download/{id}``: the status, and cancel."""

    async def delete(self, job_id: str) -> None:
        """Cancel: 200 (cancelled), 202 (stopping), 401, 403, 404 or 409."""
        await _cancel(self, job_id)


async def _cancel(handler: handlers.BaseHandler, job_id: str) -> None:
    status, doc = await handler.run(
        jobs_api.cancel_job, job_id, token=_request_token(handler), base_url=handler.base_url
    )
    handler.write_json(doc, status=status)


def routes(args: dict[str, Any]) -> list[Any]:
    """The routes of this module, for :func:`downloader.app.make_app` (before its own, so
    ``DELETE /v2/download/{id}`` reaches :class:`DownloadStatusHandler`)."""
    ident = r"([^/]+)"
    return [
        (rf"/recordsets/{ident}/versions/?", VersionsHandler, args),
        (rf"/recordsets/{ident}/{ident}/export/?", ExportHandler, args),
        (rf"/v1/jobs/{ident}/?", JobHandler, args),
        (rf"/v2/download/{ident}/?", DownloadStatusHandler, args),
    ]
