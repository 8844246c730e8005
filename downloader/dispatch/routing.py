"""Which queue a job goes to: small downloads never wait behind large ones.

GBIF splits its downloads the same way: a job whose query matched at least
``large_job_records`` records (counted when the request created the job, see
:func:`downloader.service.downloads.request_download`; a recordset export by its version's
record count) is *large*, every other job (a smaller count, or none known) is *small*.

- Under Celery the two go to two queues, :data:`SMALL_QUEUE` and :data:`LARGE_QUEUE`,
  chosen when the job is sent; workers consume both, or one (``downloader worker --queues
  small``), so an operator can keep workers that only ever build small jobs.
- The local dispatcher keeps ``small_job_workers`` of its worker processes free of large
  jobs and starts small jobs first, so a small download starts while large ones build.

Nothing here imports Celery: the API process and the local dispatcher decide with it too.
"""

from __future__ import annotations

from downloader.config import Settings

#: The queue of small jobs (the name the single queue had before, so a worker of an older
#: release and messages already queued keep working).
SMALL_QUEUE = "downloads"
#: The queue of large jobs.
LARGE_QUEUE = "downloads-large"
#: ``downloader worker --queues`` names -> Celery queue names.
QUEUE_NAMES = {"small": SMALL_QUEUE, "large": LARGE_QUEUE}


def is_large(settings: Settings, records: int | None) -> bool:
    """Whether a job that matched ``records`` records (None: not counted) is large."""
    threshold = settings.large_job_records
    return bool(threshold) and records is not None and records >= threshold


def queue_for(settings: Settings, records: int | None) -> str:
    """The Celery queue of a job that matched ``records`` records."""
    return LARGE_QUEUE if is_large(settings, records) else SMALL_QUEUE


def small_reserve(settings: Settings) -> int:
    """Local worker processes kept free of large jobs: ``small_job_workers``, but never all
    of them (with one worker, large jobs must run too; small ones are still started first)."""
    return max(0, min(settings.small_job_workers, settings.workers - 1))
