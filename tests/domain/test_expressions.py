"""The streaming expression language: parsing, type checks, SQL, and hostile input.

Compiled expressions are run in a locked-down DuckDB connection (the one batch jobs use)
over a one-row table, so every function the compiler emits is proven to exist there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from datamill.domain.expressions import (
    MAX_DEPTH,
    MAX_LENGTH,
    ExpressionError,
    FieldType,
    Loose,
    Scope,
    Symbol,
    combine,
    compile_condition,
    compile_expression,
    compile_predicate,
    parse,
    parse_path,
)
from datamill.engines.duckdb import Sandbox, connect_locked, identifier
from datamill.engines.duckdb.streaming.render import expression_sql, sql

SCOPE = Scope(
    {
        "temp": FieldType.DOUBLE,
        "n": FieldType.INTEGER,
        "big": FieldType.LONG,
        "name": FieldType.STRING,
        "payload": FieldType.MAP,
        "items": FieldType.ARRAY,
        "ts": FieldType.TIMESTAMP,
        "ok": FieldType.BOOLEAN,
        "weird name": FieldType.STRING,
        "end": FieldType.INTEGER,
    }
)
ROW = """
CREATE TABLE t AS SELECT
    21.5::DOUBLE AS temp, 3::INTEGER AS n, 5000000000::BIGINT AS big, 'Bob'::VARCHAR AS name,
    '{"a": {"b": [7, 8]}, "x y": 1, "s": "hi"}'::JSON AS payload, '[10, 20]'::JSON AS items,
    TIMESTAMP '2024-01-01 00:00:10' AS ts, TRUE AS ok, 'odd' AS "weird name", 4 AS "end"
"""


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    temp: Path = tmp_path_factory.mktemp("expressions")
    connection = connect_locked(Sandbox(temp_dir=temp / "tmp"))
    connection.execute(ROW)
    yield connection
    connection.close()


def evaluate(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    row = con.execute(f"SELECT {sql} FROM t").fetchone()
    assert row is not None
    return row[0]


VALID: list[tuple[str, str | None, Any, Any]] = [
    # expression, SQL, type, value on the test row
    ("temp * 1.8 + 32", '(("temp" * CAST(1.8 AS DOUBLE)) + 32)', FieldType.DOUBLE, 70.7),
    ("n + 1", '(CAST("n" AS BIGINT) + 1)', FieldType.LONG, 4),
    ("2147483647 + n", None, FieldType.LONG, 2147483650),
    ("n / 2", '(CAST("n" AS DOUBLE) / NULLIF(2, 0))', FieldType.DOUBLE, 1.5),
    ("n / 0", None, FieldType.DOUBLE, None),
    ("n % 2", '("n" % NULLIF(2, 0))', FieldType.INTEGER, 1),
    ("big % 0", None, FieldType.LONG, None),
    ("-n - -1", None, FieldType.LONG, -2),
    ("(n + 1) * 2", None, FieldType.LONG, 8),
    ("temp > 20 AND NOT ok", '(("temp" > 20) AND (NOT "ok"))', FieldType.BOOLEAN, False),
    ("temp > 20 OR ok AND n = 4", None, FieldType.BOOLEAN, True),
    ("name == 'Bob'", "(\"name\" = 'Bob')", FieldType.BOOLEAN, True),
    ("name != 'it''s'", "(\"name\" <> 'it''s')", FieldType.BOOLEAN, True),
    ("n <> 3", None, FieldType.BOOLEAN, False),
    ("n IN (1, 2, 3)", '("n" IN (1, 2, 3))', FieldType.BOOLEAN, True),
    ("n NOT IN (1, 2)", None, FieldType.BOOLEAN, True),
    ("name IS NULL", '("name" IS NULL)', FieldType.BOOLEAN, False),
    ("name is not null", None, FieldType.BOOLEAN, True),
    ("upper(name)", 'upper("name")', FieldType.STRING, "BOB"),
    ("LOWER(name)", None, FieldType.STRING, "bob"),
    ("length(name)", None, FieldType.LONG, 3),
    ("substring(name, 2, 2)", None, FieldType.STRING, "ob"),
    ("concat(name, '-', n, '-', ok)", None, FieldType.STRING, "Bob-3-true"),
    ("replace(name, 'o', '0')", None, FieldType.STRING, "B0b"),
    ("trim('  x ')", None, FieldType.STRING, "x"),
    ("contains(name, 'ob')", None, FieldType.BOOLEAN, True),
    ("abs(-temp)", None, FieldType.DOUBLE, 21.5),
    ("round(temp)", None, FieldType.DOUBLE, 22.0),
    ("round(temp * 3.333, 2)", None, FieldType.DOUBLE, 71.66),
    ("floor(temp)", None, FieldType.DOUBLE, 21.0),
    ("ceil(temp)", None, FieldType.DOUBLE, 22.0),
    ("power(2, 10)", None, FieldType.DOUBLE, 1024.0),
    ("coalesce(NULL, n, 7)", None, FieldType.INTEGER, 3),
    ("coalesce(NULL, temp, n)", None, FieldType.DOUBLE, 21.5),
    ("if(temp > 20, 'hot', 'cold')", None, FieldType.STRING, "hot"),
    ("CASE WHEN n = 1 THEN 'one' WHEN n = 3 THEN 'three' END", None, FieldType.STRING, "three"),
    ("case when n > 5 then 1 else 2.5 end", None, FieldType.DOUBLE, 2.5),
    ("payload.a.b[1]", "TRY(json_extract_string(\"payload\", '$.a.b[1]'))", FieldType.STRING, "8"),
    ("payload['x y']", None, FieldType.STRING, "1"),
    ("payload.s", None, FieldType.STRING, "hi"),
    ("payload.missing.deeper", None, FieldType.STRING, None),
    ("items[0]", None, FieldType.STRING, "10"),
    ("to_double(payload.a.b[0]) * 2", None, FieldType.DOUBLE, 14.0),
    ("to_integer('42') + 1", None, FieldType.LONG, 43),
    ("to_long(name)", None, FieldType.LONG, None),
    ("to_string(n)", None, FieldType.STRING, "3"),
    ("to_boolean('true')", None, FieldType.BOOLEAN, True),
    ("to_timestamp(0)", None, FieldType.TIMESTAMP, dt.datetime(1970, 1, 1)),
    (
        "to_timestamp('2024-01-02 03:04:05')",
        None,
        FieldType.TIMESTAMP,
        dt.datetime(2024, 1, 2, 3, 4, 5),
    ),
    ("to_timestamp('02/01/2024', '%d/%m/%Y')", None, FieldType.TIMESTAMP, dt.datetime(2024, 1, 2)),
    ("to_epoch_ms(ts)", None, FieldType.LONG, 1704067210000),
    ("ts < now()", None, FieldType.BOOLEAN, True),
    ("`weird name`", '"weird name"', FieldType.STRING, "odd"),
    ("`end` * 2", None, FieldType.LONG, 8),
    ("1e3 + .5", None, FieldType.DOUBLE, 1000.5),
    ("TRUE", "TRUE", FieldType.BOOLEAN, True),
    ("NULL", "NULL", Loose.NULL, None),
]


@pytest.mark.parametrize(("text", "sql", "kind", "value"), VALID, ids=[v[0] for v in VALID])
def test_valid_expressions_compile_and_evaluate(
    con: duckdb.DuckDBPyConnection, text: str, sql: str | None, kind: Any, value: Any
) -> None:
    compiled = compile_expression(text, SCOPE)
    if sql is not None:
        assert expression_sql(compiled) == sql
    assert compiled.type == kind
    result = evaluate(con, expression_sql(compiled))
    if isinstance(value, float):
        assert result == pytest.approx(value)
    else:
        assert result == value


def test_compiled_expressions_report_the_fields_they_read() -> None:
    compiled = compile_expression("if(ok, temp, n) + to_double(payload.a)", SCOPE)
    assert compiled.fields == {"ok", "temp", "n", "payload"}


def test_identifiers_are_always_quoted() -> None:
    assert identifier('a"b') == '"a""b"'
    tricky = Scope({'x") OR 1=1 --': FieldType.INTEGER})
    compiled = compile_expression('`x") OR 1=1 --` + 1', tricky)
    assert expression_sql(compiled) == '(CAST("x"") OR 1=1 --" AS BIGINT) + 1)'


def test_open_scope_accepts_any_field_with_an_unknown_type(con: duckdb.DuckDBPyConnection) -> None:
    open_scope = Scope({}, open=True)
    compiled = compile_expression("temp * 2 > 40 AND name = 'Bob'", open_scope)
    assert compiled.type == FieldType.BOOLEAN
    assert compiled.fields == {"temp", "name"}
    assert evaluate(con, expression_sql(compiled)) is True
    assert compile_expression("whatever", open_scope).type == Loose.ANY


@pytest.mark.parametrize(
    ("left", "symbol", "right", "expected"),
    [
        ("temp", Symbol.MORE_THAN, "20", True),
        ("temp", Symbol.LESS_THAN, "20", False),
        ("n", Symbol.MORE_EQUAL, "3", True),
        ("n", Symbol.LESS_EQUAL, "2", False),
        ("name", Symbol.EQUAL, "'Bob'", True),
        ("name", Symbol.NOT_EQUAL, "'Bob'", False),
        ("name", Symbol.CONTAINS, "'o'", True),
        ("n", Symbol.IN, "1, 2, 3", True),
        ("name", Symbol.IN, "('Al', 'Cy')", False),
        ("name", Symbol.IS_NULL, None, False),
        ("payload.nothing", Symbol.IS_NULL, "", True),
        ("name", Symbol.NOT_NULL, None, True),
        ("temp * 2", Symbol.MORE_THAN, "n * 10", True),
    ],
)
def test_filter_conditions(
    con: duckdb.DuckDBPyConnection, left: str, symbol: Symbol, right: str | None, expected: bool
) -> None:
    compiled = compile_condition(left, symbol, right, SCOPE)
    assert compiled.type == FieldType.BOOLEAN
    assert evaluate(con, expression_sql(compiled)) is expected


def test_conditions_combine_with_and_or(con: duckdb.DuckDBPyConnection) -> None:
    first = compile_condition("n", Symbol.EQUAL, "3", SCOPE)
    second = compile_condition("name", Symbol.EQUAL, "'Al'", SCOPE)
    assert evaluate(con, sql(combine([first, second], "AND"))) is False
    assert evaluate(con, sql(combine([first, second], "OR"))) is True
    assert sql(combine([], "AND")) == "TRUE"


@pytest.mark.parametrize(
    ("left", "symbol", "right", "part", "needle"),
    [
        ("", Symbol.EQUAL, "1", "leftValue", "empty"),
        ("n", Symbol.EQUAL, "", "rightValue", "empty"),
        ("n", Symbol.EQUAL, "'a'", "rightValue", "cannot compare INTEGER with STRING"),
        ("payload", Symbol.MORE_THAN, "1", "rightValue", "cannot compare MAP"),
        ("n", Symbol.CONTAINS, "'a'", "leftValue", "CONTAINS needs a STRING"),
        ("n", Symbol.IS_NULL, "1", "rightValue", "takes no right value"),
        ("n", Symbol.IN, "1, 'a'", "rightValue", "IN compares INTEGER with STRING"),
        ("n", Symbol.IN, "(1, ", "rightValue", "expected a value"),
        ("nn", Symbol.EQUAL, "1", "leftValue", "unknown field 'nn' (did you mean 'n'?)"),
        ("n", Symbol.EQUAL, "abc", "rightValue", "unknown field 'abc'"),
    ],
)
def test_bad_conditions_name_the_value_at_fault(
    left: str, symbol: Symbol, right: str, part: str, needle: str
) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_condition(left, symbol, right, SCOPE)
    assert caught.value.part == part
    assert needle in str(caught.value)


HOSTILE: list[tuple[str, str]] = [
    ("n; DROP TABLE t", "unexpected character ';' (one expression, no statements) at position 2"),
    ("n --", "expected a value, found the end"),
    ("n /* comment */", "expected a value, found '*'"),
    ("read_csv('/etc/passwd')", "unknown function 'read_csv'"),
    ("read_text('/etc/passwd')", "unknown function 'read_text'"),
    ("getenv('HOME')", "unknown function 'getenv'"),
    ("(SELECT 1)", "'SELECT' is an SQL keyword"),
    ("n IN (SELECT n FROM t)", "'SELECT' is an SQL keyword"),
    ("1 UNION SELECT 2", "'UNION' is an SQL keyword"),
    ("CAST(n AS VARCHAR)", "'CAST' is an SQL keyword"),
    ("x' OR '1'='1", "unexpected '' OR '' at position 2"),
    ("x' OR 'a", "unexpected '' OR '' at position 2"),
    ("'a' OR '1'='1'", "OR needs a BOOLEAN, not STRING"),
    ("name = 'x", "string is not closed"),
    ("name = 'a' OR 1 = 1; --", "unexpected character ';'"),
    ('"name"', "unexpected character '\"'"),
    ("name::INTEGER", "unexpected character ':'"),
    ("$1", "unexpected character '$'"),
    ("n || 'x'", "unexpected character '|'"),
    ("t.n", "unknown field 't'"),
    ("sum(n)", "sum() aggregates many records"),
    ("upper(name, name)", "upper() takes 1 arguments, not 2"),
    ("now(1)", "now() takes 0 arguments, not 1"),
    ("name + 1", "'+' needs numbers, not STRING; join strings with concat()"),
    ("ok AND n", "AND needs a BOOLEAN, not INTEGER"),
    ("if(n, 1, 2)", "if() needs a BOOLEAN condition"),
    ("if(ok, 1, 'a')", "if() mixes values of types INTEGER and STRING"),
    ("temp.x", "field 'temp' is DOUBLE; a path"),
    ('payload["k"]', "unexpected character '\"'"),
    ("to_timestamp(name, name)", "format must be a string literal"),
    ("`unclosed", "quoted field name is not closed"),
    ("'\x00'", "NUL character"),
    ("9223372036854775808", "integer '9223372036854775808' is out of range"),
    ("1e999", "out of range"),
    ("12abc", "malformed number"),
    ("", "empty"),
    ("   ", "empty"),
    ("n n", "unexpected 'n' at position 3"),
    ("CASE n END", "CASE needs at least one WHEN"),
]


@pytest.mark.parametrize(("text", "needle"), HOSTILE, ids=[h[0] or "<empty>" for h in HOSTILE])
def test_hostile_and_broken_input_is_refused(text: str, needle: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text, SCOPE)
    assert needle in str(caught.value)


def test_size_limits() -> None:
    long = "n + " * (MAX_LENGTH // 4) + "1"
    with pytest.raises(ExpressionError, match=f"longer than {MAX_LENGTH} characters"):
        parse(long)
    with pytest.raises(ExpressionError, match="longer than 1024 characters"):
        parse("'" + "x" * 1025 + "'")
    with pytest.raises(ExpressionError, match="nested more than"):
        parse("(" * 500 + "1" + ")" * 500)
    with pytest.raises(ExpressionError, match="nested more than"):
        parse("-" * 300 + "1")
    with pytest.raises(ExpressionError, match="nested more than"):
        parse("NOT " * 300 + "TRUE")
    with pytest.raises(ExpressionError, match="nested more than"):
        parse("abs(" * 100 + "1" + ")" * 100)
    with pytest.raises(ExpressionError, match="nested more than"):
        parse(" + ".join(["n"] * 200))  # a left-deep chain: deep tree, no parentheses
    # just inside the limits
    parse("(" * (MAX_DEPTH - 1) + "1" + ")" * (MAX_DEPTH - 1))
    compile_expression(" + ".join(["n"] * (MAX_DEPTH - 1)), SCOPE)
    compile_expression(" AND ".join(["ok"] * 200), SCOPE)  # AND/OR chains are flat


def test_paths() -> None:
    ref = parse_path("payload.items[0]['odd key'].temp")
    assert (ref.name, ref.keys) == ("payload", ("items", 0, "odd key", "temp"))
    with pytest.raises(ExpressionError, match="expected a field or a path"):
        parse_path("upper(name)")


def test_predicates_must_be_boolean() -> None:
    assert compile_predicate("n > 1", SCOPE).type == FieldType.BOOLEAN
    with pytest.raises(ExpressionError, match="must be BOOLEAN, not LONG"):
        compile_predicate("n + 1", SCOPE)
