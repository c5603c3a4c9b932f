"""The DuckDB engine: embedded, sandboxed, the default."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from datamill.domain.datasources import FileType
from datamill.engines.base import Capabilities, Endpoint, Sandbox
from datamill.engines.duckdb.batch import DuckDBSession
from datamill.engines.duckdb.gate import check_query
from datamill.engines.duckdb.sql import DIALECT
from datamill.engines.streaming import MicroBatchExecutor, StateStore


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

    def session(
        self, sandbox: Sandbox, *, profiling: bool = False, endpoint: Endpoint | None = None
    ) -> DuckDBSession:
        return DuckDBSession(sandbox, profiling=profiling)

    def check_query(self, code: str, tables: Collection[str], field: str) -> str:
        return check_query(code, tables, field)

    def open_stream(
        self, job_dir: Path, *, memory_limit: str, threads: int, steps: Sequence[Any]
    ) -> tuple[MicroBatchExecutor, StateStore]:
        from datamill.engines.duckdb.streaming import open_job  # batch workers need none of it

        return open_job(job_dir, memory_limit=memory_limit, threads=threads, steps=steps)
