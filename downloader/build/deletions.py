"""Incremental sync: a download of what changed since a date also lists what was removed.

A download whose ``rq`` holds ``{"datemodified": {"type": "range", "gte": T}}`` returns the
records modified since ``T`` (the query does that by itself). Beyond OCL, which cannot tell
a deletion from an update, such an archive also carries ``deleted.csv``: the uuids of the
records and media records that re-ingests removed since ``T`` (before the range's upper end,
if it has one), so a client holding an earlier copy can drop them.

``deleted.csv`` is a plain file in the zip, deliberately left out of ``meta.xml``: its rows
are not occurrences and link to no core row, so declaring it as an extension would make the
archive claim a relation that does not exist. DwC-A readers (python-dwca-reader among them)
ignore undeclared files, so the archive stays valid. Its columns: ``uuid``, ``type``
(``records`` or ``mediarecords``), ``recordset``, ``deleted`` (ISO 8601, UTC).

Deleted records cannot be matched against the rest of the query (their data is gone), so
the list is limited only by the ``recordset`` the query names (one id or a list); it may
therefore name records the client never had, which it simply ignores.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from archive import ExtraFile
from downloader.interfaces import Deletion, DeletionLog, RecordSource
from query.dates import parse_period
from query.errors import QueryError

log = logging.getLogger(__name__)

DELETED_FILE = "deleted.csv"
DELETED_HEADER = ("uuid", "type", "recordset", "deleted")
_CHUNK_ROWS = 5_000


def sync_window(rq: Any) -> tuple[datetime, datetime | None] | None:
    """``(since, until)`` (naive UTC) when ``rq`` asks for what changed since a date, else
    None. ``until`` is the range's exclusive upper end, None when it is open."""
    if not isinstance(rq, dict):
        return None
    modified = rq.get("datemodified")
    if not isinstance(modified, dict) or modified.get("type") != "range":
        return None
    try:
        if modified.get("gte") is not None:
            since = parse_period(str(modified["gte"]))[0]
        elif modified.get("gt") is not None:
            since = parse_period(str(modified["gt"]))[1]
        else:
            return None
        until: datetime | None = None
        if modified.get("lt") is not None:
            until = parse_period(str(modified["lt"]))[0]
        elif modified.get("lte") is not None:
            until = parse_period(str(modified["lte"]))[1]
    except (QueryError, ValueError):
        # The query was validated when it was asked for; a value we cannot read here just
        # means no deletion list rather than a failed build.
        return None
    return since, until


def named_recordsets(rq: dict[str, Any]) -> list[str] | None:
    """The recordset ids a query names (None when it names none)."""
    value = rq.get("recordset")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat()
    return str(value)


def _encode(rows: Sequence[Deletion]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(DELETED_HEADER)
    yield buffer.getvalue().encode("utf-8")
    for start in range(0, len(rows), _CHUNK_ROWS):
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(
            (r.uuid, r.rtype, r.recordset, _cell(r.deleted_at))
            for r in rows[start : start + _CHUNK_ROWS]
        )
        yield buffer.getvalue().encode("utf-8")


def deleted_file(src: RecordSource, rq: Any) -> ExtraFile | None:
    """The ``deleted.csv`` of a download since a date, or None for any other download (or a
    source that keeps no record of deletions)."""
    window = sync_window(rq)
    if window is None:
        return None
    if not isinstance(src, DeletionLog):
        log.info("the record source keeps no deletion log; no deleted.csv is written")
        return None
    since, until = window
    wanted = named_recordsets(rq)
    deletions = src

    def chunks() -> Iterator[bytes]:
        # The log holds "after since"; the download promises "at or after since".
        rows = deletions.deleted_records(since=since - timedelta(microseconds=1))
        kept = sorted(
            (
                r
                for r in rows
                if (until is None or r.deleted_at < until)
                and (wanted is None or r.recordset in wanted)
            ),
            key=lambda r: (r.deleted_at, r.uuid),
        )
        return _encode(kept)

    return ExtraFile(DELETED_FILE, chunks)
