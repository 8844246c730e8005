"""Health checks for load balancers and orchestrators."""

from __future__ import annotations

from tornado.ioloop import IOLoop

from downloader.api.base import BaseHandler


class HealthHandler(BaseHandler):
    """``GET /healthz``: the process answers and can read its job store."""

    async def get(self) -> None:
        """200 ``{"ok": true}``, or an error JSON when the job store cannot be read."""
        await IOLoop.current().run_in_executor(
            self.executor, self.ctx.jobs.get, "00000000-0000-0000-0000-000000000000"
        )
        self.write_json({"ok": True})
