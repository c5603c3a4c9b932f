"""The cron engine: Quartz and Unix syntax, rejections, daylight saving and a brute-force check.

Expected fire times in the tables were worked out by hand from Quartz's documented semantics
(and Unix cron's, for 5-field rows) with a calendar, not produced by the engine.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamill.errors import DatamillError, E
from datamill.scheduler.cron import CronExpression, parse_zone

UTC_ZONE = ZoneInfo("UTC")
NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
JAN1 = "2026-01-01T00:00"  # a Thursday


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(text: str, zone: ZoneInfo, fold: int = 0) -> datetime:
    """A wall time in ``zone`` as a UTC instant (aware datetimes in a repeated hour never
    compare equal across zones, so expectations are kept in UTC)."""
    return datetime.fromisoformat(text).replace(tzinfo=zone, fold=fold).astimezone(UTC)


# --- conformance: (expression, start in UTC, next three fire times in UTC) ---------------------

QUARTZ_TABLE: list[tuple[str, str, list[str]]] = [
    ("0 0 12 * * ?", JAN1, ["2026-01-01T12:00", "2026-01-02T12:00", "2026-01-03T12:00"]),
    ("0 15 10 ? * *", JAN1, ["2026-01-01T10:15", "2026-01-02T10:15", "2026-01-03T10:15"]),
    ("0 15 10 * * ? 2030", JAN1, ["2030-01-01T10:15", "2030-01-02T10:15", "2030-01-03T10:15"]),
    ("0 * 14 * * ?", JAN1, ["2026-01-01T14:00", "2026-01-01T14:01", "2026-01-01T14:02"]),
    (
        "0 * 14 * * ?",
        "2026-01-01T14:59",
        ["2026-01-02T14:00", "2026-01-02T14:01", "2026-01-02T14:02"],
    ),
    (
        "0 0/5 14 * * ?",
        "2026-01-01T14:52",
        ["2026-01-01T14:55", "2026-01-02T14:00", "2026-01-02T14:05"],
    ),
    (
        "0 0/5 14,18 * * ?",
        "2026-01-01T14:56",
        ["2026-01-01T18:00", "2026-01-01T18:05", "2026-01-01T18:10"],
    ),
    (
        "0 0-5 14 * * ?",
        "2026-01-01T14:04:30",
        ["2026-01-01T14:05", "2026-01-02T14:00", "2026-01-02T14:01"],
    ),
    # March 2026 Wednesdays: 4, 11, 18, 25.
    ("0 10,44 14 ? 3 WED", JAN1, ["2026-03-04T14:10", "2026-03-04T14:44", "2026-03-11T14:10"]),
    # 2026-01-02 is a Friday.
    (
        "0 15 10 ? * MON-FRI",
        "2026-01-02T11:00",
        ["2026-01-05T10:15", "2026-01-06T10:15", "2026-01-07T10:15"],
    ),
    ("0 15 10 15 * ?", JAN1, ["2026-01-15T10:15", "2026-02-15T10:15", "2026-03-15T10:15"]),
    ("0 15 10 L * ?", JAN1, ["2026-01-31T10:15", "2026-02-28T10:15", "2026-03-31T10:15"]),
    ("0 15 10 L-2 * ?", JAN1, ["2026-01-29T10:15", "2026-02-26T10:15", "2026-03-29T10:15"]),
    # Last Fridays of 2026: Jan 30, Feb 27, Mar 27.
    ("0 15 10 ? * 6L", JAN1, ["2026-01-30T10:15", "2026-02-27T10:15", "2026-03-27T10:15"]),
    # Third Fridays: Jan 16, Feb 20, Mar 20.
    ("0 15 10 ? * 6#3", JAN1, ["2026-01-16T10:15", "2026-02-20T10:15", "2026-03-20T10:15"]),
    ("0 0 12 1/5 * ?", JAN1, ["2026-01-01T12:00", "2026-01-06T12:00", "2026-01-11T12:00"]),
    (
        "0 0 12 1/5 * ?",
        "2026-01-27T00:00",
        ["2026-01-31T12:00", "2026-02-01T12:00", "2026-02-06T12:00"],
    ),
    ("0 11 11 11 11 ?", JAN1, ["2026-11-11T11:11", "2027-11-11T11:11", "2028-11-11T11:11"]),
    # Jan 31 and Feb 28 2026 are Saturdays (-> Friday), Mar 31 a Tuesday.
    ("0 0 0 LW * ?", JAN1, ["2026-01-30T00:00", "2026-02-27T00:00", "2026-03-31T00:00"]),
    # May 31 2026 is a Sunday (-> Friday 29), Jun 30 a Tuesday, Jul 31 a Friday.
    (
        "0 0 0 LW * ?",
        "2026-05-01T00:00",
        ["2026-05-29T00:00", "2026-06-30T00:00", "2026-07-31T00:00"],
    ),
    # Quartz's own expectations: Oct 26 2010 is a Tuesday, Oct 30 a Saturday (-> Fri 29),
    # Dec 26 a Sunday (-> Mon 27).
    (
        "0 15 10 L-5W * ? 2010",
        "2010-10-01T00:00",
        ["2010-10-26T10:15", "2010-11-25T10:15", "2010-12-27T10:15"],
    ),
    (
        "0 15 10 L-1W * ? 2010",
        "2010-10-01T00:00",
        ["2010-10-29T10:15", "2010-11-29T10:15", "2010-12-30T10:15"],
    ),
    # L-0W is LW; Feb 2026: L-27 = Sunday the 1st (-> Monday 2), L-2W = Thursday the 26th.
    ("0 0 0 L-0W * ?", JAN1, ["2026-01-30T00:00", "2026-02-27T00:00", "2026-03-31T00:00"]),
    ("0 0 0 L-27W 2 ?", JAN1, ["2026-02-02T00:00", "2027-02-01T00:00", "2028-02-02T00:00"]),
    # Feb 15 and Mar 15 2026 are Sundays (-> Monday 16), Apr 15 a Wednesday.
    (
        "0 0 0 15W * ?",
        "2026-02-01T00:00",
        ["2026-02-16T00:00", "2026-03-16T00:00", "2026-04-15T00:00"],
    ),
    # Aug 15 2026 is a Saturday (-> Friday 14), Sep 15 a Tuesday, Oct 15 a Thursday.
    (
        "0 0 0 15W * ?",
        "2026-08-01T00:00",
        ["2026-08-14T00:00", "2026-09-15T00:00", "2026-10-15T00:00"],
    ),
    # Aug 1 2026 is a Saturday: Friday would leave the month, so Monday the 3rd.
    (
        "0 0 0 1W * ?",
        "2026-07-15T00:00",
        ["2026-08-03T00:00", "2026-09-01T00:00", "2026-10-01T00:00"],
    ),
    # Nov 1 2026 is a Sunday -> Monday 2nd; Dec 1 a Tuesday; Jan 1 2027 a Friday.
    (
        "0 0 0 1W * ?",
        "2026-10-15T00:00",
        ["2026-11-02T00:00", "2026-12-01T00:00", "2027-01-01T00:00"],
    ),
    # Only months with a 31st: Jan 31 (Sat -> Fri 30), Mar 31 (Tue), May 31 (Sun -> Fri 29).
    ("0 0 0 31W * ?", JAN1, ["2026-01-30T00:00", "2026-03-31T00:00", "2026-05-29T00:00"]),
    ("0 0 22-2 * * ?", JAN1, ["2026-01-01T01:00", "2026-01-01T02:00", "2026-01-01T22:00"]),
    ("0 0 22-2/2 * * ?", JAN1, ["2026-01-01T02:00", "2026-01-01T22:00", "2026-01-02T00:00"]),
    ("0 0 0 ? * FRI-MON", JAN1, ["2026-01-02T00:00", "2026-01-03T00:00", "2026-01-04T00:00"]),
    (
        "0 0 0 ? * FRI-MON",
        "2026-01-04T12:00",
        ["2026-01-05T00:00", "2026-01-09T00:00", "2026-01-10T00:00"],
    ),
    # FRI-MON/2 = 6, 8 -> Fri, Sun.
    ("0 0 0 ? * FRI-MON/2", JAN1, ["2026-01-02T00:00", "2026-01-04T00:00", "2026-01-09T00:00"]),
    # 1-7/2 = SUN, TUE, THU, SAT.
    ("0 0 0 ? * 1-7/2", JAN1, ["2026-01-03T00:00", "2026-01-04T00:00", "2026-01-06T00:00"]),
    (
        "0 0 0 28-3 * ?",
        "2026-01-29T12:00",
        ["2026-01-30T00:00", "2026-01-31T00:00", "2026-02-01T00:00"],
    ),
    (
        "0 0 0 1 NOV-FEB ?",
        "2026-02-15T00:00",
        ["2026-11-01T00:00", "2026-12-01T00:00", "2027-01-01T00:00"],
    ),
    (
        "0 0 0 1 1 ? 2027,2029,2031",
        JAN1,
        ["2027-01-01T00:00", "2029-01-01T00:00", "2031-01-01T00:00"],
    ),
    ("0 0 0 1 1 ? 2030-2040/5", JAN1, ["2030-01-01T00:00", "2035-01-01T00:00", "2040-01-01T00:00"]),
    # First Mondays: Jan 5, Feb 2, Mar 2.
    ("0 0 0 ? * 2#1", JAN1, ["2026-01-05T00:00", "2026-02-02T00:00", "2026-03-02T00:00"]),
    # Months of 2026 with a fifth Monday: March (30), June (29), August (31).
    ("0 0 0 ? * 2#5", JAN1, ["2026-03-30T00:00", "2026-06-29T00:00", "2026-08-31T00:00"]),
    ("0 0 0 ? * SUN#2", JAN1, ["2026-01-11T00:00", "2026-02-08T00:00", "2026-03-08T00:00"]),
    # 'L' alone in day-of-week is 7 = Saturday.
    ("0 0 0 ? * L", JAN1, ["2026-01-03T00:00", "2026-01-10T00:00", "2026-01-17T00:00"]),
    ("0 0 0 ? * 7L", JAN1, ["2026-01-31T00:00", "2026-02-28T00:00", "2026-03-28T00:00"]),
    (
        "*/20 * * * * ?",
        "2026-01-01T00:00:10",
        ["2026-01-01T00:00:20", "2026-01-01T00:00:40", "2026-01-01T00:01:00"],
    ),
    (
        "30 */45 * * * ?",
        JAN1,
        ["2026-01-01T00:00:30", "2026-01-01T00:45:30", "2026-01-01T01:00:30"],
    ),
    (
        "0 0 0 L * ?",
        "2028-01-15T00:00",
        ["2028-01-31T00:00", "2028-02-29T00:00", "2028-03-31T00:00"],
    ),
    ("0 0 0 29 2 ?", JAN1, ["2028-02-29T00:00", "2032-02-29T00:00", "2036-02-29T00:00"]),
    # July 2026 Mondays: 6, 13, 20, 27.
    (
        "0 0 0 ? JAN,JUL MON",
        "2026-01-27T00:00",
        ["2026-07-06T00:00", "2026-07-13T00:00", "2026-07-20T00:00"],
    ),
    ("0 0 9-17/4 ? * SAT,SUN", JAN1, ["2026-01-03T09:00", "2026-01-03T13:00", "2026-01-03T17:00"]),
    ("0 0 12 ? * sun", JAN1, ["2026-01-04T12:00", "2026-01-11T12:00", "2026-01-18T12:00"]),
    ("0 0 12 ? jan-feb tue", JAN1, ["2026-01-06T12:00", "2026-01-13T12:00", "2026-01-20T12:00"]),
    # L-30 only exists in 31-day months; Jan 1 00:00 is the start itself, so not included.
    ("0 0 0 L-30 * ?", JAN1, ["2026-03-01T00:00", "2026-05-01T00:00", "2026-07-01T00:00"]),
    ("0 0 0 1 1 ? 2020", JAN1, []),
    ("0 0 0 30 2 ?", JAN1, []),
    ("0 0 0 31 4,6,9,11 ?", JAN1, []),
    ("0 0 0 29 2 ? 2027", JAN1, []),
    ("0 0 0 1 1 ? 2099", "2099-06-01T00:00", []),
]

UNIX_TABLE: list[tuple[str, str, list[str]]] = [
    (
        "*/15 * * * *",
        "2026-01-01T10:07:30",
        ["2026-01-01T10:15", "2026-01-01T10:30", "2026-01-01T10:45"],
    ),
    (
        "0 9 * * 1-5",
        "2026-01-02T10:00",
        ["2026-01-05T09:00", "2026-01-06T09:00", "2026-01-07T09:00"],
    ),
    # OR rule: every Sunday and every 1st (Apr 1 2026 is a Wednesday).
    (
        "0 0 1 * 0",
        "2026-03-23T00:00",
        ["2026-03-29T00:00", "2026-04-01T00:00", "2026-04-05T00:00"],
    ),
    ("0 0 * * 7", JAN1, ["2026-01-04T00:00", "2026-01-11T00:00", "2026-01-18T00:00"]),
    ("0 0 * * SUN", JAN1, ["2026-01-04T00:00", "2026-01-11T00:00", "2026-01-18T00:00"]),
    ("0 12 */10 * *", JAN1, ["2026-01-01T12:00", "2026-01-11T12:00", "2026-01-21T12:00"]),
    # A day field starting with '*' means AND (Vixie cron): odd days that are Mondays.
    ("0 0 */2 * 1", JAN1, ["2026-01-05T00:00", "2026-01-19T00:00", "2026-02-09T00:00"]),
    # Unix 5 = Friday, wrap-around 5-1 = Fri, Sat, Sun, Mon.
    ("30 6 * * 5-1", JAN1, ["2026-01-02T06:30", "2026-01-03T06:30", "2026-01-04T06:30"]),
    ("0 0 1 jan,jul *", JAN1, ["2026-07-01T00:00", "2027-01-01T00:00", "2027-07-01T00:00"]),
]


@pytest.mark.parametrize(
    ("text", "start", "expected"),
    QUARTZ_TABLE + UNIX_TABLE,
    ids=[f"{text} from {start}" for text, start, _ in QUARTZ_TABLE + UNIX_TABLE],
)
def test_conformance(text: str, start: str, expected: list[str]) -> None:
    expression = CronExpression.parse(text)
    times = expression.preview(utc(start), UTC_ZONE, 3)
    assert times == [utc(e) for e in expected]
    assert all(t.tzinfo is UTC for t in times)


ZONED_TABLE: list[tuple[str, str, str, list[str]]] = [
    # Berlin moves to CEST on 2026-03-29; the fire times stay at 09:00 local.
    (
        "0 0 9 ? * MON-FRI",
        "Europe/Berlin",
        "2026-03-27T12:00",
        ["2026-03-30T07:00", "2026-03-31T07:00", "2026-04-01T07:00"],
    ),
    (
        "0 30 9 * * ?",
        "Asia/Kolkata",
        JAN1,
        ["2026-01-01T04:00", "2026-01-02T04:00", "2026-01-03T04:00"],
    ),
    # Unix form in a zone: 09:00 New York (EST, UTC-5).
    (
        "0 9 * * 1-5",
        "America/New_York",
        JAN1,
        ["2026-01-01T14:00", "2026-01-02T14:00", "2026-01-05T14:00"],
    ),
]


@pytest.mark.parametrize(("text", "zone", "start", "expected"), ZONED_TABLE)
def test_conformance_in_zones(text: str, zone: str, start: str, expected: list[str]) -> None:
    times = CronExpression.parse(text).preview(utc(start), ZoneInfo(zone), 3)
    assert times == [utc(e) for e in expected]


# --- rejections --------------------------------------------------------------------------------

REJECTIONS: list[tuple[str, str]] = [
    ("0 0 12 1 * MON", "day-of-week"),
    ("0 0 12 * * *", "day-of-month"),
    ("0 0 12 ? * ?", "day-of-month"),
    ("*/60 * * * * ?", "second"),
    ("0 0 0/25 * * ?", "hour"),
    ("0 0 */24 * * ?", "hour"),
    ("0 0 0 32W * ?", "day-of-month"),
    ("0 0 0 0W * ?", "day-of-month"),
    ("0 0 0 1-5W * ?", "day-of-month"),
    ("0 0 0 ? * 8#1", "day-of-week"),
    ("0 0 0 ? * 2#6", "day-of-week"),
    ("0 0 0 ? * 2#0", "day-of-week"),
    ("0 0 L * * ?", "hour"),
    ("0 0 0 * * ? 2026 1", "fields"),
    ("0 0 * *", "fields"),
    ("0 60 * * * ?", "minute"),
    ("0 0 24 * * ?", "hour"),
    ("60 0 0 * * ?", "second"),
    ("0 0 0 1 13 ?", "month"),
    ("0 0 0 1 0 ?", "month"),
    ("0 0 0 0 * ?", "day-of-month"),
    ("0 0 0 32 * ?", "day-of-month"),
    ("0 0 0 ? * 0", "day-of-week"),
    ("0 0 0 ? * 8", "day-of-week"),
    ("0 0 0 ? * MONN", "day-of-week"),
    ("0 0 0 ? * MO", "day-of-week"),
    ("0 0 0 1 JANN ?", "month"),
    ("0 0 0 1 JNA ?", "month"),
    ("0 0 0 1 1 ? 1969", "year"),
    ("0 0 0 1 1 ? 2100", "year"),
    ("0 0 0 1 1 ? 2030-2026", "year"),
    ("0 0 0 1,,2 * ?", "day-of-month"),
    ("0 0 0 1, * ?", "day-of-month"),
    ("0 0 0 ? * 1W", "day-of-week"),
    ("0 0 0 1# * ?", "day-of-month"),
    ("0 0 0 L,15 * ?", "day-of-month"),
    ("0 0 0 L-31 * ?", "day-of-month"),
    ("0 0 0 ? * 6L,2", "day-of-week"),
    ("0 0 0 ? * 2#1,3#1", "day-of-week"),
    ("0 0 $ * * ?", "hour"),
    ("0 */0 * * * ?", "minute"),
    ("1-2-3 * * * * ?", "second"),
    ("0 0 ? * * *", "hour"),
    ("0 0 0 1 1W ?", "month"),
    ("0 0 0 1 1 ? L", "year"),
    ("0 0 0 ? * */8", "day-of-week"),
    ("0 0 0 */32 * ?", "day-of-month"),
    ("0 0 0 1 */13 ?", "month"),
    ("0 0 0 1 JAN-XYZ ?", "month"),
    ("0 0 0 1 1 ? 20x6", "year"),
    # Unix form: Quartz-only syntax and Unix ranges.
    ("0 0 * * 1#2", "day-of-week"),
    ("0 0 ? * *", "day-of-month"),
    ("0 0 L * *", "day-of-month"),
    ("0 0 * * 8", "day-of-week"),
    ("60 * * * *", "minute"),
    ("*/60 * * * *", "minute"),
    ("0 0 15W * *", "day-of-month"),
]


@pytest.mark.parametrize(("text", "names"), REJECTIONS)
def test_rejections_name_the_field(text: str, names: str) -> None:
    with pytest.raises(DatamillError) as caught:
        CronExpression.parse(text)
    error = caught.value
    assert error.error is E.INVALID_SCHEDULE
    assert error.field == "scheduler.spec.crontab"
    assert names in error.message
    assert error.message.startswith("scheduler.spec.crontab: ")


def test_rejection_messages_say_the_rule() -> None:
    cases = {
        "*/60 * * * * ?": "step 60",
        "0 0 0/25 * * ?": "step 25",
        "0 0 0 32W * ?": "1-31",
        "0 0 0 ? * 2#6": "1-5",
        "0 0 0 ? * 0": "1 = SUN",
        "0 0 0 ? * MONN": "unknown day name 'MONN'",
        "0 0 0 1 1 ? 1969": "1970-2099",
        "0 0 0 1,,2 * ?": "empty item",
        "0 0 L * * ?": "'L' is allowed only in the day-of-month and day-of-week",
        "0 0 * * 1#2": "Quartz syntax",
        "0 0 12 ? * ?": "exactly one",
        "0 0 12 1 * MON": "exactly one",
        "1 2 3": "got 3",
    }
    for text, needle in cases.items():
        with pytest.raises(DatamillError, match=needle):
            CronExpression.parse(text)


def test_empty_and_custom_field_name() -> None:
    with pytest.raises(DatamillError, match="empty"):
        CronExpression.parse("   ")
    with pytest.raises(DatamillError) as caught:
        CronExpression.parse("0 0 25 * * ?", field="flow.cron")
    assert caught.value.field == "flow.cron"
    assert caught.value.message.startswith("flow.cron: hour field")


def test_text_and_form() -> None:
    quartz = CronExpression.parse("  0  15 10 ? *   MON-FRI ")
    assert quartz.text == "0 15 10 ? * MON-FRI"
    assert quartz.is_quartz
    assert not CronExpression.parse("0 9 * * 1-5").is_quartz
    assert CronExpression.parse("0 15 10 ? * MON-FRI") == quartz


def test_naive_moment_is_utc_and_results_are_utc() -> None:
    expression = CronExpression.parse("0 0 12 * * ?")
    naive = expression.next_after(datetime(2026, 1, 1, 6), NEW_YORK)
    assert naive == utc("2026-01-01T17:00")
    assert naive is not None
    assert naive.tzinfo is UTC


def test_start_with_microseconds_and_on_a_fire_time() -> None:
    expression = CronExpression.parse("* * * * * ?")
    start = datetime(2026, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC)
    assert expression.next_after(start, UTC_ZONE) == utc("2026-01-01T00:00:01")
    assert expression.next_after(utc("2026-01-01T00:00:01"), UTC_ZONE) == utc("2026-01-01T00:00:02")


def test_preview_stops_when_the_schedule_ends() -> None:
    expression = CronExpression.parse("0 0 0 1 1 ? 2027-2028")
    assert expression.preview(utc(JAN1), UTC_ZONE, 5) == [
        utc("2027-01-01T00:00"),
        utc("2028-01-01T00:00"),
    ]
    assert expression.preview(utc(JAN1), UTC_ZONE, 0) == []


def test_parse_zone() -> None:
    assert parse_zone(None).key == "UTC"
    assert parse_zone("").key == "UTC"
    assert parse_zone("Europe/London") is LONDON
    for bad in ("Mars/Olympus_Mons", "../etc/passwd", "/etc/localtime", " UTC", "x" * 300):
        with pytest.raises(DatamillError) as caught:
            parse_zone(bad)
        assert caught.value.error is E.INVALID_SCHEDULE
        assert caught.value.field == "scheduler.spec.timezone"
        assert "scheduler.spec.timezone" in caught.value.message


# --- daylight saving ---------------------------------------------------------------------------


def day_fires(text: str, zone: ZoneInfo, day: str) -> list[datetime]:
    """Every fire time whose local date is ``day``."""
    start = datetime.fromisoformat(day).replace(tzinfo=zone)
    times = CronExpression.parse(text).preview(start - timedelta(microseconds=1), zone, 200)
    return [t for t in times if t.astimezone(zone).date() == start.date()]


def test_new_york_spring_forward_daily_in_the_gap_fires_once_at_three() -> None:
    times = CronExpression.parse("0 30 2 * * ?").preview(utc("2026-03-07T12:00"), NEW_YORK, 3)
    assert times == [
        local("2026-03-08T03:00", NEW_YORK),  # 02:30 does not exist
        local("2026-03-09T02:30", NEW_YORK),
        local("2026-03-10T02:30", NEW_YORK),
    ]
    assert times[0] == utc("2026-03-08T07:00")


def test_new_york_spring_forward_gap_times_and_the_first_valid_time_fire_once() -> None:
    times = CronExpression.parse("0 0/15 1-3 * * ?").preview(utc("2026-03-08T06:40"), NEW_YORK, 4)
    assert times == [
        local("2026-03-08T01:45", NEW_YORK),
        local("2026-03-08T03:00", NEW_YORK),  # 02:00, 02:15, 02:30, 02:45 and 03:00 together
        local("2026-03-08T03:15", NEW_YORK),
        local("2026-03-08T03:30", NEW_YORK),
    ]


def test_new_york_fall_back_daily_at_the_repeated_time_fires_once() -> None:
    times = CronExpression.parse("0 30 1 * * ?").preview(utc("2026-10-31T12:00"), NEW_YORK, 2)
    assert times == [utc("2026-11-01T05:30"), utc("2026-11-02T06:30")]  # 01:30 EDT, then EST
    named = CronExpression.parse("0 0,30 1 * * ?").preview(utc("2026-11-01T04:00"), NEW_YORK, 3)
    assert named == [utc("2026-11-01T05:00"), utc("2026-11-01T05:30"), utc("2026-11-02T06:00")]


def test_new_york_fall_back_hourly_fires_in_both_repeated_hours() -> None:
    times = CronExpression.parse("0 0 * * * ?").preview(utc("2026-11-01T03:30"), NEW_YORK, 5)
    assert times == [
        local("2026-11-01T00:00", NEW_YORK),
        local("2026-11-01T01:00", NEW_YORK, fold=0),  # 01:00 EDT
        local("2026-11-01T01:00", NEW_YORK, fold=1),  # 01:00 EST
        local("2026-11-01T02:00", NEW_YORK),
        local("2026-11-01T03:00", NEW_YORK),
    ]
    assert [t.hour for t in times] == [4, 5, 6, 7, 8]
    # Starting inside the second pass of the repeated hour.
    nxt = CronExpression.parse("0 0 * * * ?").next_after(utc("2026-11-01T06:10"), NEW_YORK)
    assert nxt == utc("2026-11-01T07:00")
    unix = CronExpression.parse("0 * * * *").preview(utc("2026-11-01T04:30"), NEW_YORK, 3)
    assert unix == [utc("2026-11-01T05:00"), utc("2026-11-01T06:00"), utc("2026-11-01T07:00")]


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        (NEW_YORK, "2026-03-08", 23),
        (NEW_YORK, "2026-11-01", 25),
        (LONDON, "2026-03-29", 23),
        (LONDON, "2026-10-25", 25),
        (NEW_YORK, "2026-07-01", 24),
    ],
)
def test_hourly_and_half_hourly_counts_on_transition_days(
    zone: ZoneInfo, day: str, hours: int
) -> None:
    for text, per_hour in (("0 0 * * * ?", 1), ("0 0/30 * * * ?", 2), ("*/30 * * * *", 2)):
        times = day_fires(text, zone, day)
        assert len(times) == hours * per_hour, text
        assert all(b > a for a, b in pairwise(times))
        assert len(set(times)) == len(times)
        # every hour of elapsed time has its fires: consecutive fires are 30 or 60 minutes apart
        gaps = {b - a for a, b in pairwise(times)}
        assert gaps == {timedelta(minutes=60 // per_hour)}


def test_london_spring_forward_and_fall_back() -> None:
    gap = CronExpression.parse("0 30 1 * * ?").preview(utc("2026-03-28T12:00"), LONDON, 2)
    assert gap == [utc("2026-03-29T01:00"), utc("2026-03-30T00:30")]  # 02:00 BST, 01:30 BST
    assert gap[0].astimezone(LONDON).hour == 2
    repeat = CronExpression.parse("0 30 1 * * ?").preview(utc("2026-10-24T12:00"), LONDON, 2)
    assert repeat == [utc("2026-10-25T00:30"), utc("2026-10-26T01:30")]  # 01:30 BST, then GMT
    hourly = CronExpression.parse("0 0 * * * ?").preview(utc("2026-10-24T22:30"), LONDON, 4)
    assert hourly == [
        utc("2026-10-24T23:00"),  # 00:00 BST
        utc("2026-10-25T00:00"),  # 01:00 BST
        utc("2026-10-25T01:00"),  # 01:00 GMT
        utc("2026-10-25T02:00"),  # 02:00 GMT
    ]


@pytest.mark.slow
def test_every_thirty_minutes_across_both_transitions() -> None:
    expression = CronExpression.parse("0 0/30 * * * ?")
    for zone, start, end in (
        (NEW_YORK, utc("2026-03-07T05:00"), utc("2026-11-02T05:00")),
        (LONDON, utc("2026-03-28T00:00"), utc("2026-10-26T00:00")),
    ):
        times = expression.preview(start, zone, 20_000)
        times = [t for t in times if t <= end]
        assert all(b > a for a, b in pairwise(times))
        # Every fire is 30 minutes of real time after the previous one: the gap hours lose
        # their fires and the repeated hours keep both passes.
        assert {b - a for a, b in pairwise(times)} == {timedelta(minutes=30)}
        assert len(times) == (end - start) // timedelta(minutes=30)


def test_specific_hours_skip_the_repeated_pass_but_not_the_gap() -> None:
    expression = CronExpression.parse("0 0/20 0-3 * * ?")
    fall = day_fires("0 0/20 0-3 * * ?", NEW_YORK, "2026-11-01")
    assert [t.astimezone(NEW_YORK).strftime("%H:%M%z") for t in fall] == [
        "00:00-0400",
        "00:20-0400",
        "00:40-0400",
        "01:00-0400",
        "01:20-0400",
        "01:40-0400",
        "02:00-0500",
        "02:20-0500",
        "02:40-0500",
        "03:00-0500",
        "03:20-0500",
        "03:40-0500",
    ]
    spring = expression.preview(utc("2026-03-08T06:30"), NEW_YORK, 3)
    assert [t.astimezone(NEW_YORK).strftime("%H:%M%z") for t in spring] == [
        "01:40-0500",
        "03:00-0400",
        "03:20-0400",
    ]


# --- speed ---------------------------------------------------------------------------------------


def test_next_after_is_fast_and_impossible_expressions_end_quickly() -> None:
    start = utc("2026-05-17T13:07:23")
    for text in ("0 0 12 * * ?", "*/15 * * * *", "0 0 * * * ?", "0 15 10 ? * 6L"):
        expression = CronExpression.parse(text)
        began = time.perf_counter()
        for _ in range(2000):
            expression.next_after(start, NEW_YORK)
        assert (time.perf_counter() - began) / 2000 < 0.0005, text
    for text in ("0 0 0 30 2 ?", "0 0 0 31 4,6,9,11 ?", "0 0 0 29 2 ? 2027", "0 0 0 ? 2 2#5 2027"):
        began = time.perf_counter()
        assert CronExpression.parse(text).next_after(start, NEW_YORK) is None
        assert time.perf_counter() - began < 0.05, text


# --- properties ----------------------------------------------------------------------------------

ZONES = [UTC_ZONE, NEW_YORK, LONDON, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Asia/Kolkata")]
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # half-hour clock changes
TRANSITIONS = [
    (NEW_YORK, utc("2026-03-08T07:00")),
    (NEW_YORK, utc("2026-11-01T06:00")),
    (LONDON, utc("2026-03-29T01:00")),
    (LONDON, utc("2026-10-25T01:00")),
    (LORD_HOWE, utc("2026-04-04T15:00")),  # 02:00 +11 -> 01:30 +10:30
    (LORD_HOWE, utc("2026-10-03T15:30")),  # 02:00 +10:30 -> 02:30 +11
]
ZONES = [UTC_ZONE, NEW_YORK, LONDON, LORD_HOWE, ZoneInfo("Asia/Kolkata")]

values = st.lists(st.integers(0, 59), min_size=1, max_size=3, unique=True)
hour_values = st.one_of(
    st.just(None),  # '*'
    st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True),  # the hours that move
    st.lists(st.integers(0, 23), min_size=1, max_size=4, unique=True),
)
zoned_starts = st.one_of(
    st.builds(
        lambda pair, delta: (pair[0], pair[1] + timedelta(seconds=delta)),
        st.sampled_from(TRANSITIONS),
        st.one_of(st.integers(-4 * 3600, 4 * 3600), st.integers(-36 * 3600, 36 * 3600)),
    ),
    st.tuples(
        st.sampled_from(ZONES),
        st.builds(
            lambda seconds: utc("2025-01-01T00:00") + timedelta(seconds=seconds),
            st.integers(0, 3 * 365 * 86400),
        ),
    ),
)


def test_transition_table_is_right() -> None:
    for zone, instant in TRANSITIONS:
        before = (instant - timedelta(seconds=1)).astimezone(zone).utcoffset()
        assert before != instant.astimezone(zone).utcoffset()


def _matches(wall: datetime, secs: set[int], mins: set[int], hours: set[int]) -> bool:
    return wall.second in secs and wall.minute in mins and wall.hour in hours


def _fires(u: datetime, zone: ZoneInfo, secs: set[int], mins: set[int], hours: set[int]) -> bool:
    """Reference rule, instant by instant: the wall time matches (a second pass of a repeated
    wall time only for every-hour schedules), or ``u`` ends a gap holding a matching time."""
    here = u.astimezone(zone)
    wall = here.replace(tzinfo=None)
    if _matches(wall, secs, mins, hours) and (here.fold == 0 or len(hours) == 24):
        return True
    before = (u - timedelta(seconds=1)).astimezone(zone)
    if before.utcoffset() == here.utcoffset():
        return False
    skipped = before.replace(tzinfo=None) + timedelta(seconds=1)
    while skipped < wall:  # wall times the clock jumped over
        if _matches(skipped, secs, mins, hours):
            return True
        skipped += timedelta(seconds=1)
    return False


@pytest.mark.slow
@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    secs=values,
    mins=values,
    hour_list=hour_values,
    case=zoned_starts,
    micro=st.integers(0, 999_999),
)
def test_next_after_matches_and_skips_nothing(
    secs: list[int],
    mins: list[int],
    hour_list: list[int] | None,
    case: tuple[ZoneInfo, datetime],
    micro: int,
) -> None:
    zone, start = case
    hours = set(range(24)) if hour_list is None else set(hour_list)
    hour_text = "*" if hour_list is None else ",".join(map(str, hour_list))
    text = f"{','.join(map(str, secs))} {','.join(map(str, mins))} {hour_text} * * ?"
    t = start.replace(microsecond=micro)
    result = CronExpression.parse(text).next_after(t, zone)
    assert result is not None
    assert result > t
    assert result.tzinfo is UTC
    assert _fires(result, zone, set(secs), set(mins), hours)
    # Brute force: no instant strictly between t and the result fires (over up to 3 hours;
    # offsets in these zones are whole minutes, so local and UTC seconds agree).
    end = min(result, t + timedelta(hours=3))
    minute = t.replace(second=0, microsecond=0)
    while minute < end:
        for second in set(secs) | {0}:
            u = minute + timedelta(seconds=second)
            if t < u < end:
                assert not _fires(u, zone, set(secs), set(mins), hours), (text, u)
        minute += timedelta(minutes=1)


def _nearest_weekday(year: int, month: int, n: int) -> int | None:
    length = calendar.monthrange(year, month)[1]
    if n > length:
        return None
    weekdays = [d for d in range(1, length + 1) if date(year, month, d).weekday() < 5]
    return min(weekdays, key=lambda d: (abs(d - n), d))


def _day_rule(kind: str, a: int, b: int) -> tuple[str, Callable[[date], bool]]:
    """A day expression and a reference predicate ``(date) -> bool`` written independently."""
    quartz_names = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
    py = (a - 2) % 7  # Quartz weekday a (1 = SUN) as Python's Monday = 0

    def last(d: date) -> int:
        return calendar.monthrange(d.year, d.month)[1]

    rules: dict[str, tuple[str, Callable[[date], bool]]] = {
        "L": ("0 0 0 L * ?", lambda d: d.day == last(d)),
        "L-n": (f"0 0 0 L-{b} * ?", lambda d: d.day == last(d) - b),
        "LW": (
            "0 0 0 LW * ?",
            lambda d: (
                d.day
                == max(x for x in range(1, last(d) + 1) if date(d.year, d.month, x).weekday() < 5)
            ),
        ),
        "W": (f"0 0 0 {b + 1}W * ?", lambda d: d.day == _nearest_weekday(d.year, d.month, b + 1)),
        "L-nW": (
            f"0 0 0 L-{b}W * ?",
            lambda d: last(d) - b >= 1 and d.day == _nearest_weekday(d.year, d.month, last(d) - b),
        ),
        "nL": (f"0 0 0 ? * {a}L", lambda d: d.weekday() == py and d.day + 7 > last(d)),
        "#": (
            f"0 0 0 ? * {quartz_names[a - 1]}#{b % 5 + 1}",
            lambda d: d.weekday() == py and (d.day - 1) // 7 == b % 5,
        ),
        "dom": (
            f"0 0 0 {b + 1},{(b * 7) % 31 + 1} * ?",
            lambda d: d.day in {b + 1, (b * 7) % 31 + 1},
        ),
        "range": (
            f"0 0 0 ? * {a}-{b % 7 + 1}",
            lambda d: (
                (d.weekday() + 2 - 1) % 7 + 1
                in (
                    set(range(a, b % 7 + 2))
                    if a <= b % 7 + 1
                    else set(range(a, 8)) | set(range(1, b % 7 + 2))
                )
            ),
        ),
    }
    return rules[kind]


@pytest.mark.slow
@settings(max_examples=200, deadline=None, database=None)
@given(
    kind=st.sampled_from(["L", "L-n", "LW", "L-nW", "W", "nL", "#", "dom", "range"]),
    a=st.integers(1, 7),
    b=st.one_of(st.sampled_from([0, 1, 2, 13, 14, 27, 28, 29, 30]), st.integers(0, 30)),
    day=st.integers(0, 40 * 365),
)
def test_day_rules_against_a_calendar_walk(kind: str, a: int, b: int, day: int) -> None:
    text, predicate = _day_rule(kind, a, b)
    start = date(1990, 1, 1) + timedelta(days=day)
    expected: list[datetime] = []
    current = start + timedelta(days=1)
    while len(expected) < 4 and current.year < start.year + 8:
        if predicate(current):
            expected.append(datetime(current.year, current.month, current.day, tzinfo=UTC))
        current += timedelta(days=1)
    moment = datetime(start.year, start.month, start.day, tzinfo=UTC)
    got = CronExpression.parse(text).preview(moment, UTC_ZONE, 4)
    assert got == expected, text
