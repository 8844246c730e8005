"""The download resource: ask for an archive, read its status, count a query first.

``/v2/download`` (iDigBio's API), ``/`` (csv.idigbio.org's shape) and ``/v2/count``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from downloader.api.base import BaseHandler, ParamsHandler
from downloader.service import downloads as service


class DownloadHandler(ParamsHandler):
    """``GET|POST /v2/download``: ask for an archive; answers with its status (HTTP 200)."""

    async def get(self) -> None:
        """Start (or reuse) a download from query-string parameters."""
        await self._request(self.params())

    async def post(self) -> None:
        """Start (or reuse) a download from a form or JSON body."""
        await self._request(self.params())

    async def _request(self, params: dict[str, Any]) -> None:
        email = params.pop("email", None)
        source = params.pop("source", None)
        force = params.pop("force", None)
        doc = await self.run(
            service.request_download,
            params,
            email=email,
            source=None if source is None else str(source),
            force=force,
            base_url=self.base_url,
            caller=self.caller(),
        )
        metrics = self.application.settings.get("metrics")
        if metrics is not None and "cancel_token" in doc:  # only a new job's answer has it
            metrics.jobs_created.labels("download").inc()
        self.write_json(doc)


class IndexHandler(DownloadHandler):
    """``GET|POST /``: the original csv.idigbio.org shape (``?query=...``), or a short
    description of the service when called without parameters."""

    async def get(self) -> None:
        """A download when parameters are given, else what the service offers."""
        params = self.params()
        if not params:
            if "text/html" in self.request.headers.get("Accept", ""):
                # A browser: the web page. Scripts (Accept: */* or JSON) get the JSON.
                self.redirect("/portal/", status=303)
                return
            self.write_json(self._about())
            return
        await self._request(params)

    async def post(self) -> None:
        """A download from a form or JSON body."""
        await self._request(self.params())

    def _about(self) -> dict[str, Any]:
        base = self.base_url
        return {
            "service": "Darwin Core Archive download service (iDigBio-compatible)",
            "download": f"{base}/v2/download/?rq=" + quote('{"genus":"acer"}'),
            "status": f"{base}/v2/download/<id>",
            "count": f"{base}/v2/count?rq=" + quote('{"genus":"acer"}'),
            "portal": f"{base}/portal/",
            "fields": f"{base}/v2/fields",
            "health": f"{base}/healthz",
        }


class StatusHandler(BaseHandler):
    """``GET /v2/download/{id}`` and ``GET /status/{id}``: a job's status JSON.

    This is the endpoint portals poll, so it is the one place that departs from "blocking
    calls run on the thread pool": a job store that declares ``inline_reads`` (SQLite: a
    primary-key read of a local WAL file, tens of microseconds) is read on the IOLoop. The
    hand-off to the pool and back cost more than the read itself, and its threads contended
    with the IOLoop for the GIL (under the bench's status load, about a third of the
    server's time). Other stores (Redis: a network round trip) are still read on the pool.

    The body and its ETag come from :func:`downloader.service.status_response`, which reads
    the job's version every time and reuses the rendered response while it is unchanged.
    The ETag is the one Tornado computes from the body (so ``If-None-Match`` gives 304 as
    before); only the hashing of each response is saved.
    """

    _etag: str | None = None

    async def get(self, job_id: str) -> None:
        """The status, or 404 JSON for an unknown or malformed id."""
        if getattr(self.ctx.jobs, "inline_reads", False):
            rendered = service.status_response(
                self.ctx, job_id, base_url=self.base_url, cache=self.status_cache
            )
        else:
            rendered = await self.run(
                service.status_response, job_id, base_url=self.base_url, cache=self.status_cache
            )
        self._etag = rendered.etag
        self.finish(rendered.body)

    def compute_etag(self) -> str | None:
        """The rendered response's ETag (a hash of the same bytes, computed once)."""
        return self._etag or super().compute_etag()


class CountHandler(ParamsHandler):
    """``GET|POST /v2/count``: how many records and media records a query matches."""

    async def get(self) -> None:
        """Counts for query-string parameters."""
        self.write_json(await self.run(service.count, self.params()))

    async def post(self) -> None:
        """Counts for a form or JSON body."""
        self.write_json(await self.run(service.count, self.params()))
