"""The jobs resource, cancel (who may, what it does to a queued and to a running build),
selection downloads by uuid and incremental sync with ``deleted.csv``, through real HTTP on
the real embedded store. Every archive is re-read with python-dwca-reader."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from downloader.backends import make_source
from downloader.build.deletions import DELETED_HEADER
from downloader.config import load_settings
from downloader.service.downloads import cleanup_expired
from downloader.sources.duckdb import DuckDBSource
from query.fields import RecordType
from tests.unit.downloader.export_support import (
    ADMIN,
    IDB,
    Service,
    read_zip,
    running_service,
)


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    with running_service(tmp_path, max_uuid_selection=3) as service:
        service.ingest(30, "rs-a")
        service.build_all()  # the export of rs-a version 1
        service.dispatcher.ids.clear()
        yield service


def _ask(svc: Service, rq: dict[str, Any], **params: str) -> dict[str, Any]:
    r = svc.get("/v2/download/", params={"rq": json.dumps(rq), **params})
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


# --- /v1/jobs ---------------------------------------------------------------------------


def test_jobs_resource_for_a_download(svc: Service, tmp_path: Path) -> None:
    job_id = _ask(svc, {"recordset": "rs-a"})["id"]
    doc = svc.get(f"/v1/jobs/{job_id}").json()
    assert doc["status"] == "STARTING" and doc["percentComplete"] == 0.0
    assert "result" not in doc
    links = {link["rel"]: link["link"] for link in doc["_links"]}
    assert links["self"] == f"{svc.url}/v1/jobs/{job_id}"
    assert "enclosure" not in links
    svc.build_all()
    r = svc.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "COMPLETED" and doc["percentComplete"] == 100.0
    result = doc["result"]
    assert result["algorithm"] == "sha256"
    links = {link["rel"]: link["link"] for link in doc["_links"]}
    content = svc.get(links["enclosure"]).content
    assert len(content) == result["size"]
    assert hashlib.sha256(content).hexdigest() == result["checksum"]
    assert datetime.fromisoformat(result["expiryDate"]) > datetime.now(UTC)
    assert len(read_zip(content, tmp_path / "d.zip").core_ids) == 30
    # Expired: still known (200), status EXPIRED, no result.
    cleanup_expired(svc.ctx, now=datetime.now(UTC) + timedelta(days=365))
    doc = svc.get(f"/v1/jobs/{job_id}").json()
    assert doc["status"] == "EXPIRED" and "result" not in doc and doc["error"]


def test_jobs_resource_for_an_export(svc: Service) -> None:
    versions = svc.get("/recordsets/rs-a/versions/").json()["versions"]
    job_url = versions[0]["export"]["job"]
    doc = svc.get(job_url).json()
    assert doc["status"] == "COMPLETED" and doc["kind"] == "export"
    assert doc["recordset"] == "rs-a" and doc["version"] == 1
    assert doc["result"]["expiryDate"] is None  # kept until deleted
    links = {link["rel"]: link["link"] for link in doc["_links"]}
    assert links["enclosure"] == f"{svc.url}/recordsets/rs-a/1/export/"
    content = svc.get(links["enclosure"]).content
    assert hashlib.sha256(content).hexdigest() == doc["result"]["checksum"]


def test_unknown_job_is_404_json(svc: Service) -> None:
    for path in ("/v1/jobs/00000000-0000-4000-8000-000000000000", "/v1/jobs/not-an-id"):
        r = svc.get(path)
        assert r.status_code == 404 and r.json()["status"] == 404


# --- selection by uuid ------------------------------------------------------------------


def test_selection_by_uuid_and_its_limit(svc: Service, tmp_path: Path) -> None:
    source = DuckDBSource(svc.data_dir / "records.duckdb")
    batch = next(source.batches("records", {"recordset": "rs-a"}, None, batch_size=5))
    chosen = batch.column(0).to_pylist()[:3]
    job_id = _ask(svc, {"uuid": chosen})["id"]
    svc.build_all()
    doc = svc.get(f"/v1/jobs/{job_id}").json()
    links = {link["rel"]: link["link"] for link in doc["_links"]}
    archive = read_zip(svc.get(links["enclosure"]).content, tmp_path / "sel.zip")
    assert sorted(archive.core_ids) == sorted(chosen)
    too_many = svc.get(
        "/v2/download/",
        params={"rq": json.dumps({"uuid": [*chosen, "00000000-0000-0000-0000-00000000000f"]})},
    )
    assert too_many.status_code == 413
    body = too_many.json()
    assert body["status"] == 413 and body["key"] == "rq.uuid" and "at most 3" in body["error"]


# --- cancel: who may --------------------------------------------------------------------


def test_cancel_permissions_and_a_queued_job(svc: Service) -> None:
    created = _ask(svc, {"recordset": "rs-a"}, email="ana@example.org")
    job_id, token = created["id"], created["cancel_token"]
    assert token
    # The token is only in the creating response: not in the status, not for a reuser.
    assert "cancel_token" not in svc.get(f"/v2/download/{job_id}").json()
    reused = _ask(svc, {"recordset": "rs-a"})
    assert reused["id"] == job_id and "cancel_token" not in reused
    path = f"/v2/download/{job_id}"
    assert svc.request("DELETE", path).status_code == 401
    assert svc.request("DELETE", path, headers={"Authorization": "Bearer nope"}).status_code == 403
    other = _ask(svc, {"genus": "acer"})
    forbidden = svc.request("DELETE", path, params={"token": other["cancel_token"]})
    assert forbidden.status_code == 403 and forbidden.json()["status"] == 403
    r = svc.request("DELETE", path, params={"token": token})
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
    status = svc.get(path).json()
    assert status["state"] == "CANCELLED" and status["cancelled"] is True
    assert status["task_status"] == "FAILURE" and "download_url" not in status
    again = svc.request("DELETE", path, headers={"Authorization": f"Bearer {token}"})
    assert again.status_code == 409
    svc.build_all()  # the cancelled job is never built, so nobody is told it is ready
    assert not [m for m in svc.mailer.sent if "ready" in str(m["Subject"]).lower()]
    fresh = _ask(svc, {"recordset": "rs-a"})
    assert fresh["id"] != job_id and fresh["cancel_token"]


def test_an_admin_may_cancel_any_job_and_a_finished_one_is_409(svc: Service) -> None:
    job_id = _ask(svc, {"recordset": "rs-a"})["id"]
    r = svc.request("DELETE", f"/v1/jobs/{job_id}", headers={"X-Admin-Token": ADMIN})
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
    done = _ask(svc, {"genus": "quercus"})
    svc.build_all()
    finished = svc.request(
        "DELETE", f"/v1/jobs/{done['id']}", params={"token": done["cancel_token"]}
    )
    assert finished.status_code == 409 and finished.json()["status"] == 409
    missing = svc.request("DELETE", "/v1/jobs/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404


# --- cancel: a running build ------------------------------------------------------------


class GatedSource:
    """The real DuckDB source, except that the first batch of a build holds until the test
    opens the gate: the build is then certainly running, without any sleep."""

    def __init__(self, inner: Any, started: threading.Event, gate: threading.Event) -> None:
        self.inner, self.started, self.gate = inner, started, gate
        self.batches_served = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def batches(self, rtype: RecordType, rq: Any, mq: Any, **kw: Any) -> Iterator[pa.RecordBatch]:
        for batch in self.inner.batches(rtype, rq, mq, **kw):
            self.batches_served += 1
            self.started.set()
            assert self.gate.wait(60)
            yield batch


def test_cancel_a_running_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Look at the cancel flag before every batch (the default is once a second).
    monkeypatch.setattr("downloader.build.progress.CANCEL_CHECK_SECONDS", 0.0)
    started, gate = threading.Event(), threading.Event()
    settings = load_settings({}, overrides={"data_dir": str(tmp_path)})
    gated = GatedSource(make_source(settings), started, gate)
    with running_service(
        tmp_path, source_factory=lambda: gated, threaded=True, batch_size=20
    ) as svc:
        svc.dispatcher.threaded = False
        svc.ingest(600, "rs-big")  # 30 batches of 20 records per file, four files
        svc.dispatcher.threaded = True
        created = _ask(svc, {"recordset": "rs-big"}, email="ana@example.org")
        job_id = created["id"]
        assert started.wait(60)
        assert svc.get(f"/v1/jobs/{job_id}").json()["status"] == "RUNNING"
        r = svc.request(
            "DELETE", f"/v2/download/{job_id}", params={"token": created["cancel_token"]}
        )
        assert r.status_code == 202
        assert r.json()["status"] == "RUNNING" and r.json()["cancelRequested"] is True
        gate.set()
        for worker in svc.dispatcher.threads:
            worker.join(600)  # bounds the wait only; a loaded machine may be slow
        doc = svc.get(f"/v1/jobs/{job_id}").json()
        assert doc["status"] == "CANCELLED" and "result" not in doc
        assert gated.batches_served < 5  # it stopped at once, far from the 120 batches
        assert sorted(p.name for p in (tmp_path / "archives").iterdir()) == []
        assert not [m for m in svc.mailer.sent if "ready" in str(m["Subject"]).lower()]
        # The same request later starts afresh and completes.
        again = _ask(svc, {"recordset": "rs-big"})
        assert again["id"] != job_id
        for worker in svc.dispatcher.threads:
            worker.join(600)
        final = svc.get(f"/v1/jobs/{again['id']}").json()
        assert final["status"] == "COMPLETED"
        links = {link["rel"]: link["link"] for link in final["_links"]}
        archive = read_zip(svc.get(links["enclosure"]).content, tmp_path / "big.zip")
        assert len(archive.core_ids) == 600


# --- incremental sync -------------------------------------------------------------------


def _deleted_rows(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"))))


def test_download_since_a_date_carries_deleted_csv(svc: Service, tmp_path: Path) -> None:
    source = DuckDBSource(svc.data_dir / "records.duckdb")
    before: Sequence[Any] = source.deleted_records()
    assert before == []
    since = datetime.now(UTC).replace(tzinfo=None)
    svc.ingest(20, "rs-a", seed=7)  # a re-ingest: most of version 1's records are gone
    svc.ingest(10, "rs-other", seed=8)
    gone = {d.uuid for d in source.deleted_records() if d.recordset == "rs-a"}
    assert gone
    rq = {
        "recordset": "rs-a",
        "datemodified": {"type": "range", "gte": since.isoformat(timespec="seconds")},
    }
    job_id = _ask(svc, rq)["id"]
    svc.build_all()
    doc = svc.get(f"/v1/jobs/{job_id}").json()
    assert doc["status"] == "COMPLETED"
    links = {link["rel"]: link["link"] for link in doc["_links"]}
    archive = read_zip(svc.get(links["enclosure"]).content, tmp_path / "sync.zip")
    assert "deleted.csv" in archive.names and "deleted.csv" not in archive.meta_xml
    rows = _deleted_rows(archive.files["deleted.csv"])
    assert tuple(rows[0]) == DELETED_HEADER
    assert {r["uuid"] for r in rows} == gone
    assert {r["recordset"] for r in rows} == {"rs-a"}
    assert all(datetime.fromisoformat(r["deleted"]) >= since.replace(tzinfo=UTC) for r in rows)
    # The changed records themselves are the core.
    expected = source.count(
        "records", {"recordset": "rs-a", "datemodified": rq["datemodified"]}, None
    )
    assert len(archive.core_ids) == expected > 0
    assert {row[IDB + "recordset"] for row in archive.core_rows} == {"rs-a"}
    assert not set(archive.core_ids) & gone


def test_a_plain_download_has_no_deleted_csv(svc: Service, tmp_path: Path) -> None:
    svc.ingest(5, "rs-a", seed=3)
    job_id = _ask(svc, {"recordset": "rs-a"})["id"]
    svc.build_all()
    links = {link["rel"]: link["link"] for link in svc.get(f"/v1/jobs/{job_id}").json()["_links"]}
    archive = read_zip(svc.get(links["enclosure"]).content, tmp_path / "plain.zip")
    assert "deleted.csv" not in archive.names and len(archive.core_ids) == 5


def test_a_cancel_that_arrives_while_publishing_removes_the_archive(
    svc: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = _ask(svc, {"recordset": "rs-a"}, email="ana@example.org")
    published = threading.Event()
    publish = svc.ctx.storage.publish

    def publish_then_cancel(key: str, writer: Any, **kw: Any) -> None:
        publish(key, writer, **kw)
        published.set()
        # The requester cancels at this very moment: after the last check, before SUCCESS.
        svc.request(
            "DELETE", f"/v1/jobs/{created['id']}", params={"token": created["cancel_token"]}
        )

    monkeypatch.setattr(svc.ctx.storage, "publish", publish_then_cancel)
    svc.build_all()
    assert published.is_set()
    doc = svc.get(f"/v1/jobs/{created['id']}").json()
    assert doc["status"] == "CANCELLED" and "result" not in doc
    assert not list((svc.data_dir / "archives").glob(f"{created['id']}*"))
    assert not [m for m in svc.mailer.sent if "ready" in str(m["Subject"]).lower()]


def test_cors_preflight_allows_delete_with_a_token(svc: Service) -> None:
    for path in ("/v1/jobs/x", "/v2/download/x", "/recordsets/rs-a/1/export/"):
        r = svc.request("OPTIONS", path)
        assert r.status_code == 204
        assert "DELETE" in r.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
