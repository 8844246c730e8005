"""End to end at scale: `downloader serve` and Celery workers as real subprocesses over a real
Redis (job store and broker), osmem-server (the search cluster), moto's S3 server and an
aiosmtpd SMTP server, all started here on free ports.

The tests run in order on one stack: a normal download through its stable link; a worker
killed mid-build (the job is retried and completes, never a truncated archive marked
SUCCESS); then the search cluster goes down: a job shows retrying/retry_at/error and
completes once the cluster is back, and with a short retry total a job ends in FAILURE with
a clear reason.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from dwca.read import DwCAReader
from osmem_server import OsmemServer

from downloader.ingest.cluster import export_store
from downloader.ingest.load import ingest_synthetic, store_path
from downloader.sources.elasticsearch import ElasticsearchSource
from query.validate import validate_query
from tests.support.osmem import running_osmem
from tests.support.redis_server import free_port, running_redis
from tests.support.s3_server import FAKE_CREDENTIALS, running_s3
from tests.support.smtp import Inbox, smtp_server

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
BUCKET = "dwca-e2e-archives"
PREFIX = "e2e-"
N_RECORDS = 4000
#: Small pages and frequent progress make a build take many round trips, so the test can
#: observe it mid-way (and kill it there) without any sleep-based timing.
BATCH_SIZE = 20
#: large_job_records of the stack.
LARGE = 1000


@dataclass
class Stack:
    base_url: str
    env: dict[str, str]
    inbox: Inbox
    source: ElasticsearchSource
    osmem: Any
    s3_endpoint: str
    tmp: Path
    redis: Any = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def start_worker(
        self, name: str, *, pool: str = "solo", queues: str | None = None, **env: str
    ) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        self.logs.append(log)
        argv = [str(BIN / "downloader"), "worker", "--pool", pool, "--hostname", f"{name}@e2e"]
        if queues:
            argv += ["--queues", queues]
        if pool == "prefork":
            argv += ["--concurrency", "1"]
        proc = subprocess.Popen(
            argv,
            env={**self.env, **env},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGKILL reaches every child
        )
        self.workers.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def request(self, rq: dict[str, Any], email: str) -> dict[str, Any]:
        import json

        answer = requests.get(
            f"{self.base_url}/v2/download/",
            params={"rq": json.dumps(rq), "email": email},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def status(self, status_url: str) -> dict[str, Any]:
        answer = requests.get(status_url, timeout=30)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def wait(
        self, status_url: str, until: Any, *, timeout: float = 120
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Poll the status URL until ``until(status)``; returns it and every status seen."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(status_url)
            seen.append(st)
            if until(st):
                return st, seen
            time.sleep(0.05)  # polling interval, not a timing assumption
        tail = "\n".join(p.read_text(errors="replace")[-3000:] for p in self.logs if p.exists())
        raise AssertionError(f"status never satisfied the condition: {seen[-1:]}\n{tail}")


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {log.read_text(errors='replace')}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"serve did not answer: {log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    store_dir = tmp / "store"
    ingest_synthetic(store_dir, N_RECORDS, seed=11)
    with (
        running_redis() as redis_server,
        running_s3() as s3,
        running_osmem() as osmem,
        smtp_server() as inbox,
    ):
        boto3.client("s3", endpoint_url=s3.endpoint_url).create_bucket(Bucket=BUCKET)
        # Generous: the bulk load shares two cores with the rest of a loaded suite.
        source = ElasticsearchSource(osmem.url, index_prefix=PREFIX, timeout=60)
        export_store(store_path(store_dir), source)
        port = free_port()
        env = {
            **os.environ,
            **FAKE_CREDENTIALS,
            "DOWNLOADER_DATA_DIR": str(tmp / "service"),
            "DOWNLOADER_HOST": "127.0.0.1",
            "DOWNLOADER_PORT": str(port),
            "DOWNLOADER_BASE_URL": f"http://127.0.0.1:{port}",
            "DOWNLOADER_RECORD_SOURCE": "elasticsearch",
            "DOWNLOADER_JOB_STORE": "redis",
            "DOWNLOADER_DISPATCHER": "celery",
            "DOWNLOADER_STORAGE": "s3",
            "DOWNLOADER_REDIS_URL": redis_server.url_for_db(0),
            "DOWNLOADER_CELERY_BROKER_URL": redis_server.url_for_db(1),
            "DOWNLOADER_ELASTICSEARCH_URL": osmem.url,
            "DOWNLOADER_ELASTICSEARCH_INDEX_PREFIX": PREFIX,
            "DOWNLOADER_ELASTICSEARCH_TIMEOUT_SECONDS": "5",
            "DOWNLOADER_S3_BUCKET": BUCKET,
            "DOWNLOADER_S3_ENDPOINT_URL": s3.endpoint_url,
            "DOWNLOADER_S3_PREFIX": "downloads/",
            "DOWNLOADER_SMTP_HOST": inbox.host,
            "DOWNLOADER_SMTP_PORT": str(inbox.port),
            "DOWNLOADER_BATCH_SIZE": str(BATCH_SIZE),
            "DOWNLOADER_PROGRESS_EVERY": str(BATCH_SIZE),
            # Short limits so that redelivery after a kill happens within the test: the
            # broker's visibility timeout follows the hard limit (see celery_app).
            "DOWNLOADER_JOB_TIME_LIMIT_SECONDS": "20",
            "DOWNLOADER_STALE_JOB_SECONDS": "6",
            "DOWNLOADER_MAX_ATTEMPTS": "2",
            "DOWNLOADER_CLEANUP_INTERVAL_SECONDS": "0",
            # Jobs of LARGE or more records go to the downloads-large queue.
            "DOWNLOADER_LARGE_JOB_RECORDS": str(LARGE),
        }
        env.pop("DOWNLOADER_CONFIG", None)
        serve_log = tmp / "serve.log"
        serve = subprocess.Popen(
            [str(BIN / "downloader"), "serve"],
            env=env,
            stdout=serve_log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        st = Stack(
            f"http://127.0.0.1:{port}", env, inbox, source, osmem, s3.endpoint_url, tmp,
            redis=redis_server,
        )  # fmt: skip
        st.logs.append(serve_log)
        try:
            _wait_http(f"{st.base_url}/healthz", serve, serve_log)
            yield st
        finally:
            if st.osmem is not osmem:  # restarted by a test
                st.osmem.close()
            for proc in st.workers:
                st.kill(proc)
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(timeout=20)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()


def _check_archive(stack: Stack, status: dict[str, Any], rq: dict[str, Any]) -> None:
    """Fetch the stable link (a redirect to a presigned URL), re-read the zip with
    python-dwca-reader, check the rows and the sha256."""
    answer = requests.get(status["download_url"], timeout=60)
    assert answer.status_code == 200
    path = stack.tmp / f"{status['hash'][:12]}-{time.monotonic_ns()}.zip"
    path.write_bytes(answer.content)
    assert len(answer.content) == status["size"]
    assert hashlib.sha256(answer.content).hexdigest() == status["checksum"]["value"]
    assert zipfile.ZipFile(path).testzip() is None
    rqn = validate_query(rq, "records")
    expected_records = stack.source.count("records", rqn, None)
    expected_media = stack.source.count("mediarecords", rqn, None)
    with DwCAReader(str(path)) as dwca:
        core_ids: set[str] = set()
        media: list[str] = []
        for row in dwca:
            core_ids.add(row.id)
            for ext in row.extensions:
                location = ext.descriptor.file_location
                if location == "multimedia.csv":
                    assert ext.core_id == row.id  # the extension row links to its core row
                    media.append(ext.core_id)
        assert len(core_ids) == expected_records
        assert len(media) == expected_media


def _published(stack: Stack) -> list[str]:
    client = boto3.client("s3", endpoint_url=stack.s3_endpoint)
    return [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_download_is_built_by_a_celery_worker_and_served_from_s3(stack: Stack) -> None:
    worker = stack.start_worker("w1")
    rq = {"genus": "acer"}
    first = stack.request(rq, "first@example.org")
    assert first["task_status"] in ("PENDING", "STARTED", "SUCCESS")
    final, seen = stack.wait(first["status_url"], lambda s: s["complete"])
    assert final["task_status"] == "SUCCESS", final
    written = [s["records_written"] for s in seen]
    assert written == sorted(written)  # progress only moves forward
    assert final["records_written"] == final["total_records"] > 0
    assert final["checksum"]["algorithm"] == "sha256"
    # The link is the service's own for the archive's life; each use is signed afresh.
    link = final["download_url"]
    assert link.startswith(f"{stack.base_url}/archives/{final['id']}/")
    for method in ("GET", "HEAD"):
        hop = requests.request(method, link, allow_redirects=False, timeout=30)
        assert hop.status_code == 302, hop.text
        assert hop.headers["ETag"] == f'"{final["checksum"]["value"]}"'
        assert "X-Amz-Signature" in hop.headers["Location"]
    _check_archive(stack, final, rq)
    mail = stack.inbox.wait_for(1)
    assert mail[0]["To"] == "first@example.org"
    assert link in mail[0].get_content()
    assert datetime.fromisoformat(final["expires"]).strftime("%Y-%m-%d") in mail[0].get_content()
    # The same request again reuses the finished job (Redis dedupe).
    again = stack.request(rq, "second@example.org")
    assert again["status_url"] == first["status_url"]
    stack.kill(worker)


def test_killed_worker_leaves_the_job_retried_and_complete(stack: Stack) -> None:
    worker = stack.start_worker("w2")
    before = _published(stack)
    rq = {"kingdom": "plantae"}
    status = stack.request(rq, "kill@example.org")
    stack.wait(
        status["status_url"],
        lambda s: s["task_status"] == "STARTED" and 0 < s["records_written"] < s["total_records"],
    )
    stack.kill(worker)
    # While nobody builds it the job is not SUCCESS, whatever was uploaded so far.
    after_kill = stack.status(status["status_url"])
    assert after_kill["task_status"] != "SUCCESS"
    assert _published(stack) == before  # whatever was written so far is invisible
    stack.start_worker("w3")
    final, _ = stack.wait(status["status_url"], lambda s: s["complete"], timeout=150)
    assert final["task_status"] == "SUCCESS", final
    assert final["records_written"] == final["total_records"]
    _check_archive(stack, final, rq)
    assert len(_published(stack)) == len(before) + 1


def _only_workers(stack: Stack, *started: subprocess.Popen[bytes]) -> None:
    """Kill every worker but ``started``: a worker of an earlier test, with the short time
    limit of the stack's environment, would restore unacknowledged messages after 22 s and
    hide what the test looks at."""
    for proc in stack.workers:
        if proc not in started:
            stack.kill(proc)


def _mid_build(status: dict[str, Any]) -> bool:
    return bool(
        status["task_status"] == "STARTED"
        and 0 < status["records_written"] < status["total_records"]
    )


#: The documented production time limit: the broker's visibility timeout follows it (about
#: six hours), so only serve's sweep for stale heartbeats can bring a dead worker's job back
#: within the test.
PRODUCTION_LIMIT = {"DOWNLOADER_JOB_TIME_LIMIT_SECONDS": "21600"}


def test_a_worker_killed_cold_and_restarted_finishes_the_job_within_the_stale_window(
    stack: Stack,
) -> None:
    _only_workers(stack)
    worker = stack.start_worker("cold1", **PRODUCTION_LIMIT)
    before = _published(stack)
    rq = {"kingdom": "animalia"}
    status = stack.request(rq, "cold@example.org")
    stack.wait(status["status_url"], _mid_build)
    stack.kill(worker)
    stack.start_worker("cold2", **PRODUCTION_LIMIT)  # back at once, within stale_job_seconds
    started = time.monotonic()
    final, _ = stack.wait(status["status_url"], lambda s: s["complete"], timeout=120)
    assert final["task_status"] == "SUCCESS", final
    assert final["records_written"] == final["total_records"]
    # stale_job_seconds (6 s) + serve's sweep + the build itself, not the six hours the
    # broker would have waited.
    assert time.monotonic() - started < 90
    _check_archive(stack, final, rq)
    assert len(_published(stack)) == len(before) + 1
    for proc in stack.workers:
        stack.kill(proc)


def test_a_killed_pool_process_has_its_job_built_again_not_dropped(stack: Stack) -> None:
    import psutil

    _only_workers(stack)
    # Celery notices a dead pool process within about five seconds; with the stack's 6 s
    # window the heartbeat would be stale by then, so this worker judges by a longer one.
    worker = stack.start_worker(
        "pool1", pool="prefork", DOWNLOADER_STALE_JOB_SECONDS="10", **PRODUCTION_LIMIT
    )
    before = _published(stack)
    rq = {"kingdom": "fungi"}
    status = stack.request(rq, "oom@example.org")
    stack.wait(status["status_url"], _mid_build)
    # What the OOM killer does: the pool process dies, its parent stays up and Celery
    # redelivers the message at once, while the dead build's heartbeat is still fresh.
    (child,) = psutil.Process(worker.pid).children()
    child.kill()
    final, _ = stack.wait(status["status_url"], lambda s: s["complete"], timeout=120)
    assert final["task_status"] == "SUCCESS", final
    assert final["records_written"] == final["total_records"]
    _check_archive(stack, final, rq)
    assert len(_published(stack)) == len(before) + 1
    stack.kill(worker)


def test_small_jobs_have_their_own_queue_and_never_wait_behind_large_ones(
    stack: Stack,
) -> None:
    import redis

    _only_workers(stack)
    small_worker = stack.start_worker("small1", queues="small")
    large_rq, small_rq = {}, {"genus": "betula"}
    assert stack.source.count("records", validate_query(large_rq, "records"), None) >= LARGE
    assert 0 < stack.source.count("records", validate_query(small_rq, "records"), None) < LARGE
    large = stack.request(large_rq, "large@example.org")
    small = stack.request(small_rq, "small@example.org")
    done, _ = stack.wait(small["status_url"], lambda s: s["complete"])
    assert done["task_status"] == "SUCCESS", done
    _check_archive(stack, done, small_rq)
    # Nobody consumes the large queue yet: the large job waits there, not in front of the
    # small one.
    waiting = stack.status(large["status_url"])
    assert waiting["task_status"] == "PENDING" and waiting["records_written"] == 0
    broker = redis.Redis.from_url(stack.env["DOWNLOADER_CELERY_BROKER_URL"])
    assert broker.llen("downloads-large") >= 1
    stack.start_worker("large1", queues="large")
    final, _ = stack.wait(large["status_url"], lambda s: s["complete"], timeout=150)
    assert final["task_status"] == "SUCCESS", final
    _check_archive(stack, final, large_rq)
    assert final["records_written"] == final["total_records"]
    for proc in stack.workers:
        stack.kill(proc)
    assert small_worker.poll() is not None
    # The Celery workers' build figures reach serve's /metrics through the Redis job store.
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{stack.base_url}/metrics", timeout=30).text
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert got[("dwca_builds_total", (("state", "SUCCESS"),))] >= 2
    assert got[("dwca_build_seconds_count", ())] >= 2
    assert got[("dwca_build_records_total", ())] >= final["total_records"] + done["total_records"]
    assert got[("dwca_queue_jobs", (("queue", "large"),))] == 0


#: Retries after a transient error start one second apart (then 2, 4, 8 ... s).
FAST_RETRIES = {"DOWNLOADER_TRANSIENT_RETRY_FIRST_SECONDS": "1"}


def _retrying(status: dict[str, Any]) -> bool:
    return bool(status["task_status"] == "PENDING" and status.get("retrying") is True)


def test_a_job_waits_out_a_search_cluster_outage_and_completes(stack: Stack) -> None:
    # Queue a request while the cluster is up, with no worker running, then take it down.
    for proc in stack.workers:
        stack.kill(proc)
    before = _published(stack)
    rq = {"genus": "quercus"}
    status = stack.request(rq, "outage@example.org")
    address = urlsplit(stack.osmem.url).netloc
    stack.osmem.close()
    retry = {"DOWNLOADER_TRANSIENT_RETRY_SECONDS": "900", **FAST_RETRIES}
    worker = stack.start_worker("outage1", **retry)
    waiting, _ = stack.wait(status["status_url"], _retrying)
    assert waiting["complete"] is False and "could not be reached" in waiting["error"]
    assert datetime.fromisoformat(waiting["retry_at"]) > datetime.fromisoformat(waiting["created"])
    # The worker holding the delayed retry dies too; serve's sweep sends the job again once
    # its retry_at is overdue, so it is not left for the broker's visibility timeout.
    # (Stopped also so that no attempt runs against the cluster while it is being refilled.)
    stack.kill(worker)
    # The cluster comes back at the same address with the same data; the job completes.
    stack.osmem = OsmemServer.start(japanese=False, addr=address)
    export_store(store_path(stack.tmp / "store"), stack.source)
    stack.start_worker("outage2", **retry)
    final, _ = stack.wait(status["status_url"], lambda s: s["complete"], timeout=180)
    assert final["task_status"] == "SUCCESS", final
    assert final["retrying"] is False and "error" not in final
    _check_archive(stack, final, rq)
    assert len(_published(stack)) == len(before) + 1
    stack.kill(stack.workers[-1])


def test_search_cluster_down_is_retried_then_fails_with_a_reason(stack: Stack) -> None:
    # Queue a request while the cluster is up, with no worker running, then take it down.
    for proc in stack.workers:
        stack.kill(proc)
    status = stack.request({"genus": "pinus"}, "down@example.org")
    stack.osmem.close()
    # A short retry total: a few attempts over about five seconds, then the reason.
    stack.start_worker("w4", DOWNLOADER_TRANSIENT_RETRY_SECONDS="5", **FAST_RETRIES)
    # A message a killed worker had fetched ahead is sent again by serve's sweep after
    # stale_job_seconds (downloader.build.recovery.redispatch_unclaimed); before that sweep
    # the job waited for the broker's visibility timeout and this test timed out now and
    # then under a loaded suite.
    final, seen = stack.wait(status["status_url"], lambda s: s["complete"], timeout=180)
    waits = [s for s in seen if _retrying(s)]
    assert waits, "the status never said it was retrying"
    assert all(s["retry_at"] and "could not be reached" in s["error"] for s in waits)
    assert final["task_status"] == "FAILURE" and final["retrying"] is False
    assert "could not be reached" in final["error"] and "attempts" in final["error"]
    # The job is saved as FAILURE just before its email goes out: wait for the message.
    deadline = time.monotonic() + 30
    while not stack.inbox.to("down@example.org") and time.monotonic() < deadline:
        stack.inbox.wait_for(len(stack.inbox.messages) + 1, timeout=deadline - time.monotonic())
    failure_mail = stack.inbox.to("down@example.org")
    assert len(failure_mail) == 1
    assert "could not be reached" in failure_mail[0].get_content()
