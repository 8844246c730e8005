"""The SQLite job store keeps one connection per thread: writes in one thread or process are
seen by the others at once, a forked or spawned child (or an unpickled copy) opens its own
connections, and close() closes them without making the store unusable."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import sqlite3
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from downloader.jobs.sqlite import SQLiteJobStore
from downloader.models import Job


def make_job(**kw: Any) -> Job:
    return Job(
        id=str(uuid.uuid4()),
        query_hash="h1",
        request={"rq": {"genus": "acer"}},
        query={"rq": {"genus": "acer"}},
        data_version="1",
        **kw,
    )


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def test_each_thread_reuses_its_own_connection(store: SQLiteJobStore) -> None:
    job = make_job()
    store.save(job)
    first = store._conn()
    assert store.get(job.id) is not None
    assert store._conn() is first  # kept, not reopened per call
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(store._conn).result()
    assert other is not first


def test_a_write_in_one_thread_is_seen_at_once_by_a_reader_in_another(
    store: SQLiteJobStore,
) -> None:
    job = make_job()
    store.save(job)
    with ThreadPoolExecutor(1) as pool:
        # The pool thread reads first, so its kept connection exists before the writes.
        assert pool.submit(store.get, job.id).result().state == "PENDING"  # type: ignore[union-attr]
        for n in range(1, 4):
            store.update_progress(job.id, n * 10, 30)
            seen = pool.submit(store.get, job.id).result()
            assert seen is not None and seen.records_written == n * 10
        job.state = "SUCCESS"
        store.save(job)
        seen = pool.submit(store.get, job.id).result()
        assert seen is not None and seen.state == "SUCCESS"


def test_threads_writing_and_reading_together(store: SQLiteJobStore) -> None:
    jobs = [make_job() for _ in range(8)]
    for job in jobs:
        store.save(job)

    def work(job: Job) -> int:
        for n in range(20):
            store.update_progress(job.id, n, 20)
            back = store.get(job.id)
            assert back is not None and back.records_written == n
        return n

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(work, jobs)) == [19] * 8


def _save_in_child(path: str, job_id: str) -> None:
    s = SQLiteJobStore(path)
    job = s.get(job_id)
    assert job is not None
    job.state = "SUCCESS"
    s.save(job)
    s.update_progress(job_id, 42, 42)
    s.close()


def _use_inherited_store(store: SQLiteJobStore, job_id: str, parent_conn_id: int) -> None:
    # Runs in a forked child (or an unpickled copy in a spawned one): the store must not use
    # the parent's connection, and must work.
    assert id(store._conn()) != parent_conn_id or os.getpid() != store._pid
    job = store.get(job_id)
    assert job is not None
    job.state = "SUCCESS"
    store.save(job)
    store.update_progress(job_id, 7, 7)


def test_a_job_saved_in_a_spawned_process_is_seen_by_the_parent(store: SQLiteJobStore) -> None:
    job = make_job()
    store.save(job)
    assert store.get(job.id).state == "PENDING"  # type: ignore[union-attr]  # conn now open
    proc = multiprocessing.get_context("spawn").Process(
        target=_save_in_child, args=(str(store.path), job.id)
    )
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    back = store.get(job.id)
    assert back is not None and back.state == "SUCCESS" and back.records_written == 42


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_the_store_object_works_in_a_child_process(store: SQLiteJobStore, method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} is not available here")
    job = make_job()
    store.save(job)
    parent_conn = store._conn()
    proc = multiprocessing.get_context(method).Process(
        target=_use_inherited_store, args=(store, job.id, id(parent_conn))
    )
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    # The parent's kept connection is intact and sees the child's writes.
    assert store._conn() is parent_conn
    back = store.get(job.id)
    assert back is not None and back.state == "SUCCESS" and back.records_written == 7


def test_after_fork_the_child_opens_its_own_connection(store: SQLiteJobStore) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    store.save(make_job())
    parent_conn = store._conn()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report whether it got a fresh connection, then leave at once
        ok = 0
        try:
            ok = int(store._conn() is not parent_conn and len(store._open) == 1)
        finally:
            os.write(w, str(ok).encode())
            os._exit(0)
    os.close(w)
    answer = os.read(r, 8)
    os.close(r)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert store._conn() is parent_conn


def test_a_pickled_copy_has_no_connections(store: SQLiteJobStore) -> None:
    job = make_job()
    store.save(job)
    copy = pickle.loads(pickle.dumps(store))
    assert copy._open == []
    assert copy.get(job.id) == store.get(job.id)
    copy.close()


def test_close_closes_every_thread_connection_and_the_store_reopens(
    store: SQLiteJobStore,
) -> None:
    job = make_job()
    store.save(job)
    mine = store._conn()
    with ThreadPoolExecutor(1) as pool:
        theirs = pool.submit(store._conn).result()
        store.close()
        for conn in (mine, theirs):
            with pytest.raises(sqlite3.ProgrammingError):
                conn.execute("SELECT 1")
        # Still usable, from any thread: a new connection is opened on demand.
        assert store.get(job.id) is not None
        assert pool.submit(store.get, job.id).result() is not None
    assert store._conn() is not mine


def test_connections_of_ended_threads_are_closed(store: SQLiteJobStore) -> None:
    conns: list[sqlite3.Connection] = []
    t = threading.Thread(target=lambda: conns.append(store._conn()))
    t.start()
    t.join()
    store._conn()  # this thread's first connection: ended threads are swept
    with ThreadPoolExecutor(1) as pool:
        pool.submit(store._conn).result()
        assert all(t.is_alive() for t, _ in store._open)
    with pytest.raises(sqlite3.ProgrammingError):
        conns[0].execute("SELECT 1")


def test_a_failed_transaction_leaves_the_kept_connection_usable(store: SQLiteJobStore) -> None:
    job = make_job()
    store.save(job)
    with pytest.raises(RuntimeError), store._transaction() as conn:
        conn.execute("UPDATE jobs SET state = 'FAILURE' WHERE id = ?", (job.id,))
        raise RuntimeError("boom")
    assert not store._conn().in_transaction
    assert store.get(job.id).state == "PENDING"  # type: ignore[union-attr]  # rolled back
    store.update_progress(job.id, 3, 3)
    assert store.get(job.id).records_written == 3  # type: ignore[union-attr]


def test_access_log_levels(caplog: pytest.LogCaptureFixture) -> None:
    from downloader.api.app import log_request

    class Request:
        method, uri, remote_ip = "GET", "/v2/download/x", "127.0.0.1"

        def request_time(self) -> float:
            return 0.001

    class Handler:
        request = Request()

        def __init__(self, status: int) -> None:
            self.status = status

        def get_status(self) -> int:
            return self.status

    with caplog.at_level(logging.DEBUG, logger="tornado.access"):
        for status in (200, 304, 404, 503):
            log_request(Handler(status))  # type: ignore[arg-type]
    levels = {r.getMessage().split()[0]: r.levelno for r in caplog.records}
    assert levels == {
        "200": logging.DEBUG,
        "304": logging.DEBUG,
        "404": logging.INFO,
        "503": logging.WARNING,
    }
