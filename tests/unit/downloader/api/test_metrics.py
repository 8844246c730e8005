"""``/metrics`` in Prometheus' format, and JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from downloader.config import load_settings
from downloader.logs import configure_logging
from tests.unit.downloader.conftest import ACER, Api


def samples(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_requests_jobs_and_the_queue(api: Api) -> None:
    api.get("/v2/download/", params={"rq": ACER})  # a new job, queued
    api.get("/v2/download/", params={"rq": ACER})  # the same job
    api.get("/v2/count", params={"rq": '{"genus": {"type": "nope"}}'})  # a 4xx
    # A request is counted just after its response is sent: wait for the last one.
    bad = ("dwca_http_requests_total", (("code", "400"), ("method", "GET")))
    deadline = time.monotonic() + 5
    got = samples(api)
    while bad not in got and time.monotonic() < deadline:
        time.sleep(0.05)
        got = samples(api)
    assert got[("dwca_jobs_created_total", (("kind", "download"),))] == 1
    assert got[("dwca_jobs", (("state", "PENDING"),))] == 1
    assert got[("dwca_http_requests_total", (("code", "200"), ("method", "GET")))] >= 2
    assert got[bad] >= 1
    assert ("dwca_http_request_seconds_count", (("method", "GET"),)) in got
    assert got[("dwca_build_records_per_second", ())] > 0


def test_json_log_lines(tmp_path: Path) -> None:
    settings = load_settings({}, overrides={"data_dir": str(tmp_path), "log_format": "json"})
    root = logging.getLogger()
    saved = list(root.handlers)
    try:
        configure_logging(settings, role="serve", force=True)
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("downloader.test").warning("job %s failed", "j1")
        line = json.loads(stream.getvalue().strip().splitlines()[-1])
        assert line["message"] == "job j1 failed" and line["level"] == "WARNING"
        assert line["logger"] == "downloader.test" and line["role"] == "serve" and line["time"]
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)


def test_metrics_report_builds_failures_queues_and_limit_hits(tmp_path: Path) -> None:
    """Build figures come from the job store (what workers in other processes added), the
    queue by size, and the limit hits of this process."""
    from downloader.build.stats import record_outcome
    from tests.support.http import api_server
    from tests.unit.downloader.conftest import RecordingDispatcher, local_context

    ctx = local_context(tmp_path, records=30, large_job_records=20, new_jobs_per_minute=2)
    assert isinstance(ctx.dispatcher, RecordingDispatcher)
    with api_server(ctx) as url:
        api = Api(url, ctx, ctx.dispatcher, ctx.mailer)  # type: ignore[arg-type]
        small = api.get("/v2/download/", params={"rq": ACER}).json()
        assert ctx.dispatcher.records[small["id"]] < 20  # acer: small; everything (30): large
        large = api.get("/v2/download/", params={"rq": "{}"}).json()  # 30 records
        # A third new job in a minute: refused, counted as a limit hit.
        third = api.get("/v2/download/", params={"rq": '{"genus": "quercus"}'})
        assert third.status_code == 429
        before = samples(api)
        assert before[("dwca_queue_jobs", (("queue", "small"),))] == 1
        assert before[("dwca_queue_jobs", (("queue", "large"),))] == 1
        assert before[("dwca_limit_hits_total", (("limit", "new_jobs_per_minute"),))] == 1
        assert before[("dwca_builds_total", (("state", "SUCCESS"),))] == 0
        done = api.build(small["id"])
        assert done is not None and done.state == "SUCCESS" and done.size
        # A second store object on the same file: what a worker process would write.
        other = type(ctx.jobs)(ctx.jobs.path)  # type: ignore[attr-defined]
        failed = ctx.jobs.get(small["id"])
        assert failed is not None
        failed.id, failed.state = "other", "FAILURE"
        record_outcome(other, failed, reason="time_limit")
        after = samples(api)
        assert large["id"] in ctx.dispatcher.ids
    get = after.get
    assert get(("dwca_builds_total", (("state", "SUCCESS"),))) == 1
    assert get(("dwca_builds_total", (("state", "FAILURE"),))) == 1
    assert get(("dwca_build_failures_total", (("reason", "time_limit"),))) == 1
    assert get(("dwca_build_failures_total", (("reason", "unexpected"),))) == 0
    assert get(("dwca_build_seconds_count", ())) == 1
    assert get(("dwca_build_seconds_bucket", (("le", "+Inf"),))) == 1
    assert get(("dwca_archive_bytes_count", ())) == 1
    assert get(("dwca_archive_bytes_sum", ())) == done.size
    smallest = min(
        float(dict(k[1])["le"])
        for k, v in after.items()
        if k[0] == "dwca_archive_bytes_bucket" and v == 1
    )
    assert smallest >= done.size  # the archive fell into the first bucket that holds it
    assert get(("dwca_build_records_total", ())) == done.total_records > 0
    assert get(("dwca_queue_jobs", (("queue", "small"),))) == 0
