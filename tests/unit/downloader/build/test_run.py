"""build_archive: archives per request shape (re-read with python-dwca-reader), progress,
cancellation, retries of transient errors, failures explained to the researcher, and the
local dispatcher's recovery of interrupted jobs."""

from __future__ import annotations

import errno
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dwca.read import DwCAReader

from downloader.backends import Context
from downloader.build import RetryLater, build_archive
from downloader.build.plan import archive_filename
from downloader.build.run import retry_delay
from downloader.config import load_settings
from downloader.dispatch.local import LocalDispatcher
from downloader.errors import JobStoreUnavailable, StorageUnavailable
from downloader.jobs.sqlite import SQLiteJobStore
from downloader.models import now_utc
from downloader.service import downloads as service
from downloader.service.downloads import cancel_download
from downloader.service.jobs import job_document
from downloader.storage.local import LocalStorage
from notify.smtp import LogMailer
from tests.support.schemas import check_archive_xml
from tests.unit.downloader.fakes import FakeSource

DWC = "http://rs.tdwg.org/dwc/terms/"


class Recorder:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def dispatch(self, job_id: str, *, records: int | None = None) -> None:
        self.ids.append(job_id)


def make_ctx(tmp_path: Path, source: FakeSource | None = None, **settings: Any) -> Context:
    src = source or FakeSource(30)
    return Context(
        settings=load_settings(
            {}, overrides={"data_dir": str(tmp_path), "batch_size": 4, **settings}
        ),
        jobs=SQLiteJobStore(tmp_path / "jobs.sqlite3"),
        storage=LocalStorage(tmp_path / "archives"),
        mailer=LogMailer(),
        dispatcher=Recorder(),
        source_factory=lambda: src,
    )


def request(ctx: Context, email: str | None = "ana@example.org", **params: Any) -> str:
    params.setdefault("rq", '{"genus": "acer"}')
    doc = service.request_download(ctx, params, email=email, base_url="http://svc")
    return str(doc["id"])


def archive_path(ctx: Context, job_id: str) -> Path:
    """Where the job's archive is; a zip's meta.xml and eml.xml are checked against the
    schemas they name, and its columns' local names, on the way."""
    job = ctx.jobs.get(job_id)
    assert job is not None and job.archive_key
    path = Path(ctx.settings.data_dir) / "archives" / job.archive_key
    if path.suffix == ".zip" and path.exists():
        check_archive_xml(path)
    return path


def test_default_archive_has_core_extensions_citations_and_eml(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    job = build_archive(request(ctx), ctx)
    assert job is not None and job.state == "SUCCESS"
    with DwCAReader(str(archive_path(ctx, job.id))) as reader:
        core = reader.descriptor.core
        assert core.file_location == "occurrence.csv"
        assert [e.file_location for e in reader.descriptor.extensions] == [
            "occurrence_raw.csv",
            "multimedia.csv",
            "multimedia_raw.csv",
        ]
        rows = list(reader)
        assert len(rows) == 10 == job.counts["records"]
        assert all(r.data[DWC + "genus"] == "acer" for r in rows)
        # Every record has its verbatim row and its one media record attached.
        assert all(len(r.extensions) == 3 for r in rows)
        assert reader.metadata is not None
    with zipfile.ZipFile(archive_path(ctx, job.id)) as zf:
        names = set(zf.namelist())
        citation = zf.read("records.citation.txt").decode()
    assert {"meta.xml", "eml.xml", "records.citation.txt", "mediarecords.citation.txt"} <= names
    assert "10 records" in citation and "rs-0 (5 records)" in citation
    assert job.size == archive_path(ctx, job.id).stat().st_size
    assert job.expires is not None and job.completed is not None
    assert (job.expires - job.completed).days == 30
    assert job.filename == archive_filename(job) and job.filename.startswith("dwca-acer-")
    # The requester was told, with the link.
    (msg,) = ctx.mailer.sent  # type: ignore[attr-defined]  # LogMailer in this test
    assert msg["To"] == "ana@example.org" and job.filename in msg.get_content()


#: The header of iDigBio's occurrence.csv and multimedia.csv, as its worker writes them.
IDIGBIO_OCCURRENCE_HEADER = (
    "coreid,idigbio:associatedsequences,idigbio:barcodeValue,dwc:basisOfRecord,dwc:bed,"
    "gbif:canonicalName,dwc:catalogNumber,dwc:class,dwc:collectionCode,dwc:collectionID,"
    "idigbio:collectionName,dwc:recordedBy,dwc:vernacularName,idigbio:commonnames,"
    "dwc:continent,dwc:coordinateUncertaintyInMeters,dwc:country,idigbio:isoCountryCode,"
    "dwc:county,dwc:datasetID,idigbio:eventDate,idigbio:dateModified,"
    "idigbio:dataQualityScore,dwc:earliestAgeOrLowestStage,dwc:earliestEonOrLowestEonothem,"
    "dwc:earliestEpochOrLowestSeries,dwc:earliestEraOrLowestErathem,"
    "dwc:earliestPeriodOrLowestSystem,idigbio:etag,dwc:eventDate,dwc:family,dwc:fieldNumber,"
    "idigbio:flags,dwc:formation,dwc:genus,dwc:geologicalContextID,idigbio:geoPoint,"
    "dwc:group,idigbio:hasImage,idigbio:hasMedia,dwc:higherClassification,"
    "dwc:highestBiostratigraphicZone,dwc:individualCount,dwc:infraspecificEpithet,"
    "dwc:institutionCode,dwc:institutionID,idigbio:institutionName,dwc:kingdom,"
    "dwc:latestAgeOrHighestStage,dwc:latestEonOrHighestEonothem,"
    "dwc:latestEpochOrHighestSeries,dwc:latestEraOrHighestErathem,"
    "dwc:latestPeriodOrHighestSystem,dwc:lithostratigraphicTerms,dwc:locality,"
    "dwc:lowestBiostratigraphicZone,dwc:maximumDepthInMeters,dwc:maximumElevationInMeters,"
    "idigbio:mediarecords,dwc:member,dwc:minimumDepthInMeters,dwc:minimumElevationInMeters,"
    "dwc:municipality,dwc:occurrenceID,dwc:order,dwc:phylum,idigbio:recordIds,"
    "dwc:recordNumber,idigbio:recordset,dwc:scientificName,dwc:specificEpithet,"
    "dwc:startDayOfYear,dwc:stateProvince,dwc:taxonID,dwc:taxonomicStatus,dwc:taxonRank,"
    "dwc:typeStatus,idigbio:uuid,dwc:verbatimEventDate,dwc:verbatimLocality,idigbio:version,"
    "dwc:waterBody"
)
IDIGBIO_MULTIMEDIA_HEADER = (
    "coreid,ac:accessURI,idigbio:dateModified,idigbio:dataQualityScore,idigbio:etag,"
    "idigbio:flags,dcterms:format,idigbio:hasSpecimen,ac:licenseLogoURL,idigbio:mediaType,"
    "dcterms:modified,idigbio:recordIds,idigbio:records,idigbio:recordsets,dcterms:rights,"
    "ac:tag,dc:type,idigbio:uuid,idigbio:version,xmpRights:WebStatement,"
    "exif:PixelXDimension,exif:PixelYDimension"
)


def test_default_columns_are_in_idigbio_order(tmp_path: Path) -> None:
    # Scripts written against iDigBio's archives address columns by position.
    ctx = make_ctx(tmp_path)
    job = build_archive(request(ctx), ctx)
    assert job is not None and job.state == "SUCCESS"
    with zipfile.ZipFile(archive_path(ctx, job.id)) as zf:
        occurrence = zf.read("occurrence.csv").decode().split("\n", 1)[0]
        multimedia = zf.read("multimedia.csv").decode().split("\n", 1)[0]
    assert occurrence == IDIGBIO_OCCURRENCE_HEADER
    assert multimedia == IDIGBIO_MULTIMEDIA_HEADER
    with DwCAReader(str(archive_path(ctx, job.id))) as reader:
        assert len(list(reader)) == job.counts["records"]


def test_field_lists_raw_core_and_tsv(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    job = build_archive(
        request(
            ctx,
            record_fields='["uuid", "scientificname", "data.dwc:catalogNumber"]',
            core_source="raw",
            form="dwca-tsv",
        ),
        ctx,
    )
    assert job is not None and job.state == "SUCCESS", job and job.error
    with DwCAReader(str(archive_path(ctx, job.id))) as reader:
        assert reader.descriptor.core.file_location == "occurrence_raw.tsv"
        rows = list(reader)
        assert len(rows) == 10
        assert set(rows[0].data) == {DWC + "catalogNumber"}
        indexed = [e for e in rows[0].extensions if e.rowtype.endswith("Occurrence")]
        assert set(indexed[0].data) == {
            "http://portal.idigbio.org/terms/uuid",
            DWC + "scientificName",
        }


@pytest.mark.parametrize(
    ("params", "core_file"),
    [
        # Only verbatim terms: the records' verbatim file is the core, not multimedia.csv.
        ({"record_fields": '["data.dwc:catalogNumber"]'}, "occurrence_raw.csv"),
        # core_source=raw without a verbatim term: the records' indexed file is the core.
        ({"record_fields": '["uuid", "scientificname"]', "core_source": "raw"}, "occurrence.csv"),
    ],
)
def test_a_field_list_leaving_one_records_file_keeps_records_as_the_core(
    tmp_path: Path, params: dict[str, str], core_file: str
) -> None:
    ctx = make_ctx(tmp_path)
    job = build_archive(request(ctx, **params), ctx)
    assert job is not None and job.state == "SUCCESS", job and job.error
    assert job.counts["records"] == 10
    with DwCAReader(str(archive_path(ctx, job.id))) as reader:
        assert reader.descriptor.core.file_location == core_file
        assert reader.descriptor.core.type == DWC + "Occurrence"
        assert len(list(reader)) == 10
    bare = build_archive(request(ctx, form="csv", **params), ctx)
    assert bare is not None and bare.state == "SUCCESS", bare and bare.error
    lines = archive_path(ctx, bare.id).read_text().splitlines()
    assert len(lines) == 11 and "ac:accessURI" not in lines[0]


def test_media_core_uses_the_media_uuid_as_id(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    job = build_archive(request(ctx, core_type="mediarecords"), ctx)
    assert job is not None and job.state == "SUCCESS", job and job.error
    with DwCAReader(str(archive_path(ctx, job.id))) as reader:
        assert reader.descriptor.core.file_location == "multimedia.csv"
        rows = list(reader)
        assert len(rows) == 10 and len({r.id for r in rows}) == 10
        assert all(r.id == r.data["http://portal.idigbio.org/terms/uuid"] for r in rows)
        assert all(len(r.extensions) == 1 for r in rows)  # its verbatim row


def test_unique_names_core(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    job = build_archive(request(ctx, rq="{}", core_type="uniquenames"), ctx)
    assert job is not None and job.state == "SUCCESS", job and job.error
    with DwCAReader(str(archive_path(ctx, job.id))) as reader:
        assert reader.descriptor.core.file_location == "names.csv"
        assert len(list(reader)) == 30
    # The status says how many distinct names the archive holds, not "0 records".
    assert job.counts["names"] == 30 and job.total_records == 30


def test_progress_is_recorded_while_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(tmp_path, progress_every=2)
    seen: list[tuple[int, int | None]] = []
    original = ctx.jobs.update_progress

    def spy(job_id: str, written: int, total: int | None) -> None:
        seen.append((written, total))
        original(job_id, written, total)

    monkeypatch.setattr(ctx.jobs, "update_progress", spy)
    job = build_archive(request(ctx), ctx)
    assert job is not None and job.state == "SUCCESS"
    assert len(seen) >= 3 and all(total == 20 for _, total in seen)
    written = [w for w, _ in seen]
    assert written == sorted(written) and 0 < written[-1] <= 20


def test_cancellation_discards_the_partial_archive(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    job_id = request(ctx)
    ctx.jobs.request_cancel(job_id)
    # A queued job that was cancelled is never started.
    assert ctx.jobs.claim(job_id, max_attempts=3) is None
    job = build_archive(job_id, ctx)
    assert job is not None and job.state == "CANCELLED"
    assert list((tmp_path / "archives").iterdir()) == []


def test_cancel_during_the_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("downloader.build.progress.CANCEL_CHECK_SECONDS", 0.0)
    ctx = make_ctx(tmp_path)
    job_id = request(ctx)
    checks = {"n": 0}

    def cancelled_on_second_check(_: str) -> bool:
        checks["n"] += 1
        return checks["n"] >= 2

    # Simulates a cancel request arriving while the archive is being written.
    monkeypatch.setattr(ctx.jobs, "is_cancel_requested", cancelled_on_second_check)
    job = build_archive(job_id, ctx)
    assert job is not None and job.state == "CANCELLED"
    assert service.get_status(ctx, job_id, base_url="http://svc")["cancelled"] is True
    assert list((tmp_path / "archives").iterdir()) == []


def test_cancel_download_of_a_queued_job(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    job_id = request(ctx)
    job = cancel_download(ctx, job_id)
    assert job is not None and job.state == "CANCELLED"
    assert build_archive(job_id, ctx) is None


def _expire_retries(ctx: Context, job_id: str, seconds: float) -> None:
    """Move the job's first transient error ``seconds`` into the past (no sleeping)."""
    job = ctx.jobs.get(job_id)
    assert job is not None and job.retry_since is not None
    job.retry_since -= timedelta(seconds=seconds)
    ctx.jobs.save(job)


def test_a_transient_error_is_retried_with_the_reason_and_time_in_the_status(
    tmp_path: Path,
) -> None:
    ctx = make_ctx(tmp_path, FakeSource(30, fail_batches=99), transient_retry_first_seconds=10)
    job_id = request(ctx)
    before = now_utc()
    with pytest.raises(RetryLater) as raised:
        build_archive(job_id, ctx)
    assert raised.value.delay == 10
    status = service.get_status(ctx, job_id, base_url="http://svc")
    assert status["task_status"] == "PENDING" and status["complete"] is False
    assert status["retrying"] is True
    assert "record store could not be reached" in status["error"]
    retry_at = datetime.fromisoformat(status["retry_at"])
    assert before + timedelta(seconds=10) <= retry_at <= now_utc() + timedelta(seconds=10)
    # The jobs resource says the same in its own words.
    queued = ctx.jobs.get(job_id)
    assert queued is not None
    resource = job_document(ctx, queued, base_url="http://svc")
    assert resource["status"] == "STARTING" and resource["retrying"] is True
    assert resource["retryAt"] == status["retry_at"] and resource["error"] == status["error"]
    # The next wait doubles.
    with pytest.raises(RetryLater) as raised:
        build_archive(job_id, ctx)
    assert raised.value.delay == 20
    job = ctx.jobs.get(job_id)
    assert job is not None and job.retries == 2 and job.state == "PENDING"
    assert ctx.mailer.sent == []  # type: ignore[attr-defined]  # LogMailer in this test


def test_transient_errors_fail_with_the_reason_once_the_retry_total_is_spent(
    tmp_path: Path,
) -> None:
    # max_attempts counts interrupted builds only: many retries do not exhaust it.
    ctx = make_ctx(
        tmp_path, FakeSource(30, fail_batches=99), max_attempts=1, transient_retry_seconds=600
    )
    job_id = request(ctx)
    for _ in range(3):
        with pytest.raises(RetryLater):
            build_archive(job_id, ctx)
    # The last wait is cut to what is left of the total.
    _expire_retries(ctx, job_id, 595)
    with pytest.raises(RetryLater) as raised:
        build_archive(job_id, ctx)
    assert raised.value.delay <= 5
    _expire_retries(ctx, job_id, 10)
    job = build_archive(job_id, ctx)
    assert job is not None and job.state == "FAILURE"
    assert "record store could not be reached" in (job.error or "")
    assert "5 attempts" in (job.error or "")
    status = service.get_status(ctx, job_id, base_url="http://svc")
    assert status["task_status"] == "FAILURE" and status["retrying"] is False
    assert "retry_at" not in status
    assert list((tmp_path / "archives").iterdir()) == []
    (msg,) = ctx.mailer.sent  # type: ignore[attr-defined]  # LogMailer in this test
    assert "could not be built" in msg["Subject"]
    assert "record store could not be reached" in msg.get_content()


def test_no_retries_when_the_total_is_zero(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, FakeSource(30, fail_batches=1), transient_retry_seconds=0)
    job_id = request(ctx)
    job = build_archive(job_id, ctx)
    assert job is not None and job.state == "FAILURE" and job.attempts == 1
    assert "record store could not be reached" in (job.error or "")


def test_a_transient_error_then_success(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, FakeSource(30, fail_batches=2), max_attempts=1)
    job_id = request(ctx)
    for _ in range(2):
        with pytest.raises(RetryLater):
            build_archive(job_id, ctx)
    job = build_archive(job_id, ctx)
    assert job is not None and job.state == "SUCCESS" and job.attempts == 3
    assert job.retry_at is None and job.error is None
    status = service.get_status(ctx, job_id, base_url="http://svc")
    assert status["retrying"] is False and "error" not in status


class _FlakyStorage(LocalStorage):
    """Local storage whose publish fails ``failures`` times as S3 does under throttling."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def publish(self, key: str, writer: Any, **kwargs: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise StorageUnavailable("S3 is unavailable while uploading: SlowDown")
        super().publish(key, writer, **kwargs)


def test_a_storage_error_is_retried_and_the_archive_then_published(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    ctx.storage = _FlakyStorage(tmp_path / "archives", failures=1)
    job_id = request(ctx)
    with pytest.raises(RetryLater):
        build_archive(job_id, ctx)
    status = service.get_status(ctx, job_id, base_url="http://svc")
    assert status["retrying"] is True and "archive storage" in status["error"]
    assert [p.name for p in (tmp_path / "archives").iterdir()] == []  # nothing half-written
    job = build_archive(job_id, ctx)
    assert job is not None and job.state == "SUCCESS"
    with DwCAReader(str(archive_path(ctx, job_id))) as dwca:
        assert len(list(dwca)) == job.counts["records"] == 10  # the acer records


def test_a_job_store_error_during_a_build_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(tmp_path)
    job_id = request(ctx)
    check = ctx.jobs.is_cancel_requested
    calls = {"n": 0}

    def blip(job_id: str) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:  # the build's first cancel check
            raise JobStoreUnavailable("the job store (Redis) cannot be reached: reset")
        return check(job_id)

    monkeypatch.setattr(ctx.jobs, "is_cancel_requested", blip)
    with pytest.raises(RetryLater):
        build_archive(job_id, ctx)
    status = service.get_status(ctx, job_id, base_url="http://svc")
    assert status["retrying"] is True and "job store" in status["error"]
    job = build_archive(job_id, ctx)
    assert job is not None and job.state == "SUCCESS"


def test_the_retry_delay_doubles_up_to_the_cap() -> None:
    assert [retry_delay(n, first=10) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    assert retry_delay(100, first=1, cap=60) == 60


def test_a_failed_job_is_not_reused(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, FakeSource(30, fail_batches=99), transient_retry_seconds=0)
    first = request(ctx)
    build_archive(first, ctx)
    assert request(ctx) != first


def test_new_data_version_builds_afresh(tmp_path: Path) -> None:
    source = FakeSource(30)
    ctx = make_ctx(tmp_path, source)
    first = request(ctx)
    source.version = "2"  # an ingest changed the data
    assert request(ctx) != first


def test_dispatcher_requeues_interrupted_jobs_and_gives_up_after_max_attempts(
    tmp_path: Path,
) -> None:
    ctx = make_ctx(tmp_path, max_attempts=2)
    job_id = request(ctx)
    # A worker claimed it, then the service died.
    assert ctx.jobs.claim(job_id, max_attempts=2) is not None
    dispatcher = LocalDispatcher(ctx.settings, ctx=ctx)
    dispatcher.recover()
    job = ctx.jobs.get(job_id)
    assert job is not None and job.state == "PENDING" and job.attempts == 1
    assert ctx.jobs.claim(job_id, max_attempts=2) is not None  # second attempt dies too
    dispatcher.recover()
    job = ctx.jobs.get(job_id)
    assert job is not None and job.state == "FAILURE"
    assert "interrupted 2 times" in (job.error or "")
    assert [m["To"] for m in ctx.mailer.sent] == ["ana@example.org"]  # type: ignore[attr-defined]  # LogMailer


def test_dispatcher_stops_a_build_over_the_time_limit_and_says_so(tmp_path: Path) -> None:
    import multiprocessing
    import time

    from downloader.dispatch.local import _Run

    ctx = make_ctx(tmp_path, job_time_limit_seconds=60)
    job_id = request(ctx)
    assert ctx.jobs.claim(job_id, max_attempts=3) is not None
    dispatcher = LocalDispatcher(ctx.settings, ctx=ctx)
    # A build process that would run for far too long, started "61 seconds ago".
    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(600,))
    process.start()
    dispatcher._running[job_id] = _Run(process, time.monotonic() - 61)
    dispatcher._enforce_time_limit()
    assert not process.is_alive()
    job = ctx.jobs.get(job_id)
    assert job is not None and job.state == "FAILURE"
    assert "longer than the limit of 1 minute" in (job.error or "")
    assert [m["To"] for m in ctx.mailer.sent] == ["ana@example.org"]  # type: ignore[attr-defined]  # LogMailer


IDIGBIO = "http://portal.idigbio.org/terms/"


@pytest.mark.parametrize("core_type", ["records", "mediarecords"])
def test_an_empty_result_keeps_every_file_header_only(tmp_path: Path, core_type: str) -> None:
    # Scripts that open occurrence_raw.csv must not break on a download matching nothing.
    ctx = make_ctx(tmp_path)
    job = build_archive(request(ctx, rq='{"genus": "nothing"}', core_type=core_type), ctx)
    assert job is not None and job.state == "SUCCESS", job and job.error
    assert job.counts["records"] == job.counts["mediarecords"] == 0
    data_files = ["multimedia.csv", "multimedia_raw.csv"]
    citations = ["mediarecords.citation.txt"]
    if core_type == "records":
        data_files = ["occurrence.csv", "occurrence_raw.csv", *data_files]
        citations = ["records.citation.txt", *citations]
    with zipfile.ZipFile(archive_path(ctx, job.id)) as zf:
        assert zf.namelist() == [
            *data_files,
            *citations,
            "citations.txt",
            "rights.txt",
            "eml.xml",
            "meta.xml",
        ]
        for name in data_files:
            lines = zf.read(name).decode().splitlines()
            assert len(lines) == 1 and lines[0].startswith("coreid"), name
        assert zf.read(data_files[1]) == b"coreid\n"
        assert "0 records" in zf.read(citations[-1]).decode()
    with DwCAReader(str(archive_path(ctx, job.id))) as reader:
        declared = [reader.descriptor.core.file_location]
        declared += [e.file_location for e in reader.descriptor.extensions]
        assert declared == data_files
        assert list(reader) == []


def test_a_result_without_media_still_has_the_media_files(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    # The fake source gives media to every third record: all acer, no quercus.
    job = build_archive(request(ctx, rq='{"genus": "quercus"}'), ctx)
    assert job is not None and job.state == "SUCCESS", job and job.error
    assert job.counts["records"] == 10 and job.counts["mediarecords"] == 0
    with DwCAReader(str(archive_path(ctx, job.id))) as reader:
        assert [e.file_location for e in reader.descriptor.extensions] == [
            "occurrence_raw.csv",
            "multimedia.csv",
            "multimedia_raw.csv",
        ]
        assert len(list(reader)) == 10


@pytest.mark.parametrize("form", ["dwca-csv", "dwca-tsv"])
@pytest.mark.parametrize("core_type", ["records", "mediarecords", "uniquelocality", "uniquenames"])
@pytest.mark.parametrize("rq", ['{"genus": "acer"}', '{"genus": "nothing"}'])
def test_every_column_has_its_own_local_name_and_is_read(
    tmp_path: Path, form: str, core_type: str, rq: str
) -> None:
    # ALA's dwcahandler keys columns by the local name of their term and refused archives
    # where idigbio:eventDate and dwc:eventDate shared one (archive_path checks the local
    # names, as dwcahandler does, and validates meta.xml and eml.xml).
    ctx = make_ctx(tmp_path)
    job = build_archive(request(ctx, rq=rq, form=form, core_type=core_type), ctx)
    assert job is not None and job.state == "SUCCESS", job and job.error
    path = archive_path(ctx, job.id)
    with zipfile.ZipFile(path) as zf:
        delimiter = "\t" if form == "dwca-tsv" else ","
        headers = {
            name: zf.read(name).decode().split("\n", 1)[0].split(delimiter)
            for name in zf.namelist()
            if name.endswith((".csv", ".tsv"))
        }
    with DwCAReader(str(path)) as reader:
        descriptors = [reader.descriptor.core, *reader.descriptor.extensions]
        for descriptor in descriptors:
            # python-dwca-reader keys a row's data by term: one key per declared column.
            terms = [f["term"] for f in descriptor.fields]
            assert len(set(terms)) == len(terms)
            assert len(descriptor.fields) == max(1, len(headers[descriptor.file_location]) - 1)
        for row in reader:
            assert len(row.data) == len(reader.descriptor.core.fields)
    if core_type == "records":
        with DwCAReader(str(path)) as reader:
            core = reader.descriptor.core
            by_term = {f["term"]: f["index"] for f in core.fields}
            # iDigBio's header is kept; the interpreted date has its own local name.
            assert headers[core.file_location][by_term[IDIGBIO + "datecollected"]] == (
                "idigbio:eventDate"
            )
            assert headers[core.file_location][by_term[DWC + "eventDate"]] == "dwc:eventDate"


class _FillingFile:
    """A real temporary file on a disk that fills up after ``room`` more bytes."""

    def __init__(self, file: Any, disk: FullDisk) -> None:
        self._file = file
        self._disk = disk

    def write(self, data: bytes) -> int:
        if self._disk.room is not None:
            if len(data) > self._disk.room:
                raise OSError(errno.ENOSPC, "No space left on device")
            self._disk.room -= len(data)
        return int(self._file.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


class FullDisk(LocalStorage):
    """Local storage whose disk has ``room`` bytes left (None: plenty)."""

    room: int | None = None

    def open_writer(self, key: str) -> Any:
        return _FillingFile(super().open_writer(key), self)


def test_a_full_disk_fails_the_build_saying_so_and_a_later_one_succeeds(
    tmp_path: Path,
) -> None:
    ctx = make_ctx(tmp_path)
    disk = FullDisk(tmp_path / "archives")
    ctx.storage = disk
    disk.room = 2000  # the build starts, then the disk is full part-way through
    job = build_archive(request(ctx), ctx)
    assert job is not None and job.state == "FAILURE" and job.attempts == 1
    assert "out of disk space" in (job.error or "") and "partial file" in (job.error or "")
    assert list((tmp_path / "archives").iterdir()) == []  # the partial file is gone
    [mail] = ctx.mailer.sent  # type: ignore[attr-defined]  # LogMailer
    assert "out of disk space" in mail.get_content()
    # Space is back: the same request is a new job (a failed one is never reused).
    disk.room = None
    again = build_archive(request(ctx), ctx)
    assert again is not None and again.state == "SUCCESS" and again.id != job.id
    with DwCAReader(str(archive_path(ctx, again.id))) as reader:
        assert len(list(reader)) == again.counts["records"]


def test_a_disk_full_at_publish_is_the_same_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(tmp_path)

    def no_room(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("downloader.storage.local.os.fsync", no_room)
    job = build_archive(request(ctx), ctx)
    assert job is not None and job.state == "FAILURE" and job.attempts == 1
    assert "out of disk space" in (job.error or "")
    assert list((tmp_path / "archives").iterdir()) == []


class _ReadAheadSource(FakeSource):
    """A FakeSource that records what a build said it would read, and when."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.calls: list[str] = []

    def read_ahead(self, rtype: str, rq: Any, mq: Any) -> None:
        self.calls.append(f"read_ahead {rtype}")

    def count(self, rtype: Any, rq: Any, mq: Any) -> int:
        self.calls.append(f"count {rtype}")
        return super().count(rtype, rq, mq)


@pytest.mark.parametrize(
    ("params", "read"),
    [
        ({}, ["records", "mediarecords"]),
        ({"core_type": "mediarecords"}, ["mediarecords"]),
        ({"rq": "{}", "core_type": "uniquenames"}, []),
    ],
)
def test_a_build_says_which_record_types_it_reads_before_it_counts(
    tmp_path: Path, params: dict[str, Any], read: list[str]
) -> None:
    # A source that can fetch a build's rows while it counts them (the search cluster) is
    # told which record types the archive reads, before the first count.
    source = _ReadAheadSource(30)
    ctx = make_ctx(tmp_path, source)
    job_id = request(ctx, **params)
    source.calls.clear()  # the request's own count
    job = build_archive(job_id, ctx)
    assert job is not None and job.state == "SUCCESS", job and job.error
    first_count = next(i for i, c in enumerate(source.calls) if c.startswith("count"))
    said = [c.split()[1] for c in source.calls if c.startswith("read_ahead")]
    assert said == read
    assert all(not c.startswith("read_ahead") for c in source.calls[first_count:])
