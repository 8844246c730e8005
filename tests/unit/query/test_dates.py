from __future__ import annotations

from datetime import datetime

import pytest

from query.dates import DateFormatError, format_period, parse_period


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("1900", datetime(1900, 1, 1), datetime(1901, 1, 1)),
        ("1900-02", datetime(1900, 2, 1), datetime(1900, 3, 1)),
        ("1900-12", datetime(1900, 12, 1), datetime(1901, 1, 1)),
        ("1900-2-3", datetime(1900, 2, 3), datetime(1900, 2, 4)),
        ("1900-02-03T10", datetime(1900, 2, 3, 10), datetime(1900, 2, 3, 11)),
        ("1900-02-03T10:20", datetime(1900, 2, 3, 10, 20), datetime(1900, 2, 3, 10, 21)),
        ("1900-02-03 10:20:30", datetime(1900, 2, 3, 10, 20, 30), datetime(1900, 2, 3, 10, 20, 31)),
        (
            "1900-02-03T10:20:30.5",
            datetime(1900, 2, 3, 10, 20, 30, 500000),
            datetime(1900, 2, 3, 10, 20, 30, 600000),
        ),
        (
            "1900-02-03T10:20:30Z",
            datetime(1900, 2, 3, 10, 20, 30),
            datetime(1900, 2, 3, 10, 20, 31),
        ),
        ("1900-02-03T10:00:00-0130", datetime(1900, 2, 3, 11, 30), datetime(1900, 2, 3, 11, 30, 1)),
        ("1900-01-01T00:00:00/1901-01-01T00:00:00", datetime(1900, 1, 1), datetime(1901, 1, 1)),
    ],
)
def test_periods(text: str, start: datetime, end: datetime) -> None:
    assert parse_period(text) == (start, end)


def test_zone_shifts_the_whole_period() -> None:
    start, end = parse_period("1900-02-03T01:00:00+02:00")
    assert (start, end) == (datetime(1900, 2, 2, 23), datetime(1900, 2, 2, 23, 0, 1))


def test_canonical_interval_round_trips() -> None:
    text = format_period(*parse_period("1950-06"))
    assert text == "1950-06-01T00:00:00/1950-07-01T00:00:00"
    assert parse_period(text) == parse_period("1950-06")


@pytest.mark.parametrize(
    "text",
    ["19", "1900-13", "1900-02-30", "1900-01-01T25:00", "yesterday", "0000", "9999", "1900/1800"],
)
def test_bad_dates(text: str) -> None:
    with pytest.raises(DateFormatError):
        parse_period(text)
