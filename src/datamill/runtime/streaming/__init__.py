"""The embedded streaming engine: pipelines run as DuckDB micro-batches."""
