"""Parked read connections (downloader.sources.duckdb.idle): reused while the store stays
the same, and never in the way of an ingest."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from downloader.ingest.load import ingest_synthetic, store_path
from downloader.sources.duckdb import DuckDBSource, idle
from tests.unit.downloader.sources.duckdb.store_support import rq


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> idle.IdleConnections:
    """A pool of this test's own (the process-wide one may hold other tests' stores)."""
    own = idle.IdleConnections()
    monkeypatch.setattr(idle, "IDLE", own)
    return own


def _opens(monkeypatch: pytest.MonkeyPatch, source: DuckDBSource) -> list[int]:
    opened: list[int] = []
    real = source._connect_with_config

    def counting(read_config: bool) -> Any:
        opened.append(1)
        return real(read_config)

    monkeypatch.setattr(source, "_connect_with_config", counting)
    return opened


def test_operations_reuse_a_parked_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: idle.IdleConnections
) -> None:
    ingest_synthetic(tmp_path, 30, seed=1)
    source = DuckDBSource(store_path(tmp_path))
    opened = _opens(monkeypatch, source)
    for genus in ("acer", "quercus", "pinus"):
        source.count("records", rq({"genus": genus}), None)
    assert len(opened) == 1
    with source.session():
        source.count("records", rq({"genus": "betula"}), None)
    with source.session():
        source.count("records", rq({"genus": "rosa"}), None)
    # The sessions' connection (one thread, for streams) was parked and reused too.
    assert len(opened) == 2


def test_nothing_is_parked_while_a_writer_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: idle.IdleConnections
) -> None:
    ingest_synthetic(tmp_path, 30, seed=1)
    store = store_path(tmp_path)
    source = DuckDBSource(store)
    opened = _opens(monkeypatch, source)
    source.count("records", rq({"genus": "acer"}), None)
    with idle.waiting_writer(store):
        assert idle.writer_waiting(store)
        # What was parked before the writer came is closed by the next look ...
        pool.reap()
        source.count("records", rq({"genus": "quercus"}), None)
        source.count("records", rq({"genus": "pinus"}), None)
        # ... and nothing is parked meanwhile: every operation opens (and closes) its own.
        assert len(opened) == 3
        assert pool.drain(store) == 0
    assert not idle.writer_waiting(store)


def test_an_ingest_never_attaches_while_the_reaper_is_still_closing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: idle.IdleConnections
) -> None:
    """An ingest drains the pool before it attaches: that waits for a close the reaper has
    begun: DuckDB refuses to attach a file this process still has open."""
    ingest_synthetic(tmp_path, 30, seed=1)
    store = store_path(tmp_path)
    DuckDBSource(store).count("records", rq({"genus": "acer"}), None)  # parks its connection
    real_close = idle._close
    started = threading.Event()

    def slow_close(con: Any) -> None:
        started.set()
        time.sleep(0.5)
        real_close(con)

    monkeypatch.setattr(idle, "_close", slow_close)
    monkeypatch.setattr(idle, "IDLE_SECONDS", 0.0)
    reaper = threading.Thread(target=pool.reap)
    reaper.start()
    assert started.wait(5)
    pool.drain(store)  # finds nothing parked, but must wait for the reaper's close
    monkeypatch.setattr(idle, "_close", real_close)
    result = ingest_synthetic(tmp_path, 10, seed=2)  # attaches the store at once
    reaper.join()
    assert result.records == 10


def test_a_changed_store_is_never_read_through_an_old_connection(
    tmp_path: Path, pool: idle.IdleConnections
) -> None:
    ingest_synthetic(tmp_path, 30, seed=1)
    source = DuckDBSource(store_path(tmp_path))
    assert source.count("records", None, None) == 30
    ingest_synthetic(tmp_path, 10, seed=2)
    assert source.count("records", None, None) == 40


def test_an_ingest_in_another_process_gets_the_store_from_a_serving_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: idle.IdleConnections
) -> None:
    """Serve counts and parks its connection; an ingest started then (its own process, a
    lock timeout far shorter than the idle time here) is not kept out: its marker makes the
    reaper give the file up."""
    monkeypatch.setattr(idle, "IDLE_SECONDS", 600.0)
    ingest_synthetic(tmp_path, 30, seed=1)
    source = DuckDBSource(store_path(tmp_path))
    assert source.count("records", None, None) == 30
    assert source.count("records", rq({"genus": "acer"}), None) >= 0
    reaper = pool._reaper
    assert reaper is not None and reaper.is_alive()
    script = (
        "import sys; from pathlib import Path; "
        "from downloader.ingest.load import ingest_synthetic; "
        "ingest_synthetic(Path(sys.argv[1]), 10, seed=2, lock_timeout=5.0); print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert source.count("records", None, None) == 40


def test_a_stream_gives_the_file_back_only_when_a_writer_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: idle.IdleConnections
) -> None:
    """A long read keeps its connection (each reopening costs DuckDB a heap trim and a
    catalogue read) until an ingest waits for the file; then it gives the file back at the
    end of each window and resumes, with the same rows."""
    ingest_synthetic(tmp_path, 300, seed=1)
    store = store_path(tmp_path)
    source = DuckDBSource(store, window_seconds=0.0, hold_seconds=600.0)
    opened = _opens(monkeypatch, source)

    def read() -> list[str]:
        with source.session():
            batches = source.batches("records", None, None, fields=["uuid"], batch_size=7)
            return [u for b in batches for u in b.column("uuid").to_pylist()]

    alone = read()
    assert len(alone) == 300 and len(opened) == 1
    opened.clear()
    with idle.waiting_writer(store):
        assert read() == alone
    assert len(opened) > 5


def test_warm_reads_the_links_once_per_state_of_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serve and each worker call warm() at start, so the first count does not wait for the
    media links; an empty data directory is nothing to warm."""
    from downloader.sources.duckdb import links
    from downloader.sources.duckdb import source as source_module

    DuckDBSource(store_path(tmp_path)).warm()  # no store yet
    ingest_synthetic(tmp_path, 30, seed=1)
    reads: list[int] = []
    real = links.MediaLinks.read.__func__  # type: ignore[attr-defined]  # (a classmethod's function)

    def counting(cls: type[links.MediaLinks], con: Any) -> Any:
        reads.append(1)
        return real(cls, con)

    monkeypatch.setattr(links.MediaLinks, "read", classmethod(counting))
    source = DuckDBSource(store_path(tmp_path))
    source.warm()
    assert len(reads) == 1
    source.count("mediarecords", rq({"genus": "acer"}), None)
    DuckDBSource(store_path(tmp_path)).count("mediarecords", rq({"genus": "quercus"}), None)
    assert len(reads) == 1
    ingest_synthetic(tmp_path, 10, seed=2)
    source.count("mediarecords", rq({"genus": "acer"}), None)
    assert len(reads) == 2
    assert source_module._LINKS[store_path(tmp_path)][1] is not None


def test_a_forked_child_starts_with_no_parked_connections(tmp_path: Path) -> None:
    """A Celery prefork pool process is a fork: it must not use (or close) its parent's
    DuckDB connections, and gets a reaper of its own when it parks one."""
    import os

    ingest_synthetic(tmp_path, 30, seed=1)
    store = store_path(tmp_path)
    DuckDBSource(store).count("records", None, None)
    assert idle.IDLE._parked  # the parent parked its connection
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it has, then leave without running any cleanup
        empty = not idle.IDLE._parked and idle.IDLE._reaper is None
        os.write(write, b"1" if empty else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
    idle.IDLE.drain(store)
