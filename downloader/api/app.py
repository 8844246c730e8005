"""The Tornado application and ``downloader serve``: routes, the HTTP server, the local
workers and the periodic expiry cleanup, all in one process."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import tornado.httpserver
import tornado.web
from tornado.ioloop import IOLoop, PeriodicCallback

from downloader.api import (
    archives,
    base,
    downloads,
    exports,
    gbif,
    health,
    jobs,
    openapi,
    portal,
)
from downloader.api.metrics import Metrics, MetricsHandler
from downloader.backends import Context, make_context
from downloader.build import redispatch_unclaimed, requeue_stale
from downloader.config import Settings
from downloader.dispatch import make_dispatcher
from downloader.interfaces import Dispatcher
from downloader.service import downloads as service

log = logging.getLogger(__name__)
access_log = logging.getLogger("tornado.access")

_ID = r"([^/]+)"


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's ``log_function``: one access-log line per request, at DEBUG when it
    succeeded (2xx, 3xx), INFO for a client error (4xx), WARNING for a server error (5xx).

    Formatting a line for every status poll cost several percent of the server's time under
    load while nobody reads them at INFO; the level is checked before any formatting.
    """
    status = handler.get_status()
    application = getattr(handler, "application", None)
    metrics = application.settings.get("metrics") if application is not None else None
    if metrics is not None:
        metrics.observe(handler.request.method or "GET", status, handler.request.request_time())
    if status < 400:
        level = logging.DEBUG
    elif status < 500:
        level = logging.INFO
    else:
        level = logging.WARNING
    if not access_log.isEnabledFor(level):
        return
    request = handler.request
    access_log.log(
        level,
        "%d %s %s (%s) %.2fms",
        status,
        request.method,
        base.redact_uri(request.uri or ""),
        request.remote_ip,
        1000.0 * request.request_time(),
    )


def make_app(ctx: Context, *, executor: Executor | None = None) -> tornado.web.Application:
    """The application with every route; ``executor`` runs blocking service calls."""
    args: dict[str, Any] = {
        "ctx": ctx,
        "executor": executor or ThreadPoolExecutor(16, thread_name_prefix="downloader-http"),
        "status_cache": service.StatusCache(),
    }
    metrics = Metrics(ctx)
    routes: list[Any] = [
        # The web page (api/portal.py) and the small resources it reads.
        (r"/portal", tornado.web.RedirectHandler, {"url": "/portal/"}),
        (r"/portal/", portal.PageHandler, args),
        (r"/portal/config\.json", portal.ConfigHandler, args),
        (
            r"/portal/static/(.*)",
            portal.StaticHandler,
            {"path": str(portal.STATIC_DIR), "tile_url": ctx.settings.map_tile_url},
        ),
        (r"/favicon\.ico", tornado.web.RedirectHandler, {"url": "/portal/static/portal/icon.svg"}),
        (r"/v2/fields/?", portal.FieldsHandler, args),
        (r"/v2/estimates/?", portal.EstimatesHandler, args),
        (r"/recordsets/?", portal.RecordsetsHandler, args),
        # GBIF's occurrence download API (api/gbif.py), for pygbif and rgbif.
        (r"/v1/occurrence/download/request/?", gbif.RequestHandler, args),
        (r"/v1/occurrence/download/request/([^/]+?)(?:\.zip)?", gbif.FileHandler, args),
        (rf"/v1/occurrence/download/user/{_ID}/?", gbif.UserHandler, args),
        (rf"/v1/occurrence/download/{_ID}/?", gbif.DownloadHandler, args),
        # Recordset exports (api/exports.py) and the jobs resource (api/jobs.py); the
        # status route below also takes DELETE there, to cancel.
        (rf"/recordsets/{_ID}/versions/?", exports.VersionsHandler, args),
        (rf"/recordsets/{_ID}/{_ID}/export/?", exports.ExportHandler, args),
        (rf"/v1/jobs/{_ID}/?", jobs.JobHandler, args),
        # Downloads (api/downloads.py), iDigBio's paths.
        (r"/", downloads.IndexHandler, args),
        (r"/v2/download/?", downloads.DownloadHandler, args),
        (rf"/v2/download/{_ID}/?", jobs.DownloadStatusHandler, args),
        (rf"/status/{_ID}/?", downloads.StatusHandler, args),
        (r"/v2/count/?", downloads.CountHandler, args),
        # Finished archives (api/archives.py).
        (rf"/archives/{_ID}/?", archives.ArchiveHandler, args),
        (rf"/archives/{_ID}/([^/]+)", archives.ArchiveHandler, args),
        (r"/healthz", health.HealthHandler, args),
        (r"/metrics", MetricsHandler, {**args, "metrics": metrics}),
        (r"/readyz", health.ReadyHandler, args),
        # This API's OpenAPI 3.1 document (api/openapi.py).
        (r"/openapi\.json", openapi.OpenAPIHandler, args),
    ]
    return tornado.web.Application(
        routes,
        default_handler_class=base.NotFoundHandler,
        default_handler_args=args,
        compress_response=False,  # archives are already deflated; JSON is small
        log_function=log_request,
        metrics=metrics,
    )


def make_server(app: tornado.web.Application, settings: Settings) -> tornado.httpserver.HTTPServer:
    """An HTTP server for ``app``.

    Its own body and head limits are far above ``max_body_bytes`` and
    :func:`~downloader.api.base.url_limit` because the handlers enforce those themselves
    (413, 414 and 431 JSON answers saying to POST); Tornado's limits would just drop the
    connection. A client that sends its head or body too slowly is cut off after
    ``client_timeout_seconds``.
    """
    return tornado.httpserver.HTTPServer(
        app,
        max_body_size=max(settings.max_body_bytes * 4, 16 * 1024 * 1024),
        max_header_size=max(base.SERVER_HEAD_BYTES, 2 * base.url_limit(settings)),
        idle_connection_timeout=settings.client_timeout_seconds,
        body_timeout=settings.client_timeout_seconds,
        # remote_ip (the per-client limits, the access log) from X-Real-IP/X-Forwarded-For
        # only when a proxy that overwrites them is in front (trust_forwarded_for).
        xheaders=settings.trust_forwarded_for,
    )


def _run_cleanup(ctx: Context) -> None:
    try:
        expired = service.cleanup_expired(ctx)
        if expired:
            log.info("cleanup: %d archive(s) expired", len(expired))
    except Exception:
        # The next run tries again; a failed cleanup must never stop the server.
        log.exception("cleanup of expired archives failed")


def _run_requeue(ctx: Context, dispatcher: Dispatcher) -> None:
    try:
        requeue_stale(ctx, dispatcher)
        redispatch_unclaimed(ctx, dispatcher)
    except Exception:
        # The next sweep tries again (the job store may be unreachable for a moment).
        log.exception("requeue of jobs whose worker died failed")


def _shown_host(host: str) -> str:
    """A host to print in a URL someone can open (a wildcard address is this machine)."""
    if host in ("", "0.0.0.0", "::"):
        return "localhost"
    return f"[{host}]" if ":" in host else host


def requeue_interval(settings: Settings) -> float:
    """Seconds between sweeps for jobs whose worker died: half the staleness window, so a
    dead worker's job is queued again at most 1.5 windows after its last heartbeat."""
    return max(0.5, settings.stale_job_seconds / 2)


async def serve(settings: Settings) -> None:
    """Run the HTTP API, the worker pool (local dispatcher) and the cleanup loop until
    SIGINT or SIGTERM."""
    from downloader.dispatch.local import LocalDispatcher
    from downloader.storage.local import LocalStorage

    dispatcher = make_dispatcher(settings)
    ctx = make_context(settings, dispatcher=dispatcher)
    if isinstance(ctx.storage, LocalStorage) and isinstance(dispatcher, LocalDispatcher):
        # No build runs yet, so every temporary file belongs to a build that died.
        removed = ctx.storage.remove_stale_temporaries()
        if removed:
            log.info("removed %d partial archive(s) left by an interrupted run", removed)
    ensure_bucket = getattr(ctx.storage, "ensure_bucket", None)
    if settings.s3_create_bucket and ensure_bucket is not None:
        try:
            ensure_bucket()
        except Exception as exc:  # S3 down at start: /readyz says so; serve still answers
            log.warning("could not create the S3 bucket %s: %s", settings.s3_bucket, exc)
    executor = ThreadPoolExecutor(16, thread_name_prefix="downloader-http")
    app = make_app(ctx, executor=executor)
    server = make_server(app, settings)
    server.listen(settings.port, address=settings.host)
    if isinstance(dispatcher, LocalDispatcher):
        dispatcher.start()
    loop = IOLoop.current()
    cleanup = PeriodicCallback(
        lambda: loop.run_in_executor(executor, _run_cleanup, ctx),
        max(1.0, settings.cleanup_interval_seconds) * 1000,
    )
    if settings.cleanup_interval_seconds > 0:
        loop.run_in_executor(executor, _run_cleanup, ctx)
        cleanup.start()
    # The first count would otherwise wait for the record source's per-process state.
    loop.run_in_executor(executor, ctx.warm_source)
    # Under Celery nobody watches the workers' processes: jobs whose heartbeat went stale
    # are queued again from here (see downloader.build.recovery). The local dispatcher
    # watches its own processes.
    requeue = PeriodicCallback(
        lambda: loop.run_in_executor(executor, _run_requeue, ctx, dispatcher),
        requeue_interval(settings) * 1000,
    )
    if not isinstance(dispatcher, LocalDispatcher):
        requeue.start()
    stop = asyncio.Event()
    hurry = threading.Event()  # a second signal: stop waiting for running builds
    aio = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            hurry.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        aio.add_signal_handler(sig, on_signal)
    log.info(
        "serving on http://%s:%d (data in %s, %s workers)",
        settings.host,
        settings.port,
        settings.data_path.resolve(),
        settings.workers if isinstance(dispatcher, LocalDispatcher) else "celery",
    )
    print(f"downloader: serving on http://{settings.host}:{settings.port}/", flush=True)
    public = settings.base_url.rstrip("/") or f"http://{_shown_host(settings.host)}:{settings.port}"
    print(f"downloader: the web page is at {public}/portal/", flush=True)
    try:
        await stop.wait()
    finally:
        cleanup.stop()
        requeue.stop()
        server.stop()  # no new connections, so no new jobs
        if isinstance(dispatcher, LocalDispatcher):
            grace = settings.shutdown_grace_seconds
            log.info(
                "shutting down: waiting up to %g s for %d running build(s) (a second signal "
                "stops them at once; they are handed back and run again at the next start)",
                grace,
                len(dispatcher.running),
            )
            await aio.run_in_executor(
                None, functools.partial(dispatcher.stop, grace=grace, hurry=hurry)
            )
        else:
            log.info("shutting down")
        executor.shutdown(wait=False, cancel_futures=True)
