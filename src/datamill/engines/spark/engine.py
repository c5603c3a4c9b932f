"""The Spark engine: batch jobs on a Spark Connect server (``sc://host:port``)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from datamill.engines.base import (
    BatchSession,
    Capabilities,
    Endpoint,
    QueryFailed,
    Sandbox,
    get,
)
from datamill.engines.spark.sql import DIALECT
from datamill.engines.streaming import MicroBatchExecutor, StateStore


class SparkEngine:
    """Sends each run's plans to a Spark Connect server named by an engine connection.

    pyspark (the ``spark`` extra) is imported only when a session opens, so a server
    without it starts, and refuses Spark jobs when they are saved or run.
    """

    type = "spark"
    capabilities = Capabilities(
        dialect=DIALECT,
        batch=True,
        streaming=False,
        sandboxed=False,
        reads=frozenset({"parquet", "csv", "json"}),
        writes=frozenset({"parquet"}),
        remote=True,
    )

    def session(
        self, sandbox: Sandbox, *, profiling: bool = False, endpoint: Endpoint | None = None
    ) -> BatchSession:
        if endpoint is None:
            raise QueryFailed(
                "the spark engine needs an engine connection (its Spark Connect URL): "
                "name one in the job's engine field"
            )
        try:
            from datamill.engines.spark.session import SparkBatchSession
        except ImportError:
            raise QueryFailed(
                "this server cannot run Spark jobs: install datamill with the spark extra "
                "(pip install 'datamill[spark]')"
            ) from None
        return SparkBatchSession(sandbox, endpoint)

    def check_query(self, code: str, tables: Collection[str], field: str) -> str:
        """Jobs are written in DuckDB's dialect whatever engine runs them, so DuckDB's own
        parse decides what may run (its allow-list of functions included); the text it
        returns is transpiled to Spark SQL when the session runs it."""
        return get("duckdb").check_query(code, tables, field)

    def open_stream(
        self, job_dir: Path, *, memory_limit: str, threads: int, steps: Sequence[Any]
    ) -> tuple[MicroBatchExecutor, StateStore]:
        raise NotImplementedError("the spark engine runs batch jobs only")
