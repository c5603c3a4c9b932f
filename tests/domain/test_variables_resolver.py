"""Magic variables: system variables, time expressions, formats, references and the resolver."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from datamill.domain.variables import (
    SYSTEM_VARIABLES,
    Resolver,
    Variable,
    VariableIn,
    VariableType,
    is_system,
    java_format,
    referenced_names,
    validate_definition,
)
from datamill.errors import DatamillError, E

UTC_BATCH = datetime(2024, 3, 5, 7, 8, 9, 123456, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")
SHANGHAI = ZoneInfo("Asia/Shanghai")


def time(value: str, fmt: str | None = None) -> VariableIn:
    return VariableIn(type=VariableType.time, value=value, format=fmt)


def text(value: str) -> VariableIn:
    return VariableIn(type=VariableType.string, value=value)


def raises(error: E, call: object, *args: object, **kwargs: object) -> DatamillError:
    assert callable(call)
    with pytest.raises(DatamillError) as info:
        call(*args, **kwargs)
    assert info.value.error is error, info.value.message
    return info.value


# --------------------------------------------------------------------------- system variables


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("year", "2024"),
        ("mon", "03"),
        ("day", "05"),
        ("hour", "07"),
        ("min", "08"),
        ("sec", "09"),
        ("date", "2024-03-05"),
        ("now", "2024-03-05 07:08:09"),
    ],
)
def test_system_variable_at_utc_batch_time(name: str, expected: str) -> None:
    resolver = Resolver({}, UTC_BATCH)
    assert resolver.value(name) == expected
    assert resolver.expand(f"<$({name})>", "sql") == f"<{expected}>"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("year", "2024"),
        ("mon", "12"),
        ("day", "31"),
        ("hour", "22"),
        ("min", "30"),
        ("sec", "05"),
        ("date", "2024-12-31"),
        ("now", "2024-12-31 22:30:05"),
    ],
)
def test_system_variable_uses_the_batch_times_own_zone(name: str, expected: str) -> None:
    # 2024-12-31 22:30:05 in New York is already 2025-01-01 03:30:05 in UTC.
    batch = datetime(2024, 12, 31, 22, 30, 5, tzinfo=NEW_YORK)
    assert batch.astimezone(UTC).year == 2025
    assert Resolver({}, batch).value(name) == expected


def test_system_variables_catalogue() -> None:
    assert set(SYSTEM_VARIABLES) == {"year", "mon", "day", "hour", "min", "sec", "date", "now"}
    for name, var in SYSTEM_VARIABLES.items():
        assert isinstance(var, Variable)
        assert var.name == name
        assert var.system is True
        assert var.type is VariableType.time
        assert var.format
        assert is_system(name)
    assert not is_system("start")
    assert not is_system("NOW")


def test_system_moment_is_the_batch_time_not_the_wall_clock() -> None:
    batch = datetime(1999, 1, 2, 3, 4, 5, tzinfo=SHANGHAI)
    resolver = Resolver({}, batch)
    assert resolver.moment("now") == batch
    assert resolver.moment("date") == batch
    assert resolver.value("now") == "1999-01-02 03:04:05"


def test_naive_batch_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Resolver({}, datetime(2024, 1, 1))


# --------------------------------------------------------------------------- offsets


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("$(now)", "2024-03-05 07:08:09"),
        ("$(now)-5h", "2024-03-05 02:08:09"),
        ("$(now)+1d-30m", "2024-03-06 06:38:09"),
        ("$(now) + 2h - 15m", "2024-03-05 08:53:09"),
        ("  $(now)\t-\t1s  ", "2024-03-05 07:08:08"),
        ("$(now)+1w", "2024-03-12 07:08:09"),
        ("$(now)-8h-8m-9s", "2024-03-04 23:00:00"),
        ("$(now)+0d", "2024-03-05 07:08:09"),
        ("$(now)-0005d", "2024-02-29 07:08:09"),
    ],
)
def test_offsets(expression: str, expected: str) -> None:
    assert Resolver({"t": time(expression)}, UTC_BATCH).value("t") == expected


@pytest.mark.parametrize(
    ("batch", "expression", "expected"),
    [
        (datetime(2023, 12, 31, 23, 0, tzinfo=UTC), "$(now)+1h", "2024-01-01 00:00:00"),
        (datetime(2024, 1, 1, 0, 30, tzinfo=UTC), "$(now)-31m", "2023-12-31 23:59:00"),
        (datetime(2024, 1, 31, 12, 0, tzinfo=UTC), "$(now)+1d", "2024-02-01 12:00:00"),
        (datetime(2024, 3, 1, 0, 0, tzinfo=UTC), "$(now)-1s", "2024-02-29 23:59:59"),
        (datetime(2024, 2, 28, 12, 0, tzinfo=UTC), "$(now)+1d", "2024-02-29 12:00:00"),
        (datetime(2024, 2, 29, 12, 0, tzinfo=UTC), "$(now)+1d", "2024-03-01 12:00:00"),
        (datetime(2023, 2, 28, 12, 0, tzinfo=UTC), "$(now)+1d", "2023-03-01 12:00:00"),
        (datetime(2024, 2, 29, 12, 0, tzinfo=UTC), "$(now)+365d", "2025-02-28 12:00:00"),
        (datetime(2025, 1, 1, 0, 0, tzinfo=UTC), "$(now)-1w", "2024-12-25 00:00:00"),
    ],
)
def test_offsets_across_month_year_and_leap_day(
    batch: datetime, expression: str, expected: str
) -> None:
    assert Resolver({"t": time(expression)}, batch).value("t") == expected


def test_hours_are_elapsed_time_and_days_are_calendar_days_across_dst() -> None:
    # New York springs forward at 2024-03-10 02:00 EST -> 03:00 EDT.
    batch = datetime(2024, 3, 10, 1, 30, tzinfo=NEW_YORK)
    resolver = Resolver(
        {
            "h": time("$(now)+1h", "yyyy-MM-dd HH:mm z"),
            "d": time("$(now)+1d", "yyyy-MM-dd HH:mm z"),
            "h24": time("$(now)+24h", "yyyy-MM-dd HH:mm z"),
        },
        batch,
    )
    assert resolver.value("h") == "2024-03-10 03:30 EDT"
    assert resolver.value("d") == "2024-03-11 01:30 EDT"
    assert resolver.value("h24") == "2024-03-11 02:30 EDT"
    # Subtracting two datetimes of one zone compares wall clocks, so compare in UTC.
    assert resolver.moment("h").astimezone(UTC) - batch.astimezone(UTC) == timedelta(hours=1)


def test_a_day_offset_into_a_dst_gap_moves_forward() -> None:
    batch = datetime(2024, 3, 9, 2, 30, tzinfo=NEW_YORK)  # 2024-03-10 02:30 does not exist
    assert Resolver({"t": time("$(now)+1d")}, batch).value("t") == "2024-03-10 03:30:00"


def test_offsets_beyond_year_9999_are_an_invalid_value() -> None:
    resolver = Resolver({"far": time("$(now)+999999999d")}, UTC_BATCH)
    err = raises(E.INVALID_VARIABLE_VALUE, resolver.expand, "x $(far)", "sql")
    assert err.field == "sql"
    assert "'sql'" in err.message
    assert "far" in err.message


# --------------------------------------------------------------------------- chains and text


def test_chained_time_variable_offsets_the_datetime_not_the_text() -> None:
    resolver = Resolver(
        {
            "start": time("$(now)-1d", "yyyy-MM-dd"),
            "end": time("$(start) + 2h", "yyyy-MM-dd HH:mm"),
            "after": time("$(end)+30m", "HH:mm:ss"),
        },
        UTC_BATCH,
    )
    assert resolver.value("start") == "2024-03-04"
    # Had the offset applied to the text "2024-03-04", the time would be 02:00.
    assert resolver.value("end") == "2024-03-04 09:08"
    assert resolver.value("after") == "09:38:09"
    assert resolver.moment("after") == UTC_BATCH - timedelta(days=1) + timedelta(hours=2.5)


def test_any_system_variable_can_be_a_time_base() -> None:
    resolver = Resolver({"t": time("$(date)+1d", "yyyy-MM-dd HH")}, UTC_BATCH)
    assert resolver.value("t") == "2024-03-06 07"


def test_string_variables_expand_references_recursively() -> None:
    resolver = Resolver(
        {
            "start": time("$(now)-1h", "HH:mm"),
            "root": text("s3://bucket/$(year)"),
            "path": text("$(root)/$(mon)/$(day)/from-$(start)"),
            "query": text("select * from t where p = '$(path)' and d = '$(date)'"),
        },
        UTC_BATCH,
    )
    assert resolver.value("path") == "s3://bucket/2024/03/05/from-06:08"
    assert resolver.expand("-- $(query)", "sql") == (
        "-- select * from t where p = 's3://bucket/2024/03/05/from-06:08' and d = '2024-03-05'"
    )


def test_expand_leaves_non_references_alone_and_does_not_rescan_values() -> None:
    resolver = Resolver({"dollar": text("$"), "empty": text("")}, UTC_BATCH)
    assert resolver.expand("no references here", "sql") == "no references here"
    assert resolver.expand("$(a-b) $( now) $(now $x ${now} $(", "sql") == (
        "$(a-b) $( now) $(now $x ${now} $("
    )
    # "$(dollar)(now)" becomes "$(now)", which is not expanded again.
    assert resolver.expand("$(dollar)(now)", "sql") == "$(now)"
    assert resolver.expand("[$(empty)]", "sql") == "[]"
    assert resolver.expand("$$(year)", "sql") == "$2024"


def test_referenced_names_are_distinct_and_in_order() -> None:
    assert referenced_names("$(b) $(a) $(b) $(_c9) $(9x) $(a-b) $()") == ["b", "a", "_c9"]
    assert referenced_names("plain") == []
    long_name = "x" * 128
    assert referenced_names(f"$({long_name})") == [long_name]
    assert referenced_names(f"$({long_name}x)") == []


def test_check_raises_like_expand_and_returns_nothing() -> None:
    resolver = Resolver({"ok": text("$(date)")}, UTC_BATCH)
    resolver.check("$(ok)", "sql")  # resolves without an error
    assert resolver.value("ok") == "2024-03-05"
    err = raises(E.VARIABLE_UNKNOWN, resolver.check, "$(ok) $(missing)", "sql")
    assert err.field == "sql"


# --------------------------------------------------------------------------- params


def test_params_take_precedence_over_variables() -> None:
    resolver = Resolver(
        {"table": text("events"), "q": text("select from $(table) on $(extra)")},
        UTC_BATCH,
        params={"table": "events_$(year)", "extra": "x"},
    )
    assert resolver.value("table") == "events_2024"
    assert resolver.expand("$(q)", "sql") == "select from events_2024 on x"


def test_param_shadowing_a_time_variable_is_read_with_its_format() -> None:
    variables = {
        "start": time("$(now)-1d", "yyyyMMdd"),
        "end": time("$(start)+1d", "yyyy-MM-dd"),
    }
    resolver = Resolver(variables, UTC_BATCH, params={"start": "20240229"})
    assert resolver.value("start") == "20240229"
    assert resolver.value("end") == "2024-03-01"
    assert resolver.moment("start") == datetime(2024, 2, 29, tzinfo=UTC)


@pytest.mark.parametrize(
    ("param", "start", "end"),
    [
        ("$(now)-2d", "2024-03-03 07:08:09", "2024-03-03 08:08"),
        ("$(date) 00:00:00", "2024-03-05 00:00:00", "2024-03-05 01:00"),
        ("2024-01-31", "2024-01-31 00:00:00", "2024-01-31 01:00"),  # ISO 8601 fallback
        ("2024-01-31T22:00:00-05:00", "2024-02-01 03:00:00", "2024-02-01 04:00"),
    ],
)
def test_param_shadowing_a_time_variable_accepts_expressions_and_dates(
    param: str, start: str, end: str
) -> None:
    variables = {"start": time("$(now)-1d"), "end": time("$(start)+1h", "yyyy-MM-dd HH:mm")}
    resolver = Resolver(variables, UTC_BATCH, params={"start": param})
    assert resolver.value("start") == start
    assert resolver.value("end") == end


def test_param_date_with_month_names_two_digit_year_and_twelve_hour_clock() -> None:
    variables = {"t": time("$(now)", "dd MMM yy hh:mm a")}
    resolver = Resolver(
        variables, datetime(2030, 1, 1, tzinfo=SHANGHAI), {"t": "05 mar 24 01:15 PM"}
    )
    assert resolver.moment("t") == datetime(2024, 3, 5, 13, 15, tzinfo=SHANGHAI)
    assert resolver.value("t") == "05 Mar 24 01:15 PM"


def test_param_that_is_not_a_date_is_an_invalid_value() -> None:
    resolver = Resolver({"start": time("$(now)", "yyyy-MM-dd")}, UTC_BATCH, {"start": "soon"})
    err = raises(E.INVALID_VARIABLE_VALUE, resolver.expand, "$(start)", "sql")
    assert err.field == "sql"
    assert "'sql'" in err.message
    assert "parameter 'start'" in err.message


def test_params_cannot_shadow_system_variables() -> None:
    err = raises(E.VARIABLE_READ_ONLY, Resolver, {}, UTC_BATCH, {"now": "yesterday"})
    assert err.field == "params.now"
    err = raises(E.VARIABLE_READ_ONLY, Resolver, {"date": text("x")}, UTC_BATCH)
    assert err.field == "variables.date"


def test_param_names_follow_the_name_rule() -> None:
    err = raises(E.INVALID_NAME, Resolver, {}, UTC_BATCH, {"bad-name": "x"})
    assert err.field == "params.bad-name"


# --------------------------------------------------------------------------- unknown names


def test_unknown_name_in_text() -> None:
    resolver = Resolver({}, UTC_BATCH)
    err = raises(E.VARIABLE_UNKNOWN, resolver.expand, "select $(nope)", "jobs.sql")
    assert err.field == "jobs.sql"
    assert "'nope'" in err.message
    assert "'jobs.sql'" in err.message


def test_unknown_name_deep_in_a_chain_names_the_chain() -> None:
    resolver = Resolver({"a": text("$(b)"), "b": text("x $(ghost)")}, UTC_BATCH)
    err = raises(E.VARIABLE_UNKNOWN, resolver.expand, "$(a)", "target")
    assert err.field == "target"
    assert "'ghost'" in err.message
    assert "'target'" in err.message
    assert "a -> b" in err.message


def test_unknown_time_base_and_unknown_value_lookup() -> None:
    resolver = Resolver({"t": time("$(nobody)+1h")}, UTC_BATCH)
    err = raises(E.VARIABLE_UNKNOWN, resolver.value, "t", "where")
    assert err.field == "where"
    assert "'nobody'" in err.message
    err = raises(E.VARIABLE_UNKNOWN, resolver.value, "absent")
    assert err.field == "name"
    assert "'absent'" in err.message
    err = raises(E.VARIABLE_UNKNOWN, resolver.moment, "absent", "base")
    assert err.field == "base"


def test_string_variable_is_not_a_time_base() -> None:
    resolver = Resolver({"s": text("2024-01-01"), "t": time("$(s)+1d")}, UTC_BATCH)
    err = raises(E.INVALID_VARIABLE_VALUE, resolver.expand, "$(t)", "sql")
    assert err.field == "sql"
    assert "'s'" in err.message
    err = raises(E.INVALID_VARIABLE_VALUE, resolver.moment, "s", "when")
    assert err.field == "when"


# --------------------------------------------------------------------------- cycles


@pytest.mark.parametrize(
    ("variables", "cycle"),
    [
        ({"a": text("x$(a)")}, "a -> a"),
        ({"a": time("$(a)+1h")}, "a -> a"),
        ({"a": text("$(b)"), "b": text("$(a)")}, "a -> b -> a"),
        ({"a": time("$(b)"), "b": time("$(a)-1d")}, "a -> b -> a"),
        ({"a": text("$(b)"), "b": text("$(c)"), "c": text("$(a)")}, "a -> b -> c -> a"),
        ({"a": text("$(t)"), "t": time("$(u)"), "u": time("$(t)")}, "t -> u -> t"),
    ],
)
def test_cycles(variables: dict[str, VariableIn], cycle: str) -> None:
    resolver = Resolver(variables, UTC_BATCH)
    err = raises(E.VARIABLE_CYCLE, resolver.expand, "$(a)", "sql")
    assert err.field == "sql"
    assert cycle in err.message
    assert "'sql'" in err.message


def test_cycle_through_a_param() -> None:
    resolver = Resolver({"p": text("fine")}, UTC_BATCH, {"p": "again $(q)", "q": "$(p)"})
    err = raises(E.VARIABLE_CYCLE, resolver.value, "p", "params")
    assert "p -> q -> p" in err.message
    assert err.field == "params"


def test_cycle_elsewhere_does_not_break_unrelated_text() -> None:
    resolver = Resolver({"a": text("$(b)"), "b": text("$(a)"), "ok": text("$(day)")}, UTC_BATCH)
    assert resolver.expand("$(ok)", "sql") == "05"
    raises(E.VARIABLE_CYCLE, resolver.expand, "$(ok)$(b)", "sql")


# --------------------------------------------------------------------------- malformed definitions

BAD_EXPRESSIONS = [
    "",
    "now-5h",
    "$(now",
    "$(now)-5",
    "$(now)-5x",
    "$(now)5h",
    "$(now)--5h",
    "$(now)-5 h",
    "$(now)-1.5h",
    "$(now)-5H",
    "$(1now)",
    "$(now)+1d junk",
    "$(now)+1234567890d",
    "2024-01-01",
]


@pytest.mark.parametrize("expression", BAD_EXPRESSIONS)
def test_malformed_time_expression_in_definition(expression: str) -> None:
    err = raises(E.INVALID_VARIABLE_VALUE, validate_definition, "t", time(expression))
    assert err.field == "value"
    assert "'value'" in err.message


@pytest.mark.parametrize("expression", BAD_EXPRESSIONS)
def test_malformed_time_expression_when_resolving(expression: str) -> None:
    resolver = Resolver({"t": time(expression)}, UTC_BATCH)
    err = raises(E.INVALID_VARIABLE_VALUE, resolver.expand, "at $(t)", "job.sql")
    assert err.field == "job.sql"
    assert "'job.sql'" in err.message
    assert "'t'" in err.message


BAD_FORMATS = [
    "yyyy-MM-ddTHH:mm",
    "yyyy-MM-dd'T",
    "'",
    "qqq",
    "YYYY",
    "XXXX",
    "u",
    "yyyy-MM-dd HH:mm:ss.nnn",
]


@pytest.mark.parametrize("pattern", BAD_FORMATS)
def test_malformed_format_in_definition(pattern: str) -> None:
    err = raises(E.INVALID_DATE, validate_definition, "t", time("$(now)", pattern))
    assert err.field == "format"
    assert "'format'" in err.message


@pytest.mark.parametrize("pattern", BAD_FORMATS)
def test_malformed_format_when_resolving_and_formatting(pattern: str) -> None:
    resolver = Resolver({"t": time("$(now)", pattern)}, UTC_BATCH)
    err = raises(E.INVALID_DATE, resolver.value, "t", "body.sql")
    assert err.field == "body.sql"
    assert "'body.sql'" in err.message
    err = raises(E.INVALID_DATE, java_format, UTC_BATCH, pattern)
    assert err.field == "format"


def test_malformed_format_of_a_shadowed_time_variable_is_invalid_date() -> None:
    resolver = Resolver({"t": time("$(now)", "yyyy-QQ")}, UTC_BATCH, {"t": "2024-01"})
    err = raises(E.INVALID_DATE, resolver.value, "t", "sql")
    assert err.field == "sql"


def test_validate_definition_accepts_good_definitions() -> None:
    validate_definition("start", time("$(now)-1d", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"))
    validate_definition("end", time("$(start) + 2h"))
    validate_definition("path", text("s3://b/$(start)/$(unknown_is_fine_here)"))
    # Reaching here without an exception is the assertion; prove the checker can fail too:
    raises(E.INVALID_VARIABLE_VALUE, validate_definition, "start", time("$(now)-1y"))


def test_validate_definition_checks_name_and_self_reference() -> None:
    err = raises(E.INVALID_NAME, validate_definition, "9lives", text("x"))
    assert err.field == "name"
    err = raises(E.VARIABLE_READ_ONLY, validate_definition, "now", time("$(now)"))
    assert err.field == "name"
    err = raises(E.VARIABLE_CYCLE, validate_definition, "me", text("hi $(me)"))
    assert err.field == "value"
    assert "me -> me" in err.message
    err = raises(E.VARIABLE_CYCLE, validate_definition, "t", time("$(t)-1d"))
    assert err.field == "value"
    err = raises(E.INVALID_DATE, validate_definition, "t", time("$(now)", ""))
    assert err.field == "format"


def test_variable_in_model_rules() -> None:
    with pytest.raises(ValidationError) as info:
        VariableIn(type=VariableType.string, value="x", format="yyyy")
    assert [e["loc"] for e in info.value.errors()] == [("format",)]
    assert info.value.errors()[0]["type"] == "E18011"
    with pytest.raises(ValidationError) as info:
        VariableIn.model_validate({"type": "time", "value": "$(now)" + "+1s" * 100})
    assert info.value.errors()[0]["loc"] == ("value",)
    with pytest.raises(ValidationError) as info:
        VariableIn.model_validate({"type": "time", "value": "$(now)", "format": "y" * 65})
    assert info.value.errors()[0]["loc"] == ("format",)
    with pytest.raises(ValidationError):
        VariableIn.model_validate({"type": "number", "value": "1"})
    with pytest.raises(ValidationError):
        VariableIn.model_validate({"type": "string", "value": "1", "name": "x"})
    ok = VariableIn.model_validate({"type": "time", "value": "$(now)", "format": "yyyy"})
    assert ok.format == "yyyy"
    assert VariableIn.model_validate({"type": "string", "value": "v"}).format is None


# --------------------------------------------------------------------------- java_format

MOMENT = datetime(2024, 3, 5, 7, 8, 9, 45678, tzinfo=timezone(timedelta(hours=5, minutes=30)))


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("yyyy-MM-dd HH:mm:ss", "2024-03-05 07:08:09"),
        ("yy/M/d H:m:s", "24/3/5 7:8:9"),
        ("y yyyyy", "2024 02024"),
        ("MMM MMMM", "Mar March"),
        ("EEE EEEE E", "Tue Tuesday Tue"),
        ("hh h a", "07 7 AM"),
        ("SSS S", "045 45"),
        ("Z", "+0530"),
        ("X XX XXX", "+05 +0530 +05:30"),
        ("z", "UTC+05:30"),
        ("D DDD", "65 065"),
        ("yyyy-MM-dd'T'HH:mm:ss.SSSXXX", "2024-03-05T07:08:09.045+05:30"),
        ("'week of' yyyy", "week of 2024"),
        ("h 'o''clock'", "7 o'clock"),
        ("''yy''", "'24'"),
        ("'it''s' a", "it's AM"),
        ("yyyy_MM_dd, HH#mm ü", "2024_03_05, 07#08 ü"),
        ("", ""),
    ],
)
def test_java_format(pattern: str, expected: str) -> None:
    assert java_format(MOMENT, pattern) == expected


def test_java_format_noon_midnight_and_zones() -> None:
    noon = datetime(2024, 7, 1, 12, 0, tzinfo=NEW_YORK)
    midnight = datetime(2024, 7, 1, 0, 0, tzinfo=UTC)
    assert java_format(noon, "hh:mm a z Z XXX") == "12:00 PM EDT -0400 -04:00"
    assert java_format(midnight, "hh:mm a HH z X XX XXX Z") == "12:00 AM 00 UTC Z Z Z +0000"
    assert java_format(datetime(2024, 1, 1, tzinfo=SHANGHAI), "z") == "CST"


def test_java_format_zone_letters_need_an_aware_datetime() -> None:
    naive = datetime(2024, 1, 1, 13, 0)
    assert java_format(naive, "yyyy-MM-dd hh a") == "2024-01-01 01 PM"
    with pytest.raises(ValueError, match="timezone-aware"):
        java_format(naive, "Z")


def test_time_variable_default_format_and_quoted_literals() -> None:
    resolver = Resolver(
        {
            "plain": time("$(now)-1h"),
            "iso": time("$(now)", "yyyy-MM-dd'T'HH:mm:ss'Z'"),
            "path": time("$(now)", "'dt='yyyyMMdd'/hr='HH"),
        },
        UTC_BATCH,
    )
    assert resolver.value("plain") == "2024-03-05 06:08:09"
    assert resolver.value("iso") == "2024-03-05T07:08:09Z"
    assert resolver.value("path") == "dt=20240305/hr=07"


# --------------------------------------------------------------------------- performance


class CountingMapping(Mapping[str, VariableIn]):
    def __init__(self, data: dict[str, VariableIn]) -> None:
        self.data = data
        self.reads = 0

    def __getitem__(self, key: str) -> VariableIn:
        self.reads += 1
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def test_values_are_memoised_per_resolver() -> None:
    variables = CountingMapping(
        {
            "base": time("$(now)-1d", "yyyy-MM-dd"),
            "a": text("$(base)/a"),
            "b": text("$(base)/b"),
        }
    )
    resolver = Resolver(variables, UTC_BATCH)
    first = resolver.expand("$(a) $(b) $(base) " * 50, "sql")
    reads = variables.reads
    assert reads > 0
    assert resolver.expand("$(a) $(b) $(base) " * 50, "sql") == first
    assert resolver.value("base") == "2024-03-04"
    assert variables.reads == reads  # nothing was looked up again
    assert resolver.moment("base") is resolver.moment("base")


def test_long_chains_resolve_without_recursion() -> None:
    depth = 5000
    variables = {"v0": time("$(now)")}
    variables |= {f"v{i}": time(f"$(v{i - 1})+1s") for i in range(1, depth)}
    variables |= {"s0": text("x")}
    variables |= {f"s{i}": text(f"$(s{i - 1})") for i in range(1, depth)}
    resolver = Resolver(variables, UTC_BATCH)
    assert resolver.moment(f"v{depth - 1}") == UTC_BATCH + timedelta(seconds=depth - 1)
    assert resolver.value(f"s{depth - 1}") == "x"


# --------------------------------------------------------------------------- properties

batch_times = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2100, 12, 31), timezones=st.just(UTC)
)


@given(batch=batch_times, minutes=st.integers(min_value=-10_000_000, max_value=10_000_000))
def test_minute_offset_matches_timedelta(batch: datetime, minutes: int) -> None:
    sign = "+" if minutes >= 0 else "-"
    resolver = Resolver({"t": time(f"$(now){sign}{abs(minutes)}m")}, batch)
    expected = batch + timedelta(minutes=minutes)
    assert resolver.value("t") == expected.strftime("%Y-%m-%d %H:%M:%S")


@given(
    batch=st.datetimes(
        min_value=datetime(1970, 1, 1),
        max_value=datetime(2100, 12, 31),
        timezones=st.sampled_from([NEW_YORK, SHANGHAI, ZoneInfo("Europe/London")]),
    ),
    seconds=st.integers(min_value=-(10**8), max_value=10**8),
)
def test_second_offsets_are_elapsed_time_in_any_zone(batch: datetime, seconds: int) -> None:
    sign = "+" if seconds >= 0 else "-"
    resolver = Resolver({"t": time(f"$(now) {sign} {abs(seconds)}s")}, batch)
    expected = (batch.astimezone(UTC) + timedelta(seconds=seconds)).astimezone(batch.tzinfo)
    assert resolver.moment("t") == expected
    assert resolver.value("t") == expected.strftime("%Y-%m-%d %H:%M:%S")


@given(
    moment=st.datetimes(
        min_value=datetime(1000, 1, 1),
        max_value=datetime(9999, 12, 31),
        timezones=st.integers(min_value=-14 * 60, max_value=14 * 60).map(
            lambda m: timezone(timedelta(minutes=m))
        ),
    )
)
def test_java_format_matches_strftime(moment: datetime) -> None:
    pattern = "yyyy-MM-dd'T'HH:mm:ss.SSS Z EEE EEEE MMM MMMM a hh DDD"
    expected = (
        moment.strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{moment.microsecond // 1000:03d} "
        + moment.strftime("%z %a %A %b %B %p %I %j")
    )
    assert java_format(moment, pattern) == expected


@given(
    moment=st.datetimes(
        min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    ),
    pattern=st.sampled_from(
        ["yyyy-MM-dd HH:mm:ss.SSS", "yyyyMMddHHmmssSSS", "dd MMMM yyyy hh:mm:ss.SSS a XXX"]
    ),
)
def test_param_dates_round_trip_through_the_format(moment: datetime, pattern: str) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    param = java_format(moment, pattern)
    resolver = Resolver({"t": time("$(now)", pattern)}, UTC_BATCH, {"t": param})
    assert resolver.moment("t") == moment
    assert resolver.value("t") == param
