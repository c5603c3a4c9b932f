"""The embedded DuckDB engine: locked-down connections and reading catalog data.

Every connection that touches user data is locked down before its first statement: no
extension install or load, no access to any file but the exact ones allowed, a private temp
folder, bounded memory and threads, and the configuration locked so SQL cannot undo it.
Object storage and WebHDFS are reached through fsspec filesystems registered on the
connection (DuckDB cannot download its own extensions here); a registered filesystem is
only reachable for the exact paths in ``allowed_paths``.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from datamill.domain.datasources import FileType, FormatSpec, SchemaField, ValType
from datamill.errors import DatamillError, E


@dataclass
class Limits:
    """Resources one connection may use."""

    memory_limit: str = "1GB"
    threads: int = 2
    max_temp_size: str = "10GB"


@dataclass
class Sandbox:
    """What a locked-down connection may see."""

    temp_dir: Path
    allowed_paths: list[str] = field(default_factory=list)
    allowed_dirs: list[Path] = field(default_factory=list)
    filesystems: list[Any] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)


def sql_string(value: str) -> str:
    """A SQL string literal; refuses NUL bytes, which DuckDB would truncate at."""
    if "\x00" in value:
        raise DatamillError(E.PATH_REFUSED, "NUL byte in a path")
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(sql_string(v) for v in values) + "]"


def _dir_literal(path: Path) -> str:
    return sql_string(str(path).rstrip("/") + "/")


def connect_locked(
    sandbox: Sandbox, *, profiling: bool = False, database: str = ":memory:"
) -> duckdb.DuckDBPyConnection:
    """A fresh connection (in memory, or to the ``database`` file), locked down in the
    order DuckDB requires.

    With ``profiling`` the connection records operator statistics (rows scanned, bytes
    read and written) that :meth:`get_profiling_information` returns after a query.
    The temp folder's parent must exist; DuckDB creates the folder itself when a query
    first spills, and removes it on close.
    """
    sandbox.temp_dir.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(database)
    try:
        for fs in sandbox.filesystems:
            con.register_filesystem(fs)
        limits = sandbox.limits
        statements = [
            *(
                ["SET enable_profiling='no_output'", "SET profiling_coverage='ALL'"]
                if profiling
                else []
            ),
            "SET autoinstall_known_extensions=false",
            "SET autoload_known_extensions=false",
            "SET allow_community_extensions=false",
            "SET allow_persistent_secrets=false",
            "SET TimeZone='UTC'",
            f"SET temp_directory={sql_string(str(sandbox.temp_dir))}",
            f"SET memory_limit={sql_string(limits.memory_limit)}",
            f"SET threads={int(limits.threads)}",
            f"SET max_temp_directory_size={sql_string(limits.max_temp_size)}",
            "SET allowed_directories=["
            + ", ".join(_dir_literal(d) for d in sandbox.allowed_dirs)
            + "]",
            f"SET allowed_paths={sql_list(sandbox.allowed_paths)}",
            "SET enable_external_access=false",
            "SET lock_configuration=true",
        ]
        for statement in statements:
            con.execute(statement)
    except Exception:
        con.close()
        raise
    return con


def read_sql(fmt: FormatSpec, urls: Sequence[str]) -> str:
    """The DuckDB table expression that reads ``urls`` in the data source's format."""
    files = sql_list(urls)
    match fmt.fileType:
        case FileType.parquet:
            return f"read_parquet({files}, union_by_name=true)"
        case FileType.json:
            return f"read_json({files}, union_by_name=true)"
        case FileType.csv:
            delimiter = sql_string(fmt.delimiter or ",")
            header = "true" if fmt.containsHeader else "false"
            return f"read_csv({files}, delim={delimiter}, header={header}, union_by_name=true)"
        case FileType.text:
            return (
                "(SELECT rtrim(line, chr(13)) AS text FROM "
                f"(SELECT unnest(string_split(rtrim(content, chr(10)), chr(10))) AS line "
                f"FROM read_text({files})))"
            )
    raise AssertionError(fmt.fileType)  # pragma: no cover


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


def identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def describe(con: duckdb.DuckDBPyConnection, table_sql: str) -> list[SchemaField]:
    """The inferred schema of a table expression (no rows are materialised)."""
    rows = con.execute(f"DESCRIBE SELECT * FROM {table_sql}").fetchall()
    return [SchemaField(key=_safe_key(str(r[0])), valtype=valtype_of(str(r[1]))) for r in rows]


def _safe_key(name: str) -> str:
    """Column names from files may not fit the field-name rule; make them fit."""
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name)[:128] or "_"
    return cleaned if not cleaned[0].isdigit() else "_" + cleaned[:127]


def typed_select(table_sql: str, schema: Sequence[SchemaField], columns: dict[str, str]) -> str:
    """SELECT the schema's fields from ``table_sql`` in their types (absent -> NULL).

    ``columns`` maps the files' column names to their DuckDB types. A column whose type
    already is the field's type is read as it is (a cast per value costs time: a
    TIMESTAMP cast to TIMESTAMPTZ doubles a scan-heavy query); others are cast, with
    values that do not convert becoming NULL. Naive timestamps are UTC (see connect_locked).
    """
    available = {_safe_key(name): (name, kind) for name, kind in columns.items()}
    parts = []
    for item in schema:
        wanted = ValType(item.valtype)
        target = VALTYPE_TO_DUCKDB[wanted]
        found = available.get(item.key)
        if found is None:
            expr = f"NULL::{target}"
        elif valtype_of(found[1]) == wanted and wanted != ValType.string:
            expr = identifier(found[0])
        else:
            expr = f"TRY_CAST({identifier(found[0])} AS {target})"
        parts.append(f"{expr} AS {identifier(item.key)}")
    return f"SELECT {', '.join(parts) or '*'} FROM {table_sql}"


def column_types(con: duckdb.DuckDBPyConnection, table_sql: str) -> dict[str, str]:
    """The files' columns and their DuckDB types, in order."""
    rows = con.execute(f"DESCRIBE SELECT * FROM {table_sql}").fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def json_safe(value: Any) -> Any:
    """Turn a DuckDB/Arrow value into something JSON can carry without loss of meaning."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def fetch_rows(con: duckdb.DuckDBPyConnection, query: str, limit: int) -> list[dict[str, Any]]:
    table = con.sql(f"SELECT * FROM ({query}) LIMIT {int(limit)}").fetch_arrow_table()
    return [{k: json_safe(v) for k, v in row.items()} for row in table.to_pylist()]


def friendly_error(exc: duckdb.Error) -> str:
    """DuckDB's message without its internal prefixes and with no file system details."""
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def create_empty_table(
    con: duckdb.DuckDBPyConnection, name: str, schema: Sequence[SchemaField]
) -> None:
    columns = (
        ", ".join(f"{identifier(f.key)} {VALTYPE_TO_DUCKDB[ValType(f.valtype)]}" for f in schema)
        or '"_empty" VARCHAR'
    )
    con.execute(f"CREATE TABLE {identifier(name)} ({columns})")


def output_columns(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[str, str]]:
    """The (name, DuckDB type) of each column ``sql`` returns, bound but not executed."""
    return [(str(r[0]), str(r[1])) for r in con.execute(f"DESCRIBE {sql}").fetchall()]
