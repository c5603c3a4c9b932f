"""Compute engines: DuckDB (embedded, default); Spark and Flink later."""
