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


def check_owners(store: JobStore, make_job: Callable[[str], Job]) -> None:
    """``add_owner``/``jobs_of_owner``: each owner's jobs, most recently asked first, paged,
    counted; asking twice keeps the first time."""
    import time

    jobs = [store.create_or_reuse(make_job(f"o{i}"), reuse_after=None)[0] for i in range(3)]
    for job in jobs:
        store.add_owner(job.id, "ana")
        time.sleep(0.01)
    store.add_owner(jobs[0].id, "ana")  # again: still the oldest
    store.add_owner(jobs[1].id, "bob")
    listed, total = store.jobs_of_owner("ana", offset=0, limit=10)
    assert total == 3 and [j.id for j in listed] == [j.id for j in reversed(jobs)]
    page, total = store.jobs_of_owner("ana", offset=1, limit=1)
    assert total == 3 and [j.id for j in page] == [jobs[1].id]
    assert [j.id for j in store.jobs_of_owner("bob", offset=0, limit=5)[0]] == [jobs[1].id]
    assert store.jobs_of_owner("nobody", offset=0, limit=5) == ([], 0)


def check_counters(store: JobStore, other: JobStore, make_job: Callable[[str], Job]) -> None:
    """A finished build's figures add up in the store, seen by another view of it (what a
    worker writes and an API process reads), and survive a job's counted_records."""
    from downloader.build.stats import outcome_counters, record_outcome

    assert store.counters() == {}
    job = make_job("counted")
    job.counted_records = 1234
    stored, _ = store.create_or_reuse(job, reuse_after=None)
    again = other.get(stored.id)
    assert again is not None and again.counted_records == 1234
    done = store.claim(stored.id, max_attempts=3)
    assert done is not None
    done.state, done.size, done.total_records = "SUCCESS", 5_000_000, 10
    done.completed = done.started
    record_outcome(store, done)
    record_outcome(other, done)
    done.state = "FAILURE"
    record_outcome(other, done, reason="no_space")
    seen = other.counters()
    assert seen == store.counters()
    assert seen["builds|SUCCESS"] == 2 and seen["builds|FAILURE"] == 1
    assert seen["failures|no_space"] == 1
    assert (
        seen.get("archive_bytes|le=1000000.0", 0) == 0 and seen["archive_bytes|le=10000000.0"] == 2
    )
    assert seen["archive_bytes|le=+Inf"] == 2 and seen["archive_bytes|sum"] == 10_000_000
    assert seen["build_records|sum"] == 20
    assert set(outcome_counters(done, reason="no_space")) == {"builds|FAILURE", "failures|no_space"}
