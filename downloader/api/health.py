"""Health checks for load balancers and orchestrators: liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

from tornado.ioloop import IOLoop

from downloader.api.base import BaseHandler
from downloader.service import health

#: Seconds each readiness check may take before it counts as failed.
CHECK_TIMEOUT_SECONDS = 5.0


class HealthHandler(BaseHandler):
    """``GET /healthz``: the process answers and can read its job store."""

    async def get(self) -> None:
        """200 ``{"ok": true}``, or an error JSON when the job store cannot be read."""
        await IOLoop.current().run_in_executor(self.executor, health.job_store, self.ctx)
        self.write_json({"ok": True})


class ReadyHandler(BaseHandler):
    """``GET /readyz``: every dependency checked (job store, record source, storage,
    dispatcher or broker), each reported with ``ok`` and details or the reason it failed;
    200 when all are ok, else 503 (with ``error`` naming the failed ones)."""

    async def get(self) -> None:
        """Run the checks in parallel, each within :data:`CHECK_TIMEOUT_SECONDS`."""
        loop = IOLoop.current()
        named = health.checks(self.ctx)

        async def run(check: Any) -> dict[str, Any]:
            try:
                detail = await asyncio.wait_for(
                    loop.run_in_executor(self.executor, check), CHECK_TIMEOUT_SECONDS
                )
            except TimeoutError:
                return {"ok": False, "error": f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"}
            except Exception as exc:  # each failure is reported, never raised
                return {"ok": False, "error": str(exc) or type(exc).__name__}
            return {"ok": True, **detail}

        results = await asyncio.gather(*(run(check) for check in named.values()))
        report = dict(zip(named, results, strict=True))
        failed = [name for name, result in report.items() if not result["ok"]]
        doc: dict[str, Any] = {"ok": not failed, "checks": report}
        if failed:
            doc["error"] = f"not ready: {', '.join(failed)} failed"
            doc["name"] = "NotReady"
            doc["status"] = 503  # the one error shape (error, status, name)
            self.set_header("Retry-After", "10")
        self.write_json(doc, status=503 if failed else 200)
