"""Service-wide build figures for ``/metrics``, kept in the job store.

Builds run in worker processes: the local pool's spawned processes, or Celery workers on
other machines. Counters in those processes would be lost with each worker (the pool
retires them, Celery recycles them) and, under Celery, are on machines nobody scrapes.
prometheus_client's multiprocess mode shares a directory, so it only covers one machine.
The job store is the one thing every worker and every API process share in both
deployments, so each finished build adds its figures to cumulative counters kept there
(:meth:`~downloader.interfaces.JobStore.add_counters`, one atomic step per build), and
every API process exports the same totals at scrape time (``downloader/api/metrics.py``):
they are monotonic and survive restarts of anything but the store.

Counter names (opaque to the store): ``builds|<state>``, ``failures|<reason>``,
``build_seconds|le=<bound>`` (cumulative buckets, ``le=+Inf`` is the count),
``build_seconds|sum``, the same for ``archive_bytes``, and ``build_records|sum``.
"""

from __future__ import annotations

import logging
import math

from downloader.interfaces import JobStore
from downloader.models import Job, now_utc

log = logging.getLogger(__name__)

#: Upper bounds of the build-duration histogram, in seconds (a second to the 6 h limit).
SECONDS_BUCKETS: tuple[float, ...] = (1, 5, 15, 60, 300, 900, 3600, 10800, 21600)
#: Upper bounds of the archive-size histogram, in bytes (100 kB to 100 GB).
BYTES_BUCKETS: tuple[float, ...] = (1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11)

#: Why builds fail (``failures|<reason>``); ``fail_job`` callers name one.
FAILURE_REASONS = (
    "time_limit",
    "interrupted",
    "source_unavailable",
    "storage_unavailable",
    "job_store_unavailable",
    "no_space",
    "archive_error",
    "unexpected",
)


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(float(value))


def _histogram(name: str, value: float, buckets: tuple[float, ...]) -> dict[str, float]:
    out = {f"{name}|le={_bound(b)}": 1.0 for b in (*buckets, math.inf) if value <= b}
    out[f"{name}|sum"] = float(value)
    return out


def outcome_counters(job: Job, *, reason: str | None = None) -> dict[str, float]:
    """What a build that ended in ``job.state`` adds to the counters."""
    out: dict[str, float] = {f"builds|{job.state}": 1.0}
    if job.state == "FAILURE":
        out[f"failures|{reason or 'unexpected'}"] = 1.0
    if job.state == "SUCCESS" and job.started is not None:
        seconds = max(0.0, ((job.completed or now_utc()) - job.started).total_seconds())
        out |= _histogram("build_seconds", seconds, SECONDS_BUCKETS)
        out |= _histogram("archive_bytes", float(job.size or 0), BYTES_BUCKETS)
        out["build_records|sum"] = float(job.total_records or 0)
    return out


def record_outcome(jobs: JobStore, job: Job, *, reason: str | None = None) -> None:
    """Add a finished build to the service-wide counters (never fails the build: a figure
    lost is better than an outcome lost)."""
    try:
        jobs.add_counters(outcome_counters(job, reason=reason))
    except Exception as exc:
        log.warning("job %s: build figures not recorded: %s", job.id, exc)
