"""Compute engines behind one interface (:mod:`datamill.engines.base`), chosen by type.

DuckDB (embedded) is the default; every engine registers itself here.
"""

from datamill.engines.base import batch_engine, get, register, streaming_types, types
from datamill.engines.duckdb import DuckDBEngine

register(DuckDBEngine())

__all__ = ["batch_engine", "get", "register", "streaming_types", "types"]
