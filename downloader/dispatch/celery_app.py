"""The Celery application: broker, time limits and delivery guarantees for archive builds.

``celery -A downloader.dispatch.celery_app worker`` and ``downloader worker`` both use :data:`app`.
Settings come from :func:`downloader.config.load_settings` (``config.yaml`` and
``DOWNLOADER_*`` variables), so API processes and workers read one configuration.

Delivery, and why it is safe to lose a worker at any moment:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after
  the build finished, so a worker killed mid-build leaves its message to be delivered again.
- Redis has no real acknowledgements: an unacknowledged message returns to the queue once
  ``visibility_timeout`` has passed. It is derived from the hard time limit (limit + a tenth,
  at most a minute, so a running build is never handed out twice) and never below the job
  store's staleness window; with the documented six-hour limit that is about six hours.
  So the broker is not what brings a dead worker's job back: ``serve`` sweeps every half
  staleness window for STARTED jobs whose heartbeat went stale and queues them again
  (:mod:`downloader.build.recovery`), so such a job is built again within about
  ``stale_job_seconds`` + the sweep, whatever the time limit. When the message itself comes
  back later, the claim finds the job built (or being built) and nothing is done twice.
- A pool process killed mid-build (the OOM killer) makes Celery redeliver its message at
  once, while the heartbeat is still fresh: that delivery looks again one staleness window
  later, when it can claim the job, instead of acknowledging it and leaving the job STARTED
  (see ``tasks.build_archive``).
- ``worker_prefetch_multiplier = 1``: builds take minutes to hours; a worker must not hold
  queued messages that idle workers could start.
- The job store's claim decides whether a delivery builds anything, so duplicates are cheap.

Two queues (:mod:`downloader.dispatch.routing`): ``downloads`` for small jobs and
``downloads-large`` for jobs of at least ``large_job_records`` records; the dispatcher
picks one when it sends the job. A worker consumes both unless told otherwise
(``downloader worker --queues small``), so small downloads never wait behind large ones
where some workers build only small ones.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from downloader.config import Settings, load_settings
from downloader.dispatch.routing import QUEUE_NAMES, SMALL_QUEUE

#: The queue archive builds go to unless the dispatcher names one (small jobs).
QUEUE = SMALL_QUEUE


def time_limits(settings: Settings) -> tuple[int, int, int]:
    """(soft limit, hard limit, broker visibility timeout), in seconds.

    The soft limit leaves a tenth of the budget (at most a minute) to discard the partial
    upload and record the failure; the visibility timeout adds the same margin again on top
    of the hard limit and never falls below the staleness window plus that margin.
    """
    hard = int(settings.job_time_limit_seconds)
    margin = min(60, max(2, hard // 10))
    soft = max(1, hard - margin)
    visibility = max(hard + margin, int(settings.stale_job_seconds) + margin)
    return soft, hard, visibility


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery configuration for ``settings``."""
    soft, hard, visibility = time_limits(settings)
    broker = settings.celery_broker_url or settings.redis_url
    return {
        "broker_url": broker,
        # Results live in the job store; Celery's result backend would be a second truth.
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": QUEUE,
        # The large queue is named by the dispatcher and by `--queues`: Celery makes the
        # queues it is told of (task_create_missing_queues), so none is declared here.
        "task_create_missing_queues": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_time_limit": hard,
        "task_soft_time_limit": soft,
        "worker_prefetch_multiplier": 1,
        # One build per child process at a time; recycle children now and then so memory
        # fragmentation from large builds does not accumulate.
        "worker_max_tasks_per_child": 50,
        "broker_transport_options": {
            "visibility_timeout": visibility,
            # Sweep for messages of dead workers every few seconds instead of kombu's
            # default of about 100 s (10 s x throttle 10); the scan reads one sorted set.
            "unacked_restore_interval": max(1, min(10, visibility // 10)),
            "unacked_restore_throttle": 1,
        },
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
    }


def make_celery(settings: Settings | None = None) -> Celery:
    """A Celery app configured from ``settings`` (default: the environment's)."""
    settings = settings or load_settings()
    celery = Celery("downloader", include=["downloader.dispatch.tasks"])
    celery.conf.update(celery_config(settings))
    return celery


#: The application of ``celery -A downloader.dispatch.celery_app``.
app = make_celery()


def prepare_storage(settings: Settings) -> None:
    """S3 set-up when a worker starts: the bucket must exist (it is created when
    ``s3_create_bucket`` is on; otherwise a missing bucket stops the worker with a
    :class:`~downloader.errors.ConfigError` saying so, instead of builds failing one by
    one), then, best effort, the lifecycle rule that expires archives ``retention_days``
    after upload (explicit cleanup remains the main mechanism)."""
    if settings.storage != "s3":
        return
    import logging

    from downloader.errors import ConfigError
    from downloader.storage.s3 import S3Storage

    storage = S3Storage(
        settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        prefix=settings.s3_prefix,
        exports_prefix=settings.s3_exports_prefix,
    )
    if settings.s3_create_bucket:
        storage.ensure_bucket()
    else:
        try:
            storage.check()
        except FileNotFoundError as exc:
            raise ConfigError(f"{exc} (the worker cannot store archives without it)") from exc
    try:
        storage.apply_lifecycle(settings.retention_days)
    except Exception as exc:  # a missing permission must not stop the worker
        logging.getLogger(__name__).warning(
            "could not set the S3 lifecycle rule on %s (%s); expired archives are still "
            "deleted by cleanup",
            settings.s3_bucket,
            exc,
        )


def run_worker(
    *,
    concurrency: int | None = None,
    loglevel: str = "INFO",
    pool: str = "prefork",
    hostname: str | None = None,
    queues: tuple[str, ...] = ("small", "large"),
) -> None:
    """Run a Celery worker for archive builds in this process (``downloader worker``),
    consuming ``queues`` (``small``, ``large``: see :mod:`downloader.dispatch.routing`)."""
    settings = load_settings()
    names = [QUEUE_NAMES[q] for q in queues]
    prepare_storage(settings)
    argv = [
        "worker",
        f"--loglevel={loglevel}",
        f"--concurrency={concurrency or settings.workers}",
        f"--pool={pool}",
        f"--queues={','.join(names)}",
        # Builds are long; events and gossip between workers are of no use here.
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv)
