"""The embedded dispatcher: worker processes inside ``downloader serve``.

The queue is the job store itself, so it is as durable as the store: ``dispatch`` only wakes
the supervisor thread, which starts one spawned process per PENDING job (at most
``workers`` at a time) running :func:`downloader.dispatch.worker.run_job`. One process per job keeps
the rules simple and strong: a job over ``job_time_limit_seconds`` is stopped by killing its
process, and a build that crashes (or is killed) cannot disturb the others.

After a restart, PENDING jobs simply run; a job left STARTED by a process that died counts
as interrupted: it is queued again until it has been started ``max_attempts`` times, then it
fails with a message saying so (and its requesters are told).

The local dispatcher assumes it is the only one working on its job store (one ``serve`` per
data directory, which the embedded SQLite store implies anyway).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from downloader.backends import Context, make_context
from downloader.build import fail_job
from downloader.config import Settings
from downloader.dispatch.worker import run_job

log = logging.getLogger(__name__)


@dataclass
class _Run:
    process: BaseProcess
    started: float


class LocalDispatcher:
    """:class:`~downloader.interfaces.Dispatcher` running builds in local processes."""

    def __init__(self, settings: Settings, *, ctx: Context | None = None) -> None:
        self.settings = settings
        self.ctx = ctx or make_context(settings)
        # spawn: a fresh interpreter per build, never a fork of a process with threads
        # (Tornado's executor, SQLite and DuckDB connections) in it.
        self._mp = multiprocessing.get_context("spawn")
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._running: dict[str, _Run] = {}
        self._not_before: dict[str, float] = {}
        self._thread: threading.Thread | None = None

    # --- Dispatcher ---------------------------------------------------------------------

    def dispatch(self, job_id: str) -> None:
        """The job is saved as PENDING; wake the supervisor to start it if a slot is free."""
        self._wake.set()

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Recover interrupted jobs, then supervise workers on a background thread."""
        self.recover()
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
        until ``hurry`` is set), then terminate the rest and hand their jobs back: PENDING
        again, the interrupted attempt not counted, so the next start builds them."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + grace
        while self._running and time.monotonic() < deadline:
            if hurry is not None and hurry.is_set():
                break
            self._reap()
            if self._running:
                time.sleep(0.1)
        self._reap()
        stopped = list(self._running)
        for run in list(self._running.values()):
            run.process.terminate()
        for run in list(self._running.values()):
            run.process.join(timeout)
            if run.process.is_alive():
                run.process.kill()
                run.process.join(timeout)
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
                self._launch()
            except Exception:
                # The supervisor must survive a job store hiccup; it tries again next turn.
                log.exception("local dispatcher: supervision step failed")
            self._wake.wait(self.settings.dispatch_poll_seconds)
            self._wake.clear()

    def _launch(self) -> None:
        free = self.settings.workers - len(self._running)
        if free <= 0:
            return
        now = time.monotonic()
        for job in self.ctx.jobs.pending_jobs():
            if free <= 0:
                break
            if job.state != "PENDING" or job.id in self._running:
                continue
            if self._not_before.get(job.id, 0.0) > now:
                continue
            process = self._mp.Process(
                target=run_job,
                args=(job.id, self.settings),
                name=f"build-{job.id}",
                daemon=True,
            )
            process.start()
            self._running[job.id] = _Run(process, time.monotonic())
            free -= 1
            log.info("job %s: worker process %s started", job.id, process.pid)

    def _reap(self) -> None:
        for job_id, run in list(self._running.items()):
            if run.process.is_alive():
                continue
            run.process.join()
            del self._running[job_id]
            code = run.process.exitcode
            job = self.ctx.jobs.get(job_id)
            if job is None:
                continue
            if job.state == "STARTED":
                # The process ended without recording an outcome: it crashed or was killed.
                self._interrupted(job_id, f"its worker process ended unexpectedly (exit {code})")
            elif job.state == "PENDING":
                # A transient error: try again after a pause that grows with the attempts.
                delay = min(60.0, 2.0 ** max(0, job.attempts))
                self._not_before[job_id] = time.monotonic() + delay
                self._wake.set()
            else:
                self._not_before.pop(job_id, None)
                # A slot is free: look for the next job at once.
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
            job = self.ctx.jobs.get(job_id)
            if job is not None and job.state in ("PENDING", "STARTED"):
                self._discard_partial(job_id)
                fail_job(
                    self.ctx,
                    job,
                    f"The archive took longer than the limit of {_duration(limit)} to build "
                    "and was stopped. Please narrow the query (fewer records, or fewer "
                    "columns with record_fields) and request it again.",
                )

    def _interrupted(self, job_id: str, why: str) -> None:
        job = self.ctx.jobs.get(job_id)
        if job is None or job.state not in ("STARTED", "PENDING"):
            return
        self._discard_partial(job_id)
        if job.attempts >= self.settings.max_attempts:
            fail_job(
                self.ctx,
                job,
                f"The archive build was interrupted {job.attempts} times ({why}) and was "
                "given up. Please request the download again; if it keeps failing, narrow "
                "the query or tell the service's operators.",
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
