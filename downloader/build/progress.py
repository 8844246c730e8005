"""Progress reporting while an archive is written: records written, the heartbeat that
tells other workers the build is alive, and the cancel check."""

from __future__ import annotations

import logging
import threading
import time

from downloader.backends import Context

log = logging.getLogger(__name__)

#: Seconds between two looks at the job's cancel flag while writing.
CANCEL_CHECK_SECONDS = 1.0


class ProgressReporter:
    """Progress to the job store: every ``every`` rows, and at least every ``beat`` seconds
    from a background thread (the heartbeat that tells others this build is alive)."""

    def __init__(self, ctx: Context, job_id: str, *, every: int, beat: float) -> None:
        self.ctx, self.job_id, self.every, self.beat = ctx, job_id, every, beat
        self.rows = 0
        self.expected = 0
        self.total: int | None = None
        self._last_written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)
        self._cancel_checked = float("-inf")
        self._cancelled = False

    def __enter__(self) -> ProgressReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def records_written(self) -> int:
        """Rows scaled to records: indexed and verbatim files hold the same records, so the
        row count is converted to the share of ``total`` it represents."""
        if not self.expected or self.total is None:
            return 0
        return min(self.total, self.rows * self.total // self.expected)

    def write(self) -> None:
        """Store the current progress (also the heartbeat)."""
        try:
            self.ctx.jobs.update_progress(self.job_id, self.records_written(), self.total)
        except Exception:
            # Progress is advisory; a failed update must not fail the build.
            log.warning("progress update for job %s failed", self.job_id, exc_info=True)

    def progress(self, rows: int) -> None:
        """write_archive's callback."""
        self.rows = rows
        if rows - self._last_written >= self.every:
            self._last_written = rows
            self.write()

    def should_cancel(self) -> bool:
        """write_archive's cancellation check, at most every ``CANCEL_CHECK_SECONDS``."""
        now = time.monotonic()
        if now - self._cancel_checked >= CANCEL_CHECK_SECONDS:
            self._cancel_checked = now
            self._cancelled = self.ctx.jobs.is_cancel_requested(self.job_id)
        return self._cancelled

    def _run(self) -> None:
        while not self._stop.wait(self.beat):
            self.write()
