"""Building an archive from a job: what a worker runs.

:func:`build_archive` (in :mod:`.run`) claims a job, plans the archive (:mod:`.plan`),
streams the record source's batches into the archive writer while reporting progress
(:mod:`.progress`), publishes it atomically and notifies the requesters. :mod:`.deletions`
writes the deletion log of a sync download. :mod:`.recovery` requeues builds whose worker
died (its heartbeat went stale) and sends again jobs no worker took.
"""

from downloader.build.plan import archive_filename, archive_key, plan_archive
from downloader.build.recovery import redispatch_unclaimed, requeue_stale
from downloader.build.run import (
    TRANSIENT,
    RetryLater,
    RunningElsewhere,
    build_archive,
    fail_job,
    notify_ready,
)

__all__ = [
    "TRANSIENT",
    "RetryLater",
    "RunningElsewhere",
    "archive_filename",
    "archive_key",
    "build_archive",
    "fail_job",
    "notify_ready",
    "plan_archive",
    "redispatch_unclaimed",
    "requeue_stale",
]
