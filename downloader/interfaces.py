"""The ports of the service. Each has an embedded and an at-scale implementation.

| port          | embedded default              | at scale                        |
|---------------|-------------------------------|---------------------------------|
| RecordSource  | sources/duckdb.DuckDBSource   | sources/elasticsearch.ElasticsearchSource |
| JobStore      | jobs/sqlite.SQLiteJobStore    | jobs/redis.RedisJobStore        |
| Dispatcher    | dispatch.LocalDispatcher      | dispatch.CeleryDispatcher       |
| Storage       | storage/local.LocalStorage    | storage/s3.S3Storage            |
| Mailer        | notify.smtp.SMTPMailer / notify.smtp.LogMailer |                |

Only the module named after a vendor system imports that system's library.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import IO, Any, Protocol, runtime_checkable

import pyarrow as pa

from downloader.models import Job
from query.fields import RecordType


class RecordSource(Protocol):
    """Where records come from: counts, recordset tallies and columnar batches for a request.

    ``rq`` and ``mq`` are normalised queries (see ``query``); an ``mq`` beside an ``rq`` means
    media of matching records for media, and records having matching media for records.
    """

    def data_version(self) -> str:
        """An opaque token that changes whenever the data changes (an ingest, a deletion)."""
        ...

    def warm(self) -> None:
        """Read ahead what the first request would wait for (called once as a process that
        serves requests or builds starts; nothing to do for a source with no such state)."""
        ...

    def count(self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None) -> int:
        """How many ``rtype`` documents match."""
        ...

    def recordset_counts(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> dict[str, int]:
        """Matching document counts per recordset id, without fetching the documents."""
        ...

    def raw_terms(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> list[str]:
        """Sorted verbatim term names (``dwc:scientificName``) present in the matching documents."""
        ...

    def batches(
        self,
        rtype: RecordType,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
        *,
        fields: Sequence[str] = (),
        raw_terms: Sequence[str] = (),
        batch_size: int = 10_000,
    ) -> Iterator[pa.RecordBatch]:
        """Stream the matching documents as Arrow record batches, in a stable order.

        Stable means: the same rows in the same order for the same ``data_version`` (so an
        archive is reproducible), not any particular order across sources. The DuckDB
        source gives the store's row order (no sort of the whole result); the Elasticsearch
        source sorts by uuid. Consumers compare sources as sets of rows.

        Column 0 is ``coreid`` (string): the record uuid for records, the parent record's
        uuid for media. Then one column per name in ``fields`` (index fields, typed as the
        catalogue says: strings, lists of strings, int64, float64, bool, timestamps, and
        ``geopoint`` as struct<lat: double, lon: double>), then one string column per name
        in ``raw_terms`` (verbatim values, named by the term). Media batches additionally
        carry the media uuid when ``uuid`` is among ``fields``.
        """
        ...

    def unique_values(
        self,
        field: str,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
    ) -> Iterator[pa.RecordBatch]:
        """Distinct non-empty values of a record field with their counts (columns value, count),
        ordered by value."""
        ...


class Deletion(Protocol):
    """One record or media record that a re-ingest of its recordset no longer contained."""

    @property
    def uuid(self) -> str:
        """The removed document's uuid."""
        ...

    @property
    def recordset(self) -> str:
        """Its recordset."""
        ...

    @property
    def deleted_at(self) -> datetime:
        """When the re-ingest removed it (naive UTC)."""
        ...

    @property
    def rtype(self) -> str:
        """``records`` or ``mediarecords``."""
        ...


@runtime_checkable
class DeletionLog(Protocol):
    """A record source that remembers which documents re-ingests removed, and when.

    Optional beside :class:`RecordSource` (the DuckDB source has it): a download since a
    date carries ``deleted.csv`` only when its source has this (see
    :mod:`downloader.build.deletions`).
    """

    def deleted_records(self, *, since: datetime | None = None) -> Sequence[Deletion]:
        """Documents removed by re-ingests (after ``since`` when given), oldest first."""
        ...


class JobStore(Protocol):
    """Durable job records, dedupe by query hash, progress, and cancellation flags."""

    def create_or_reuse(
        self, job: Job, *, reuse_after: datetime | None, force: bool = False
    ) -> tuple[Job, bool]:
        """Atomically return a reusable job for ``job.query_hash`` and ``job.data_version``
        (not failed, cancelled, expired or asked to cancel, created after ``reuse_after``),
        or store ``job``.
        The boolean is True when ``job`` was newly created. ``force`` always creates."""
        ...

    def get(self, job_id: str) -> Job | None:
        """The job, or None when no such job exists."""
        ...

    def save(self, job: Job) -> None:
        """Write every field of ``job``."""
        ...

    def add_email(self, job_id: str, email: str) -> None:
        """Remember one more address to notify about this job."""
        ...

    def update_progress(self, job_id: str, records_written: int, total_records: int | None) -> None:
        """Record build progress cheaply (called every few thousand records)."""
        ...

    def add_counters(self, increments: dict[str, float]) -> None:
        """Add to named service-wide counters, all at once (a finished build's figures,
        see :mod:`downloader.build.stats`); a counter starts at 0."""
        ...

    def counters(self) -> dict[str, float]:
        """Every counter :meth:`add_counters` made, with its value."""
        ...

    def request_cancel(self, job_id: str) -> None:
        """Flag the job so its worker stops at the next check."""
        ...

    def is_cancel_requested(self, job_id: str) -> bool:
        """Whether cancellation was asked for."""
        ...

    def claim(self, job_id: str, *, max_attempts: int) -> Job | None:
        """Mark a PENDING (or interrupted STARTED) job STARTED for this worker and count the
        attempt; None when it is terminal, cancelled or already running elsewhere."""
        ...

    def jobs_for_hash(self, query_hash: str, *, kind: str) -> list[Job]:
        """Every job of ``kind`` with this ``query_hash``, in any state and data version,
        newest first (how a recordset's export jobs are found, see
        :mod:`downloader.service.exports`)."""
        ...

    def add_owner(self, job_id: str, owner: str) -> None:
        """Remember that ``owner`` (a GBIF API creator) asked for this job; asking twice
        keeps the first time."""
        ...

    def jobs_of_owner(self, owner: str, *, offset: int, limit: int) -> tuple[list[Job], int]:
        """The jobs ``owner`` asked for, most recently asked first, from ``offset``, at most
        ``limit``; and how many there are in all."""
        ...

    def pending_jobs(self) -> list[Job]:
        """Jobs that should run (queued, or running when their worker died): for restart."""
        ...

    def requeue_stale(self) -> list[str]:
        """Put every STARTED job whose heartbeat is older than the staleness window back to
        PENDING, atomically per job (so that of several processes sweeping, one requeues
        it); the ids requeued, for the caller to dispatch again. Their attempts stay
        counted, so a job that keeps killing its worker is given up after ``max_attempts``."""
        ...

    def expired_jobs(self, now: datetime) -> list[Job]:
        """Successful jobs whose ``expires`` is before ``now``."""
        ...


#: Key namespace of cached recordset exports (``exports/<job id>.zip``). Exports are kept
#: until an admin deletes them, so a storage that expires archives by itself (S3's lifecycle
#: rule) must keep these keys out of that expiry; local storage keeps them beside downloads.
EXPORT_KEY_PREFIX = "exports/"


class Storage(Protocol):
    """Where finished archives live. Writes are atomic: a key appears only complete.

    Keys are ``<job id>.zip`` (``.csv``/``.tsv``) for downloads and
    :data:`EXPORT_KEY_PREFIX` + ``<job id>.zip`` for recordset exports.
    """

    def open_writer(self, key: str) -> IO[bytes]:
        """A binary file to write the archive into. Nothing is visible under ``key`` until
        :meth:`publish` is called with the same writer; :meth:`discard` throws it away."""
        ...

    def publish(
        self,
        key: str,
        writer: IO[bytes],
        *,
        content_type: str,
        filename: str,
        sha256: str | None = None,
    ) -> None:
        """Make the written bytes visible under ``key``, atomically; ``sha256`` (hex), when
        given, is recorded with the object where the storage can keep it."""
        ...

    def discard(self, key: str, writer: IO[bytes]) -> None:
        """Drop a partial write."""
        ...

    def exists(self, key: str) -> bool:
        """Whether a published archive exists under ``key``."""
        ...

    def delete(self, key: str) -> None:
        """Remove a published archive; a missing key is not an error."""
        ...

    def url(self, key: str, *, base_url: str, filename: str) -> str:
        """Where the bytes of ``key`` are fetched: a path under this service for local
        storage, a presigned (at this call) or public URL for S3. Clients are given the
        stable ``/archives/`` link (:func:`downloader.links.download_url`), which redirects
        here on S3."""
        ...

    def check(self) -> None:
        """Raise, saying why, when archives cannot be written here (the directory is not
        writable, the bucket is missing, S3 refuses or cannot be reached): for readiness."""
        ...


class Dispatcher(Protocol):
    """Runs ``build_archive(job_id)`` somewhere: local worker processes or Celery."""

    def dispatch(self, job_id: str, *, records: int | None = None) -> None:
        """Queue the job (it is already saved in the job store). ``records``: how many
        records its query matched (``Job.counted_records``), which routes it to the small
        or the large queue (see :mod:`downloader.dispatch.routing`); None: small."""
        ...


class Mailer(Protocol):
    """Sends one plain-text email."""

    def send(self, to: str, subject: str, body: str) -> None:
        """Deliver the message or raise ``notify.errors.MailError``."""
        ...
