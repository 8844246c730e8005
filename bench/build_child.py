"""One archive build in its own process, so its peak memory is its own.

The parent (``bench.embedded``/``bench.search``) samples this process's RSS while it runs.
Here: settings from the environment (``DOWNLOADER_*``), a job created through the service
exactly as an HTTP request would create it (with a dispatcher that only remembers the id),
then ``downloader.build.build_archive`` timed from start to published archive. Prints one
JSON line.

    python -m bench.build_child '{"rq": {"kingdom": "plantae"}}'
    python -m bench.build_child '{"export": {"recordset": "synthetic-seed-6", "version": 1}}'

A parameter object with ``export`` makes the recordset version's export job (as
``POST /recordsets/{recordset}/{version}/export/`` does) instead of a download; with
``"warm_source": true`` the record source is made before the clock starts, as in a worker
that has built a job before.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


class _HeldDispatcher:
    """Dispatcher that keeps the job ids instead of running them: the benchmark runs the
    build itself, in this process, under its clock."""

    def __init__(self) -> None:
        self.job_ids: list[str] = []

    def dispatch(self, job_id: str, *, records: int | None = None) -> None:
        self.job_ids.append(job_id)


def main(argv: list[str]) -> int:
    """Create the job for the request given as JSON, build it, print what happened."""
    params: dict[str, Any] = json.loads(argv[0])
    profile = argv[1] if len(argv) > 1 else ""

    # As a build worker starts (downloader.dispatch.worker.serve_jobs).
    from downloader.runtime import keep_pandas_out

    keep_pandas_out()

    from downloader.backends import make_context
    from downloader.build import build_archive
    from downloader.config import load_settings
    from downloader.service.downloads import request_download

    settings = load_settings()
    dispatcher = _HeldDispatcher()
    ctx = make_context(settings, dispatcher=dispatcher)
    if params.pop("warm_source", False):
        # The record source of a worker that has built a job before: made (its client
        # library imported, its store opened, what it reads ahead read) before the clock
        # starts, as a warm worker does at start.
        ctx.source().warm()
    export = params.get("export")
    if export:
        # A new export job every run, as request_download's force=True gives a new download
        # job: start_export would reuse the one the ingest queued or an earlier run built.
        from downloader.models import now_utc
        from downloader.service.exports import _new_job

        new = _new_job(ctx, export["recordset"], int(export["version"]), now_utc(), base_url=None)
        ctx.jobs.save(new)
        dispatcher.dispatch(new.id)
    else:
        request_download(ctx, params, force=True, base_url="http://127.0.0.1/")
    (job_id,) = dispatcher.job_ids

    start = time.perf_counter()
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
        build_archive(job_id, ctx=ctx)
        profiler.stop()
        with Path(profile).open("w", encoding="utf-8") as out:
            out.write(profiler.output_text(unicode=True, color=False, show_all=False))
    else:
        build_archive(job_id, ctx=ctx)
    seconds = time.perf_counter() - start

    job = ctx.jobs.get(job_id)
    if job is None or job.state != "SUCCESS":
        state = None if job is None else (job.state, job.error)
        print(f"build did not succeed: {state}", file=sys.stderr)
        return 1
    path = getattr(ctx.storage, "path", None)
    archive = str(path(job.archive_key)) if path and job.archive_key else None
    print(
        json.dumps(
            {
                "job_id": job_id,
                "seconds": seconds,
                "size": job.size,
                "records_written": job.records_written,
                "total_records": job.total_records,
                "counts": job.counts,
                "archive": archive,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
