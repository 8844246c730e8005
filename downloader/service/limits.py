"""Limits on what one client, one requester and everyone together may ask of the service.

Checked when a download request would start a new job or send an email, before anything
is stored, so a refusal is an answer now (``429``, ``503`` or ``413`` with the one JSON
error shape), never a job that fails later:

- ``new_jobs_per_minute``: new jobs per client (its IP address) in a moving minute;
- ``active_jobs_per_requester``: jobs queued or running at once per requester (the email
  address given, else the client);
- ``emails_per_address_per_day``: emails to one address in a moving day;
- ``max_queued_jobs``: jobs queued or running in the whole service (``503``: full);
- ``max_download_records``: records in one download (``413``).

An admin token lifts all but the service-wide queue length. Requests answered by a job that
already exists, status polls and archive downloads never count.

The rate counters are the ``limits`` library's moving windows (a well-kept implementation
shared with Flask-Limiter, rather than a hand-written bucket), kept in memory for one
process or in Redis (``limits_storage``) so that several API processes agree. The counts of
active jobs come from the job store, which every process shares already.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from downloader.backends import Context
from downloader.config import Settings
from downloader.errors import RequestError

log = logging.getLogger(__name__)

#: Seconds a client is told to wait when the whole service is full.
QUEUE_FULL_RETRY_SECONDS = 60

_NAMESPACE = "downloader"


class LimitExceeded(RequestError):
    """A limit refused this request; ``retry_after`` (seconds) is sent as ``Retry-After``."""

    def __init__(
        self, message: str, *, status: int, limit: str, retry_after: int | None = None
    ) -> None:
        name = {429: "TooManyRequests", 503: "ServiceFull", 413: "DownloadTooLarge"}[status]
        super().__init__(message, status=status, name=name, limit=limit)
        if retry_after is not None:
            self.extra["retry_after"] = retry_after
        self.retry_after = retry_after


@dataclass
class RateCounters:
    """The moving-window counters of one process (or of every process, in Redis)."""

    limiter: MovingWindowRateLimiter
    new_jobs: RateLimitItem | None
    emails: RateLimitItem | None

    @classmethod
    def from_settings(cls, settings: Settings) -> RateCounters:
        """Counters over ``settings.limits_storage``."""
        storage = storage_from_string(settings.limits_storage)
        per_minute = settings.new_jobs_per_minute
        per_day = settings.emails_per_address_per_day
        return cls(
            limiter=MovingWindowRateLimiter(storage),
            new_jobs=RateLimitItemPerMinute(per_minute, namespace=_NAMESPACE)
            if per_minute
            else None,
            emails=RateLimitItemPerDay(per_day, namespace=_NAMESPACE) if per_day else None,
        )

    def allows(self, item: RateLimitItem, *identifiers: str, count: bool) -> bool:
        """Whether ``identifiers`` are within ``item`` (counting this one when ``count``).

        A counter store that cannot be reached (Redis down) lets the request through,
        logged: a limit is a guard, and the job store reports a real outage itself.
        """
        check = self.limiter.hit if count else self.limiter.test
        try:
            return bool(check(item, *identifiers))
        except Exception as exc:  # the storage's own errors vary by backend
            log.warning("rate limit %s not checked: its counters cannot be reached: %s", item, exc)
            return True

    def retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        """Whole seconds until ``identifiers`` may be counted against ``item`` again."""
        reset = self.limiter.get_window_stats(item, *identifiers).reset_time
        return max(1, math.ceil(reset - time.time()))


_COUNTERS_LOCK = threading.Lock()


def counters(ctx: Context) -> RateCounters:
    """The context's counters, made on first use (one set per process and context)."""
    with _COUNTERS_LOCK:
        made = ctx.rate_counters
        if not isinstance(made, RateCounters):
            made = RateCounters.from_settings(ctx.settings)
            ctx.rate_counters = made
        return made


@dataclass(frozen=True)
class Caller:
    """Who is asking: the client's address, the requester key and whether it is an admin."""

    client: str
    admin: bool = False

    def requester(self, email: str | None) -> str:
        """The requester a job is counted against: its email address, else the client."""
        return f"email:{email}" if email else f"client:{self.client}"


def check_new_job(
    ctx: Context,
    caller: Caller,
    *,
    email: str | None,
    count_records: Callable[[], int],
) -> None:
    """Raise :class:`LimitExceeded` when a new job for ``caller`` would pass a limit; on
    success, count it (and its email) against the rates. ``count_records`` is called only
    when ``max_download_records`` is set."""
    settings = ctx.settings
    if settings.max_download_records and not caller.admin:
        _check_size(settings, count_records())
    if settings.max_queued_jobs or (settings.active_jobs_per_requester and not caller.admin):
        _check_active(ctx, caller, email)
    rates = counters(ctx)
    if caller.admin:
        return
    if email and rates.emails is not None and not _email_allowed(rates, email, count=False):
        raise _too_many_emails(ctx, rates, email)
    if rates.new_jobs is not None and not rates.allows(
        rates.new_jobs, "new-jobs", caller.client, count=True
    ):
        wait = rates.retry_after(rates.new_jobs, "new-jobs", caller.client)
        raise LimitExceeded(
            f"this client has started {settings.new_jobs_per_minute} new downloads in "
            f"the last minute, the most allowed (new_jobs_per_minute); try again in "
            f"{wait} s, or reuse a running download",
            status=429,
            limit="new_jobs_per_minute",
            retry_after=wait,
        )
    if email:
        check_email(ctx, caller, email)


def _check_size(settings: Settings, records: int) -> None:
    if records > settings.max_download_records:
        raise LimitExceeded(
            f"this download would hold {records} records, more than the "
            f"{settings.max_download_records} one download may hold "
            "(max_download_records); narrow the query or split it",
            status=413,
            limit="max_download_records",
        )


def _check_active(ctx: Context, caller: Caller, email: str | None) -> None:
    settings = ctx.settings
    active = ctx.jobs.pending_jobs()
    if settings.max_queued_jobs and len(active) >= settings.max_queued_jobs:
        raise LimitExceeded(
            f"the service is full: {len(active)} jobs are queued or running, its limit "
            f"(max_queued_jobs) is {settings.max_queued_jobs}; try again later",
            status=503,
            limit="max_queued_jobs",
            retry_after=QUEUE_FULL_RETRY_SECONDS,
        )
    per_requester = settings.active_jobs_per_requester
    if not per_requester or caller.admin:
        return
    requester = caller.requester(email)
    mine = sum(1 for job in active if job.requester == requester)
    if mine >= per_requester:
        who = f"the address {email}" if email else "this client"
        raise LimitExceeded(
            f"{who} already has {mine} downloads queued or running, the most one "
            f"requester may have at once (active_jobs_per_requester: {per_requester}); "
            "ask again when one has finished",
            status=429,
            limit="active_jobs_per_requester",
            retry_after=QUEUE_FULL_RETRY_SECONDS,
        )


def _email_allowed(rates: RateCounters, address: str, *, count: bool) -> bool:
    if rates.emails is None:
        return True
    return rates.allows(rates.emails, "emails", address.lower(), count=count)


def check_email(ctx: Context, caller: Caller, address: str) -> None:
    """Count one more email to ``address``; :class:`LimitExceeded` when it would pass
    ``emails_per_address_per_day``."""
    rates = counters(ctx)
    if not caller.admin and not _email_allowed(rates, address, count=True):
        raise _too_many_emails(ctx, rates, address)


def _too_many_emails(ctx: Context, rates: RateCounters, address: str) -> LimitExceeded:
    wait = rates.retry_after(rates.emails, "emails", address.lower()) if rates.emails else 1
    return LimitExceeded(
        f"the service has sent {address} {ctx.settings.emails_per_address_per_day} "
        "emails in the last day, the most it sends one address "
        f"(emails_per_address_per_day); ask again without email, or in {wait} s",
        status=429,
        limit="emails_per_address_per_day",
        retry_after=wait,
    )
