"""Compute engines behind one interface (:mod:`datamill.engines.base`), chosen by type.

DuckDB (embedded) is the default; Spark (through Spark Connect) runs batch jobs on a
Spark server named by a project's engine connection. Every engine registers itself here.
"""

from datamill.engines.base import batch_engine, get, register, streaming_types, types
from datamill.engines.duckdb import DuckDBEngine
from datamill.engines.spark import SparkEngine

register(DuckDBEngine())
register(SparkEngine())

__all__ = ["batch_engine", "get", "register", "streaming_types", "types"]
