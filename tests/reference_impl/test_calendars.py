"""Business calendars: working time added across nights, weekends, holidays and DST."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from reference_impl.calendars import BusinessCalendar, CalendarError, add, validate

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")


def at(zone: ZoneInfo, *parts: int) -> float:
    return dt.datetime(*parts, tzinfo=zone).timestamp()  # type: ignore[arg-type]


OFFICE = BusinessCalendar()  # Mon-Fri 09:00-18:00 UTC


@pytest.mark.parametrize(
    ("start", "hours", "want"),
    [((2026, 11, 23, 10), 2, (2026, 11, 23, 12)),   # Monday, within the day
     ((2026, 11, 23, 7), 1, (2026, 11, 23, 10)),    # before opening
     ((2026, 11, 20, 17), 2, (2026, 11, 23, 10)),   # Friday evening -> Monday
     ((2026, 11, 21, 12), 1, (2026, 11, 23, 10)),   # Saturday
     ((2026, 11, 23, 20), 9, (2026, 11, 24, 18)),   # after closing: the whole next day
     ((2026, 11, 23, 9), 45, (2026, 11, 27, 18))],  # a whole week of nine-hour days
)
def test_office_hours(start: tuple[int, ...], hours: float, want: tuple[int, ...]) -> None:
    assert add(OFFICE, at(UTC, *start), hours * 3600) == at(UTC, *want)


def test_holidays_are_skipped() -> None:
    cal = BusinessCalendar(holidays=[dt.date(2026, 12, 25)])
    # Thursday 24 Dec 17:00 + 2 h: one hour that day, Friday is a holiday, then Monday.
    assert add(cal, at(UTC, 2026, 12, 24, 17), 7200) == at(UTC, 2026, 12, 28, 10)


def test_hours_are_local_across_a_dst_change() -> None:
    cal = BusinessCalendar(timezone="Europe/Berlin")
    # Friday 27 March 2026 17:00 CET + 2 h -> Monday 30 March 10:00 CEST (08:00 UTC).
    got = add(cal, at(BERLIN, 2026, 3, 27, 17), 7200)
    assert got == at(BERLIN, 2026, 3, 30, 10) == at(UTC, 2026, 3, 30, 8)


def test_round_the_clock_days_and_weekends() -> None:
    cal = BusinessCalendar(days=["sat", "sun"], start="00:00", end="24:00")
    assert add(cal, at(UTC, 2026, 11, 20, 12), 36 * 3600) == at(UTC, 2026, 11, 22, 12)


@pytest.mark.parametrize(
    ("cal", "field"),
    [(BusinessCalendar(timezone="Nowhere/Atlantis"), "calendar.timezone"),
     (BusinessCalendar(start="10:00", end="10:00"), "calendar.end"),
     (BusinessCalendar(days=["fri", "fri"]), "calendar.days")],
)
def test_unusable_calendars(cal: BusinessCalendar, field: str) -> None:
    with pytest.raises(CalendarError) as info:
        validate(cal)
    assert info.value.field == field


def test_too_little_working_time_is_an_error_not_a_hang() -> None:
    cal = BusinessCalendar(days=["mon"], start="09:00", end="09:01")
    with pytest.raises(CalendarError, match="days ahead"):
        add(cal, at(UTC, 2026, 11, 23), 10 * 365 * 86_400)
