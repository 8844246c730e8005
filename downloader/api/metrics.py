"""``GET /metrics``: the service in Prometheus' text format (prometheus_client).

- ``dwca_http_requests_total{method, code}`` and ``dwca_http_request_seconds`` (a histogram
  by method), counted by the access-log hook of every request;
- ``dwca_jobs{state}``: jobs queued (PENDING) and building (STARTED) now, and
  ``dwca_queue_jobs{queue}``: queued jobs by queue (``small``, ``large``: see
  ``downloader/dispatch/routing.py``), read from the job store at scrape time, so every API
  process behind a balancer reports the same queue;
- ``dwca_builds_total{state}`` (SUCCESS, FAILURE, CANCELLED), ``dwca_build_failures_total
  {reason}``, the histograms ``dwca_build_seconds`` and ``dwca_archive_bytes`` of
  successful builds and ``dwca_build_records_total`` (records/s over any period:
  ``rate(dwca_build_records_total) / rate(dwca_build_seconds_sum)``): the service-wide
  totals that workers add to the job store as each build ends
  (``downloader/build/stats.py`` says why there), read at scrape time;
- ``dwca_limit_hits_total{limit}``: requests this process refused by a limit
  (``downloader/service/limits.py``);
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
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from downloader.api.base import BaseHandler
from downloader.backends import Context
from downloader.build.stats import BYTES_BUCKETS, FAILURE_REASONS, SECONDS_BUCKETS
from downloader.dispatch.routing import is_large
from downloader.service import portal

#: Build outcomes counted by ``dwca_builds_total``.
_OUTCOMES = ("SUCCESS", "FAILURE", "CANCELLED")


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
        queues = GaugeMetricFamily(
            "dwca_queue_jobs", "Jobs queued (not yet building), by queue", labels=["queue"]
        )
        if active is not None:
            for state in ("PENDING", "STARTED"):
                jobs.add_metric([state], sum(1 for j in active if j.state == state))
            settings = self.ctx.settings
            queued = [j for j in active if j.state == "PENDING"]
            large = sum(1 for j in queued if is_large(settings, j.counted_records))
            queues.add_metric(["small"], len(queued) - large)
            queues.add_metric(["large"], large)
        yield jobs
        yield queues
        yield from self._builds()
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

    def _builds(self) -> Iterator[Any]:
        """The service-wide build figures that workers keep in the job store."""
        try:
            counters = self.ctx.jobs.counters()
        except Exception:  # an unreachable store: no sample rather than a failed scrape
            return
        builds = CounterMetricFamily(
            "dwca_builds", "Archive builds that ended, by outcome", labels=["state"]
        )
        for state in _OUTCOMES:
            builds.add_metric([state], counters.get(f"builds|{state}", 0.0))
        yield builds
        failures = CounterMetricFamily(
            "dwca_build_failures", "Archive builds that failed, by reason", labels=["reason"]
        )
        for reason in FAILURE_REASONS:
            failures.add_metric([reason], counters.get(f"failures|{reason}", 0.0))
        yield failures
        yield _histogram(
            counters,
            "build_seconds",
            "dwca_build_seconds",
            "Time from claim to publication of successful builds",
            SECONDS_BUCKETS,
        )
        yield _histogram(
            counters,
            "archive_bytes",
            "dwca_archive_bytes",
            "Sizes of the archives successful builds published",
            BYTES_BUCKETS,
        )
        yield CounterMetricFamily(
            "dwca_build_records",
            "Records and media records written by successful builds",
            value=counters.get("build_records|sum", 0.0),
        )


def _histogram(
    counters: dict[str, float], key: str, name: str, doc: str, bounds: tuple[float, ...]
) -> HistogramMetricFamily:
    """A histogram from the cumulative ``<key>|le=<bound>`` counters of the job store."""
    buckets = []
    for bound in (*bounds, float("inf")):
        label = "+Inf" if bound == float("inf") else repr(float(bound))
        buckets.append((floatToGoString(bound), counters.get(f"{key}|le={label}", 0.0)))
    return HistogramMetricFamily(
        name, doc, buckets=buckets, sum_value=counters.get(f"{key}|sum", 0.0)
    )


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
        self.limit_hits = Counter(
            "dwca_limit_hits",
            "Requests refused by a limit, by limit",
            ["limit"],
            registry=self.registry,
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
