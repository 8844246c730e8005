"""Fixtures of the downloader tests: a real HTTP server of the API over an in-memory source."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from downloader.backends import Context
from downloader.build import build_archive
from downloader.config import load_settings
from downloader.interfaces import Mailer
from downloader.jobs.sqlite import SQLiteJobStore
from downloader.models import Job
from downloader.storage.local import LocalStorage
from notify.smtp import LogMailer
from tests.support.http import api_server
from tests.unit.downloader.fakes import FakeSource

ACER = '{"genus": "acer"}'


@dataclass
class RecordingDispatcher:
    """Remembers dispatched job ids; tests build them with :meth:`Api.build`, or set
    ``build_in`` to have each job built on a background thread as a worker would."""

    ids: list[str] = field(default_factory=list)
    build_in: Context | None = None
    #: The ``records`` each dispatch carried (what routes it to a queue), by job id.
    records: dict[str, int | None] = field(default_factory=dict)

    def dispatch(self, job_id: str, *, records: int | None = None) -> None:
        self.ids.append(job_id)
        self.records[job_id] = records
        if self.build_in is not None:
            threading.Thread(target=build_archive, args=(job_id, self.build_in)).start()


@dataclass
class Api:
    url: str
    ctx: Context
    dispatcher: RecordingDispatcher
    mailer: LogMailer

    def build(self, job_id: str) -> Job | None:
        return build_archive(job_id, self.ctx)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=30, **kw)

    def finished(self, params: dict[str, str] | None = None) -> dict[str, Any]:
        """Request acer, build it, return the final status."""
        status = self.get("/v2/download/", params=params or {"rq": ACER}).json()
        self.build(status["id"])
        return self.get(f"/v2/download/{status['id']}").json()


def local_context(
    tmp_path: Path,
    *,
    records: int = 30,
    mailer: Mailer | None = None,
    **overrides: Any,
) -> Context:
    """An embedded context in ``tmp_path`` (SQLite jobs, local archives) over a
    :class:`FakeSource` of ``records``, a :class:`RecordingDispatcher` and ``mailer``
    (default: a LogMailer), with ``overrides`` on the default settings."""
    settings = load_settings({}, overrides={"data_dir": str(tmp_path), **overrides})
    source = FakeSource(records)
    return Context(
        settings=settings,
        jobs=SQLiteJobStore(tmp_path / "jobs.sqlite3"),
        storage=LocalStorage(tmp_path / "archives"),
        mailer=mailer or LogMailer(sender="d@example.org"),
        dispatcher=RecordingDispatcher(),
        source_factory=lambda: source,
    )


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    ctx = local_context(tmp_path, max_body_bytes=4096, progress_every=5, batch_size=7)
    assert isinstance(ctx.dispatcher, RecordingDispatcher)
    assert isinstance(ctx.mailer, LogMailer)
    with api_server(ctx) as url:
        yield Api(url, ctx, ctx.dispatcher, ctx.mailer)


def assert_acer_status(doc: dict[str, Any], api: Api) -> None:
    """The status of a fresh download of ``{"genus": "acer"}``."""
    assert doc["query"]["rq"] == {"genus": "acer"}
    assert doc["task_status"] == "PENDING" and doc["complete"] is False
    assert doc["status_url"] == f"{api.url}/v2/download/{doc['id']}"
    assert doc["hash"] == doc["query_hash"]
    assert datetime.fromisoformat(doc["expires"]) > datetime.fromisoformat(doc["created"])
