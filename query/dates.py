"""Dates in queries: partial dates, full timestamps and the periods they cover.

A date in a query may be as coarse as a year (``"1900"``) or as fine as a timestamp with a
fraction and a zone (``"1900-05-01T10:20:30.5+02:00"``). Each covers a period: a year covers
the whole year, a day the whole day, a timestamp with seconds that one second. Periods are
half-open ``[start, end)`` in UTC without zone, the way the store keeps ``TIMESTAMP`` values.

The canonical text of a period is an ISO 8601 interval ``"<start>/<end>"`` so that equal
periods written differently (``"1900"`` and ``"1900-01-01T00:00:00/1901-01-01T00:00:00"``)
normalise, and therefore hash, the same.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DATE = re.compile(
    r"""
    (?P<year>\d{4})
    (?:-(?P<month>\d{1,2})
      (?:-(?P<day>\d{1,2})
        (?:[T\s](?P<hour>\d{1,2})
          (?::(?P<minute>\d{2})
            (?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,9}))?)?
          )?
          (?P<zone>Z|[+-]\d{2}(?::?\d{2})?)?
        )?
      )?
    )?
    """,
    re.VERBOSE,
)

#: Years outside this range are refused: the end of year 9999 cannot be represented, and
#: the store, DuckDB and Elasticsearch all handle years 1 to 9998 alike.
MIN_YEAR = 1
MAX_YEAR = 9998


class DateFormatError(ValueError):
    """A string that is not a date this module understands; the message says why."""


def _add_months(start: datetime, months: int) -> datetime:
    total = start.year * 12 + (start.month - 1) + months
    return start.replace(year=total // 12, month=total % 12 + 1)


def parse_period(text: str) -> tuple[datetime, datetime]:
    """The UTC period ``[start, end)`` that a date string covers.

    Accepts ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` (one-digit months and days too, as the
    iDigBio portal sends them), times to the hour, minute, second or fraction, an optional
    zone (``Z``, ``+02:00``, ``+0200``, ``+02``) and the canonical interval form
    ``start/end``. Raises :class:`DateFormatError` for anything else.
    """
    text = text.strip()
    if "/" in text:
        return _parse_interval(text)
    match = _DATE.fullmatch(text)
    if match is None:
        raise DateFormatError(
            f"{text!r} is not a date; use YYYY, YYYY-MM, YYYY-MM-DD or an ISO 8601 "
            "timestamp such as 1900-05-01T10:20:30Z"
        )
    parts = match.groupdict()
    year = int(parts["year"])
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise DateFormatError(f"{text!r}: the year must be between {MIN_YEAR} and {MAX_YEAR}")
    month = int(parts["month"] or 1)
    day = int(parts["day"] or 1)
    hour = int(parts["hour"] or 0)
    minute = int(parts["minute"] or 0)
    second = int(parts["second"] or 0)
    fraction = parts["fraction"] or ""
    micro = int((fraction + "000000")[:6])
    try:
        start = datetime(year, month, day, hour, minute, second, micro)
    except ValueError as exc:
        raise DateFormatError(f"{text!r} is not a valid date ({exc})") from None

    if parts["month"] is None:
        end = _add_months(start, 12)
    elif parts["day"] is None:
        end = _add_months(start, 1)
    elif parts["hour"] is None:
        end = start + timedelta(days=1)
    elif parts["minute"] is None:
        end = start + timedelta(hours=1)
    elif parts["second"] is None:
        end = start + timedelta(minutes=1)
    elif not fraction:
        end = start + timedelta(seconds=1)
    else:
        # A fraction covers its own precision, down to the microsecond the store keeps.
        end = start + timedelta(microseconds=10 ** max(0, 6 - len(fraction)))

    zone = parts["zone"]
    if zone:
        offset = _zone_offset(zone, text)
        start, end = start - offset, end - offset
    if not MIN_YEAR <= start.year <= MAX_YEAR or end.year > MAX_YEAR + 1:
        raise DateFormatError(f"{text!r} is outside the supported years")
    return start, end


def _zone_offset(zone: str, text: str) -> timedelta:
    if zone == "Z":
        return timedelta(0)
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    hours = int(digits[:2])
    minutes = int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise DateFormatError(f"{text!r} has an invalid time zone offset {zone!r}")
    return sign * timedelta(hours=hours, minutes=minutes)


def _parse_interval(text: str) -> tuple[datetime, datetime]:
    first, _, second = text.partition("/")
    start = parse_instant(first)
    end = parse_instant(second)
    if end <= start:
        raise DateFormatError(f"{text!r}: the interval ends before it starts")
    return start, end


def parse_instant(text: str) -> datetime:
    """The instant a date string starts at (UTC, naive); see :func:`parse_period`."""
    match = _DATE.fullmatch(text.strip())
    if match is None:
        raise DateFormatError(f"{text!r} is not a date")
    return parse_period(text)[0]


def format_instant(value: datetime) -> str:
    """Canonical ISO 8601 text of a naive UTC instant: seconds always, microseconds if any."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds" if value.microsecond else "seconds")


def format_period(start: datetime, end: datetime) -> str:
    """Canonical interval text ``"<start>/<end>"`` of a period."""
    return f"{format_instant(start)}/{format_instant(end)}"
