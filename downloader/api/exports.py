"""Recordset exports (the OCL-style export API): a recordset version's cached DwC-A.

- ``GET|HEAD|POST|DELETE /recordsets/{recordset}/{version}/export/``
- ``GET /recordsets/{recordset}/versions/``

Each handler parses, calls one function of :mod:`downloader.service.exports`, and maps the
answer to a status code; errors go through the base handler's ``write_error``.
"""

from __future__ import annotations

from downloader.api.archives import ArchiveHandler
from downloader.api.base import BaseHandler, DeletableHandler, request_token
from downloader.service import exports, jobs
from downloader.service.exports import ExportView
from downloader.storage.local import LocalStorage


class ExportHandler(ArchiveHandler, DeletableHandler):
    """``/recordsets/{recordset}/{version}/export/``: a version's cached DwC-A.

    GET: 200 with the zip (local storage; Range and ETag as for downloads) or 303 to a
    presigned URL (S3); 204 when there is no export, 208 while it is built, 404 for an
    unknown recordset or version, 405 for ``HEAD``. HEAD: the same without a body.
    POST: 202 when a build starts, 409 when one runs, 200 when it exists.
    DELETE (admin): 204, or 404 when there is no export.
    """

    def _form(self) -> str:
        # ``?form=parquet``: the version's files as Parquet; the DwC-A by default.
        return exports.export_form(self.get_query_argument("form", None))

    async def get(self, recordset: str, version: str | None = None) -> None:
        """The export, or a status code saying why not."""
        view = await self.run(exports.get_export, recordset, version or "", form=self._form())
        await self._answer(view, body=True)

    async def head(self, recordset: str, version: str | None = None) -> None:
        """As GET, headers only: a cheap availability check."""
        view = await self.run(exports.get_export, recordset, version or "", form=self._form())
        await self._answer(view, body=False)

    async def post(self, recordset: str, version: str) -> None:
        """Start the export's build unless it runs or exists."""
        outcome, view, token = await self.run(
            exports.request_export, recordset, version, base_url=self.base_url, form=self._form()
        )
        if outcome == "exists":
            self.write_json(view.to_dict(self.base_url))
            return
        assert view.job is not None  # a running or started export has a job
        doc = jobs.job_document(self.ctx, view.job, base_url=self.base_url)
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
        await self.run(jobs.require_admin, request_token(self))
        await self.run(exports.delete_export, recordset, version, form=self._form())
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
            doc = jobs.job_document(self.ctx, view.job, base_url=self.base_url)
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


class VersionsHandler(BaseHandler):
    """``GET /recordsets/{recordset}/versions/``: versions with lastUpdated and export state."""

    async def get(self, recordset: str) -> None:
        """The list, newest version first; 404 for an unknown recordset."""
        doc = await self.run(exports.list_versions, recordset, base_url=self.base_url)
        self.write_json(doc)
