"""Reading a data source's files: the table expression per file format, typed to a schema."""

from __future__ import annotations

from collections.abc import Sequence

from sqlglot import exp

from datamill.domain.datasources import FileType, FormatSpec, SchemaField, ValType
from datamill.engines.base import safe_key
from datamill.engines.duckdb.schema import data_type, valtype_of
from datamill.engines.duckdb.sql import QUERY, around_query, literal, literal_list, quoted, render


def _option(name: str, value: exp.Expression) -> exp.EQ:
    return exp.EQ(this=exp.var(name), expression=value)


def _call(function: str, *args: exp.Expression) -> exp.Anonymous:
    return exp.Anonymous(this=function, expressions=list(args))


def _text_lines(files: exp.Array) -> exp.Subquery:
    """One row per line of the files, in the column ``text`` (a trailing CR dropped)."""
    newline, carriage_return = (
        _call("chr", exp.Literal.number(10)),
        _call("chr", exp.Literal.number(13)),
    )
    lines = exp.select(
        exp.alias_(
            _call(
                "unnest",
                _call(
                    "string_split", _call("rtrim", exp.column("content"), newline), newline.copy()
                ),
            ),
            "line",
        )
    ).from_(_call("read_text", files))
    return (
        exp.select(exp.alias_(_call("rtrim", exp.column("line"), carriage_return), "text"))
        .from_(lines.subquery())
        .subquery()
    )


def read_expr(fmt: FormatSpec, urls: Sequence[str]) -> exp.Expression:
    """The table expression that reads ``urls`` in the data source's format."""
    files = literal_list(urls)
    by_name = _option("union_by_name", exp.true())
    match fmt.fileType:
        case FileType.parquet:
            return _call("read_parquet", files, by_name)
        case FileType.json:
            return _call("read_json", files, by_name)
        case FileType.csv:
            header = exp.true() if fmt.containsHeader else exp.false()
            return _call(
                "read_csv",
                files,
                _option("delim", literal(fmt.delimiter or ",")),
                _option("header", header),
                by_name,
            )
        case FileType.text:
            return _text_lines(files)
    raise AssertionError(fmt.fileType)  # pragma: no cover


def read_sql(fmt: FormatSpec, urls: Sequence[str]) -> str:
    """The DuckDB table expression that reads ``urls`` in the data source's format."""
    return render(read_expr(fmt, urls))


def results_expr(paths: Sequence[str]) -> exp.Expression:
    """The table expression that reads datamill results (Parquet) as they are."""
    return _call("read_parquet", literal_list(paths), _option("hive_partitioning", exp.false()))


def typed_select(table_sql: str, schema: Sequence[SchemaField], columns: dict[str, str]) -> str:
    """SELECT the schema's fields from ``table_sql`` in their types (absent -> NULL).

    ``columns`` maps the files' column names to their DuckDB types. A column whose type
    already is the field's type is read as it is (a cast per value costs time: a
    TIMESTAMP cast to TIMESTAMPTZ doubles a scan-heavy query); others are cast, with
    values that do not convert becoming NULL. Naive timestamps are UTC (see connect_locked).
    """
    available = {safe_key(name): (name, kind) for name, kind in columns.items()}
    parts: list[exp.Expr] = []
    for item in schema:
        wanted = ValType(item.valtype)
        found = available.get(item.key)
        value: exp.Expression
        if found is None:
            value = exp.cast(exp.null(), data_type(wanted))
        elif valtype_of(found[1]) == wanted and wanted != ValType.string:
            value = exp.column(quoted(found[0]))
        else:
            value = exp.TryCast(this=exp.column(quoted(found[0])), to=data_type(wanted))
        parts.append(exp.alias_(value, quoted(item.key)))
    select = exp.select(*(parts or [exp.Star()])).from_(QUERY)
    return around_query(select, table_sql)
