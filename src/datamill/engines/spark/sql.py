"""Job SQL (DuckDB's dialect) as Spark SQL, and Spark's error positions in the job's SQL.

sqlglot transpiles most of it. What DuckDB says differently is rewritten here as
expressions before Spark's SQL is generated; what has no Spark equivalent is refused with a
message naming it (sqlglot's ``unsupported`` errors are raised, not silently dropped).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError, UnsupportedError

from datamill.domain.datasources import SchemaField, ValType
from datamill.engines.base import QueryFailed

DIALECT = "spark"
SOURCE_DIALECT = "duckdb"

TIME_BUCKET_ORIGIN_MS = 946_857_600_000
"""2000-01-03 00:00:00 UTC (a Monday): DuckDB's ``time_bucket`` origin for day and
shorter widths (and weeks)."""

_UNIT_MS = {
    "MICROSECOND": 0.001,
    "MILLISECOND": 1,
    "SECOND": 1_000,
    "MINUTE": 60_000,
    "HOUR": 3_600_000,
    "DAY": 86_400_000,
    "WEEK": 604_800_000,
}
_UNIT_ALIASES = {
    "US": "MICROSECOND",
    "MS": "MILLISECOND",
    "S": "SECOND",
    "SEC": "SECOND",
    "M": "MINUTE",
    "MIN": "MINUTE",
    "H": "HOUR",
    "HR": "HOUR",
    "D": "DAY",
    "W": "WEEK",
}

VALTYPE_TO_SPARK: dict[ValType, str] = {
    ValType.boolean: "BOOLEAN",
    ValType.long: "BIGINT",
    ValType.float: "DOUBLE",
    ValType.date: "TIMESTAMP",
    ValType.string: "STRING",
}


def _width_ms(interval: exp.Expression) -> int | None:
    """The width of a fixed-length interval literal in milliseconds; None otherwise."""
    if not isinstance(interval, exp.Interval):
        return None
    value = interval.this
    unit = interval.unit.name.upper() if interval.unit else ""
    text = value.name if isinstance(value, exp.Literal) else ""
    if not unit:  # INTERVAL '10 seconds'
        parts = text.split()
        if len(parts) != 2:
            return None
        text, unit = parts[0], parts[1].upper()
    if unit in _UNIT_ALIASES:
        unit = _UNIT_ALIASES[unit]
    elif unit.endswith("S"):
        unit = unit[:-1]
    try:
        amount = float(text)
    except ValueError:
        return None
    if unit not in _UNIT_MS:
        return None
    width = amount * _UNIT_MS[unit]
    return int(width) if width >= 1 and width == int(width) else None


def _call(name: str, *args: exp.Expression) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=list(args))


def _time_bucket(node: exp.Expression) -> exp.Expression:
    """DuckDB's ``time_bucket(width, ts)`` (fixed widths, default origin) in Spark terms:
    ``timestamp_millis(floor((unix_millis(ts) - origin) / w) * w + origin)``."""
    if not isinstance(node, exp.DateBin):
        return node
    width = _width_ms(node.this)
    if width is None or node.args.get("unit") is not None or node.args.get("zone") is not None:
        raise QueryFailed(
            "time_bucket on Spark takes a fixed interval (milliseconds to weeks) and "
            "DuckDB's default origin; months, years and origins are not supported"
        )
    origin = exp.Literal.number(TIME_BUCKET_ORIGIN_MS)
    millis = exp.Paren(
        this=exp.Sub(this=_call("unix_millis", node.expression.copy()), expression=origin)
    )
    buckets = exp.Floor(this=exp.Div(this=millis, expression=exp.Literal.number(width)))
    start = exp.Add(
        this=exp.Mul(this=buckets, expression=exp.Literal.number(width)), expression=origin.copy()
    )
    return _call("timestamp_millis", start)


def to_spark(sql: str) -> str:
    """``sql`` (one statement in DuckDB's dialect, already gated) as Spark SQL.

    Raises :class:`QueryFailed` when something in it has no Spark equivalent.
    """
    try:
        tree = sqlglot.parse_one(sql, read=SOURCE_DIALECT)
        tree = tree.transform(_time_bucket)
        return tree.sql(dialect=DIALECT, unsupported_level=ErrorLevel.RAISE)
    except UnsupportedError as exc:
        raise QueryFailed(f"not supported on Spark: {str(exc).splitlines()[0][:300]}") from None
    except SqlglotError as exc:
        raise QueryFailed(f"could not translate the SQL for Spark: {str(exc)[:300]}") from None
    except RecursionError:
        raise QueryFailed("the SQL is nested too deeply") from None


def _data_type(valtype: ValType) -> exp.DataType:
    return exp.DataType.build(VALTYPE_TO_SPARK[valtype], dialect=DIALECT)


def _typed(source: str | None, valtype: ValType, alias: str, safe: bool) -> exp.Expr:
    value: exp.Expression = (
        exp.column(exp.to_identifier(source, quoted=True)) if source is not None else exp.null()
    )
    if safe and source is not None:
        typed: exp.Expression = exp.TryCast(this=value, to=_data_type(valtype), safe=True)
    else:
        typed = exp.Cast(this=value, to=_data_type(valtype))
    return exp.alias_(typed, exp.to_identifier(alias, quoted=True))


def typed_column(source: str | None, valtype: ValType, alias: str, *, safe: bool = False) -> str:
    """``source`` (a column name; None: NULL) in ``valtype`` named ``alias``, as a Spark SQL
    select expression; ``safe``: values that do not convert become NULL."""
    return _typed(source, valtype, alias, safe).sql(dialect=DIALECT)


def empty_select(schema: Sequence[SchemaField]) -> str:
    """A query returning no rows in the columns and types of ``schema``."""
    columns = [_typed(None, ValType(f.valtype), f.key, False) for f in schema] or [
        _typed(None, ValType.string, "_empty", False)
    ]
    return exp.select(*columns).where(exp.false()).sql(dialect=DIALECT)


_SPARK_POSITION = re.compile(r";?\s*line (\d+) pos (\d+)")
_SQLSTATE = re.compile(r"\s*SQLSTATE: \w+;?")


def _line_column(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def locate(message: str, fragment: str | None, user_sql: str) -> str:
    """Spark's error message, its first line only, with the position in the job's SQL.

    Spark's positions count in the SQL it was sent (the transpiled text); the fragment it
    blames (``fragment``, from its query context) is looked up in the job's own SQL so the
    position is the user's. When it is not found there, the Spark SQL's position is kept.
    """
    head = message.strip().splitlines()[0] if message.strip() else "the query failed"
    spark_position = _SPARK_POSITION.search(head)
    head = _SQLSTATE.sub("", _SPARK_POSITION.sub("", head)).strip().rstrip(";.")
    if fragment:
        found = user_sql.lower().find(fragment.lower())
        if found >= 0:
            line, column = _line_column(user_sql, found)
            return f"{head[:500]} (line {line}, column {column})"
    if spark_position:
        spark_line, spark_pos = spark_position.groups()
        return f"{head[:500]} (line {spark_line}, column {int(spark_pos) + 1} of the Spark SQL)"
    return head[:500]
