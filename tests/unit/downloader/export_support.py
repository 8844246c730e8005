"""A real HTTP server of the API over the real embedded record store (DuckDB, filled by
``ingest``), for the export, jobs and cancel tests; local or S3 storage."""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from dwca.read import DwCAReader

from downloader.backends import Context, make_source
from downloader.build import build_archive
from downloader.config import load_settings
from downloader.ingest.load import IngestResult, ingest_synthetic
from downloader.interfaces import RecordSource, Storage
from downloader.jobs.sqlite import SQLiteJobStore
from downloader.service import exports
from downloader.storage.local import LocalStorage
from notify.smtp import LogMailer
from tests.support.http import api_server
from tests.support.schemas import check_archive_xml

ADMIN = "admin-secret"
DWC = "http://rs.tdwg.org/dwc/terms/"
IDB = "http://portal.idigbio.org/terms/"


@dataclass
class QueueDispatcher:
    """Keeps dispatched ids for the test to build (:meth:`Service.build_all`), or builds each
    on a thread at once when ``threaded`` is set, as a worker would."""

    ids: list[str] = field(default_factory=list)
    ctx: Context | None = None
    threaded: bool = False
    threads: list[threading.Thread] = field(default_factory=list)

    def dispatch(self, job_id: str, *, records: int | None = None) -> None:
        self.ids.append(job_id)
        if self.threaded and self.ctx is not None:
            thread = threading.Thread(target=build_archive, args=(job_id, self.ctx))
            self.threads.append(thread)
            thread.start()


@dataclass
class Service:
    url: str
    ctx: Context
    dispatcher: QueueDispatcher
    mailer: LogMailer
    data_dir: Path

    def ingest(self, count: int, recordset: str, *, seed: int = 0) -> IngestResult:
        """Ingest synthetic records as ``recordset`` and run the ingest hook, as
        ``downloader ingest`` does."""
        result = ingest_synthetic(self.data_dir, count, seed=seed, recordset=recordset)
        exports.ingest_hook(self.ctx)(result)
        return result

    def build_all(self) -> None:
        """Build every queued job (build_archive skips finished and cancelled ones)."""
        for job_id in list(self.dispatcher.ids):
            build_archive(job_id, self.ctx)

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("allow_redirects", False)
        url = path if path.startswith("http") else self.url + path
        return requests.request(method, url, timeout=60, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)


@contextmanager
def running_service(
    tmp_path: Path,
    *,
    storage: Storage | None = None,
    source_factory: Callable[[], RecordSource] | None = None,
    threaded: bool = False,
    **overrides: Any,
) -> Iterator[Service]:
    """The API on a free port (Tornado on a background thread) over ``tmp_path``."""
    settings = load_settings(
        {},
        overrides={
            "data_dir": str(tmp_path),
            "admin_tokens": f"{ADMIN}, other-admin",
            "progress_every": 50,
            **overrides,
        },
    )
    dispatcher = QueueDispatcher(threaded=threaded)
    mailer = LogMailer(sender="d@example.org")
    ctx = Context(
        settings=settings,
        jobs=SQLiteJobStore(tmp_path / "jobs.sqlite3"),
        storage=storage or LocalStorage(tmp_path / "archives"),
        mailer=mailer,
        dispatcher=dispatcher,
        source_factory=source_factory or (lambda: make_source(settings)),
    )
    dispatcher.ctx = ctx
    with api_server(ctx) as url:
        try:
            yield Service(url, ctx, dispatcher, mailer, tmp_path)
        finally:
            for worker in dispatcher.threads:
                worker.join(60)


@dataclass
class Archive:
    """A zip re-read with python-dwca-reader."""

    names: list[str]
    core_ids: list[str]
    core_rows: list[dict[str, str]]
    meta_xml: str
    files: dict[str, bytes]


def read_zip(content: bytes, where: Path) -> Archive:
    """Write ``content`` to ``where``, validate its meta.xml and eml.xml against the schemas
    they name, and open it with python-dwca-reader."""
    where.write_bytes(content)
    check_archive_xml(where)
    with zipfile.ZipFile(where) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        files = {n: zf.read(n) for n in names}
    with DwCAReader(str(where)) as reader:
        assert reader.descriptor.core.file_location == "occurrence.csv"
        rows = list(reader)
        for extension in reader.extension_files:
            known = {r.id for r in rows}
            for row in extension.iter_rows():
                assert row.core_id in known
    return Archive(
        names=names,
        core_ids=[r.id for r in rows],
        core_rows=[r.data for r in rows],
        meta_xml=files["meta.xml"].decode("utf-8"),
        files=files,
    )
