"""Cached exports of recordset versions (the contract of OCL's repository-version exports).

Every ingest creates a new version of a recordset, and :func:`export_after_ingest` queues
the DwC-A export of that version right away, so asking for it later is instant. An export is
an ordinary job of kind ``export`` built by :func:`downloader.build.build_archive`:

- its query is ``{"recordset": <id>, "version": <n>}`` (records carry their recordset's
  version, so the export holds exactly that version even if the store moves on);
- its ``query_hash`` is :func:`export_hash` of the recordset and its ``data_version`` is the
  recordset version, so the job store's dedupe gives one export per version and
  ``JobStore.jobs_for_hash`` lists a recordset's versions;
- its file name is ``{recordset}_{version}.{lastUpdated}.zip`` (``lastUpdated`` = when the
  version was ingested, ``YYYYMMDDHHMMSS`` UTC) and it does not expire: it stays until an
  admin deletes it.

A version can also be exported as Parquet (``form=parquet`` on the export URL): built on
request only, a job of its own (:func:`export_hash` of the recordset and the form).

The job store is therefore the registry of versions; the record source answers for a version
that was ingested without the hook (its records carry the version number).

Functions here answer with :class:`ExportView` (what the handlers turn into 200/204/208/
303/404/405) or raise our errors; nothing here knows HTTP.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from downloader.backends import Context
from downloader.errors import RequestError
from downloader.models import Job, now_utc, utc_iso
from query.request import parse_download_request

log = logging.getLogger(__name__)

EXPORT_KIND: Literal["export"] = "export"
#: The moving working copy of a recordset; it has no export (405).
HEAD_VERSION = "HEAD"

ExportState = Literal["none", "building", "ready", "failed"]
#: The forms a version is exported in: the DwC-A (built by every ingest) and, on request,
#: the same files as Parquet.
EXPORT_FORMS: tuple[str, ...] = ("dwca-csv", "parquet")

_BUILDING = frozenset({"PENDING", "STARTED"})


class RecordsetNotFound(RequestError):
    """No such recordset or version (HTTP 404)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=404, name="NotFound")


def normalise_recordset(recordset: str) -> str:
    """A recordset id as the store keeps it (the query normalisation: trimmed, lower-cased)."""
    request = parse_download_request({"rq": {"recordset": recordset}})
    value = (request.rq or {}).get("recordset")
    if not isinstance(value, str) or not value:
        raise RecordsetNotFound(f"no recordset has the id {recordset!r}")
    return value


def export_form(value: str | None) -> str:
    """The ``form`` parameter of the export URLs: ``dwca-csv`` (the default) or
    ``parquet``; anything else is a 400 naming it."""
    form = (value or "dwca-csv").strip().lower()
    if form not in EXPORT_FORMS:
        raise RequestError(
            f"form must be one of {', '.join(EXPORT_FORMS)}, not {value!r}", key="form"
        )
    return form


def export_hash(recordset: str, form: str = "dwca-csv") -> str:
    """The ``query_hash`` every export job of ``recordset`` in ``form`` shares (any
    version)."""
    suffix = "" if form == "dwca-csv" else f":{form}"
    return hashlib.sha1(f"export:{recordset}{suffix}".encode()).hexdigest()


def export_filename(
    recordset: str, version: int, last_updated: datetime, form: str = "dwca-csv"
) -> str:
    """``{recordset}_{version}.{lastUpdated}.zip`` with ``lastUpdated`` as YYYYMMDDHHMMSS UTC
    (characters a file name cannot safely hold, as in URL-like recordset ids, become ``_``);
    ``.parquet.zip`` for the Parquet form."""
    when = last_updated if last_updated.tzinfo else last_updated.replace(tzinfo=UTC)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", recordset).strip("._") or "recordset"
    kind = "" if form == "dwca-csv" else f".{form}"
    return f"{safe}_{version}.{when.astimezone(UTC):%Y%m%d%H%M%S}{kind}.zip"


def export_path(recordset: str, version: int | str, form: str = "dwca-csv") -> str:
    """The export's path under the service's base URL (the id percent-encoded: recordset
    ids may be URLs), with ``?form=`` for a form other than the DwC-A."""
    query = "" if form == "dwca-csv" else f"?form={form}"
    return f"/recordsets/{quote(recordset, safe='')}/{version}/export/{query}"


def parse_version(version: str) -> int:
    """A version path segment as a number: 405 for ``HEAD``, 404 for anything else."""
    if version.strip().upper() == HEAD_VERSION:
        raise RequestError(
            "the HEAD version of a recordset is its moving working copy and cannot be "
            "exported; ask for a numbered version (see /recordsets/<id>/versions/)",
            status=405,
            name="MethodNotAllowed",
            key="version",
        )
    try:
        number = int(version)
    except ValueError:
        raise RecordsetNotFound(f"{version!r} is not a version number") from None
    if number < 1:
        raise RecordsetNotFound(f"{version!r} is not a version number")
    return number


def _last_updated(job: Job) -> datetime | None:
    text = job.query.get("lastUpdated") if isinstance(job.query, dict) else None
    return datetime.fromisoformat(text) if isinstance(text, str) else None


@dataclass(frozen=True)
class ExportView:
    """One recordset version and the state of its export.

    ``job`` is the version's newest export job (None when none was ever made); ``state`` is
    ``ready`` (a published archive), ``building`` (queued or running), ``failed`` (the last
    build failed) or ``none`` (never built, cancelled or deleted).
    """

    recordset: str
    version: int
    last_updated: datetime | None
    job: Job | None
    state: ExportState
    form: str = "dwca-csv"

    @property
    def filename(self) -> str:
        """The archive's file name."""
        if self.job is not None and self.job.filename:
            return self.job.filename
        return export_filename(
            self.recordset, self.version, self.last_updated or now_utc(), self.form
        )

    def to_dict(self, base_url: str) -> dict[str, Any]:
        """The version as listed by ``GET /recordsets/{id}/versions/``."""
        base = base_url.rstrip("/")
        doc: dict[str, Any] = {
            "recordset": self.recordset,
            "version": self.version,
            "lastUpdated": _compact(self.last_updated),
            "lastUpdatedISO": utc_iso(self.last_updated),
            "export": {
                "state": self.state,
                "url": base + export_path(self.recordset, self.version, self.form),
            },
        }
        if self.job is not None:
            export = doc["export"]
            export["job"] = f"{base}/v1/jobs/{self.job.id}"
            if self.state == "ready":
                export.update(
                    filename=self.filename,
                    size=self.job.size,
                    checksum={"algorithm": "sha256", "value": self.job.sha256},
                    records=self.job.counts.get("records"),
                    mediarecords=self.job.counts.get("mediarecords"),
                )
            elif self.state == "failed":
                export["error"] = self.job.error
        return doc


def _compact(value: datetime | None) -> str | None:
    if value is None:
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return f"{aware.astimezone(UTC):%Y%m%d%H%M%S}"


def _state(job: Job | None) -> ExportState:
    if job is None:
        return "none"
    if job.state in _BUILDING:
        return "building"
    if job.state == "SUCCESS":
        return "ready"
    if job.state == "FAILURE":
        return "failed"
    return "none"  # CANCELLED, or EXPIRED (deleted by an admin)


def _jobs_by_version(ctx: Context, recordset: str, form: str = "dwca-csv") -> dict[int, list[Job]]:
    """The recordset's export jobs in ``form`` per version, newest first."""
    found: dict[int, list[Job]] = {}
    for job in ctx.jobs.jobs_for_hash(export_hash(recordset, form), kind=EXPORT_KIND):
        try:
            found.setdefault(int(job.data_version), []).append(job)
        except ValueError:
            log.warning("export job %s has a non-numeric version %r", job.id, job.data_version)
    return found


def _stored_versions(ctx: Context, recordset: str) -> dict[int, int]:
    """Versions the record source holds records of, with their record counts."""
    out: dict[int, int] = {}
    for batch in ctx.source().unique_values("version", {"recordset": recordset}, None):
        values = batch.column(0).to_pylist()
        counts = batch.column(1).to_pylist()
        for value, count in zip(values, counts, strict=True):
            try:
                out[int(str(value))] = int(count)
            except (TypeError, ValueError):
                continue
    return out


def _in_store(ctx: Context, recordset: str, version: int) -> bool:
    query = {"recordset": recordset, "version": version}
    return ctx.source().count("records", query, None) > 0


def get_export(ctx: Context, recordset: str, version: str, *, form: str = "dwca-csv") -> ExportView:
    """The state of one version's export in ``form``; 405 for ``HEAD``, 404 for an unknown
    recordset or version. A ``ready`` export whose archive is gone from storage (an S3
    lifecycle rule, a hand deletion) is recorded as deleted and reported as ``none``."""
    number = parse_version(version)
    rs = normalise_recordset(recordset)
    jobs = _jobs_by_version(ctx, rs, form).get(number, [])
    if not jobs and not _in_store(ctx, rs, number):
        raise RecordsetNotFound(f"recordset {recordset!r} has no version {number}")
    job = jobs[0] if jobs else None
    last = next((t for t in (_last_updated(j) for j in jobs) if t is not None), None)
    state = _state(job)
    if job is not None and state == "ready" and not ctx.storage.exists(_key(job)):
        job.state = "EXPIRED"
        job.error = "The export's archive is no longer stored."
        ctx.jobs.save(job)
        state = "none"
    if last is None and form != "dwca-csv":
        # The version's ingest time is known from its DwC-A export, built by the ingest.
        dwca_jobs = _jobs_by_version(ctx, rs).get(number, [])
        last = next((t for t in (_last_updated(j) for j in dwca_jobs) if t is not None), None)
    return ExportView(rs, number, last, job, state, form)


def list_versions(ctx: Context, recordset: str, *, base_url: str) -> dict[str, Any]:
    """Every known version of a recordset, newest first, with lastUpdated and export state."""
    rs = normalise_recordset(recordset)
    by_version = _jobs_by_version(ctx, rs)
    stored = _stored_versions(ctx, rs)
    if not by_version and not stored:
        raise RecordsetNotFound(f"no recordset has the id {recordset!r}")
    current = max(stored) if stored else None
    versions = []
    for number in sorted(set(by_version) | set(stored), reverse=True):
        jobs = by_version.get(number, [])
        job = jobs[0] if jobs else None
        last = next((t for t in (_last_updated(j) for j in jobs) if t is not None), None)
        doc = ExportView(rs, number, last, job, _state(job)).to_dict(base_url)
        doc["current"] = number == current
        doc["records"] = stored.get(number)
        versions.append(doc)
    return {"recordset": rs, "versions": versions}


def _key(job: Job) -> str:
    return job.archive_key or f"{job.id}.zip"


def _new_job(
    ctx: Context,
    rs: str,
    version: int,
    last_updated: datetime,
    *,
    base_url: str | None,
    form: str = "dwca-csv",
) -> Job:
    request = parse_download_request({"rq": {"recordset": rs, "version": version}, "form": form})
    return Job(
        id=str(uuid.uuid4()),
        kind=EXPORT_KIND,
        query_hash=export_hash(rs, form),
        request=request.canonical(),
        query={"recordset": rs, "version": version, "lastUpdated": last_updated.isoformat()},
        data_version=str(version),
        created=now_utc(),
        filename=export_filename(rs, version, last_updated, form),
        cancel_token=secrets.token_urlsafe(24),
        base_url=base_url or ctx.settings.base_url or None,
    )


def start_export(
    ctx: Context,
    recordset: str,
    version: int,
    *,
    last_updated: datetime | None = None,
    base_url: str | None = None,
    form: str = "dwca-csv",
) -> tuple[Job, bool]:
    """Queue the export of a version in ``form`` unless one is queued, running or done
    (atomic: two requests at once make one job). True when a new job was created and
    dispatched."""
    rs = normalise_recordset(recordset)
    candidate = _new_job(ctx, rs, version, last_updated or now_utc(), base_url=base_url, form=form)
    candidate.counted_records = _count_export(ctx, candidate)
    job, created = ctx.jobs.create_or_reuse(candidate, reuse_after=None)
    if created:
        _dispatch(ctx, job)
        log.info("export of recordset %s version %d queued as job %s", rs, version, job.id)
    return job, created


def _count_export(ctx: Context, job: Job) -> int | None:
    """The version's record count, which routes its export to the small or the large queue
    (only counted when ``large_job_records`` is set; None when the store cannot say)."""
    if not ctx.settings.large_job_records:
        return None
    try:
        return ctx.source().count("records", job.request.get("rq"), None)
    except Exception as exc:  # routing is a hint: an unknown size goes to the small queue
        log.warning("export %s: records not counted for routing (%s)", job.id, exc)
        return None


def _dispatch(ctx: Context, job: Job) -> None:
    if ctx.dispatcher is not None:
        ctx.dispatcher.dispatch(job.id, records=job.counted_records)
    # Without a dispatcher (``downloader ingest`` in its own process) the job waits PENDING
    # in the job store, where the serving process's local dispatcher finds it on its next
    # look, or builds it when it starts.


def request_export(
    ctx: Context, recordset: str, version: str, *, base_url: str, form: str = "dwca-csv"
) -> tuple[Literal["started", "running", "exists"], ExportView, str | None]:
    """``POST /recordsets/{id}/{version}/export/``: start a build unless one runs or the
    export exists. Returns what happened, the version's view and, for a new job, its
    cancel token. A superseded version whose records are no longer stored cannot be
    rebuilt: 410."""
    view = get_export(ctx, recordset, version, form=form)
    if view.state == "building":
        return "running", view, None
    if view.state == "ready":
        return "exists", view, None
    if not _in_store(ctx, view.recordset, view.version):
        raise RequestError(
            f"version {view.version} of recordset {view.recordset} has been replaced by a "
            "newer ingest and its records are no longer stored, so its export cannot be "
            "rebuilt; export the current version instead",
            status=410,
            name="VersionGone",
        )
    job, created = start_export(
        ctx,
        view.recordset,
        view.version,
        last_updated=view.last_updated,
        base_url=base_url,
        form=form,
    )
    new_view = ExportView(view.recordset, view.version, view.last_updated, job, _state(job), form)
    if not created:  # another request won the race an instant ago
        return ("exists" if new_view.state == "ready" else "running"), new_view, None
    return "started", new_view, job.cancel_token


def delete_export(
    ctx: Context, recordset: str, version: str, *, form: str = "dwca-csv"
) -> ExportView:
    """Delete a version's export in ``form`` (its archive; the job is kept as EXPIRED so its
    history stays visible), or stop its build. 404 when there is neither."""
    view = get_export(ctx, recordset, version, form=form)
    job = view.job
    if job is None or view.state not in ("ready", "building"):
        raise RecordsetNotFound(
            f"version {view.version} of recordset {view.recordset} has no export to delete"
        )
    if view.state == "building":
        from downloader.service.downloads import cancel_download

        cancel_download(ctx, job.id)
        return view
    ctx.storage.delete(_key(job))
    job.state = "EXPIRED"
    job.expires = now_utc()
    job.error = "The export was deleted by an administrator; POST to the export URL rebuilds it."
    ctx.jobs.save(job)
    log.info("export of recordset %s version %d deleted", view.recordset, view.version)
    return view


def export_after_ingest(
    ctx: Context, recordset: str, version: int, *, ingested_at: datetime | None = None
) -> Job:
    """The ingest hook: queue the export of the version an ingest just created, and stop
    the exports of older versions that have not finished (their records were just
    replaced, so finishing them would publish the wrong data)."""
    rs = normalise_recordset(recordset)
    from downloader.service.downloads import cancel_download

    for number, jobs in _jobs_by_version(ctx, rs).items():
        if number < version:
            for old in jobs:
                if old.state in _BUILDING:
                    cancel_download(ctx, old.id)
    job, _ = start_export(ctx, rs, version, last_updated=ingested_at or now_utc())
    return job


def _ingested_at(ctx: Context, recordset: str) -> datetime | None:
    # The embedded source can say when the version was written (``recordsets()`` is beyond
    # the RecordSource protocol, so it is looked up by name); other sources fall back to now.
    listing = getattr(ctx.source(), "recordsets", None)
    if not callable(listing):
        return None
    for info in listing():
        if getattr(info, "recordset", None) == recordset:
            when = getattr(info, "ingested_at", None)
            if isinstance(when, datetime):
                return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


def ingest_hook(ctx: Context) -> Callable[[Any], None]:
    """The callback ``downloader ingest`` calls for each ingested archive (anything with
    ``recordset`` and ``version``, i.e. an ``IngestResult``): it queues that version's
    export with :func:`export_after_ingest`. With the Celery dispatcher in ``ctx`` the
    build is sent to the workers at once; without a dispatcher the job waits in the job
    store for ``downloader serve``."""

    def queue_export(result: Any) -> None:
        rs = normalise_recordset(str(result.recordset))
        job = export_after_ingest(ctx, rs, int(result.version), ingested_at=_ingested_at(ctx, rs))
        log.info("export of %s version %s: job %s", rs, result.version, job.id)

    return queue_export
