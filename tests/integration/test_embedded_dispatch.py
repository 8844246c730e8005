"""The local dispatcher with real spawned worker processes and a real SMTP server.

The record store is made unreachable (an Elasticsearch URL nobody listens on), so the build
hits a transient error in its worker process: it waits with ``retry_at`` and the reason,
is retried with backoff, then fails once ``transient_retry_seconds`` are spent, with a
message for the researcher, who is told by email.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from downloader.backends import make_context
from downloader.config import load_settings
from downloader.dispatch.local import LocalDispatcher
from downloader.models import Job
from tests.support.smtp import Inbox, free_port

pytestmark = pytest.mark.integration


def test_unreachable_source_is_retried_in_worker_processes_then_fails_and_mails(
    tmp_path: Path, smtp: Inbox
) -> None:
    settings = load_settings(
        {},
        overrides={
            "data_dir": str(tmp_path),
            "record_source": "elasticsearch",
            "elasticsearch_url": f"http://127.0.0.1:{free_port()}",
            "elasticsearch_timeout_seconds": 2,
            "max_attempts": 1,  # counts interrupted builds, not transient retries
            "transient_retry_seconds": 3,
            "transient_retry_first_seconds": 1,
            "dispatch_poll_seconds": 0.2,
            "smtp_host": smtp.host,
            "smtp_port": smtp.port,
            "mail_from": "downloads@example.org",
        },
    )
    ctx = make_context(settings)
    job = Job(
        id=str(uuid.uuid4()),
        query_hash="h",
        request={"rq": {"genus": "acer"}, "form": "dwca-csv"},
        query={},
        data_version="1",
        emails=["ana@example.org"],
        base_url="http://svc",
    )
    ctx.jobs.create_or_reuse(job, reuse_after=None)
    dispatcher = LocalDispatcher(settings, ctx=ctx)
    dispatcher.start()
    try:
        deadline = time.monotonic() + 120
        waits = []
        while True:
            current = ctx.jobs.get(job.id)
            assert current is not None
            if current.state == "PENDING" and current.retry_at is not None:
                waits.append((current.retry_at, current.error))
            if current.state == "FAILURE":
                break
            assert time.monotonic() < deadline, f"still {current.state}"
            time.sleep(0.2)
        # The worker mails after recording the failure: wait for it before stopping workers.
        (mail,) = smtp.wait_for(1)
    finally:
        dispatcher.stop()
    assert current.attempts >= 2 and current.retries == current.attempts - 1
    assert waits and all("record store could not be reached" in (e or "") for _, e in waits)
    assert "record store could not be reached" in (current.error or "")
    assert f"{current.attempts} attempts" in (current.error or "")
    assert mail["To"] == "ana@example.org"
    assert "record store could not be reached" in mail.get_content()
    assert not list((tmp_path / "archives").glob("*"))
