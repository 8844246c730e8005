"""The at-scale job store: jobs, dedupe keys, progress and expiry indexes in Redis.

Several ``downloader serve`` processes and any number of Celery workers share one Redis.
Every decision two processes could race on runs inside Redis as one Lua script, which Redis
executes atomically: creating-or-reusing a job for a query (so two API processes receiving
the same query at the same instant start one job) and claiming a job for a worker (so a
duplicate delivery of the same Celery message builds nothing twice).

Keys (``<p>`` is the key prefix, ``dwca:`` by default):

==============================================  ===============================================
``<p>job:<id>``                                 hash: the job (see ``_BAND`` for the fields
                                                kept outside the JSON ``doc``)
``<p>job:<id>:emails``                          sorted set: addresses, scored by when added
``<p>dedupe:<kind>:<query_hash>:<data_version>`` string: id of the newest job for that query
``<p>byhash:<kind>:<query_hash>``               sorted set: every job of that query, by creation
``<p>active``                                   sorted set: PENDING/STARTED ids by creation
``<p>expiring``                                 sorted set: SUCCESS ids by ``expires``
==============================================  ===============================================

This is the only module that imports ``redis``. Connection failures become the built-in
:class:`ConnectionError` (our edge), which the HTTP layer reports as a server error.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Hashable
from dataclasses import asdict, fields
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import redis

from downloader.errors import JobStoreUnavailable
from downloader.models import Job

_DATETIME_FIELDS = frozenset(
    {"created", "started", "completed", "expires", "retry_at", "retry_since"}
)
#: Fields kept as their own hash fields rather than inside ``doc``: the Lua scripts read or
#: change them (state, created, started, attempts), or other writers update them without
#: rewriting the whole job (progress from the worker, addresses from new requesters).
_BAND = frozenset(
    {"state", "created", "started", "attempts", "records_written", "total_records", "emails"}
)
_ACTIVE_STATES = frozenset({"PENDING", "STARTED"})

#: KEYS: dedupe key, new job hash, active index, new job's emails, per-hash index.
#: ARGV: force, reuse_after (epoch), job key prefix, new id, created (epoch), number of
#: hash field/value arguments that follow, those arguments, then (score, email) pairs.
_CREATE_OR_REUSE = """
if ARGV[1] == '0' then
  local existing = redis.call('GET', KEYS[1])
  if existing then
    local h = redis.call('HMGET', ARGV[3] .. existing, 'state', 'created', 'cancel')
    local state = h[1]
    if state and state ~= 'FAILURE' and state ~= 'CANCELLED' and state ~= 'EXPIRED'
       and h[3] ~= '1' and tonumber(h[2]) >= tonumber(ARGV[2]) then
      return existing
    end
  end
end
local n = tonumber(ARGV[6])
redis.call('HSET', KEYS[2], unpack(ARGV, 7, 6 + n))
if #ARGV > 6 + n then
  redis.call('ZADD', KEYS[4], 'NX', unpack(ARGV, 7 + n))
end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[4])
return false
"""

#: KEYS: job hash. ARGV: now (epoch), stale seconds, started (ISO 8601).
#: Returns 1 when the job was claimed, 0 otherwise.
_CLAIM = """
local h = redis.call('HMGET', KEYS[1], 'state', 'cancel', 'heartbeat')
local state = h[1]
if not state or h[2] == '1' then return 0 end
if state == 'STARTED' then
  if tonumber(ARGV[1]) - tonumber(h[3] or '0') < tonumber(ARGV[2]) then return 0 end
elseif state ~= 'PENDING' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'STARTED', 'started', ARGV[3], 'heartbeat', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return 1
"""

#: KEYS: job hash. ARGV: records_written, total_records ('' for unknown), now.
#: Only an existing job is touched, so a late progress report cannot resurrect a deleted one.
_PROGRESS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'records_written', ARGV[1], 'total_records', ARGV[2],
           'heartbeat', ARGV[3])
return 1
"""

#: KEYS: job hash. ARGV: now (epoch), stale seconds. Returns 1 when the job was STARTED with
#: a heartbeat older than the staleness window and is now PENDING, 0 otherwise.
_REQUEUE_STALE = """
local h = redis.call('HMGET', KEYS[1], 'state', 'heartbeat')
if h[1] ~= 'STARTED' then return 0 end
if tonumber(ARGV[1]) - tonumber(h[2] or '0') < tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'state', 'PENDING')
return 1
"""

P = ParamSpec("P")
R = TypeVar("R")


def _edge(func: Callable[P, R]) -> Callable[P, R]:
    """Translate redis-py's connection errors into :class:`JobStoreUnavailable` (a
    built-in ConnectionError too)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise JobStoreUnavailable(f"the job store (Redis) cannot be reached: {exc}") from exc

    return wrapper


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat()


def _parse_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class RedisJobStore:
    """:class:`~downloader.interfaces.JobStore` in Redis, shared by every API process and
    worker.

    ``stale_after_seconds``: a STARTED job whose worker has not reported progress (the
    heartbeat) for this long is considered interrupted and may be claimed again. It must be
    shorter than the Celery broker's visibility timeout, so that a message redelivered after
    its worker died finds the job claimable (see :mod:`downloader.dispatch.celery_app`).
    """

    def __init__(
        self,
        url: str,
        *,
        stale_after_seconds: float = 120.0,
        prefix: str = "dwca:",
        socket_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.stale_after_seconds = stale_after_seconds
        self.prefix = prefix
        self.socket_timeout = socket_timeout
        self._client: redis.Redis | None = None

    # --- plumbing -------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Connections do not cross process boundaries; a copy reconnects on first use.
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    @property
    def redis(self) -> redis.Redis:
        """The client (created on first use, so the store can be built before Redis is up)."""
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.url,
                decode_responses=True,
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.socket_timeout,
                health_check_interval=30,
                # One retry covers a connection the server closed while it sat in the pool.
                retry_on_timeout=True,
            )
        return self._client

    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _emails_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:emails"

    def _dedupe_key(self, job: Job) -> str:
        return f"{self.prefix}dedupe:{job.kind}:{job.query_hash}:{job.data_version}"

    def _owner_key(self, owner: str) -> str:
        return f"{self.prefix}owner:{owner}"

    def _by_hash_key(self, kind: str, query_hash: str) -> str:
        return f"{self.prefix}byhash:{kind}:{query_hash}"

    @property
    def _active_key(self) -> str:
        return f"{self.prefix}active"

    @property
    def _expiring_key(self) -> str:
        return f"{self.prefix}expiring"

    def _hash_fields(self, job: Job) -> dict[str, str]:
        """The job as flat hash fields (``doc`` carries everything not in ``_BAND``)."""
        data = asdict(job)
        doc = {k: v for k, v in data.items() if k not in _BAND}
        for name in _DATETIME_FIELDS - _BAND:
            doc[name] = _iso(doc[name])
        created = job.created or _now()
        return {
            "doc": json.dumps(doc, sort_keys=True),
            "state": job.state,
            "created": repr(created.timestamp()),
            "created_iso": created.isoformat(),
            "started": _iso(job.started),
            "attempts": str(job.attempts),
            "records_written": str(job.records_written),
            "total_records": "" if job.total_records is None else str(job.total_records),
            "heartbeat": repr(time.time()),
        }

    @staticmethod
    def _from_hash(h: dict[str, str], emails: list[str]) -> Job:
        data: dict[str, Any] = json.loads(h["doc"])
        for name in _DATETIME_FIELDS - _BAND:
            data[name] = _parse_iso(data.get(name))
        known = {f.name for f in fields(Job)}
        data = {k: v for k, v in data.items() if k in known}
        data["state"] = h["state"]
        data["created"] = _parse_iso(h.get("created_iso"))
        data["started"] = _parse_iso(h.get("started"))
        data["attempts"] = int(h.get("attempts") or 0)
        data["records_written"] = int(h.get("records_written") or 0)
        total = h.get("total_records")
        data["total_records"] = int(total) if total else None
        data["emails"] = emails
        return Job(**data)

    def _load_many(self, ids: list[str]) -> list[Job]:
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._job_key(job_id))
            pipe.zrange(self._emails_key(job_id), 0, -1)
        answers = pipe.execute()
        jobs = []
        for i in range(0, len(answers), 2):
            if answers[i]:
                jobs.append(self._from_hash(answers[i], list(answers[i + 1])))
        return jobs

    # --- JobStore ---------------------------------------------------------------------------

    @_edge
    def create_or_reuse(
        self, job: Job, *, reuse_after: datetime | None, force: bool = False
    ) -> tuple[Job, bool]:
        """Return the newest job for ``job``'s kind, hash and data version when it is reusable
        (not FAILURE, CANCELLED or EXPIRED, not asked to cancel, created at or after
        ``reuse_after``), or store
        ``job`` and make it the newest. One Lua script: atomic across processes."""
        if job.created is None:
            job.created = _now()
        hash_fields = self._hash_fields(job)
        flat = [item for pair in hash_fields.items() for item in pair]
        added = repr(time.time())
        email_args = [item for email in job.emails for item in (added, email)]
        existing = self.redis.eval(
            _CREATE_OR_REUSE,
            5,
            self._dedupe_key(job),
            self._job_key(job.id),
            self._active_key,
            self._emails_key(job.id),
            self._by_hash_key(job.kind, job.query_hash),
            "1" if force else "0",
            repr(reuse_after.timestamp()) if reuse_after else "-1e300",
            f"{self.prefix}job:",
            job.id,
            hash_fields["created"],
            str(len(flat)),
            *flat,
            *email_args,
        )
        if existing:
            found = self.get(str(existing))
            if found is not None:
                return found, False
        return job, True

    @_edge
    def get(self, job_id: str) -> Job | None:
        """The job, or None when no such job exists."""
        jobs = self._load_many([job_id])
        return jobs[0] if jobs else None

    @_edge
    def get_if_changed(
        self, job_id: str, version: Hashable | None
    ) -> tuple[Hashable, Job | None] | None:
        """The job's current version and, unless that equals ``version``, the job itself;
        None when no such job exists.

        The version is the job's whole hash (every writer changes at least one field of it:
        ``save``, ``claim``, progress with its heartbeat, the cancel flag), read in one
        round trip; the addresses are read only when it changed.
        """
        h = self.redis.hgetall(self._job_key(job_id))
        if not h:
            return None
        current = tuple(sorted(h.items()))
        if current == version:
            return current, None
        emails = self.redis.zrange(self._emails_key(job_id), 0, -1)
        return current, self._from_hash(h, list(emails))

    @_edge
    def save(self, job: Job) -> None:
        """Write every field of ``job`` and keep the indexes in step with its state.

        Addresses are only ever added, never removed, so a worker saving its copy cannot drop
        an address a new requester added meanwhile; the cancel flag is not touched either.
        """
        hash_fields = self._hash_fields(job)
        key = self._job_key(job.id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=hash_fields)  # type: ignore[arg-type]  # redis-py's mapping type is invariant
        if job.emails:
            added = time.time()
            pipe.zadd(self._emails_key(job.id), {e: added for e in job.emails}, nx=True)
        if job.state in _ACTIVE_STATES:
            pipe.zadd(self._active_key, {job.id: float(hash_fields["created"])})
        else:
            pipe.zrem(self._active_key, job.id)
        if job.state == "SUCCESS" and job.expires is not None:
            pipe.zadd(self._expiring_key, {job.id: job.expires.timestamp()})
        else:
            pipe.zrem(self._expiring_key, job.id)
        pipe.execute()

    @_edge
    def add_email(self, job_id: str, email: str) -> None:
        """Remember one more address to notify about this job (duplicates are ignored)."""
        self.redis.zadd(self._emails_key(job_id), {email: time.time()}, nx=True)

    @_edge
    def add_owner(self, job_id: str, owner: str) -> None:
        """Remember that ``owner`` asked for this job (the first time is kept)."""
        self.redis.zadd(self._owner_key(owner), {job_id: time.time()}, nx=True)

    @_edge
    def jobs_of_owner(self, owner: str, *, offset: int, limit: int) -> tuple[list[Job], int]:
        """The jobs ``owner`` asked for, most recent first, and their number."""
        key = self._owner_key(owner)
        total = int(self.redis.zcard(key))
        if limit <= 0:
            return [], total
        ids = self.redis.zrevrange(key, max(0, offset), max(0, offset) + limit - 1)
        return self._load_many(list(ids)), total

    @_edge
    def update_progress(self, job_id: str, records_written: int, total_records: int | None) -> None:
        """Record progress; this also serves as the worker's heartbeat."""
        self.redis.eval(
            _PROGRESS,
            1,
            self._job_key(job_id),
            str(records_written),
            "" if total_records is None else str(total_records),
            repr(time.time()),
        )

    @_edge
    def add_counters(self, increments: dict[str, float]) -> None:
        """Add to service-wide counters (one hash), in one MULTI/EXEC."""
        pipe = self.redis.pipeline(transaction=True)
        for name, value in increments.items():
            pipe.hincrbyfloat(f"{self.prefix}counters", name, value)
        pipe.execute()

    @_edge
    def counters(self) -> dict[str, float]:
        """Every counter and its value."""
        raw = self.redis.hgetall(f"{self.prefix}counters")
        return {str(k): float(v) for k, v in raw.items()}

    @_edge
    def request_cancel(self, job_id: str) -> None:
        """Flag the job so its worker stops at the next check."""
        key = self._job_key(job_id)
        # HSET only on an existing job: a flag on a missing id would create a ghost hash.
        if self.redis.exists(key):
            self.redis.hset(key, "cancel", "1")

    @_edge
    def is_cancel_requested(self, job_id: str) -> bool:
        """Whether cancellation was asked for."""
        return self.redis.hget(self._job_key(job_id), "cancel") == "1"

    @_edge
    def claim(self, job_id: str, *, max_attempts: int) -> Job | None:
        """Mark the job STARTED and count the attempt, atomically.

        A PENDING job is always claimable; a STARTED one only when its heartbeat is older
        than ``stale_after_seconds`` (its worker died). Returns None for missing, terminal,
        cancelled or live jobs. As with the SQLite store, the caller (``build_archive``)
        enforces ``max_attempts``, because the researcher must be told why the job failed.
        """
        del max_attempts  # Enforced by the caller; see the docstring.
        claimed = self.redis.eval(
            _CLAIM,
            1,
            self._job_key(job_id),
            repr(time.time()),
            repr(float(self.stale_after_seconds)),
            _now().isoformat(),
        )
        if not claimed:
            return None
        return self.get(job_id)

    @_edge
    def jobs_for_hash(self, query_hash: str, *, kind: str) -> list[Job]:
        """Every job of ``kind`` with this ``query_hash``, whatever its data version or
        state, newest first (a recordset's export jobs, one or more per version)."""
        ids = self.redis.zrevrange(self._by_hash_key(kind, query_hash), 0, -1)
        return self._load_many(list(ids))

    @_edge
    def pending_jobs(self) -> list[Job]:
        """PENDING and STARTED jobs, oldest first (STARTED ones may have lost their worker)."""
        ids = self.redis.zrange(self._active_key, 0, -1)
        return [j for j in self._load_many(list(ids)) if j.state in _ACTIVE_STATES]

    @_edge
    def requeue_stale(self) -> list[str]:
        """STARTED jobs whose heartbeat is older than ``stale_after_seconds`` go back to
        PENDING (a script per job, so of several sweeping processes one wins); their ids,
        oldest first."""
        requeued = []
        now = repr(time.time())
        stale = repr(float(self.stale_after_seconds))
        for job_id in self.redis.zrange(self._active_key, 0, -1):
            if self.redis.eval(_REQUEUE_STALE, 1, self._job_key(job_id), now, stale):
                requeued.append(str(job_id))
        return requeued

    @_edge
    def expired_jobs(self, now: datetime) -> list[Job]:
        """Successful jobs whose ``expires`` is before ``now``."""
        ids = self.redis.zrangebyscore(self._expiring_key, "-inf", f"({now.timestamp()!r}")
        return [j for j in self._load_many(list(ids)) if j.state == "SUCCESS"]

    @_edge
    def ping(self) -> bool:
        """Whether Redis answers (for health checks)."""
        return bool(self.redis.ping())
