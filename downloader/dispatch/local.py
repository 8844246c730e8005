"""The embedded dispatcher: warm worker processes inside ``downloader serve``.

The queue is the job store itself, so it is as durable as the store: ``dispatch`` only wakes
the supervisor thread, which hands PENDING jobs to a pool of ``workers`` long-lived worker
processes (:func:`downloader.dispatch.worker.serve_jobs`), started with serve and each
building one job at a time. A worker has imported everything a build needs before its
first job, so a small download starts in milliseconds; it retires after
``worker_max_jobs`` builds or above ``worker_max_rss_mb`` and a fresh one takes its place.

The rules of one process per build still hold, because a build never shares its process
with another build: a job over ``job_time_limit_seconds`` is stopped by killing its worker
(a new one is started), and a worker that crashes (or is killed) takes only its own job
with it. After a restart, PENDING jobs simply run; a job left STARTED by a process that died
counts as interrupted: it is queued again until it has been started ``max_attempts`` times,
then it fails with a message saying so (and its requesters are told).

Small downloads never wait behind large ones (:mod:`downloader.dispatch.routing`): queued
small jobs start before large ones, and large jobs never take the last
``small_job_workers`` idle workers (with the default two workers, one builds large jobs and
the other stays for small ones, which also use any worker large jobs leave idle).

The local dispatcher assumes it is the only one working on its job store (one ``serve`` per
data directory, which the embedded SQLite store implies anyway).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import socket
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from downloader.backends import Context, make_context
from downloader.build import fail_job
from downloader.config import Settings
from downloader.dispatch.routing import is_large, small_reserve
from downloader.dispatch.worker import run_job, serve_jobs
from downloader.models import now_utc

log = logging.getLogger(__name__)


@dataclass
class _Worker:
    """One warm worker process and the pipe to it."""

    process: BaseProcess
    conn: Connection
    ready: bool = False
    job_id: str | None = None
    retiring: bool = False


@dataclass
class _Run:
    """A build in progress: its process, when it started, and its pool worker (if any)."""

    process: BaseProcess
    started: float
    worker: _Worker | None = None
    large: bool = False


class _Wakeup:
    """A wake-up the supervisor waits on together with its workers' pipes (a socket pair),
    so a dispatch or a finished build wakes it at once."""

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def set(self) -> None:
        """Wake the supervisor (from any thread)."""
        with contextlib.suppress(BlockingIOError, OSError):
            self._writer.send(b"\0")

    def clear(self) -> None:
        """Drop the wake-ups read so far."""
        with contextlib.suppress(BlockingIOError, OSError):
            while self.reader.recv(4096):
                pass


class LocalDispatcher:
    """:class:`~downloader.interfaces.Dispatcher` running builds in local worker processes."""

    def __init__(self, settings: Settings, *, ctx: Context | None = None) -> None:
        self.settings = settings
        self.ctx = ctx or make_context(settings)
        # spawn: fresh interpreters, never a fork of a process with threads (Tornado's
        # executor, SQLite and DuckDB connections) in it.
        self._mp = multiprocessing.get_context("spawn")
        self._wake = _Wakeup()
        self._stopping = threading.Event()
        self._running: dict[str, _Run] = {}
        self._workers: list[_Worker] = []
        self._thread: threading.Thread | None = None
        self._early_deaths = 0
        self._next_spawn = 0.0

    # --- Dispatcher ---------------------------------------------------------------------

    def dispatch(self, job_id: str, *, records: int | None = None) -> None:
        """The job is saved as PENDING; wake the supervisor to start it if a worker is free
        (its size is read from the job store, ``Job.counted_records``)."""
        self._wake.set()

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Recover interrupted jobs, start the warm workers, then supervise them on a
        background thread."""
        self.recover()
        self._keep_workers()
        self._thread = threading.Thread(target=self._loop, name="local-dispatcher", daemon=True)
        self._thread.start()

    def stop(
        self,
        timeout: float = 10.0,
        *,
        grace: float = 0.0,
        hurry: threading.Event | None = None,
    ) -> None:
        """Stop starting builds; let running ones finish for up to ``grace`` seconds (or
        until ``hurry`` is set), then stop the workers and hand the unfinished jobs back:
        PENDING again, the interrupted attempt not counted, so the next start builds them."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for worker in self._workers:
            if worker.job_id is None:
                with contextlib.suppress(OSError, ValueError):
                    worker.conn.send(None)  # idle: leave now
        deadline = time.monotonic() + grace
        while self._running and time.monotonic() < deadline:
            if hurry is not None and hurry.is_set():
                break
            self._reap()
            if self._running:
                time.sleep(0.1)
        self._reap()
        stopped = list(self._running)
        processes = [w.process for w in self._workers]
        processes += [r.process for r in self._running.values() if r.worker is None]
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(timeout)
        for worker in self._workers:
            worker.conn.close()
        self._workers.clear()
        self._running.clear()
        for job_id in stopped:
            self._hand_back(job_id)

    def _hand_back(self, job_id: str) -> None:
        """A build stopped by a shutdown: its job is queued again, this attempt uncounted."""
        job = self.ctx.jobs.get(job_id)
        if job is None or job.state != "STARTED":
            return  # it recorded its outcome just before it was stopped
        self._discard_partial(job_id)
        job.state = "PENDING"
        job.attempts = max(0, job.attempts - 1)
        self.ctx.jobs.save(job)
        log.info("job %s handed back at shutdown; it runs again at the next start", job_id)

    def recover(self) -> None:
        """Requeue (or give up on) jobs left STARTED by a previous run of the service."""
        for job in self.ctx.jobs.pending_jobs():
            if job.state == "STARTED":
                self._interrupted(job.id, "the service stopped while it was being built")

    @property
    def running(self) -> list[str]:
        """Ids of the jobs being built right now."""
        return list(self._running)

    # --- supervision ----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._reap()
                self._enforce_time_limit()
                self._keep_workers()
                self._launch()
            except Exception:
                # The supervisor must survive a job store hiccup; it tries again next turn.
                log.exception("local dispatcher: supervision step failed")
            self._wait()

    def _wait(self) -> None:
        """Sleep until a dispatch, a worker's message or death, or the next poll."""
        waitables: list[Any] = [self._wake.reader]
        for worker in self._workers:
            waitables += [worker.conn, worker.process.sentinel]
        timeout = self.settings.dispatch_poll_seconds
        if any(r.worker is None for r in self._running.values()):
            timeout = min(timeout, 0.5)
        try:
            wait(waitables, timeout)
        except OSError:
            time.sleep(0.05)
        self._wake.clear()

    def _spawn(self) -> None:
        parent, child = self._mp.Pipe()
        process = self._mp.Process(
            target=serve_jobs,
            # run_job is looked up now, so a test may replace it with its own builder.
            args=(child, self.settings, run_job),
            name="build-worker",
            daemon=True,
        )
        process.start()
        child.close()
        self._workers.append(_Worker(process, parent))
        log.info("worker process %s started", process.pid)

    def _keep_workers(self) -> None:
        """Keep ``workers`` worker processes (a worker that died early delays the next
        start, so a broken installation does not spawn in a tight loop)."""
        if self._stopping.is_set() or time.monotonic() < self._next_spawn:
            return
        while len(self._workers) < self.settings.workers:
            self._spawn()

    def _launch(self) -> None:
        idle = [w for w in self._workers if w.ready and w.job_id is None and not w.retiring]
        if not idle or self._stopping.is_set():
            return
        now = now_utc()
        # Large jobs may use every worker but the reserved ones; small jobs go first (the
        # store's order, oldest first, is kept within each size).
        large_slots = self.settings.workers - small_reserve(self.settings)
        large_slots -= sum(1 for r in self._running.values() if r.large)
        queued = [
            (is_large(self.settings, job.counted_records), job)
            for job in self.ctx.jobs.pending_jobs()
            if job.state == "PENDING" and job.id not in self._running
        ]
        queued.sort(key=lambda pair: pair[0])
        for large, job in queued:
            if not idle:
                break
            if job.retry_at is not None and job.retry_at > now:
                continue  # waiting out its backoff after a transient error
            if large and large_slots <= 0:
                continue
            worker = idle.pop(0)
            try:
                worker.conn.send(job.id)
            except (OSError, ValueError):
                continue  # it died just now; reaped next turn
            worker.job_id = job.id
            self._running[job.id] = _Run(worker.process, time.monotonic(), worker, large)
            large_slots -= large
            log.info(
                "job %s (%s): handed to worker process %s",
                job.id,
                "large" if large else "small",
                worker.process.pid,
            )

    def _reap(self) -> None:
        for worker in list(self._workers):
            self._read_messages(worker)
            if worker.process.is_alive():
                continue
            worker.process.join()
            self._workers.remove(worker)
            worker.conn.close()
            code = worker.process.exitcode
            if not worker.ready:
                self._early_deaths += 1
                self._next_spawn = time.monotonic() + min(30.0, 2.0**self._early_deaths)
                log.error(
                    "worker process %s ended before it was ready (exit %s)",
                    worker.process.pid,
                    code,
                )
            if worker.job_id is not None and worker.job_id in self._running:
                job_id = worker.job_id
                del self._running[job_id]
                self._finished(job_id, code)
        for job_id, run in list(self._running.items()):
            if run.worker is not None or run.process.is_alive():
                continue
            run.process.join()
            del self._running[job_id]
            self._finished(job_id, run.process.exitcode)

    def _read_messages(self, worker: _Worker) -> None:
        while True:
            try:
                if not worker.conn.poll():
                    return
                message = worker.conn.recv()
            except (EOFError, OSError):
                return
            if message[0] == "ready":
                worker.ready = True
                self._early_deaths = 0
            elif message[0] == "done":
                job_id, retire = message[1], message[2]
                worker.job_id = None
                worker.retiring = worker.retiring or retire
                if self._running.pop(job_id, None) is not None:
                    self._finished(job_id, 0)

    def _finished(self, job_id: str, code: int | None) -> None:
        """A build's process is done with ``job_id``: what its state now says to do."""
        job = self.ctx.jobs.get(job_id)
        if job is None:
            return
        if job.state == "STARTED":
            # It ended without recording an outcome: it crashed or was killed.
            self._interrupted(job_id, f"its worker process ended unexpectedly (exit {code})")
        else:
            # A worker is free: look for the next job at once (a job PENDING again after a
            # transient error waits for its retry_at, see _launch).
            self._wake.set()

    def _enforce_time_limit(self) -> None:
        limit = self.settings.job_time_limit_seconds
        now = time.monotonic()
        for job_id, run in list(self._running.items()):
            if now - run.started <= limit:
                continue
            log.warning("job %s exceeded the time limit of %d s; stopping it", job_id, limit)
            run.process.terminate()
            run.process.join(10)
            if run.process.is_alive():
                run.process.kill()
                run.process.join(10)
            del self._running[job_id]
            if run.worker is not None and run.worker in self._workers:
                self._workers.remove(run.worker)  # a fresh one takes its place
                run.worker.conn.close()
            job = self.ctx.jobs.get(job_id)
            if job is not None and job.state in ("PENDING", "STARTED"):
                self._discard_partial(job_id)
                fail_job(
                    self.ctx,
                    job,
                    f"The archive took longer than the limit of {_duration(limit)} to build "
                    "and was stopped. Please narrow the query (fewer records, or fewer "
                    "columns with record_fields) and request it again.",
                    reason="time_limit",
                )

    def _interrupted(self, job_id: str, why: str) -> None:
        job = self.ctx.jobs.get(job_id)
        if job is None or job.state not in ("STARTED", "PENDING"):
            return
        self._discard_partial(job_id)
        if job.interruptions >= self.settings.max_attempts:
            fail_job(
                self.ctx,
                job,
                f"The archive build was interrupted {job.interruptions} times ({why}) and was "
                "given up. Please request the download again; if it keeps failing, narrow "
                "the query or tell the service's operators.",
                reason="interrupted",
            )
            return
        log.warning("job %s interrupted (%s); queued again", job_id, why)
        job.state = "PENDING"
        self.ctx.jobs.save(job)
        self._wake.set()

    def _discard_partial(self, job_id: str) -> None:
        from downloader.storage.local import LocalStorage

        storage = self.ctx.storage
        if isinstance(storage, LocalStorage):
            # Only this job's temporaries: other builds are still writing theirs.
            for tmp in storage.root.glob(f".tmp-{job_id}.*"):
                tmp.unlink(missing_ok=True)


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return f"{hours} hour" + ("s" if hours != 1 else "")
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute" + ("s" if minutes != 1 else "")
    return f"{seconds:g} seconds"
