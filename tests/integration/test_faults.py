"""The fault-injection suite: kill the service or one worker at every point of a build.

``downloader serve`` runs as a subprocess in its own process group, with the fault points of
``tests/support/faults/sitecustomize.py`` armed by environment variables; a fault SIGKILLs
either the whole group (serve and its workers: a power cut, the OOM killer taking the lot) or
the one worker building the job. After a whole-service kill a fresh serve is started on the
same data directory, as an operator's supervisor would. Whatever the point, the invariant is
the same:

- the job ends SUCCESS with a complete archive (the bytes served match the recorded sha256
  and size, python-dwca-reader reads every record the store holds for the query), or
  FAILURE/CANCELLED with a reason;
- no orphan files: the archive directory holds the published archive of each successful job
  and nothing else (no temporary files, no archive of a cancelled job);
- the job is built to SUCCESS once (one "done" in the logs) and its requester gets at most
  one email, exactly one wherever the kill came before the job was recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dwca.read import DwCAReader

from downloader.backends import make_context
from downloader.config import load_settings
from tests.support.schemas import check_archive_xml
from tests.support.serve import Serve as BaseServe
from tests.support.smtp import Inbox, smtp_server
from tests.support.store import open_store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FAULTS = ROOT / "tests" / "support" / "faults"
SAMPLES = ROOT / "tests" / "fixtures" / "dwca" / "gbif-results.zip"
SYNTHETIC = 6000
#: Every synthetic record has a kingdom: the query matches thousands of rows, so the archive
#: is written in many chunks and "mid-stream" really is the middle of it.
QUERY = {"kingdom": {"type": "exists"}}
EMAIL = "faults@example.org"
DEADLINE = 120.0


class Serve(BaseServe):
    """``downloader serve`` in its own process group (so a fault can kill all of it), with
    the fault points on its path and one worker building in many small batches."""

    def __init__(self, data_dir: Path, inbox: Inbox, **env: str) -> None:
        super().__init__(
            data_dir,
            own_group=True,
            **{
                "PYTHONPATH": os.pathsep.join([str(FAULTS), str(ROOT)]),
                "DOWNLOADER_SMTP_HOST": inbox.host,
                "DOWNLOADER_SMTP_PORT": str(inbox.port),
                "DOWNLOADER_MAIL_FROM": "downloads@example.org",
                "DOWNLOADER_WORKERS": "1",
                "DOWNLOADER_PROGRESS_EVERY": "500",
                "DOWNLOADER_BATCH_SIZE": "500",
                **env,
            },
        )

    def wait_killed(self) -> None:
        """Wait for the fault to take serve down (its group is SIGKILLed)."""
        try:
            self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError("the fault never fired:\n" + self.log.read_text()) from None
        assert self.proc.returncode == -signal.SIGKILL, self.log.read_text()


def final_status(serve: Serve, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while True:
        doc = serve.get(f"/v2/download/{job_id}").json()
        if doc["complete"]:
            return doc
        assert time.monotonic() < deadline, f"not complete after {DEADLINE}s: {doc}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from downloader.ingest.load import ingest_paths, ingest_synthetic

    data = tmp_path_factory.mktemp("store")
    _, failures = ingest_paths(data, [SAMPLES])
    assert not failures, failures
    ingest_synthetic(data, SYNTHETIC, seed=3)
    return data


@pytest.fixture(scope="module")
def expected_records(store: Path) -> int:
    # The oracle is the store read with plain SQL, not with our RecordSource.
    with open_store(str(store / "records.duckdb")) as con:
        row = con.execute("SELECT count(*) FROM records WHERE kingdom IS NOT NULL").fetchone()
    assert row is not None and row[0] > 2000
    return int(row[0])


@pytest.fixture
def data_dir(store: Path, tmp_path: Path) -> Path:
    """A data directory of its own for each case: the shared store, no jobs, no archives."""
    data = tmp_path / "data"
    shutil.copytree(store, data, ignore=shutil.ignore_patterns("jobs*", "archives", "*.log"))
    return data


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with smtp_server() as box:
        yield box


def request_download(serve: Serve) -> str:
    response = serve.get("/v2/download/", params={"rq": json.dumps(QUERY), "email": EMAIL})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def check_invariant(
    serve: Serve, data_dir: Path, job_id: str, expected_records: int
) -> dict[str, Any]:
    """The job's outcome is whole: a complete archive, or a final state with a reason; and
    the archive directory holds exactly the archives of successful jobs."""
    doc = final_status(serve, job_id)
    archives = data_dir / "archives"
    left = sorted(p.name for p in archives.iterdir()) if archives.exists() else []
    if doc["state"] == "SUCCESS":
        body = serve.get(doc["download_url"][len(serve.url) :]).content
        assert len(body) == doc["size"]
        assert hashlib.sha256(body).hexdigest() == doc["checksum"]["value"]
        copy = data_dir.parent / f"{job_id}.zip"
        copy.write_bytes(body)
        check_archive_xml(copy)
        with DwCAReader(str(copy)) as reader:
            ids = [row.id for row in reader]
        assert len(ids) == len(set(ids)) == expected_records == doc["counts"]["records"]
        assert left == [f"{job_id}.zip"], left
    else:
        assert doc["state"] in ("FAILURE", "CANCELLED"), doc
        assert doc["error"], doc
        assert left == [], left
    logs = "".join(p.read_text() for p in sorted(data_dir.glob("serve-*.log")))
    assert logs.count(f"job {job_id} done") == (doc["state"] == "SUCCESS"), logs
    return doc


#: Where a kill of the whole service lands, and how many emails the requester gets: one,
#: except for a kill in the instant between recording SUCCESS and sending its email (emails
#: go out at most once; the status URL still says the archive is ready).
SERVICE_POINTS = {
    "claim.before": 1,
    "claim.after": 1,
    "stream": 1,
    "publish.before": 1,
    "publish.after": 1,
    "saved": 0,
    "email.after": 1,
}


@pytest.mark.parametrize("point", SERVICE_POINTS)
def test_service_killed_at_a_build_point_then_restarted(
    point: str, data_dir: Path, expected_records: int, inbox: Inbox
) -> None:
    once = data_dir / "fault-fired"
    serve = Serve(
        data_dir, inbox, DOWNLOADER_FAULT=f"{point}:service", DOWNLOADER_FAULT_ONCE=str(once)
    )
    job_id = request_download(serve)
    serve.wait_killed()
    assert once.exists()

    serve = Serve(data_dir, inbox)
    try:
        doc = check_invariant(serve, data_dir, job_id, expected_records)
        assert doc["task_status"] == "SUCCESS", doc
        emails = SERVICE_POINTS[point]
        if emails:
            inbox.wait_for(emails, timeout=DEADLINE)
        time.sleep(1.0)  # a duplicate would be sent right after the first
        assert len(inbox.to(EMAIL)) == emails, [m["Subject"] for m in inbox.messages]
    finally:
        serve.stop()


@pytest.mark.parametrize("point", ["claim.after", "stream", "publish.before", "publish.after"])
def test_worker_killed_at_a_build_point_while_serve_runs_on(
    point: str, data_dir: Path, expected_records: int, inbox: Inbox
) -> None:
    once = data_dir / "fault-fired"
    serve = Serve(
        data_dir, inbox, DOWNLOADER_FAULT=f"{point}:worker", DOWNLOADER_FAULT_ONCE=str(once)
    )
    try:
        job_id = request_download(serve)
        doc = check_invariant(serve, data_dir, job_id, expected_records)
        assert once.exists()
        assert doc["task_status"] == "SUCCESS", doc
        inbox.wait_for(1, timeout=DEADLINE)
        time.sleep(1.0)
        assert len(inbox.to(EMAIL)) == 1
        # A new worker took the dead one's place and builds the next job.
        other = serve.get("/v2/download/", params={"rq": '{"genus": "acer"}'}).json()
        assert final_status(serve, other["id"])["task_status"] == "SUCCESS"
    finally:
        serve.stop()


def test_a_worker_that_dies_at_every_attempt_fails_the_job_with_a_reason(
    data_dir: Path, expected_records: int, inbox: Inbox
) -> None:
    serve = Serve(data_dir, inbox, DOWNLOADER_FAULT="stream:worker", DOWNLOADER_MAX_ATTEMPTS="2")
    try:
        job_id = request_download(serve)
        doc = check_invariant(serve, data_dir, job_id, expected_records)
        assert doc["state"] == "FAILURE"
        assert "interrupted 2 times" in doc["error"]
        (mail,) = inbox.wait_for(1, timeout=DEADLINE)
        assert mail["To"] == EMAIL
        time.sleep(1.0)
        assert len(inbox.to(EMAIL)) == 1
    finally:
        serve.stop()


def test_a_cancel_asked_while_the_service_was_down_is_honoured_after_restart(
    data_dir: Path, expected_records: int, inbox: Inbox
) -> None:
    once = data_dir / "fault-fired"
    serve = Serve(
        data_dir, inbox, DOWNLOADER_FAULT="stream:service", DOWNLOADER_FAULT_ONCE=str(once)
    )
    job_id = request_download(serve)
    serve.wait_killed()
    # The requester's cancel reached the job store while the service was down (at scale,
    # another API process took it).
    settings = load_settings({}, overrides={"data_dir": str(data_dir)})
    make_context(settings).jobs.request_cancel(job_id)

    serve = Serve(data_dir, inbox)
    try:
        doc = check_invariant(serve, data_dir, job_id, expected_records)
        assert doc["state"] == "CANCELLED", doc
        time.sleep(1.0)
        assert inbox.to(EMAIL) == []
    finally:
        serve.stop()
