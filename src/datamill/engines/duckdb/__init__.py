"""The embedded DuckDB engine: locked-down connections, reading catalog data, batch runs.

Modules: :mod:`.sql` (quoting and rendering, the only one), :mod:`.session` (the
lock-down), :mod:`.schema` (types and describing), :mod:`.formats` (reading files),
:mod:`.values` (rows out), :mod:`.batch` (the batch session), :mod:`.gate` (a job's SQL
checked on DuckDB's own parse tree) with :mod:`.functions` (the allow-list of functions),
:mod:`.engine` (the registered :class:`DuckDBEngine`).
"""

from __future__ import annotations

from datamill.engines.base import Limits, Sandbox
from datamill.engines.duckdb.engine import DuckDBEngine
from datamill.engines.duckdb.formats import read_sql, typed_select
from datamill.engines.duckdb.schema import (
    VALTYPE_TO_DUCKDB,
    column_types,
    create_empty_table,
    describe,
    output_columns,
    valtype_of,
)
from datamill.engines.duckdb.session import connect_locked
from datamill.engines.duckdb.sql import identifier, sql_list, sql_string
from datamill.engines.duckdb.values import fetch_rows, friendly_error

__all__ = [
    "VALTYPE_TO_DUCKDB",
    "DuckDBEngine",
    "Limits",
    "Sandbox",
    "column_types",
    "connect_locked",
    "create_empty_table",
    "describe",
    "fetch_rows",
    "friendly_error",
    "identifier",
    "output_columns",
    "read_sql",
    "sql_list",
    "sql_string",
    "typed_select",
    "valtype_of",
]
