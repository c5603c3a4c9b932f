"""DuckDB column types and the catalog's five field types; describing what SQL returns."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
from sqlglot import exp

from datamill.domain.datasources import SchemaField, ValType
from datamill.engines.base import safe_key
from datamill.engines.duckdb.sql import QUERY, Template, quoted, render

_DUCKDB_TO_VALTYPE: dict[str, ValType] = {
    "BOOLEAN": ValType.boolean,
    "TINYINT": ValType.long,
    "SMALLINT": ValType.long,
    "INTEGER": ValType.long,
    "BIGINT": ValType.long,
    "HUGEINT": ValType.long,
    "UTINYINT": ValType.long,
    "USMALLINT": ValType.long,
    "UINTEGER": ValType.long,
    "UBIGINT": ValType.long,
    "FLOAT": ValType.float,
    "DOUBLE": ValType.float,
    "DATE": ValType.date,
    "TIMESTAMP": ValType.date,
    "TIMESTAMP WITH TIME ZONE": ValType.date,
    "TIMESTAMP_S": ValType.date,
    "TIMESTAMP_MS": ValType.date,
    "TIMESTAMP_NS": ValType.date,
}

VALTYPE_TO_DUCKDB: dict[ValType, str] = {
    ValType.boolean: "BOOLEAN",
    ValType.long: "BIGINT",
    ValType.float: "DOUBLE",
    ValType.date: "TIMESTAMPTZ",
    ValType.string: "VARCHAR",
}


def valtype_of(duckdb_type: str) -> ValType:
    """Map a DuckDB column type onto the catalog's five field types (nested -> string)."""
    base = duckdb_type.upper()
    if base.startswith("DECIMAL"):
        return ValType.float
    return _DUCKDB_TO_VALTYPE.get(base, ValType.string)


_DATA_TYPES = {v: exp.DataType.build(t, dialect="duckdb") for v, t in VALTYPE_TO_DUCKDB.items()}


def data_type(valtype: ValType) -> exp.DataType:
    return _DATA_TYPES[valtype].copy()


_DESCRIBE_TABLE = Template(exp.Describe(this=exp.select("*").from_(QUERY)))
_DESCRIBE = Template(exp.Describe(this=QUERY))


def _describe_rows(con: duckdb.DuckDBPyConnection, table_sql: str) -> list[tuple[str, str]]:
    rows = con.execute(_DESCRIBE_TABLE.fill(table_sql)).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def describe(con: duckdb.DuckDBPyConnection, table_sql: str) -> list[SchemaField]:
    """The inferred schema of a table expression (no rows are materialised)."""
    return [
        SchemaField(key=safe_key(name), valtype=valtype_of(kind))
        for name, kind in _describe_rows(con, table_sql)
    ]


def column_types(con: duckdb.DuckDBPyConnection, table_sql: str) -> dict[str, str]:
    """The files' columns and their DuckDB types, in order."""
    return dict(_describe_rows(con, table_sql))


def output_columns(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[str, str]]:
    """The (name, DuckDB type) of each column ``sql`` returns, bound but not executed."""
    rows = con.execute(_DESCRIBE.fill(sql)).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def create_empty_table(
    con: duckdb.DuckDBPyConnection, name: str, schema: Sequence[SchemaField]
) -> None:
    columns = [
        exp.ColumnDef(this=quoted(f.key), kind=data_type(ValType(f.valtype))) for f in schema
    ] or [exp.ColumnDef(this=quoted("_empty"), kind=exp.DataType.build("VARCHAR"))]
    create = exp.Create(
        kind="TABLE", this=exp.Schema(this=exp.Table(this=quoted(name)), expressions=columns)
    )
    con.execute(render(create))
