"""The one place where configuration picks an implementation for each port.

Vendor modules are imported inside the factories, so an embedded deployment never imports
elasticsearch, redis or boto3, and an at-scale one never opens DuckDB or SQLite. The
dispatcher, which runs builds and so sits above them, is made in :mod:`downloader.dispatch`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from downloader.config import Settings
from downloader.interfaces import Dispatcher, JobStore, Mailer, RecordSource, Storage

log = logging.getLogger(__name__)


def make_source(settings: Settings) -> RecordSource:
    """The record source named by ``record_source``."""
    if settings.record_source == "elasticsearch":
        from downloader.sources.elasticsearch import ElasticsearchSource

        return ElasticsearchSource.from_settings(settings)
    from downloader.sources.duckdb import DuckDBSource

    return DuckDBSource(settings.data_path / "records.duckdb")


def make_job_store(settings: Settings) -> JobStore:
    """The job store named by ``job_store``."""
    if settings.job_store == "redis":
        from downloader.jobs.redis import RedisJobStore

        return RedisJobStore(settings.redis_url, stale_after_seconds=settings.stale_job_seconds)
    from downloader.jobs.sqlite import SQLiteJobStore

    return SQLiteJobStore(
        settings.data_path / "jobs.sqlite3", stale_after_seconds=settings.stale_job_seconds
    )


def make_storage(settings: Settings) -> Storage:
    """The archive storage named by ``storage``."""
    if settings.storage == "s3":
        from downloader.storage.s3 import S3Storage

        return S3Storage(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            prefix=settings.s3_prefix,
            exports_prefix=settings.s3_exports_prefix,
            public_base_url=settings.s3_public_base_url,
            presign_seconds=settings.s3_presign_seconds,
        )
    from downloader.storage.local import LocalStorage

    return LocalStorage(settings.data_path / "archives")


def make_mailer(settings: Settings) -> Mailer:
    """SMTP when ``smtp_host`` is set, else a mailer that writes messages to the log."""
    from notify.smtp import LogMailer, SMTPMailer

    if not settings.smtp_host:
        return LogMailer(sender=settings.mail_from)
    return SMTPMailer(
        settings.smtp_host,
        settings.smtp_port,
        sender=settings.mail_from,
        security=settings.smtp_security,  # type: ignore[arg-type]  # config.py checks the choice
        user=settings.smtp_user,
        password=settings.smtp_password,
        timeout=settings.smtp_timeout_seconds,
    )


@dataclass
class Context:
    """Everything a service function or a build needs, made once per process from settings.

    Record sources may hold connections that are not safe to share between threads (DuckDB),
    so :meth:`source` hands each thread its own.
    """

    settings: Settings
    jobs: JobStore
    storage: Storage
    mailer: Mailer
    dispatcher: Dispatcher | None = None
    #: Makes a record source; default: :func:`make_source` over ``settings``.
    source_factory: Callable[[], RecordSource] | None = None
    #: The rate limits' counters (:mod:`downloader.service.limits`), made on first use.
    rate_counters: object | None = field(default=None, repr=False)
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def source(self) -> RecordSource:
        """This thread's record source."""
        src: RecordSource | None = getattr(self._local, "source", None)
        if src is None:
            factory = self.source_factory or (lambda: make_source(self.settings))
            src = factory()
            self._local.source = src
        return src

    def warm_source(self) -> None:
        """Read ahead what this process's first request or build would wait for (the
        embedded store's media links; see ``RecordSource.warm``). A failure is logged, not
        raised: the first request or build meets it and answers for it."""
        try:
            self.source().warm()
        except Exception as exc:  # start-up goes on; see above
            log.warning("could not read ahead from the record source: %s", exc)


def make_context(settings: Settings, *, dispatcher: Dispatcher | None = None) -> Context:
    """A context with every port built from ``settings`` (the dispatcher is passed in,
    because only the serving process owns one)."""
    return Context(
        settings=settings,
        jobs=make_job_store(settings),
        storage=make_storage(settings),
        mailer=make_mailer(settings),
        dispatcher=dispatcher,
    )
