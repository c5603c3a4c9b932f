"""Values out of DuckDB: JSON-safe rows and messages fit for the caller."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from typing import Any

import duckdb
from sqlglot import exp

from datamill.engines.duckdb.sql import QUERY, around_query


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
    first = exp.select("*").from_(exp.Subquery(this=QUERY)).limit(int(limit))
    table = con.sql(around_query(first, query)).fetch_arrow_table()
    return [{k: json_safe(v) for k, v in row.items()} for row in table.to_pylist()]


def friendly_error(exc: duckdb.Error) -> str:
    """DuckDB's message without its internal prefixes and with no file system details."""
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__
