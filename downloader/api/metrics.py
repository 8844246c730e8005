"""``GET /metrics``: the service in Prometheus' text format (prometheus_client).

- ``dwca_http_requests_total{method, code}`` and ``dwca_http_request_seconds`` (a histogram
  by method), counted by the access-log hook of every request;
- ``dwca_jobs{state}``: jobs queued (PENDING) and building (STARTED) now, read from the job
  store at scrape time, so every API process behind a balancer reports the same queue;
- ``dwca_jobs_created_total{kind}``: jobs this process created;
- ``dwca_build_records_per_second`` and ``dwca_archive_bytes_per_record``: the rates the
  web page's estimates use (measured over the downloads this process saw finish);
- ``dwca_store_data_version``: the record source's data version, when it is a number.

One registry per application, so tests can build several apps in one process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from downloader.api.base import BaseHandler
from downloader.backends import Context
from downloader.service import portal


class _StoreCollector(Collector):
    """Gauges read at scrape time from the job store and the record source."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Any]:
        jobs = GaugeMetricFamily("dwca_jobs", "Jobs queued or building now", labels=["state"])
        try:
            active = self.ctx.jobs.pending_jobs()
        except Exception:  # an unreachable store: no sample rather than a failed scrape
            active = None
        if active is not None:
            for state in ("PENDING", "STARTED"):
                jobs.add_metric([state], sum(1 for j in active if j.state == state))
        yield jobs
        rates = portal.MEASURED.document()
        yield GaugeMetricFamily(
            "dwca_build_records_per_second",
            f"Build rate behind the page's estimates ({rates['source']})",
            value=float(rates["records_per_second"]),
        )
        yield GaugeMetricFamily(
            "dwca_archive_bytes_per_record",
            f"Archive bytes per row behind the page's estimates ({rates['source']})",
            value=float(rates["bytes_per_record"]),
        )
        version = GaugeMetricFamily(
            "dwca_store_data_version", "The record source's data version (numeric ones)"
        )
        try:
            number = float(self.ctx.source().data_version())
        except Exception:  # not a number (the search cluster's), or unreachable
            number = None
        if number is not None:
            version.add_metric([], number)
        yield version


class Metrics:
    """The application's registry and the instruments the handlers update."""

    def __init__(self, ctx: Context) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dwca_http_requests",
            "HTTP requests answered",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dwca_http_request_seconds",
            "Time to answer an HTTP request",
            ["method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.jobs_created = Counter(
            "dwca_jobs_created", "Jobs this process created", ["kind"], registry=self.registry
        )
        self.registry.register(_StoreCollector(ctx))

    def observe(self, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(method, str(status)).inc()
        self.latency.labels(method).observe(seconds)


class MetricsHandler(BaseHandler):
    """``GET /metrics``."""

    def initialize(self, metrics: Metrics, **kwargs: Any) -> None:  # type: ignore[override]
        """Tornado hook: the application's metrics, and the usual context."""
        super().initialize(**kwargs)
        self.metrics = metrics

    async def get(self) -> None:
        """The Prometheus text exposition (read on the thread pool: it asks the job store)."""
        body = await self.run(lambda _ctx: generate_latest(self.metrics.registry))
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(body)
