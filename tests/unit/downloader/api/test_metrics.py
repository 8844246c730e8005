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
