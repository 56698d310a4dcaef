"""Business calendars: working hours per weekday in a time zone, minus holidays.

An SLA with a calendar counts only working time: ``add(start, T)`` is the instant at which
T seconds of working time have passed since ``start``. Days are walked one at a time in the
calendar's zone (daylight-saving changes are the zone database's), so an SLA measured in
hours or days costs a handful of steps; a definition whose deadline would lie more than
``MAX_DAYS`` ahead is refused when the SLA is created.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta, Struct

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_DAYS = 100 * 366
_HHMM = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"


class CalendarError(ValueError):
    """A calendar that cannot be used; ``field`` names the offending part."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class BusinessCalendar(Struct, forbid_unknown_fields=True, kw_only=True):
    """Working hours ``start``..``end`` (local time) on ``days``, except ``holidays``."""

    timezone: Annotated[str, Meta(min_length=1, max_length=64)] = "UTC"
    days: Annotated[list[Weekday], Meta(min_length=1, max_length=7)] = msgspec.field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"])
    start: Annotated[str, Meta(pattern=_HHMM)] = "09:00"
    end: Annotated[str, Meta(pattern=_HHMM)] = "18:00"
    holidays: Annotated[list[dt.date], Meta(max_length=5_000)] = []


@lru_cache(maxsize=64)
def zone(name: str | None) -> ZoneInfo:
    """The IANA time zone ``name`` (UTC when None); ZoneInfoNotFoundError when unknown."""
    return ZoneInfo(name or "UTC")


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def validate(cal: BusinessCalendar) -> None:
    """Refuse unknown zones, empty or reversed hours and repeated days."""
    try:
        zone(cal.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise CalendarError(f"unknown time zone {cal.timezone!r}", "calendar.timezone") from None
    if _minutes(cal.start) >= _minutes(cal.end):
        raise CalendarError(f"end {cal.end} is not after start {cal.start}", "calendar.end")
    if len(set(cal.days)) != len(cal.days):
        raise CalendarError("a weekday is listed twice", "calendar.days")


def _at(day: dt.date, minutes: int, tz: ZoneInfo) -> float:
    # Aware datetime + timedelta is wall-clock arithmetic: 09:00 stays 09:00 across DST.
    return (dt.datetime.combine(day, dt.time(), tz) + dt.timedelta(minutes=minutes)).timestamp()


def add(cal: BusinessCalendar, start: float, seconds: float) -> float:
    """The instant ``seconds`` of working time after ``start`` (seconds since the epoch)."""
    tz = zone(cal.timezone)
    days = {WEEKDAYS.index(d) for d in cal.days}
    holidays = set(cal.holidays)
    opens, closes = _minutes(cal.start), _minutes(cal.end)
    day = dt.datetime.fromtimestamp(start, tz).date()
    left = seconds
    for _ in range(MAX_DAYS):
        if day.weekday() in days and day not in holidays:
            close = _at(day, closes, tz)
            begin = max(_at(day, opens, tz), start)
            if begin < close:
                if left <= close - begin:
                    return begin + left
                left -= close - begin
        day += dt.timedelta(days=1)
    raise CalendarError(f"{seconds:g} s of working time end more than {MAX_DAYS} days ahead",
                        "within_s")
