"""Magic variables: named values that ``$(name)`` references in job texts expand to.

Three kinds of name can be referenced:

* **System variables** (read-only, never stored): ``year``, ``mon``, ``day``, ``hour``,
  ``min``, ``sec``, ``date`` and ``now``. Each is the *batch time* handed to the
  :class:`Resolver` (never the wall clock) formatted with its own pattern, in the batch
  time's own time zone.
* **User variables** of type ``time``: ``value`` is a time expression, a base reference
  followed by signed offsets (``$(now)-5h``, ``$(now)+1d-30m``, ``$(start) + 2h``); the
  result is formatted with ``format``, a Java ``SimpleDateFormat`` pattern (default
  ``yyyy-MM-dd HH:mm:ss``). The base is ``$(now)`` (any system variable denotes the batch
  time) or another time variable, whose *datetime* (not its formatted text) is offset.
  Units: ``w`` weeks and ``d`` days move the calendar (wall clock) in the batch time zone;
  ``h``, ``m`` and ``s`` move elapsed time. Offsets apply left to right.
* **User variables** of type ``string``: ``value`` is text whose own ``$(name)``
  references are expanded, recursively.

Job parameters passed to the resolver take precedence over user variables of the same name.
A parameter that shadows a *time* variable stays a time value: it is either a time
expression (``$(now)-2d``) or a date text (``$(date) 00:00:00`` or ``2024-01-31``) read with
that variable's format, falling back to ISO 8601; its value is then formatted with the
variable's format. Any other parameter is text with ``$(name)`` references expanded.
System variables cannot be shadowed.

A reference is ``$(`` + a name matching the name rule + ``)``; anything else (``$(a-b)``,
``$(``, ``$x``) is ordinary text and left as it is. Values substituted into a text are not
scanned again.

This module is pure: it imports nothing of ours except :mod:`datamill.errors` and
:mod:`datamill.domain.common`, and does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from enum import StrEnum
from functools import lru_cache
from typing import Final

from pydantic import Field, ValidationInfo, field_validator

from datamill.domain.common import NAME_RULE, NAME_RULE_TEXT, Model
from datamill.errors import DatamillError, E, field_error

__all__ = [
    "DEFAULT_TIME_FORMAT",
    "SYSTEM_VARIABLES",
    "ResolvedVariable",
    "Resolver",
    "Variable",
    "VariableIn",
    "VariableType",
    "is_system",
    "java_format",
    "referenced_names",
    "validate_definition",
]

DEFAULT_TIME_FORMAT: Final = "yyyy-MM-dd HH:mm:ss"
"""The format of a time variable that has none."""

REFERENCE: Final = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]{0,127})\)")
"""A ``$(name)`` reference; group 1 is the name."""


# --------------------------------------------------------------------------- models


class VariableType(StrEnum):
    """The kind of a user variable."""

    time = "time"
    string = "string"


class VariableIn(Model):
    """Request body to create or update a user variable (its name comes from the path)."""

    type: VariableType
    value: str = Field(
        max_length=256,
        description=(
            "time: an expression such as $(now)-5h or $(start)+1d-30m (units w, d, h, m, s); "
            "string: text that may contain $(name) references"
        ),
    )
    format: str | None = Field(
        None,
        max_length=64,
        description=(
            "time only: a Java SimpleDateFormat pattern such as yyyy-MM-dd'T'HH:mm:ss; "
            f"default {DEFAULT_TIME_FORMAT}; given with another type: 400 E18011"
        ),
    )

    @field_validator("format")
    @classmethod
    def _format_only_for_time(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if value is not None and kind is not None and kind != VariableType.time:
            raise field_error(
                E.INVALID_PARAMETER, "format is only allowed for variables of type time"
            )
        return value


class Variable(Model):
    """A variable as the API returns it: a stored user variable or a system variable."""

    name: str
    type: VariableType
    value: str
    format: str | None
    system: bool


class ResolvedVariable(Variable):
    """A variable together with its value resolved at one batch time (``GET .../{name}``)."""

    resolved: str = Field(description="the variable's value at the batch time `at`")
    at: datetime = Field(description="the batch time the value was resolved at")


def _system(name: str, value: str, fmt: str) -> Variable:
    return Variable(name=name, type=VariableType.time, value=value, format=fmt, system=True)


SYSTEM_VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in (
        _system("year", "year of the batch time", "yyyy"),
        _system("mon", "month of the batch time", "MM"),
        _system("day", "day of month of the batch time", "dd"),
        _system("hour", "hour (00-23) of the batch time", "HH"),
        _system("min", "minute of the batch time", "mm"),
        _system("sec", "second of the batch time", "ss"),
        _system("date", "date of the batch time", "yyyy-MM-dd"),
        _system("now", "the batch time", DEFAULT_TIME_FORMAT),
    )
}
"""The read-only system variables by name; ``format`` is the pattern of their value."""

_SYSTEM_FORMATS: Final[dict[str, str]] = {
    name: var.format or DEFAULT_TIME_FORMAT for name, var in SYSTEM_VARIABLES.items()
}


def is_system(name: str) -> bool:
    """Whether ``name`` is a system variable (read-only, cannot be created or shadowed)."""
    return name in _SYSTEM_FORMATS


def referenced_names(text: str) -> list[str]:
    """The distinct names ``text`` refers to with ``$(name)``, in order of first appearance."""
    if "$(" not in text:
        return []
    return list(dict.fromkeys(REFERENCE.findall(text)))


# --------------------------------------------------------------------------- syntax


class _SyntaxProblem(ValueError):
    """A time expression or format pattern that does not parse; the message says why."""


_UNIT_SECONDS: Final[dict[str, int]] = {"h": 3600, "m": 60, "s": 1}
_UNIT_DAYS: Final[dict[str, int]] = {"w": 7, "d": 1}
_EXPR_BASE: Final = re.compile(r"\s*\$\(([A-Za-z_][A-Za-z0-9_]{0,127})\)")
_EXPR_OFFSET: Final = re.compile(r"\s*([+-])\s*(\d+)([wdhms])")
_EXPR_END: Final = re.compile(r"\s*")
_MAX_OFFSET_DIGITS: Final = 9

# An offset is (is_calendar, amount): days when calendar, else seconds; signed.
_Offset = tuple[bool, int]


@lru_cache(maxsize=1024)
def _parse_expression(text: str) -> tuple[str, tuple[_Offset, ...]]:
    """Split a time expression into its base name and its offsets."""
    base = _EXPR_BASE.match(text)
    if base is None:
        raise _SyntaxProblem(
            "a time expression starts with $(now) or $(timeVariable), "
            "followed by offsets such as -5h or +1d-30m (units w, d, h, m, s)"
        )
    offsets: list[_Offset] = []
    pos = base.end()
    while True:
        end = _EXPR_END.fullmatch(text, pos)
        if end is not None:
            return base.group(1), tuple(offsets)
        offset = _EXPR_OFFSET.match(text, pos)
        if offset is None:
            rest = text[pos:].strip()
            raise _SyntaxProblem(
                f"unexpected '{rest[:20]}' at position {pos + 1}: expected an offset such as "
                "-5h or +1d (a sign, a whole number and one of the units w, d, h, m, s)"
            )
        sign, digits, unit = offset.groups()
        if len(digits.lstrip("0")) > _MAX_OFFSET_DIGITS:
            raise _SyntaxProblem(f"offset '{sign}{digits}{unit}' is too large")
        amount = int(digits) * (-1 if sign == "-" else 1)
        if unit in _UNIT_DAYS:
            offsets.append((True, amount * _UNIT_DAYS[unit]))
        else:
            offsets.append((False, amount * _UNIT_SECONDS[unit]))
        pos = offset.end()


# A compiled format: literal text, or (pattern letter, repeat count).
_Token = str | tuple[str, int]

_PATTERN_LETTERS: Final = frozenset("yMdHhmsSEaZXzD")
_PATTERN_TOKEN: Final = re.compile(r"''|'((?:[^']|'')*)'|([A-Za-z])\2*|[^A-Za-z']+|'")
_NUMERIC_LETTERS: Final = frozenset("ydHhmsSD")
_MONTHS: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_DAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@lru_cache(maxsize=1024)
def _compile_format(pattern: str) -> tuple[_Token, ...]:
    """Split a SimpleDateFormat pattern into literals and letter runs, refusing unknown letters."""
    tokens: list[_Token] = []
    for match in _PATTERN_TOKEN.finditer(pattern):
        whole, quoted, letter = match.group(0), match.group(1), match.group(2)
        if quoted is not None:
            tokens.append(quoted.replace("''", "'"))
        elif whole == "''":
            tokens.append("'")
        elif whole == "'":
            raise _SyntaxProblem(
                f"unterminated quote at position {match.start() + 1} "
                "(quote literal text as 'T'; write '' for a single quote)"
            )
        elif letter is not None:
            if letter not in _PATTERN_LETTERS:
                raise _SyntaxProblem(
                    f"unsupported pattern letter '{letter}' at position {match.start() + 1} "
                    "(supported: y M d H h m s S E a Z X z D; quote literal text as 'T')"
                )
            if letter == "X" and len(whole) > 3:
                raise _SyntaxProblem("pattern letter X repeats at most 3 times")
            tokens.append((letter, len(whole)))
        else:
            tokens.append(whole)
    # Join adjacent literals so formatting does fewer appends.
    joined: list[_Token] = []
    for token in tokens:
        if isinstance(token, str) and joined and isinstance(joined[-1], str):
            joined[-1] = joined[-1] + token
        else:
            joined.append(token)
    return tuple(joined)


def _offset_text(moment: datetime, letter: str, count: int) -> str:
    """The zone of ``moment`` for pattern letter Z, X or z."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError(f"pattern letter {letter} needs a timezone-aware datetime")
    seconds = int(offset.total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, mins = divmod(abs(seconds) // 60, 60)  # seconds of an offset are dropped, as in Java
    minutes = hours * 60 + mins
    if letter == "Z":
        return f"{sign}{hours:02d}{mins:02d}"
    if letter == "X":
        if minutes == 0:
            return "Z"
        if count == 1:
            return f"{sign}{hours:02d}"
        if count == 2:
            return f"{sign}{hours:02d}{mins:02d}"
        return f"{sign}{hours:02d}:{mins:02d}"
    name = moment.tzname()
    return name if name else f"GMT{sign}{hours:02d}:{mins:02d}"


def _format_tokens(moment: datetime, tokens: tuple[_Token, ...]) -> str:
    parts: list[str] = []
    append = parts.append
    for token in tokens:
        if isinstance(token, str):
            append(token)
            continue
        letter, count = token
        if letter == "y":
            year = moment.year % 100 if count == 2 else moment.year
            append(str(year).zfill(count))
        elif letter == "M":
            if count >= 4:
                append(_MONTHS[moment.month - 1])
            elif count == 3:
                append(_MONTHS[moment.month - 1][:3])
            else:
                append(str(moment.month).zfill(count))
        elif letter == "d":
            append(str(moment.day).zfill(count))
        elif letter == "H":
            append(str(moment.hour).zfill(count))
        elif letter == "h":
            append(str(moment.hour % 12 or 12).zfill(count))
        elif letter == "m":
            append(str(moment.minute).zfill(count))
        elif letter == "s":
            append(str(moment.second).zfill(count))
        elif letter == "S":
            append(str(moment.microsecond // 1000).zfill(count))
        elif letter == "E":
            day = _DAYS[moment.weekday()]
            append(day if count >= 4 else day[:3])
        elif letter == "a":
            append("AM" if moment.hour < 12 else "PM")
        elif letter == "D":
            append(str(moment.timetuple().tm_yday).zfill(count))
        else:  # Z, X, z
            append(_offset_text(moment, letter, count))
    return "".join(parts)


def java_format(moment: datetime, pattern: str) -> str:
    """Format ``moment`` with a Java ``SimpleDateFormat`` pattern, in English.

    Letters: ``y`` (``yy`` = last two digits), ``M`` (``MMM`` Jan, ``MMMM`` January),
    ``d``, ``H`` (0-23), ``h`` (1-12), ``m``, ``s``, ``S`` (milliseconds, zero-padded to the
    run length as Java does), ``E`` (``EEE`` Mon, ``EEEE`` Monday), ``a`` (AM/PM), ``Z``
    (+0800), ``X`` (+08, +0800, +08:00; Z for UTC), ``z`` (zone abbreviation) and ``D`` (day
    of year). A run of a numeric letter zero-pads to its length. Text in single quotes is
    literal (``''`` is one quote); other non-letters are copied. The zone letters need an
    aware ``moment`` (``ValueError`` otherwise).

    Raises :class:`DatamillError` ``E.INVALID_DATE`` (field ``format``) for any other letter
    or an unterminated quote.
    """
    try:
        tokens = _compile_format(pattern)
    except _SyntaxProblem as exc:
        raise DatamillError(
            E.INVALID_DATE, f"invalid format '{pattern}' in field 'format': {exc}", field="format"
        ) from None
    return _format_tokens(moment, tokens)


# --------------------------------------------------------------------------- parsing dates


_MONTH_NUMBER: Final[dict[str, int]] = {
    **{name.lower(): i for i, name in enumerate(_MONTHS, 1)},
    **{name[:3].lower(): i for i, name in enumerate(_MONTHS, 1)},
}
_ZONE_OFFSET: Final = re.compile(r"(?:GMT|UTC)?([+-])(\d{1,2}):?(\d{2})?")
_UTC_NAMES: Final = frozenset({"z", "utc", "gmt", "ut"})


@lru_cache(maxsize=256)
def _date_reader(pattern: str) -> tuple[re.Pattern[str], tuple[tuple[str, int], ...]]:
    """A regex that reads text written with ``pattern``; group i+1 is the i-th letter run."""
    tokens = _compile_format(pattern)
    parts: list[str] = []
    fields: list[tuple[str, int]] = []
    for i, token in enumerate(tokens):
        if isinstance(token, str):
            parts.append(re.escape(token))
            continue
        letter, count = token
        numeric = letter in _NUMERIC_LETTERS or (letter == "M" and count < 3)
        if numeric:
            following = tokens[i + 1] if i + 1 < len(tokens) else None
            adjacent = isinstance(following, tuple) and (
                following[0] in _NUMERIC_LETTERS or (following[0] == "M" and following[1] < 3)
            )
            parts.append(rf"(\d{{{count}}})" if adjacent else r"(\d+)")
        elif letter == "M":
            parts.append("(" + "|".join(_MONTHS) + "|" + "|".join(m[:3] for m in _MONTHS) + ")")
        elif letter == "E":
            parts.append("(" + "|".join(_DAYS) + "|" + "|".join(d[:3] for d in _DAYS) + ")")
        elif letter == "a":
            parts.append("(AM|PM)")
        else:  # Z, X, z
            parts.append(r"(Z|(?:GMT|UTC)?[+-]\d{1,2}(?::?\d{2})?|[A-Za-z]{1,6})")
        fields.append(token)
    return re.compile("".join(parts), re.IGNORECASE), tuple(fields)


def _read_zone(text: str) -> tzinfo | None:
    """A fixed zone from ``Z``, ``UTC``, ``+0800``, ``GMT+08:00``; ``None`` if it is a name."""
    if text.lower() in _UTC_NAMES:
        return UTC
    match = _ZONE_OFFSET.fullmatch(text)
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
    return timezone(-delta if sign == "-" else delta)


def _in_zone(naive: datetime, zone: tzinfo) -> datetime:
    """``naive`` as a wall-clock time in ``zone``; a time skipped by a DST gap moves forward."""
    aware = naive.replace(tzinfo=zone)
    return aware.astimezone(UTC).astimezone(zone)


def _two_digit_year(yy: int, reference: int) -> int:
    """Java's rule: the year within 80 years before and 20 after ``reference``."""
    year = reference - reference % 100 + yy
    if year >= reference + 20:
        year -= 100
    elif year < reference - 80:
        year += 100
    return year


def _read_date(text: str, pattern: str, batch_time: datetime) -> datetime:
    """Read ``text`` written with ``pattern`` (else ISO 8601) as a time in the batch zone.

    Fields the pattern lacks default to 1970-01-01 00:00:00 as in Java; the zone, when the
    text has none, is the batch time's. Raises :class:`_SyntaxProblem` when it cannot.
    """
    try:
        return _read_date_unchecked(text, pattern, batch_time)
    except _SyntaxProblem:
        raise
    except (ValueError, OverflowError) as exc:  # huge numbers, offsets of a day or more
        raise _SyntaxProblem(f"'{text[:64]}' is not a valid date: {exc}") from None


def _read_date_unchecked(text: str, pattern: str, batch_time: datetime) -> datetime:
    zone = batch_time.tzinfo
    assert zone is not None
    regex, fields = _date_reader(pattern)
    match = regex.fullmatch(text.strip())
    if match is None:
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            raise _SyntaxProblem(
                f"'{text[:64]}' matches neither the format '{pattern}' nor ISO 8601"
            ) from None
        try:
            return _in_zone(parsed, zone) if parsed.tzinfo is None else parsed.astimezone(zone)
        except OverflowError as exc:
            raise _SyntaxProblem(f"'{text[:64]}' is not a valid date: {exc}") from None
    year, month, day, hour, minute, second, millis = 1970, 1, 1, 0, 0, 0, 0
    hour12: int | None = None
    pm = False
    day_of_year: int | None = None
    has_month_or_day = False
    found_zone: tzinfo | None = None
    zone_names: list[str] = []
    for (letter, count), raw in zip(fields, match.groups(), strict=True):
        if letter == "y":
            year = int(raw)
            if count == 2 and len(raw) == 2:
                year = _two_digit_year(year, batch_time.year)
        elif letter == "M":
            month = int(raw) if raw.isdigit() else _MONTH_NUMBER[raw.lower()]
            has_month_or_day = True
        elif letter == "d":
            day = int(raw)
            has_month_or_day = True
        elif letter == "H":
            hour = int(raw)
        elif letter == "h":
            hour12 = int(raw)
        elif letter == "m":
            minute = int(raw)
        elif letter == "s":
            second = int(raw)
        elif letter == "S":
            millis = int(raw)
        elif letter == "a":
            pm = raw.upper() == "PM"
        elif letter == "D":
            day_of_year = int(raw)
        elif letter in "ZXz":
            found_zone = _read_zone(raw)
            if found_zone is None:
                zone_names.append(raw)
        # E is redundant with the date and ignored.
    if hour12 is not None:
        if not 1 <= hour12 <= 12:
            raise _SyntaxProblem(f"hour {hour12} is outside 1-12")
        hour = hour12 % 12 + (12 if pm else 0)
    try:
        if day_of_year is not None and not has_month_or_day:
            start = date(year, 1, 1)
            if not 1 <= day_of_year <= (date(year, 12, 31) - start).days + 1:
                raise ValueError(f"day of year {day_of_year} is out of range")
            as_date = start + timedelta(days=day_of_year - 1)
            month, day = as_date.month, as_date.day
        if millis > 999:
            raise ValueError(f"millisecond {millis} is out of range")
        naive = datetime(year, month, day, hour, minute, second, millis * 1000)
        if found_zone is None:
            moment = _in_zone(naive, zone)
        else:
            moment = naive.replace(tzinfo=found_zone).astimezone(zone)
    except (ValueError, OverflowError) as exc:
        raise _SyntaxProblem(f"'{text[:64]}' is not a valid date: {exc}") from None
    for name in zone_names:  # a zone name must be the batch zone's own abbreviation
        if name.lower() != (moment.tzname() or "").lower():
            raise _SyntaxProblem(f"unknown time zone '{name}' (use an offset such as +0800)")
    return moment


# --------------------------------------------------------------------------- definitions


def validate_definition(name: str, var: VariableIn) -> None:
    """Check a user variable's definition on its own, without looking at other variables.

    Checks the name (``E.INVALID_NAME`` / ``E.VARIABLE_READ_ONLY``, field ``name``), a time
    variable's expression (``E.INVALID_VARIABLE_VALUE``, field ``value``) and format
    (``E.INVALID_DATE``, field ``format``), and that the value does not refer to the variable
    itself (``E.VARIABLE_CYCLE``, field ``value``). Whether referenced names exist is the
    :class:`Resolver`'s business.
    """
    if not NAME_RULE.fullmatch(name):
        raise DatamillError(
            E.INVALID_NAME,
            f"invalid variable name '{name[:140]}': use {NAME_RULE_TEXT}",
            field="name",
        )
    if is_system(name):
        raise DatamillError(
            E.VARIABLE_READ_ONLY,
            f"'{name}' is a system variable: system variables are read-only",
            field="name",
        )
    if var.type == VariableType.time:
        try:
            base, _ = _parse_expression(var.value)
        except _SyntaxProblem as exc:
            raise DatamillError(
                E.INVALID_VARIABLE_VALUE,
                f"invalid time expression '{var.value}' in field 'value': {exc}",
                field="value",
            ) from None
        if base == name:
            raise DatamillError(
                E.VARIABLE_CYCLE,
                f"field 'value' makes variable '{name}' refer to itself: {name} -> {name}",
                field="value",
            )
        pattern = DEFAULT_TIME_FORMAT if var.format is None else var.format
        if not pattern:
            raise DatamillError(E.INVALID_DATE, "field 'format' must not be empty", field="format")
        try:
            _compile_format(pattern)
        except _SyntaxProblem as exc:
            raise DatamillError(
                E.INVALID_DATE,
                f"invalid format '{pattern}' in field 'format': {exc}",
                field="format",
            ) from None
    else:
        if var.format is not None:
            raise DatamillError(
                E.INVALID_PARAMETER,
                "field 'format' is only allowed for variables of type time",
                field="format",
            )
        if name in referenced_names(var.value):
            raise DatamillError(
                E.VARIABLE_CYCLE,
                f"field 'value' makes variable '{name}' refer to itself: {name} -> {name}",
                field="value",
            )


# --------------------------------------------------------------------------- resolver


_VALUE: Final = 0
_MOMENT: Final = 1
_Node = tuple[int, str]  # (_VALUE or _MOMENT, name)

_SYS, _TIME, _STRING, _PARAM_TIME, _PARAM_TEXT = range(5)


class Resolver:
    """Expands ``$(name)`` references against one batch time, user variables and job params.

    ``variables`` maps names to definitions (as stored); ``batch_time`` must be timezone-aware
    (``ValueError`` otherwise) and is what every system variable and ``$(now)`` denote;
    ``params`` are job parameters that take precedence over variables of the same name.
    Definitions are read lazily, only when referenced, and each resolved value and datetime
    is memoised for the life of the instance; resolution is iterative, so long chains of
    variables do not exhaust the stack.

    Errors (all :class:`DatamillError` with ``field`` set to the field passed in, which every
    message names): ``E.VARIABLE_UNKNOWN``, ``E.VARIABLE_CYCLE`` (the message lists the
    cycle), ``E.INVALID_VARIABLE_VALUE`` (a bad time expression, a time base that is not a
    time, a parameter that is not a date, offsets leaving years 1-9999) and
    ``E.INVALID_DATE`` (a bad format pattern). Constructing with a parameter or variable
    named like a system variable raises ``E.VARIABLE_READ_ONLY``; a parameter with an
    invalid name raises ``E.INVALID_NAME``.
    """

    __slots__ = ("_batch_time", "_kinds", "_moments", "_params", "_values", "_variables")

    def __init__(
        self,
        variables: Mapping[str, VariableIn],
        batch_time: datetime,
        params: Mapping[str, str] | None = None,
    ) -> None:
        if batch_time.tzinfo is None or batch_time.utcoffset() is None:
            raise ValueError("batch_time must be timezone-aware")
        for name in variables:
            if is_system(name):
                raise DatamillError(
                    E.VARIABLE_READ_ONLY,
                    f"variable '{name}' in field 'variables' is a read-only system variable",
                    field=f"variables.{name}",
                )
        params = dict(params or {})
        for name in params:
            if is_system(name):
                raise DatamillError(
                    E.VARIABLE_READ_ONLY,
                    f"parameter '{name}' in field 'params' would shadow a system variable",
                    field=f"params.{name}",
                )
            if not NAME_RULE.fullmatch(name):
                raise DatamillError(
                    E.INVALID_NAME,
                    f"invalid parameter name '{name[:140]}' in field 'params': "
                    f"use {NAME_RULE_TEXT}",
                    field=f"params.{name[:140]}",
                )
        self._variables = variables
        self._batch_time = batch_time
        self._params = params
        self._values: dict[str, str] = {}
        self._moments: dict[str, datetime] = {}
        self._kinds: dict[str, int | None] = {}

    # -- public

    def value(self, name: str, field: str = "name") -> str:
        """The resolved text of variable or parameter ``name`` (a time is formatted)."""
        node: _Node = (_VALUE, name)
        if name not in self._values:
            self._resolve(node, field)
        return self._values[name]

    def moment(self, name: str, field: str = "name") -> datetime:
        """The datetime of a time variable, a parameter shadowing one, or a system variable."""
        if name not in self._moments:
            self._resolve((_MOMENT, name), field)
        return self._moments[name]

    def expand(self, text: str, field: str) -> str:
        """``text`` with every ``$(name)`` reference replaced by that name's value."""
        if "$(" not in text:
            return text
        for name in referenced_names(text):
            if name not in self._values:
                self._resolve((_VALUE, name), field)
        values = self._values
        return REFERENCE.sub(lambda m: values[m.group(1)], text)

    def check(self, text: str, field: str) -> None:
        """Raise what :meth:`expand` would raise for ``text``; the expansion is discarded."""
        self.expand(text, field)

    # -- resolution

    def _kind(self, name: str) -> int | None:
        """What ``name`` denotes (``_SYS``, ``_TIME``, ...), or ``None`` when it is unknown."""
        if name in self._kinds:
            return self._kinds[name]
        defined = self._variables.get(name)
        kind: int | None
        if is_system(name):
            kind = _SYS
        elif name in self._params:
            time = defined is not None and defined.type == VariableType.time
            kind = _PARAM_TIME if time else _PARAM_TEXT
        elif defined is None:
            kind = None
        else:
            kind = _TIME if defined.type == VariableType.time else _STRING
        self._kinds[name] = kind
        return kind

    def _done(self, node: _Node) -> bool:
        return node[1] in (self._values if node[0] == _VALUE else self._moments)

    def _resolve(self, goal: _Node, field: str) -> None:
        """Compute ``goal`` and everything it needs, depth first, without recursion."""
        if self._kind(goal[1]) is None:
            raise DatamillError(
                E.VARIABLE_UNKNOWN,
                f"field '{field}' refers to unknown variable '{goal[1]}'",
                field=field,
            )
        stack: list[_Node] = [goal]
        on_stack: set[_Node] = {goal}
        deps_of: dict[_Node, list[_Node]] = {}
        while stack:
            node = stack[-1]
            deps = deps_of.get(node)
            if deps is None:
                deps = deps_of[node] = self._deps(node, stack, field)
            pending: _Node | None = None
            for dep in deps:
                if self._done(dep):
                    continue
                if dep in on_stack:
                    raise self._cycle(stack, dep, field)
                pending = dep
                break
            if pending is not None:
                stack.append(pending)
                on_stack.add(pending)
                continue
            self._compute(node, stack, field)
            stack.pop()
            on_stack.discard(node)

    def _deps(self, node: _Node, stack: list[_Node], field: str) -> list[_Node]:
        what, name = node
        kind = self._kind(name)
        names: list[str]
        if kind == _SYS:
            return []
        if what == _VALUE and kind in (_TIME, _PARAM_TIME):
            return [(_MOMENT, name)]
        if what == _VALUE:  # string variable or plain parameter
            names = referenced_names(self._text(name))
            wanted = _VALUE
        elif kind == _TIME or (kind == _PARAM_TIME and self._param_expression(name)):
            names = [self._expression(name, stack, field)[0]]
            wanted = _MOMENT
        elif kind == _PARAM_TIME:  # a date text, possibly with references
            names = referenced_names(self._params[name])
            wanted = _VALUE
        else:
            raise DatamillError(
                E.INVALID_VARIABLE_VALUE,
                f"{self._where(stack, field)}: {self._label(name)} is text, not a time; "
                "a time expression's base must be $(now) or a time variable",
                field=field,
            )
        for ref in names:
            if self._kind(ref) is None:
                raise DatamillError(
                    E.VARIABLE_UNKNOWN,
                    f"{self._where(stack, field)}: {self._label(name)} refers to unknown "
                    f"variable '{ref}'",
                    field=field,
                )
        return [(wanted, ref) for ref in names]

    def _compute(self, node: _Node, stack: list[_Node], field: str) -> None:
        what, name = node
        kind = self._kind(name)
        if kind == _SYS:
            if what == _MOMENT:
                self._moments[name] = self._batch_time
            else:
                self._values[name] = _format_tokens(
                    self._batch_time, _compile_format(_SYSTEM_FORMATS[name])
                )
        elif what == _VALUE and kind in (_TIME, _PARAM_TIME):
            self._values[name] = self._format(name, self._moments[name], stack, field)
        elif what == _VALUE:
            text = self._text(name)
            values = self._values
            self._values[name] = (
                REFERENCE.sub(lambda m: values[m.group(1)], text) if "$(" in text else text
            )
        elif kind == _TIME or self._param_expression(name):
            base, offsets = self._expression(name, stack, field)
            self._moments[name] = self._shift(name, self._moments[base], offsets, stack, field)
        else:  # a parameter's date text shadowing a time variable
            pattern = self._pattern(name)
            self._tokens(name, stack, field)  # a bad format is E.INVALID_DATE
            text = self._params[name]
            values = self._values
            expanded = REFERENCE.sub(lambda m: values[m.group(1)], text)
            try:
                self._moments[name] = _read_date(expanded, pattern, self._batch_time)
            except _SyntaxProblem as exc:
                raise DatamillError(
                    E.INVALID_VARIABLE_VALUE,
                    f"{self._where(stack, field)}: {self._label(name)} is neither a time "
                    f"expression nor a date: {exc}",
                    field=field,
                ) from None

    # -- helpers

    def _text(self, name: str) -> str:
        if name in self._params:
            return self._params[name]
        return self._variables[name].value

    def _pattern(self, name: str) -> str:
        fmt = self._variables[name].format
        return DEFAULT_TIME_FORMAT if fmt is None else fmt

    def _param_expression(self, name: str) -> bool:
        try:
            _parse_expression(self._params[name])
        except _SyntaxProblem:
            return False
        return True

    def _expression(
        self, name: str, stack: list[_Node], field: str
    ) -> tuple[str, tuple[_Offset, ...]]:
        text = self._text(name)
        try:
            return _parse_expression(text)
        except _SyntaxProblem as exc:
            raise DatamillError(
                E.INVALID_VARIABLE_VALUE,
                f"{self._where(stack, field)}: {self._label(name)} has an invalid time "
                f"expression '{text[:64]}': {exc}",
                field=field,
            ) from None

    def _tokens(self, name: str, stack: list[_Node], field: str) -> tuple[_Token, ...]:
        pattern = self._pattern(name)
        try:
            return _compile_format(pattern)
        except _SyntaxProblem as exc:
            raise DatamillError(
                E.INVALID_DATE,
                f"{self._where(stack, field)}: {self._label(name)} has an invalid format "
                f"'{pattern}': {exc}",
                field=field,
            ) from None

    def _format(self, name: str, moment: datetime, stack: list[_Node], field: str) -> str:
        return _format_tokens(moment, self._tokens(name, stack, field))

    def _shift(
        self,
        name: str,
        moment: datetime,
        offsets: tuple[_Offset, ...],
        stack: list[_Node],
        field: str,
    ) -> datetime:
        zone = moment.tzinfo
        assert zone is not None
        try:
            for calendar, amount in offsets:
                if calendar:
                    naive = moment.replace(tzinfo=None) + timedelta(days=amount)
                    moment = _in_zone(naive, zone)
                else:
                    moment = (moment.astimezone(UTC) + timedelta(seconds=amount)).astimezone(zone)
        except OverflowError:
            raise DatamillError(
                E.INVALID_VARIABLE_VALUE,
                f"{self._where(stack, field)}: the offsets of {self._label(name)} leave "
                "the supported years 1-9999",
                field=field,
            ) from None
        return moment

    def _label(self, name: str) -> str:
        return f"parameter '{name}'" if name in self._params else f"variable '{name}'"

    @staticmethod
    def _where(stack: list[_Node], field: str) -> str:
        chain = _names(stack)
        if len(chain) <= 1:
            return f"field '{field}'"
        return f"field '{field}' (via {' -> '.join(chain)})"

    @staticmethod
    def _cycle(stack: list[_Node], dep: _Node, field: str) -> DatamillError:
        path = _names([*stack[stack.index(dep) :], dep])
        if len(path) == 1:
            path = path * 2
        return DatamillError(
            E.VARIABLE_CYCLE,
            f"field '{field}': variables refer to each other in a cycle: {' -> '.join(path)}",
            field=field,
        )


def _names(nodes: list[_Node]) -> list[str]:
    """The names along a chain of nodes, without a name repeated back to back."""
    names: list[str] = []
    for _, name in nodes:
        if not names or names[-1] != name:
            names.append(name)
    return names
