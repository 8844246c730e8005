"""Liveness and readiness through real HTTP.

A real Tornado server runs on a free port in a background thread, over a SQLite job store,
local storage and an in-memory record source; builds are run by the test when it wants
them, so both the queued and the finished states can be observed.
"""

from __future__ import annotations

import shutil

import pytest

from downloader.errors import SourceUnavailable
from tests.unit.downloader.conftest import Api


def test_health(api: Api) -> None:
    assert api.get("/healthz").json() == {"ok": True}


def test_readiness_reports_every_dependency(api: Api) -> None:
    answer = api.get("/readyz")
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["ok"] is True
    assert set(doc["checks"]) == {"job_store", "record_source", "storage", "dispatcher"}
    assert all(check["ok"] for check in doc["checks"].values())
    assert doc["checks"]["record_source"]["data_version"] != "0"


class _Down:
    def data_version(self) -> str:
        raise SourceUnavailable("the search cluster cannot be reached: connection refused")


class _SilentBroker:
    def dispatch(self, job_id: str, *, records: int | None = None) -> None:
        del job_id

    def ping(self) -> bool:
        return False


def test_readiness_names_what_is_down_and_why(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api.ctx, "source_factory", _Down)
    monkeypatch.setattr(api.ctx, "dispatcher", _SilentBroker())
    shutil.rmtree(api.ctx.storage.root)  # type: ignore[attr-defined]  # LocalStorage here
    answer = api.get("/readyz")
    assert answer.status_code == 503
    assert answer.headers["Retry-After"]
    doc = answer.json()
    assert doc["ok"] is False and doc["name"] == "NotReady"
    checks = doc["checks"]
    assert checks["job_store"]["ok"] is True
    assert "connection refused" in checks["record_source"]["error"]
    assert "does not exist" in checks["storage"]["error"]
    assert "broker" in checks["dispatcher"]["error"]
    assert doc["error"] == "not ready: record_source, storage, dispatcher failed"
    # Liveness stays true: the process itself answers.
    assert api.get("/healthz").status_code == 200
