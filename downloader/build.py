"""``build_archive(job_id, ctx)``: the one domain function that turns a job into an archive.

Both the local worker processes (:mod:`downloader.dispatch`) and Celery tasks call it. It is
idempotent by job id: it claims the job first, and a job that is finished, cancelled or
running elsewhere is left alone.

The work is a stream: source batches -> write_archive -> a storage writer under a temporary
name -> an atomic publish. Nothing is published unless write_archive returned normally, so a
truncated archive never becomes visible.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pyarrow as pa

from archive import (
    ArchiveCancelled,
    ArchiveError,
    ArchiveSpec,
    Citation,
    Column,
    DataFile,
    EmlInfo,
    dwca,
    write_archive,
)
from downloader.backends import Context, make_context
from downloader.config import Settings
from downloader.errors import SourceUnavailable, StorageUnavailable
from downloader.interfaces import EXPORT_KEY_PREFIX, RecordSource
from downloader.models import TERMINAL_STATES, Job
from downloader.service import content_type, download_url, now_utc, status_url
from downloader.sync import deleted_file
from notify.service import send_failure_email, send_ready_email
from query import fields as catalogue
from query.fields import RecordType

log = logging.getLogger(__name__)

#: Seconds between two looks at the job's cancel flag while writing.
CANCEL_CHECK_SECONDS = 1.0

#: Errors worth another attempt: the source or the storage was unreachable for a moment.
TRANSIENT = (SourceUnavailable, StorageUnavailable)


class RetryLater(Exception):
    """The build hit a transient error and the job is PENDING again for another attempt.

    Celery tasks turn it into ``self.retry()``; local workers just exit (the dispatcher
    picks the job up again after a short pause).
    """

    def __init__(self, job_id: str, cause: BaseException) -> None:
        super().__init__(f"job {job_id} will be retried: {cause}")
        self.job_id = job_id
        self.cause = cause


# --- what goes into the archive -----------------------------------------------------------


def _split_fields(names: Sequence[str] | None) -> tuple[list[str] | None, list[str] | None]:
    """``record_fields`` -> (index fields, verbatim terms); None means "all" for both."""
    if names is None:
        return None, None
    index = [n for n in names if not n.startswith("data.")]
    raw = [n[len("data.") :] for n in names if n.startswith("data.")]
    return index, raw


def _media_ids(
    batches: Iterable[pa.RecordBatch], position: int, *, drop: bool
) -> Iterable[pa.RecordBatch]:
    """Put the media uuid (column ``position``) into column 0 in place of the parent
    record's uuid, dropping its own column when it was only fetched for this. When media
    records are the core, their own uuid is the row id."""
    for batch in batches:
        columns = list(batch.columns)
        names = list(batch.schema.names)
        columns[0] = columns[position]
        if drop:
            del columns[position], names[position]
        yield pa.RecordBatch.from_arrays(columns, names=names)


@dataclass(frozen=True)
class _Plan:
    spec: ArchiveSpec
    counts: dict[str, int]
    recordsets: dict[str, int]


def _readers(
    src: RecordSource,
    rtype: RecordType,
    rq: dict[str, Any] | None,
    mq: dict[str, Any] | None,
    reads: Sequence[tuple[list[str], list[str]]],
    batch_size: int,
) -> list[Callable[[], Iterable[pa.RecordBatch]]]:
    """One batches factory per ``(fields, raw_terms)`` read of the same documents. A source
    that can serve several such reads from one pass (``shared_batches``: the search cluster,
    where every pass sends each document over HTTP as JSON) does; otherwise each factory
    reads on its own."""
    shared = getattr(src, "shared_batches", None)
    if shared is not None and len(reads) > 1:
        factories: list[Callable[[], Iterable[pa.RecordBatch]]] = shared(
            rtype, rq, mq, reads, batch_size=batch_size
        )
        return factories
    return [
        functools.partial(
            src.batches, rtype, rq, mq, fields=fields, raw_terms=terms, batch_size=batch_size
        )
        for fields, terms in reads
    ]


def _type_files(
    src: RecordSource,
    rtype: RecordType,
    request: dict[str, Any],
    *,
    own_id: bool,
) -> tuple[DataFile | None, DataFile | None]:
    """The indexed and the verbatim file of one record type (either may be None when the
    request's field list leaves it empty)."""
    rq, mq = request.get("rq"), request.get("mq")
    form = request.get("form", "dwca-csv")
    listed = request.get("record_fields" if rtype == "records" else "mediarecord_fields")
    index_fields, raw_terms = _split_fields(listed)
    if index_fields is None:
        # iDigBio orders the indexed columns by index field name; scripts written against its
        # archives pick columns by position (idigbio:geoPoint is column 37), so we do too.
        index_fields = sorted(catalogue.field_names(rtype))
    if raw_terms is None:
        raw_terms = src.raw_terms(rtype, rq, mq)
    row_type = dwca.OCCURRENCE if rtype == "records" else dwca.MULTIMEDIA
    batch_size = request.get("_batch_size", 10_000)

    # What each file reads: (index fields, verbatim terms). Media records as the core need
    # their own uuid for the id column: fetched at the end (and dropped) when the field list
    # does not name it, copied from its own column when it does.
    fields_ = list(index_fields)
    listed_uuid = "uuid" in fields_
    fetch = fields_ if listed_uuid or not own_id else [*fields_, "uuid"]
    terms = list(raw_terms)
    reads: list[tuple[list[str], list[str]]] = []
    if fields_:
        reads.append((fetch, []))
    if terms:
        reads.append((["uuid"] if own_id else [], terms))
    readers = _readers(src, rtype, rq, mq, reads, batch_size)

    indexed: DataFile | None = None
    if fields_:
        read_indexed = readers[0]
        columns = dwca.index_columns(rtype, fields_)
        position = 1 + fetch.index("uuid") if own_id else 0

        def make_indexed() -> Iterable[pa.RecordBatch]:
            if own_id:
                return _media_ids(read_indexed(), position, drop=not listed_uuid)
            return read_indexed()

        indexed = DataFile(
            dwca.data_file_name(rtype, form=form), row_type, columns, make_indexed, kind=rtype
        )

    raw: DataFile | None = None
    if terms:
        read_raw = readers[-1]
        raw_cols: list[Column] = dwca.raw_columns(terms)

        def make_raw() -> Iterable[pa.RecordBatch]:
            if own_id:
                return _media_ids(read_raw(), 1, drop=True)
            return read_raw()

        raw = DataFile(
            dwca.data_file_name(rtype, raw=True, form=form),
            row_type,
            raw_cols,
            make_raw,
            kind=rtype,
        )
    return indexed, raw


def _with_core(files: list[DataFile], core: DataFile) -> list[DataFile]:
    from dataclasses import replace

    return [replace(core, core=True)] + [f for f in files if f is not core]


def plan_archive(
    ctx: Context, job: Job, src: RecordSource, *, batch_size: int | None = None
) -> _Plan:
    """Count, tally recordsets and describe the archive of ``job`` (nothing is read yet
    beyond counts). The files per core type:

    - ``records`` (default): occurrence.csv (indexed, the core), occurrence_raw.csv
      (verbatim terms), multimedia.csv and multimedia_raw.csv (media of those records);
      ``core_source=raw`` makes occurrence_raw.csv the core.
    - ``mediarecords``: multimedia.csv (the core, id = the media uuid) and
      multimedia_raw.csv; the parent record stays in the ``idigbio:records`` column.
    - ``uniquelocality`` / ``uniquenames``: locality.csv / names.csv, one row per distinct
      value with its record count.

    Plus records.citation.txt, mediarecords.citation.txt and eml.xml for the zip forms.
    """
    settings = ctx.settings
    request = dict(job.request)
    request["_batch_size"] = batch_size or settings.batch_size
    rq, mq = request.get("rq"), request.get("mq")
    core_type = request.get("core_type", "records")
    form = request.get("form", "dwca-csv")
    counts = {
        "records": src.count("records", rq, mq),
        "mediarecords": src.count("mediarecords", rq, mq),
    }
    files: list[DataFile]
    if core_type in ("uniquelocality", "uniquenames"):
        field = "locality" if core_type == "uniquelocality" else "scientificname"

        def make_unique() -> Iterable[pa.RecordBatch]:
            return dwca.unique_value_batches(core_type, src.unique_values(field, rq, mq))

        row_type = dwca.ROW_TYPES[core_type]
        files = [
            DataFile(
                dwca.unique_file_name(core_type, form),
                row_type,
                dwca.unique_columns(core_type),
                make_unique,
                core=True,
                kind="other",
            )
        ]
    elif core_type == "mediarecords":
        m_index, m_raw = _type_files(src, "mediarecords", request, own_id=True)
        files = [f for f in (m_index, m_raw) if f is not None]
        counts["records"] = 0  # no record rows in a media-core archive
    else:
        r_index, r_raw = _type_files(src, "records", request, own_id=False)
        m_index, m_raw = _type_files(src, "mediarecords", request, own_id=False)
        files = [f for f in (r_index, r_raw, m_index, m_raw) if f is not None]
    if not files:
        raise ArchiveError("the requested field lists leave no column to write")
    preferred_raw = request.get("core_source") == "raw"
    # The core is a file of the core's own record type: when a field list leaves only the
    # other file of that type (only data.* terms, or no data.* term with core_source=raw),
    # that file is the core, never a media file of a records download.
    core_kind = "mediarecords" if core_type == "mediarecords" else "records"
    own = [f for f in files if f.kind in (core_kind, "other")] or files
    core = next(
        (f for f in files if f.core),
        next(
            (f for f in own if f.filename.split(".")[0].endswith("_raw") == preferred_raw),
            own[0],
        ),
    )
    files = _with_core(files, core)

    rs_type: RecordType = "mediarecords" if core_type == "mediarecords" else "records"
    recordsets = src.recordset_counts(rs_type, rq, mq)
    template = settings.recordset_url_template or "{id}"
    citations = []
    if dwca.is_zip(form):
        if core_type != "mediarecords":
            citations.append(
                Citation(
                    dwca.citation_file_name("records"),
                    json.dumps(rq, sort_keys=True),
                    counts["records"],
                    recordsets if rs_type == "records" else {},
                    template,
                )
            )
        if counts["mediarecords"] or core_type == "mediarecords":
            media_sets = (
                recordsets
                if rs_type == "mediarecords"
                else src.recordset_counts("mediarecords", rq, mq)
            )
            citations.append(
                Citation(
                    dwca.citation_file_name("mediarecords"),
                    json.dumps(mq if mq is not None else rq, sort_keys=True),
                    counts["mediarecords"],
                    media_sets,
                    template,
                )
            )
    created = job.created or now_utc()
    eml = EmlInfo(
        title=f"Darwin Core Archive download {job.id}",
        query_text=json.dumps(
            {k: v for k, v in job.request.items() if v is not None}, sort_keys=True
        ),
        package_id=job.id,
        publisher_name=settings.publisher_name,
        publisher_url=settings.publisher_url,
        intellectual_rights=settings.intellectual_rights,
        record_count=counts["records"],
        media_count=counts["mediarecords"],
        recordset_counts=recordsets,
        created=created,
    )
    # A download of what changed since a date also lists what was removed (downloader.sync).
    deleted = deleted_file(src, rq) if dwca.is_zip(form) else None
    spec = ArchiveSpec(
        form=form,
        files=files,
        citations=citations,
        eml=eml,
        timestamp=created,
        extras=[deleted] if deleted else [],
    )
    return _Plan(spec=spec, counts=counts, recordsets=recordsets)


def archive_filename(job: Job) -> str:
    """A meaningful file name: ``dwca-<query words>-<short id>.zip`` (``.csv``/``.tsv`` for
    the bare forms), e.g. ``dwca-acer-3f2a9c1d.zip``."""
    words: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            words.append(value)
        elif isinstance(value, list):
            for item in value[:2]:
                collect(item)
        elif isinstance(value, dict) and "value" in value:
            collect(value["value"])

    for query in (job.request.get("rq"), job.request.get("mq")):
        if isinstance(query, dict):
            for key in sorted(query):
                if key != "uuid":
                    collect(query[key])
    slug = re.sub(r"[^a-z0-9]+", "-", " ".join(words).lower()).strip("-")[:40].strip("-")
    form = job.request.get("form", "dwca-csv")
    short = job.id.split("-")[0]
    stem = "-".join(p for p in ("dwca" if form.startswith("dwca") else "", slug, short) if p)
    return f"{stem}.{'zip' if form.startswith('dwca') else dwca.file_extension(form)}"


def archive_key(job: Job) -> str:
    """The storage key: ``<job id>.zip`` (``.csv``/``.tsv`` for the bare forms), under
    :data:`~downloader.interfaces.EXPORT_KEY_PREFIX` for a recordset export, which must
    outlive the expiry S3 applies to downloads."""
    form = job.request.get("form", "dwca-csv")
    key = f"{job.id}.{'zip' if form.startswith('dwca') else dwca.file_extension(form)}"
    return EXPORT_KEY_PREFIX + key if job.kind == "export" else key


# --- the build ----------------------------------------------------------------------------


def _base_url(ctx: Context, job: Job) -> str:
    s = ctx.settings
    return s.base_url or job.base_url or f"http://{s.host}:{s.port}"


def notify_ready(ctx: Context, job: Job) -> None:
    """Mail every address of the (freshly reloaded) job that its archive is ready."""
    current = ctx.jobs.get(job.id) or job
    base = _base_url(ctx, current)
    send_ready_email(
        ctx.mailer,
        current,
        download_url=download_url(ctx, current, base),
        status_url=status_url(current, base),
    )


def fail_job(ctx: Context, job: Job, error: str) -> Job:
    """Mark the job FAILURE with a message for the researcher and mail every address."""
    job.state = "FAILURE"
    job.error = error
    job.completed = now_utc()
    ctx.jobs.save(job)
    current = ctx.jobs.get(job.id) or job
    send_failure_email(ctx.mailer, current, status_url=status_url(current, _base_url(ctx, current)))
    log.warning("job %s failed: %s", job.id, error)
    return current


class _Reporter:
    """Progress to the job store: every ``every`` rows, and at least every ``beat`` seconds
    from a background thread (the heartbeat that tells others this build is alive)."""

    def __init__(self, ctx: Context, job_id: str, *, every: int, beat: float) -> None:
        self.ctx, self.job_id, self.every, self.beat = ctx, job_id, every, beat
        self.rows = 0
        self.expected = 0
        self.total: int | None = None
        self._last_written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)
        self._cancel_checked = float("-inf")
        self._cancelled = False

    def __enter__(self) -> _Reporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def records_written(self) -> int:
        """Rows scaled to records: indexed and verbatim files hold the same records, so the
        row count is converted to the share of ``total`` it represents."""
        if not self.expected or self.total is None:
            return 0
        return min(self.total, self.rows * self.total // self.expected)

    def write(self) -> None:
        """Store the current progress (also the heartbeat)."""
        try:
            self.ctx.jobs.update_progress(self.job_id, self.records_written(), self.total)
        except Exception:
            # Progress is advisory; a failed update must not fail the build.
            log.warning("progress update for job %s failed", self.job_id, exc_info=True)

    def progress(self, rows: int) -> None:
        """write_archive's callback."""
        self.rows = rows
        if rows - self._last_written >= self.every:
            self._last_written = rows
            self.write()

    def should_cancel(self) -> bool:
        """write_archive's cancellation check, at most every ``CANCEL_CHECK_SECONDS``."""
        now = time.monotonic()
        if now - self._cancel_checked >= CANCEL_CHECK_SECONDS:
            self._cancel_checked = now
            self._cancelled = self.ctx.jobs.is_cancel_requested(self.job_id)
        return self._cancelled

    def _run(self) -> None:
        while not self._stop.wait(self.beat):
            self.write()


def build_archive(job_id: str, ctx: Context) -> Job | None:
    """Build the archive of job ``job_id``: claim, count, write, publish, record, notify.

    Returns the job in its final state, or None when there was nothing to do (unknown job,
    already finished, cancelled before it started, or running in another worker). Raises
    :class:`RetryLater` after a transient error when attempts remain (the job is PENDING
    again). Every other outcome is recorded in the job, never raised: SUCCESS with size,
    sha256, counts and expiry; FAILURE with a message a researcher can act on; CANCELLED.
    """
    settings = ctx.settings
    job = ctx.jobs.claim(job_id, max_attempts=settings.max_attempts)
    if job is None:
        current = ctx.jobs.get(job_id)
        if (
            current is not None
            and current.state == "PENDING"
            and ctx.jobs.is_cancel_requested(job_id)
        ):
            current.state = "CANCELLED"
            current.completed = now_utc()
            ctx.jobs.save(current)
            return current
        log.info("job %s not claimed (missing, finished or running elsewhere)", job_id)
        return None
    if job.attempts > settings.max_attempts:
        return fail_job(
            ctx,
            job,
            f"The archive build was interrupted {job.attempts - 1} times (the worker stopped "
            "or the service restarted) and was given up. Please request the download again; "
            "if it keeps failing, narrow the query or tell the service's operators.",
        )
    log.info("job %s started (attempt %d)", job.id, job.attempts)
    key = archive_key(job)
    # An export job is named when it is created ({recordset}_{version}.{lastUpdated}.zip).
    filename = job.filename or archive_filename(job)
    beat = max(0.5, settings.stale_job_seconds / 4)
    with _Reporter(ctx, job.id, every=settings.progress_every, beat=beat) as reporter:
        writer = None
        try:
            plan = plan_archive(ctx, job, ctx.source())
            counts = plan.counts
            reporter.expected = plan.spec.expected_rows(counts)
            reporter.total = sum(counts.get(f.kind, 0) for f in _kinds(plan.spec))
            reporter.write()
            writer = ctx.storage.open_writer(key)
            result = write_archive(
                plan.spec,
                writer,  # type: ignore[arg-type]  # Storage hands out IO[bytes]; the writer only appends
                progress=reporter.progress,
                should_cancel=reporter.should_cancel,
            )
            ctx.storage.publish(
                key, writer, content_type=content_type(plan.spec.form), filename=filename
            )
            writer = None
            if ctx.jobs.is_cancel_requested(job.id):
                # Cancelled while the last bytes were written: the requester was told it
                # stops, so the archive must not appear (nor a "ready" email go out).
                ctx.storage.delete(key)
                raise ArchiveCancelled("cancelled after the archive was written")
        except ArchiveCancelled:
            _discard(ctx, key, writer)
            job.state = "CANCELLED"
            job.error = "The download was cancelled before its archive was finished."
            job.completed = now_utc()
            ctx.jobs.save(job)
            log.info("job %s cancelled", job.id)
            return job
        except TRANSIENT as exc:
            _discard(ctx, key, writer)
            if job.attempts < settings.max_attempts:
                job.state = "PENDING"
                ctx.jobs.save(job)
                log.warning("job %s: transient error, will retry: %s", job.id, exc)
                raise RetryLater(job.id, exc) from exc
            what = "record store" if isinstance(exc, SourceUnavailable) else "archive storage"
            return fail_job(
                ctx,
                job,
                f"The {what} could not be reached in {job.attempts} attempts ({exc}). "
                "This is a problem on our side, not with your query: please request the "
                "download again later.",
            )
        except ArchiveError as exc:
            _discard(ctx, key, writer)
            return fail_job(
                ctx,
                job,
                f"The archive could not be written: {exc}. Please change the query or the "
                "field lists, or report it to the service's operators with the status link.",
            )
        except Exception as exc:
            _discard(ctx, key, writer)
            log.exception("job %s failed unexpectedly", job.id)
            return fail_job(
                ctx,
                job,
                f"An unexpected error stopped the build ({type(exc).__name__}). It has been "
                f"logged under download id {job.id}; please try again, and tell the "
                "service's operators if it happens again.",
            )
        completed = now_utc()
        job.state = "SUCCESS"
        job.completed = completed
        # A recordset export is a cache kept until it is replaced or deleted (see
        # downloader.exports); a download lives for retention_days.
        job.expires = (
            None if job.kind == "export" else completed + timedelta(days=settings.retention_days)
        )
        job.size = result.size
        job.sha256 = result.sha256
        job.archive_key = key
        job.filename = filename
        job.counts = {"records": result.records, "mediarecords": result.mediarecords}
        unique_key = _UNIQUE_COUNT_KEYS.get(job.request.get("core_type", "records"))
        if unique_key:
            # A uniquelocality/uniquenames core holds distinct values, not records; say how
            # many, or the status would report an archive of rows as empty.
            job.counts[unique_key] = result.rows.get(plan.spec.core.filename, 0)
        job.recordset_count = len(plan.recordsets)
        job.total_records = sum(job.counts.values())
        job.records_written = job.total_records
        job.error = None
    ctx.jobs.save(job)
    log.info("job %s done: %d bytes, %s", job.id, job.size, job.counts)
    notify_ready(ctx, job)
    return job


#: The ``counts`` key under which a unique-values core reports its rows.
_UNIQUE_COUNT_KEYS = {"uniquelocality": "localities", "uniquenames": "names"}


def _kinds(spec: ArchiveSpec) -> list[DataFile]:
    # One file per kind counts towards the total (indexed and raw hold the same rows).
    seen: dict[str, DataFile] = {}
    files = spec.files if dwca.is_zip(spec.form) else [spec.core]
    for f in files:
        if f.kind != "other":
            seen.setdefault(f.kind, f)
    return list(seen.values())


def _discard(ctx: Context, key: str, writer: Any) -> None:
    if writer is None:
        return
    try:
        ctx.storage.discard(key, writer)
    except Exception:
        log.warning("could not discard the partial archive %s", key, exc_info=True)


def cancel_download(ctx: Context, job_id: str) -> Job | None:
    """Ask for a job to stop; a queued job is cancelled at once, a running one at its
    next check. Returns the job (None when unknown)."""
    job = ctx.jobs.get(job_id)
    if job is None or job.state in TERMINAL_STATES:
        return job
    ctx.jobs.request_cancel(job_id)
    if job.state == "PENDING":
        job.state = "CANCELLED"
        job.error = "The download was cancelled before it started."
        job.completed = now_utc()
        ctx.jobs.save(job)
    return job


def run_job(job_id: str, settings: Settings) -> int:
    """Entry point of a local worker process: build one job; the process exit code.

    0 when the job reached a final state or will be retried, 1 for an error outside the
    build itself (the dispatcher then treats the job as interrupted).
    """
    _configure_worker_logging()
    ctx = make_context(settings)
    try:
        build_archive(job_id, ctx)
    except RetryLater:
        return 0
    return 0


def _configure_worker_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s [worker] %(name)s: %(message)s"
        )
