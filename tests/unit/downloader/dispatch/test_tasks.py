"""The Celery task's side of transient errors: it re-sends itself after the delay the
domain code chose (the job's retry_at), with no retry limit of Celery's own (the domain
code gives up after transient_retry_seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from downloader.dispatch import tasks
from tests.unit.downloader.build.test_run import make_ctx, request
from tests.unit.downloader.fakes import FakeSource


class _Retry(Exception):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("retry")
        self.kwargs = kwargs


def test_a_transient_error_retries_the_task_at_the_jobs_retry_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(tmp_path, FakeSource(30, fail_batches=99), transient_retry_first_seconds=7)
    job_id = request(ctx)
    monkeypatch.setattr(tasks, "worker_context", lambda: ctx)

    def retry(**kwargs: Any) -> _Retry:
        return _Retry(**kwargs)

    monkeypatch.setattr(tasks.build_archive, "retry", retry)
    with pytest.raises(_Retry) as raised:
        tasks.build_archive.run(job_id)
    assert raised.value.kwargs["countdown"] == 7
    assert raised.value.kwargs["max_retries"] is None
    assert raised.value.kwargs["args"] == [job_id]
    job = ctx.jobs.get(job_id)
    assert job is not None and job.state == "PENDING" and job.retry_at is not None
