"""Behaviour every JobStore shares, checked the same way on each (SQLite, Redis)."""

from __future__ import annotations

from collections.abc import Callable

from downloader.interfaces import JobStore
from downloader.models import Job


def check_requeue_stale(
    patient: JobStore, impatient: JobStore, make_job: Callable[[str], Job]
) -> None:
    """``requeue_stale`` puts back to PENDING only STARTED jobs whose heartbeat is stale.

    ``patient`` and ``impatient`` are two views of one store: a long staleness window,
    and none at all.
    """
    silent, _ = patient.create_or_reuse(make_job("silent"), reuse_after=None)
    queued, _ = patient.create_or_reuse(make_job("queued"), reuse_after=None)
    done, _ = patient.create_or_reuse(make_job("done"), reuse_after=None)
    for job in (silent, done):
        assert patient.claim(job.id, max_attempts=3) is not None
    finished = patient.get(done.id)
    assert finished is not None
    finished.state = "SUCCESS"
    patient.save(finished)
    # Within the staleness window nothing is requeued: the worker may be alive.
    assert patient.requeue_stale() == []
    assert impatient.requeue_stale() == [silent.id]
    back = patient.get(silent.id)
    assert back is not None and back.state == "PENDING" and back.attempts == 1
    assert {j.id: j.state for j in patient.pending_jobs()} == {
        silent.id: "PENDING",
        queued.id: "PENDING",
    }
    assert impatient.requeue_stale() == []  # done once; a second sweeper finds nothing
    again = patient.claim(silent.id, max_attempts=3)
    assert again is not None and again.attempts == 2
