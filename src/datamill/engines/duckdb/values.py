"""Values out of DuckDB: JSON-safe rows and messages fit for the caller."""

from __future__ import annotations

import re
from typing import Any

import duckdb
from sqlglot import exp

from datamill.domain.values import json_value
from datamill.engines.duckdb.sql import QUERY, around_query


def fetch_rows(con: duckdb.DuckDBPyConnection, query: str, limit: int) -> list[dict[str, Any]]:
    first = exp.select("*").from_(exp.Subquery(this=QUERY)).limit(int(limit))
    table = con.sql(around_query(first, query)).fetch_arrow_table()
    return [{k: json_value(v) for k, v in row.items()} for row in table.to_pylist()]


def friendly_error(exc: duckdb.Error) -> str:
    """DuckDB's message without its internal prefixes and with no file system details."""
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


_LINE = re.compile(r"LINE (\d+): ?(.*)$")


def locate_duckdb_error(message: str) -> str:
    """DuckDB's error with its ``LINE n:`` caret turned into ``(line n, column c)``."""
    lines = message.splitlines()
    head = lines[0] if lines else message
    for i, text in enumerate(lines):
        match = _LINE.match(text)
        if match and i + 1 < len(lines) and "^" in lines[i + 1]:
            prefix = len(text) - len(match.group(2))
            column = lines[i + 1].index("^") - prefix + 1
            return f"{head} (line {int(match.group(1))}, column {max(column, 1)})"
    return head
