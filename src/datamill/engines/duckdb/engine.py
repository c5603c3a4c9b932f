"""The DuckDB engine: embedded, sandboxed, the default."""

from __future__ import annotations

from datamill.domain.datasources import FileType
from datamill.engines.base import Capabilities, Sandbox
from datamill.engines.duckdb.batch import DuckDBSession
from datamill.engines.duckdb.sql import DIALECT


class DuckDBEngine:
    """Runs jobs on locked-down in-process DuckDB connections."""

    type = "duckdb"
    capabilities = Capabilities(
        dialect=DIALECT,
        batch=True,
        streaming=True,
        sandboxed=True,
        reads=frozenset(t.value for t in FileType),
        writes=frozenset({"parquet", "csv", "json"}),
    )

    def session(self, sandbox: Sandbox, *, profiling: bool = False) -> DuckDBSession:
        return DuckDBSession(sandbox, profiling=profiling)
