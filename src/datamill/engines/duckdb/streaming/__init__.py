"""DuckDB's streaming side: the micro-batch executor, the state store and the stateful
SQL of Aggregate and Deduplicate."""

from datamill.engines.duckdb.streaming.executor import DuckDBExecutor, open_job
from datamill.engines.duckdb.streaming.state import DuckDBStateStore, StatefulStep

__all__ = ["DuckDBExecutor", "DuckDBStateStore", "StatefulStep", "open_job"]
