"""End to end on the embedded default, through real HTTP and real processes.

A fresh data directory is filled by ``downloader ingest`` (the bundled sample archives plus
synthetic records), ``downloader serve`` runs as a subprocess on a free port with SMTP
pointed at an aiosmtpd server, and the test behaves like a researcher's script: ask, poll,
download, open the archive with python-dwca-reader, read the email.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from dwca.read import DwCAReader

from downloader.backends import make_context
from downloader.config import load_settings
from downloader.service import downloads as service
from tests.support.schemas import check_archive_xml
from tests.support.serve import Serve
from tests.support.smtp import Inbox, smtp_server
from tests.support.store import open_store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "dwca"
SAMPLES = ["gbif-results.zip", "dwca-simple-test-archive.zip", "dwca-test-default.zip"]
SYNTHETIC = 3000
DOWNLOADER = [sys.executable, "-m", "downloader.cli"]
ACER = {"genus": "acer"}
DWC_GENUS = "http://rs.tdwg.org/dwc/terms/genus"
DEADLINE = 180.0


class Server(Serve):
    """``downloader serve`` as a subprocess, mailing through the test's SMTP server."""

    def __init__(self, data_dir: Path, inbox: Inbox, **env: str) -> None:
        super().__init__(
            data_dir,
            **{
                "DOWNLOADER_SMTP_HOST": inbox.host,
                "DOWNLOADER_SMTP_PORT": str(inbox.port),
                "DOWNLOADER_MAIL_FROM": "downloads@example.org",
                **env,
            },
        )


def poll(status_url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll until complete; returns the final status and every status seen."""
    seen = []
    deadline = time.monotonic() + DEADLINE
    while True:
        doc = requests.get(status_url, timeout=60).json()
        seen.append(doc)
        if doc["complete"]:
            return doc, seen
        assert time.monotonic() < deadline, f"not complete after {DEADLINE}s: {doc}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from downloader.ingest.load import ingest_paths, ingest_synthetic

    data = tmp_path_factory.mktemp("data")
    _, failures = ingest_paths(data, [FIXTURES / name for name in SAMPLES])
    assert not failures, failures
    ingest_synthetic(data, SYNTHETIC, seed=1)
    return data


@pytest.fixture(scope="module")
def acer_count(data_dir: Path) -> int:
    # The oracle is the store itself, read with plain SQL (not with our RecordSource).
    with open_store(str(data_dir / "records.duckdb")) as con:
        row = con.execute("SELECT count(*) FROM records WHERE genus = 'acer'").fetchone()
    assert row is not None and row[0] > 0
    return int(row[0])


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with smtp_server() as box:
        yield box


def test_acer_download_end_to_end(data_dir: Path, acer_count: int, inbox: Inbox) -> None:
    server = Server(data_dir, inbox)
    try:
        first = server.get(
            "/v2/download/", params={"rq": json.dumps(ACER), "email": "ana@example.org"}
        )
        assert first.status_code == 200
        status = first.json()
        assert status["status_url"].endswith(status["id"])
        final, seen = poll(status["status_url"])
        assert final["task_status"] == "SUCCESS", final
        for doc in seen:
            for key in ("records_written", "total_records", "percent_complete", "hash"):
                assert key in doc
        assert final["counts"]["records"] == acer_count
        assert final["percent_complete"] == 100.0

        body = server.get(final["download_url"][len(server.url) :]).content
        assert hashlib.sha256(body).hexdigest() == final["checksum"]["value"]
        assert len(body) == final["size"]
        archive = data_dir / "acer.zip"
        archive.write_bytes(body)
        check_archive_xml(archive)
        with DwCAReader(str(archive)) as reader:
            rows = list(reader)
            assert len(rows) == acer_count
            assert {r.data[DWC_GENUS] for r in rows} == {"acer"}
            assert len({r.id for r in rows}) == acer_count

        (mail,) = inbox.wait_for(1, timeout=DEADLINE)
        assert mail["To"] == "ana@example.org"
        assert final["download_url"] in mail.get_content()

        # The same question again (differently spelt) is served from the same job.
        again = server.get("/v2/download/", params={"rq": '{"genus": "Acer"}'}).json()
        assert again["id"] == status["id"] and again["task_status"] == "SUCCESS"

        # A bad query is refused at once, naming the field.
        bad = server.get("/v2/download/", params={"rq": '{"genus": {"type": "nonsense"}}'})
        assert bad.status_code == 400
        assert bad.json()["key"].startswith("rq.genus")
        count = server.get("/v2/count", params={"rq": json.dumps(ACER)}).json()
        assert count["records"] == acer_count
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.log.read_text()


def test_jobs_queued_or_interrupted_while_down_run_after_a_restart(
    data_dir: Path, acer_count: int, inbox: Inbox
) -> None:
    settings = load_settings({}, overrides={"data_dir": str(data_dir), "max_attempts": 3})

    class NoWorkers:
        def dispatch(self, job_id: str, *, records: int | None = None) -> None:
            """No service is running: the job stays queued in the store."""

    ctx = make_context(settings, dispatcher=NoWorkers())
    queued = service.request_download(
        ctx,
        {"rq": json.dumps({"genus": "quercus"}), "form": "dwca-tsv"},
        email="queued@example.org",
        force=True,
        base_url="http://unused",
    )
    interrupted = service.request_download(
        ctx,
        {"rq": json.dumps(ACER), "core_source": "raw"},
        email="interrupted@example.org",
        force=True,
        base_url="http://unused",
    )
    # A worker started this one, then the whole service died.
    assert ctx.jobs.claim(interrupted["id"], max_attempts=3) is not None

    server = Server(data_dir, inbox)
    try:
        for job in (queued, interrupted):
            final, _ = poll(f"{server.url}/v2/download/{job['id']}")
            assert final["task_status"] == "SUCCESS", final
            path = data_dir / f"{job['id']}.zip"
            path.write_bytes(server.get(final["download_url"][len(server.url) :]).content)
            check_archive_xml(path)
            with DwCAReader(str(path)) as reader:
                assert len(list(reader)) == final["counts"]["records"]
        assert ctx.jobs.get(interrupted["id"]).attempts == 2  # type: ignore[union-attr]  # exists
        inbox.wait_for(2, timeout=DEADLINE)
        assert inbox.to("queued@example.org") and inbox.to("interrupted@example.org")
    finally:
        server.stop()
