"""Domain dataclasses shared by the service, the job stores and the workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

#: Internal job states. ``task_status`` in the iDigBio status JSON is derived from these.
JobState = Literal["PENDING", "STARTED", "SUCCESS", "FAILURE", "CANCELLED", "EXPIRED"]
TERMINAL_STATES: frozenset[str] = frozenset({"SUCCESS", "FAILURE", "CANCELLED", "EXPIRED"})


def now_utc() -> datetime:
    """The current time, timezone-aware UTC (every timestamp we store is)."""
    return datetime.now(UTC)


def utc_iso(value: datetime | None) -> str | None:
    """``value`` as RFC 3339 text with its offset; a naive time (the record store keeps
    UTC without a zone) is UTC. None stays None."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


@dataclass
class Job:
    """One archive build: a normalised download request and everything learnt while building it.

    ``request`` is the canonical download request (the dict that was hashed: rq, mq,
    core_type, core_source, form, record_fields, mediarecord_fields); ``query`` is what the
    client sent, echoed in the status JSON as iDigBio does.
    """

    id: str
    query_hash: str
    request: dict[str, Any]
    query: dict[str, Any]
    data_version: str
    state: JobState = "PENDING"
    created: datetime | None = None
    started: datetime | None = None
    completed: datetime | None = None
    expires: datetime | None = None
    records_written: int = 0
    total_records: int | None = None
    size: int | None = None
    sha256: str | None = None
    archive_key: str | None = None
    filename: str | None = None
    error: str | None = None
    attempts: int = 0
    #: Transient errors retried so far (each also counted in ``attempts``, which the
    #: interrupted-build limit ``max_attempts`` counts without them).
    retries: int = 0
    #: When the next attempt after a transient error is due (None: none is waiting).
    retry_at: datetime | None = None
    #: When the first transient error of this job happened: retries stop
    #: ``transient_retry_seconds`` after it.
    retry_since: datetime | None = None
    emails: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    recordset_count: int | None = None
    #: Kept out of ``repr``: a job printed in a log line or a traceback must not show it.
    cancel_token: str | None = field(default=None, repr=False)
    source: str | None = None
    kind: Literal["download", "export"] = "download"
    #: The service's public base URL as the first requester reached it, so a worker (which
    #: has no request) can put absolute links into emails when ``base_url`` is not configured.
    base_url: str | None = None
    #: Who the job is counted against for ``active_jobs_per_requester``: ``email:<address>``
    #: or ``client:<address>`` of the request that created it (None: not counted).
    requester: str | None = None
    #: Records its query matched when the job was created (the core's count; a recordset
    #: export's record count), or None: it routes the job to the small or the large queue
    #: (``large_job_records``, see :mod:`downloader.dispatch.routing`).
    counted_records: int | None = None

    @property
    def interruptions(self) -> int:
        """Attempts that did not end in a transient-error retry: builds that were started
        and interrupted (or the one running now)."""
        return max(0, self.attempts - self.retries)


@dataclass(frozen=True)
class ExtensionFile:
    """A verbatim extension (other than media) a record source keeps for its recordsets:
    its rowType, the file stem it was published as, and the terms its rows use."""

    row_type: str
    name: str
    terms: list[str]
