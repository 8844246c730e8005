"""Small downloads never wait behind large ones: which queue a job goes to, decided when it
is dispatched (the local pool's behaviour is in test_pool.py; Celery end to end in
tests/integration/test_at_scale_e2e.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from downloader.cli import _queue_list
from downloader.config import load_settings
from downloader.dispatch import celery_dispatch, routing
from downloader.dispatch.celery_app import celery_config
from downloader.dispatch.routing import LARGE_QUEUE, SMALL_QUEUE, is_large, queue_for
from downloader.service import exports
from downloader.service.downloads import request_download
from tests.unit.downloader.conftest import RecordingDispatcher, local_context


def _settings(tmp_path: Path, **overrides: Any) -> Any:
    return load_settings({}, overrides={"data_dir": str(tmp_path), **overrides})


def test_a_job_is_large_from_the_threshold_on_and_unknown_sizes_are_small(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, large_job_records=1000)
    assert [is_large(settings, n) for n in (None, 0, 999, 1000, 10**9)] == [
        False,
        False,
        False,
        True,
        True,
    ]
    assert queue_for(settings, 999) == SMALL_QUEUE == "downloads"
    assert queue_for(settings, 1000) == LARGE_QUEUE
    off = _settings(tmp_path, large_job_records=0)
    assert queue_for(off, 10**9) == SMALL_QUEUE  # 0: one queue, as before


@pytest.mark.parametrize(
    ("workers", "reserve", "kept"), [(2, 1, 1), (1, 1, 0), (4, 2, 2), (3, 5, 2)]
)
def test_the_local_pool_keeps_workers_for_small_jobs_but_never_all(
    tmp_path: Path, workers: int, reserve: int, kept: int
) -> None:
    settings = _settings(tmp_path, workers=workers, small_job_workers=reserve)
    assert routing.small_reserve(settings) == kept


def test_the_celery_dispatcher_sends_each_job_to_its_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(
        tmp_path, dispatcher="celery", large_job_records=500, redis_url="redis://127.0.0.1:1/0"
    )
    sent: list[tuple[str, list[str], str]] = []
    dispatcher = celery_dispatch.CeleryDispatcher(settings)
    monkeypatch.setattr(
        dispatcher.app,
        "send_task",
        lambda name, args, queue: sent.append((name, args, queue)),
    )
    dispatcher.dispatch("small-job", records=12)
    dispatcher.dispatch("large-job", records=500)
    dispatcher.dispatch("unknown", records=None)
    assert sent == [
        ("downloader.build_archive", ["small-job"], "downloads"),
        ("downloader.build_archive", ["large-job"], "downloads-large"),
        ("downloader.build_archive", ["unknown"], "downloads"),
    ]
    # Without a queue named, a message still goes to the small queue.
    assert celery_config(settings)["task_default_queue"] == SMALL_QUEUE


def test_worker_queue_option() -> None:
    assert _queue_list("small") == ("small",)
    assert _queue_list("large, small,large") == ("large", "small")
    for bad in ("", "medium", "small,huge"):
        with pytest.raises(argparse.ArgumentTypeError, match="small, large or small,large"):
            _queue_list(bad)


def test_a_download_is_counted_when_its_job_is_created_and_dispatched_with_its_size(
    tmp_path: Path,
) -> None:
    ctx = local_context(tmp_path, records=30, large_job_records=10)
    assert isinstance(ctx.dispatcher, RecordingDispatcher)
    everything = request_download(ctx, {"rq": "{}"}, base_url="http://svc")
    acer = request_download(ctx, {"rq": '{"genus": "acer"}'}, base_url="http://svc")
    counted = {
        job_id: ctx.source().count("records", rq, None)
        for job_id, rq in ((everything["id"], {}), (acer["id"], {"genus": "acer"}))
    }
    assert ctx.dispatcher.records == counted
    assert counted[everything["id"]] == 30  # large (>= 10): the large queue
    assert is_large(ctx.settings, counted[everything["id"]])
    job = ctx.jobs.get(everything["id"])
    assert job is not None and job.counted_records == 30
    # Asked again: the job is reused, nothing is counted or dispatched.
    request_download(ctx, {"rq": "{}"}, base_url="http://svc")
    assert len(ctx.dispatcher.ids) == 2


def test_an_export_is_routed_by_its_recordset_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = local_context(tmp_path, records=30, large_job_records=10)
    assert isinstance(ctx.dispatcher, RecordingDispatcher)
    source = ctx.source()
    asked: list[Any] = []

    def count(rtype: str, rq: Any, mq: Any) -> int:
        # The fake's documents carry no version: count the recordset's, as the store would.
        asked.append((rtype, rq, mq))
        return len(source._docs(rtype, {"recordset": rq["recordset"]}, mq))  # type: ignore[attr-defined]

    monkeypatch.setattr(source, "count", count)
    job, created = exports.start_export(ctx, "rs-0", 1)
    assert created and asked == [("records", {"recordset": "rs-0", "version": 1}, None)]
    assert ctx.dispatcher.records[job.id] == job.counted_records == 15
    assert is_large(ctx.settings, job.counted_records)
