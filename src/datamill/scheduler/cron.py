"""Cron expressions: parsing, validation and fire times in a time zone, without a cron library.

Two forms are accepted, told apart by the number of fields alone:

* **5 fields** -- Unix cron: ``minute hour day-of-month month day-of-week``. Seconds are 0.
  Weekdays are numbered the Unix way, 0-7 with 0 and 7 = Sunday (names SUN-SAT work too).
  The day fields follow Vixie cron / cronie: when both are restricted a day matches if
  *either* matches (``0 0 1 * 0`` fires on the 1st and on every Sunday); when either field
  starts with ``*`` (``*`` or ``*/n``) a day must match both. ``?``, ``L``, ``W`` and ``#``
  are Quartz syntax and are refused in this form.
* **6 or 7 fields** -- Quartz: ``second minute hour day-of-month month day-of-week [year]``.
  Weekdays are numbered the Quartz way, 1 = SUN ... 7 = SAT. Exactly one of the two day
  fields must be ``?``. Supported: ``*``, ``?``, lists ``a,b``, ranges ``a-b``, steps
  ``a/n``, ``*/n`` and ``a-b/n``, names JAN-DEC and SUN-SAT (any case), ``L`` (last day of
  the month), ``L-n`` (n days before it, n <= 30), ``nW`` (the weekday nearest the n-th,
  never leaving the month; a month without an n-th day does not fire), ``LW`` (last weekday
  of the month), ``L-nW`` (the weekday nearest the day n days before the last); in
  day-of-week ``L`` alone (= SAT), ``nL`` (last <weekday> of the month) and ``n#k`` (k-th
  <weekday>, k 1-5; a month without a k-th one does not fire); a year field 1970-2099.
  ``L``, ``W`` and ``#`` forms stand alone in their field (no lists), as in Quartz.

In both forms a range whose end is below its start wraps around the field, as Quartz does
(``22-2`` hours = 22, 23, 0, 1, 2; ``FRI-MON`` = Fri, Sat, Sun, Mon), except in the year.
A step may not exceed the field's span (59 for seconds and minutes, 23 hours, 31 days,
12 months, 7 weekdays), so ``*/60`` seconds and ``0/25`` hours are refused.

**Time zones and daylight saving.** Fire times are wall-clock times in the schedule's zone,
returned as UTC instants. An instant fires when its local wall time matches the
expression, with two rules for the hours a clock change creates or repeats:

* *Gap* (spring forward): a matching wall time that does not exist fires once, at the
  first instant after the gap (02:30 on the US spring-forward day fires at 03:00 local).
  Several matching times in one gap, and a match at the first valid time itself, fire
  once together at that instant.
* *Overlap* (fall back): a matching wall time that occurs twice fires at its first
  occurrence only -- unless the hour field matches every hour (``*``, ``*/1``, ``0-23``
  ...), in which case it fires at both occurrences, so an hourly schedule keeps firing
  every hour (``0 0 * * * ?`` fires at 01:00 EDT and at 01:00 EST on the US fall-back day).

No instant is ever returned twice and fire times strictly increase. The search jumps
field by field (year, month, day, hour, minute, second) over wall times and never goes past
the year 2099 (Quartz's year limit): an expression that cannot fire again answers None.
Clock changes are found from the zone's offsets; two changes less than 3 hours apart (which
no IANA zone has) would not be told apart.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from calendar import monthrange
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from datamill.domain.common import aware
from datamill.errors import DatamillError, E

MIN_YEAR = 1970
MAX_YEAR = 2099
MAX_TEXT = 512

_SECOND = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
# Wider than any clock change (the largest is 2 h, Antarctica/Troll).
_DST_WINDOW = timedelta(hours=3)

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_MONTH_NAMES = {name: i + 1 for i, name in enumerate(_MONTHS)}
_QUARTZ_DAY_NAMES = {name: i + 1 for i, name in enumerate(_DAYS)}
_UNIX_DAY_NAMES = {name: i for i, name in enumerate(_DAYS)}

_ITEM = re.compile(r"(\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/([0-9]+))?")
_VALUE = re.compile(r"[0-9]+|[A-Za-z]+")
_DOM_LAST = re.compile(r"L(?:-([0-9]+))?(W)?", re.IGNORECASE)
_DOM_NEAREST = re.compile(r"([0-9]+)W", re.IGNORECASE)
_DOW_LAST = re.compile(r"([0-9]+|[A-Za-z]{3})L", re.IGNORECASE)
_DOW_NTH = re.compile(r"([0-9]+|[A-Za-z]{3})#([0-9]+)")

_UNIX_FIELDS = "minute hour day-of-month month day-of-week"
_QUARTZ_FIELDS = "second minute hour day-of-month month day-of-week [year]"


@dataclass(frozen=True)
class _Field:
    """One cron field's rules: its range, names, largest step and wrap-around modulus."""

    name: str
    low: int
    high: int
    max_step: int | None
    names: dict[str, int] | None = None
    wrap: int = 0  # a reversed range a-b runs a..b+wrap, each value taken modulo wrap
    one_based: bool = False  # after the modulo, 0 stands for ``wrap`` (months, days)
    hint: str = ""


_SECONDS = _Field("second", 0, 59, 59, wrap=60)
_MINUTES = _Field("minute", 0, 59, 59, wrap=60)
_HOURS = _Field("hour", 0, 23, 23, wrap=24)
_DOM = _Field("day-of-month", 1, 31, 31, wrap=31, one_based=True)
_MONTH = _Field("month", 1, 12, 12, _MONTH_NAMES, wrap=12, one_based=True, hint=" (or JAN-DEC)")
_QUARTZ_DOW = _Field(
    "day-of-week",
    1,
    7,
    7,
    _QUARTZ_DAY_NAMES,
    wrap=7,
    one_based=True,
    hint=" (Quartz numbering: 1 = SUN ... 7 = SAT, or SUN-SAT)",
)
_UNIX_DOW = _Field(
    "day-of-week",
    0,
    7,
    7,
    _UNIX_DAY_NAMES,
    wrap=7,
    hint=" (Unix numbering: 0 or 7 = Sunday, or SUN-SAT)",
)
_YEAR = _Field("year", MIN_YEAR, MAX_YEAR, None)


@dataclass(frozen=True)
class _DomRule:
    """A restricted day-of-month: a set of days, ``L-offset``, ``L-offsetW`` or ``nW``."""

    kind: str  # "days" | "last" | "last_weekday" | "nearest_weekday"
    days: frozenset[int] = frozenset()
    number: int = 0  # the offset of "last" and "last_weekday", the day of "nearest_weekday"

    def days_in(self, length: int, first_weekday: int) -> set[int]:
        if self.kind == "days":
            return {d for d in self.days if d <= length}
        if self.kind in ("last", "last_weekday"):
            day = length - self.number
            if day < 1:
                return set()
            if self.kind == "last":
                return {day}
        else:  # nearest_weekday
            day = self.number
            if day > length:
                return set()
        weekday = (first_weekday + day - 1) % 7
        if weekday == 5:  # Saturday: Friday before, or Monday after when the 1st
            day = day + 2 if day == 1 else day - 1
        elif weekday == 6:  # Sunday: Monday after, or Friday before when the last day
            day = day - 2 if day == length else day + 1
        return {day}


@dataclass(frozen=True)
class _DowRule:
    """A restricted day-of-week (Python weekday numbers, Monday = 0): a set, ``nL`` or ``n#k``."""

    kind: str  # "days" | "last" | "nth"
    weekdays: frozenset[int] = frozenset()
    weekday: int = 0
    nth: int = 0

    def days_in(self, length: int, first_weekday: int) -> set[int]:
        if self.kind == "days":
            return {d for d in range(1, length + 1) if (first_weekday + d - 1) % 7 in self.weekdays}
        first = 1 + (self.weekday - first_weekday) % 7
        if self.kind == "last":
            return {first + 7 * ((length - first) // 7)}
        day = first + 7 * (self.nth - 1)
        return {day} if day <= length else set()


class CronExpression:
    """A parsed, validated cron expression (see the module docstring for the accepted forms).

    Instances are immutable; :meth:`parse` caches them by text.
    """

    __slots__ = (
        "_day_and",
        "_day_cache",
        "_dom",
        "_dow",
        "_hour_all",
        "_hours",
        "_minutes",
        "_months",
        "_never",
        "_quartz",
        "_seconds",
        "_text",
        "_years",
    )

    def __init__(
        self,
        text: str,
        *,
        quartz: bool,
        seconds: tuple[int, ...],
        minutes: tuple[int, ...],
        hours: tuple[int, ...],
        months: tuple[int, ...],
        years: tuple[int, ...] | None,
        dom: _DomRule | None,
        dow: _DowRule | None,
        day_and: bool,
    ) -> None:
        self._text = text
        self._quartz = quartz
        self._seconds = seconds
        self._minutes = minutes
        self._hours = hours
        self._months = months
        self._years = years
        self._dom = dom
        self._dow = dow
        self._day_and = day_and
        self._hour_all = len(hours) == 24
        self._day_cache: dict[tuple[int, int], tuple[int, ...]] = {}
        self._never = not self._can_ever_fire()

    # --- construction -------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, field: str = "scheduler.spec.crontab") -> CronExpression:
        """Parse ``text``; raise ``DatamillError(E.INVALID_SCHEDULE)`` naming the bad field."""
        if not isinstance(text, str):
            raise DatamillError(E.INVALID_SCHEDULE, f"{field}: must be a string", field=field)
        return _parse_cached(" ".join(text.split()), field)

    @property
    def text(self) -> str:
        """The expression as given, with runs of whitespace collapsed to one space."""
        return self._text

    @property
    def is_quartz(self) -> bool:
        """True for the 6/7-field Quartz form, False for 5-field Unix cron."""
        return self._quartz

    def __repr__(self) -> str:
        return f"CronExpression({self._text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronExpression) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)

    # --- fire times ---------------------------------------------------------------------

    def next_after(self, moment: datetime, zone: ZoneInfo) -> datetime | None:
        """The first fire time strictly after ``moment``, as an aware UTC datetime.

        ``moment`` should be aware (a naive one is read as UTC). None when the expression
        cannot fire again before the end of 2099.
        """
        if self._never:
            return None
        t = max(aware(moment).astimezone(UTC), _EARLIEST)
        local = t.astimezone(zone)
        if local.year > MAX_YEAR:
            return None
        start = local.replace(tzinfo=None, microsecond=0, fold=0) + _SECOND
        if local.fold == 1:
            # In the second pass of a repeated hour: every wall time up to the end of the
            # repetition has had its first occurrence already.
            ts = _seconds_of(t)
            before = local.replace(fold=0).utcoffset() or timedelta(0)
            after = local.utcoffset() or timedelta(0)
            change = _find_change(ts - int((before - after).total_seconds()), ts, zone)
            start = max(start, _naive_utc(change) + before)
        wall = self._next_wall(start)
        found = None if wall is None else _first_instant(wall, zone)
        if self._hour_all:
            repeat = self._next_repeat(t, zone)
            if repeat is not None and (found is None or repeat < found):
                found = repeat
        return found

    def preview(self, moment: datetime, zone: ZoneInfo, count: int) -> list[datetime]:
        """The next ``count`` fire times after ``moment`` (fewer if the schedule ends)."""
        times: list[datetime] = []
        current: datetime | None = moment
        while len(times) < count and current is not None:
            current = self.next_after(current, zone)
            if current is not None:
                times.append(current)
        return times

    def matches_wall(self, wall: datetime) -> bool:
        """Whether a local wall-clock time (its fields; zone ignored) matches the expression."""
        if self._years is not None and wall.year not in self._years:
            return False
        return (
            wall.second in self._seconds
            and wall.minute in self._minutes
            and wall.hour in self._hours
            and wall.month in self._months
            and wall.day in self._days(wall.year, wall.month)
        )

    # --- the search ---------------------------------------------------------------------

    def _next_repeat(self, t: datetime, zone: ZoneInfo) -> datetime | None:
        """For schedules matching every hour: the first second occurrence of a repeated
        wall time after ``t``, if a clock goes back near ``t`` (otherwise None)."""
        ts = _seconds_of(t)
        window = int(_DST_WINDOW.total_seconds())
        lo, hi = ts - window, ts + window
        off_lo, off_hi = _offset_at(lo, zone), _offset_at(hi, zone)
        if off_lo == off_hi:
            return None
        off_t = _offset_at(ts, zone)
        best: datetime | None = None
        for a, b, off_a, off_b in ((lo, ts, off_lo, off_t), (ts, hi, off_t, off_hi)):
            if off_a <= off_b:
                continue  # no change, or a gap: nothing repeats
            change = _naive_utc(_find_change(a, b, zone))
            repeat_start, repeat_end = change + off_b, change + off_a
            floor_t = t.replace(tzinfo=None, microsecond=0)
            wall = self._next_wall(max(repeat_start, floor_t + off_b + _SECOND))
            if wall is not None and wall < repeat_end:
                instant = (wall - off_b).replace(tzinfo=UTC)
                if best is None or instant < best:
                    best = instant
        return best

    def _next_wall(self, start: datetime) -> datetime | None:
        """The first matching wall-clock time at or after ``start`` (naive), up to 2099."""
        seconds, minutes, hours, months = self._seconds, self._minutes, self._hours, self._months
        years = self._years
        y, mo, d = start.year, start.month, start.day
        h, mi, s = start.hour, start.minute, start.second
        while y <= MAX_YEAR:
            if years is not None:
                i = bisect_left(years, y)
                if i == len(years):
                    return None
                if years[i] != y:
                    y, mo, d, h, mi, s = years[i], 1, 1, 0, 0, 0
            i = bisect_left(months, mo)
            if i == len(months):
                y, mo, d, h, mi, s = y + 1, 1, 1, 0, 0, 0
                continue
            if months[i] != mo:
                mo, d, h, mi, s = months[i], 1, 0, 0, 0
            days = self._days(y, mo)
            i = bisect_left(days, d)
            if i == len(days):
                mo, d, h, mi, s = mo + 1, 1, 0, 0, 0
                continue
            if days[i] != d:
                d, h, mi, s = days[i], 0, 0, 0
            i = bisect_left(hours, h)
            if i == len(hours):
                d, h, mi, s = d + 1, 0, 0, 0
                continue
            if hours[i] != h:
                h, mi, s = hours[i], 0, 0
            i = bisect_left(minutes, mi)
            if i == len(minutes):
                h, mi, s = h + 1, 0, 0
                continue
            if minutes[i] != mi:
                mi, s = minutes[i], 0
            i = bisect_left(seconds, s)
            if i == len(seconds):
                mi, s = mi + 1, 0
                continue
            return datetime(y, mo, d, h, mi, seconds[i])
        return None

    def _days(self, year: int, month: int) -> tuple[int, ...]:
        key = (year, month)
        cached = self._day_cache.get(key)
        if cached is None:
            first_weekday, length = monthrange(year, month)
            cached = self._days_for(length, first_weekday)
            if len(self._day_cache) > 4096:
                self._day_cache.clear()
            self._day_cache[key] = cached
        return cached

    def _days_for(self, length: int, first_weekday: int) -> tuple[int, ...]:
        dom = None if self._dom is None else self._dom.days_in(length, first_weekday)
        dow = None if self._dow is None else self._dow.days_in(length, first_weekday)
        if dom is None and dow is None:
            return tuple(range(1, length + 1))
        if dom is None or dow is None:
            chosen = dom if dom is not None else dow
            assert chosen is not None
            return tuple(sorted(chosen))
        return tuple(sorted(dom & dow if self._day_and else dom | dow))

    def _can_ever_fire(self) -> bool:
        for month in self._months:
            lengths = (28, 29) if month == 2 else (monthrange(2001, month)[1],)
            for length in lengths:
                if any(self._days_for(length, weekday) for weekday in range(7)):
                    return True
        return False


# --- time-zone helpers ----------------------------------------------------------------------


def _seconds_of(moment: datetime) -> int:
    """Whole seconds since the epoch, rounded down (exact, no float)."""
    return (moment - _EPOCH) // _SECOND


def _naive_utc(ts: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(seconds=ts)


def _offset_at(ts: int, zone: ZoneInfo) -> timedelta:
    return (_EPOCH + timedelta(seconds=ts)).astimezone(zone).utcoffset() or timedelta(0)


def _find_change(lo: int, hi: int, zone: ZoneInfo) -> int:
    """The first second in (lo, hi] with ``hi``'s UTC offset; the offset at ``lo`` differs."""
    target = _offset_at(hi, zone)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_at(mid, zone) == target:
            hi = mid
        else:
            lo = mid
    return hi


def _first_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant showing ``wall`` in ``zone``, or the end of the gap it falls in."""
    local = wall.replace(tzinfo=zone)
    instant = local.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    # A gap: fold=0 reads the wall time with the offset before the change (a later
    # instant), fold=1 with the offset after it; the change lies between the two.
    earlier = local.replace(fold=1).astimezone(UTC)
    change = _find_change(_seconds_of(earlier), _seconds_of(instant), zone)
    return _EPOCH + timedelta(seconds=change)


def parse_zone(name: str | None, field: str = "scheduler.spec.timezone") -> ZoneInfo:
    """An IANA time zone by name; None or empty means UTC."""
    if name is None or name == "":
        return ZoneInfo("UTC")
    if not isinstance(name, str) or len(name) > 128 or name != name.strip():
        raise DatamillError(
            E.INVALID_SCHEDULE, f"{field}: '{str(name)[:140]}' is not a time zone", field=field
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise DatamillError(
            E.INVALID_SCHEDULE,
            f"{field}: unknown time zone '{name}'; use an IANA name such as 'Europe/Berlin' "
            "or 'UTC'",
            field=field,
        ) from None


# --- parsing --------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, field: str) -> None:
        self.text = text
        self.field = field

    def fail(self, message: str) -> DatamillError:
        return DatamillError(E.INVALID_SCHEDULE, f"{self.field}: {message}", field=self.field)

    def field_fail(self, spec: _Field, part: str, rule: str) -> DatamillError:
        return self.fail(f"{spec.name} field '{part}': {rule}")

    def parse(self) -> CronExpression:
        text = self.text
        if not text:
            raise self.fail("the cron expression is empty")
        if len(text) > MAX_TEXT:
            raise self.fail(f"the cron expression is longer than {MAX_TEXT} characters")
        parts = text.split(" ")
        if len(parts) == 5:
            return self.parse_unix(parts)
        if len(parts) in (6, 7):
            return self.parse_quartz(parts)
        raise self.fail(
            f"expected 5 fields (Unix: {_UNIX_FIELDS}) or 6-7 fields "
            f"(Quartz: {_QUARTZ_FIELDS}), got {len(parts)}"
        )

    def parse_unix(self, parts: list[str]) -> CronExpression:
        minute, hour, dom_text, month, dow_text = parts
        specs = (_MINUTES, _HOURS, _DOM, _MONTH, _UNIX_DOW)
        for spec, part in zip(specs, parts, strict=True):
            for mark in ("?", "#", "L", "W"):
                if mark in part.upper() and (mark in "?#" or not self.is_name_list(spec, part)):
                    raise self.field_fail(
                        spec,
                        part,
                        f"'{mark}' is Quartz syntax; write the expression in the 6- or "
                        f"7-field Quartz form ({_QUARTZ_FIELDS}) to use it",
                    )
        dom_values = self.values(_DOM, dom_text)
        dow_values = self.values(_UNIX_DOW, dow_text)
        dom = None if dom_text == "*" else _DomRule("days", frozenset(dom_values))
        dow = None if dow_text == "*" else _DowRule("days", frozenset(_py_weekdays(dow_values, 1)))
        return CronExpression(
            self.text,
            quartz=False,
            seconds=(0,),
            minutes=self.sorted_values(_MINUTES, minute),
            hours=self.sorted_values(_HOURS, hour),
            months=self.sorted_values(_MONTH, month),
            years=None,
            dom=dom,
            dow=dow,
            day_and=dom_text.startswith("*") or dow_text.startswith("*"),
        )

    def parse_quartz(self, parts: list[str]) -> CronExpression:
        second, minute, hour, dom_text, month, dow_text = parts[:6]
        year = parts[6] if len(parts) == 7 else "*"
        for spec, part in ((_SECONDS, second), (_MINUTES, minute), (_HOURS, hour)):
            self.check_plain(spec, part)
        self.check_plain(_MONTH, month)
        self.check_plain(_YEAR, year)
        if dom_text == "?" and dow_text == "?":
            raise self.fail(
                "day-of-month and day-of-week fields are both '?': exactly one of them "
                "must be '?' in a Quartz expression"
            )
        if dom_text != "?" and dow_text != "?":
            raise self.fail(
                f"day-of-month '{dom_text}' and day-of-week '{dow_text}' are both given: "
                "a Quartz expression needs '?' in exactly one of the two day fields"
            )
        return CronExpression(
            self.text,
            quartz=True,
            seconds=self.sorted_values(_SECONDS, second),
            minutes=self.sorted_values(_MINUTES, minute),
            hours=self.sorted_values(_HOURS, hour),
            months=self.sorted_values(_MONTH, month),
            years=None if year == "*" else self.sorted_values(_YEAR, year),
            dom=None if dom_text == "?" else self.quartz_dom(dom_text),
            dow=None if dow_text == "?" else self.quartz_dow(dow_text),
            day_and=True,
        )

    def quartz_dom(self, part: str) -> _DomRule | None:
        spec = _DOM
        upper = part.upper()
        if "#" in part:
            raise self.field_fail(spec, part, "'#' is allowed only in the day-of-week field")
        if "L" in upper or "W" in upper:
            if "," in part:
                raise self.field_fail(
                    spec, part, "'L' and 'W' cannot be combined with other days in a list"
                )
            last = _DOM_LAST.fullmatch(part)
            if last:
                offset = int(last.group(1) or 0)
                if offset > 30:
                    raise self.field_fail(
                        spec, part, f"the offset from the last day must be 0-30, not {offset}"
                    )
                return _DomRule("last_weekday" if last.group(2) else "last", number=offset)
            nearest = _DOM_NEAREST.fullmatch(part)
            if nearest:
                day = int(nearest.group(1))
                if not 1 <= day <= 31:
                    raise self.field_fail(
                        spec, part, f"'W' needs a single day 1-31 (e.g. 15W), not {day}"
                    )
                return _DomRule("nearest_weekday", number=day)
            raise self.field_fail(
                spec,
                part,
                "'L' and 'W' are allowed only as L, L-n, LW, L-nW or nW (n a day 1-31), "
                "standing alone in the field",
            )
        if part == "*":
            return None
        return _DomRule("days", frozenset(self.values(spec, part)))

    def quartz_dow(self, part: str) -> _DowRule | None:
        spec = _QUARTZ_DOW
        upper = part.upper()
        if "W" in upper and not self.is_name_list(spec, part):
            raise self.field_fail(spec, part, "'W' is allowed only in the day-of-month field")
        if "L" in upper or "#" in part:
            if "," in part:
                raise self.field_fail(
                    spec, part, "'L' and '#' cannot be combined with other days in a list"
                )
            if upper == "L":
                return _DowRule("days", frozenset({5}))  # Quartz: 'L' alone means 7 = SAT
            last = _DOW_LAST.fullmatch(part)
            if last:
                weekday = self.value(spec, last.group(1), part)
                return _DowRule("last", weekday=_py_weekdays({weekday}, 2)[0])
            nth = _DOW_NTH.fullmatch(part)
            if nth:
                weekday = self.value(spec, nth.group(1), part)
                k = int(nth.group(2))
                if not 1 <= k <= 5:
                    raise self.field_fail(
                        spec, part, f"the occurrence after '#' must be 1-5, not {k}"
                    )
                return _DowRule("nth", weekday=_py_weekdays({weekday}, 2)[0], nth=k)
            raise self.field_fail(
                spec,
                part,
                "'L' and '#' are allowed only as L, nL (last <weekday>) or n#k "
                "(k-th <weekday>), standing alone in the field",
            )
        if part == "*":
            return None
        return _DowRule("days", frozenset(_py_weekdays(self.values(spec, part), 2)))

    def check_plain(self, spec: _Field, part: str) -> None:
        """Specific messages for Quartz-only marks used where they are not allowed."""
        if "?" in part:
            raise self.field_fail(
                spec, part, "'?' is allowed only alone in day-of-month or day-of-week"
            )
        if "#" in part:
            raise self.field_fail(spec, part, "'#' is allowed only in the day-of-week field")
        upper = part.upper()
        for mark in ("L", "W"):
            if mark in upper and not self.is_name_list(spec, part):
                raise self.field_fail(
                    spec,
                    part,
                    f"'{mark}' is allowed only in the day-of-month"
                    + (" and day-of-week fields" if mark == "L" else " field"),
                )

    def is_name_list(self, spec: _Field, part: str) -> bool:
        """True when every letter run in ``part`` is one of the field's names."""
        words = re.findall(r"[A-Za-z]+", part)
        return bool(spec.names) and all(w.upper() in (spec.names or {}) for w in words)

    def sorted_values(self, spec: _Field, part: str) -> tuple[int, ...]:
        return tuple(sorted(self.values(spec, part)))

    def values(self, spec: _Field, part: str) -> set[int]:
        """The values a plain field (lists, ranges, steps, names) stands for."""
        result: set[int] = set()
        for item in part.split(","):
            if item == "":
                raise self.field_fail(spec, part, "empty item in the list")
            result |= self.item_values(spec, item, part)
        return result

    def item_values(self, spec: _Field, item: str, part: str) -> set[int]:
        match = _ITEM.fullmatch(item)
        if not match:
            raise self.field_fail(
                spec,
                part,
                f"'{item}' is not valid: use numbers"
                + (", names" if spec.names else "")
                + ", '*', lists 'a,b', ranges 'a-b' and steps 'a/n'",
            )
        base, step_text = match.group(1), match.group(2)
        step = 1
        if step_text is not None:
            step = int(step_text)
            if step < 1:
                raise self.field_fail(spec, part, "a step must be at least 1")
            if spec.max_step is not None and step > spec.max_step:
                raise self.field_fail(
                    spec,
                    part,
                    f"step {step} is beyond the field's range {spec.low}-{spec.high} "
                    f"(at most {spec.max_step})",
                )
        if base == "*":
            start, stop = spec.low, spec.high
        elif "-" in base:
            first, last = base.split("-")
            start, stop = self.value(spec, first, part), self.value(spec, last, part)
        else:
            start = self.value(spec, base, part)
            stop = spec.high if step_text is not None else start
        if stop < start:
            if not spec.wrap:
                raise self.field_fail(
                    spec, part, f"the range {start}-{stop} is reversed (start above end)"
                )
            stop += spec.wrap
        values: set[int] = set()
        for i in range(start, stop + 1, step):
            if spec.wrap and i > spec.high:
                i %= spec.wrap
                if spec.one_based and i == 0:
                    i = spec.wrap
            values.add(i)
        return values

    def value(self, spec: _Field, text: str, part: str) -> int:
        if not _VALUE.fullmatch(text):
            raise self.field_fail(spec, part, f"'{text}' is not a number")
        if text.isdigit():
            number = int(text)
            if not spec.low <= number <= spec.high:
                raise self.field_fail(
                    spec, part, f"{number} is outside {spec.low}-{spec.high}{spec.hint}"
                )
            return number
        if spec.names is None:
            raise self.field_fail(spec, part, f"'{text}' is not a number")
        named = spec.names.get(text.upper())
        if named is None:
            kind = "month" if spec is _MONTH else "day"
            raise self.field_fail(
                spec,
                part,
                f"unknown {kind} name '{text}'; use " + ", ".join(spec.names),
            )
        return named


def _py_weekdays(values: set[int], monday: int) -> list[int]:
    """Cron weekday numbers -> Python's (Monday = 0, Sunday = 6), given Monday's cron number:
    1 for Unix (0 and 7 = Sunday), 2 for Quartz (1 = SUN ... 7 = SAT)."""
    return sorted({(v - monday) % 7 for v in values})


@lru_cache(maxsize=512)
def _parse_cached(text: str, field: str) -> CronExpression:
    return _Parser(text, field).parse()
